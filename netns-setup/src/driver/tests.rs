//! Driver logic against the fake kernel: no privileges needed, every failure point enumerated.

use std::sync::Arc;

use super::*;
use crate::{
    NetlinkError,
    naming::{self, PRIORITY_FROM_POD, PRIORITY_TO_POD},
    netlink::{
        MacAddr, TABLE_MAIN,
        fake::{FakeKernel, FakeSnapshot},
        fault::{FaultInjector, FaultPlan, FaultyConnector},
    },
};

const ENI_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);

struct World {
    kernel: Arc<FakeKernel>,
    node_ns: Netns,
    node: Node,
}

fn world() -> World {
    let kernel = FakeKernel::new();
    let (node_ns, handle) = kernel.namespace("node");
    kernel.add_physical(&node_ns, "eth1", ENI_MAC, 1500);
    let node = Node::new(handle, kernel.connector());
    World {
        kernel,
        node_ns,
        node,
    }
}

impl World {
    fn pod(&self, id: &str) -> PodNetwork {
        let (netns, _) = self.kernel.namespace(id);
        PodNetwork::new(id, netns, EniRef::Name("eth1".into()))
            .with_ip(
                "198.18.0.21/24".parse().unwrap(),
                "198.18.0.1".parse().unwrap(),
            )
            .with_ip(
                "2001:2::21/64".parse().unwrap(),
                "2001:2::1".parse().unwrap(),
            )
            .with_service_cidr("198.19.0.0/20".parse().unwrap())
            .with_host_stack_cidr("169.254.20.10/32".parse().unwrap())
            .with_node_ip("198.18.0.10".parse().unwrap())
            .with_node_ip("2001:2::10".parse().unwrap())
    }

    fn faulty(&self, plan: &Arc<FaultPlan>) -> Node {
        let handle = self.kernel.connector().connect(&self.node_ns).unwrap();
        Node::new(
            FaultInjector::wrap(handle, Arc::clone(plan)),
            Arc::new(FaultyConnector::new(
                self.kernel.connector(),
                Arc::clone(plan),
            )),
        )
    }

    fn states(&self, pod: &PodNetwork) -> (FakeSnapshot, FakeSnapshot) {
        (
            self.kernel.snapshot(&self.node_ns),
            self.kernel.snapshot(pod.netns.as_ref().unwrap()),
        )
    }
}

fn drivers() -> Vec<Box<dyn PodDriver>> {
    vec![
        Box::new(VethDriver),
        Box::new(IpVlanDriver),
        Box::new(ExclusiveEniDriver::default()),
    ]
}

#[tokio::test]
async fn every_driver_converges_and_tears_down_to_nothing() {
    for driver in drivers() {
        let w = world();
        let pod = w.pod("c1");
        driver.ensure_eni(&w.node, &pod).await.unwrap();
        let before = w.states(&pod);
        let first = driver.setup(&w.node, &pod).await.unwrap();
        assert!(first.report.created > 0, "{:?}", driver.mode());
        let wired = w.states(&pod);
        let again = driver.setup(&w.node, &pod).await.unwrap();
        assert!(
            again.report.is_noop(),
            "{:?}: {:?}",
            driver.mode(),
            again.report
        );
        assert_eq!(w.states(&pod), wired, "{:?}", driver.mode());
        assert_eq!(driver.check(&w.node, &pod).await.unwrap(), vec![]);
        driver.teardown(&w.node, &pod).await.unwrap();
        driver.teardown(&w.node, &pod).await.unwrap();
        assert_eq!(w.states(&pod), before, "{:?}", driver.mode());
        driver.release_eni(&w.node, &pod).await.unwrap();
    }
}

#[tokio::test]
async fn a_failure_at_any_step_leaves_both_namespaces_as_they_were() {
    for driver in drivers() {
        let w = world();
        let pod = w.pod("c1");
        driver.ensure_eni(&w.node, &pod).await.unwrap();
        let before = w.states(&pod);
        let counter = FaultPlan::count_only();
        driver.setup(&w.faulty(&counter), &pod).await.unwrap();
        let steps = counter.changes();
        driver.teardown(&w.node, &pod).await.unwrap();
        assert_eq!(w.states(&pod), before);
        assert!(steps > 5, "{:?}", counter.log());
        for n in 0..steps {
            let plan = FaultPlan::fail_nth_change(n, libc::EIO);
            let err = driver.setup(&w.faulty(&plan), &pod).await.unwrap_err();
            assert!(plan.fired(), "{:?} step {n}", driver.mode());
            assert!(!matches!(err, Error::RollbackFailed { .. }), "{err}");
            assert_eq!(
                w.states(&pod),
                before,
                "{:?} step {n} ({:?})",
                driver.mode(),
                plan.log().last()
            );
        }
    }
}

