//! NetworkPolicy for one endpoint, in Kubernetes' terms, and the trait both dataplanes implement.
//!
//! Semantics (those of `networking.k8s.io/v1` NetworkPolicy, after the control plane has resolved
//! pod and namespace selectors to addresses):
//! - An endpoint that no policy selects for a direction is **not isolated** in that direction:
//!   everything passes ([`EndpointPolicy::ingress`] / [`EndpointPolicy::egress`] is `None`).
//! - Once selected (`Some(rules)`), only what at least one rule allows passes; `Some(vec![])`
//!   denies everything. The rules of every policy selecting the endpoint are simply concatenated.
//! - A rule allows a packet when one of its peers matches the remote address (no peers: any
//!   address) **and** one of its ports matches (no ports: any protocol and port).
//! - A peer is an `ipBlock`: a CIDR minus its `except` blocks.
//! - A port names a protocol and optionally a port or an inclusive range (`port`..=`endPort`).
//! - Replies of an allowed connection always pass, in both directions.
//! - Verdicts are taken on a connection's first packet and kept for its life (as conntrack-based
//!   implementations do); a policy change applies to new connections.

use std::{fmt, net::Ipv4Addr, ops::RangeInclusive, str::FromStr};

use crate::{Error, Protocol, Result};

/// An IPv4 CIDR block. The address is stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The block `addr/prefix_len` (host bits of `addr` are cleared).
    ///
    /// # Errors
    /// [`Error::InvalidCidr`] when `prefix_len > 32`.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self> {
        if prefix_len > 32 {
            return Err(Error::InvalidCidr(format!("{addr}/{prefix_len}")));
        }
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)),
            prefix_len,
        })
    }

    /// The single address `addr/32`.
    #[must_use]
    pub const fn host(addr: Ipv4Addr) -> Self {
        Self {
            addr,
            prefix_len: 32,
        }
    }

    /// `0.0.0.0/0`.
    pub const ANY: Self = Self {
        addr: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
    };

    /// The network address.
    #[must_use]
    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    #[must_use]
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `addr` is inside the block.
    #[must_use]
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == u32::from(self.addr)
    }

    /// Whether `other` lies entirely inside this block.
    #[must_use]
    pub fn covers(&self, other: &Self) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.addr)
    }
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidCidr(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        Self::new(addr, len)
    }
}

/// A peer of a rule: an `ipBlock` (a CIDR minus its `except` blocks).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The block.
    pub cidr: Ipv4Cidr,
    /// Blocks inside `cidr` that do not match.
    pub except: Vec<Ipv4Cidr>,
}

impl Peer {
    /// Every address of `cidr`.
    #[must_use]
    pub fn cidr(cidr: Ipv4Cidr) -> Self {
        Self {
            cidr,
            except: Vec::new(),
        }
    }

    /// One address (a pod a selector resolved to).
    #[must_use]
    pub fn host(addr: Ipv4Addr) -> Self {
        Self::cidr(Ipv4Cidr::host(addr))
    }

    /// The same peer without `block`.
    #[must_use]
    pub fn except(mut self, block: Ipv4Cidr) -> Self {
        self.except.push(block);
        self
    }

    /// Whether `addr` matches: inside the block and outside every exception.
    #[must_use]
    pub fn matches(&self, addr: Ipv4Addr) -> bool {
        self.cidr.contains(addr) && !self.except.iter().any(|e| e.contains(addr))
    }
}

/// A port of a rule: a protocol and optionally a port or a range of ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortMatch {
    /// The protocol.
    pub protocol: Protocol,
    /// `None`: every port of the protocol; else an inclusive range (a single port is `p..=p`).
    pub ports: Option<RangeInclusive<u16>>,
}

impl PortMatch {
    /// One port.
    #[must_use]
    pub fn port(protocol: Protocol, port: u16) -> Self {
        Self {
            protocol,
            ports: Some(port..=port),
        }
    }

    /// A range of ports (`port`..=`endPort`).
    #[must_use]
    pub fn range(protocol: Protocol, ports: RangeInclusive<u16>) -> Self {
        Self {
            protocol,
            ports: Some(ports),
        }
    }

    /// Every port of `protocol`.
    #[must_use]
    pub fn any_port(protocol: Protocol) -> Self {
        Self {
            protocol,
            ports: None,
        }
    }

    /// Whether a packet of `protocol` (IP number) to `port` matches. `port` is `None` for
    /// packets without a port (ICMP, non-first fragments): only "every port" matches those.
    #[must_use]
    pub fn matches(&self, protocol: u8, port: Option<u16>) -> bool {
        self.protocol.number() == protocol
            && match (&self.ports, port) {
                (None, _) => true,
                (Some(range), Some(port)) => range.contains(&port),
                (Some(_), None) => false,
            }
    }
}

