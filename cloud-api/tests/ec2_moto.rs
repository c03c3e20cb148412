//! The EC2 client against a real EC2 Query API server: `moto_server` on loopback (one per test
//! binary). Every action, filters, error codes, idempotent release paths, device indices.
//! Under `CI=true` a missing moto fails the tests; elsewhere they print SKIP.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, DetachEniRequest,
    EniFilter, EniKind, EniStatus, ErrorKind, WaitOptions, WaitTarget,
    credentials::{Credentials, StaticCredentials},
    ec2::{Ec2Client, Ec2Config, Ec2ProviderConfig, codes, testbed::Testbed},
    ecs::RetryPolicy,
};
use cnikit_test_support::{moto::MotoServer, privilege};

/// moto's `m5.large`: 3 ENIs of 10 IPv4 and 10 IPv6 addresses.
const TYPE: &str = "m5.large";

fn moto(test: &str) -> Option<&'static MotoServer> {
    let server = MotoServer::available().and_then(|()| MotoServer::shared());
    let ok = privilege::check(
        test,
        "moto_server (pip install moto[server], scripts/setup.sh)",
        server.as_ref().map(|_| ()),
    );
    ok.then(|| server.ok()).flatten()
}

fn client(moto: &MotoServer) -> Ec2Client {
    let mut retry = RetryPolicy::default();
    retry.deadline = Duration::from_secs(20);
    Ec2Client::new(
        Ec2Config::new("us-east-1")
            .with_endpoint(moto.url())
            .with_retry(retry),
        Arc::new(StaticCredentials::new(Credentials::new(
            "testing", "testing",
        ))),
    )
    .unwrap()
}

/// A fresh VPC per test (subnet numbers differ so logs tell them apart).
async fn world(ec2: &Ec2Client) -> Testbed {
    static N: AtomicU8 = AtomicU8::new(1);
    Testbed::create(ec2, TYPE, N.fetch_add(1, Ordering::Relaxed))
        .await
        .unwrap()
}

fn fast_wait() -> WaitOptions {
    WaitOptions::fixed(Duration::from_millis(50), Duration::from_secs(10))
}

