//! Compiling an endpoint's rules for one direction into the entries of the two policy tries
//! (see `cnikit_ebpf_common::policy`): one bit per distinct port set ("rule group"), a peer trie
//! whose longest match gives the groups covering an address, and a port trie whose longest match
//! gives the groups covering a protocol and port.

use std::collections::{BTreeMap, BTreeSet};

use cnikit_ebpf_common::policy::{MAX_RULE_GROUPS, RuleBits};

use crate::{Ipv4Cidr, Peer, Rule};

/// The ports of one rule, normalised so equal sets compare equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PortSet {
    /// Every protocol and port (a rule without ports).
    All,
    /// Per protocol: `None` every port, else sorted, merged inclusive ranges.
    Some(BTreeMap<u8, Option<Vec<(u16, u16)>>>),
}

fn port_set(rule: &Rule) -> PortSet {
    if rule.ports.is_empty() {
        return PortSet::All;
    }
    let mut per_protocol: BTreeMap<u8, Option<Vec<(u16, u16)>>> = BTreeMap::new();
    for port in &rule.ports {
        let entry = per_protocol
            .entry(port.protocol.number())
            .or_insert_with(|| Some(Vec::new()));
        match (&port.ports, entry.as_mut()) {
            (None, _) => *entry = None,
            (Some(range), Some(ranges)) => ranges.push((*range.start(), *range.end())),
            (Some(_), None) => {}
        }
    }
    for ranges in per_protocol.values_mut().flatten() {
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for &(start, end) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if u32::from(start) <= u32::from(last.1) + 1 => {
                    last.1 = last.1.max(end);
                }
                _ => merged.push((start, end)),
            }
        }
        *ranges = merged;
    }
    PortSet::Some(per_protocol)
}

/// A block of the port trie: `rel_len` bits after the slot (0: every protocol; 8: one protocol,
/// every port; `8 + k`: one protocol and the ports sharing the top `k` bits of `port`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PortBlock {
    pub(crate) rel_len: u8,
    pub(crate) protocol: u8,
    pub(crate) port: u16,
}

impl PortBlock {
    fn covers(&self, other: &Self) -> bool {
        if self.rel_len > other.rel_len {
            return false;
        }
        if self.rel_len == 0 {
            return true;
        }
        if self.protocol != other.protocol {
            return false;
        }
        let port_bits = self.rel_len - 8;
        port_bits == 0 || (self.port ^ other.port) >> (16 - port_bits) == 0
    }
}

fn port_blocks(set: &PortSet) -> Vec<PortBlock> {
    let mut blocks = Vec::new();
    match set {
        PortSet::All => blocks.push(PortBlock {
            rel_len: 0,
            protocol: 0,
            port: 0,
        }),
        PortSet::Some(per_protocol) => {
            for (&protocol, ranges) in per_protocol {
                match ranges {
                    None => blocks.push(PortBlock {
                        rel_len: 8,
                        protocol,
                        port: 0,
                    }),
                    Some(ranges) => {
                        for &(start, end) in ranges {
                            range_blocks(protocol, start, end, &mut blocks);
                        }
                    }
                }
            }
        }
    }
    blocks
}

/// Splits `start..=end` into aligned power-of-two blocks.
fn range_blocks(protocol: u8, start: u16, end: u16, out: &mut Vec<PortBlock>) {
    let (mut at, end) = (u32::from(start), u32::from(end));
    while at <= end {
        let mut size_log2 = at.trailing_zeros().min(16);
        while at + (1 << size_log2) - 1 > end {
            size_log2 -= 1;
        }
        #[expect(clippy::cast_possible_truncation, reason = "ports and lengths fit")]
        out.push(PortBlock {
            rel_len: 8 + (16 - size_log2) as u8,
            protocol,
            port: at as u16,
        });
        at += 1 << size_log2;
    }
}

/// The trie entries for one direction's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Compiled {
    /// Peer trie: (block, groups covering it).
    pub(crate) peers: Vec<(Ipv4Cidr, RuleBits)>,
    /// Port trie: (block, groups covering it).
    pub(crate) ports: Vec<(PortBlock, RuleBits)>,
    /// Number of rule groups used.
    pub(crate) groups: usize,
}

/// Too many distinct port sets for one direction.
#[derive(Debug)]
pub(crate) struct TooManyGroups(pub(crate) usize);

