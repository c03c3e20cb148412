//! The ECS client against the HTTP simulator over real HTTP on loopback: every action,
//! throttling, exhaustion, retries, idempotency under dropped responses, garbage, credentials.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, Backoff, CloudProvider, CreateEniRequest, DetachEniRequest,
    EniFilter, EniStatus, ErrorKind, Rate, RateLimits, WaitOptions, WaitTarget,
    credentials::{Credentials, RamRoleConfig, RamRoleCredentials, StaticCredentials},
    ecs::{Action, EcsClient, EcsConfig, Endpoint, RetryPolicy, codes},
    metadata::{ImdsClient, ImdsConfig, InstanceMetadata, TokenMode},
    sim::{
        AccessKey, DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, DEFAULT_VSWITCH_B,
        DEFAULT_VSWITCH_TINY, Fault, FaultRule, GarbageKind, HttpSim, HttpSimConfig, MetadataFault,
        SimCloud, SimConfig,
    },
};

const KEY_ID: &str = "LTAI5tSimulatorKey";
const SECRET: &str = "sim/secret+with=specials";

fn fast_retry() -> RetryPolicy {
    let mut r = RetryPolicy::default();
    r.max_attempts = 5;
    r.deadline = Duration::from_secs(20);
    r.backoff = Backoff::new(
        Duration::from_millis(10),
        2.0,
        Duration::from_millis(100),
        0.5,
    );
    r.throttle_backoff = Backoff::new(
        Duration::from_millis(50),
        2.0,
        Duration::from_millis(400),
        0.5,
    );
    r
}

fn client(sim: &HttpSim, creds: Credentials) -> EcsClient {
    let cfg = EcsConfig::new("cn-hangzhou")
        .with_endpoint(Endpoint::custom(sim.url()))
        .with_retry(fast_retry())
        .with_rate_limits(RateLimits::unlimited())
        .with_request_timeout(Duration::from_secs(5));
    EcsClient::new(cfg, Arc::new(StaticCredentials::new(creds))).unwrap()
}

