# Sourced by the benchmark scripts: builds the release binary and starts one broker on a free
# port in a temporary data directory (extra `serve` arguments: "$@"), stopped and removed on
# exit. Sets `work` (the directory), `pid` and `bootstrap`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
pid=""
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release --quiet
./target/release/moldau serve --data-dir "$work/data" --listen 127.0.0.1:0 "$@" >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" && break; sleep 0.2; done
bootstrap=$(awk '/listening on/ {print $NF}' "$work/out")
