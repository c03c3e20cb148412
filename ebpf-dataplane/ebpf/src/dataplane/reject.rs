//! Prompt rejection of connections to a service without backends: the packet is turned into an
//! ICMP "port unreachable" (type 3, code 3) from the VIP and sent straight back to the client,
//! as kube-proxy's REJECT rule does. A TCP `connect()` then fails with `ECONNREFUSED` and a
//! connected UDP socket sees `ECONNREFUSED` on its next receive.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use cnikit_ebpf_common::{endpoint::EndpointValue, stats::DropReason};

use super::{packet::Packet, stats};

/// `bpf_redirect` flag: deliver to the device's ingress instead of its egress.
const BPF_F_INGRESS: u64 = 1;
/// `bpf_skb_adjust_room` mode: add room right after the (base) IPv4 header.
const BPF_ADJ_ROOM_NET: u32 = 0;
/// Ethernet + IPv4 + the first 8 bytes of L4 of the offending packet (what ICMP quotes).
const QUOTED: usize = 28;
const HEAD: usize = 14 + QUOTED;
/// The reply: Ethernet, IPv4, ICMP header, quoted IPv4 header and 8 bytes.
const REPLY_LEN: usize = 14 + 20 + 8 + QUOTED;

/// Rejects `p` (to a service with no backends) and counts it.
#[inline(always)]
pub(crate) fn no_backends(
    ctx: &TcContext,
    p: &Packet,
    service_id: u32,
    ep: Option<EndpointValue>,
) -> i32 {
    stats::service_rejected(service_id);
    match port_unreachable(ctx, p) {
        Ok(action) => {
            stats::drop(ep.as_ref(), DropReason::NoBackends);
            action
        }
        Err(_) => {
            stats::drop(ep.as_ref(), DropReason::RejectFailed);
            TC_ACT_SHOT
        }
    }
}

/// The Internet checksum of `bytes` (even length), as it is written into a header.
#[inline(always)]
fn checksum<const N: usize>(bytes: &[u8; N]) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

#[inline(always)]
fn port_unreachable(ctx: &TcContext, p: &Packet) -> Result<i32, i64> {
    // Options would shift the quoted header; such packets are dropped instead.
    if p.ihl != 20 {
        return Err(-1);
    }
    let head: [u8; HEAD] = ctx.load(0)?;

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[1] = 0xc0; // precedence "internetwork control", as Linux sends ICMP errors
    ip[2..4].copy_from_slice(&((REPLY_LEN - 14) as u16).to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 1; // ICMP
    ip[12..16].copy_from_slice(&head[30..34]); // from the VIP
    ip[16..20].copy_from_slice(&head[26..30]); // to the client
    let ip_sum = checksum(&ip);
    ip[10..12].copy_from_slice(&ip_sum);

    let mut icmp = [0u8; 8 + QUOTED];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 3; // port unreachable
    icmp[8..].copy_from_slice(&head[14..]);
    let icmp_sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&icmp_sum);

    let mut out = [0u8; REPLY_LEN];
    out[0..6].copy_from_slice(&head[6..12]);
    out[6..12].copy_from_slice(&head[0..6]);
    out[12] = 0x08;
    out[14..34].copy_from_slice(&ip);
    out[34..].copy_from_slice(&icmp);

    ctx.adjust_room(QUOTED as i32, BPF_ADJ_ROOM_NET, 0)?;
    // SAFETY: the context's skb pointer is valid for the program run.
    let ret = unsafe { bpf_skb_change_tail(ctx.skb.skb, REPLY_LEN as u32, 0) };
    if ret != 0 {
        return Err(ret);
    }
    ctx.store(0, &out, 0)?;

    // SAFETY: reading two fields of the context.
    let (ifindex, ingress_ifindex) =
        unsafe { ((*ctx.skb.skb).ifindex, (*ctx.skb.skb).ingress_ifindex) };
    // At tc ingress (node-side veth) send it back out of the same device; at tc egress (an
    // interface inside the endpoint) hand it to the same device's ingress.
    let flags = if ingress_ifindex == ifindex {
        0
    } else {
        BPF_F_INGRESS
    };
    // SAFETY: a helper taking plain integers.
    Ok(unsafe { bpf_redirect(ifindex, flags) } as i32)
}
