//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of
//! [`MAGLEV_TABLE_SIZE`] entries in which every backend owns an almost equal share, built so that
//! adding or removing one backend changes few entries.
//!
//! The table depends only on the *set* of backends: they are ordered by address and port first,
//! and each backend's preference list comes from a hash of its address and port. Every node (and
//! the reference model) therefore builds the same table for the same set.

use std::net::SocketAddrV4;

use cnikit_ebpf_common::service::MAGLEV_TABLE_SIZE;

const M: usize = MAGLEV_TABLE_SIZE;
const EMPTY: u16 = u16::MAX;

/// A 64-bit mix (splitmix64's finaliser).
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn identity(backend: &SocketAddrV4) -> u64 {
    (u64::from(u32::from(*backend.ip())) << 16) | u64::from(backend.port())
}

/// The backends in table order (sorted, duplicates removed).
#[must_use]
pub(crate) fn ordered(backends: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
    let mut sorted = backends.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// Builds the lookup table for `sorted` (from [`ordered`]): entry `i` is the index in `sorted` of
/// the backend that owns it. Empty for no backends.
#[must_use]
pub(crate) fn table(sorted: &[SocketAddrV4]) -> Vec<u16> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let modulus = M as u64;
    // (next position, skip) of each backend's permutation `offset + j * skip (mod M)`.
    let mut walk: Vec<(usize, usize)> = sorted
        .iter()
        .map(|b| {
            let id = identity(b);
            let offset = mix64(id ^ 0x6d61_676c_6576_0001) % modulus;
            let skip = mix64(id ^ 0x6d61_676c_6576_0002) % (modulus - 1) + 1;
            #[expect(clippy::cast_possible_truncation, reason = "both are below M")]
            (offset as usize, skip as usize)
        })
        .collect();
    let mut entries = vec![EMPTY; M];
    let mut filled = 0;
    loop {
        for (index, (next, skip)) in walk.iter_mut().enumerate() {
            let mut candidate = *next;
            while entries[candidate] != EMPTY {
                candidate += *skip;
                if candidate >= M {
                    candidate -= M;
                }
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "at most MAX_BACKENDS (256) backends"
            )]
            {
                entries[candidate] = index as u16;
            }
            *next = candidate + *skip;
            if *next >= M {
                *next -= M;
            }
            filled += 1;
            if filled == M {
                return entries;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn backends(n: u8) -> Vec<SocketAddrV4> {
        (1..=n)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, i), 8080))
            .collect()
    }

    fn owners(sorted: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
        table(sorted)
            .iter()
            .map(|&i| sorted[usize::from(i)])
            .collect()
    }

    #[test]
    fn every_backend_gets_a_near_equal_share() {
        for n in [1u8, 2, 3, 10, 37] {
            let sorted = ordered(&backends(n));
            let t = table(&sorted);
            assert_eq!(t.len(), M);
            let mut counts = vec![0usize; sorted.len()];
            for &i in &t {
                counts[usize::from(i)] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(max - min <= 1, "n={n}: shares {min}..={max}");
        }
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn table_depends_on_the_set_not_the_order() {
        let mut shuffled = backends(10);
        shuffled.reverse();
        assert_eq!(owners(&ordered(&shuffled)), owners(&ordered(&backends(10))));
    }

    #[test]
    fn removing_one_backend_moves_little_more_than_its_share() {
        let before = owners(&ordered(&backends(10)));
        let mut fewer = backends(10);
        let gone = fewer.remove(3);
        let after = owners(&ordered(&fewer));
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let own_share = before.iter().filter(|b| **b == gone).count();
        // Entries of the removed backend must move; Maglev moves only a little beyond that.
        assert!(moved >= own_share);
        // Measured: about 2.7% of the table beyond the removed backend's own share at M = 1021.
        assert!(
            moved - own_share <= M * 4 / 100,
            "moved {moved}, own share {own_share}"
        );
    }

    #[test]
    fn adding_one_backend_takes_about_its_share() {
        let before = owners(&ordered(&backends(10)));
        let after = owners(&ordered(&backends(11)));
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let new_share = M / 11;
        assert!(
            moved >= new_share && moved <= new_share + M * 4 / 100,
            "moved {moved}"
        );
    }
}
