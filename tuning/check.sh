#!/usr/bin/env bash
# Reports each host setting Moldau cares about: the value found, the value advised, and whether
# it is fine. Changes nothing. Usage: tuning/check.sh [--data-dir DIR]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
while (($#)); do
  case $1 in
    --data-dir) MOLDAU_DATA_DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
export MOLDAU_DATA_DIR
# shellcheck source=tuning/settings.sh
source tuning/settings.sh

printf '%-38s %-18s %-18s %s\n' SETTING FOUND ADVISED STATUS
bad=0
for setting in "${SETTINGS[@]}"; do
  "$setting"
  name=$NAME value=$CURRENT advised=$ADVISED
  acceptable "$value" "$advised" "$CMP"
  case $? in
    0) status=ok ;;
    2) status="n/a (not readable here)" ;;
    *) status=CHANGE; bad=$((bad + 1)) ;;
  esac
  printf '%-38s %-18s %-18s %s\n' "$name" "$value" "$advised" "$status"
done
echo
echo "cores: $(nproc)  (one shard per core; keep IRQs off them where you can)"
echo "$bad setting(s) differ from the advice; tuning/apply.sh shows how to change them."
