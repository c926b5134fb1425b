#!/usr/bin/env bash
# Checks the .deb on this machine, as root: a fresh install (service user, files, unit
# enabled, default config valid, unit verified where the binary now is), an upgrade that keeps
# a locally edited config, removal (config kept) and purge (config gone; readings in
# /var/lib/telemetry-collector and the user kept). It installs and removes the package
# for real: run it on a CI or throw-away machine. Without a running systemd (a container), the
# unit is enabled but not started.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "check-deb.sh: run as root (it installs the package)"; exit 1; }

scripts/package-deb.sh
deb=$(ls -t target/debian/telemetry-collector_*.deb | head -n 1)
version=$(dpkg-deb -f "$deb" Version)
size=$(stat -c %s "$deb")
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Options::=--force-confold "$@"; }
fail() { echo "check-deb: $*" >&2; exit 1; }

dpkg -s telemetry-collector >/dev/null 2>&1 && apt-get purge -y -q telemetry-collector
apt_install "./$deb"
getent passwd telemetry-collector >/dev/null || fail "no service user"
for f in /usr/bin/telemetry-collector /usr/bin/telemetry-simulator \
         /usr/lib/systemd/system/telemetry-collector.service /etc/telemetry-collector/collector.toml; do
    [ -e "$f" ] || fail "$f not installed"
done
[ -L /etc/systemd/system/multi-user.target.wants/telemetry-collector.service ] || fail "unit not enabled"
telemetry-collector validate --config /etc/telemetry-collector/collector.toml
out=$(systemd-analyze verify --man=no /usr/lib/systemd/system/telemetry-collector.service 2>&1) || fail "verify: $out"
[ -z "$out" ] || fail "verify: $out"

# Upgrade: the same files as a newer version; a local edit of the config survives.
echo "# edited here" >> /etc/telemetry-collector/collector.toml
cargo deb -p telemetry-collector --no-build --output target/debian-upgrade --deb-version "${version%-*}-99" >/dev/null
apt_install ./target/debian-upgrade/*.deb
[ "$(dpkg-query -W -f '${Version}' telemetry-collector)" = "${version%-*}-99" ] || fail "not upgraded"
grep -q "# edited here" /etc/telemetry-collector/collector.toml || fail "upgrade replaced the edited config"

apt-get remove -y -q telemetry-collector
[ ! -e /usr/bin/telemetry-collector ] || fail "binary left after remove"
[ -e /etc/telemetry-collector/collector.toml ] || fail "remove took the config"
apt-get purge -y -q telemetry-collector
[ ! -e /etc/telemetry-collector/collector.toml ] || fail "purge left the config"
getent passwd telemetry-collector >/dev/null || fail "purge removed the user (its files would be orphaned)"
rm -rf target/debian-upgrade
echo "check-deb: $deb ($size bytes): install, upgrade, remove and purge OK"
