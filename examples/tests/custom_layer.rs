//! `cnikit-agent-audited` (the stock agent with its cloud layer wrapped) serves the stock plugin,
//! and its audit trail records the cloud calls the pool made.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use cnikit_examples::harness::{Binaries, TestNode};
use cnikit_test_support::{
    netns::{Role, TestNetns},
    require_root,
};

#[test]
fn an_agent_with_a_swapped_cloud_layer_serves_pods() {
    require_root!("an_agent_with_a_swapped_cloud_layer_serves_pods");
    let mut node = TestNode::new(
        Binaries {
            plugin: env!("CARGO_BIN_EXE_cnikit").into(),
            agent: env!("CARGO_BIN_EXE_cnikit-agent-audited").into(),
        }
        .with_plugin_from_env(),
    )
    .unwrap();
    let audit = node.dir.join("audit.jsonl");
    node.agent_env
        .push(("CNIKIT_AUDIT_LOG".into(), audit.display().to_string()));
    node.start_agent().unwrap();
    let pod = TestNetns::create(Role::Pod).unwrap();
    let conf = node.netconf("1.1.0");
    let add = node.add(&conf, "audited-1", &pod, "prod", "web").unwrap();
    assert!(add.success, "{} {}", add.stdout, add.stderr);
    let trail: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = trail
        .iter()
        .map(|v| v["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"create_eni"), "{actions:?}");
    assert!(actions.contains(&"attach_eni"), "{actions:?}");
    // The trail matches the pool's own count of those calls.
    let stats = node
        .node
        .run_async(|| async { node.stats().await.unwrap() });
    let counted: u64 = stats
        .pool
        .cloud_calls
        .iter()
        .filter(|(k, _)| k.starts_with("create_eni/ok") || k.starts_with("attach_eni/ok"))
        .map(|(_, n)| n)
        .sum();
    let logged = actions
        .iter()
        .filter(|a| **a == "create_eni" || **a == "attach_eni")
        .count();
    assert_eq!(u64::try_from(logged).unwrap(), counted);
    let del = node
        .cni("DEL", &conf, "audited-1", Some(pod.path()), "eth0", "")
        .unwrap();
    assert!(del.success, "{}", del.stdout);
}
