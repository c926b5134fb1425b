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
[ -x /usr/sbin/mosquitto ] || { apt-get update -q && apt-get install -y -q mosquitto; }
cargo build --release --locked --bins -q
bin=$PWD/target/release

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cat >"$work/mosquitto.conf" <<CONF
user $(id -un)
listener $port 127.0.0.1
allow_anonymous true
max_queued_messages 0
max_inflight_messages 1000
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)

cat >"$work/collector.toml" <<CONF
data_dir = "$work/data"
[pipeline]
shutdown_timeout = "120s"
[[sources.mqtt]]
host = "127.0.0.1"
port = $port
[[sources.mqtt.subscriptions]]
topic = "sensors/{site}/{device}/{measurement}"
qos = $qos
CONF
NO_COLOR=1 "$bin/telemetry-collector" run -c "$work/collector.toml" 2>"$work/collector.log" &
collector=$!
pids+=($collector)
for _ in $(seq 1 100); do grep -q subscribed "$work/collector.log" && break; sleep 0.1; done

start=$(date +%s.%N)
"$bin/telemetry-simulator" mqtt --port "$port" --devices "$devices" --sites 10 --count "$samples" \
  --qos "$qos" --connections 10 --format json 2>/dev/null
kill -TERM "$collector"
wait "$collector"
end=$(date +%s.%N)

values=$("$bin/telemetry-collector" query --store "$work/data/store.db" --summary --format csv | awk -F, 'NR>1 {s+=$3} END {print s}')
readings=$((devices * samples))
python3 - "$start" "$end" "$readings" "$values" <<PY
import sys
start, end, readings, values = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t = end - start
print(f"{readings} readings ({values} field values stored, {readings*4} sent) in {t:.2f} s: "
      f"{readings/t:,.0f} readings/s, {values/t:,.0f} field values/s (QoS $qos, $devices devices)")
PY
