//! Kernel-side cnikit programs, compiled to one BPF object.
//!
//! Programs:
//! - `cnikit_from_ep`: a tc classifier on the path of packets **leaving** a pod endpoint (ingress
//!   of the node-side veth, or egress of an interface inside the pod such as an ENI). It
//!   translates ClusterIP traffic to a backend (Maglev, connection tracking, `ClientIP` affinity),
//!   rejects connections to services without backends with ICMP port unreachable, and enforces
//!   the endpoint's egress policy.
//! - `cnikit_to_ep`: a tc classifier on the path of packets **entering** a pod endpoint (egress of
//!   the node-side veth, or ingress of an interface inside the pod). It translates replies of
//!   service connections back to the VIP and enforces the endpoint's ingress policy.
//! - `cnikit_probe`: the pipeline's proof: counts packets and drops blocklisted IPv4 sources.
//!
//! Map layouts live in `cnikit-ebpf-common`; the userspace side documents the semantics.
#![no_std]
#![no_main]

mod dataplane;
mod probe;

/// The kernel refuses GPL-only helpers without a GPL-compatible licence string.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects unbounded loops, so reaching this is a build error, never a hang.
    loop {}
}
