#!/usr/bin/env bash
# A quick end-to-end rate: simulated MQTT devices -> Mosquitto -> the collector -> the local
# store. Prints the readings per second from the first publish until the collector has
# written everything and exited. (The full benchmark, with the broker's own limit and CPU
# figures, is described in BENCHMARKS.md once it exists.)
#
#   DEVICES=1000 SAMPLES=50 QOS=1 scripts/bench-mqtt.sh
set -euo pipefail
cd "$(dirname "$0")/.."

devices=${DEVICES:-1000}
samples=${SAMPLES:-50}
qos=${QOS:-1}
source scripts/bench-common.sh
start_mosquitto "max_inflight_messages 1000"

cat >"$work/collector.toml" <<CONF
data_dir = "$work/data"
[http]
enabled = false
[pipeline]
shutdown_timeout = "120s"
[[sources.mqtt]]
host = "127.0.0.1"
port = $port
[[sources.mqtt.subscriptions]]
topic = "sensors/{site}/{device}/{measurement}"
qos = $qos
CONF
start_collector "$work/collector.toml"

start=$(date +%s.%N)
"$bin/telemetry-simulator" mqtt --port "$port" --devices "$devices" --sites 10 --count "$samples" \
  --qos "$qos" --connections 10 --format json 2>/dev/null
kill -TERM "$collector"
wait "$collector"
end=$(date +%s.%N)

values=$(stored_values "$work/data/store.db")
readings=$((devices * samples))
python3 - "$start" "$end" "$readings" "$values" <<PY
import sys
start, end, readings, values = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t = end - start
print(f"{readings} readings ({values} field values stored, {readings*4} sent) in {t:.2f} s: "
      f"{readings/t:,.0f} readings/s, {values/t:,.0f} field values/s (QoS $qos, $devices devices)")
PY
