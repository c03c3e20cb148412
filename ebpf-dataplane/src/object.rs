//! The prebuilt BPF object shipped inside this crate.

/// The BPF object built from `ebpf-dataplane/ebpf` by `cargo xtask build-ebpf`, embedded with
/// 8-byte alignment as the ELF loader requires. CI rebuilds it and fails if this copy is stale.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/cnikit.bpf.o"));

/// The embedded BPF object (see [`OBJECT`]).
#[must_use]
pub fn object_bytes() -> &'static [u8] {
    OBJECT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_object_is_a_bpf_elf() {
        // ELF magic, 64-bit, little-endian, machine EM_BPF (247).
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(OBJECT[4], 2, "ELFCLASS64");
        assert_eq!(OBJECT[5], 1, "little-endian");
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247, "EM_BPF");
        assert_eq!(OBJECT.as_ptr().align_offset(8), 0);
    }
}
