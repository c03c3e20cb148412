//! A test cluster: a "vpc" namespace (a bridge holding the vSwitch gateway), a node namespace with
//! a primary interface and ENI stand-ins (veths whose other end is on the VPC bridge), and pod
//! namespaces. Addresses come from `198.18.0.0/15` and `2001:2::/48` (benchmarking ranges).

#![allow(
    dead_code,
    reason = "each test target uses a different part of the helpers"
)]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use cnikit_netns_setup::{EniRef, Netns, PodNetwork, netlink::MacAddr, sysctl};
use cnikit_test_support::{
    netns::{Role, TestNetns},
    state::NetState,
    traffic::{UdpSink, send_udp},
};

pub(crate) const GW4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub(crate) const GW6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub(crate) const NODE4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub(crate) const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x10);
/// A "Service" address: local on the node, standing in for what kube-proxy would DNAT.
pub(crate) const SERVICE4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
pub(crate) const SERVICE_CIDR4: &str = "198.19.0.0/20";
pub(crate) const SERVICE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0xff, 0, 0, 0, 0x10);
pub(crate) const SERVICE_CIDR6: &str = "2001:2:0:ff::/64";
/// Node-local DNS.
pub(crate) const DNS4: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);

pub(crate) fn pod4(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 20 + n)
}

pub(crate) fn pod6(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x20 + u16::from(n))
}

