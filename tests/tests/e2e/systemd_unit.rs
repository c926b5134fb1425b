//! The systemd unit as systemd itself reads it: `systemd-analyze verify` finds nothing to
//! say, and `systemd-analyze security --offline=true` rates its exposure at 2.0 or lower.
//!
//! `verify` checks that every command the unit runs exists, so it runs against a small root
//! holding the unit, the collector's binary at `/usr/bin`, `/bin/kill` and this machine's
//! own system units (which `verify` needs to resolve `multi-user.target` and the like).

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = "telemetry-collector.service";

fn unit_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(UNIT)
}

fn analyze(args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test.sh installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Copies `from` to `to` (a hard link when they share a file system: the debug binary is
/// large), keeping it executable.
fn place(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn the_unit_verifies_cleanly() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    place(
        Path::new(env!("CARGO_BIN_EXE_collector-under-test")),
        &r.join("usr/bin/telemetry-collector"),
    );
    place(Path::new("/bin/kill"), &r.join("bin/kill"));
    place(&unit_file(), &r.join("etc/systemd/system").join(UNIT));
    let units = r.join("lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    for entry in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        let target = units.join(entry.file_name());
        match std::fs::read_link(entry.path()) {
            Ok(link) => std::os::unix::fs::symlink(link, target).unwrap(),
            Err(_) if entry.path().is_file() => {
                std::fs::copy(entry.path(), target).unwrap();
            }
            Err(_) => {}
        }
    }
    let root_arg = format!("--root={}", r.display());
    let (ok, text) = analyze(&["verify", "--man=no", &root_arg, UNIT]);
    assert!(
        ok && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}

#[test]
fn the_unit_is_rated_at_most_2_0_by_systemd_analyze_security() {
    let (ok, text) = analyze(&[
        "security",
        "--offline=true",
        "--no-pager",
        unit_file().to_str().unwrap(),
    ]);
    assert!(ok, "systemd-analyze security:\n{text}");
    let score: f64 = text
        .lines()
        .find_map(|l| {
            let rest = l.split("Overall exposure level for").nth(1)?;
            rest.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}
