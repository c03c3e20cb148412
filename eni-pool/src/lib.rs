//! A warm pool of ENI IPs and exclusive ENIs for ENI-based container networking.
//!
//! One engine hands out two kinds of resource: a secondary IP on a shared ENI (for IPVLAN
//! and veth pods) and a whole ENI (for exclusive-ENI pods). Every [`Allocation`] carries
//! what pod wiring needs: the address(es), the ENI id and MAC, the vSwitch CIDR and gateway,
//! and the ENI's route table.
//!
//! - **Fast path.** [`Pool::allocate`] from idle takes a lock and one durable record commit;
//!   it makes no cloud call and never waits for a background tick. A retried ADD (same
//!   [`PodKey`]) gets the same resource; releasing twice is fine.
//! - **Demand.** When the pool is empty, the request waits while the engine calls the cloud
//!   at once, batched: one assign call serves many waiters (up to the per-call and per-ENI
//!   limits), new ENIs are created with their addresses in the same call, attaches run in
//!   parallel, and waiters are woken as addresses arrive. At the deadline a request fails
//!   with [`Error::Exhausted`] naming the cause ([`Blocker`]).
//! - **Watermarks.** Below `min_idle` the pool pre-warms; above `max_idle` for
//!   `idle_release_after` it gives the surplus back in jittered batches (whole ENIs when one
//!   is entirely idle); a one-time warm-up target runs at a node's first start; released
//!   resources cool down before reuse (30 s by default). See [`PoolConfig`].
//! - **Failures.** Throttling and transient errors back off; an exhausted vSwitch is skipped
//!   for another configured one and paused; quotas pause their path.
//! - **Records.** Allocations and releases are durable before they are acknowledged
//!   ([`RecordStore`]; [`FileStore`] journals with group commit). At start the pool loads the
//!   records, lists its tagged ENIs in the cloud, adopts them, drops the records of pods the
//!   [`Liveness`] oracle says are gone and deletes its detached ENIs after a grace period.
//!   GC repeats this periodically.
//!
//! The seams are traits: the cloud ([`cnikit_cloud_api::CloudProvider`]), the record store
//! ([`RecordStore`]) and the liveness oracle ([`Liveness`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use cnikit_eni_pool::{AllocateRequest, FileStore, LivePodSet, PodKey, Pool, PoolConfig};
//!
//! # async fn run(cloud: Arc<dyn cnikit_cloud_api::CloudProvider>) -> Result<(), Box<dyn std::error::Error>> {
//! let config = PoolConfig::new("i-node1", "ecs.g7.xlarge", ["vsw-a", "vsw-b"], ["sg-1"]);
//! let pods = LivePodSet::new();
//! let pool = Pool::builder(config)
//!     .cloud(cloud)
//!     .store(Arc::new(FileStore::open("/var/lib/cnikit/pool")?))
//!     .liveness(Arc::new(pods.clone()))
//!     .start()
//!     .await?;
//! let pod = PodKey::new("default", "web-0", "3f2a9c", "eth0");
//! pods.insert(pod.clone());
//! let alloc = pool.allocate(&AllocateRequest::shared_ip(pod.clone())).await?;
//! println!("{} on {} ({}), gateway {}", alloc.ipv4, alloc.eni_id, alloc.mac, alloc.gateway);
//! pool.release(&pod).await?;
//! # Ok(()) }
//! ```
//!
//! Part of [cnikit](https://github.com/cnikit/cnikit); see `docs/ARCHITECTURE.md` for where this
//! layer sits and what it may depend on.
#![deny(missing_docs)]

mod allocation;
mod config;
mod engine;
mod error;
mod liveness;
mod metered;
pub mod metrics;
mod plan;
mod pod;
mod pool;
mod reconcile;
mod state;
pub mod store;

pub use allocation::{Allocation, GatewayRule, ResourceId};
pub use config::{Capacity, IpStack, PoolConfig, VSwitchSelection, Watermarks, tags};
pub use error::{Blocker, Error, Result};
pub use liveness::{LivePodSet, Liveness, LivenessError, NoLiveness, PodLiveness};
pub use metrics::MetricsSnapshot;
pub use pod::{AllocateRequest, PodKey, ResourceKind};
pub use pool::{Pool, PoolBuilder};
pub use reconcile::{GcReport, StartReport};
pub use store::{FileStore, MemoryStore, RecordStore};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
