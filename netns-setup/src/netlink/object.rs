//! Plain descriptions of the kernel objects the drivers manage: links, addresses, routes, rules
//! and neighbours. Our own types, so that `netlink-packet-*` never appears in the public API.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnetwork::IpNetwork;

use crate::netns::Netns;

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;
/// The local routing table.
pub const TABLE_LOCAL: u32 = 255;

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    #[must_use]
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    /// Both families, IPv4 first.
    pub const BOTH: [Self; 2] = [Self::V4, Self::V6];

    /// The default route of this family (`0.0.0.0/0` or `::/0`).
    #[must_use]
    pub fn default_route(self) -> IpNetwork {
        match self {
            Self::V4 => host_net(Ipv4Addr::UNSPECIFIED.into(), 0),
            Self::V6 => host_net(Ipv6Addr::UNSPECIFIED.into(), 0),
        }
    }

    /// The full prefix length (32 or 128).
    #[must_use]
    pub fn max_prefix(self) -> u8 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// `ip/prefix` without validation of `prefix`; callers pass prefixes in range.
pub(crate) fn host_net(ip: IpAddr, prefix: u8) -> IpNetwork {
    let prefix = prefix.min(Family::of(ip).max_prefix());
    IpNetwork::new(ip, prefix).expect("invariant: prefix clamped to the family's maximum")
}

/// `ip/32` or `ip/128`.
#[must_use]
pub fn host_route(ip: IpAddr) -> IpNetwork {
    host_net(ip, Family::of(ip).max_prefix())
}

/// The network of `net` with host bits cleared (`198.18.0.5/24` -> `198.18.0.0/24`).
#[must_use]
pub fn network_of(net: IpNetwork) -> IpNetwork {
    host_net(net.network(), net.prefix())
}

/// An Ethernet hardware address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// From a byte slice of length 6.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }

    /// The raw bytes.
    #[must_use]
    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A MAC address that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected six hex octets like 02:00:00:00:00:01)")]
pub struct MacParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(out))
    }
}

/// Scope of an address or route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Global (`RT_SCOPE_UNIVERSE`).
    #[default]
    Universe,
    /// On this link only (`RT_SCOPE_LINK`).
    Link,
    /// This host only (`RT_SCOPE_HOST`).
    Host,
    /// Any other scope value.
    Other(u8),
}

/// The kind of a link, from `IFLA_INFO_KIND`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// A veth end.
    Veth,
    /// An ipvlan sub-interface.
    IpVlan,
    /// A macvlan sub-interface.
    MacVlan,
    /// A dummy device.
    Dummy,
    /// A bridge.
    Bridge,
    /// Anything else, by kind name.
    Other(String),
}

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index (unique within its namespace).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Link kind; `None` for devices without one (physical NICs, loopback).
    pub kind: Option<LinkKind>,
    /// Hardware address.
    pub mac: Option<MacAddr>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// ARP disabled (`IFF_NOARP`).
    pub noarp: bool,
    /// `IFLA_IFALIAS`.
    pub alias: Option<String>,
    /// `IFLA_LINK`: a veth's peer or an ipvlan's parent, by index (in `parent_netnsid`'s
    /// namespace when that is set, else in this one).
    pub parent: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer or parent lives in another namespace (its id as seen from
    /// this one).
    pub parent_netnsid: Option<i32>,
}

/// IPVLAN modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpVlanMode {
    /// Layer 2: sub-interfaces see broadcasts and answer ARP.
    L2,
    /// Layer 3: the parent routes.
    L3,
}

/// The other end of a veth pair being created.
#[derive(Clone, Debug)]
pub struct VethPeer {
    /// Name of the peer.
    pub name: String,
    /// Namespace to create the peer directly in (`None`: the same as the first end). Creating it
    /// in place avoids moving a device between namespaces afterwards.
    pub netns: Option<Netns>,
    /// MTU of the peer.
    pub mtu: Option<u32>,
    /// Hardware address of the peer (random when `None`).
    pub mac: Option<MacAddr>,
    /// Bring the peer up.
    pub up: bool,
}

/// A link to create.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum NewLink {
    /// A veth pair; `name` is created in the handle's namespace.
    Veth {
        /// Name of this end.
        name: String,
        /// MTU of this end.
        mtu: Option<u32>,
        /// Hardware address of this end (random when `None`).
        mac: Option<MacAddr>,
        /// Bring this end up.
        up: bool,
        /// The other end.
        peer: VethPeer,
    },
    /// An ipvlan sub-interface of `parent` (an index in the handle's namespace).
    IpVlan {
        /// Name of the new link.
        name: String,
        /// Parent link index.
        parent: u32,
        /// Mode.
        mode: IpVlanMode,
        /// Namespace to create it directly in (`None`: the handle's).
        netns: Option<Netns>,
        /// MTU.
        mtu: Option<u32>,
        /// Bring it up.
        up: bool,
        /// Disable ARP on it.
        noarp: bool,
    },
}

