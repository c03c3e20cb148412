//! Error types.

use std::{io, net::SocketAddr};

/// Why a domain name is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// An empty label (`a..b`, or an empty name).
    #[error("empty label")]
    EmptyLabel,
    /// A label longer than 63 bytes.
    #[error("label of {0} bytes (at most 63)")]
    LabelTooLong(usize),
    /// A name longer than 255 bytes in wire format.
    #[error("name of {0} bytes in wire format (at most 255)")]
    TooLong(usize),
    /// A bad `\` escape in presentation format.
    #[error("bad escape in {0:?}")]
    BadEscape(String),
    /// The wire form ends inside a name.
    #[error("name truncated")]
    Truncated,
    /// A compression pointer that does not point strictly backwards.
    #[error("compression pointer to offset {0} does not point backwards")]
    BadPointer(usize),
    /// A label type other than a plain length or a pointer.
    #[error("unsupported label type byte {0:#04x}")]
    BadLabelType(u8),
    /// Bytes after the root label where exactly one name was expected.
    #[error("bytes after the end of the name")]
    TrailingBytes,
}

/// Errors of the DNS server and its forwarder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configured or given name is invalid.
    #[error("invalid name {name:?}: {source}")]
    Name {
        /// The text or object that held the name.
        name: String,
        /// Why it is invalid.
        #[source]
        source: NameError,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Binding a listening socket failed.
    #[error("binding {protocol} {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Another socket or thread operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The server needs a tokio runtime and none is running.
    #[error("no tokio runtime: start the server from within one")]
    NoRuntime,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
