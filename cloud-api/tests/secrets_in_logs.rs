//! Secrets (access key secret, STS token) never appear in logs, errors or `Debug` output, even
//! at TRACE level with every dependency's logs captured and when requests fail.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use cnikit_cloud_api::{
    CloudProvider, CreateEniRequest, EniFilter, RateLimits,
    credentials::{
        Credentials, CredentialsProvider, RamRoleConfig, RamRoleCredentials, StaticCredentials,
    },
    ecs::{Action, EcsClient, EcsConfig, Endpoint, RetryPolicy},
    metadata::{ImdsClient, ImdsConfig},
    sim::{
        AccessKey, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, Fault, FaultRule, HttpSim,
        HttpSimConfig, SimCloud, SimConfig,
    },
};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_errors_and_debug() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    const SECRET: &str = "TopSecretValue/+=42";
    let sim = HttpSim::start(
        SimCloud::new(SimConfig::instant()).unwrap(),
        HttpSimConfig::new(AccessKey::new("LTAIlogs", SECRET)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut retry = RetryPolicy::default();
    retry.max_attempts = 2;
    retry.deadline = Duration::from_secs(10);
    let cfg = EcsConfig::new("cn-hangzhou")
        .with_endpoint(Endpoint::custom(sim.url()))
        .with_retry(retry)
        .with_rate_limits(RateLimits::unlimited());

    let ram = RamRoleCredentials::new(
        ImdsClient::new(ImdsConfig::with_base_url(sim.metadata_url())).unwrap(),
        RamRoleConfig::default(),
    );
    let sts = ram.credentials().await.unwrap();
    let sts_secret = sts.access_key_secret.expose().to_owned();
    let sts_token = sts.security_token.clone().unwrap().expose().to_owned();

    let mut seen = Vec::new();
    for creds in [
        Arc::new(StaticCredentials::new(Credentials::new("LTAIlogs", SECRET)))
            as Arc<dyn CredentialsProvider>,
        Arc::new(ram.clone()),
    ] {
        let c = EcsClient::new(cfg.clone(), creds.clone()).unwrap();
        seen.push(format!("{c:?} {creds:?}"));
        c.describe_enis(&EniFilter::default()).await.unwrap();
        let eni = c
            .create_eni(&CreateEniRequest::new(
                DEFAULT_VSWITCH,
                [DEFAULT_SECURITY_GROUP],
            ))
            .await
            .unwrap();
        // Failures: lost responses (transport errors), an API error.
        sim.cloud()
            .add_fault(
                FaultRule::new(Some(Action::DescribeNetworkInterfaces), Fault::DropRequest)
                    .times(2),
            )
            .unwrap();
        let err = c.describe_enis(&EniFilter::default()).await.unwrap_err();
        seen.push(format!("{err} {err:?}"));
        let err = c
            .attach_eni(&cnikit_cloud_api::AttachEniRequest::new(&eni.id, "i-nope"))
            .await
            .unwrap_err();
        seen.push(format!("{err} {err:?}"));
    }
    // A wrong secret: the rejection quotes the string to sign, never the secret.
    let wrong = EcsClient::new(
        cfg.clone(),
        Arc::new(StaticCredentials::new(Credentials::new(
            "LTAIlogs",
            "wrong-secret-xyz",
        ))),
    )
    .unwrap();
    let err = wrong
        .describe_enis(&EniFilter::default())
        .await
        .unwrap_err();
    seen.push(format!("{err} {err:?}"));
    seen.push(format!("{sts:?}"));

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "logs were captured"
    );
    let everything = format!("{logs}\n{}", seen.join("\n"));
    for secret in [
        SECRET,
        "wrong-secret-xyz",
        sts_secret.as_str(),
        sts_token.as_str(),
    ] {
        assert!(!everything.contains(secret), "leaked {secret:?}");
        // Nor in the encoding they take on the wire.
        let encoded = cnikit_cloud_api::ecs::signer::percent_encode(secret);
        assert!(!everything.contains(&encoded), "leaked encoded {encoded:?}");
    }
}