#[tokio::test]
async fn veth_wiring_is_as_documented() {
    let w = world();
    let pod = w.pod("c1");
    VethDriver.setup(&w.node, &pod).await.unwrap();
    let (node, inside) = w.states(&pod);
    let eni = node.links.iter().find(|l| l.name == "eth1").unwrap();
    let table = naming::eni_table(eni.index);
    let host = node
        .links
        .iter()
        .find(|l| l.name == naming::host_veth_name("c1", "eth0"))
        .unwrap();
    assert_eq!(host.mac, Some(naming::HOST_VETH_MAC));
    let mut rules: Vec<String> = node.rules.iter().map(ToString::to_string).collect();
    rules.sort();
    assert_eq!(
        rules,
        [
            format!("{PRIORITY_FROM_POD}: from 198.18.0.21/32 lookup {table}"),
            format!("{PRIORITY_FROM_POD}: from 2001:2::21/128 lookup {table}"),
            format!("{PRIORITY_TO_POD}: from all to 198.18.0.21/32 lookup {TABLE_MAIN}"),
            format!("{PRIORITY_TO_POD}: from all to 2001:2::21/128 lookup {TABLE_MAIN}"),
        ]
    );
    let eni_table: Vec<String> = node
        .routes
        .iter()
        .filter(|r| r.table == table)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        eni_table,
        [
            format!(
                "default via 198.18.0.1 dev #{} table {table} onlink",
                eni.index
            ),
            format!("2001:2::1/128 dev #{} table {table}", eni.index),
            format!("default via 2001:2::1 dev #{} table {table}", eni.index),
        ]
    );
    let eth0 = inside.links.iter().find(|l| l.name == "eth0").unwrap();
    assert_eq!(eth0.mac, Some(naming::pod_veth_mac("c1", "eth0")));
    assert!(
        inside
            .neighbours
            .iter()
            .all(|n| n.mac == Some(naming::HOST_VETH_MAC))
    );
    assert_eq!(inside.neighbours.len(), 2);
    assert!(
        inside
            .addresses
            .iter()
            .all(|a| a.address.prefix() == 32 || a.address.prefix() == 128)
    );
}

#[tokio::test]
async fn veth_teardown_never_enters_the_pod() {
    let w = world();
    let pod = w.pod("c1");
    VethDriver.setup(&w.node, &pod).await.unwrap();
    w.kernel.clear_calls();
    VethDriver.teardown(&w.node, &pod).await.unwrap();
    let calls = w.kernel.calls();
    assert!(calls.iter().all(|c| c.netns == "node"), "{calls:#?}");
    let changes: Vec<_> = calls.iter().filter(|c| c.is_change()).collect();
    // Four rules and the veth: the pod end and everything on it go with the veth.
    assert_eq!(changes.len(), 5, "{changes:#?}");
}

