#!/usr/bin/env bash
# Modbus benchmarks (issue 18), on the simulator's devices.
#
# rtu: one RTU bus on a pty, paced as a half-duplex line at BAUD (10 bits per character,
#   request and answer one after the other), with DEVICES units of REGISTERS holding
#   registers each, polled as fast as the collector can (interval 1ms: every poll overruns,
#   and the bus never rests). Prints requests per second against the line-rate limit (the
#   bytes of a request and its answer at the baud rate, nothing else) and against the
#   protocol's limit (the same plus the 3.5-character silence before each request).
#
#   MODE=rtu BAUD=9600 DEVICES=8 REGISTERS=10 DURATION=20 scripts/bench-modbus.sh
#
# tcp: DEVICES Modbus TCP devices (one connection each, to the simulator's server) with
#   REGISTERS holding registers each (one u16 field per register), polled every second for
#   DURATION seconds. Prints the collector's CPU time per field value and its resident memory.
#
#   MODE=tcp DEVICES=100 REGISTERS=50 DURATION=60 scripts/bench-modbus.sh
#
#   COLLECTOR=path/to/telemetry-collector scripts/bench-modbus.sh    # measure another build
#   EXTRA='[journal]
#   sync = false' scripts/bench-modbus.sh                              # more collector settings
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${MODE:-rtu}
baud=${BAUD:-9600}
devices=${DEVICES:-8}
registers=${REGISTERS:-10}
seconds=${DURATION:-20}
source scripts/bench-common.sh
collector_bin=${COLLECTOR:-$bin/telemetry-collector}

http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
metric() { # metric NAME: the sum of a counter over its labels
  curl -s "http://127.0.0.1:$http/metrics" | awk -v n="telemetry_collector_$1" '$1 ~ "^"n"[{ ]" || $1 == n {s += $2} END {printf "%d", s}'
}

case $mode in
rtu)
  sim_args=(--rtu "$work/bus" --baud "$baud")
  poll=1ms
  ;;
tcp)
  tcp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  sim_args=(--tcp "127.0.0.1:$tcp_port" --source-per-device)
  poll=1s
  ;;
*) echo "MODE is rtu or tcp" >&2; exit 2 ;;
esac

"$bin/telemetry-simulator" modbus "${sim_args[@]}" --units "$devices" --wide "$registers" \
  --interval 1s --poll "$poll" --print-config >"$work/sources.toml"
{
  echo "data_dir = \"$work/data\""
  echo "[http]"
  echo "listen = \"127.0.0.1:$http\""
  echo "${EXTRA:-}"
  cat "$work/sources.toml"
} >"$work/collector.toml"

"$bin/telemetry-simulator" modbus "${sim_args[@]}" --units "$devices" --wide "$registers" \
  --interval 1s >"$work/simulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -qs '^\(rtu\|tcp\) ' "$work/simulator.log" && break; sleep 0.05; done

NO_COLOR=1 MALLOC_ARENA_MAX=2 "$collector_bin" run -c "$work/collector.toml" 2>"$work/collector.log" &
collector=$!
pids+=($collector)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$http/health" >/dev/null && break; sleep 0.1; done

# Warm up until every device has answered, then measure a window.
sleep 3
r0=$(metric modbus_requests_total); p0=$(metric readings_received_total)
e0=$(metric modbus_errors_total); c0=$(cpu_seconds "$collector"); t0=$(date +%s.%N)
sleep "$seconds"
r1=$(metric modbus_requests_total); p1=$(metric readings_received_total)
e1=$(metric modbus_errors_total); c1=$(cpu_seconds "$collector"); t1=$(date +%s.%N)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$collector/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$collector/status")
overruns=$(metric modbus_poll_overruns_total)

python3 - "$mode" "$baud" "$devices" "$registers" "$r0" "$r1" "$p0" "$p1" "$e0" "$e1" "$c0" "$c1" "$t0" "$t1" "$rss" "$hwm" "$overruns" <<'PY'
import sys
mode, baud, devices, registers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r0, r1, p0, p1, e0, e1 = map(int, sys.argv[5:11])
c0, c1, t0, t1 = map(float, sys.argv[11:15])
rss, hwm, overruns = int(sys.argv[15]), int(sys.argv[16]), int(sys.argv[17])
secs = t1 - t0
rate = (r1 - r0) / secs
errors = e1 - e0
if mode == "rtu":
    wire = 8 + 5 + 2 * registers              # request + answer bytes in RTU
    line = baud / 10 / wire                   # requests/s the bytes alone allow
    gap = 1.75e-3 if baud > 19200 else 3.5 * 10 / baud
    protocol = 1 / (wire * 10 / baud + gap)   # with the silence before each request
    print(f"rtu baud={baud} devices={devices} registers/request={registers}: "
          f"{rate:.1f} requests/s; line-rate limit {line:.1f} ({100 * rate / line:.1f}%), "
          f"with the 3.5-char gap {protocol:.1f} ({100 * rate / protocol:.1f}%); errors {errors}")
else:
    values = (p1 - p0) * registers
    cpu = c1 - c0
    print(f"tcp devices={devices} registers={registers} at 1s: {values / secs:.0f} field values/s, "
          f"CPU {cpu:.2f} s in {secs:.1f} s = {1e6 * cpu / max(values, 1):.2f} us per field value; "
          f"RSS {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB); overruns {overruns}; errors {errors}")
PY
