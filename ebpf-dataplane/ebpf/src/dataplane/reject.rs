//! Prompt rejection of connections to a service without backends: the packet is turned into an
//! ICMP "port unreachable" (type 3, code 3) from the VIP and sent straight back to the client,
//! as kube-proxy's REJECT rule does. A TCP `connect()` then fails with `ECONNREFUSED` and a
//! connected UDP socket sees `ECONNREFUSED` on its next receive.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_redirect, bpf_skb_change_tail, bpf_skb_load_bytes},
    programs::TcContext,
};
use cnikit_ebpf_common::{endpoint::EndpointValue, stats::DropReason};

use super::{packet::Packet, stats};

/// `bpf_redirect` flag: deliver to the device's ingress instead of its egress.
const BPF_F_INGRESS: u64 = 1;
/// `bpf_skb_adjust_room` mode: add room right after the (base) IPv4 header.
const BPF_ADJ_ROOM_NET: u32 = 0;
/// The room added in front of the offending packet's L4 header: a new IPv4 header and an ICMP
/// header (the old IPv4 header is moved behind them).
const ROOM: usize = 28;
/// Bytes quoted from a UDP packet: its IPv4 header and UDP header.
const QUOTE_UDP: usize = 28;
/// Bytes quoted from a TCP packet: its IPv4 header and base TCP header. An offloaded TCP
/// checksum lives at byte 16 of that header and the kernel will not cut the packet shorter
/// than that field, so TCP gets the longer quote (RFC 1812 allows quoting more).
const QUOTE_TCP: usize = 40;

/// Rejects `p` (to a service with no backends) and counts it.
#[inline(always)]
pub(crate) fn no_backends(
    ctx: &TcContext,
    p: &Packet,
    service_id: u32,
    ep: Option<EndpointValue>,
) -> i32 {
    stats::service_rejected(service_id);
    let result = if p.is_tcp() {
        port_unreachable::<{ 42 + QUOTE_TCP }>(ctx, p.ihl)
    } else {
        port_unreachable::<{ 42 + QUOTE_UDP }>(ctx, p.ihl)
    };
    match result {
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
fn checksum(bytes: &[u8]) -> [u8; 2] {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// Loads `N` packet bytes at `offset` into `dst`.
#[inline(always)]
fn load_into(ctx: &TcContext, offset: u32, dst: &mut [u8]) -> Result<(), i64> {
    // SAFETY: `dst` is valid for `dst.len()` bytes; the helper checks the packet bounds.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            offset,
            dst.as_mut_ptr().cast(),
            dst.len() as u32,
        )
    };
    if ret == 0 { Ok(()) } else { Err(ret) }
}

/// Builds the ICMP reply quoting `REPLY - 42` bytes of the offending packet, in its own BPF
/// function so its buffer does not add to the caller's stack.
#[inline(never)]
fn port_unreachable<const REPLY: usize>(ctx: &TcContext, ihl: usize) -> Result<i32, i64> {
    // Options would shift the quoted header; such packets are dropped instead.
    if ihl != 20 {
        return Err(-1);
    }
    let mut out = [0u8; REPLY];
    // Ethernet: back to the sender (MAC addresses swapped).
    load_into(ctx, 6, &mut out[0..6])?;
    load_into(ctx, 0, &mut out[6..12])?;
    out[12] = 0x08;
    // The quote: the offending IPv4 header and the start of its L4 header.
    load_into(ctx, 14, &mut out[42..])?;
    // A new IPv4 header, from the VIP to the client.
    out[14] = 0x45;
    out[15] = 0xc0; // precedence "internetwork control", as Linux sends ICMP errors
    out[16..18].copy_from_slice(&((REPLY - 14) as u16).to_be_bytes());
    out[22] = 64; // TTL
    out[23] = 1; // ICMP
    let (client, vip) = (
        [out[54], out[55], out[56], out[57]],
        [out[58], out[59], out[60], out[61]],
    );
    out[26..30].copy_from_slice(&vip);
    out[30..34].copy_from_slice(&client);
    let ip_sum = checksum(&out[14..34]);
    out[24..26].copy_from_slice(&ip_sum);
    // ICMP destination unreachable, port unreachable.
    out[34] = 3;
    out[35] = 3;
    let icmp_sum = checksum(&out[34..]);
    out[36..38].copy_from_slice(&icmp_sum);

    ctx.adjust_room(ROOM as i32, BPF_ADJ_ROOM_NET, 0)?;
    // SAFETY: the context's skb pointer is valid for the program run.
    let ret = unsafe { bpf_skb_change_tail(ctx.skb.skb, REPLY as u32, 0) };
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
