//! eBPF tc dataplane for container networking, built on [aya].
//!
//! The kernel-side programs are written in Rust (`aya-ebpf`) in this repository and shipped
//! **prebuilt inside this crate** (`bpf/cnikit.bpf.o`), so depending on it needs only stable Rust:
//! no nightly toolchain, no bpf-linker. The map layouts are shared with the kernel side through
//! [`cnikit_ebpf_common`], so no layout is written twice.
//!
//! Today the crate contains the pipeline's proof, [`ProbeProgram`]: a tc classifier that counts
//! packets and bytes and drops IPv4 packets whose source is in a userspace-managed blocklist.
//! Service load balancing and NetworkPolicy build on the same object, attach and map code.
//!
//! # Requirements
//! - Linux with BPF and `CAP_BPF` + `CAP_NET_ADMIN` (root).
//! - TCX attachment on kernels >= 6.6, the `clsact` qdisc plus `cls_bpf` below; [`AttachMode::Auto`]
//!   picks.
//! - Attaching resolves the interface name in the **calling thread's** network namespace: call
//!   [`ProbeProgram::attach`] from a thread that has entered the namespace of the interface. The
//!   program and its maps are then usable from any thread.
//!
//! # Example
//!
//! ```no_run
//! use std::net::Ipv4Addr;
//! use cnikit_ebpf_dataplane::{AttachMode, Direction, ProbeProgram};
//!
//! # fn main() -> Result<(), cnikit_ebpf_dataplane::Error> {
//! let mut probe = ProbeProgram::load()?;
//! let via = probe.attach("veth0", Direction::Ingress, AttachMode::Auto)?;
//! println!("attached via {via}");
//! probe.block_source(Ipv4Addr::new(198, 18, 0, 2))?;
//! let counters = probe.counters()?;
//! println!("{} packets, {} dropped", counters.packets, counters.dropped);
//! # Ok(())
//! # }
//! ```
//!
//! [aya]: https://docs.rs/aya/0.14
#![deny(missing_docs)]

mod attach;
mod error;
mod object;
mod probe;

pub use attach::{AttachMode, AttachedVia, Direction, tcx_supported};
pub use error::Error;
pub use object::{OBJECT, object_bytes};
pub use probe::{ProbeCounters, ProbeProgram};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
