//! Kernel-side cnikit programs, compiled to one BPF object.
//!
//! Programs:
//! - `cnikit_probe`: a tc classifier that counts packets and bytes in a per-CPU array and drops
//!   IPv4 packets whose source address is in a userspace-managed blocklist. It proves the build
//!   pipeline end to end and is the template the dataplane programs follow.
#![no_std]
#![no_main]

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
