//! A node namespace with pod namespaces attached the way a routed CNI wires them: one veth per
//! pod, the pod's address as a /32 on its `eth0`, a default route through the link-local gateway
//! 169.254.1.1 (held by every node-side veth), and a /32 route per pod on the node, which
//! forwards between them.
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use cnikit_test_support::pods::PodNetwork;
//!
//! let mut net = PodNetwork::new().unwrap();
//! let client = net.add_pod(Ipv4Addr::new(198, 18, 0, 2)).unwrap();
//! let server = net.add_pod(Ipv4Addr::new(198, 18, 1, 10)).unwrap();
//! // The node-side interface of the client is net.pod(client).host_if.
//! ```

use std::{io, net::Ipv4Addr};

use crate::netns::{Role, TestNetns};

/// The pod-side link-local gateway address (held by every node-side veth).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// One pod of a [`PodNetwork`].
#[derive(Debug)]
pub struct Pod {
    /// The pod's namespace.
    pub netns: TestNetns,
    /// The pod's address.
    pub addr: Ipv4Addr,
    /// The node-side end of the pod's veth (in the node namespace).
    pub host_if: String,
    /// The pod-side end (in the pod namespace).
    pub pod_if: String,
}

/// A node namespace and its pods; everything is removed on drop.
#[derive(Debug)]
pub struct PodNetwork {
    pods: Vec<Pod>,
    node: TestNetns,
}

impl PodNetwork {
    /// A node namespace that forwards IPv4 (reverse-path filtering off).
    ///
    /// # Errors
    /// When the namespace cannot be created or configured.
    pub fn new() -> io::Result<Self> {
        let node = TestNetns::create(Role::Node)?;
        node.sysctl_net("ipv4.ip_forward", "1")?;
        node.sysctl_net("ipv4.conf.all.rp_filter", "0")?;
        node.sysctl_net("ipv4.conf.default.rp_filter", "0")?;
        Ok(Self {
            pods: Vec::new(),
            node,
        })
    }

    /// Adds a pod with `addr`; returns its index.
    ///
    /// # Errors
    /// When a namespace, link, address or route cannot be made.
    pub fn add_pod(&mut self, addr: Ipv4Addr) -> io::Result<usize> {
        let index = self.pods.len();
        let netns = TestNetns::create(Role::Pod)?;
        let host_if = format!("vpod{index}");
        let pod_if = "eth0".to_owned();
        self.node.veth_to(&netns, &host_if, &pod_if)?;
        let gateway = format!("{GATEWAY}/32");
        self.node.ip(&["addr", "add", &gateway, "dev", &host_if])?;
        self.node.ip(&[
            "route",
            "add",
            &format!("{addr}/32"),
            "dev",
            &host_if,
            "src",
            &GATEWAY.to_string(),
        ])?;
        netns.ip(&["addr", "add", &format!("{addr}/32"), "dev", &pod_if])?;
        netns.ip(&["route", "add", &gateway, "dev", &pod_if, "scope", "link"])?;
        netns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &GATEWAY.to_string(),
            "dev",
            &pod_if,
            "src",
            &addr.to_string(),
        ])?;
        self.pods.push(Pod {
            netns,
            addr,
            host_if,
            pod_if,
        });
        Ok(index)
    }

    /// The node namespace.
    #[must_use]
    pub fn node(&self) -> &TestNetns {
        &self.node
    }

    /// Pod number `index` (in the order added).
    ///
    /// # Panics
    /// When there is no such pod.
    #[must_use]
    pub fn pod(&self, index: usize) -> &Pod {
        &self.pods[index]
    }

    /// Every pod.
    #[must_use]
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }
}
