//! eBPF tc dataplane for container networking, built on [aya]: ClusterIP Service load balancing
//! and Kubernetes NetworkPolicy, with a control API and a pure-Rust reference model.
//!
//! The kernel-side programs are written in Rust (`aya-ebpf`) in this repository and shipped
//! **prebuilt inside this crate** (`bpf/cnikit.bpf.o`), so depending on it needs only stable Rust:
//! no nightly toolchain, no bpf-linker. The map layouts are shared with the kernel side through
//! [`cnikit_ebpf_common`], so no layout is written twice.
//!
//! - [`Dataplane`]: the two tc programs and their maps. `cnikit_from_ep` sees packets leaving a
//!   pod: ClusterIP translation (connection tracking, Maglev, `ClientIP` affinity, prompt ICMP
//!   rejection for services without backends) and egress policy. `cnikit_to_ep` sees packets
//!   entering a pod: translation of replies back to the VIP and ingress policy.
//! - [`ServiceTable`] and [`PolicyTable`]: the control API, implemented by [`Dataplane`] and by
//!   [`ReferenceModel`] with the same semantics; [`Statistics`] and [`PacketPath`] let tests and
//!   tools observe and drive either.
//! - [`ProbeProgram`]: the pipeline's proof (counters and a blocklist).
//!
//! The crate README describes the map layout and the semantics in detail.
//!
//! # Requirements
//! - Linux with BPF and `CAP_BPF` + `CAP_NET_ADMIN` (root).
//! - TCX attachment on kernels >= 6.6, the `clsact` qdisc plus `cls_bpf` below; [`AttachMode::Auto`]
//!   picks. The verifier accepts the programs on 6.1 and later.
//! - Attaching resolves the interface name in the **calling thread's** network namespace: call
//!   [`Dataplane::attach_endpoint`] from a thread that has entered the namespace of the
//!   interface. The dataplane and its maps are then usable from any thread.
//!
//! # Example
//!
//! ```no_run
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use cnikit_ebpf_dataplane::{
//!     AttachMode, Dataplane, EndpointPolicy, Peer, Placement, PolicyTable, PortMatch, Protocol,
//!     Rule, Service, ServiceKey, ServiceTable,
//! };
//!
//! # fn main() -> Result<(), cnikit_ebpf_dataplane::Error> {
//! let mut dataplane = Dataplane::builder().pin_dir("/sys/fs/bpf/cnikit").load()?;
//! dataplane.attach_endpoint("veth1a2b", Placement::NodeSide, AttachMode::Auto)?;
//!
//! let web = ServiceKey::tcp(Ipv4Addr::new(10, 96, 0, 10), 80);
//! let pods = [Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 2, 7)];
//! dataplane.upsert_service(&Service::new(web, pods.map(|ip| SocketAddrV4::new(ip, 8080))))?;
//!
//! // Only 10.0.0.0/16 may reach the first pod, on 8080/TCP.
//! let policy = EndpointPolicy::ingress([Rule::new(
//!     [Peer::cidr("10.0.0.0/16".parse()?)],
//!     [PortMatch::port(Protocol::Tcp, 8080)],
//! )]);
//! dataplane.set_policy(pods[0], &policy)?;
//! # Ok(())
//! # }
//! ```
//!
//! [aya]: https://docs.rs/aya/0.14
#![deny(missing_docs)]

mod attach;
mod compile;
mod config;
mod error;
mod ids;
mod kernel;
mod maglev;
mod model;
mod object;
mod observe;
mod packet;
mod policy;
mod probe;
mod protocol;
mod service;

pub use attach::{AttachMode, AttachedVia, Direction, hold_tc_hooks, tcx_supported};
pub use config::{Capacity, Table, Timeouts};
pub use error::Error;
pub use kernel::{
    Dataplane, DataplaneBuilder, FROM_ENDPOINT_PROGRAM, Placement, TO_ENDPOINT_PROGRAM,
};
pub use model::ReferenceModel;
pub use object::{OBJECT, object_bytes};
pub use observe::{
    ConntrackEntry, DropCounters, DropReason, EndpointCounters, PacketPath, ServiceCounters,
    Statistics,
};
pub use packet::{FrameError, Hook, Packet, Quoted, Transport, Verdict, tcp_flags};
pub use policy::{EndpointPolicy, Ipv4Cidr, Peer, PolicyTable, PortMatch, Rule};
pub use probe::{ProbeCounters, ProbeProgram};
pub use protocol::Protocol;
pub use service::{Service, ServiceKey, ServiceTable};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    /// An agent moves its dataplane between threads and tasks.
    #[test]
    fn dataplane_and_model_are_send() {
        fn send<T: Send>() {}
        send::<crate::Dataplane>();
        send::<crate::ReferenceModel>();
        send::<crate::ProbeProgram>();
    }
}