/// One ingress or egress rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Peers (`from` / `to`); empty: every address.
    pub peers: Vec<Peer>,
    /// Ports; empty: every protocol and port.
    pub ports: Vec<PortMatch>,
}

impl Rule {
    /// A rule allowing everything.
    #[must_use]
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// A rule for `peers` on `ports`.
    #[must_use]
    pub fn new(
        peers: impl IntoIterator<Item = Peer>,
        ports: impl IntoIterator<Item = PortMatch>,
    ) -> Self {
        Self {
            peers: peers.into_iter().collect(),
            ports: ports.into_iter().collect(),
        }
    }

    /// Whether the rule allows `remote` with `protocol` and `port` (see [`PortMatch::matches`]).
    #[must_use]
    pub fn allows(&self, remote: Ipv4Addr, protocol: u8, port: Option<u16>) -> bool {
        (self.peers.is_empty() || self.peers.iter().any(|p| p.matches(remote)))
            && (self.ports.is_empty() || self.ports.iter().any(|p| p.matches(protocol, port)))
    }
}

/// The policy in force for one endpoint: the rules of every NetworkPolicy selecting it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// `None`: ingress not isolated. `Some(rules)`: only what a rule allows may enter.
    pub ingress: Option<Vec<Rule>>,
    /// `None`: egress not isolated. `Some(rules)`: only what a rule allows may leave.
    pub egress: Option<Vec<Rule>>,
}

impl EndpointPolicy {
    /// No isolation at all (same as no policy).
    #[must_use]
    pub fn allow_all() -> Self {
        Self::default()
    }

    /// Ingress isolated with `rules`; egress untouched.
    #[must_use]
    pub fn ingress(rules: impl IntoIterator<Item = Rule>) -> Self {
        Self {
            ingress: Some(rules.into_iter().collect()),
            egress: None,
        }
    }

    /// Egress isolated with `rules`; ingress untouched.
    #[must_use]
    pub fn egress(rules: impl IntoIterator<Item = Rule>) -> Self {
        Self {
            ingress: None,
            egress: Some(rules.into_iter().collect()),
        }
    }

    /// The same policy with egress isolated by `rules`.
    #[must_use]
    pub fn with_egress(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.egress = Some(rules.into_iter().collect());
        self
    }

