//! [`NetlinkHandle`] over rtnetlink 0.24.
//!
//! The socket is created on a short-lived thread that has entered the target namespace (a netlink
//! socket stays bound to the namespace it was created in), and its connection task runs on the
//! caller's tokio runtime. No runtime thread ever calls `setns`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    sync::Arc,
};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use ipnetwork::IpNetwork;
use nix::sched::{CloneFlags, setns};
use rtnetlink::{
    AddressMessageBuilder, LinkIpVlan, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::{
            AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
        },
        link::{
            InfoData, InfoKind, InfoVeth, IpVlanMode as NlIpVlanMode, LinkAttribute, LinkFlags,
            LinkInfo, LinkMessage,
        },
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        route::{
            RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteScope,
            RouteType, RouteVia,
        },
        rule::{RuleAction, RuleAttribute, RuleMessage},
    },
};

use super::{
    Address, Connector, Family, Handle, IpVlanMode, Link, LinkChange, LinkKind, MacAddr, Neighbour,
    NetlinkHandle, NewLink, NlResult, Route, RouteKind, Rule, Scope, host_net,
};
use crate::{Error, Result, error::NetlinkError, netns::Netns};

/// A rtnetlink connection bound to one namespace.
///
/// The handle may be shared by concurrent tasks. Requests run concurrently; dumps are taken one
/// at a time, because the kernel refuses a second dump on a socket while one is in progress
/// (`EBUSY`).
#[derive(Clone, Debug)]
pub struct RtNetlink {
    netns: Netns,
    handle: rtnetlink::Handle,
    dumps: Arc<tokio::sync::Mutex<()>>,
}

impl RtNetlink {
    /// Opens a netlink socket inside `netns`; its connection runs on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::Runtime`] outside a tokio runtime; [`Error::Netns`] when the namespace cannot be
    /// entered or the socket cannot be created.
    pub fn connect(netns: &Netns) -> Result<Self> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| Error::Runtime(e.to_string()))?;
        let fd = netns.fd().ok_or_else(|| {
            Error::netns(
                netns.to_string(),
                std::io::Error::new(std::io::ErrorKind::Unsupported, "not a kernel namespace"),
            )
        })?;
        let opened = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<_> {
                    setns(fd, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::netns(format!("entering {netns}"), e))?;
                    // netlink-sys registers the socket with the reactor of the entered runtime.
                    let _entered = runtime.enter();
                    let (connection, handle, _messages) =
                        rtnetlink::new_connection_with_strict_check()
                            .map_err(|e| Error::netns(format!("netlink socket in {netns}"), e))?;
                    Ok((connection, handle))
                })
                .join()
        });
        let (connection, handle) = opened.map_err(|_| {
            Error::netns(netns.to_string(), std::io::Error::other("thread panicked"))
        })??;
        runtime.spawn(connection);
        Ok(Self {
            netns: netns.clone(),
            handle,
            dumps: Arc::default(),
        })
    }

    /// Opens a netlink socket inside `netns` whose connection runs on a thread of its own
    /// (with a single-threaded runtime), not on the caller's runtime; the thread ends when
    /// the last clone of the handle is dropped.
    ///
    /// The kernel serves a netlink request inside the sending thread's `sendmsg`, and some
    /// requests take long there: deleting a veth waits for an RCU barrier (10–20 ms). On the
    /// caller's runtime that would stall a worker thread and every other request on the
    /// socket; here it stalls this socket's thread only. Right for a long-lived agent that
    /// tears down many pods at once (use several such sockets). Needs no runtime to call.
    ///
    /// # Errors
    /// [`Error::Netns`] when the namespace cannot be entered or the socket or its runtime
    /// cannot be created.
    pub fn connect_on_own_thread(netns: &Netns) -> Result<Self> {
        let fd = netns
            .fd()
            .ok_or_else(|| {
                Error::netns(
                    netns.to_string(),
                    std::io::Error::new(std::io::ErrorKind::Unsupported, "not a kernel namespace"),
                )
            })?
            .try_clone_to_owned()
            .map_err(|e| Error::netns(netns.to_string(), e))?;
        let label = netns.to_string();
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("cnikit-netlink".to_owned())
            .spawn(move || {
                let opened = (|| -> Result<_> {
                    setns(&fd, CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::netns(format!("entering {label}"), e))?;
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .build()
                        .map_err(|e| Error::netns(format!("netlink runtime in {label}"), e))?;
                    let (connection, handle, _messages) = {
                        let _entered = runtime.enter();
                        rtnetlink::new_connection_with_strict_check()
                            .map_err(|e| Error::netns(format!("netlink socket in {label}"), e))?
                    };
                    Ok((runtime, connection, handle))
                })();
                match opened {
                    Ok((runtime, connection, handle)) => {
                        if opened_tx.send(Ok(handle)).is_ok() {
                            runtime.block_on(connection);
                        }
                    }
                    Err(e) => {
                        opened_tx.send(Err(e)).ok();
                    }
                }
            })
            .map_err(|e| Error::netns(netns.to_string(), e))?;
        let handle = opened_rx.recv().map_err(|_| {
            Error::netns(
                netns.to_string(),
                std::io::Error::other("netlink thread ended"),
            )
        })??;
        Ok(Self {
            netns: netns.clone(),
            handle,
            dumps: Arc::default(),
        })
    }
}

