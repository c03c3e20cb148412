//! The crate's error type.

use std::{net::Ipv4Addr, path::PathBuf};

use crate::{
    ServiceKey, Table,
    attach::{AttachedVia, Direction},
};

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
    /// Adding a `clsact` qdisc to an interface failed.
    #[error("adding a clsact qdisc to {interface}: {source}")]
    Qdisc {
        /// The interface, resolved in the calling thread's network namespace.
        interface: String,
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
    /// A table is full.
    #[error("{table} full ({capacity} entries)")]
    CapacityExceeded {
        /// Which table.
        table: Table,
        /// Its capacity.
        capacity: u32,
    },
    /// A service's settings are unusable.
    #[error("service {service}: {reason}")]
    InvalidService {
        /// The service.
        service: ServiceKey,
        /// What is wrong.
        reason: String,
    },
    /// A service has more backends than a service can hold.
    #[error("service {service}: {count} backends, at most {max}")]
    TooManyBackends {
        /// The service.
        service: ServiceKey,
        /// Backends given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The service does not exist.
    #[error("no service {service}")]
    UnknownService {
        /// The service.
        service: ServiceKey,
    },
    /// A policy is not valid Kubernetes NetworkPolicy.
    #[error("policy of endpoint {endpoint}: {reason}")]
    InvalidPolicy {
        /// The endpoint.
        endpoint: Ipv4Addr,
        /// What is wrong.
        reason: String,
    },
    /// A policy uses more distinct port sets in one direction than the datapath can tell apart.
    #[error("policy of endpoint {endpoint} ({}): {groups} distinct port sets, at most {max}", if *.egress { "egress" } else { "ingress" })]
    TooManyRuleGroups {
        /// The endpoint.
        endpoint: Ipv4Addr,
        /// Which direction.
        egress: bool,
        /// Distinct port sets used.
        groups: usize,
        /// The limit.
        max: usize,
    },
    /// Not an `address/length` IPv4 CIDR.
    #[error("invalid IPv4 CIDR {0:?}")]
    InvalidCidr(String),
    /// Capacities or timeouts that cannot be used.
    #[error("invalid dataplane configuration: {0}")]
    InvalidConfig(String),
    /// A pinned map left by an earlier run does not have the layout or size this build expects.
    #[error("pinned map {} does not match: {reason} (remove the pin directory to start fresh)", .path.display())]
    PinnedMapMismatch {
        /// The pin.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// Working with the pin directory (bpffs) failed.
    #[error("pin directory {}: {source}", .path.display())]
    Pin {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Source,
    },
    /// Running a packet through a program (`BPF_PROG_TEST_RUN`) failed or gave garbage.
    #[error("running a packet through `{program}`: {source}")]
    TestRun {
        /// The program.
        program: &'static str,
        /// What failed.
        #[source]
        source: Source,
    },
}