/// Compiles `rules`. Lookups in the result give, for any address and port, exactly the groups of
/// the rules that allow them (see the tests for the check against direct evaluation).
pub(crate) fn compile(rules: &[Rule]) -> Result<Compiled, TooManyGroups> {
    let any = Peer::cidr(Ipv4Cidr::ANY);
    let mut groups: BTreeMap<PortSet, Vec<&Peer>> = BTreeMap::new();
    for rule in rules {
        let peers = groups.entry(port_set(rule)).or_default();
        if rule.peers.is_empty() {
            peers.push(&any);
        } else {
            peers.extend(&rule.peers);
        }
    }
    if groups.len() > MAX_RULE_GROUPS {
        return Err(TooManyGroups(groups.len()));
    }
    let groups: Vec<(PortSet, Vec<&Peer>)> = groups.into_iter().collect();

    let peer_blocks: BTreeSet<Ipv4Cidr> = groups
        .iter()
        .flat_map(|(_, peers)| peers.iter())
        .flat_map(|p| std::iter::once(p.cidr).chain(p.except.iter().copied()))
        .collect();
    let peer_bits = |block: &Ipv4Cidr| -> RuleBits {
        groups
            .iter()
            .enumerate()
            .filter(|(_, (_, peers))| {
                peers
                    .iter()
                    .any(|p| p.cidr.covers(block) && !p.except.iter().any(|e| e.covers(block)))
            })
            .fold(0, |bits, (g, _)| bits | 1 << g)
    };
    let peers = prune(
        peer_blocks
            .into_iter()
            .map(|b| (b, peer_bits(&b)))
            .collect(),
        Ipv4Cidr::covers,
    );

    let group_blocks: Vec<Vec<PortBlock>> =
        groups.iter().map(|(set, _)| port_blocks(set)).collect();
    let all_blocks: BTreeSet<PortBlock> = group_blocks.iter().flatten().copied().collect();
    let port_bits = |block: &PortBlock| -> RuleBits {
        group_blocks
            .iter()
            .enumerate()
            .filter(|(_, blocks)| blocks.iter().any(|b| b.covers(block)))
            .fold(0, |bits, (g, _)| bits | 1 << g)
    };
    let ports = prune(
        all_blocks.into_iter().map(|b| (b, port_bits(&b))).collect(),
        PortBlock::covers,
    );
    Ok(Compiled {
        peers,
        ports,
        groups: groups.len(),
    })
}

/// The number of rule groups `rules` need (what [`compile`] checks against the limit).
pub(crate) fn group_count(rules: &[Rule]) -> usize {
    rules.iter().map(port_set).collect::<BTreeSet<_>>().len()
}

/// Drops entries a longest-prefix lookup would not miss: those whose bits equal their nearest
/// covering entry's (or are zero with no covering entry).
fn prune<B: Copy + Ord>(
    mut entries: Vec<(B, RuleBits)>,
    covers: impl Fn(&B, &B) -> bool,
) -> Vec<(B, RuleBits)> {
    let all = entries.clone();
    let nearest_cover = |block: &B| -> RuleBits {
        // The covering block with the most specific prefix is the one covered by all others.
        all.iter()
            .filter(|(b, _)| b != block && covers(b, block))
            .fold(None::<&(B, RuleBits)>, |best, candidate| match best {
                Some(best) if covers(&candidate.0, &best.0) => Some(best),
                _ => Some(candidate),
            })
            .map_or(0, |(_, bits)| *bits)
    };
    entries.retain(|(block, bits)| *bits != nearest_cover(block));
    entries
}