async fn start(cfg: SimConfig) -> (HttpSim, EcsClient) {
    let cloud = SimCloud::new(cfg).unwrap();
    let sim = HttpSim::start(
        cloud,
        HttpSimConfig::new(AccessKey::new(KEY_ID, SECRET)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let c = client(&sim, Credentials::new(KEY_ID, SECRET));
    (sim, c)
}

/// A plain reqwest client (plain HTTP only; the ring provider satisfies reqwest's TLS setup).
fn raw_http() -> reqwest::Client {
    let _already = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn fast_wait() -> WaitOptions {
    WaitOptions::fixed(Duration::from_millis(10), Duration::from_secs(5))
}

fn create(vsw: &str) -> CreateEniRequest {
    CreateEniRequest::new(vsw, [DEFAULT_SECURITY_GROUP]).with_tag("cnikit.io/node", "n1 with space")
}

#[tokio::test]
async fn every_action_over_http() {
    let mut cfg = SimConfig::default();
    cfg.latency.attach = Duration::from_millis(30);
    cfg.latency.detach = Duration::from_millis(30);
    let (sim, c) = start(cfg).await;

    let limits = c.instance_limits("ecs.g7.xlarge").await.unwrap();
    assert_eq!(
        (limits.max_enis, limits.ipv4_per_eni, limits.ipv6_per_eni),
        (4, 15, 15)
    );
    // Cached: no second call.
    c.instance_limits("ecs.g7.xlarge").await.unwrap();
    assert_eq!(sim.cloud().calls(Action::DescribeInstanceTypes), 1);
    assert_eq!(
        c.instance_limits("ecs.none").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let subnet = c.describe_subnet(DEFAULT_VSWITCH).await.unwrap();
    assert_eq!(subnet.ipv4_cidr.unwrap().to_string(), "198.18.0.0/24");
    assert!(subnet.ipv6_cidr.is_some());
    let free0 = subnet.available_ipv4;
    assert_eq!(
        c.describe_subnet("vsw-nope").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    let mut req = create(DEFAULT_VSWITCH)
        .with_secondary_ipv4_count(2)
        .with_ipv6_count(1);
    req.description = Some("made by cnikit: é * ~ ( ) '".into());
    let eni = c.create_eni(&req).await.unwrap();
    assert_eq!(eni.status, EniStatus::Available);
    assert_eq!((eni.secondary_ipv4.len(), eni.ipv6.len()), (2, 1));
    assert_eq!(eni.tags["cnikit.io/node"], "n1 with space");
    assert_eq!(
        eni.description.as_deref(),
        Some("made by cnikit: é * ~ ( ) '")
    );
    assert_eq!(
        c.describe_subnet(DEFAULT_VSWITCH)
            .await
            .unwrap()
            .available_ipv4,
        free0 - 3
    );

    c.attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    let attached = c
        .wait_eni(
            &eni.id,
            &WaitTarget::AttachedTo(DEFAULT_INSTANCE.into()),
            &fast_wait(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attached.attachment.as_ref().unwrap().device_index, Some(1));

    let v4 = c
        .assign_ipv4(&AssignIpsRequest::count(&eni.id, 4))
        .await
        .unwrap();
    assert_eq!(v4.len(), 4);
    let explicit = Ipv4Addr::new(198, 18, 0, 200);
    assert_eq!(
        c.assign_ipv4(&AssignIpsRequest::explicit(&eni.id, vec![explicit]))
            .await
            .unwrap(),
        vec![explicit]
    );
    let dup = c
        .assign_ipv4(&AssignIpsRequest::explicit(&eni.id, vec![explicit]))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some(codes::IP_DUPLICATED));
    let v6 = c
        .assign_ipv6(&AssignIpsRequest::count(&eni.id, 2))
        .await
        .unwrap();
    assert_eq!(v6.len(), 2);
    let v6x: Ipv6Addr = "2001:db8:0:1::ffff".parse().unwrap();
    c.assign_ipv6(&AssignIpsRequest::explicit(&eni.id, vec![v6x]))
        .await
        .unwrap();

    c.unassign_ipv4(&eni.id, &v4[..2]).await.unwrap();
    c.unassign_ipv4(&eni.id, &v4[..2]).await.unwrap(); // InvalidIp.IpUnassigned = success
    c.unassign_ipv6(&eni.id, &[v6x]).await.unwrap();
    c.unassign_ipv4(&eni.id, &[]).await.unwrap();

    let listed = c.list_instance_enis(DEFAULT_INSTANCE).await.unwrap();
    assert_eq!(listed.len(), 2);
    let mine = listed.iter().find(|e| e.id == eni.id).unwrap();
    assert_eq!(mine.secondary_ipv4.len(), 2 + 4 + 1 - 2);
    assert_eq!(mine.ipv6.len(), 1 + 2);
    assert_eq!(
        mine,
        &sim.cloud().eni(&eni.id).unwrap(),
        "the wire loses nothing"
    );
    let tagged = c
        .describe_enis(&EniFilter::tag("cnikit.io/node", "n1 with space"))
        .await
        .unwrap();
    assert_eq!(tagged.len(), 1);

    // The primary ENI is protected; errors are typed.
    let primary = listed.iter().find(|e| e.id != eni.id).unwrap();
    let err = c
        .detach_eni(&DetachEniRequest::new(&primary.id, DEFAULT_INSTANCE))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::DETACH_PRIMARY));
    assert!(err.request_id().is_some());
    assert_eq!(err.api().unwrap().http_status, Some(403));

    c.detach_eni(&DetachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    c.wait_eni(&eni.id, &WaitTarget::Detached, &fast_wait())
        .await
        .unwrap();
    c.delete_eni(&eni.id).await.unwrap();
    assert!(
        c.wait_eni(&eni.id, &WaitTarget::Deleted, &fast_wait())
            .await
            .unwrap()
            .is_none()
    );
    // Gone: still success.
    c.delete_eni(&eni.id).await.unwrap();
    c.detach_eni(&DetachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    c.unassign_ipv4(&eni.id, &v4[2..]).await.unwrap();
    c.unassign_ipv6(&eni.id, &v6).await.unwrap();
    assert!(c.describe_eni(&eni.id).await.unwrap().is_none());
    assert_eq!(
        c.describe_subnet(DEFAULT_VSWITCH)
            .await
            .unwrap()
            .available_ipv4,
        free0
    );
    sim.stop().await;
}

#[tokio::test]
async fn describe_pages_and_chunks_ids() {
    let (sim, c) = start(SimConfig::instant()).await;
    let mut ids = Vec::new();
    for _ in 0..27 {
        ids.push(c.create_eni(&create(DEFAULT_VSWITCH_B)).await.unwrap().id);
    }
    sim.cloud().reset_stats();
    let mut cfg = c.config().clone();
    cfg.page_size = 10;
    let paged = EcsClient::new(
        cfg,
        Arc::new(StaticCredentials::new(Credentials::new(KEY_ID, SECRET))),
    )
    .unwrap();
    let mut f = EniFilter::default();
    f.subnet_id = Some(DEFAULT_VSWITCH_B.into());
    let all = paged.describe_enis(&f).await.unwrap();
    assert_eq!(all.len(), 27);
    assert_eq!(sim.cloud().calls(Action::DescribeNetworkInterfaces), 3);
    // 150 ids (123 of them unknown) need two requests of at most 100 ids.
    sim.cloud().reset_stats();
    let mut many = ids.clone();
    many.extend((0..123).map(|i| format!("eni-missing{i}")));
    let found = paged.describe_enis(&EniFilter::ids(many)).await.unwrap();
    assert_eq!(found.len(), 27);
    assert!(sim.cloud().calls(Action::DescribeNetworkInterfaces) >= 2);
}

#[tokio::test]
async fn exhaustion_and_quota_are_not_retried() {
    let (sim, c) = start(SimConfig::instant()).await;
    let err = c
        .create_eni(&create(DEFAULT_VSWITCH_TINY).with_secondary_ipv4_count(20))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::VSWITCH_IP_NOT_ENOUGH));
    assert_eq!(err.kind(), ErrorKind::SubnetExhausted);
    assert_eq!(
        sim.cloud().calls(Action::CreateNetworkInterface),
        1,
        "not retried"
    );

    let eni = c.create_eni(&create(DEFAULT_VSWITCH)).await.unwrap();
    let err = c
        .assign_ipv4(&AssignIpsRequest::count(&eni.id, 60))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::IPV4_COUNT_EXCEEDED));
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
    let b = c.create_eni(&create(DEFAULT_VSWITCH_B)).await.unwrap();
    let err = c
        .assign_ipv6(&AssignIpsRequest::count(&b.id, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::IPV6_NOT_TURNED_ON));
    assert_eq!(sim.cloud().calls(Action::AssignIpv6Addresses), 1);
}

#[tokio::test]
async fn transient_errors_are_retried_with_backoff() {
    let (sim, c) = start(SimConfig::instant()).await;
    let cloud = sim.cloud();
    cloud
        .add_fault(
            FaultRule::error(Some(Action::CreateNetworkInterface), codes::INTERNAL_ERROR).times(2),
        )
        .unwrap();
    cloud
        .add_fault(
            FaultRule::error(
                Some(Action::DescribeNetworkInterfaces),
                codes::SERVICE_UNAVAILABLE,
            )
            .times(1),
        )
        .unwrap();
    cloud
        .add_fault(
            FaultRule::error(
                Some(Action::AssignPrivateIpAddresses),
                codes::OPERATION_CONFLICT_DOTTED,
            )
            .times(1),
        )
        .unwrap();
    let eni = c.create_eni(&create(DEFAULT_VSWITCH)).await.unwrap();
    assert_eq!(cloud.calls(Action::CreateNetworkInterface), 3);
    c.describe_eni(&eni.id).await.unwrap().unwrap();
    assert_eq!(cloud.calls(Action::DescribeNetworkInterfaces), 2);
    c.assign_ipv4(&AssignIpsRequest::count(&eni.id, 1))
        .await
        .unwrap();
    assert_eq!(cloud.calls(Action::AssignPrivateIpAddresses), 2);
    assert_eq!(cloud.enis().len(), 2, "one ENI despite the retries");

    // Persistent failure: bounded attempts, the last error is kept.
    cloud
        .add_fault(FaultRule::error(
            Some(Action::DeleteNetworkInterface),
            codes::INTERNAL_ERROR,
        ))
        .unwrap();
    cloud.reset_stats();
    let err = c.delete_eni(&eni.id).await.unwrap_err();
    assert_eq!(err.code(), Some(codes::INTERNAL_ERROR));
    assert_eq!(cloud.calls(Action::DeleteNetworkInterface), 5);
}

#[tokio::test]
async fn deadline_bounds_the_retries() {
    let (sim, _) = start(SimConfig::instant()).await;
    let mut retry = fast_retry();
    retry.max_attempts = 100;
    retry.deadline = Duration::from_millis(300);
    retry.backoff = Backoff::constant(Duration::from_millis(100));
    let cfg = EcsConfig::new("cn-hangzhou")
        .with_endpoint(Endpoint::custom(sim.url()))
        .with_retry(retry)
        .with_rate_limits(RateLimits::unlimited());
    let c = EcsClient::new(
        cfg,
        Arc::new(StaticCredentials::new(Credentials::new(KEY_ID, SECRET))),
    )
    .unwrap();
    sim.cloud()
        .add_fault(FaultRule::error(None, codes::INTERNAL_ERROR))
        .unwrap();
    let start = Instant::now();
    let err = c.describe_enis(&EniFilter::default()).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.code(), Some(codes::INTERNAL_ERROR), "last error kept");
}

