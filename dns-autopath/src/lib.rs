//! DNS AutoPath (server-side search-path completion) and a node-local caching DNS server for
//! Kubernetes pods.
//!
//! A pod's resolv.conf has `ndots:5` and three cluster search suffixes, so one lookup of an
//! external name costs its stub resolver up to five names times (A + AAAA) round trips, most of
//! them answered NXDOMAIN. Running on the node, where the pod IP -> namespace mapping is known
//! first-hand, this server recognises the first step of a search-list walk, walks the list
//! itself and answers with a CNAME to what it found: one round trip per record type.
//!
//! Layers, each usable alone:
//!
//! - [`AutoPathPlanner`]: pure logic deciding which names to try for a query;
//! - seams: [`PodIndex`] (client IP -> namespace), [`ClusterRecords`] (the Kubernetes DNS
//!   schema; [`cluster::ClusterTable`] implements it in memory), [`upstream::Upstream`]
//!   ([`upstream::Forwarder`] forwards over UDP/TCP);
//! - [`DnsServer`]: UDP and TCP listener with a cache that serves hits from pre-encoded bytes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cnikit_dns_autopath::{
//!     DnsServer, ServerConfig, StaticPodIndex,
//!     cluster::{ClusterTable, Service},
//!     upstream::{Forwarder, ForwarderConfig},
//! };
//!
//! let table = Arc::new(ClusterTable::new("cluster.local".parse()?));
//! table.upsert_service(&Service::cluster_ip("prod", "web", vec!["10.96.0.10".parse()?]))?;
//! let pods = Arc::new(StaticPodIndex::new());
//! pods.insert("198.18.0.10".parse()?, "prod"); // fed by the IP allocator
//! let upstream = Forwarder::new(ForwarderConfig::new(vec!["10.0.0.2:53".parse()?]))?;
//! let server = DnsServer::builder(ServerConfig::default()) // 169.254.20.10:53
//!     .records(table)
//!     .pod_index(pods)
//!     .upstream(Arc::new(upstream))
//!     .bind()
//!     .await?;
//! // ... `server.stats()`, then `server.shutdown().await`.
//! # Ok(()) }
//! ```
//!
//! The crate README walks through an example exchange.
#![deny(missing_docs)]

pub mod autopath;
mod cache;
pub mod cluster;
mod codec;
pub mod config;
mod error;
mod name;
pub mod pod_index;
mod record;
mod resolver;
mod secs;
pub mod server;
pub mod upstream;
mod wire;

pub use autopath::{AutoPathConfig, AutoPathPlanner, SearchPlan};
pub use cache::{CacheConfig, PrefetchConfig};
pub use cluster::ClusterRecords;
pub use error::{Error, NameError};
pub use name::{Labels, MAX_LABEL_LEN, MAX_NAME_LEN, Name};
pub use pod_index::{NoPods, PodIndex, StaticPodIndex};
pub use record::{DnsClass, Record, RecordData, RecordType};
pub use server::{DnsServer, DnsServerBuilder, ServerConfig, ServerStats};