/// A longest-prefix lookup over compiled entries, as the kernel does it (for tests and the
/// benchmarks' expectations).
#[cfg(test)]
pub(crate) fn lookup(
    compiled: &Compiled,
    remote: std::net::Ipv4Addr,
    protocol: u8,
    port: Option<u16>,
) -> bool {
    let peer_bits = compiled
        .peers
        .iter()
        .filter(|(b, _)| b.contains(remote))
        .max_by_key(|(b, _)| b.prefix_len())
        .map_or(0, |(_, bits)| *bits);
    let probe = PortBlock {
        rel_len: if port.is_some() { 24 } else { 8 },
        protocol,
        port: port.unwrap_or(0),
    };
    let port_bits = compiled
        .ports
        .iter()
        .filter(|(b, _)| b.covers(&probe))
        .max_by_key(|(b, _)| b.rel_len)
        .map_or(0, |(_, bits)| *bits);
    peer_bits & port_bits != 0
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{PortMatch, Protocol};

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    /// A small deterministic generator (xorshift) so the tests need no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_rules(rng: &mut Rng) -> Vec<Rule> {
        let addr = |rng: &mut Rng| Ipv4Addr::new(198, 18, rng.below(4) as u8, rng.below(8) as u8);
        (0..rng.below(5))
            .map(|_| {
                let peers = (0..rng.below(3))
                    .map(|_| {
                        let block = Ipv4Cidr::new(addr(rng), 14 + rng.below(19) as u8).unwrap();
                        let mut peer = Peer::cidr(block);
                        for _ in 0..rng.below(3) {
                            let len = block.prefix_len()
                                + rng.below(u64::from(33 - block.prefix_len())) as u8;
                            let inside = u32::from(block.addr())
                                | (rng.next() as u32 & !mask_bits(block.prefix_len()));
                            peer = peer.except(Ipv4Cidr::new(Ipv4Addr::from(inside), len).unwrap());
                        }
                        peer
                    })
                    .collect::<Vec<_>>();
                let ports = (0..rng.below(3))
                    .map(|_| {
                        let protocol =
                            [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][rng.below(3) as usize];
                        match rng.below(3) {
                            0 => PortMatch::any_port(protocol),
                            1 => PortMatch::port(protocol, 1 + rng.below(100) as u16),
                            _ => {
                                let start = 1 + rng.below(100) as u16;
                                PortMatch::range(protocol, start..=start + rng.below(40) as u16)
                            }
                        }
                    })
                    .collect::<Vec<_>>();
                Rule::new(peers, ports)
            })
            .collect()
    }

    fn mask_bits(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    #[test]
    fn compiled_lookup_matches_direct_evaluation() {
        let mut rng = Rng(0x5eed_cafe_f00d_1234);
        for round in 0..400 {
            let rules = random_rules(&mut rng);
            let compiled = compile(&rules).unwrap();
            for _ in 0..200 {
                let remote = Ipv4Addr::new(198, 18, rng.below(4) as u8, rng.below(256) as u8);
                let protocol = [6u8, 17, 132, 1][rng.below(4) as usize];
                let port = (protocol != 1).then(|| rng.below(150) as u16);
                let expected = rules.iter().any(|r| r.allows(remote, protocol, port));
                assert_eq!(
                    lookup(&compiled, remote, protocol, port),
                    expected,
                    "round {round}: {remote} proto {protocol} port {port:?}\nrules {rules:#?}\ncompiled {compiled:#?}"
                );
            }
        }
    }

    #[test]
    fn except_blocks_and_ranges_compile_to_few_entries() {
        let rules = [Rule::new(
            [Peer::cidr(cidr("198.18.0.0/16")).except(cidr("198.18.1.0/24"))],
            [PortMatch::range(Protocol::Tcp, 8000..=8100)],
        )];
        let compiled = compile(&rules).unwrap();
        assert_eq!(compiled.groups, 1);
        assert_eq!(
            compiled.peers,
            vec![(cidr("198.18.0.0/16"), 1), (cidr("198.18.1.0/24"), 0)]
        );
        // 8000..=8100: 8000/11 bits.. split into aligned blocks.
        let covered: u32 = compiled
            .ports
            .iter()
            .map(|(b, _)| 1u32 << (24 - u32::from(b.rel_len)))
            .sum();
        assert_eq!(covered, 101);
        assert!(compiled.ports.len() <= 8, "{:?}", compiled.ports);
    }

    #[test]
    fn rules_with_equal_ports_share_a_group_and_limits_hold() {
        let same_ports = |i: u8| {
            Rule::new(
                [Peer::host(Ipv4Addr::new(198, 18, 0, i))],
                [PortMatch::port(Protocol::Tcp, 80)],
            )
        };
        let rules: Vec<Rule> = (1..=100).map(same_ports).collect();
        let compiled = compile(&rules).unwrap();
        assert_eq!(compiled.groups, 1);
        assert_eq!(compiled.peers.len(), 100);

        let distinct: Vec<Rule> = (1..=65u16)
            .map(|p| Rule::new([], [PortMatch::port(Protocol::Udp, p)]))
            .collect();
        assert_eq!(group_count(&distinct), 65);
        assert!(matches!(compile(&distinct), Err(TooManyGroups(65))));
        assert!(compile(&distinct[..64]).is_ok());
        assert_eq!(compile(&[]).unwrap(), Compiled::default());
    }

    #[test]
    fn full_port_range_is_one_block() {
        let mut out = Vec::new();
        range_blocks(6, 0, 65535, &mut out);
        assert_eq!(
            out,
            vec![PortBlock {
                rel_len: 8,
                protocol: 6,
                port: 0
            }]
        );
        out.clear();
        range_blocks(6, 1, 65535, &mut out);
        assert_eq!(out.len(), 16);
    }
}
