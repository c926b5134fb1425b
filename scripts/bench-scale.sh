#!/usr/bin/env bash
# Scale-out rate: 1, 2, 3... collectors in one MQTT shared-subscription group
# ($share/bench/...) on one Mosquitto, the simulator publishing DEVICES x SAMPLES JSON readings
# (4 fields each) at QoS 1 over 10 connections, as fast as the broker takes them. For each
# group size: the combined rate from the first publish until every collector has written
# everything to its own local store and exited, and the CPU time each process used until
# the last publish (broker, simulator, collectors), to see which one limits it.
#
#   SIZES="1 2 3" DEVICES=1000 SAMPLES=300 PROTOCOL=5 scripts/bench-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=${SIZES:-1 2 3}
devices=${DEVICES:-1000}
samples=${SAMPLES:-300}
protocol=${PROTOCOL:-5}
source scripts/bench-common.sh
readings=$((devices * samples))

for n in $sizes; do
  # A fresh broker per size; max_inflight_messages is the window of 3.1.1 subscribers (MQTT 5
  # ones announce their own Receive Maximum: the collector's channel capacity, 1024).
  start_mosquitto "max_inflight_messages 1000"
  collectors=()
  for i in $(seq 1 "$n"); do
    cat >"$work/c$n-$i.toml" <<CONF
data_dir = "$work/n$n-$i"
[http]
enabled = false
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
  broker_cpu=$(cpu_seconds "$mosquitto")
  collector_cpu=()
  for c in "${collectors[@]}"; do collector_cpu+=("$(cpu_seconds "$c")"); done
  published=$(date +%s.%N)
  for c in "${collectors[@]}"; do kill -TERM "$c"; done
  for c in "${collectors[@]}"; do wait "$c"; done
  end=$(date +%s.%N)
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
print(f"{n} collector(s), MQTT {sys.argv[11]}: {readings} readings in {wall:.2f} s = {readings/wall:,.0f} readings/s "
      f"({values} of {readings*4} field values stored{'' if values == readings*4 else ' LOSS'}; shares {shares})")
print(f"  CPU until the last publish ({pub:.2f} s): broker {broker:.2f} s ({100*broker/pub:.0f}%), "
      f"simulator {sim:.2f} s ({100*sim/pub:.0f}%), collectors {' '.join(f'{c:.2f}' for c in cpus)} s "
      f"({100*sum(cpus)/pub:.0f}% together)")
PY
done
