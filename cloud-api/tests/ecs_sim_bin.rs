//! The `ecs-sim` binary as a separate process, driven by the ECS client over loopback.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{process::Command, sync::Arc, time::Duration};

use cnikit_cloud_api::{
    CloudProvider, CreateEniRequest, ErrorKind, RateLimits,
    credentials::{Credentials, StaticCredentials},
    ecs::{EcsClient, EcsConfig, Endpoint, RetryPolicy, codes},
    metadata::{ImdsClient, ImdsConfig, InstanceMetadata},
    sim::{DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, SimConfig},
};
use cnikit_test_support::process::ExternalProcess;

const BIN: &str = env!("CARGO_BIN_EXE_ecs-sim");

fn start(extra: &[&str]) -> (ExternalProcess, String) {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--access-key-id",
        "LTAIbin",
        "--access-key-secret",
        "bin-secret",
    ])
    .args(extra);
    let mut p = ExternalProcess::spawn("ecs-sim", cmd).unwrap();
    p.wait_for_output("listening on http://", Duration::from_secs(20))
        .unwrap();
    let out = p.output();
    let url = out
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    (p, url)
}

fn client(url: &str) -> EcsClient {
    let mut retry = RetryPolicy::none();
    retry.deadline = Duration::from_secs(10);
    EcsClient::new(
        EcsConfig::new("cn-hangzhou")
            .with_endpoint(Endpoint::custom(url))
            .with_retry(retry)
            .with_rate_limits(RateLimits::unlimited()),
        Arc::new(StaticCredentials::new(Credentials::new(
            "LTAIbin",
            "bin-secret",
        ))),
    )
    .unwrap()
}

#[tokio::test]
async fn binary_serves_the_api_and_metadata() {
    let fault = r#"{"action":"CreateNetworkInterface","skip":1,"max_hits":1,"fault":{"kind":"error","code":"InternalError"}}"#;
    let (p, url) = start(&["--seed", "42", "--attach-latency-ms", "0", "--fault", fault]);
    let c = client(&url);
    let req = CreateEniRequest::new(DEFAULT_VSWITCH, [DEFAULT_SECURITY_GROUP]);
    c.create_eni(&req).await.unwrap();
    // The second create hits the injected fault (retries are off here).
    let err = c.create_eni(&req).await.unwrap_err();
    assert_eq!(err.code(), Some(codes::INTERNAL_ERROR));
    assert_eq!(err.kind(), ErrorKind::Transient);
    c.create_eni(&req).await.unwrap();
    let enis = c.list_instance_enis(DEFAULT_INSTANCE).await.unwrap();
    assert_eq!(enis.len(), 1, "only the primary ENI is attached");

    let imds = ImdsClient::new(ImdsConfig::with_base_url(url.trim_end_matches('/'))).unwrap();
    assert_eq!(imds.instance_id().await.unwrap(), DEFAULT_INSTANCE);
    assert_eq!(imds.macs().await.unwrap().len(), 1);
    let status = p.stop(Duration::from_secs(5)).unwrap();
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
}

#[test]
fn binary_prints_its_config_and_rejects_bad_arguments() {
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--access-key-id",
            "a",
            "--access-key-secret",
            "b",
            "--throttle",
            "DescribeNetworkInterfaces=5/2",
            "--seed",
            "9",
            "--print-config",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg = SimConfig::from_json(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(cfg.seed, 9);
    assert_eq!(
        cfg.throttle.per_action["DescribeNetworkInterfaces"].burst,
        2
    );
    assert_eq!(cfg.instances.len(), 1);

    for bad in [
        vec!["--listen", "nonsense"],
        vec!["--access-key-id", "a"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--access-key-id",
            "a",
            "--access-key-secret",
            "b",
            "--throttle",
            "NoSuchAction=1",
        ],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--access-key-id",
            "a",
            "--access-key-secret",
            "b",
            "--fault",
            "{",
        ],
        vec!["--bogus"],
    ] {
        let out = Command::new(BIN).args(&bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty());
    }
}
