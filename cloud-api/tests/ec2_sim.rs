//! The EC2 client against the simulator's in-process EC2 front (`SimEc2`): what moto does not
//! do — paging, `ClientToken` idempotency under lost answers, throttling
//! (`RequestLimitExceeded`), exhaustion and quota codes, transient faults, garbage — on
//! tokio's paused clock.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, EniFilter, ErrorKind,
    Rate,
    ec2::{Ec2Client, Ec2Config, Ec2HttpRequest, Ec2HttpResponse, Ec2Transport, codes},
    ecs::{Action, RetryPolicy},
    sim::{
        DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, DEFAULT_VSWITCH_TINY, Fault,
        FaultRule, GarbageKind, SimCloud, SimConfig, SimEc2,
    },
};

fn front() -> SimEc2 {
    SimEc2::new(SimCloud::new(SimConfig::instant()).unwrap())
}

fn client(f: &SimEc2, retry: RetryPolicy) -> Ec2Client {
    f.client(
        Ec2Config::new("us-east-1")
            .with_retry(retry)
            .with_page_size(5),
    )
    .unwrap()
}

fn create() -> CreateEniRequest {
    CreateEniRequest::new(DEFAULT_VSWITCH, [DEFAULT_SECURITY_GROUP])
}

#[tokio::test(start_paused = true)]
async fn describe_pages_through_every_result_with_filters() {
    let f = front();
    let ec2 = client(&f, RetryPolicy::default());
    let mut ours = BTreeSet::new();
    for i in 0..23 {
        let owner = if i < 21 { "cnikit" } else { "other" };
        let e = ec2
            .create_eni(&create().with_tag("owner", owner))
            .await
            .unwrap();
        if i < 21 {
            ours.insert(e.id);
        }
    }
    f.sim().reset_stats();
    let found = ec2
        .describe_enis(&EniFilter::tag("owner", "cnikit"))
        .await
        .unwrap();
    let ids: BTreeSet<String> = found.into_iter().map(|e| e.id).collect();
    assert_eq!(ids, ours);
    // 21 matches in pages of 5: 5 requests, each with the filter.
    assert_eq!(f.sim().calls(Action::DescribeNetworkInterfaces), 5);
    // By ids: no paging; a deleted id does not hide the others.
    let some: Vec<String> = ours.iter().take(3).cloned().collect();
    ec2.delete_eni(&some[1]).await.unwrap();
    let got = ec2
        .describe_enis(&EniFilter::ids(some.clone()))
        .await
        .unwrap();
    let got: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(got, vec![some[0].as_str(), some[2].as_str()]);
}

#[tokio::test(start_paused = true)]
async fn client_token_keeps_a_retried_create_single() {
    let f = front();
    let ec2 = client(&f, RetryPolicy::default());
    f.sim()
        .add_fault(
            FaultRule::new(Some(Action::CreateNetworkInterface), Fault::DropResponse).times(1),
        )
        .unwrap();
    let eni = ec2.create_eni(&create()).await.unwrap();
    assert_eq!(
        f.sim().calls(Action::CreateNetworkInterface),
        2,
        "retried once"
    );
    let all = ec2.describe_enis(&EniFilter::default()).await.unwrap();
    let created: Vec<_> = all
        .iter()
        .filter(|e| e.subnet_id == DEFAULT_VSWITCH && e.instance_id().is_none())
        .collect();
    assert_eq!(
        created.len(),
        1,
        "the lost answer's ENI is the one returned: {all:?}"
    );
    assert_eq!(created[0].id, eni.id);
    // The same token with other parameters is refused.
    let t = create().with_client_token("tok-1");
    ec2.create_eni(&t).await.unwrap();
    let e = ec2
        .create_eni(&t.clone().with_secondary_ipv4_count(3))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(codes::IDEMPOTENT_PARAMETER_MISMATCH), "{e}");
    assert_eq!(e.kind(), ErrorKind::IdempotencyMismatch);
}

#[tokio::test(start_paused = true)]
async fn throttling_is_request_limit_exceeded_and_retried() {
    let f = front();
    f.sim()
        .set_throttle(Action::CreateNetworkInterface, Some(Rate::new(0.5, 1)));
    let once = client(&f, RetryPolicy::none());
    once.create_eni(&create()).await.unwrap();
    let e = once.create_eni(&create()).await.unwrap_err();
    assert_eq!(e.code(), Some(codes::REQUEST_LIMIT_EXCEEDED), "{e}");
    assert_eq!(e.kind(), ErrorKind::Throttled);
    assert!(e.is_retryable());
    // With retries, throttled creates get through (throttling backoff, paused clock).
    let patient = client(&f, RetryPolicy::default());
    for _ in 0..3 {
        patient.create_eni(&create()).await.unwrap();
    }
    let s = f.sim().stats();
    assert!(s[&Action::CreateNetworkInterface].throttled >= 2, "{s:?}");
}