/// Opens [`RtNetlink`] handles.
#[derive(Clone, Copy, Debug, Default)]
pub struct RtConnector;

impl Connector for RtConnector {
    fn connect(&self, netns: &Netns) -> Result<Handle> {
        Ok(Arc::new(RtNetlink::connect(netns)?))
    }
}

fn nl_err(operation: impl FnOnce() -> String, e: rtnetlink::Error) -> NetlinkError {
    match e {
        rtnetlink::Error::NetlinkError(msg) => match msg.code {
            Some(code) => NetlinkError::from_errno(operation(), code.get().saturating_abs()),
            None => NetlinkError::new(operation(), None, "unexpected acknowledgement"),
        },
        other => NetlinkError::new(operation(), None, other.to_string()),
    }
}

fn not_found_is_none<T>(result: NlResult<Option<T>>) -> NlResult<Option<T>> {
    match result {
        Err(e) if e.is_not_found() => Ok(None),
        other => other,
    }
}

// ---- conversions ---------------------------------------------------------------------------

fn parse_link(msg: LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        noarp: msg.header.flags.contains(LinkFlags::Noarp),
        alias: None,
        parent: None,
        parent_netnsid: None,
    };
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Address(mac) => link.mac = MacAddr::from_slice(&mac),
            LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
            LinkAttribute::Link(index) => link.parent = Some(index),
            LinkAttribute::LinkNetNsId(id) => link.parent_netnsid = Some(id),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(match kind {
                            InfoKind::Veth => LinkKind::Veth,
                            InfoKind::IpVlan => LinkKind::IpVlan,
                            InfoKind::MacVlan => LinkKind::MacVlan,
                            InfoKind::Dummy => LinkKind::Dummy,
                            InfoKind::Bridge => LinkKind::Bridge,
                            other => LinkKind::Other(other.to_string()),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn address_scope(scope: Scope) -> AddressScope {
    match scope {
        Scope::Universe => AddressScope::Universe,
        Scope::Link => AddressScope::Link,
        Scope::Host => AddressScope::Host,
        Scope::Other(v) => AddressScope::Other(v),
    }
}

fn scope_of_address(scope: AddressScope) -> Scope {
    match scope {
        AddressScope::Universe => Scope::Universe,
        AddressScope::Link => Scope::Link,
        AddressScope::Host => Scope::Host,
        other => Scope::Other(u8::from(other)),
    }
}

fn route_scope(scope: Scope) -> RouteScope {
    match scope {
        Scope::Universe => RouteScope::Universe,
        Scope::Link => RouteScope::Link,
        Scope::Host => RouteScope::Host,
        Scope::Other(v) => RouteScope::Other(v),
    }
}

fn scope_of_route(scope: RouteScope) -> Scope {
    match scope {
        RouteScope::Universe => Scope::Universe,
        RouteScope::Link => Scope::Link,
        RouteScope::Host => Scope::Host,
        other => Scope::Other(u8::from(other)),
    }
}

fn family_of(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn address_message(address: &Address) -> AddressMessage {
    let mut msg = match address.address {
        IpNetwork::V4(net) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(address.index)
            .address(net.ip(), net.prefix())
            .build(),
        IpNetwork::V6(net) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(address.index)
            .address(net.ip(), net.prefix())
            .build(),
    };
    msg.header.scope = address_scope(address.scope);
    msg
}

fn parse_address(msg: AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut addr = None;
    for attr in msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => addr = Some(ip),
            _ => {}
        }
    }
    let ip = local.or(addr)?;
    Some(Address {
        index: msg.header.index,
        address: IpNetwork::new(ip, msg.header.prefix_len).ok()?,
        scope: scope_of_address(msg.header.scope),
    })
}

fn route_kind(kind: RouteKind) -> RouteType {
    match kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Local => RouteType::Local,
        RouteKind::Other(v) => RouteType::Other(v),
    }
}

