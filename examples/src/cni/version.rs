//! CNI specification versions: parsing, ordering, and the versions this plugin speaks.

use std::{fmt, str::FromStr};

/// A CNI specification version (`major.minor.patch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major.
    pub major: u16,
    /// Minor.
    pub minor: u16,
    /// Patch.
    pub patch: u16,
}

impl Version {
    /// 0.3.0: the rich result (interfaces, ips, routes, dns).
    pub const V0_3_0: Self = Self::new(0, 3, 0);
    /// 0.3.1.
    pub const V0_3_1: Self = Self::new(0, 3, 1);
    /// 0.4.0: `CHECK`, and `prevResult` on `DEL`.
    pub const V0_4_0: Self = Self::new(0, 4, 0);
    /// 1.0.0: no `version` in `ips`.
    pub const V1_0_0: Self = Self::new(1, 0, 0);
    /// 1.1.0: `STATUS`, `GC`, route and interface fields.
    pub const V1_1_0: Self = Self::new(1, 1, 0);

    /// Every version this plugin accepts, oldest first.
    pub const SUPPORTED: [Self; 5] = [
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    /// The newest version this plugin speaks.
    pub const LATEST: Self = Self::V1_1_0;

    /// `major.minor.patch`.
    #[must_use]
    pub const fn new(major: u16, minor: u16, patch: u16) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Whether this plugin speaks `self`.
    #[must_use]
    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A version string that is not `major.minor.patch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CNI version {0:?} (expected major.minor.patch)")]
pub struct VersionParseError(pub String);

impl FromStr for Version {
    type Err = VersionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionParseError(s.to_owned());
        let mut parts = s.split('.').map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                Err(bad())
            } else {
                p.parse::<u16>().map_err(|_| bad())
            }
        });
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Self::new(major?, minor?, patch?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_order_and_support() {
        let v: Version = "1.1.0".parse().unwrap();
        assert_eq!(v, Version::V1_1_0);
        assert_eq!(v.to_string(), "1.1.0");
        assert!(Version::V0_4_0 < Version::V1_0_0);
        assert!(Version::V0_3_1 > Version::V0_3_0);
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0.0",
            "a.b.c",
            "1.-1.0",
            "1..0",
            "99999999.0.0",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        assert!(!"0.2.0".parse::<Version>().unwrap().is_supported());
        assert!(Version::SUPPORTED.iter().all(|v| v.is_supported()));
    }
}