#[tokio::test]
async fn server_throttling_is_retried_and_client_limits_prevent_it() {
    let (sim, c) = start(SimConfig::instant()).await;
    sim.cloud()
        .set_throttle(Action::DescribeNetworkInterfaces, Some(Rate::new(20.0, 2)));
    // No client-side limit: the burst gets throttled, retries absorb it.
    for r in burst(&c, 8).await {
        r.unwrap();
    }
    let throttled = sim.cloud().stats()[&Action::DescribeNetworkInterfaces].throttled;
    assert!(throttled > 0, "the burst was throttled");

    // With a client-side limit under the server's, a burst is never throttled.
    sim.cloud().reset_stats();
    let cfg = c.config().clone().with_rate_limits(
        RateLimits::unlimited().with(Action::DescribeNetworkInterfaces, Rate::new(10.0, 2)),
    );
    let limited = EcsClient::new(
        cfg,
        Arc::new(StaticCredentials::new(Credentials::new(KEY_ID, SECRET))),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // refill the server's bucket
    for r in burst(&limited, 8).await {
        r.unwrap();
    }
    let stats = sim.cloud().stats()[&Action::DescribeNetworkInterfaces];
    assert_eq!((stats.calls, stats.throttled), (8, 0));
}

/// Runs `n` concurrent full-list describes.
async fn burst(
    c: &EcsClient,
    n: usize,
) -> Vec<cnikit_cloud_api::Result<Vec<cnikit_cloud_api::Eni>>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let c = c.clone();
        set.spawn(async move { c.describe_enis(&EniFilter::default()).await });
    }
    set.join_all().await
}

