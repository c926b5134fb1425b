#!/usr/bin/env bash
# Serial read rate: PORTS simulated serial devices (pseudo-terminals paced at BAUD) stream
# COUNT JSON lines each at RATE lines per second into one collector, which writes them to its
# local store. Prints whether every reading arrived, the line rate the devices kept up, and
# the collector's CPU time (user + system, from /proc) over the run.
#
#   PORTS=32 RATE=100 COUNT=1000 BAUD=921600 scripts/bench-serial.sh
#   COLLECTOR=path/to/telemetry-collector scripts/bench-serial.sh    # measure another build
set -euo pipefail
cd "$(dirname "$0")/.."

ports=${PORTS:-16}
rate=${RATE:-100}
count=${COUNT:-1000}
baud=${BAUD:-921600}
cargo build --release --locked --bins -q
bin=$PWD/target/release

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

{
  echo "data_dir = \"$work/data\""
  echo '[pipeline]'
  echo 'shutdown_timeout = "120s"'
  for i in $(seq 0 $((ports - 1))); do
    id=$(printf 'ser-%02d' "$i")
    cat <<CONF
[[sources.serial]]
name = "$id"
path = "$work/ports/$id"
baud_rate = $baud
format = "json"
measurement = "env"
reopen = { initial = "50ms", max = "200ms" }
CONF
  done
} >"$work/collector.toml"

# The devices first (their lines wait in the ptys), then the collector.
"$bin/telemetry-simulator" serial --dir "$work/ports" --devices "$ports" --count "$count" \
  --rate "$rate" --baud "$baud" --format json --linger 60s >"$work/sim.out" 2>"$work/sim.log" &
sim=$!
pids+=($sim)
for _ in $(seq 1 100); do [ "$(ls "$work/ports" 2>/dev/null | wc -l)" -ge "$ports" ] && break; sleep 0.1; done

NO_COLOR=1 "${COLLECTOR:-$bin/telemetry-collector}" run -c "$work/collector.toml" 2>"$work/collector.log" &
collector=$!
pids+=($collector)
start=$(date +%s.%N)
wait "$sim"
end=$(date +%s.%N)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$collector/stat")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$collector/status")
kill -TERM "$collector"
wait "$collector"

values=$("$bin/telemetry-collector" query --store "$work/data/store.db" --summary --format csv | awk -F, 'NR>1 {s+=$3} END {print s+0}')
rejected=$(grep -c "rejected" "$work/collector.log" || true)
python3 - "$start" "$end" "$utime" "$stime" "$(getconf CLK_TCK)" "$ports" "$count" "$rate" "$baud" "$values" "$rss_kb" "$rejected" "$(tail -1 "$work/sim.out")" <<'PY'
import sys
start, end, ut, st, tck = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ports, count, rate, baud, values, rss, rejected, sim = (int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8]),
    int(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11]), int(sys.argv[12]), sys.argv[13])
wall = end - start
cpu = (ut + st) / tck
lines = ports * count
want = lines * 4
print(f"{ports} ports x {rate:g} lines/s ({baud} baud), {count} lines each: {lines} lines, {want} field values sent")
print(f"simulator: {sim}")
print(f"stored: {values} of {want} field values ({'no loss' if values == want else 'LOSS'}), "
      f"{rejected} rejection log lines")
print(f"collector CPU: {cpu:.2f} s user+system over {wall:.1f} s = {100*cpu/wall:.1f}% of one core, "
      f"{1e6*cpu/lines:.1f} us per line ({1e6*cpu/want:.2f} us per field value); peak RSS {rss/1024:.1f} MiB")
PY
