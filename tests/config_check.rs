//! `rtsup check`: errors name file, line and key; every shipped config passes.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::harness::rtsup_bin;

#[test]
fn check_reports_a_bad_key_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rtsup.toml");
    fs::write(
        &file,
        "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 5001\ninstancs = 4\nkill_timeout = \"forever\"\n",
    )
    .expect("write");
    let out = Command::new(rtsup_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "{}:5:1: app[0].instancs: unknown field `instancs`",
        file.display()
    );
    assert!(err.starts_with(&expected), "{err}");
}

#[test]
fn check_reports_every_semantic_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rtsup.toml");
    fs::write(
        &file,
        "[[app]]\nname = \"chat\"\ncommand = \"node\"\nport = 70000\nkill_timeout = \"forever\"\nready = \"udp\"\n",
    )
    .expect("write");
    let out = Command::new(rtsup_bin())
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    for needle in [
        format!("{f}:4:8: app[0].port:"),
        format!("{f}:5:16: app[0].kill_timeout:"),
        format!("{f}:6:9: app[0].ready:"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn every_shipped_config_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("configs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(rtsup_bin())
                .args(["check", "-c"])
                .arg(&path)
                .output()
                .expect("run");
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} configs found");
}

#[test]
fn start_with_an_invalid_config_fails_before_spawning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rtsup.toml");
    fs::write(
        &file,
        "[[app]]\nname = \"x\"\ncommand = \"node\"\nport = 0\n",
    )
    .expect("write");
    let out = Command::new(rtsup_bin())
        .args(["start", "-c"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("app[0].port"), "{err}");
}