fn run(f: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

#[test]
fn every_action_against_moto() {
    let Some(moto) = moto("every_action_against_moto") else {
        return;
    };
    run(async {
        let ec2 = client(moto);
        let w = world(&ec2).await;

        // DescribeInstanceTypes: the limits the pool sizes itself by.
        let limits = ec2.instance_limits(TYPE).await.unwrap();
        assert_eq!(
            (limits.max_enis, limits.ipv4_per_eni, limits.ipv6_per_eni),
            (3, 10, 10)
        );
        // DescribeSubnets: free addresses (a /24 minus AWS's 5 reserved and the instance's).
        let subnet = ec2.describe_subnet(&w.subnet_id).await.unwrap();
        assert_eq!(subnet.vpc_id, w.vpc_id);
        assert!(
            subnet.available_ipv4 > 200 && subnet.available_ipv4 <= 251,
            "{subnet:?}"
        );
        let free_before = subnet.available_ipv4;

        // The instance's primary ENI is there, device index 0.
        let attached = ec2.list_instance_enis(&w.instance_id).await.unwrap();
        assert_eq!(attached.len(), 1, "{attached:?}");
        assert_eq!(attached[0].kind, EniKind::Primary);

        // CreateNetworkInterface with tags, a description and 2 secondary addresses.
        let eni = ec2
            .create_eni(
                &CreateEniRequest::new(&w.subnet_id, [&w.security_group_id])
                    .with_secondary_ipv4_count(2)
                    .with_tag("cnikit.io/pool", "cnikit")
                    .with_tag("cnikit.io/instance", &w.instance_id)
                    .with_description("created by a test"),
            )
            .await
            .unwrap();
        assert!(eni.id.starts_with("eni-"), "{eni:?}");
        assert_eq!(eni.status, EniStatus::Available);
        assert_eq!(eni.secondary_ipv4.len(), 2);
        assert!(eni.primary_ipv4.is_some());
        assert_eq!(eni.tags["cnikit.io/pool"], "cnikit");
        assert_eq!(eni.subnet_id, w.subnet_id);
        assert_eq!(eni.security_group_ids, vec![w.security_group_id.clone()]);
        assert_eq!(eni.description.as_deref(), Some("created by a test"));
        let free_after = ec2
            .describe_subnet(&w.subnet_id)
            .await
            .unwrap()
            .available_ipv4;
        assert_eq!(
            free_after,
            free_before - 3,
            "3 addresses taken from the subnet"
        );

        // AttachNetworkInterface without a device index: the client picks 1.
        ec2.attach_eni(&AttachEniRequest::new(&eni.id, &w.instance_id))
            .await
            .unwrap();
        let got = ec2
            .wait_eni(
                &eni.id,
                &WaitTarget::AttachedTo(w.instance_id.clone()),
                &fast_wait(),
            )
            .await
            .unwrap()
            .unwrap();
        let att = got.attachment.clone().unwrap();
        assert_eq!(att.device_index, Some(1));
        assert!(att.attachment_id.is_some());
        assert_eq!(
            ec2.list_instance_enis(&w.instance_id).await.unwrap().len(),
            2
        );

        // Assign by count and explicitly; unassign; the ENI's view agrees each time.
        let three = ec2
            .assign_ipv4(&AssignIpsRequest::count(&eni.id, 3))
            .await
            .unwrap();
        assert_eq!(three.len(), 3);
        let explicit: Ipv4Addr = {
            let cidr = subnet.ipv4_cidr.unwrap();
            cidr.nth(200).unwrap()
        };
        let got = ec2
            .assign_ipv4(&AssignIpsRequest::explicit(&eni.id, vec![explicit]))
            .await
            .unwrap();
        assert_eq!(got, vec![explicit]);
        let now = ec2.describe_eni(&eni.id).await.unwrap().unwrap();
        assert_eq!(now.secondary_ipv4.len(), 6, "{now:?}");
        for ip in three.iter().chain([&explicit]) {
            assert!(now.secondary_ipv4.contains(ip), "{ip} missing from {now:?}");
        }
        ec2.unassign_ipv4(&eni.id, &[three[0], explicit])
            .await
            .unwrap();
        let now = ec2.describe_eni(&eni.id).await.unwrap().unwrap();
        assert_eq!(now.secondary_ipv4.len(), 4);
        assert!(!now.secondary_ipv4.contains(&explicit));
        // Unassigning what is already gone is not an error.
        ec2.unassign_ipv4(&eni.id, &[explicit]).await.unwrap();

        // IPv6, when the subnet has a /64.
        if subnet.ipv6_cidr.is_some() {
            let v6 = ec2
                .assign_ipv6(&AssignIpsRequest::count(&eni.id, 2))
                .await
                .unwrap();
            assert_eq!(v6.len(), 2);
            let now = ec2.describe_eni(&eni.id).await.unwrap().unwrap();
            assert_eq!(now.ipv6.len(), 2, "{now:?}");
            ec2.unassign_ipv6(&eni.id, &v6[..1]).await.unwrap();
            let now = ec2.describe_eni(&eni.id).await.unwrap().unwrap();
            assert_eq!(now.ipv6, v6[1..].to_vec());
        }

        // A second ENI gets the next device index.
        let second = ec2
            .create_eni(&CreateEniRequest::new(&w.subnet_id, [&w.security_group_id]))
            .await
            .unwrap();
        ec2.attach_eni(&AttachEniRequest::new(&second.id, &w.instance_id))
            .await
            .unwrap();
        let s = ec2.describe_eni(&second.id).await.unwrap().unwrap();
        assert_eq!(s.attachment.unwrap().device_index, Some(2));

        // Detach (the client finds the attachment id) and delete; both again are no-ops.
        for id in [&eni.id, &second.id] {
            ec2.detach_eni(&DetachEniRequest::new(id, &w.instance_id))
                .await
                .unwrap();
            ec2.wait_eni(id, &WaitTarget::Detached, &fast_wait())
                .await
                .unwrap();
            ec2.detach_eni(&DetachEniRequest::new(id, &w.instance_id))
                .await
                .unwrap();
            ec2.delete_eni(id).await.unwrap();
            assert_eq!(ec2.describe_eni(id).await.unwrap(), None);
            ec2.delete_eni(id).await.unwrap();
            ec2.detach_eni(&DetachEniRequest::new(id, &w.instance_id))
                .await
                .unwrap();
            ec2.unassign_ipv4(id, &[explicit]).await.unwrap();
        }
        assert_eq!(
            ec2.describe_subnet(&w.subnet_id)
                .await
                .unwrap()
                .available_ipv4,
            free_before
        );
    });
}

#[test]
fn describe_filters_against_moto() {
    let Some(moto) = moto("describe_filters_against_moto") else {
        return;
    };
    run(async {
        let ec2 = client(moto);
        let w = world(&ec2).await;
        let mut ids = Vec::new();
        for i in 0..6 {
            let owner = if i % 2 == 0 { "cnikit" } else { "someone-else" };
            let eni = ec2
                .create_eni(
                    &CreateEniRequest::new(&w.subnet_id, [&w.security_group_id])
                        .with_tag("owner", owner)
                        .with_tag("vpc", &w.vpc_id),
                )
                .await
                .unwrap();
            ids.push(eni.id);
        }
        ec2.attach_eni(&AttachEniRequest::new(&ids[0], &w.instance_id))
            .await
            .unwrap();
        let mut mine = EniFilter::tag("owner", "cnikit");
        mine.tags.insert("vpc".into(), w.vpc_id.clone());
        let found = ec2.describe_enis(&mine).await.unwrap();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().all(|e| e.tags["owner"] == "cnikit"));
        let available = ec2
            .describe_enis(&mine.clone().with_status(EniStatus::Available))
            .await
            .unwrap();
        assert_eq!(available.len(), 2);
        let mut in_subnet = EniFilter::default();
        in_subnet.subnet_id = Some(w.subnet_id.clone());
        // The six, plus the instance's primary ENI.
        assert_eq!(ec2.describe_enis(&in_subnet).await.unwrap().len(), 7);
        let on_instance = ec2.list_instance_enis(&w.instance_id).await.unwrap();
        assert_eq!(on_instance.len(), 2);
        // By ids, with one that does not exist (any more): the others still come back.
        ec2.delete_eni(&ids[5]).await.unwrap();
        let by_id = ec2
            .describe_enis(&EniFilter::ids(ids[3..].iter().cloned()))
            .await
            .unwrap();
        let got: Vec<&str> = by_id.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(got, vec![ids[3].as_str(), ids[4].as_str()]);
    });
}

