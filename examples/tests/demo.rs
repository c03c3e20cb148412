//! The demo binary runs to completion and its report says what it showed.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use cnikit_test_support::require_root;

#[test]
fn the_demo_passes_and_reports_every_section() {
    require_root!("the_demo_passes_and_reports_every_section");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cnikit-demo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "== node agent",
        "pod to pod      ok",
        "through its ENI ok",
        "every reply came from the VIP: ok",
        "deny all ingress:               client denied  intruder denied",
        "allow prod/client on 8080/UDP:  client passes  intruder denied",
        "IN CNAME web.shop.svc.cluster.local.",
        "cloud calls:",
        "0 pods left on the node, 0 host veths, 0 addresses in use",
        "DEMO RESULT: PASS",
    ] {
        assert!(report.contains(needle), "missing {needle:?} in\n{report}");
    }
    // No namespace of the demo is left behind (their names carry its pid).
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let prefix = format!("cnkt-{pid}-");
    let listed = String::from_utf8_lossy(&left.stdout);
    assert!(
        listed.lines().all(|l| !l.starts_with(&prefix)),
        "left behind:\n{listed}"
    );
}
