//! The in-process simulator through the provider trait, as the pool will use it.
#![cfg(feature = "sim")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{sync::Arc, time::Duration};

use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, DetachEniRequest,
    EniFilter, EniKind, EniStatus, ErrorKind, WaitOptions, WaitTarget,
    ecs::{Action, codes},
    metadata::InstanceMetadata,
    sim::{
        DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, DEFAULT_VSWITCH_TINY, Fault,
        FaultRule, LatencyConfig, SimCloud, SimConfig,
    },
};
use tokio_util::sync::CancellationToken;

fn create(vsw: &str, n: u32) -> CreateEniRequest {
    CreateEniRequest::new(vsw, [DEFAULT_SECURITY_GROUP])
        .with_secondary_ipv4_count(n)
        .with_tag("cnikit.io/owner", "test")
}

#[tokio::test(start_paused = true)]
async fn full_lifecycle_through_dyn_provider() {
    let sim = SimCloud::new(SimConfig::default()).unwrap();
    let cloud: Arc<dyn CloudProvider> = Arc::new(sim.clone());

    let limits = cloud.instance_limits("ecs.g7.xlarge").await.unwrap();
    assert_eq!(
        (limits.max_enis, limits.ipv4_per_eni, limits.ipv6_per_eni),
        (4, 15, 15)
    );
    let err = cloud.instance_limits("ecs.nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let before = cloud
        .describe_subnet(DEFAULT_VSWITCH)
        .await
        .unwrap()
        .available_ipv4;
    let eni = cloud.create_eni(&create(DEFAULT_VSWITCH, 3)).await.unwrap();
    assert_eq!(eni.status, EniStatus::Available);
    assert_eq!(eni.kind, EniKind::Secondary);
    assert_eq!(eni.secondary_ipv4.len(), 3);
    assert_eq!(eni.tags["cnikit.io/owner"], "test");
    let after = cloud
        .describe_subnet(DEFAULT_VSWITCH)
        .await
        .unwrap()
        .available_ipv4;
    assert_eq!(before - after, 4);

    cloud
        .attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    assert_eq!(
        cloud.describe_eni(&eni.id).await.unwrap().unwrap().status,
        EniStatus::Attaching
    );
    let opts = WaitOptions::fixed(Duration::from_millis(20), Duration::from_secs(5));
    let attached = cloud
        .wait_eni(
            &eni.id,
            &WaitTarget::AttachedTo(DEFAULT_INSTANCE.into()),
            &opts,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attached.instance_id(), Some(DEFAULT_INSTANCE));

    let v4 = cloud
        .assign_ipv4(&AssignIpsRequest::count(&eni.id, 5))
        .await
        .unwrap();
    assert_eq!(v4.len(), 5);
    let v6 = cloud
        .assign_ipv6(&AssignIpsRequest::count(&eni.id, 2))
        .await
        .unwrap();
    assert_eq!(v6.len(), 2);
    cloud.unassign_ipv4(&eni.id, &v4[..2]).await.unwrap();
    cloud.unassign_ipv4(&eni.id, &v4[..2]).await.unwrap(); // already gone: success
    cloud.unassign_ipv6(&eni.id, &v6).await.unwrap();

    let listed = cloud.list_instance_enis(DEFAULT_INSTANCE).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|e| e.kind == EniKind::Primary));
    let mine = listed.iter().find(|e| e.id == eni.id).unwrap();
    assert_eq!(mine.secondary_ipv4.len(), 3 + 5 - 2);
    assert!(mine.ipv6.is_empty());

    // The metadata view shows the attached ENI with all its addresses.
    let md = sim.metadata(DEFAULT_INSTANCE);
    let iface = md.interface(&mine.mac.to_uppercase()).await.unwrap();
    assert_eq!(iface.eni_id, eni.id);
    assert_eq!(iface.private_ipv4s.len(), 1 + 6);
    assert_eq!(md.macs().await.unwrap().len(), 2);
    assert_eq!(md.identity().await.unwrap().instance_type, "ecs.g7.xlarge");

    cloud
        .detach_eni(&DetachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    cloud
        .wait_eni(&eni.id, &WaitTarget::Detached, &opts)
        .await
        .unwrap();
    cloud.delete_eni(&eni.id).await.unwrap();
    assert!(
        cloud
            .wait_eni(&eni.id, &WaitTarget::Deleted, &opts)
            .await
            .unwrap()
            .is_none()
    );
    // Gone: detach and delete are still success.
    cloud.delete_eni(&eni.id).await.unwrap();
    cloud
        .detach_eni(&DetachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    assert_eq!(
        cloud
            .describe_subnet(DEFAULT_VSWITCH)
            .await
            .unwrap()
            .available_ipv4,
        before
    );

    assert_eq!(sim.calls(Action::CreateNetworkInterface), 1);
    assert_eq!(sim.calls(Action::DeleteNetworkInterface), 2);
    assert!(sim.calls(Action::DescribeNetworkInterfaces) >= 5);
}

#[tokio::test(start_paused = true)]
async fn exhaustion_and_limits_are_typed() {
    let cloud = SimCloud::new(SimConfig::instant()).unwrap();
    let err = cloud
        .create_eni(&create(DEFAULT_VSWITCH_TINY, 20))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::VSWITCH_IP_NOT_ENOUGH));
    assert_eq!(err.kind(), ErrorKind::SubnetExhausted);
    assert!(!err.is_retryable());
    assert!(err.request_id().is_some());

    let mut enis = Vec::new();
    for _ in 0..4 {
        enis.push(cloud.create_eni(&create(DEFAULT_VSWITCH, 0)).await.unwrap());
    }
    for e in &enis[..3] {
        cloud
            .attach_eni(&AttachEniRequest::new(&e.id, DEFAULT_INSTANCE))
            .await
            .unwrap();
    }
    let err = cloud
        .attach_eni(&AttachEniRequest::new(&enis[3].id, DEFAULT_INSTANCE))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(codes::ENI_PER_INSTANCE_LIMIT));
    assert_eq!(err.kind(), ErrorKind::QuotaExceeded);
}

