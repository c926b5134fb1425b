#!/usr/bin/env bash
# Many devices at a steady pace: RSS and CPU per field value over time, and what limits
# first (see scripts/bench_devices.py and BENCHMARKS.md). Installs Mosquitto,
# VictoriaMetrics and Python when missing.
#
#   scripts/bench-devices.sh                               # 100,000 devices, a reading per 10 s, 30 min
#   DEVICES=10000 MINUTES=2 SAMPLE_EVERY=20 scripts/bench-devices.sh   # a short trial
#   COLLECTOR=/path/to/telemetry-collector SINKS=local QOS=0 scripts/bench-devices.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bench-prepare.sh
BIN=$PWD/target/release exec python3 scripts/bench_devices.py
