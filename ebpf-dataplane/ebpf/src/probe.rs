//! The probe classifier: count, and drop blocklisted IPv4 sources.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, map},
    maps::{HashMap, PerCpuArray},
    programs::TcContext,
};
use cnikit_ebpf_common::probe::{
    BLOCK_ACTION_DROP, BLOCKLIST_CAPACITY, BlockAction, Ipv4SourceKey, ProbeCounter,
};

const ETH_HDR_LEN: usize = 14;
const ETH_P_IPV4_BE: u16 = 0x0800_u16.to_be();
const ETHERTYPE_OFFSET: usize = 12;
const IPV4_SRC_OFFSET: usize = ETH_HDR_LEN + 12;

#[map(name = "PROBE_COUNTERS")]
static PROBE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(ProbeCounter::SLOTS, 0);

#[map(name = "PROBE_BLOCK")]
static PROBE_BLOCK: HashMap<Ipv4SourceKey, BlockAction> =
    HashMap::with_max_entries(BLOCKLIST_CAPACITY, 0);

#[inline(always)]
fn bump(counter: ProbeCounter, by: u64) {
    if let Some(slot) = PROBE_COUNTERS.get_ptr_mut(counter.slot()) {
        // SAFETY: the pointer comes from a per-CPU array lookup, is valid for this CPU and
        // cannot be accessed concurrently while this program runs on it.
        unsafe { *slot += by };
    }
}

#[classifier]
pub fn cnikit_probe(ctx: TcContext) -> i32 {
    bump(ProbeCounter::Packets, 1);
    bump(ProbeCounter::Bytes, u64::from(ctx.len()));
    match ctx.load::<u16>(ETHERTYPE_OFFSET) {
        Ok(ethertype) if ethertype == ETH_P_IPV4_BE => {}
        _ => return TC_ACT_OK,
    }
    let Ok(addr) = ctx.load::<u32>(IPV4_SRC_OFFSET) else {
        return TC_ACT_OK;
    };
    // SAFETY: the map value is a plain u32 read once; the kernel keeps it alive for the
    // duration of this program run.
    match unsafe { PROBE_BLOCK.get(&Ipv4SourceKey { addr }) } {
        Some(&action) if action == BLOCK_ACTION_DROP => {
            bump(ProbeCounter::Dropped, 1);
            TC_ACT_SHOT
        }
        _ => TC_ACT_OK,
    }
}
