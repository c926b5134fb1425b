#!/usr/bin/env bash
# The whole test suite. Installs what the tests need when it is missing (Mosquitto, openssl
# for test certificates, curl, VictoriaMetrics, InfluxDB, and Chromium for the dashboard), then
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
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (needed by the end-to-end tests)"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

exec cargo test --workspace --locked "$@"