fn route_message(route: &Route) -> RouteMessage {
    let mut msg = match route.destination {
        IpNetwork::V4(dst) => {
            let mut b =
                RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst.ip(), dst.prefix());
            if let Some(IpAddr::V4(gw)) = route.gateway {
                b = b.gateway(gw);
            }
            b.table_id(route.table).build()
        }
        IpNetwork::V6(dst) => {
            let mut b =
                RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(dst.ip(), dst.prefix());
            if let Some(IpAddr::V6(gw)) = route.gateway {
                b = b.gateway(gw);
            }
            b.table_id(route.table).build()
        }
    };
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = route.metric {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    if route.onlink {
        msg.header.flags.insert(RouteFlags::Onlink);
    }
    msg.header.scope = route_scope(route.scope);
    msg.header.kind = route_kind(route.kind);
    msg
}

fn route_address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn parse_route(msg: &RouteMessage) -> Option<Route> {
    let family = match msg.header.address_family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let mut destination = None;
    let mut gateway = None;
    let mut oif = None;
    let mut metric = None;
    let mut table = u32::from(msg.header.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(addr) => destination = route_address(addr),
            RouteAttribute::Gateway(addr) => gateway = route_address(addr),
            RouteAttribute::Via(RouteVia::Inet6(v6)) => gateway = Some(IpAddr::V6(*v6)),
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let unspecified = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    Some(Route {
        destination: IpNetwork::new(
            destination.unwrap_or(unspecified),
            msg.header.destination_prefix_length,
        )
        .ok()?,
        gateway,
        oif,
        table,
        scope: scope_of_route(msg.header.scope),
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
        metric,
        kind: match msg.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local => RouteKind::Local,
            other => RouteKind::Other(u8::from(other)),
        },
    })
}

fn rule_message(rule: &Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = family_of(rule.family);
    msg.header.action = RuleAction::ToTable;
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    if let Some(src) = rule.source {
        msg.header.src_len = src.prefix();
        msg.attributes.push(RuleAttribute::Source(src.ip()));
    }
    if let Some(dst) = rule.destination {
        msg.header.dst_len = dst.prefix();
        msg.attributes.push(RuleAttribute::Destination(dst.ip()));
    }
    if let Some(iif) = &rule.iif {
        msg.attributes.push(RuleAttribute::Iifname(iif.clone()));
    }
    if let Some(oif) = &rule.oif {
        msg.attributes.push(RuleAttribute::Oifname(oif.clone()));
    }
    if let Some((mark, mask)) = rule.fwmark {
        msg.attributes.push(RuleAttribute::FwMark(mark));
        msg.attributes.push(RuleAttribute::FwMask(mask));
    }
    match rule.table {
        Some(table) => {
            msg.header.table = u8::try_from(table)
                .ok()
                .filter(|t| *t != 0)
                .unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
            msg.attributes.push(RuleAttribute::Table(table));
        }
        None => msg.header.action = RuleAction::Unspec,
    }
    msg
}

fn parse_rule(msg: RuleMessage) -> Option<Rule> {
    let family = match msg.header.family {
        AddressFamily::Inet => Family::V4,
        AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let mut rule = Rule {
        family,
        priority: 0,
        source: None,
        destination: None,
        iif: None,
        oif: None,
        fwmark: None,
        table: None,
    };
    let mut table = u32::from(msg.header.table);
    let mut mark = None;
    let mut mask = u32::MAX;
    for attr in msg.attributes {
        match attr {
            RuleAttribute::Priority(p) => rule.priority = p,
            RuleAttribute::Source(ip) => rule.source = Some(host_net(ip, msg.header.src_len)),
            RuleAttribute::Destination(ip) => {
                rule.destination = Some(host_net(ip, msg.header.dst_len));
            }
            RuleAttribute::Iifname(name) => rule.iif = Some(name),
            RuleAttribute::Oifname(name) => rule.oif = Some(name),
            RuleAttribute::FwMark(m) => mark = Some(m),
            RuleAttribute::FwMask(m) => mask = m,
            RuleAttribute::Table(t) => table = t,
            _ => {}
        }
    }
    rule.fwmark = mark.map(|m| (m, mask));
    if msg.header.action == RuleAction::ToTable {
        rule.table = Some(table);
    }
    Some(rule)
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

fn parse_neighbour(msg: NeighbourMessage) -> Option<Neighbour> {
    let mut ip = None;
    let mut mac = None;
    for attr in msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                ip = Some(IpAddr::V4(v4));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                ip = Some(IpAddr::V6(v6));
            }
            NeighbourAttribute::LinkLayerAddress(lla) => mac = MacAddr::from_slice(&lla),
            _ => {}
        }
    }
    Some(Neighbour {
        index: msg.header.ifindex,
        ip: ip?,
        mac,
        permanent: msg.header.state == NeighbourState::Permanent,
    })
}

