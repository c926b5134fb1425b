#!/usr/bin/env bash
# The demo: simulated MQTT and serial devices -> the collector (config/demo.toml) -> the
# embedded local store, then a summary of what landed per device; then the collector runs
# again with the devices publishing live, and the dashboard is at http://127.0.0.1:9108/
# until Ctrl-C. Needs only the Rust toolchain: the simulator hosts the MQTT broker itself,
# its serial devices are pseudo-terminals behind links in data/demo/serial, and its Modbus
# devices sit on an RTU bus (a pty behind data/demo/modbus/rs485) and behind a Modbus TCP
# gateway on 127.0.0.1:15020.
#
#   DEVICES=20 SAMPLES=15 scripts/demo.sh
#   LIVE=0 scripts/demo.sh      # stop after the summary
set -euo pipefail
cd "$(dirname "$0")/.."

devices=${DEVICES:-20}
samples=${SAMPLES:-15}
port=18830
modbus_tcp=15020
http=127.0.0.1:9108   # config/demo.toml leaves [http] at its default
live=${LIVE:-1}
data=data/demo

echo "==> building (release)"
cargo build --release --locked --bins -q
bin=target/release

for p in $port $modbus_tcp ${http#*:}; do
  if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
    echo "port $p is in use; the demo needs it (see config/demo.toml)" >&2
    exit 1
  fi
done
rm -rf "$data"
mkdir -p "$data"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "==> starting the simulator's MQTT broker on 127.0.0.1:$port"
"$bin/telemetry-simulator" broker --listen "127.0.0.1:$port" >"$data/broker.log" 2>&1 &
pids+=($!)

echo "==> plugging in 4 simulated serial devices ($data/serial/ser-0*): 3 stream key=value lines, 1 answers polls with CSV"
"$bin/telemetry-simulator" serial --dir "$data/serial" --devices 3 --count "$samples" \
  --format key-value --rate 5 --manifest "$data/serial-sent.jsonl" >"$data/serial.log" 2>&1 &
serial_streams=$!
pids+=($serial_streams)
"$bin/telemetry-simulator" serial --dir "$data/serial" --first 3 --devices 1 --count "$samples" \
  --baud 9600 --format csv --mode answer --manifest "$data/serial-polled.jsonl" >"$data/serial-polled.log" 2>&1 &
serial_polled=$!
pids+=($serial_polled)

echo "==> 4 simulated Modbus transmitters: units 1 and 2 on an RTU bus ($data/modbus/rs485, 9600 baud), units 1 and 2 behind a TCP gateway (127.0.0.1:$modbus_tcp)"
"$bin/telemetry-simulator" modbus --rtu "$data/modbus/rs485" --tcp "127.0.0.1:$modbus_tcp" \
  --units 2 --first 50 --interval 1s >"$data/modbus.log" 2>&1 &
pids+=($!)

# Starts the collector in the background (appending to its log) and waits until it subscribed.
start_collector() {
  local before=0
  [ -f "$data/collector.log" ] && before=$(wc -l <"$data/collector.log")
  NO_COLOR=1 "$bin/telemetry-collector" run -c config/demo.toml >>"$data/collector.log" 2>&1 &
  collector=$!
  pids+=($collector)
  for _ in $(seq 1 150); do
    tail -n +"$((before + 1))" "$data/collector.log" | grep -q "subscribed" && return 0
    kill -0 "$collector" 2>/dev/null || { cat "$data/collector.log"; exit 1; }
    sleep 0.2
  done
  echo "the collector did not subscribe" >&2
  cat "$data/collector.log"
  exit 1
}

echo "==> starting the collector (log: $data/collector.log)"
start_collector

echo "==> $devices simulated devices publish $samples readings each (QoS 1, JSON)"
"$bin/telemetry-simulator" mqtt --port "$port" --devices "$devices" --sites 4 --count "$samples" \
  --interval 1s --rate 200 --qos 1 --format json --manifest "$data/sent.jsonl"

echo "==> waiting for the serial devices to finish (they stay plugged in until the collector has read everything)"
wait "$serial_streams" "$serial_polled"

echo "==> stopping the collector (it writes everything it received before exiting)"
kill -TERM "$collector"
wait "$collector" || true

echo
echo "==> what landed in the local store, per device ($data/store.db)"
"$bin/telemetry-collector" query -c config/demo.toml --summary
echo
echo "==> latest values of one device"
"$bin/telemetry-collector" query -c config/demo.toml --latest --device dev-0000
echo
echo "Sent: $(wc -l <"$data/sent.jsonl") MQTT messages (manifest: $data/sent.jsonl) and $(cat "$data"/serial-*.jsonl | wc -l) serial lines ($data/serial-*.jsonl). Query more with:"
echo "  $bin/telemetry-collector query -c config/demo.toml --measurement env --field temperature --format csv"
[ "$live" = 0 ] && exit 0

echo
echo "==> the collector again, with the $devices devices publishing live (one reading per second each)"
start_collector
"$bin/telemetry-simulator" mqtt --port "$port" --devices "$devices" --sites 4 --duration 24h \
  --interval 1s --rate "$devices" --qos 1 --format json >"$data/live.log" 2>&1 &
pids+=($!)
echo
echo "==> the dashboard: http://$http/   (its JSON API: http://$http/api/v1/devices; docs/http-api.md)"
echo "    Ctrl-C stops the demo."
wait "$collector"
