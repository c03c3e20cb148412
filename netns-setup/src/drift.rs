//! What `check` reports: each difference between the wiring a driver would create and what the
//! kernel has.

use std::{fmt, net::IpAddr};

use ipnetwork::IpNetwork;

use crate::{
    error::Side,
    netlink::{MacAddr, Route, Rule},
};

/// One difference between the expected wiring and the kernel's state.
///
/// Objects that hang off a missing link (its addresses, routes, neighbours) are not reported
/// separately: the missing link is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Drift {
    /// A link is missing.
    MissingLink {
        /// Where.
        side: Side,
        /// Its name.
        name: String,
    },
    /// A link is administratively down.
    LinkDown {
        /// Where.
        side: Side,
        /// Its name.
        name: String,
    },
    /// A link has another MTU.
    WrongMtu {
        /// Where.
        side: Side,
        /// Its name.
        name: String,
        /// What the wiring sets.
        expected: u32,
        /// What the kernel has.
        actual: u32,
    },
    /// A link has another hardware address.
    WrongMac {
        /// Where.
        side: Side,
        /// Its name.
        name: String,
        /// What the wiring sets.
        expected: MacAddr,
        /// What the kernel has.
        actual: Option<MacAddr>,
    },
    /// An address is missing from a link.
    MissingAddress {
        /// Where.
        side: Side,
        /// The link's name.
        link: String,
        /// The address.
        address: IpNetwork,
    },
    /// A route is missing (or points elsewhere).
    MissingRoute {
        /// Where.
        side: Side,
        /// The output link's name.
        link: String,
        /// The expected route.
        route: Route,
    },
    /// A policy routing rule is missing.
    MissingRule {
        /// Where (rules live in the node namespace).
        side: Side,
        /// The expected rule.
        rule: Rule,
    },
    /// A neighbour entry is missing.
    MissingNeighbour {
        /// Where.
        side: Side,
        /// The link's name.
        link: String,
        /// The neighbour's IP.
        ip: IpAddr,
    },
    /// A neighbour entry has another MAC or is not permanent.
    WrongNeighbour {
        /// Where.
        side: Side,
        /// The link's name.
        link: String,
        /// The neighbour's IP.
        ip: IpAddr,
        /// The MAC the wiring sets.
        expected: MacAddr,
        /// What the kernel has.
        actual: Option<MacAddr>,
        /// Whether the kernel's entry is permanent.
        permanent: bool,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingLink { side, name } => write!(f, "{side}: link {name} is missing"),
            Self::LinkDown { side, name } => write!(f, "{side}: link {name} is down"),
            Self::WrongMtu {
                side,
                name,
                expected,
                actual,
            } => write!(
                f,
                "{side}: link {name} has MTU {actual}, expected {expected}"
            ),
            Self::WrongMac {
                side,
                name,
                expected,
                actual,
            } => write!(
                f,
                "{side}: link {name} has MAC {actual:?}, expected {expected}"
            ),
            Self::MissingAddress {
                side,
                link,
                address,
            } => write!(f, "{side}: address {address} is missing from {link}"),
            Self::MissingRoute { side, link, route } => {
                write!(f, "{side}: route {route} (dev {link}) is missing")
            }
            Self::MissingRule { side, rule } => write!(f, "{side}: rule {rule} is missing"),
            Self::MissingNeighbour { side, link, ip } => {
                write!(f, "{side}: neighbour {ip} on {link} is missing")
            }
            Self::WrongNeighbour {
                side,
                link,
                ip,
                expected,
                actual,
                permanent,
            } => write!(
                f,
                "{side}: neighbour {ip} on {link} is {actual:?} (permanent: {permanent}), expected permanent {expected}"
            ),
        }
    }
}
