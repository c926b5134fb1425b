#!/usr/bin/env bash
# The whole test suite. Installs what the tests need when it is missing (Mosquitto, openssl
# for test certificates, curl, VictoriaMetrics, InfluxDB, Chromium for the dashboard, mbpoll
# and pymodbus for Modbus), then
# runs every test of the workspace: unit tests, and the end-to-end tests that start their
# own brokers on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
# A publisher nobody on the project wrote (the oversized-message test).
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # certificates for the TLS test
# The HTTPS client of the HTTP port's tests.
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The systemd unit is checked with systemd-analyze (verify, security).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The InfluxDB sinks' tests: VictoriaMetrics (v2 write API) and InfluxDB 1.x (v1 API).
[ -x /usr/bin/victoria-metrics ] || missing+=(victoria-metrics)
[ -x /usr/bin/influxd ] || missing+=(influxdb)
# A TLS front (with client certificates) for those two servers, in the TLS test.
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# The dashboard's test loads the page in a real browser (headless).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The Modbus tests: mbpoll reads the simulator's devices; pymodbus (below) plays a device.
command -v mbpoll >/dev/null 2>&1 || missing+=(mbpoll)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (needed by the end-to-end tests)"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# pymodbus (PyPI), pinned, in a venv of its own under target/ (found there by the tests).
venv=target/test-venv
if ! "$venv/bin/python" -c 'import pymodbus' >/dev/null 2>&1; then
  echo "installing pymodbus into $venv (needed by the Modbus end-to-end tests)"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q "pymodbus==3.16.1"
fi

exec cargo test --workspace --locked "$@"