// ---- the handle ----------------------------------------------------------------------------

#[async_trait]
impl NetlinkHandle for RtNetlink {
    fn netns(&self) -> &Netns {
        &self.netns
    }

    async fn links(&self) -> NlResult<Vec<Link>> {
        let _dump = self.dumps.lock().await;
        let mut stream = self.handle.link().get().execute();
        let mut links = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| nl_err(|| "dump links".to_owned(), e))?
        {
            links.push(parse_link(msg));
        }
        Ok(links)
    }

    async fn link_by_name(&self, name: &str) -> NlResult<Option<Link>> {
        let mut stream = self.handle.link().get().match_name(name).execute();
        not_found_is_none(
            stream
                .try_next()
                .await
                .map(|m| m.map(parse_link))
                .map_err(|e| nl_err(|| format!("get link {name}"), e)),
        )
    }

    async fn link_by_index(&self, index: u32) -> NlResult<Option<Link>> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        not_found_is_none(
            stream
                .try_next()
                .await
                .map(|m| m.map(parse_link))
                .map_err(|e| nl_err(|| format!("get link #{index}"), e)),
        )
    }

    async fn add_link(&self, link: &NewLink) -> NlResult<()> {
        let msg = match link {
            NewLink::Veth {
                name,
                mtu,
                mac,
                up,
                peer,
            } => {
                let mut p = LinkUnspec::new_with_name(&peer.name);
                if let Some(fd) = peer.netns.as_ref().and_then(Netns::fd) {
                    p = p.setns_by_fd(fd.as_raw_fd());
                }
                if let Some(m) = peer.mtu {
                    p = p.mtu(m);
                }
                if let Some(m) = peer.mac {
                    p = p.address(m.0.to_vec());
                }
                if peer.up {
                    p = p.up();
                }
                let mut b = LinkVeth::new(name, &peer.name)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())));
                if let Some(m) = mtu {
                    b = b.mtu(*m);
                }
                if let Some(m) = mac {
                    b = b.address(m.0.to_vec());
                }
                if *up {
                    b = b.up();
                }
                b.build()
            }
            NewLink::IpVlan {
                name,
                parent,
                mode,
                netns,
                mtu,
                up,
                noarp,
            } => {
                let mode = match mode {
                    IpVlanMode::L2 => NlIpVlanMode::L2,
                    IpVlanMode::L3 => NlIpVlanMode::L3,
                };
                let mut b = LinkIpVlan::new(name, *parent, mode);
                if let Some(fd) = netns.as_ref().and_then(Netns::fd) {
                    b = b.setns_by_fd(fd.as_raw_fd());
                }
                if let Some(m) = mtu {
                    b = b.mtu(*m);
                }
                if *noarp {
                    b = b.arp(false);
                }
                if *up {
                    b = b.up();
                }
                b.build()
            }
        };
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err(|| format!("add link {}", link.name()), e))
    }

    async fn set_link(&self, change: &LinkChange) -> NlResult<()> {
        let mut b = LinkUnspec::new_with_index(change.index);
        if let Some(fd) = change.netns.as_ref().and_then(Netns::fd) {
            b = b.setns_by_fd(fd.as_raw_fd());
        }
        if let Some(name) = &change.name {
            b = b.name(name.clone());
        }
        if let Some(mtu) = change.mtu {
            b = b.mtu(mtu);
        }
        if let Some(mac) = change.mac {
            b = b.address(mac.0.to_vec());
        }
        if let Some(arp) = change.arp {
            b = b.arp(arp);
        }
        if let Some(alias) = &change.alias {
            b = b.alias(alias.clone());
        }
        match change.up {
            Some(true) => b = b.up(),
            Some(false) => b = b.down(),
            None => {}
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(|e| nl_err(|| format!("set link #{}", change.index), e))
    }

    async fn del_link(&self, index: u32) -> NlResult<()> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| nl_err(|| format!("delete link #{index}"), e))
    }

    async fn addresses(&self, index: Option<u32>) -> NlResult<Vec<Address>> {
        let _dump = self.dumps.lock().await;
        let mut req = self.handle.address().get();
        if let Some(index) = index {
            req.message_mut().header.index = index;
            req = req.set_link_index_filter(index);
        }
        let mut stream = req.execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| nl_err(|| "dump addresses".to_owned(), e))?
        {
            out.extend(parse_address(msg));
        }
        Ok(out)
    }

    async fn add_address(&self, address: &Address) -> NlResult<()> {
        let mut req = self.handle.address().add(
            address.index,
            address.address.ip(),
            address.address.prefix(),
        );
        let msg = req.message_mut();
        *msg = address_message(address);
        if address.address.is_ipv6() {
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute().await.map_err(|e| {
            nl_err(
                || format!("add address {} on #{}", address.address, address.index),
                e,
            )
        })
    }

    async fn del_address(&self, address: &Address) -> NlResult<()> {
        self.handle
            .address()
            .del(address_message(address))
            .execute()
            .await
            .map_err(|e| {
                nl_err(
                    || format!("delete address {} on #{}", address.address, address.index),
                    e,
                )
            })
    }

    async fn routes(&self, family: Family, table: Option<u32>) -> NlResult<Vec<Route>> {
        let _dump = self.dumps.lock().await;
        // A clean header: under strict checking, non-zero protocol/type/scope would filter.
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(family);
        if let Some(table) = table {
            msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
            msg.attributes.push(RouteAttribute::Table(table));
        }
        let mut stream = self.handle.route().get(msg).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| nl_err(|| format!("dump {family} routes"), e))?
        {
            if let Some(route) = parse_route(&msg)
                && table.is_none_or(|t| t == route.table)
            {
                out.push(route);
            }
        }
        Ok(out)
    }

    async fn add_route(&self, route: &Route, replace: bool) -> NlResult<()> {
        let mut req = self.handle.route().add(route_message(route));
        if replace {
            req = req.replace();
        }
        req.execute()
            .await
            .map_err(|e| nl_err(|| format!("add route {route}"), e))
    }

    async fn del_route(&self, route: &Route) -> NlResult<()> {
        self.handle
            .route()
            .del(route_message(route))
            .execute()
            .await
            .map_err(|e| nl_err(|| format!("delete route {route}"), e))
    }

    async fn rules(&self, family: Family) -> NlResult<Vec<Rule>> {
        let _dump = self.dumps.lock().await;
        let version = match family {
            Family::V4 => rtnetlink::IpVersion::V4,
            Family::V6 => rtnetlink::IpVersion::V6,
        };
        let mut stream = self.handle.rule().get(version).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| nl_err(|| format!("dump {family} rules"), e))?
        {
            out.extend(parse_rule(msg));
        }
        Ok(out)
    }

    async fn add_rule(&self, rule: &Rule) -> NlResult<()> {
        let mut req = self.handle.rule().add();
        *req.message_mut() = rule_message(rule);
        req.execute()
            .await
            .map_err(|e| nl_err(|| format!("add rule {rule}"), e))
    }

    async fn del_rule(&self, rule: &Rule) -> NlResult<()> {
        self.handle
            .rule()
            .del(rule_message(rule))
            .execute()
            .await
            .map_err(|e| nl_err(|| format!("delete rule {rule}"), e))
    }

    async fn neighbours(&self, family: Family, index: Option<u32>) -> NlResult<Vec<Neighbour>> {
        let _dump = self.dumps.lock().await;
        let mut req = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family_of(family));
        if let Some(index) = index {
            req.message_mut()
                .attributes
                .push(NeighbourAttribute::IfIndex(index));
        }
        let mut stream = req.execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(|e| nl_err(|| format!("dump {family} neighbours"), e))?
        {
            if let Some(n) = parse_neighbour(msg)
                && index.is_none_or(|i| i == n.index)
            {
                out.push(n);
            }
        }
        Ok(out)
    }

    async fn add_neighbour(&self, neighbour: &Neighbour, replace: bool) -> NlResult<()> {
        let mut req = self.handle.neighbours().add(neighbour.index, neighbour.ip);
        if let Some(mac) = neighbour.mac {
            req = req.link_layer_address(&mac.0);
        }
        if !neighbour.permanent {
            req = req.state(NeighbourState::Reachable);
        }
        if replace {
            req = req.replace();
        }
        req.execute().await.map_err(|e| {
            nl_err(
                || format!("add neighbour {} on #{}", neighbour.ip, neighbour.index),
                e,
            )
        })
    }

    async fn del_neighbour(&self, neighbour: &Neighbour) -> NlResult<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family_of(Family::of(neighbour.ip));
        msg.header.ifindex = neighbour.index;
        msg.attributes
            .push(NeighbourAttribute::Destination(neighbour_address(
                neighbour.ip,
            )));
        self.handle
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(|e| {
                nl_err(
                    || format!("delete neighbour {} on #{}", neighbour.ip, neighbour.index),
                    e,
                )
            })
    }
}
