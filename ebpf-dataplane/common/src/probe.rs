//! Layouts of the probe classifier's maps: per-CPU counters and an IPv4 source blocklist.
//!
//! The probe is the smallest program that exercises the whole pipeline (build, verifier, attach,
//! maps in both directions); the dataplane programs build on the same conventions.

/// Name of the per-CPU array of `u64` counters, indexed by [`ProbeCounter::slot`].
pub const COUNTERS_MAP: &str = "PROBE_COUNTERS";
/// Name of the hash map from [`Ipv4SourceKey`] to [`BlockAction`] values.
pub const BLOCKLIST_MAP: &str = "PROBE_BLOCK";
/// Name of the classifier program in the object file.
pub const PROGRAM: &str = "cnikit_probe";
/// Capacity of the blocklist map.
pub const BLOCKLIST_CAPACITY: u32 = 1024;

/// One counter slot of the probe's per-CPU counter array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ProbeCounter {
    /// Packets the classifier saw.
    Packets = 0,
    /// Bytes (L2 length) the classifier saw.
    Bytes = 1,
    /// Packets dropped because their IPv4 source is in the blocklist.
    Dropped = 2,
}

impl ProbeCounter {
    /// Number of slots in the counter array.
    pub const SLOTS: u32 = 3;

    /// The array index of this counter.
    #[must_use]
    pub const fn slot(self) -> u32 {
        self as u32
    }
}

/// Key of the blocklist: an IPv4 source address exactly as it appears in the packet
/// (network byte order, read as a native-endian `u32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Ipv4SourceKey {
    /// The address bytes in packet order, reinterpreted as a native-endian `u32`.
    pub addr: u32,
}

impl Ipv4SourceKey {
    /// Builds a key from the four address octets in their usual written order.
    #[must_use]
    pub const fn from_octets(octets: [u8; 4]) -> Self {
        Self {
            addr: u32::from_ne_bytes(octets),
        }
    }
}

/// What the probe does with a packet whose source is in the blocklist.
pub type BlockAction = u32;
/// [`BlockAction`]: drop the packet.
pub const BLOCK_ACTION_DROP: BlockAction = 1;

#[cfg(feature = "user")]
// SAFETY: `Ipv4SourceKey` is `repr(C)`, `Copy`, has one `u32` field and therefore no padding;
// every bit pattern is a valid value.
unsafe impl aya::Pod for Ipv4SourceKey {}
