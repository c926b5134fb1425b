#!/usr/bin/env bash
# The end-to-end benchmark: the broker's own limit and the collector's rate, CPU and memory
# in the same run (see scripts/bench_e2e.py and BENCHMARKS.md). Installs Mosquitto, its
# clients, VictoriaMetrics and Python when missing.
#
#   scripts/bench-e2e.sh                      # 1,000 devices, 500,000 messages, QoS 0 and 1, 3 runs
#   DEVICES=10000 MESSAGES=500000 QOS=0 RUNS=1 scripts/bench-e2e.sh
#   COLLECTOR=/path/to/telemetry-collector QOS=0 SINKS=local,influxdb scripts/bench-e2e.sh
#
# Knobs (see scripts/bench_e2e.py): QOS, RUNS, DEVICES, MESSAGES, SINKS, COLLECTOR, PROFILE,
# GZIP, EXTRA_CONFIG, INFLIGHT, PUBLISHER (blast | mqtt), BLAST_CONNECTIONS, CONNECTIONS, SUBSCRIBER
# (discard | mosquitto_sub), FOOTPRINT_WAIT. With COLLECTOR set, only the simulator is built.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bench-prepare.sh
BIN=$PWD/target/release exec python3 scripts/bench_e2e.py