#[tokio::test(start_paused = true)]
async fn exhaustion_quota_transient_and_garbage_classes() {
    let f = front();
    let ec2 = client(&f, RetryPolicy::default());
    // A /28 subnet runs out: InsufficientFreeAddressesInSubnet, not retried.
    let e = ec2
        .create_eni(
            &CreateEniRequest::new(DEFAULT_VSWITCH_TINY, [DEFAULT_SECURITY_GROUP])
                .with_secondary_ipv4_count(40),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(codes::INSUFFICIENT_FREE_ADDRESSES), "{e}");
    assert_eq!(e.kind(), ErrorKind::SubnetExhausted);
    assert_eq!(f.sim().calls(Action::CreateNetworkInterface), 1);
    // Attaching beyond the instance type's ENIs: AttachmentLimitExceeded.
    let mut last = None;
    for _ in 0..4 {
        let eni = ec2.create_eni(&create()).await.unwrap();
        last = ec2
            .attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
            .await
            .err();
    }
    let e = last.unwrap();
    assert_eq!(e.code(), Some(codes::ATTACHMENT_LIMIT_EXCEEDED), "{e}");
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded);
    // An ENI can hold only so many addresses: PrivateIpAddressLimitExceeded.
    let eni = ec2.create_eni(&create()).await.unwrap();
    let e = ec2
        .assign_ipv4(&AssignIpsRequest::count(&eni.id, 60))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    // InternalError twice, then success.
    f.sim()
        .add_fault(
            FaultRule::error(Some(Action::AssignPrivateIpAddresses), "InternalError").times(2),
        )
        .unwrap();
    let ips = ec2
        .assign_ipv4(&AssignIpsRequest::count(&eni.id, 2))
        .await
        .unwrap();
    assert_eq!(ips.len(), 2);
    // A garbage answer is a typed error, not a panic.
    f.sim()
        .add_fault(
            FaultRule::new(
                Some(Action::DescribeVSwitches),
                Fault::Garbage {
                    body: GarbageKind::Html,
                },
            )
            .times(1),
        )
        .unwrap();
    let e = ec2.describe_subnet(DEFAULT_VSWITCH).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidResponse, "{e}");
    let s = ec2.describe_subnet(DEFAULT_VSWITCH).await.unwrap();
    assert!(s.available_ipv4 > 0);
    // An unknown instance type.
    let e = ec2.instance_limits("x9.huge").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

/// Records the requests the client sends, then passes them on.
#[derive(Debug)]
struct Recorder {
    inner: SimEc2,
    seen: Mutex<Vec<Ec2HttpRequest>>,
}

#[async_trait]
impl Ec2Transport for Recorder {
    async fn send(&self, r: Ec2HttpRequest) -> cnikit_cloud_api::Result<Ec2HttpResponse> {
        self.seen.lock().unwrap().push(r.clone());
        self.inner.send(r).await
    }
}

#[tokio::test(start_paused = true)]
async fn requests_are_sigv4_signed_form_posts_with_session_tokens() {
    use cnikit_cloud_api::credentials::{Credentials, StaticCredentials};
    let rec = Arc::new(Recorder {
        inner: front(),
        seen: Mutex::new(Vec::new()),
    });
    let ec2 = Ec2Client::with_transport(
        Ec2Config::new("eu-west-1").with_endpoint("http://127.0.0.1:1/"),
        Arc::new(StaticCredentials::new(Credentials::sts(
            "ASIAEXAMPLE",
            "secret-value",
            "session-token-value",
            None,
        ))),
        rec.clone(),
    )
    .unwrap();
    ec2.instance_limits("ecs.g7.large").await.unwrap();
    let r = &rec.seen.lock().unwrap()[0].clone();
    let h = |n: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let auth = h("authorization");
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/")
            && auth.contains("/eu-west-1/ec2/aws4_request")
            && auth.contains("SignedHeaders=")
            && auth.contains("Signature="),
        "{auth}"
    );
    assert!(!auth.contains("secret-value"));
    assert_eq!(h("x-amz-security-token"), "session-token-value");
    assert_eq!(h("x-amz-date").len(), 16, "yyyymmddThhmmssZ");
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(
        body.starts_with(
            "Action=DescribeInstanceTypes&Version=2016-11-15&InstanceType.1=ecs.g7.large"
        ),
        "{body}"
    );
    // Unsigned requests are refused by the front, as by EC2.
    let unsigned = rec
        .inner
        .send({
            let mut u = r.clone();
            u.headers.clear();
            u
        })
        .await
        .unwrap();
    assert_eq!(unsigned.status, 401);
}

#[tokio::test(start_paused = true)]
async fn attach_picks_free_device_indices_and_detach_finds_the_attachment() {
    let f = front();
    let ec2 = client(&f, RetryPolicy::default());
    let mut ids = Vec::new();
    for _ in 0..2 {
        let eni = ec2.create_eni(&create()).await.unwrap();
        ec2.attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
            .await
            .unwrap();
        ids.push(eni.id);
    }
    for id in &ids {
        ec2.detach_eni(&cnikit_cloud_api::DetachEniRequest::new(
            id,
            DEFAULT_INSTANCE,
        ))
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in &ids {
        let e = ec2.describe_eni(id).await.unwrap().unwrap();
        assert_eq!(e.instance_id(), None, "{e:?}");
        ec2.delete_eni(id).await.unwrap();
    }
}
