//! Map key and value layouts shared by the cnikit eBPF programs and their userspace loader.
//!
//! Everything here is `#[repr(C)]`, `Copy`, and free of padding the kernel could leave
//! uninitialised (explicit `_pad` fields fill every gap), so the same definition is valid on both
//! sides of the map. The kernel-side crate depends on this crate with no features; userspace
//! enables `user`, which implements [`aya::Pod`](https://docs.rs/aya/0.14/aya/trait.Pod.html) for
//! each type.
//!
//! Byte-order convention: addresses and ports are stored exactly as they appear in the packet.
//! An IPv4 address is its four network-order bytes read as a native-endian `u32`
//! ([`net::ipv4_raw`]); a port is its two network-order bytes read as a native-endian `u16`
//! ([`net::port_raw`]). The kernel side then compares and copies them without swapping.
//!
//! ```
//! use cnikit_ebpf_common::{net, probe::{Ipv4SourceKey, ProbeCounter}, service::ServiceKey};
//!
//! let key = Ipv4SourceKey::from_octets([198, 18, 0, 2]);
//! assert_eq!(key.addr.to_ne_bytes(), [198, 18, 0, 2]);
//! assert_eq!(ProbeCounter::Dropped.slot(), 2);
//! let svc = ServiceKey::new([198, 19, 0, 1], 80, net::IPPROTO_TCP);
//! assert_eq!(net::port_host(svc.port), 80);
//! ```
#![no_std]
#![deny(missing_docs)]

pub mod config;
pub mod conntrack;
pub mod endpoint;
pub mod hash;
pub mod net;
pub mod policy;
pub mod probe;
pub mod service;
pub mod stats;

/// Implements `aya::Pod` (feature `user`) for plain `repr(C)` types without implicit padding.
macro_rules! pod {
    ($($ty:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `repr(C)` and `Copy`, made only of integers and arrays of
            // integers, with explicit padding fields so no byte is uninitialised; every bit
            // pattern is a valid value.
            unsafe impl aya::Pod for $ty {}
        )+
    };
}
pub(crate) use pod;