#[tokio::test]
async fn teardown_works_without_the_pod_namespace_and_without_the_eni() {
    for driver in drivers() {
        let w = world();
        let pod = w.pod("c1");
        driver.ensure_eni(&w.node, &pod).await.unwrap();
        let before = w.kernel.snapshot(&w.node_ns);
        driver.setup(&w.node, &pod).await.unwrap();
        // The runtime removed the namespace: virtual links die, the ENI comes back (renamed if
        // its name is taken, as the kernel would).
        w.kernel
            .destroy_namespace(pod.netns.as_ref().unwrap(), &w.node_ns);
        let gone = PodNetwork {
            netns: None,
            ..pod.clone()
        };
        driver.teardown(&w.node, &gone).await.unwrap();
        let after = w.kernel.snapshot(&w.node_ns);
        let names = |s: &FakeSnapshot| {
            let mut v: Vec<(String, u32, bool, Option<String>)> = s
                .links
                .iter()
                .map(|l| (l.name.clone(), l.mtu, l.up, l.alias.clone()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&after), names(&before), "{:?}", driver.mode());
        assert_eq!(after.rules, before.rules, "{:?}", driver.mode());
        assert_eq!(
            after.routes.len(),
            before.routes.len(),
            "{:?}",
            driver.mode()
        );
    }
}

#[tokio::test]
async fn exclusive_eni_goes_back_intact() {
    let w = world();
    let pod = w.pod("c1").with_mtu(1400);
    let driver = ExclusiveEniDriver::default();
    let before = w.kernel.snapshot(&w.node_ns);
    driver.setup(&w.node, &pod).await.unwrap();
    let inside = w.kernel.snapshot(pod.netns.as_ref().unwrap());
    let eth0 = inside.links.iter().find(|l| l.name == "eth0").unwrap();
    assert_eq!((eth0.mac, eth0.mtu), (Some(ENI_MAC), 1400));
    assert!(eth0.alias.as_deref().unwrap().starts_with("cnikit:eni:"));
    assert!(
        w.kernel
            .snapshot(&w.node_ns)
            .links
            .iter()
            .all(|l| l.name != "eth1")
    );
    // Another pod cannot take it while it is in use.
    let other = w.pod("c2");
    let err = driver.setup(&w.node, &other).await.unwrap_err();
    assert!(matches!(err, Error::EniNotFound { .. }), "{err}");
    driver.teardown(&w.node, &pod).await.unwrap();
    let after = w.kernel.snapshot(&w.node_ns);
    let eth1 = after.links.iter().find(|l| l.name == "eth1").unwrap();
    let original = before.links.iter().find(|l| l.name == "eth1").unwrap();
    assert_eq!(
        (eth1.mtu, eth1.up, &eth1.alias, eth1.mac),
        (original.mtu, original.up, &None, original.mac)
    );
}

#[tokio::test]
async fn a_stranger_in_the_way_is_reported_not_removed() {
    let w = world();
    let pod = w.pod("c1");
    // The pod already has an eth0 that is not ours.
    let pod_handle = w
        .kernel
        .connector()
        .connect(pod.netns.as_ref().unwrap())
        .unwrap();
    pod_handle
        .add_link(&crate::netlink::NewLink::Veth {
            name: "eth0".into(),
            mtu: None,
            mac: None,
            up: false,
            peer: crate::netlink::VethPeer {
                name: "other".into(),
                netns: None,
                mtu: None,
                mac: None,
                up: false,
            },
        })
        .await
        .unwrap();
    let before = w.states(&pod);
    for driver in drivers() {
        let err = driver.setup(&w.node, &pod).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::LinkConflict {
                    side: Side::Pod,
                    ..
                }
            ),
            "{:?}: {err}",
            driver.mode()
        );
        let (node, inside) = w.states(&pod);
        assert_eq!(inside, before.1, "{:?}", driver.mode());
        // Only node-level (shared) state may have appeared: the ENI up, the IPVLAN host link.
        assert!(
            node.links
                .iter()
                .all(|l| ["lo", "eth1"].contains(&l.name.as_str()) || l.name.starts_with("cnki")),
            "{:?}: {:?}",
            driver.mode(),
            node.links
        );
        assert!(node.rules.is_empty(), "{:?}", driver.mode());
    }
}

#[tokio::test]
async fn check_reports_drift_and_setup_repairs_it() {
    let w = world();
    let pod = w.pod("c1");
    IpVlanDriver.setup(&w.node, &pod).await.unwrap();
    let pod_handle = w
        .kernel
        .connector()
        .connect(pod.netns.as_ref().unwrap())
        .unwrap();
    let eth0 = pod_handle.link_by_name("eth0").await.unwrap().unwrap();
    pod_handle
        .set_link(&crate::netlink::LinkChange {
            index: eth0.index,
            up: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let drifts = IpVlanDriver.check(&w.node, &pod).await.unwrap();
    assert!(drifts.contains(&Drift::LinkDown {
        side: Side::Pod,
        name: "eth0".into()
    }));
    // Taking the link down flushed its routes: reported too.
    assert!(drifts.iter().any(|d| matches!(
        d,
        Drift::MissingRoute {
            side: Side::Pod,
            ..
        }
    )));
    IpVlanDriver.setup(&w.node, &pod).await.unwrap();
    assert_eq!(IpVlanDriver.check(&w.node, &pod).await.unwrap(), vec![]);
}

#[tokio::test]
async fn ipvlan_refuses_what_it_cannot_wire() {
    let w = world();
    let pod = w.pod("c1");
    let no_node_ip = PodNetwork {
        node_ips: Vec::new(),
        ..pod.clone()
    };
    assert!(matches!(
        IpVlanDriver.setup(&w.node, &no_node_ip).await,
        Err(Error::InvalidSpec(SpecError::MissingNodeIp { .. }))
    ));
    assert!(matches!(
        IpVlanDriver
            .setup(&w.node, &pod.clone().with_mtu(9000))
            .await,
        Err(Error::InvalidSpec(SpecError::MtuAboveEni { .. }))
    ));
    w.kernel.set_ipvlan_supported(false);
    let err = IpVlanDriver.setup(&w.node, &pod).await.unwrap_err();
    assert!(
        err.as_netlink().is_some_and(NetlinkError::is_unsupported),
        "{err}"
    );
}
