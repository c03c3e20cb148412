//! Freshness and refresh of connection-tracking entries.

use cnikit_ebpf_common::{
    conntrack::{CT_CLOSING, CtKey, CtValue},
    net::IPPROTO_TCP,
};

use super::{CNK_OTHER_TIMEOUT_NS, CNK_TCP_CLOSE_NS, CNK_TCP_TIMEOUT_NS, CT, packet::Packet};

/// Whether `entry` is still in force at `now`: idle for less than its protocol's timeout.
#[inline(always)]
pub(crate) fn fresh(entry: &CtValue, proto: u8, now: u64) -> bool {
    let timeout = if proto != IPPROTO_TCP {
        CNK_OTHER_TIMEOUT_NS.load()
    } else if entry.flags & CT_CLOSING != 0 {
        CNK_TCP_CLOSE_NS.load()
    } else {
        CNK_TCP_TIMEOUT_NS.load()
    };
    // Saturating: another CPU may have stamped the entry a moment after our `now`.
    now.saturating_sub(entry.last_seen_ns) < timeout
}

/// The entry for `key` if there is one and it is fresh.
#[inline(always)]
pub(crate) fn lookup(key: &CtKey, now: u64) -> Option<*mut CtValue> {
    let entry = CT.get_ptr_mut(key)?;
    // SAFETY: map values stay valid for the whole program run.
    if fresh(unsafe { &*entry }, key.proto, now) {
        Some(entry)
    } else {
        None
    }
}

/// Marks `entry` as used by `p` at `now` (and closing on a FIN or RST).
#[inline(always)]
pub(crate) fn touch(entry: *mut CtValue, p: &Packet, now: u64) {
    // SAFETY: `entry` comes from a lookup in this program run; concurrent writers on other CPUs
    // only ever store the same kinds of values, so a lost update is harmless.
    unsafe {
        (*entry).last_seen_ns = now;
        if p.is_closing() {
            (*entry).flags |= CT_CLOSING;
        }
    }
}
