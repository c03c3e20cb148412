//! `cnikit-agent`'s command line: the default configuration it prints is valid and names the
//! embedded simulator and its socket; a bad file is refused with the field named.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_cnikit-agent");

#[test]
fn the_printed_default_configuration_checks_out() {
    let out = Command::new(AGENT)
        .arg("--print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["cloud"]["provider"], "simulator");
    assert_eq!(json["socket"], "/run/cnikit/agent.sock");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.json");
    std::fs::write(&path, &text).unwrap();
    let check = Command::new(AGENT)
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    std::fs::write(&path, text.replace("\"socket\"", "\"sockett\"")).unwrap();
    let bad = Command::new(AGENT)
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sockett"));
    let usage = Command::new(AGENT).arg("--frobnicate").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage"));
}
