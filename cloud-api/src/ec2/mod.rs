//! AWS EC2 (feature `aws`): the client ([`Ec2Client`], Query API 2016-11-15 signed with `SigV4`
//! through `aws-sigv4`), its actions and published rate limits, error codes, the transport
//! seam, and [`Ec2ProviderConfig`] for building a provider from a configuration file.

mod action;
mod client;
pub mod codes;
mod config;
#[cfg(feature = "sim")]
pub mod testbed;
mod transport;
pub(crate) mod wire;

pub use action::{EC2_VERSION, Ec2Action};
pub use client::{Ec2Client, Ec2Config};
pub use config::{Ec2CredentialsSource, Ec2Provider, Ec2ProviderConfig};
pub use transport::{Ec2HttpRequest, Ec2HttpResponse, Ec2Transport};
