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
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)

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
NO_COLOR=1 "$bin/telemetry-collector" run -c "$work/collector.toml" 2>"$work/collector.log" &
collector=$!
pids+=($collector)
for _ in $(seq 1 100); do grep -q subscribed "$work/collector.log" && break; sleep 0.1; done

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
echo "stored: $("$bin/telemetry-collector" query --store "$work/data/store.db" --summary --format csv | awk -F, 'NR>1 {s+=$3} END {print s}') field values"
