#!/usr/bin/env bash
# Broker CPU per fetched MB for a consumer of 1,000 partitions, with and without incremental
# fetch sessions, on one release broker in one run (benches/fetch_sessions.py does the measuring).
# Usage: benches/fetch_sessions.sh   (needs confluent-kafka and kafka-python; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
pid=""
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release --quiet
metrics=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./target/release/moldau serve --data-dir "$work/data" --listen 127.0.0.1:0 --set "metrics_listen=\"$metrics\"" \
    >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" && break; sleep 0.2; done
python3 benches/fetch_sessions.py "$(awk '/listening on/ {print $NF}' "$work/out")" "$pid" "$metrics"
