#!/usr/bin/env bash
# A paced producer's ack p99 alone, beside a greedy producer, and beside the same producer held
# to a quota, on one release broker in one run (benches/quotas.py does the measuring).
# Usage: benches/quotas.sh   (needs confluent-kafka and kafka-python; release build)
source "$(dirname "$0")/start-broker.sh"
python3 benches/quotas.py "$bootstrap"
