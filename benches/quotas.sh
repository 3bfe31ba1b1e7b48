#!/usr/bin/env bash
# A paced producer's ack p99 alone, beside a greedy producer, and beside the same producer held
# to a quota, on one release broker in one run (benches/quotas.py does the measuring).
# Usage: benches/quotas.sh   (needs confluent-kafka and kafka-python; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pid=""
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release --quiet
./target/release/moldau serve --data-dir "$work/data" --listen 127.0.0.1:0 >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" && break; sleep 0.2; done
python3 benches/quotas.py "$(awk '/listening on/ {print $NF}' "$work/out")"
