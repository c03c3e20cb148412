//! Load-time settings of the dataplane programs (read-only globals the loader may override).
//!
//! Timeouts are in nanoseconds of `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`).

/// Global: idle timeout of TCP connections.
pub const TCP_TIMEOUT_GLOBAL: &str = "CNK_TCP_TIMEOUT_NS";
/// Global: idle timeout of TCP connections after a FIN or RST.
pub const TCP_CLOSING_TIMEOUT_GLOBAL: &str = "CNK_TCP_CLOSE_NS";
/// Global: idle timeout of UDP and other flows.
pub const OTHER_TIMEOUT_GLOBAL: &str = "CNK_OTHER_TIMEOUT_NS";

/// Default idle timeout of TCP connections: 6 hours.
pub const DEFAULT_TCP_TIMEOUT_NS: u64 = 6 * 3600 * 1_000_000_000;
/// Default idle timeout of closing TCP connections: 10 seconds.
pub const DEFAULT_TCP_CLOSING_TIMEOUT_NS: u64 = 10 * 1_000_000_000;
/// Default idle timeout of UDP and other flows: 60 seconds.
pub const DEFAULT_OTHER_TIMEOUT_NS: u64 = 60 * 1_000_000_000;