impl NewLink {
    /// The name of the link created in (or for) the handle's namespace.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Veth { name, .. } | Self::IpVlan { name, .. } => name,
        }
    }
}

/// Changes to an existing link; `None` fields are left alone.
#[derive(Clone, Debug, Default)]
pub struct LinkChange {
    /// The link's index.
    pub index: u32,
    /// New name (the link must be down, or be moving namespaces in the same request).
    pub name: Option<String>,
    /// New MTU.
    pub mtu: Option<u32>,
    /// Bring up (`true`) or down (`false`).
    pub up: Option<bool>,
    /// Enable (`true`) or disable (`false`) ARP.
    pub arp: Option<bool>,
    /// New hardware address.
    pub mac: Option<MacAddr>,
    /// New alias; an empty string removes it.
    pub alias: Option<String>,
    /// Move the link into this namespace (renaming it to `name` on the way when given).
    pub netns: Option<Netns>,
}

/// An address on a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// The link's index.
    pub index: u32,
    /// Address and prefix length (`198.18.0.5/32`).
    pub address: IpNetwork,
    /// Scope.
    pub scope: Scope,
}

impl Address {
    /// Same link, address and prefix length (scope ignored).
    #[must_use]
    pub fn same(&self, other: &Self) -> bool {
        self.index == other.index && self.address == other.address
    }
}

/// The type of a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RouteKind {
    /// A normal route.
    #[default]
    Unicast,
    /// A local address route (table `local`).
    Local,
    /// Any other type (broadcast, multicast, blackhole, ...).
    Other(u8),
}

/// A route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination network (`0.0.0.0/0` for a default route).
    pub destination: IpNetwork,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output link index.
    pub oif: Option<u32>,
    /// Routing table id.
    pub table: u32,
    /// Scope.
    pub scope: Scope,
    /// Next hop is on the link even without a matching connected route (`onlink`).
    pub onlink: bool,
    /// Route metric (`RTA_PRIORITY`).
    pub metric: Option<u32>,
    /// Type.
    pub kind: RouteKind,
}

impl Route {
    /// A unicast route in `table` to `destination` out of link `oif`, with optional gateway.
    ///
    /// IPv4 gateways are marked `onlink` (no connected route needed). IPv6 gateways are not: the
    /// kernel validates an IPv6 `onlink` next hop against the *main* table, so a global gateway
    /// needs a `/128` link route in the route's own table first, and a link-local one needs
    /// nothing.
    #[must_use]
    pub fn new(destination: IpNetwork, oif: u32, gateway: Option<IpAddr>, table: u32) -> Self {
        Self {
            destination,
            gateway,
            oif: Some(oif),
            table,
            scope: if gateway.is_some() {
                Scope::Universe
            } else {
                Scope::Link
            },
            onlink: matches!(gateway, Some(IpAddr::V4(_))),
            metric: None,
            kind: RouteKind::Unicast,
        }
    }

    /// The address family.
    #[must_use]
    pub fn family(&self) -> Family {
        Family::of(self.destination.ip())
    }

    /// The metric the kernel uses: the given one, else 0 for IPv4 and 1024 for IPv6.
    #[must_use]
    pub fn effective_metric(&self) -> u32 {
        self.metric.unwrap_or(match self.family() {
            Family::V4 => 0,
            Family::V6 => 1024,
        })
    }

    /// The kernel's identity of a route: table, destination and metric.
    #[must_use]
    pub fn same_key(&self, other: &Self) -> bool {
        self.table == other.table
            && self.destination == other.destination
            && self.effective_metric() == other.effective_metric()
            && self.kind == other.kind
    }

    /// Same key and same next hop (gateway and output link).
    #[must_use]
    pub fn matches(&self, other: &Self) -> bool {
        self.same_key(other) && self.gateway == other.gateway && self.oif == other.oif
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.destination.prefix() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.destination)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        write!(f, " table {}", self.table)?;
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// A policy routing rule (`ip rule`), action "lookup table".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Address family.
    pub family: Family,
    /// Priority (lower first).
    pub priority: u32,
    /// `from` selector.
    pub source: Option<IpNetwork>,
    /// `to` selector.
    pub destination: Option<IpNetwork>,
    /// `iif` selector.
    pub iif: Option<String>,
    /// `oif` selector.
    pub oif: Option<String>,
    /// `fwmark` selector (mark, mask).
    pub fwmark: Option<(u32, u32)>,
    /// Table to look up; `None` for rules whose action is not a table lookup.
    pub table: Option<u32>,
}