#[test]
fn error_codes_against_moto() {
    let Some(moto) = moto("error_codes_against_moto") else {
        return;
    };
    run(async {
        let ec2 = client(moto);
        let w = world(&ec2).await;
        let e = ec2
            .describe_subnet("subnet-0123456789abcdef0")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(e.code(), Some(codes::SUBNET_NOT_FOUND));
        assert!(e.request_id().is_some(), "moto sends a request id: {e}");
        let e = ec2
            .create_eni(&CreateEniRequest::new(
                "subnet-0123456789abcdef0",
                [&w.security_group_id],
            ))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let e = ec2
            .attach_eni(&AttachEniRequest::new(
                "eni-0123456789abcdef0",
                &w.instance_id,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(codes::ENI_NOT_FOUND), "{e}");
        assert!(!e.is_retryable());
        let e = ec2
            .assign_ipv4(&AssignIpsRequest::count("eni-0123456789abcdef0", 1))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let e = ec2.instance_limits("no.such-type").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        let eni = ec2
            .create_eni(&CreateEniRequest::new(&w.subnet_id, [&w.security_group_id]))
            .await
            .unwrap();
        let e = ec2
            .attach_eni(&AttachEniRequest::new(&eni.id, "i-0123456789abcdef0"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(e.code(), Some(codes::INSTANCE_NOT_FOUND));
        // An action moto does not know.
        let e = ec2.call("NoSuchAction", &[]).await.unwrap_err();
        assert!(!e.is_retryable(), "{e}");
    });
}

#[test]
fn provider_config_connects_to_moto() {
    let Some(moto) = moto("provider_config_connects_to_moto") else {
        return;
    };
    run(async {
        let json = format!(
            r#"{{"endpoint": "{}", "region": "us-east-1", "instance_id": "i-1",
                "instance_type": "{TYPE}", "nodes_sharing_limits": 10,
                "credentials": {{"source": "static", "access_key_id": "testing",
                                 "secret_access_key": "very-secret"}}}}"#,
            moto.url()
        );
        let cfg: Ec2ProviderConfig = serde_json::from_str(&json).unwrap();
        assert!(!format!("{cfg:?}").contains("very-secret"));
        let p = cfg.connect().await.unwrap();
        assert_eq!(p.instance_id, "i-1");
        assert!(p.metadata.is_none());
        let limits = p.client.instance_limits(TYPE).await.unwrap();
        assert_eq!(limits.max_enis, 3);
        assert_eq!(p.client.name(), "aws-ec2");
        let bad: Result<Ec2ProviderConfig, _> = serde_json::from_str(r#"{"regoin": "x"}"#);
        assert!(bad.is_err(), "unknown keys are refused");
    });
}
