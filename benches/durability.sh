#!/usr/bin/env bash
# What durability costs, measured side by side in one run (issue 15's bar: workload 1 with
# `flush = always` at 90% or more of `flush = never`, workload 2's publish p99 at most 2 ms).
# Each variant gets a fresh release broker and data directory; the variants are interleaved
# (ROUNDS times A B C ...) so the machine's drift spreads over all of them:
#   never           flush = never (the baseline)
#   always          flush = always, the defaults (segments zero-filled ahead)
#   always-noprep   flush = always without zero-filling ahead (log_prepare_ahead_bytes = 0)
# then workload 2 (50% of the variant's own workload 1 rate, as benches/workloads.sh runs it) on
# each `always` variant.
# Usage: benches/durability.sh [OUT_DIR]   Env: DURATION (seconds per run, default 20), ROUNDS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-out/durability}
duration=${DURATION:-20}
rounds=${ROUNDS:-2}
mkdir -p "$out"
cargo build --release --quiet

flags_of() {
  case $1 in
  never) echo "--flush never" ;;
  always) echo "--flush always" ;;
  always-noprep) echo "--flush always --set log_prepare_ahead_bytes=0" ;;
  esac
}

# One broker with the variant's flags, one `moldau bench` run against it: bench ARGS... JSON.
run() {
  local variant=$1 json=$2
  shift 2
  (
    # shellcheck disable=SC2046
    source benches/start-broker.sh $(flags_of "$variant")
    ./target/release/moldau bench --bootstrap "$bootstrap" --duration "$duration" --partitions 16 \
      --message-size 1024 --acks -1 "$@" --json "$json" >/dev/null 2>"${json%.json}.log"
  )
}

field() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, j))' "$@"; }

variants=(never always always-noprep)
for r in $(seq "$rounds"); do
  for v in "${variants[@]}"; do
    run "$v" "$out/w1-$v-$r.json" --rate max
    echo "round $r $v: $(field "$out/w1-$v-$r.json" 'round(produced["mb_per_sec"], 1)') MB/s," \
      "publish p99 $(field "$out/w1-$v-$r.json" 'publish_latency["p99_us"]') us"
  done
done

mean_rate() { # variant -> mean messages/s over the rounds
  local v=$1 sum=0
  for r in $(seq "$rounds"); do
    sum=$(python3 -c "print($sum + $(field "$out/w1-$v-$r.json" 'produced["messages_per_sec"]'))")
  done
  python3 -c "print($sum / $rounds)"
}
base=$(mean_rate never)
for v in always always-noprep; do
  python3 -c "print('workload 1: $v / never = %.2f' % ($(mean_rate "$v") / $base))"
done
for v in always always-noprep; do
  half=$(python3 -c "print(int($(mean_rate "$v") / 2))")
  run "$v" "$out/w2-$v.json" --rate "$half"
  echo "workload 2 ($half msg/s, half of its workload 1) $v:" \
    "publish p50 $(field "$out/w2-$v.json" 'publish_latency["p50_us"]') us," \
    "p99 $(field "$out/w2-$v.json" 'publish_latency["p99_us"]') us, p99.9 $(field "$out/w2-$v.json" 'publish_latency["p999_us"]') us"
done
