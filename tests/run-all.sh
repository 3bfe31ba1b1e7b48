#!/usr/bin/env bash
# Runs Moldau's whole test suite on a fresh Debian 12 machine: installs what the tests need
# (real Kafka clients: kcat from Debian, confluent-kafka and kafka-python from PyPI, kafkajs from
# npm; nftables from Debian, to cut links between cluster nodes; openssl, to make the TLS tests' CA), then runs every test. `.ci/run` calls this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
command -v nft >/dev/null || need_apt+=(nftables)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v node >/dev/null || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
  echo "== installing ${need_apt[*]} (Debian packages)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

echo "== Python Kafka clients (tests/clients/requirements.txt)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages -r tests/clients/requirements.txt

echo "== kafkajs (tests/clients/package.json)"
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)

echo "== build"
cargo build --all-targets --locked

echo "== tests (benches run once each, as smoke tests)"
# Thread count through the environment: the criterion bench harness rejects --test-threads.
RUST_TEST_THREADS="${MOLDAU_TEST_THREADS:-2}" cargo test --all-targets --locked
