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

missing=()
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ -n "${COLLECTOR:-}" ]; then
  cargo build --release --locked -q -p telemetry-simulator --bins
else
  cargo build --release --locked -q -p telemetry-collector -p telemetry-simulator --bins
fi
BIN=$PWD/target/release exec python3 scripts/bench_devices.py
