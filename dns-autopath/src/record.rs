//! Resource records in the crate's own types (the seams never expose a wire library's types).

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use crate::Name;

/// A DNS record type (RFC 1035 §3.2.2 and later registrations), by number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordType(pub u16);

impl RecordType {
    /// IPv4 address.
    pub const A: Self = Self(1);
    /// Name server.
    pub const NS: Self = Self(2);
    /// Canonical name (alias).
    pub const CNAME: Self = Self(5);
    /// Start of authority.
    pub const SOA: Self = Self(6);
    /// Reverse pointer.
    pub const PTR: Self = Self(12);
    /// Mail exchanger.
    pub const MX: Self = Self(15);
    /// Text.
    pub const TXT: Self = Self(16);
    /// IPv6 address.
    pub const AAAA: Self = Self(28);
    /// Service location (RFC 2782).
    pub const SRV: Self = Self(33);
    /// EDNS(0) pseudo-record (RFC 6891); never a question type.
    pub const OPT: Self = Self(41);
    /// Service binding (RFC 9460).
    pub const SVCB: Self = Self(64);
    /// HTTPS service binding (RFC 9460).
    pub const HTTPS: Self = Self(65);
    /// Incremental zone transfer.
    pub const IXFR: Self = Self(251);
    /// Full zone transfer.
    pub const AXFR: Self = Self(252);
    /// Any type (`*`).
    pub const ANY: Self = Self(255);

    /// True for the zone-transfer and pseudo types that are never answered from a cache or
    /// searched (AXFR, IXFR, OPT).
    #[must_use]
    pub fn is_meta(self) -> bool {
        matches!(self, Self::AXFR | Self::IXFR | Self::OPT)
    }
}

impl fmt::Debug for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::A => "A",
            Self::NS => "NS",
            Self::CNAME => "CNAME",
            Self::SOA => "SOA",
            Self::PTR => "PTR",
            Self::MX => "MX",
            Self::TXT => "TXT",
            Self::AAAA => "AAAA",
            Self::SRV => "SRV",
            Self::OPT => "OPT",
            Self::SVCB => "SVCB",
            Self::HTTPS => "HTTPS",
            Self::IXFR => "IXFR",
            Self::AXFR => "AXFR",
            Self::ANY => "ANY",
            Self(other) => return write!(f, "TYPE{other}"),
        };
        f.write_str(name)
    }
}

/// A DNS class, by number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DnsClass(pub u16);

impl DnsClass {
    /// The Internet.
    pub const IN: Self = Self(1);
    /// Chaos (`version.bind` and friends).
    pub const CH: Self = Self(3);
    /// Hesiod.
    pub const HS: Self = Self(4);
    /// Any class.
    pub const ANY: Self = Self(255);
}

/// The data of a record that the cluster seam can produce.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum RecordData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias target.
    Cname(Name),
    /// Reverse-lookup target.
    Ptr(Name),
    /// Name server.
    Ns(Name),
    /// Service location.
    Srv {
        /// Lower is preferred.
        priority: u16,
        /// Relative weight among equal priorities.
        weight: u16,
        /// Port number.
        port: u16,
        /// Host providing the service.
        target: Name,
    },
    /// Text strings (each at most 255 bytes on the wire).
    Txt(Vec<String>),
    /// Start of authority.
    Soa {
        /// Primary name server.
        mname: Name,
        /// Responsible mailbox.
        rname: Name,
        /// Zone serial.
        serial: u32,
        /// Secondary refresh interval, seconds.
        refresh: u32,
        /// Secondary retry interval, seconds.
        retry: u32,
        /// Secondary expiry, seconds.
        expire: u32,
        /// Negative-caching TTL (RFC 2308), seconds.
        minimum: u32,
    },
}

impl RecordData {
    /// The record type this data belongs to.
    #[must_use]
    pub fn record_type(&self) -> RecordType {
        match self {
            Self::A(_) => RecordType::A,
            Self::Aaaa(_) => RecordType::AAAA,
            Self::Cname(_) => RecordType::CNAME,
            Self::Ptr(_) => RecordType::PTR,
            Self::Ns(_) => RecordType::NS,
            Self::Srv { .. } => RecordType::SRV,
            Self::Txt(_) => RecordType::TXT,
            Self::Soa { .. } => RecordType::SOA,
        }
    }
}

/// One resource record of class IN.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    /// Owner name.
    pub name: Name,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The data.
    pub data: RecordData,
}

impl Record {
    /// A record of class IN.
    #[must_use]
    pub fn new(name: Name, ttl: u32, data: RecordData) -> Self {
        Self { name, ttl, data }
    }

    /// The record's type.
    #[must_use]
    pub fn record_type(&self) -> RecordType {
        self.data.record_type()
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} IN {} ", self.name, self.ttl, self.record_type())?;
        match &self.data {
            RecordData::A(ip) => write!(f, "{ip}"),
            RecordData::Aaaa(ip) => write!(f, "{ip}"),
            RecordData::Cname(n) | RecordData::Ptr(n) | RecordData::Ns(n) => write!(f, "{n}"),
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "{priority} {weight} {port} {target}"),
            RecordData::Txt(strings) => {
                for (i, s) in strings.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{s:?}")?;
                }
                Ok(())
            }
            RecordData::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => write!(
                f,
                "{mname} {rname} {serial} {refresh} {retry} {expire} {minimum}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_zone_file_like() {
        let r = Record::new(
            "_http._tcp.web.prod.svc.cluster.local".parse().unwrap(),
            5,
            RecordData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "web.prod.svc.cluster.local".parse().unwrap(),
            },
        );
        assert_eq!(
            r.to_string(),
            "_http._tcp.web.prod.svc.cluster.local. 5 IN SRV 0 100 80 web.prod.svc.cluster.local."
        );
        assert_eq!(RecordType(999).to_string(), "TYPE999");
        assert_eq!(RecordType::AAAA.to_string(), "AAAA");
        assert!(RecordType::AXFR.is_meta() && !RecordType::ANY.is_meta());
    }
}