/// The next `n` calls of `action` commit their effect and lose their response.
fn drop_responses(cloud: &SimCloud, action: Action, n: u64) {
    cloud
        .add_fault(FaultRule::new(Some(action), Fault::DropResponse).times(n))
        .unwrap();
}

#[tokio::test]
async fn dropped_responses_do_not_duplicate_effects() {
    let mut cfg = SimConfig::default();
    cfg.latency.attach = Duration::from_millis(20);
    let (sim, c) = start(cfg).await;
    let cloud = sim.cloud();
    let before = cloud.enis().len();

    // Create: the first response is lost after the ENI was made; the retry carries the same
    // ClientToken and gets the same ENI back.
    drop_responses(cloud, Action::CreateNetworkInterface, 1);
    let eni = c
        .create_eni(&create(DEFAULT_VSWITCH).with_secondary_ipv4_count(2))
        .await
        .unwrap();
    assert_eq!(cloud.calls(Action::CreateNetworkInterface), 2);
    assert_eq!(cloud.enis().len(), before + 1, "exactly one ENI");
    assert_eq!(
        cloud.eni(&eni.id).unwrap().secondary_ipv4,
        eni.secondary_ipv4
    );

    // Assign: same for addresses.
    drop_responses(cloud, Action::AssignPrivateIpAddresses, 1);
    let ips = c
        .assign_ipv4(&AssignIpsRequest::count(&eni.id, 3))
        .await
        .unwrap();
    assert_eq!(ips.len(), 3);
    assert_eq!(
        cloud.eni(&eni.id).unwrap().secondary_ipv4.len(),
        2 + 3,
        "not 2 + 6"
    );
    drop_responses(cloud, Action::AssignIpv6Addresses, 1);
    c.assign_ipv6(&AssignIpsRequest::count(&eni.id, 2))
        .await
        .unwrap();
    assert_eq!(cloud.eni(&eni.id).unwrap().ipv6.len(), 2);

    // Attach has no token: the retry finds the ENI attaching to the same instance: success.
    drop_responses(cloud, Action::AttachNetworkInterface, 1);
    c.attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    assert_eq!(cloud.calls(Action::AttachNetworkInterface), 2);
    c.wait_eni(
        &eni.id,
        &WaitTarget::AttachedTo(DEFAULT_INSTANCE.into()),
        &fast_wait(),
    )
    .await
    .unwrap();

    // Detach and delete likewise.
    drop_responses(cloud, Action::DetachNetworkInterface, 1);
    c.detach_eni(&DetachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    c.wait_eni(&eni.id, &WaitTarget::Detached, &fast_wait())
        .await
        .unwrap();
    drop_responses(cloud, Action::DeleteNetworkInterface, 1);
    c.delete_eni(&eni.id).await.unwrap();
    assert!(
        c.wait_eni(&eni.id, &WaitTarget::Deleted, &fast_wait())
            .await
            .unwrap()
            .is_none()
    );

    // A caller-supplied token survives the caller's own retry after a total failure.
    drop_responses(cloud, Action::CreateNetworkInterface, 5);
    let req = create(DEFAULT_VSWITCH).with_client_token("pool-slot-7");
    assert_eq!(
        c.create_eni(&req).await.unwrap_err().kind(),
        ErrorKind::Transient
    );
    let again = c.create_eni(&req).await.unwrap();
    assert_eq!(cloud.enis().iter().filter(|e| e.id == again.id).count(), 1);
    assert_eq!(cloud.enis().len(), before + 1);
}

#[tokio::test]
async fn garbage_is_a_typed_error_never_a_panic() {
    let (sim, c) = start(SimConfig::instant()).await;
    let mut retry = fast_retry();
    retry.max_attempts = 2;
    let cfg = c.config().clone().with_retry(retry);
    let c = EcsClient::new(
        cfg,
        Arc::new(StaticCredentials::new(Credentials::new(KEY_ID, SECRET))),
    )
    .unwrap();
    let eni = c.create_eni(&create(DEFAULT_VSWITCH)).await.unwrap();
    for kind in [
        GarbageKind::Html,
        GarbageKind::TruncatedJson,
        GarbageKind::WrongTypes,
        GarbageKind::Huge,
        GarbageKind::Empty,
    ] {
        for action in [
            Action::DescribeNetworkInterfaces,
            Action::CreateNetworkInterface,
            Action::AssignPrivateIpAddresses,
            Action::AttachNetworkInterface,
            Action::DescribeInstanceTypes,
            Action::DescribeVSwitches,
        ] {
            sim.cloud().clear_faults();
            sim.cloud()
                .add_fault(FaultRule::new(Some(action), Fault::Garbage { body: kind }))
                .unwrap();
            let err = match action {
                Action::DescribeNetworkInterfaces => {
                    c.describe_enis(&EniFilter::default()).await.err()
                }
                Action::CreateNetworkInterface => {
                    c.create_eni(&create(DEFAULT_VSWITCH)).await.err()
                }
                Action::AssignPrivateIpAddresses => c
                    .assign_ipv4(&AssignIpsRequest::count(&eni.id, 1))
                    .await
                    .err(),
                Action::AttachNetworkInterface => c
                    .attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
                    .await
                    .err(),
                Action::DescribeInstanceTypes => c.instance_limits("ecs.g7.large").await.err(),
                _ => c.describe_subnet(DEFAULT_VSWITCH).await.err(),
            }
            .unwrap_or_else(|| panic!("{action} with {kind:?} garbage succeeded"));
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidResponse,
                "{action} {kind:?}: {err}"
            );
            if kind == GarbageKind::Huge {
                assert!(err.to_string().contains("larger than"), "{err}");
            }
            if kind == GarbageKind::Html {
                assert!(err.to_string().contains("502"), "{err}");
            }
        }
    }
    // MissingFields: a create without NetworkInterfaceId is an error, a describe is empty.
    sim.cloud().clear_faults();
    sim.cloud()
        .add_fault(FaultRule::new(
            None,
            Fault::Garbage {
                body: GarbageKind::MissingFields,
            },
        ))
        .unwrap();
    assert_eq!(
        c.create_eni(&create(DEFAULT_VSWITCH))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidResponse
    );
    assert_eq!(
        c.assign_ipv6(&AssignIpsRequest::count(&eni.id, 1))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidResponse
    );
    assert!(
        c.describe_enis(&EniFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn bad_credentials_are_rejected_and_not_retried() {
    let (sim, _) = start(SimConfig::instant()).await;
    let wrong = client(&sim, Credentials::new(KEY_ID, "not-the-secret"));
    let err = wrong
        .describe_enis(&EniFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::SIGNATURE_DOES_NOT_MATCH));
    assert_eq!(err.kind(), ErrorKind::Authentication);
    assert!(
        err.to_string()
            .contains("server string to sign is:POST&%2F&"),
        "{err}"
    );
    let unknown = client(&sim, Credentials::new("LTAIunknown", SECRET));
    let err = unknown
        .describe_enis(&EniFilter::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::ACCESS_KEY_NOT_FOUND));
    assert_eq!(
        sim.cloud().total_calls(),
        0,
        "rejected before reaching the region"
    );
    // The secret does not leak through the client's Debug.
    assert!(!format!("{wrong:?}").contains("not-the-secret"));
}

#[tokio::test]
async fn ram_role_credentials_from_the_simulated_metadata_service() {
    let mut cfg = SimConfig::instant();
    cfg.metadata.sts_ttl = Duration::from_secs(4);
    let (sim, _) = start(cfg).await;
    let imds = ImdsClient::new(ImdsConfig::with_base_url(sim.metadata_url())).unwrap();
    let mut role = RamRoleConfig::default();
    role.refresh_before = Duration::from_millis(2500);
    role.min_remaining = Duration::from_millis(500);
    let creds = RamRoleCredentials::new(imds, role);
    let ecs_cfg = EcsConfig::new("cn-hangzhou")
        .with_endpoint(Endpoint::custom(sim.url()))
        .with_retry(fast_retry())
        .with_rate_limits(RateLimits::unlimited());
    let c = EcsClient::new(ecs_cfg, Arc::new(creds.clone())).unwrap();
    c.describe_enis(&EniFilter::default()).await.unwrap();
    use cnikit_cloud_api::credentials::CredentialsProvider as _;
    let first = creds.credentials().await.unwrap();
    assert!(first.access_key_id.starts_with("STS."));
    assert!(
        first
            .security_token
            .as_ref()
            .unwrap()
            .expose()
            .contains('+')
    );
    assert!(!format!("{first:?}").contains(first.access_key_secret.expose()));

    // In the refresh window: the current credentials come back at once, a refresh runs behind.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let t = Instant::now();
    let during = creds.credentials().await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(200));
    assert_eq!(during.access_key_id, first.access_key_id);
    let mut refreshed = during.clone();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        refreshed = creds.credentials().await.unwrap();
        if refreshed.access_key_id != first.access_key_id {
            break;
        }
    }
    assert_ne!(
        refreshed.access_key_id, first.access_key_id,
        "refreshed in the background"
    );
    c.describe_enis(&EniFilter::default()).await.unwrap();
}

