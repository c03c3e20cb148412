//! Parsing the headers the dataplane needs, and rewriting addresses with checksum fixes.
//!
//! Every access goes through the skb load/store helpers, which check bounds at run time, so the
//! IPv4 header length may vary without the verifier having to follow packet pointers.

use aya_ebpf::programs::TcContext;
use cnikit_ebpf_common::{
    conntrack::{CT_KIND_FLOW, CtKey},
    net::{IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
};

pub(crate) const ETH_HLEN: usize = 14;
const ETH_P_IP_RAW: u16 = 0x0800_u16.to_be();
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

// `bpf_l4_csum_replace` flags.
const BPF_F_PSEUDO_HDR: u64 = 0x10;
const BPF_F_MARK_MANGLED_0: u64 = 0x20;

/// The parsed headers of an IPv4 packet (addresses and ports in packet order).
pub(crate) struct Packet {
    /// Length of the IPv4 header in bytes.
    pub(crate) ihl: usize,
    pub(crate) saddr: u32,
    pub(crate) daddr: u32,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) proto: u8,
    pub(crate) tcp_flags: u8,
    /// Ports were read: TCP, UDP or SCTP, and not a non-first fragment.
    pub(crate) has_ports: bool,
    /// Not a non-first fragment (the L4 header is here).
    pub(crate) first_fragment: bool,
}

impl Packet {
    #[inline(always)]
    pub(crate) fn is_tcp(&self) -> bool {
        self.proto == IPPROTO_TCP
    }

    #[inline(always)]
    pub(crate) fn is_udp(&self) -> bool {
        self.proto == IPPROTO_UDP
    }

    #[inline(always)]
    pub(crate) fn l4(&self) -> usize {
        ETH_HLEN + self.ihl
    }

    /// A TCP SYN without ACK: the first packet of a new connection.
    #[inline(always)]
    pub(crate) fn is_syn_only(&self) -> bool {
        self.has_ports && self.is_tcp() && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// A TCP FIN or RST: the connection is closing.
    #[inline(always)]
    pub(crate) fn is_closing(&self) -> bool {
        self.has_ports && self.is_tcp() && self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }
}

/// Parses an Ethernet + IPv4 packet; `None` for anything else (which the programs let pass).
#[inline(always)]
pub(crate) fn parse(ctx: &TcContext) -> Option<Packet> {
    let ethertype: u16 = ctx.load(12).ok()?;
    if ethertype != ETH_P_IP_RAW {
        return None;
    }
    let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    if version_ihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).ok()?;
    let fragment_offset = u16::from_be(frag) & 0x1fff;
    let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
    let saddr: u32 = ctx.load(IP_SRC_OFF).ok()?;
    let daddr: u32 = ctx.load(IP_DST_OFF).ok()?;
    let mut packet = Packet {
        ihl,
        saddr,
        daddr,
        sport: 0,
        dport: 0,
        proto,
        tcp_flags: 0,
        has_ports: false,
        first_fragment: fragment_offset == 0,
    };
    let with_ports = proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
    if fragment_offset == 0 && with_ports {
        let l4 = packet.l4();
        let ports: [u8; 4] = ctx.load(l4).ok()?;
        packet.sport = u16::from_ne_bytes([ports[0], ports[1]]);
        packet.dport = u16::from_ne_bytes([ports[2], ports[3]]);
        if proto == IPPROTO_TCP {
            packet.tcp_flags = ctx.load(l4 + 13).ok()?;
        }
        packet.has_ports = true;
    }
    Some(packet)
}

/// For an ICMP error (destination unreachable, time exceeded, parameter problem), the flow of
/// the packet it quotes, as a flow key.
#[inline(always)]
pub(crate) fn quoted_flow(ctx: &TcContext, p: &Packet) -> Option<CtKey> {
    if p.proto != IPPROTO_ICMP || !p.first_fragment {
        return None;
    }
    let l4 = p.l4();
    let icmp_type: u8 = ctx.load(l4).ok()?;
    if !matches!(icmp_type, 3 | 11 | 12) {
        return None;
    }
    let q: [u8; 28] = ctx.load(l4 + 8).ok()?;
    if q[0] != 0x45 {
        return None;
    }
    let proto = q[9];
    let with_ports = proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
    let (sport, dport) = if with_ports {
        (
            u16::from_ne_bytes([q[20], q[21]]),
            u16::from_ne_bytes([q[22], q[23]]),
        )
    } else {
        (0, 0)
    };
    Some(CtKey {
        saddr: u32::from_ne_bytes([q[12], q[13], q[14], q[15]]),
        daddr: u32::from_ne_bytes([q[16], q[17], q[18], q[19]]),
        sport,
        dport,
        proto,
        kind: CT_KIND_FLOW,
        _pad: 0,
    })
}

/// Offset of the L4 checksum and the checksum-helper flags for `p`'s protocol.
#[inline(always)]
fn l4_checksum(p: &Packet) -> Option<(usize, u64)> {
    if p.is_tcp() {
        Some((p.l4() + 16, 0))
    } else if p.is_udp() {
        // A zero UDP checksum means "none": leave it zero.
        Some((p.l4() + 6, BPF_F_MARK_MANGLED_0))
    } else {
        None
    }
}

/// Rewrites one address and port of a TCP or UDP packet, fixing the IPv4 and L4 checksums
/// (incrementally; correct for both complete and offloaded checksums).
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    p: &Packet,
    addr_off: usize,
    old_addr: u32,
    new_addr: u32,
    port_off: usize,
    old_port: u16,
    new_port: u16,
) -> Result<(), i64> {
    if let Some((csum_off, flags)) = l4_checksum(p) {
        ctx.l4_csum_replace(
            csum_off,
            u64::from(old_addr),
            u64::from(new_addr),
            flags | BPF_F_PSEUDO_HDR | 4,
        )?;
        ctx.l4_csum_replace(
            csum_off,
            u64::from(old_port),
            u64::from(new_port),
            flags | 2,
        )?;
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old_addr), u64::from(new_addr), 4)?;
    ctx.store(addr_off, &new_addr, 0)?;
    ctx.store(port_off, &new_port, 0)?;
    Ok(())
}

/// Destination NAT: VIP:port -> backend.
#[inline(always)]
pub(crate) fn rewrite_destination(
    ctx: &TcContext,
    p: &Packet,
    addr: u32,
    port: u16,
) -> Result<(), i64> {
    rewrite(ctx, p, IP_DST_OFF, p.daddr, addr, p.l4() + 2, p.dport, port)
}

/// Reverse NAT of a reply: backend -> VIP:port.
#[inline(always)]
pub(crate) fn rewrite_source(ctx: &TcContext, p: &Packet, addr: u32, port: u16) -> Result<(), i64> {
    rewrite(ctx, p, IP_SRC_OFF, p.saddr, addr, p.l4(), p.sport, port)
}