#[tokio::test(start_paused = true)]
async fn wait_times_out_and_cancels() {
    let cloud = SimCloud::new(SimConfig::default()).unwrap();
    let mut latency = LatencyConfig::default();
    latency.attach = Duration::from_secs(60);
    cloud.set_latency(latency);
    let eni = cloud.create_eni(&create(DEFAULT_VSWITCH, 0)).await.unwrap();
    cloud
        .attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    let target = WaitTarget::Status(EniStatus::InUse);
    let err = cloud
        .wait_eni(
            &eni.id,
            &target,
            &WaitOptions::default().with_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("Attaching"), "{err}");

    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        c2.cancel();
    });
    let start = tokio::time::Instant::now();
    let err = cloud
        .wait_eni(
            &eni.id,
            &target,
            &WaitOptions::default().with_cancel(cancel),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert!(start.elapsed() < Duration::from_secs(5));
    // With enough time it does get there.
    let done = cloud
        .wait_eni(&eni.id, &target, &WaitOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, EniStatus::InUse);
}

#[tokio::test(start_paused = true)]
async fn dropped_response_commits_and_token_replays() {
    let cloud = SimCloud::new(SimConfig::instant()).unwrap();
    cloud
        .add_fault(
            FaultRule::new(Some(Action::CreateNetworkInterface), Fault::DropResponse).times(1),
        )
        .unwrap();
    let req = create(DEFAULT_VSWITCH, 2).with_client_token("retry-me");
    let err = cloud.create_eni(&req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    // The ENI exists although the caller never heard of it...
    assert_eq!(cloud.enis().len(), 2);
    // ...and retrying with the same token returns it instead of creating another.
    let eni = cloud.create_eni(&req).await.unwrap();
    assert_eq!(cloud.enis().len(), 2);
    assert_eq!(
        cloud.eni(&eni.id).unwrap().secondary_ipv4,
        eni.secondary_ipv4
    );
    let stats = cloud.stats()[&Action::CreateNetworkInterface];
    assert_eq!((stats.calls, stats.dropped, stats.succeeded), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn throttling_and_injected_errors() {
    let cloud = SimCloud::new(SimConfig::instant()).unwrap();
    cloud.set_throttle(
        Action::DescribeNetworkInterfaces,
        Some(cnikit_cloud_api::Rate::new(1.0, 2)),
    );
    let f = EniFilter::default();
    cloud.describe_enis(&f).await.unwrap();
    cloud.describe_enis(&f).await.unwrap();
    let err = cloud.describe_enis(&f).await.unwrap_err();
    assert_eq!(err.code(), Some(codes::THROTTLING_USER));
    assert_eq!(err.kind(), ErrorKind::Throttled);
    tokio::time::sleep(Duration::from_secs(1)).await;
    cloud.describe_enis(&f).await.unwrap();
    assert_eq!(
        cloud.stats()[&Action::DescribeNetworkInterfaces].throttled,
        1
    );

    cloud
        .add_fault(
            FaultRule::error(
                Some(Action::AssignPrivateIpAddresses),
                codes::INTERNAL_ERROR,
            )
            .times(2),
        )
        .unwrap();
    let eni = cloud.create_eni(&create(DEFAULT_VSWITCH, 0)).await.unwrap();
    let req = AssignIpsRequest::count(&eni.id, 1);
    for _ in 0..2 {
        let e = cloud.assign_ipv4(&req).await.unwrap_err();
        assert_eq!(e.code(), Some(codes::INTERNAL_ERROR));
        assert!(e.is_retryable());
        assert_eq!(e.api().unwrap().http_status, Some(500));
    }
    assert_eq!(cloud.assign_ipv4(&req).await.unwrap().len(), 1);
    assert!(
        cloud
            .add_fault(FaultRule::error(None, "X").with_probability(2.0))
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn attach_can_fail_asynchronously() {
    let cloud = SimCloud::new(SimConfig::default()).unwrap();
    cloud
        .add_fault(FaultRule::new(Some(Action::AttachNetworkInterface), Fault::FailAsync).times(1))
        .unwrap();
    let eni = cloud.create_eni(&create(DEFAULT_VSWITCH, 0)).await.unwrap();
    cloud
        .attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    let opts = WaitOptions::fixed(Duration::from_millis(20), Duration::from_secs(60));
    let start = tokio::time::Instant::now();
    let err = cloud
        .wait_eni(
            &eni.id,
            &WaitTarget::AttachedTo(DEFAULT_INSTANCE.into()),
            &opts,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, cnikit_cloud_api::Error::StatusRegressed { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "no wait for the deadline"
    );
    assert!(cloud.eni(&eni.id).unwrap().attachment.is_none());
    // Attaching again works.
    cloud
        .attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    cloud
        .wait_eni(
            &eni.id,
            &WaitTarget::AttachedTo(DEFAULT_INSTANCE.into()),
            &opts,
        )
        .await
        .unwrap();
}

/// Same seed and same call sequence: same ids, same fault decisions.
#[tokio::test(start_paused = true)]
async fn seeded_runs_replay_exactly() {
    async fn run(seed: u64) -> Vec<String> {
        let mut cfg = SimConfig::instant();
        cfg.seed = seed;
        cfg.faults = vec![
            FaultRule::error(Some(Action::CreateNetworkInterface), codes::INTERNAL_ERROR)
                .with_probability(0.4),
        ];
        let cloud = SimCloud::new(cfg).unwrap();
        let mut out = Vec::new();
        for _ in 0..30 {
            out.push(match cloud.create_eni(&create(DEFAULT_VSWITCH, 1)).await {
                Ok(e) => format!("{} {:?}", e.id, e.secondary_ipv4),
                Err(e) => format!("error {}", e.request_id().unwrap()),
            });
        }
        out
    }
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    assert_ne!(a, run(8).await);
    assert!(a.iter().any(|s| s.starts_with("error")) && a.iter().any(|s| s.starts_with("eni-")));
}
