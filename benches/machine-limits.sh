#!/usr/bin/env bash
# Measures this machine's own limits, to set next to Moldau's numbers in docs/performance.md:
#   - fio O_DIRECT sequential write bandwidth over io_uring, queue depth 1, at the block sizes the
#     storage bench appends (16 KiB, 64 KiB, 1 MiB), without and with fdatasync after each write,
#     into fallocated (unwritten) extents and into already-written blocks (an overwrite);
#   - fio 4 KiB write + fdatasync latency (p50/p99/p99.9 of the sync and of the write) in both modes,
#     and appending to a new file (blocks allocated by the write);
#   - iperf3 loopback TCP bandwidth, one stream.
# Usage: benches/machine-limits.sh [DIR]   (DIR: a directory on the data device; default ./bench-out)
# Needs fio and iperf3 (Debian: apt-get install fio iperf3). Leaves nothing behind but DIR/*.json.
set -euo pipefail
dir=${1:-./bench-out}
mkdir -p "$dir"
file="$dir/fio-test.bin"
trap 'rm -f "$file"' EXIT

fio_json() { fio --output-format=json --name=w --filename="$file" --ioengine=io_uring --direct=1 --iodepth=1 "$@"; }
bw() { python3 -c 'import json,sys; b=json.load(sys.stdin)["jobs"][0]["write"]["bw_bytes"]; print("%8.0f MiB/s" % (b/2**20))'; }
# Unwritten: a fresh file, fallocated by fio before the run. Written: fio lays the file out with
# data first (overwrite=1), then writes over it.
mode_args() { if [[ $1 == unwritten ]]; then rm -f "$file"; echo --fallocate=native; else echo --overwrite=1; fi; }

echo "== fio sequential O_DIRECT write, io_uring, QD1, 1 GiB"
for mode in unwritten written; do
  rm -f "$file"
  for bs in 16k 64k 1m; do
    for sync in 0 1; do
      printf '  %-9s bs=%-4s fdatasync-per-write=%s ' "$mode" "$bs" "$sync"
      # shellcheck disable=SC2046
      fio_json --rw=write --bs="$bs" --size=1g --fdatasync="$sync" $(mode_args "$mode") | bw
    done
  done
done

latency() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
sync = job["sync"]["lat_ns"]["percentile"]
write = job["write"]["clat_ns"]["percentile"]
us = lambda d, k: d[k] / 1000
print(f"  {sys.argv[2]:<9} fdatasync  p50 {us(sync,'50.000000'):6.0f} us  p99 {us(sync,'99.000000'):6.0f} us  p99.9 {us(sync,'99.900000'):6.0f} us")
print(f"  {sys.argv[2]:<9} write clat p50 {us(write,'50.000000'):6.0f} us  p99 {us(write,'99.000000'):6.0f} us")
EOF
}

echo "== fio 4 KiB write + fdatasync latency (20 000 writes)"
rm -f "$file"
fio_json --rw=write --bs=4k --size=80m --fdatasync=1 --fallocate=none >"$dir/fio-sync4k-new.json"
latency "$dir/fio-sync4k-new.json" "new file"
for mode in unwritten written; do
  rm -f "$file"
  # shellcheck disable=SC2046
  fio_json --rw=write --bs=4k --size=80m --fdatasync=1 $(mode_args "$mode") >"$dir/fio-sync4k-$mode.json"
  latency "$dir/fio-sync4k-$mode.json" "$mode"
done

echo "== iperf3 loopback, one stream, 10 s"
iperf3 -s -1 -p 5299 >/dev/null 2>&1 &
sleep 0.5
iperf3 -c 127.0.0.1 -p 5299 -t 10 -J | python3 -c 'import json,sys; b=json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]; print("  %.2f GB/s" % (b/8e9))'
wait
