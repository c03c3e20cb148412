//! `cnikit-agent`'s command line: the default configuration it prints is valid and names the
//! embedded simulator and its socket; the example configurations for real clouds check out; a
//! bad file is refused with the field named.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_cnikit-agent");

/// `cnikit-agent --check-config path`.
fn check_config(path: &std::path::Path) -> std::process::Output {
    Command::new(AGENT)
        .arg("--check-config")
        .arg(path)
        .output()
        .unwrap()
}

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
    let check = check_config(&path);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    std::fs::write(&path, text.replace("\"socket\"", "\"sockett\"")).unwrap();
    let bad = check_config(&path);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sockett"));
    let usage = Command::new(AGENT).arg("--frobnicate").output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("usage"));
}

#[test]
fn the_printed_cloud_examples_check_out() {
    let dir = tempfile::tempdir().unwrap();
    for cloud in ["alibaba", "aws"] {
        let out = Command::new(AGENT)
            .args(["--print-example-config", cloud])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cloud}");
        let text = String::from_utf8(out.stdout).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["cloud"]["provider"], cloud);
        let path = dir.path().join(format!("{cloud}.json"));
        std::fs::write(&path, &text).unwrap();
        let check = check_config(&path);
        assert!(
            check.status.success(),
            "{cloud}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    // A mistake in the AWS table is named.
    let aws = dir.path().join("aws.json");
    let text = std::fs::read_to_string(&aws).unwrap().replace(
        r#""provider": "aws","#,
        r#""provider": "aws", "instance_id": "vm-1","#,
    );
    std::fs::write(&aws, text).unwrap();
    let bad = check_config(&aws);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cloud.instance_id"));
    let unknown = Command::new(AGENT)
        .args(["--print-example-config", "gcp"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("gcp"));
}
