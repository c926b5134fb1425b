#!/usr/bin/env bash
# Builds the Debian package: target/debian/telemetry-collector_<version>-1_<arch>.deb, with
# both binaries, the systemd unit, /etc/telemetry-collector/collector.toml and the service
# user. Installs cargo-deb (from crates.io) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked
# Both binaries in one release build (cargo-deb would build only the collector's package).
cargo build --release --locked -p telemetry-collector -p telemetry-simulator --bins
deb=$(cargo deb -p telemetry-collector --no-build --output target/debian 2>&1 | tail -n 1)
echo "$deb ($(stat -c %s "$deb") bytes)"
