#!/usr/bin/env bash
# The standard workloads of docs/performance.md, against any Kafka-compatible broker.
#   1. 1 topic, 16 partitions, 1 KiB messages, acks=all, max rate: throughput.
#   2. The same at 50% of workload 1's rate: publish and end-to-end latency percentiles.
#   3. 100-byte messages, max rate: messages per second.
#   4. (with SOAK_SECS > 0) a verifying soak at 50% of workload 1's rate, p99 every interval.
# Usage: benches/workloads.sh BOOTSTRAP OUT_DIR [WORKLOADS]    e.g. benches/workloads.sh 127.0.0.1:9092 bench-out/moldau
# WORKLOADS: which to run, default "1 2 3"; add 4 for the soak (SOAK_SECS, default 600).
# Env: MOLDAU (the binary, default target/release/moldau), DURATION (measured seconds, default 30).
# The broker's own settings (flush=always for Moldau) are the caller's: start it first.
set -euo pipefail
bootstrap=${1:?bootstrap host:port}
out=${2:?output directory}
runs=${3:-1 2 3}
moldau=${MOLDAU:-target/release/moldau}
duration=${DURATION:-30}
mkdir -p "$out"

rate_of() { python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["produced"]["messages_per_sec"]))' "$1"; }
half_rate() { local r; r=$(rate_of "$out/w1.json"); echo $((r / 2)); }

for w in $runs; do
  case $w in
  1) "$moldau" bench --bootstrap "$bootstrap" --duration "$duration" --partitions 16 --message-size 1024 \
       --acks -1 --rate max --json "$out/w1.json" --plot "$out/w1.svg" ;;
  2) "$moldau" bench --bootstrap "$bootstrap" --duration "$duration" --partitions 16 --message-size 1024 \
       --acks -1 --rate "$(half_rate)" --json "$out/w2.json" --plot "$out/w2.svg" ;;
  3) "$moldau" bench --bootstrap "$bootstrap" --duration "$duration" --partitions 16 --message-size 100 \
       --acks -1 --rate max --json "$out/w3.json" --plot "$out/w3.svg" ;;
  4) "$moldau" soak --bootstrap "$bootstrap" --duration "${SOAK_SECS:-600}" --partitions 16 --message-size 1024 \
       --rate "$(half_rate)" --producers 4 --consumer-groups 1 --report-every 30 --json "$out/w4-soak.json" ;;
  *) echo "unknown workload $w" >&2; exit 2 ;;
  esac
done
