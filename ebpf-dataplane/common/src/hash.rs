//! The flow hash both the kernel and the reference model use to index a service's Maglev table.
//!
//! It is part of the dataplane's observable behaviour (which backend a new flow gets), so it lives
//! here, once, and is compiled into both sides.

/// Mixes 32 bits (a murmur3-style finaliser with good avalanche).
#[must_use]
#[inline(always)]
pub const fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// Seed folded into every flow hash.
const FLOW_SEED: u32 = 0x636e_6b74; // "cnkt"

/// Hash of a flow's 5-tuple in map representation ([`crate::net`]): addresses and ports as they
/// appear in the packet. With `ClientIP` affinity the caller passes `sport = 0`, so every connection
/// of one client hashes alike.
#[must_use]
#[inline(always)]
pub const fn flow_hash(saddr: u32, daddr: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let ports = ((sport as u32) << 16) | dport as u32;
    let mut h = mix32(FLOW_SEED ^ proto as u32);
    h = mix32(h ^ saddr);
    h = mix32(h ^ daddr);
    mix32(h ^ ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_per_field_and_is_stable() {
        let base = flow_hash(1, 2, 3, 4, 6);
        assert_eq!(base, flow_hash(1, 2, 3, 4, 6));
        for other in [
            flow_hash(9, 2, 3, 4, 6),
            flow_hash(1, 9, 3, 4, 6),
            flow_hash(1, 2, 9, 4, 6),
            flow_hash(1, 2, 3, 9, 6),
            flow_hash(1, 2, 3, 4, 17),
        ] {
            assert_ne!(base, other);
        }
    }
}
