#!/usr/bin/env bash
# TLS against plaintext on the same broker in the same run (benches/tls.py does the measuring):
# makes a throwaway CA and broker certificate with openssl, starts a release broker with a
# PLAINTEXT and an SSL listener on free ports, runs the producer/consumer comparison, stops it.
# Usage: benches/tls.sh [RECORDS] [SIZE]   (needs openssl and confluent-kafka; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
(cd "$work" &&
  openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 1 -subj "/CN=bench CA" 2>/dev/null &&
  openssl req "${ec[@]}" -keyout broker.key -out broker.csr -subj "/CN=localhost" 2>/dev/null &&
  printf 'subjectAltName=IP:127.0.0.1\n' >ext &&
  openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.pem -days 1 -extfile ext 2>/dev/null &&
  cat broker.key broker.pem >keystore.pem)
cargo build --release --quiet
./target/release/moldau serve --data-dir "$work/data" \
  --set listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0 \
  --set ssl.keystore.location="$work/keystore.pem" >"$work/out" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/out" && break; sleep 0.2; done
plain=$(awk '/listening on/ {print $NF}' "$work/out")
tls=$(awk '/listener SSL/ {print $NF}' "$work/out")
python3 benches/tls.py "$plain" "$tls" "$work/ca.pem" "${1:-200000}" "${2:-1024}"
