//! Per-CPU counters.

use cnikit_ebpf_common::{endpoint::EndpointValue, stats::DropReason};

use super::{EP_STATS, SVC_STATS};

#[inline(always)]
pub(crate) fn service_forward(id: u32, len: u64) {
    if let Some(s) = SVC_STATS.get_ptr_mut(id) {
        // SAFETY: a per-CPU slot, touched only by this CPU while the program runs.
        unsafe {
            (*s).packets += 1;
            (*s).bytes += len;
        }
    }
}

#[inline(always)]
pub(crate) fn service_reply(id: u32, len: u64) {
    if let Some(s) = SVC_STATS.get_ptr_mut(id) {
        // SAFETY: as above.
        unsafe {
            (*s).reply_packets += 1;
            (*s).reply_bytes += len;
        }
    }
}

#[inline(always)]
pub(crate) fn service_connection(id: u32) {
    if let Some(s) = SVC_STATS.get_ptr_mut(id) {
        // SAFETY: as above.
        unsafe { (*s).connections += 1 };
    }
}

#[inline(always)]
pub(crate) fn service_rejected(id: u32) {
    if let Some(s) = SVC_STATS.get_ptr_mut(id) {
        // SAFETY: as above.
        unsafe { (*s).rejected += 1 };
    }
}

#[inline(always)]
pub(crate) fn endpoint_tx(ep: Option<&EndpointValue>, len: u64) {
    if let Some(s) = ep.and_then(|ep| EP_STATS.get_ptr_mut(ep.id)) {
        // SAFETY: as above.
        unsafe {
            (*s).tx_packets += 1;
            (*s).tx_bytes += len;
        }
    }
}

#[inline(always)]
pub(crate) fn endpoint_rx(ep: Option<&EndpointValue>, len: u64) {
    if let Some(s) = ep.and_then(|ep| EP_STATS.get_ptr_mut(ep.id)) {
        // SAFETY: as above.
        unsafe {
            (*s).rx_packets += 1;
            (*s).rx_bytes += len;
        }
    }
}

#[inline(always)]
pub(crate) fn drop(ep: Option<&EndpointValue>, reason: DropReason) {
    if let Some(s) = ep.and_then(|ep| EP_STATS.get_ptr_mut(ep.id)) {
        // SAFETY: as above; the index is a constant below the array length.
        unsafe {
            if let Some(slot) = (*s).drops.get_mut(reason.slot()) {
                *slot += 1;
            }
        }
    }
}
