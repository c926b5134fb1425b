#!/usr/bin/env bash
# A steady run for memory: DEVICES simulated MQTT devices, one JSON reading each per second
# (QoS 1), into a collector with the local store, for MINUTES minutes. Prints the
# collector's RSS every minute (from /proc/<pid>/status), so that growth shows.
#
#   DEVICES=1000 MINUTES=10 scripts/soak-rss.sh
set -euo pipefail
cd "$(dirname "$0")/.."

devices=${DEVICES:-1000}
minutes=${MINUTES:-10}
source scripts/bench-common.sh
start_mosquitto

cat >"$work/collector.toml" <<CONF
data_dir = "$work/data"
[http]
enabled = false
[[sources.mqtt]]
host = "127.0.0.1"
port = $port
[[sources.mqtt.subscriptions]]
topic = "sensors/{site}/{device}/{measurement}"
qos = 1
CONF
start_collector "$work/collector.toml"

"$bin/telemetry-simulator" mqtt --port "$port" --devices "$devices" --sites 10 --interval 1s \
  --rate "$devices" --duration "${minutes}m" --qos 1 --connections 10 --format json 2>/dev/null &
pids+=($!)

rss() { awk '/^VmRSS/ {print $2}' "/proc/$collector/status"; }
echo "minute rss_kib"
for m in $(seq 0 "$minutes"); do
  echo "$m $(rss)"
  [ "$m" -lt "$minutes" ] && sleep 60
done
echo "peak (VmHWM): $(awk '/^VmHWM/ {print $2}' "/proc/$collector/status") KiB"
kill -TERM "$collector"; wait "$collector" || true
echo "stored: $(stored_values "$work/data/store.db") field values"
