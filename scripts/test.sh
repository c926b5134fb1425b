#!/usr/bin/env bash
# The whole test suite. Installs what the tests need when it is missing (Mosquitto, and
# openssl for test certificates, from Debian's packages), then runs every test of the
# workspace: unit tests, and the end-to-end tests that start their own brokers on free
# loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # certificates for the TLS test
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing ${missing[*]} (needed by the end-to-end tests)"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

exec cargo test --workspace --locked "$@"
