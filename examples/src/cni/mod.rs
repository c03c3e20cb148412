//! The CNI specification (1.1, with 0.3.x, 0.4.0 and 1.0.0 compatibility) as small serde types:
//! the invocation [environment](mod@env), the network [`config`], the [`result`], the [`error`]
//! result with its reserved codes, and [`version`]s.
//!
//! Nothing here panics on input: every malformed environment, configuration or previous
//! result becomes a [`CniError`] with the code the specification reserves for it.

pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use config::{GcAttachment, NetConf, PluginMode, Wiring};
pub use env::{Command, Environment};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::Version;
