#!/usr/bin/env bash
# Replication factor 3 on three local nodes against factor 1 on one node, same binary, same run:
# workload 1 (16 partitions, 1 KiB, acks=all, max rate) and a fixed-rate latency run, each on a
# fresh cluster. Every node runs one shard (three nodes share this machine's cores).
# Usage: benches/replication.sh OUT_DIR [ROUNDS]
# Env: MOLDAU (default target/release/moldau), DURATION (measured seconds, default 20),
#      RATE (the latency run's msg/s, default 5000), FLUSH (default always).
set -euo pipefail
out=${1:?output directory}
rounds=${2:-1}
moldau=${MOLDAU:-target/release/moldau}
duration=${DURATION:-20}
rate=${RATE:-5000}
flush=${FLUSH:-always}
mkdir -p "$out"
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop_all EXIT

free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"; }

# start N: N nodes on 127.0.0.1..N, printing the bootstrap list.
start() {
  local n=$1 voters="" bootstrap=""
  for i in $(seq 1 "$n"); do voters+="${voters:+,}$i@127.0.0.$i:$(free_port 127.0.0.$i)"; done
  for i in $(seq 1 "$n"); do
    local port; port=$(free_port 127.0.0.$i)
    local dir="$out/data-$n-$i"; rm -rf "$dir"
    local args=(serve --listen "127.0.0.$i:$port" --data-dir "$dir" --shards 1 --flush "$flush")
    ((n > 1)) && args+=(--node-id "$i" --voters "$voters")
    "$moldau" "${args[@]}" >"$out/node-$n-$i.log" 2>&1 &
    pids+=($!)
    bootstrap+="${bootstrap:+,}127.0.0.$i:$port"
  done
  echo "$bootstrap"
}

wait_ready() {
  for _ in $(seq 1 100); do
    "$moldau" bench --bootstrap "$1" --duration 1 --warmup 0 --partitions 1 --rate 10 >/dev/null 2>&1 && return 0
    sleep 0.3
  done
  echo "cluster at $1 never became ready" >&2; return 1
}

for round in $(seq 1 "$rounds"); do
  for rf in 1 3; do
    nodes=$rf
    bootstrap=$(start "$nodes")
    wait_ready "$bootstrap"
    "$moldau" bench --bootstrap "$bootstrap" --duration "$duration" --partitions 16 --message-size 1024 \
      --acks -1 --rate max --replication-factor "$rf" --json "$out/r$round-rf$rf-max.json"
    "$moldau" bench --bootstrap "$bootstrap" --duration "$duration" --partitions 16 --message-size 1024 \
      --acks -1 --rate "$rate" --replication-factor "$rf" --json "$out/r$round-rf$rf-rate.json"
    stop_all
  done
done
python3 - "$out" <<'EOF'
import glob, json, os, sys
print(f"{'run':<16} {'msg/s':>9} {'MB/s':>7} {'publish p50':>12} {'p99':>9} {'p99.9':>9} {'e2e p99':>9} errors")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "r*-rf*-*.json"))):
    r = json.load(open(path))
    p, e = r["publish_latency"], r["end_to_end_latency"]
    print(f"{os.path.basename(path)[:-5]:<16} {r['produced']['messages_per_sec']:>9.0f} {r['produced']['mb_per_sec']:>7.1f} "
          f"{p['p50_us']/1000:>10.2f}ms {p['p99_us']/1000:>7.2f}ms {p['p999_us']/1000:>7.2f}ms {e['p99_us']/1000:>7.2f}ms {r['errors']}")
EOF
