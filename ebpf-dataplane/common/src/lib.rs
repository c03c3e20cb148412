//! Map key and value layouts shared by the cnikit eBPF programs and their userspace loader.
//!
//! Everything here is `#[repr(C)]`, `Copy`, and free of padding the kernel could leave
//! uninitialised, so the same definition is valid on both sides of the map. The kernel-side crate
//! depends on this crate with no features; userspace enables `user`, which implements
//! [`aya::Pod`](https://docs.rs/aya/0.14/aya/trait.Pod.html) for each type.
//!
//! ```
//! use cnikit_ebpf_common::probe::{Ipv4SourceKey, ProbeCounter};
//!
//! let key = Ipv4SourceKey::from_octets([198, 18, 0, 2]);
//! assert_eq!(key.addr.to_ne_bytes(), [198, 18, 0, 2]);
//! assert_eq!(ProbeCounter::Dropped.slot(), 2);
//! ```
#![no_std]
#![deny(missing_docs)]

pub mod probe;
