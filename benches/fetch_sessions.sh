#!/usr/bin/env bash
# Broker CPU per fetched MB for a consumer of 1,000 partitions, with and without incremental
# fetch sessions, on one release broker in one run (benches/fetch_sessions.py does the measuring).
# Usage: benches/fetch_sessions.sh   (needs confluent-kafka and kafka-python; release build)
metrics=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
source "$(dirname "$0")/start-broker.sh" --set "metrics_listen=\"$metrics\""
python3 benches/fetch_sessions.py "$bootstrap" "$pid" "$metrics"