/// Prints a line on the real stderr, past the test harness's capture (the VM log keeps it).
macro_rules! report_time {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ignored = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use report_time;

/// A VPC, a node, and ENIs `eth1..` in the node.
pub(crate) struct Cluster {
    pub(crate) vpc: TestNetns,
    pub(crate) node: TestNetns,
    pub(crate) enis: Vec<String>,
    /// The VPC's interface holding the gateway (`br0`, or `e1` when direct).
    pub(crate) vpc_link: &'static str,
}

#[allow(clippy::unused_self, reason = "helpers read as methods of the cluster")]
impl Cluster {
    /// `enis` ENI stand-ins on the VPC bridge, forwarding on in the node and the VPC.
    pub(crate) fn new(enis: usize) -> Self {
        Self::build(enis, true)
    }

    /// One ENI stand-in whose VPC end holds the gateway itself: no bridge (the VM loads only the
    /// kernel modules its tests name, and the bridge is not one of them).
    pub(crate) fn direct() -> Self {
        Self::build(1, false)
    }

    fn build(enis: usize, bridge: bool) -> Self {
        let vpc = TestNetns::create(Role::Vpc).unwrap();
        let node = TestNetns::create(Role::Node).unwrap();
        // A real node's and VPC's links have finished IPv6 duplicate address detection long ago;
        // freshly made test links would hold back neighbour discovery for a second or two.
        for ns in [&vpc, &node] {
            let netns = Netns::from_path(ns.path()).unwrap();
            for key in ["all", "default"] {
                sysctl::set(&netns, &format!("net/ipv6/conf/{key}/accept_dad"), "0").unwrap();
            }
        }
        // The VPC side: a bridge holding the gateway, or (direct) the single ENI's peer.
        let gateway_link = if bridge { "br0" } else { "e1" };
        if bridge {
            vpc.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
            vpc.ip(&["link", "set", "br0", "up"]).unwrap();
        }
        // The node's primary interface (with the node IPs as /32 and /128 when direct).
        node.veth_to(&vpc, "eth0", "n0").unwrap();
        let (len4, len6) = if bridge { (24, 64) } else { (32, 128) };
        node.ip(&["addr", "add", &format!("{NODE4}/{len4}"), "dev", "eth0"])
            .unwrap();
        node.ip(&[
            "addr",
            "add",
            &format!("{NODE6}/{len6}"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
        if bridge {
            vpc.ip(&["link", "set", "n0", "master", "br0"]).unwrap();
            node.ip(&["route", "add", "default", "via", &GW4.to_string()])
                .unwrap();
        }
        // Service and node-local DNS addresses served by the node's stack.
        for addr in [
            format!("{SERVICE4}/32"),
            format!("{DNS4}/32"),
            format!("{SERVICE6}/128"),
        ] {
            node.ip(&["addr", "add", &addr, "dev", "lo"]).unwrap();
        }
        let mut names = Vec::new();
        for i in 1..=enis {
            let name = format!("eth{i}");
            let port = format!("e{i}");
            node.veth_to(&vpc, &name, &port).unwrap();
            if bridge {
                vpc.ip(&["link", "set", &port, "master", "br0"]).unwrap();
            }
            names.push(name);
        }
        vpc.ip(&["addr", "add", &format!("{GW4}/24"), "dev", gateway_link])
            .unwrap();
        vpc.ip(&[
            "addr",
            "add",
            &format!("{GW6}/64"),
            "dev",
            gateway_link,
            "nodad",
        ])
        .unwrap();
        for ns in [&vpc, &node] {
            sysctl::enable_forwarding(&Netns::from_path(ns.path()).unwrap()).unwrap();
        }
        Self {
            vpc,
            node,
            enis: names,
            vpc_link: gateway_link,
        }
    }

    pub(crate) fn node_netns(&self) -> Netns {
        Netns::from_path(self.node.path()).unwrap()
    }

    pub(crate) fn pod(&self) -> TestNetns {
        TestNetns::create(Role::Pod).unwrap()
    }

    pub(crate) fn mac(ns: &TestNetns, link: &str) -> MacAddr {
        let out = ns.ip(&["-o", "link", "show", link]).unwrap();
        let mut words = out.split_whitespace();
        words.find(|w| *w == "link/ether").unwrap();
        words.next().unwrap().parse().unwrap()
    }

    /// The VPC learns that `ip` lives behind `eni` (its SDN knows which ENI holds which IP).
    pub(crate) fn vpc_learns(&self, ip: IpAddr, eni: &str) {
        let mac = Self::mac(&self.node, eni).to_string();
        self.vpc
            .ip(&[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &mac,
                "dev",
                self.vpc_link,
                "nud",
                "permanent",
            ])
            .unwrap();
    }

    /// A dual-stack pod spec on `eni`, with the Service CIDRs, node-local DNS and node IPs.
    pub(crate) fn spec(&self, pod: &TestNetns, id: &str, eni: &str, n: u8) -> PodNetwork {
        PodNetwork::new(
            id,
            Netns::from_path(pod.path()).unwrap(),
            EniRef::Name(eni.to_owned()),
        )
        .with_ip(format!("{}/24", pod4(n)).parse().unwrap(), IpAddr::V4(GW4))
        .with_ip(format!("{}/64", pod6(n)).parse().unwrap(), IpAddr::V6(GW6))
        .with_service_cidr(SERVICE_CIDR4.parse().unwrap())
        .with_service_cidr(SERVICE_CIDR6.parse().unwrap())
        .with_host_stack_cidr(format!("{DNS4}/32").parse().unwrap())
        .with_node_ip(IpAddr::V4(NODE4))
        .with_node_ip(IpAddr::V6(NODE6))
    }

    /// Packets counted by the VPC bridge port of `eni` (`eth<i>` -> `e<i>`).
    pub(crate) fn vpc_port_rx(&self, eni: &str) -> u64 {
        let port = eni.replacen("eth", "e", 1);
        let out = self.vpc.ip(&["-s", "-o", "link", "show", &port]).unwrap();
        // "... RX: bytes packets errors ... \    <bytes> <packets> ..."
        let words: Vec<&str> = out.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "RX:").unwrap();
        let values: Vec<&str> = words[at..]
            .iter()
            .skip_while(|w| **w != "\\")
            .skip(1)
            .copied()
            .collect();
        values[1].parse().unwrap()
    }
}

/// The state of `ns` once the kernel's own follow-ups of a change have happened: duplicate
/// address detection finishing, link-local routes appearing. Captures until two in a row,
/// 100 ms apart, agree (at most about 5 s).
pub(crate) fn stable_state(ns: &TestNetns) -> NetState {
    let mut last = NetState::capture(ns).unwrap();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let next = NetState::capture(ns).unwrap();
        let settled = next == last
            && ns
                .ip(&["-6", "addr", "show", "tentative"])
                .unwrap()
                .trim()
                .is_empty();
        last = next;
        if settled {
            break;
        }
    }
    last
}

/// Waits for [`stable_state`].
pub(crate) fn settle(ns: &TestNetns) {
    stable_state(ns);
}

/// Sends UDP from `src` in `from` to `dst` in `to` and returns how many of 3 arrived.
pub(crate) fn delivered(from: &TestNetns, src: IpAddr, to: &TestNetns, dst: IpAddr) -> usize {
    const PORT: u16 = 7411;
    let sink = UdpSink::bind_in(to, SocketAddr::new(dst, PORT))
        .unwrap_or_else(|e| panic!("bind {dst} in {}: {e}", to.name()));
    if let Err(e) = send_udp(from, SocketAddr::new(src, 0), SocketAddr::new(dst, PORT), 3) {
        panic!("send {src} -> {dst} from {}: {e}", from.name());
    }
    sink.receive(3, Duration::from_secs(2)).unwrap()
}

/// Asserts both directions between two endpoints carry traffic. A direction gets three tries:
/// the first packets can wait on neighbour discovery, which a freshly moved interface can only
/// start once its own link-local address has passed duplicate address detection.
pub(crate) fn assert_two_way(what: &str, a: (&TestNetns, IpAddr), b: (&TestNetns, IpAddr)) {
    for (from, to) in [(a, b), (b, a)] {
        let mut counts = Vec::new();
        while counts.len() < 3 && counts.last() != Some(&3) {
            counts.push(delivered(from.0, from.1, to.0, to.1));
        }
        assert_eq!(
            counts.last(),
            Some(&3),
            "{what}: {} -> {} delivered {counts:?} of 3 per try",
            from.1,
            to.1
        );
    }
}