#[tokio::test]
async fn expired_sts_token_is_refreshed_once_and_retried() {
    let mut cfg = SimConfig::instant();
    cfg.metadata.sts_ttl = Duration::from_secs(2);
    let (sim, _) = start(cfg).await;
    let imds = ImdsClient::new(ImdsConfig::with_base_url(sim.metadata_url())).unwrap();
    let mut role = RamRoleConfig::role("cnikit-sim-role");
    // Use the credentials until the server says no.
    role.refresh_before = Duration::ZERO;
    role.min_remaining = Duration::ZERO;
    let c = EcsClient::new(
        EcsConfig::new("cn-hangzhou")
            .with_endpoint(Endpoint::custom(sim.url()))
            .with_retry(fast_retry())
            .with_rate_limits(RateLimits::unlimited()),
        Arc::new(RamRoleCredentials::new(imds, role)),
    )
    .unwrap();
    c.describe_enis(&EniFilter::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The cached token is expired: the server rejects it, the client refreshes and retries.
    c.describe_enis(&EniFilter::default()).await.unwrap();
}

#[tokio::test]
async fn metadata_service_with_tokens() {
    let mut cfg = SimConfig::default();
    cfg.latency.attach = Duration::ZERO;
    cfg.metadata.token_required = true;
    let (sim, c) = start(cfg).await;
    let eni = c
        .create_eni(
            &create(DEFAULT_VSWITCH)
                .with_secondary_ipv4_count(2)
                .with_ipv6_count(1),
        )
        .await
        .unwrap();
    c.attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    c.wait_eni(&eni.id, &WaitTarget::Status(EniStatus::InUse), &fast_wait())
        .await
        .unwrap();

    let mut icfg = ImdsConfig::with_base_url(sim.metadata_url());
    icfg.token_mode = TokenMode::Required;
    let imds = ImdsClient::new(icfg).unwrap();
    let id = imds.identity().await.unwrap();
    assert_eq!(id.instance_id, DEFAULT_INSTANCE);
    assert_eq!(id.region_id, "cn-hangzhou");
    assert_eq!(id.instance_type, "ecs.g7.xlarge");
    assert_eq!(id.subnet_id, DEFAULT_VSWITCH);
    let macs = imds.macs().await.unwrap();
    assert_eq!(macs.len(), 2);
    assert_eq!(macs[0], id.primary_mac);
    let iface = imds.interface(&eni.mac.to_uppercase()).await.unwrap();
    assert_eq!(iface.eni_id, eni.id);
    assert_eq!(iface.private_ipv4s.len(), 3);
    assert_eq!(iface.ipv6s, eni.ipv6);
    assert_eq!(iface.gateway, Some(Ipv4Addr::new(198, 18, 0, 253)));
    assert_eq!(iface.subnet_cidr.unwrap().to_string(), "198.18.0.0/24");
    assert!(iface.ipv6_gateway.is_some());
    let primary = imds.interface(&id.primary_mac).await.unwrap();
    assert!(primary.ipv6s.is_empty(), "404 on ipv6s means none");
    assert_eq!(imds.interfaces().await.unwrap().len(), 2);
    assert!(imds.interface("00:00:00:00:00:00").await.is_err());
    // One token served every read.
    assert_eq!(sim.metadata_token_requests(), 1);
    assert!(sim.metadata_reads() > 20);

    // Tokenless reads are refused when the instance requires tokens.
    let mut off = ImdsConfig::with_base_url(sim.metadata_url());
    off.token_mode = TokenMode::Disabled;
    off.attempts = 1;
    let err = ImdsClient::new(off)
        .unwrap()
        .instance_id()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    // A bad TTL is refused.
    let http = raw_http();
    let r = http
        .put(format!("{}/latest/api/token", sim.metadata_url()))
        .header("X-aliyun-ecs-metadata-token-ttl-seconds", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http
        .get(format!(
            "{}/latest/meta-data/instance-id",
            sim.metadata_url()
        ))
        .header("X-aliyun-ecs-metadata-token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn wait_is_bounded_and_cancellable_over_http() {
    let mut cfg = SimConfig::default();
    cfg.latency.attach = Duration::from_secs(30);
    let (_sim, c) = start(cfg).await;
    let eni = c.create_eni(&create(DEFAULT_VSWITCH)).await.unwrap();
    c.attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    let t = Instant::now();
    let err = c
        .wait_eni(
            &eni.id,
            &WaitTarget::Status(EniStatus::InUse),
            &WaitOptions::fixed(Duration::from_millis(20), Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(t.elapsed() < Duration::from_secs(2));
    let cancel = tokio_util::sync::CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.cancel();
    });
    let err = c
        .wait_eni(
            &eni.id,
            &WaitTarget::Status(EniStatus::InUse),
            &WaitOptions::default().with_cancel(cancel),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
}

/// Hand-signed requests: what the simulator checks besides the signature itself.
#[tokio::test]
async fn simulator_checks_timestamps_methods_and_duplicates() {
    let (sim, _) = start(SimConfig::instant()).await;
    let http = raw_http();
    let send = |method: &'static str,
                sign_as: &'static str,
                ts: String,
                extra: Vec<(&'static str, String)>| {
        let mut params: Vec<(&str, String)> = vec![
            ("Action", "DescribeNetworkInterfaces".into()),
            ("Version", "2014-05-26".into()),
            ("RegionId", "cn-hangzhou".into()),
            ("Format", "JSON".into()),
            ("AccessKeyId", KEY_ID.into()),
            ("SignatureMethod", "HMAC-SHA1".into()),
            ("SignatureVersion", "1.0".into()),
            (
                "SignatureNonce",
                format!("n-{ts}-{method}-{sign_as}-{}", extra.len()),
            ),
            ("Timestamp", ts),
        ];
        params.extend(extra);
        let sts = cnikit_cloud_api::ecs::signer::string_to_sign(
            sign_as,
            params.iter().map(|(k, v)| (*k, v.as_str())),
        );
        let sig = cnikit_cloud_api::ecs::signer::sign(&sts, SECRET);
        params.push(("Signature", sig));
        let query = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    cnikit_cloud_api::ecs::signer::percent_encode(k),
                    cnikit_cloud_api::ecs::signer::percent_encode(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let req = if method == "GET" {
            http.get(format!("{}?{query}", sim.url()))
        } else {
            http.post(format!("{}?{query}", sim.url()))
        };
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (status, body["Code"].as_str().unwrap_or("").to_owned())
        }
    };
    let now = || cnikit_cloud_api::ecs::signer::format_timestamp(std::time::SystemTime::now());
    assert_eq!(
        send("GET", "GET", now(), vec![]).await,
        (200, String::new())
    );
    assert_eq!(
        send("POST", "POST", now(), vec![]).await,
        (200, String::new())
    );
    assert_eq!(
        send("POST", "GET", now(), vec![]).await.1,
        codes::SIGNATURE_DOES_NOT_MATCH
    );
    assert_eq!(
        send("GET", "GET", "2016-02-23T12:46:24Z".into(), vec![]).await,
        (400, codes::TIMESTAMP_EXPIRED.to_owned())
    );
    assert_eq!(
        send("GET", "GET", "2024-13-01T00:00:00Z".into(), vec![])
            .await
            .1,
        codes::ILLEGAL_TIMESTAMP
    );
    assert_eq!(
        send("GET", "GET", now(), vec![("Version", "2014-05-26".into())])
            .await
            .1,
        "InvalidParameter.Duplicate"
    );
    assert_eq!(
        send("GET", "GET", now(), vec![("MaxResults", "lots".into())])
            .await
            .1,
        "InvalidParameter.MaxResults"
    );
    assert_eq!(
        sim.cloud().stats()[&Action::DescribeNetworkInterfaces].calls,
        3
    );
}

#[tokio::test]
async fn slow_answers_hit_the_request_timeout_and_are_retried() {
    let (sim, c) = start(SimConfig::instant()).await;
    let cfg = c
        .config()
        .clone()
        .with_request_timeout(Duration::from_millis(200));
    let c = EcsClient::new(
        cfg,
        Arc::new(StaticCredentials::new(Credentials::new(KEY_ID, SECRET))),
    )
    .unwrap();
    sim.cloud()
        .add_fault(
            FaultRule::new(
                Some(Action::DescribeVSwitches),
                Fault::Latency {
                    delay: Duration::from_secs(2),
                },
            )
            .times(1),
        )
        .unwrap();
    let t = Instant::now();
    c.describe_subnet(DEFAULT_VSWITCH).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "did not wait for the slow answer"
    );
    assert_eq!(sim.cloud().calls(Action::DescribeVSwitches), 2);

    // Always slow: a transport error that says it timed out.
    sim.cloud()
        .add_fault(FaultRule::new(
            Some(Action::DescribeVSwitches),
            Fault::Latency {
                delay: Duration::from_secs(2),
            },
        ))
        .unwrap();
    let err = c.describe_subnet(DEFAULT_VSWITCH).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.to_string().contains("timed out"), "{err}");
}

fn quick_imds(sim: &HttpSim) -> ImdsClient {
    let mut cfg = ImdsConfig::with_base_url(sim.metadata_url());
    cfg.backoff = Backoff::constant(Duration::from_millis(5));
    cfg.max_body = 64 * 1024;
    ImdsClient::new(cfg).unwrap()
}

#[tokio::test]
async fn metadata_client_survives_a_flaky_or_lying_service() {
    let (sim, _) = start(SimConfig::default()).await;
    // 5xx and 429 are retried.
    sim.add_metadata_fault(MetadataFault::new(
        "meta-data/instance-id",
        500,
        "oops",
        Some(2),
    ));
    sim.add_metadata_fault(MetadataFault::new(
        "meta-data/region-id",
        429,
        "slow down",
        Some(1),
    ));
    let imds = quick_imds(&sim);
    assert_eq!(imds.instance_id().await.unwrap(), DEFAULT_INSTANCE);
    assert_eq!(imds.region_id().await.unwrap(), "cn-hangzhou");
    // Persistent 503: a typed error after the attempts.
    sim.add_metadata_fault(MetadataFault::new("meta-data/zone-id", 503, "down", None));
    let err = imds.zone_id().await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    // A 401 means the token expired: one new token, one more try.
    let tokens = sim.metadata_token_requests();
    sim.add_metadata_fault(MetadataFault::new(
        "meta-data/vpc-id",
        401,
        "expired",
        Some(1),
    ));
    imds.vpc_id().await.unwrap();
    assert_eq!(sim.metadata_token_requests(), tokens + 1);
    // No token service: tokenless reads in the default (preferred) mode.
    sim.add_metadata_fault(MetadataFault::new("api/token", 404, "", None));
    assert_eq!(
        quick_imds(&sim).instance_type().await.unwrap(),
        "ecs.g7.xlarge"
    );

    // Garbage where addresses should be: typed errors, never a panic.
    let mac = imds.primary_mac().await.unwrap();
    for (leaf, body) in [
        ("private-ipv4s", "<html>502 Bad Gateway</html>"),
        ("private-ipv4s", "[\"198.18.0.1\""),
        ("private-ipv4s", "[1,2,3]"),
        ("primary-ip-address", "not-an-ip"),
        ("gateway", "999.0.0.1"),
        ("vswitch-cidr-block", "198.18.0.0/99"),
        ("ipv6s", "[zz::1]"),
    ] {
        let fresh = quick_imds(&sim);
        sim.add_metadata_fault(MetadataFault::new(
            format!("meta-data/network/interfaces/macs/{mac}/{leaf}"),
            200,
            body,
            Some(1),
        ));
        let err = fresh.interface(&mac).await.unwrap_err();
        assert!(
            matches!(err, cnikit_cloud_api::Error::Metadata { .. }),
            "{leaf}: {err}"
        );
    }
    // A huge body is refused without reading it all.
    sim.add_metadata_fault(MetadataFault::new(
        "meta-data/mac",
        200,
        "x".repeat(200_000),
        Some(1),
    ));
    let err = quick_imds(&sim).primary_mac().await.unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}
