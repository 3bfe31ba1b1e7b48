#!/usr/bin/env bash
# Applies the advised host settings. Without --apply it only prints what it would change.
# Usage: tuning/apply.sh [--apply] [--data-dir DIR]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
DO_APPLY=0
while (($#)); do
  case $1 in
    --apply) DO_APPLY=1; shift ;;
    --data-dir) MOLDAU_DATA_DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
    *) echo "apply.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
export MOLDAU_DATA_DIR
# shellcheck source=tuning/settings.sh
source tuning/settings.sh

if ((DO_APPLY)) && [[ $(id -u) -ne 0 ]]; then
  echo "apply.sh: --apply needs root" >&2
  exit 1
fi
changes=0
for setting in "${SETTINGS[@]}"; do
  "$setting"
  acceptable "$CURRENT" "$ADVISED" "$CMP"
  case $? in
    0) continue ;;
    2) echo "skip  $NAME: not readable on this host"; continue ;;
  esac
  changes=$((changes + 1))
  if ((DO_APPLY)); then
    echo "apply $NAME: $CURRENT -> $ADVISED"
    eval "$APPLY" || echo "      failed: $APPLY" >&2
  else
    echo "would $NAME: $CURRENT -> $ADVISED   ($APPLY)"
  fi
done
((changes)) || echo "nothing to change"
((DO_APPLY)) || ((changes == 0)) || echo "(dry run: add --apply, as root, to change these; sysctl changes last until reboot, see tuning/README.md to persist them)"
