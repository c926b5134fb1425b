# Shared by bench-e2e.sh and bench-devices.sh (sourced, not run): installs Mosquitto, its
# clients, VictoriaMetrics and Python when missing, and builds the release binaries (only
# the simulator when COLLECTOR names the collector to measure).
missing=()
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v victoria-metrics >/dev/null 2>&1 || missing+=(victoria-metrics)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ -n "${COLLECTOR:-}" ]; then
  cargo build --release --locked -q -p telemetry-simulator --bins
else
  cargo build --release --locked -q -p telemetry-collector -p telemetry-simulator --bins
fi