impl Rule {
    /// `priority: from source lookup table`.
    #[must_use]
    pub fn from_source(priority: u32, source: IpNetwork, table: u32) -> Self {
        Self {
            family: Family::of(source.ip()),
            priority,
            source: Some(source),
            destination: None,
            iif: None,
            oif: None,
            fwmark: None,
            table: Some(table),
        }
    }

    /// `priority: to destination lookup table`.
    #[must_use]
    pub fn to_destination(priority: u32, destination: IpNetwork, table: u32) -> Self {
        Self {
            family: Family::of(destination.ip()),
            priority,
            source: None,
            destination: Some(destination),
            iif: None,
            oif: None,
            fwmark: None,
            table: Some(table),
        }
    }

    /// Same priority and selectors (the table may differ).
    #[must_use]
    pub fn same_selector(&self, other: &Self) -> bool {
        self.family == other.family
            && self.priority == other.priority
            && self.source == other.source
            && self.destination == other.destination
            && self.iif == other.iif
            && self.oif == other.oif
            && self.fwmark == other.fwmark
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.priority)?;
        match self.source {
            Some(src) => write!(f, " from {src}")?,
            None => f.write_str(" from all")?,
        }
        if let Some(dst) = self.destination {
            write!(f, " to {dst}")?;
        }
        if let Some(iif) = &self.iif {
            write!(f, " iif {iif}")?;
        }
        if let Some(oif) = &self.oif {
            write!(f, " oif {oif}")?;
        }
        if let Some((mark, mask)) = self.fwmark {
            write!(f, " fwmark {mark:#x}/{mask:#x}")?;
        }
        if let Some(table) = self.table {
            write!(f, " lookup {table}")?;
        }
        Ok(())
    }
}

/// A neighbour (ARP / NDP) entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Neighbour {
    /// Link index.
    pub index: u32,
    /// The neighbour's IP.
    pub ip: IpAddr,
    /// Its hardware address, when resolved.
    pub mac: Option<MacAddr>,
    /// Permanent (static) entry.
    pub permanent: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_errors() {
        let mac: MacAddr = "ee:cb:00:0a:FF:01".parse().unwrap();
        assert_eq!(mac.to_string(), "ee:cb:00:0a:ff:01");
        assert_eq!(MacAddr::from_slice(&mac.octets()), Some(mac));
        for bad in [
            "",
            "ee:cb:00:0a:ff",
            "ee:cb:00:0a:ff:01:02",
            "eecb000aff01",
            "zz:cb:00:0a:ff:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn route_identity() {
        let dst: IpNetwork = "198.18.0.5/32".parse().unwrap();
        let a = Route::new(dst, 7, None, TABLE_MAIN);
        let v6 = Route::new("2001:2::5/128".parse().unwrap(), 7, None, TABLE_MAIN);
        assert!(v6.same_key(&Route {
            metric: Some(1024),
            ..v6
        }));
        assert!(!v6.same_key(&Route {
            metric: Some(0),
            ..v6
        }));
        let mut b = a;
        b.oif = Some(8);
        assert!(a.same_key(&b) && !a.matches(&b));
        assert_eq!(a.scope, Scope::Link);
        assert_eq!(a.to_string(), "198.18.0.5/32 dev #7 table 254");
        let gw = Route::new(
            Family::V4.default_route(),
            3,
            Some("169.254.1.1".parse().unwrap()),
            1003,
        );
        assert_eq!(
            gw.to_string(),
            "default via 169.254.1.1 dev #3 table 1003 onlink"
        );
        assert_eq!(
            network_of("198.18.0.5/24".parse().unwrap()).to_string(),
            "198.18.0.0/24"
        );
        assert_eq!(host_route("2001:2::5".parse().unwrap()).prefix(), 128);
    }

    #[test]
    fn rule_selectors() {
        let a = Rule::from_source(2048, "198.18.0.5/32".parse().unwrap(), 1003);
        let mut b = a.clone();
        b.table = Some(1004);
        assert!(a.same_selector(&b) && a != b);
        assert_eq!(a.to_string(), "2048: from 198.18.0.5/32 lookup 1003");
        let to = Rule::to_destination(512, "2001:2::5/128".parse().unwrap(), TABLE_MAIN);
        assert_eq!(to.family, Family::V6);
        assert_eq!(to.to_string(), "512: from all to 2001:2::5/128 lookup 254");
    }
}
