//! The cluster-records seam: names the node answers itself, following the
//! [Kubernetes DNS specification](https://github.com/kubernetes/dns/blob/master/docs/specification.md).
//!
//! [`ClusterRecords`] is the trait the server asks first for every name; [`ClusterTable`] is the
//! in-memory implementation fed with plain [`Service`] and [`Pod`] data (from the API server, a
//! static file, or the CNI's own allocations).

mod objects;
mod table;

pub use objects::{Endpoint, Pod, PodRecords, Protocol, Service, ServiceKind, ServicePort};
pub use table::{ClusterTable, ClusterTableConfig, DEFAULT_RECORD_TTL, SCHEMA_VERSION};

use std::net::IpAddr;

use crate::{Name, Record, RecordType};

/// The answer of a [`ClusterRecords`] source for one name and type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lookup {
    /// Records of the asked type (or a CNAME for the name, which the server follows).
    Answer {
        /// The answer section.
        answers: Vec<Record>,
        /// Helpful extras, e.g. the addresses of SRV targets.
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of the asked type.
    NoData {
        /// The zone's SOA, for negative caching (RFC 2308).
        soa: Option<Record>,
    },
    /// The name does not exist.
    NxDomain {
        /// The zone's SOA, for negative caching (RFC 2308).
        soa: Option<Record>,
    },
}

/// A source of records the node answers authoritatively (the cluster zone, reverse names of
/// Service and Pod addresses).
///
/// Called on the server's slow path (cache misses) from async tasks: it must not block for long.
pub trait ClusterRecords: Send + Sync + 'static {
    /// The answer for `name` and `qtype`, or `None` when `name` is not this source's to answer
    /// (the server then forwards it upstream).
    fn lookup(&self, name: &Name, qtype: RecordType) -> Option<Lookup>;

    /// A number that changes whenever the records change. Cached answers that depend on this
    /// source are dropped when it moves, so a deleted Service stops resolving at once rather
    /// than after the cache TTL. Sources that never change may keep the default.
    fn generation(&self) -> u64 {
        0
    }
}

impl<T: ClusterRecords> ClusterRecords for std::sync::Arc<T> {
    fn lookup(&self, name: &Name, qtype: RecordType) -> Option<Lookup> {
        (**self).lookup(name, qtype)
    }

    fn generation(&self) -> u64 {
        (**self).generation()
    }
}

/// The source that answers nothing: everything goes upstream.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoRecords;

impl ClusterRecords for NoRecords {
    fn lookup(&self, _name: &Name, _qtype: RecordType) -> Option<Lookup> {
        None
    }
}

/// The reverse-lookup name of an address: `d.c.b.a.in-addr.arpa.` for IPv4, 32 nibbles under
/// `ip6.arpa.` for IPv6.
///
/// ```
/// use cnikit_dns_autopath::cluster::reverse_name;
///
/// assert_eq!(reverse_name("10.96.0.1".parse().unwrap()).to_string(), "1.0.96.10.in-addr.arpa.");
/// assert!(reverse_name("fd00::1".parse().unwrap()).to_string().starts_with("1.0.0.0."));
/// ```
#[must_use]
pub fn reverse_name(ip: IpAddr) -> Name {
    let labels: Vec<String> = match ip {
        IpAddr::V4(v4) => v4
            .octets()
            .iter()
            .rev()
            .map(ToString::to_string)
            .chain(["in-addr".to_owned(), "arpa".to_owned()])
            .collect(),
        IpAddr::V6(v6) => v6
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [b & 0x0F, b >> 4])
            .map(|nibble| format!("{nibble:x}"))
            .chain(["ip6".to_owned(), "arpa".to_owned()])
            .collect(),
    };
    // At most 34 labels of at most 7 bytes: always a valid name.
    Name::from_labels(labels).expect("reverse names are always valid")
}

/// The address a reverse-lookup name stands for, if it is a complete one.
#[must_use]
pub fn address_of_reverse_name(name: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name.labels().collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if *in_addr == b"in-addr" && *arpa == b"arpa" => {
            let octet = |l: &[u8]| std::str::from_utf8(l).ok()?.parse::<u8>().ok();
            // Reject leading zeros ("01"), which are not the canonical form.
            if [d, c, b, a]
                .iter()
                .any(|l| l.len() > 1 && l.first() == Some(&b'0'))
            {
                return None;
            }
            Some(IpAddr::from([octet(a)?, octet(b)?, octet(c)?, octet(d)?]))
        }
        [nibbles @ .., ip6, arpa] if nibbles.len() == 32 && *ip6 == b"ip6" && *arpa == b"arpa" => {
            let mut octets = [0u8; 16];
            for (i, pair) in nibbles.chunks(2).enumerate() {
                let nib = |l: &[u8]| match l {
                    [c] => char::from(*c)
                        .to_digit(16)
                        .and_then(|v| u8::try_from(v).ok()),
                    _ => None,
                };
                octets[15 - i] = nib(pair[0])? | (nib(pair[1])? << 4);
            }
            Some(IpAddr::from(octets))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_round_trip() {
        for ip in ["10.96.0.1", "198.18.0.10", "fd00::1", "2001:db8::abcd:1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(address_of_reverse_name(&reverse_name(ip)), Some(ip));
        }
        let v6 = reverse_name("2001:db8::1".parse().unwrap()).to_string();
        assert_eq!(
            v6,
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
        for bad in [
            "0.96.10.in-addr.arpa",
            "1.01.96.10.in-addr.arpa",
            "x.0.96.10.in-addr.arpa",
        ] {
            assert_eq!(
                address_of_reverse_name(&bad.parse().unwrap()),
                None,
                "{bad}"
            );
        }
    }
}