    /// Checks the rules the way the Kubernetes API server would.
    ///
    /// # Errors
    /// [`Error::InvalidPolicy`] for an `except` outside its CIDR, a port 0 or an empty range.
    pub fn validate(&self, endpoint: Ipv4Addr) -> Result<()> {
        let invalid = |reason: String| Error::InvalidPolicy { endpoint, reason };
        for rule in self.ingress.iter().chain(&self.egress).flatten() {
            for peer in &rule.peers {
                for block in &peer.except {
                    if !peer.cidr.covers(block) {
                        return Err(invalid(format!(
                            "except {block} is not inside {}",
                            peer.cidr
                        )));
                    }
                }
            }
            for port in &rule.ports {
                if let Some(range) = &port.ports
                    && (*range.start() == 0 || range.start() > range.end())
                {
                    return Err(invalid(format!(
                        "{} port range {}..={} is empty or includes 0",
                        port.protocol,
                        range.start(),
                        range.end()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether traffic in one direction is allowed with Kubernetes semantics (no connection
    /// tracking): `remote` is the peer, `port` the endpoint's port for ingress or the remote's
    /// for egress.
    #[must_use]
    pub fn allows(&self, egress: bool, remote: Ipv4Addr, protocol: u8, port: Option<u16>) -> bool {
        let rules = if egress { &self.egress } else { &self.ingress };
        rules
            .as_ref()
            .is_none_or(|rules| rules.iter().any(|r| r.allows(remote, protocol, port)))
    }
}

/// The policy table: which endpoints (local pod addresses) exist and what policy isolates them.
///
/// Implemented by the kernel dataplane ([`crate::Dataplane`]) and by the reference model
/// ([`crate::ReferenceModel`]). Changing one endpoint touches only its own entries, and a new
/// rule set replaces the old one atomically.
pub trait PolicyTable {
    /// Registers an endpoint (for counters) without isolating it; idempotent.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] when the endpoint table is full, or a failed map update.
    fn add_endpoint(&mut self, addr: Ipv4Addr) -> Result<()>;

    /// Forgets an endpoint, its policy and counters; returns whether it existed.
    ///
    /// # Errors
    /// A failed map update.
    fn remove_endpoint(&mut self, addr: Ipv4Addr) -> Result<bool>;

    /// Sets the endpoint's policy (registering the endpoint if needed).
    ///
    /// # Errors
    /// [`Error::InvalidPolicy`], [`Error::TooManyRuleGroups`], [`Error::CapacityExceeded`], or a
    /// failed map update (the previous policy then stays in force).
    fn set_policy(&mut self, addr: Ipv4Addr, policy: &EndpointPolicy) -> Result<()>;

    /// Removes the endpoint's isolation (keeps the endpoint); returns whether it had a policy.
    ///
    /// # Errors
    /// A failed map update.
    fn clear_policy(&mut self, addr: Ipv4Addr) -> Result<bool>;

    /// The endpoint's policy as last set (`None` for an unknown endpoint, and for the kernel
    /// dataplane also after a restart until the policy is set again: the kernel keeps enforcing
    /// it, but only its compiled form is kept).
    fn policy(&self, addr: Ipv4Addr) -> Option<EndpointPolicy>;

    /// Every endpoint, sorted.
    fn endpoints(&self) -> Vec<Ipv4Addr>;

    /// Sets the node's own addresses (replacing the previous set). Traffic from them to a local
    /// endpoint passes ingress isolation: in Kubernetes a pod cannot block its own node (whose
    /// kubelet probes it). At most 64.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] for more than 64 addresses, or a failed map update.
    fn set_node_addresses(&mut self, addrs: &[Ipv4Addr]) -> Result<()>;

    /// The node's addresses, sorted.
    fn node_addresses(&self) -> Vec<Ipv4Addr>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_containment() {
        let block = cidr("198.18.5.77/16");
        assert_eq!(block.to_string(), "198.18.0.0/16");
        assert!(block.contains(Ipv4Addr::new(198, 18, 200, 1)));
        assert!(!block.contains(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(block.covers(&cidr("198.18.3.0/24")));
        assert!(!cidr("198.18.3.0/24").covers(&block));
        assert!(Ipv4Cidr::ANY.contains(Ipv4Addr::BROADCAST));
        for bad in ["198.18.0.0", "198.18.0.0/33", "x/8", "1.2.3/8"] {
            assert!(
                matches!(bad.parse::<Ipv4Cidr>(), Err(Error::InvalidCidr(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn rule_semantics_follow_kubernetes() {
        let rule = Rule::new(
            [Peer::cidr(cidr("198.18.0.0/16")).except(cidr("198.18.1.0/24"))],
            [PortMatch::range(Protocol::Tcp, 8000..=8100)],
        );
        let tcp = Protocol::Tcp.number();
        assert!(rule.allows(Ipv4Addr::new(198, 18, 2, 1), tcp, Some(8080)));
        assert!(
            !rule.allows(Ipv4Addr::new(198, 18, 1, 1), tcp, Some(8080)),
            "except"
        );
        assert!(
            !rule.allows(Ipv4Addr::new(198, 18, 2, 1), tcp, Some(8101)),
            "port"
        );
        assert!(
            !rule.allows(Ipv4Addr::new(198, 18, 2, 1), 17, Some(8080)),
            "protocol"
        );
        assert!(
            !rule.allows(Ipv4Addr::new(198, 18, 2, 1), tcp, None),
            "no port"
        );
        assert!(Rule::allow_all().allows(Ipv4Addr::new(1, 2, 3, 4), 1, None));

        let policy = EndpointPolicy::ingress([]);
        assert!(!policy.allows(false, Ipv4Addr::new(1, 1, 1, 1), tcp, Some(80)));
        assert!(policy.allows(true, Ipv4Addr::new(1, 1, 1, 1), tcp, Some(80)));
    }

    #[test]
    fn validation_rejects_what_the_api_server_rejects() {
        let ep = Ipv4Addr::new(198, 18, 0, 2);
        let outside = EndpointPolicy::ingress([Rule::new(
            [Peer::cidr(cidr("198.18.0.0/24")).except(cidr("198.18.1.0/24"))],
            [],
        )]);
        assert!(matches!(
            outside.validate(ep),
            Err(Error::InvalidPolicy { .. })
        ));
        let empty_range = EndpointPolicy::egress([Rule::new(
            [],
            [PortMatch::range(Protocol::Udp, RangeInclusive::new(9, 8))],
        )]);
        assert!(matches!(
            empty_range.validate(ep),
            Err(Error::InvalidPolicy { .. })
        ));
        let zero = EndpointPolicy::egress([Rule::new([], [PortMatch::port(Protocol::Udp, 0)])]);
        assert!(zero.validate(ep).is_err());
        assert!(
            EndpointPolicy::ingress([Rule::allow_all()])
                .validate(ep)
                .is_ok()
        );
    }
}
