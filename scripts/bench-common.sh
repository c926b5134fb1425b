# Shared by the benchmark scripts (sourced, not run): the release build, a work directory
# removed at exit with every process started here, Mosquitto on a free loopback port, and
# the collector started on a configuration, waited for until it has subscribed.

cargo build --release --locked --bins -q
bin=$PWD/target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# start_mosquitto [extra mosquitto.conf lines...]: sets $port and $mosquitto (its pid).
start_mosquitto() {
  [ -x /usr/sbin/mosquitto ] || { apt-get update -q && apt-get install -y -q mosquitto; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  {
    echo "user $(id -un)"
    echo "listener $port 127.0.0.1"
    echo "allow_anonymous true"
    echo "max_queued_messages 0"
    printf '%s\n' "$@"
  } >"$work/mosquitto.conf"
  /usr/sbin/mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  mosquitto=$!
  pids+=($mosquitto)
  for _ in $(seq 1 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.05
  done
}

# start_collector CONFIG [log line to wait for] [log file]: sets $collector (its pid).
start_collector() {
  local log=${3:-$work/collector.log}
  # MALLOC_ARENA_MAX=2 as the systemd unit sets it.
  NO_COLOR=1 MALLOC_ARENA_MAX=2 "$bin/telemetry-collector" run -c "$1" 2>"$log" &
  collector=$!
  pids+=($collector)
  for _ in $(seq 1 100); do grep -qs "${2:-subscribed}" "$log" && break; sleep 0.1; done
}

# cpu_seconds PID: user + system CPU time the process has used so far.
cpu_seconds() {
  awk -v tck="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / tck}' "/proc/$1/stat"
}

# stored_values STORE: the number of field values in a local store.
stored_values() {
  "$bin/telemetry-collector" query --store "$1" --summary --format csv | awk -F, 'NR>1 {s+=$3} END {print s+0}'
}
