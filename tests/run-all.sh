#!/usr/bin/env bash
# Runs Moldau's whole test suite on a fresh Debian 12 machine: installs what the tests need
# (real Kafka clients among them), then runs every test. `.ci/run` calls this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]} (Debian packages)"
  if [[ $(id -u) -eq 0 ]]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"; fi
fi

cargo build --all-targets --locked
cargo test --all-targets --locked -- --test-threads="${MOLDAU_TEST_THREADS:-2}"
