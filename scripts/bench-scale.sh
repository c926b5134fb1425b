#!/usr/bin/env bash
# Scale-out rate: 1, 2, 3... collectors in one MQTT shared-subscription group
# ($share/bench/...) on one Mosquitto, the simulator publishing DEVICES x SAMPLES JSON readings
# (4 fields each) at QoS 1 over 10 connections, as fast as the broker takes them. For each
# group size: the combined rate from the first publish until the collectors have written
# every reading to their local stores (their readings_written_total on /metrics), the CPU
# time each process used until then (broker, simulator, collectors), to see which one
# limits it, and, after they stopped, that the stores hold every field value.
#
# Size 0 runs a subscriber that does nothing instead (mosquitto_sub, QoS 1, output to
# /dev/null): the rate the broker and the simulator reach on their own on this machine.
# BROKER_INFLIGHT is Mosquitto's max_inflight_messages, the window of 3.1.1 subscribers
# (MQTT 5 ones announce their own Receive Maximum: the collector's channel capacity, 1024).
#
#   SIZES="0 1 2 3" DEVICES=1000 SAMPLES=300 PROTOCOL=5 BROKER_INFLIGHT=1000 scripts/bench-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${SIZES:-1 2 3}
devices=${DEVICES:-1000}
samples=${SAMPLES:-300}
protocol=${PROTOCOL:-5}
broker_inflight=${BROKER_INFLIGHT:-1000}
source scripts/bench-common.sh
readings=$((devices * samples))

for n in $sizes; do
  start_mosquitto "max_inflight_messages $broker_inflight"  # a fresh broker per size
  if [ "$n" = 0 ]; then
    v=$([ "$protocol" = 5 ] && echo mqttv5 || echo mqttv311)
    TIMEFORMAT='%U %S'
    { time mosquitto_sub -h 127.0.0.1 -p "$port" -V "$v" -q 1 -c -i bench-null -t 'sensors/#' \
      -C "$readings" >/dev/null; } 2>"$work/sub.time" &
    sub=$!
    sleep 0.5 # mosquitto_sub has no readiness signal; its subscription is in place well before
    start=$(date +%s.%N)
    sim_cpu=$( { time "$bin/telemetry-simulator" mqtt --port "$port" --devices "$devices" --sites 10 \
      --count "$samples" --qos 1 --connections 10 --format json >/dev/null 2>&1; } 2>&1 )
    published=$(date +%s.%N)
    wait "$sub"
    end=$(date +%s.%N)
    broker_cpu=$(cpu_seconds "$mosquitto")
    sub_cpu=$(awk '{print $1 + $2}' "$work/sub.time")
    kill "$mosquitto"; wait "$mosquitto" 2>/dev/null || true
    python3 - "$start" "$published" "$end" "$readings" "$sim_cpu" "$broker_cpu" "$sub_cpu" "$protocol" <<'PY'
import sys
start, published, end, readings = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
sim = sum(float(x) for x in sys.argv[5].split())
broker, sub = float(sys.argv[6]), float(sys.argv[7])
wall = end - start
print(f"0 collectors (mosquitto_sub, MQTT {sys.argv[8]}): {readings} messages received in {wall:.2f} s = {readings/wall:,.0f}/s "
      f"(last publish after {published - start:.2f} s)")
print(f"  CPU: broker {broker:.2f} s ({100*broker/wall:.0f}% of one core), simulator {sim:.2f} s, mosquitto_sub {sub:.2f} s")
PY
    continue
  fi
  collectors=()
  http_ports=()
  for i in $(seq 1 "$n"); do
    http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    http_ports+=("$http_port")
    cat >"$work/c$n-$i.toml" <<CONF
data_dir = "$work/n$n-$i"
[http]
listen = "127.0.0.1:$http_port"
[pipeline]
shutdown_timeout = "120s"
[[sources.mqtt]]
host = "127.0.0.1"
port = $port
protocol = "$protocol"
client_id = "bench-$n-$i"
[[sources.mqtt.subscriptions]]
topic = "\$share/bench/sensors/{site}/{device}/{measurement}"
qos = 1
CONF
    start_collector "$work/c$n-$i.toml" subscribed "$work/c$n-$i.log"
    collectors+=("$collector")
  done

  start=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  sim_cpu=$( { time "$bin/telemetry-simulator" mqtt --port "$port" --devices "$devices" --sites 10 \
    --count "$samples" --qos 1 --connections 10 --format json >/dev/null 2>&1; } 2>&1 )
  published=$(date +%s.%N)
  # Until every reading is written (at most 10 minutes).
  end=$(python3 - "$readings" "${http_ports[@]}" <<'PY'
import re, sys, time, urllib.request
want, ports = int(sys.argv[1]), sys.argv[2:]
deadline = time.time() + 600
def written(port):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(r'^telemetry_collector_readings_written_total\{sink="local"\} (\d+)', body, re.M)
    return int(m.group(1)) if m else 0
while sum(written(p) for p in ports) < want and time.time() < deadline:
    time.sleep(0.05)
print(f"{time.time():.3f}")
PY
)
  broker_cpu=$(cpu_seconds "$mosquitto")
  collector_cpu=()
  for c in "${collectors[@]}"; do collector_cpu+=("$(cpu_seconds "$c")"); done
  for c in "${collectors[@]}"; do kill -TERM "$c"; done
  for c in "${collectors[@]}"; do wait "$c"; done
  kill "$mosquitto"; wait "$mosquitto" 2>/dev/null || true

  values=0
  shares=()
  for i in $(seq 1 "$n"); do
    v=$(stored_values "$work/n$n-$i/store.db")
    values=$((values + v))
    shares+=("$v")
  done
  python3 - "$n" "$start" "$published" "$end" "$readings" "$values" "$sim_cpu" "$broker_cpu" \
    "${shares[*]}" "${collector_cpu[*]}" "$protocol" <<'PY'
import sys
n, start, published, end = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
readings, values = int(sys.argv[5]), int(sys.argv[6])
sim = sum(float(x) for x in sys.argv[7].split())
broker = float(sys.argv[8])
shares = [int(x) for x in sys.argv[9].split()]
cpus = [float(x) for x in sys.argv[10].split()]
wall, pub = end - start, published - start
print(f"{n} collector(s), MQTT {sys.argv[11]}: {readings} readings written in {wall:.2f} s = {readings/wall:,.0f} readings/s "
      f"(last publish after {pub:.2f} s; {values} of {readings*4} field values stored{'' if values == readings*4 else ' LOSS'}; "
      f"shares {shares})")
print(f"  CPU until written: broker {broker:.2f} s ({100*broker/wall:.0f}% of one core), "
      f"simulator {sim:.2f} s ({100*sim/wall:.0f}%, until its last publish), "
      f"collectors {' '.join(f'{c:.2f}' for c in cpus)} s ({100*sum(cpus)/wall:.0f}% together)")
PY
done
