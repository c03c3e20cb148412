//! The crate's error type.

use std::net::Ipv4Addr;

use crate::attach::{AttachedVia, Direction};

/// A boxed source error; keeps aya's types out of the public API.
pub(crate) type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the eBPF dataplane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The BPF object could not be parsed or its maps created.
    #[error("loading BPF object: {source}")]
    Object {
        /// What aya reported.
        #[source]
        source: Source,
    },
    /// The object lacks an expected program or map, or it has the wrong type.
    #[error("BPF object has no usable {kind} `{name}`")]
    Missing {
        /// "program" or "map".
        kind: &'static str,
        /// Its name.
        name: &'static str,
    },
    /// The kernel rejected a program (the verifier log is in the source).
    #[error("kernel rejected program `{program}`: {source}")]
    Verifier {
        /// The program's name.
        program: &'static str,
        /// The error, including the verifier log.
        #[source]
        source: Source,
    },
    /// Attaching to an interface failed.
    #[error("attaching `{program}` to {interface} {direction} via {via}: {source}")]
    Attach {
        /// The program's name.
        program: &'static str,
        /// The interface, resolved in the calling thread's network namespace.
        interface: String,
        /// Ingress or egress.
        direction: Direction,
        /// The mechanism that was tried.
        via: AttachedVia,
        /// What failed.
        #[source]
        source: Source,
    },
    /// TCX was requested but the kernel is older than 6.6.
    #[error("TCX attachment needs Linux >= 6.6")]
    TcxUnsupported,
    /// Detaching from an interface failed (teardown continues with the other attachments).
    #[error("detaching `{program}` from {interface} {direction}: {source}")]
    Detach {
        /// The program's name.
        program: &'static str,
        /// The interface.
        interface: String,
        /// Ingress or egress.
        direction: Direction,
        /// What failed.
        #[source]
        source: Source,
    },
    /// Several errors from one teardown.
    #[error("{} errors: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<Error>),
    /// A map read or write failed.
    #[error("{op} on map `{map}`: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The operation ("insert", "remove", "read").
        op: &'static str,
        /// What failed.
        #[source]
        source: Source,
    },
    /// The blocklist is full.
    #[error("blocklist full ({capacity} entries); cannot add {addr}")]
    BlocklistFull {
        /// The address that did not fit.
        addr: Ipv4Addr,
        /// The map's capacity.
        capacity: u32,
    },
}
