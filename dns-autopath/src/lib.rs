//! DNS AutoPath and a node-local caching DNS server.
#![deny(missing_docs)]

pub mod autopath;
pub mod cluster;
mod error;
mod name;
pub mod pod_index;
mod record;

pub use autopath::{AutoPathConfig, AutoPathPlanner, SearchPlan};
pub use error::{Error, NameError};
pub use name::{Labels, MAX_LABEL_LEN, MAX_NAME_LEN, Name};
pub use pod_index::{NoPods, PodIndex, StaticPodIndex};
pub use record::{DnsClass, Record, RecordData, RecordType};
