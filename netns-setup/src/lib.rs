//! Pod network namespace wiring over in-process netlink: exclusive ENI, IPVLAN on a shared ENI,
//! and veth + policy routing, with capability probing and fallback.
//!
//! - [`netns`]: namespace handles (by path, by pid, named ones created and deleted, scratch).
//! - [`netlink`]: the [`NetlinkHandle`](netlink::NetlinkHandle) seam bound to one namespace, its
//!   rtnetlink implementation, an in-memory [fake kernel](netlink::fake) and
//!   [failure injection](netlink::fault).
//! - [`PodDriver`]: `setup` (idempotent, rolls back on failure), `teardown` (keeps going,
//!   reports every error), `check` (typed [`Drift`] list); [`ExclusiveEniDriver`],
//!   [`IpVlanDriver`], [`VethDriver`].
//! - [`probe`]: whether the kernel can create ipvlan links (by trying), and the driver choice
//!   with its fallback reason.
//! - [`naming`]: the fixed rule priorities, table numbering and host-side names.
//!
//! The input is plain data ([`PodNetwork`]): nothing here knows about clouds or pools.
//! No `ip`, `tc` or `sysctl` binary is ever run.
//!
//! # Example
//!
//! ```no_run
//! use cnikit_netns_setup::{EniRef, Mode, Netns, Node, PodNetwork, probe};
//!
//! # async fn wire() -> Result<(), cnikit_netns_setup::Error> {
//! let node = Node::current()?;
//! let choice = probe::probe_and_choose(Mode::IpVlan, node.connector().as_ref()).await?;
//! if let Some(why) = &choice.fallback_reason {
//!     eprintln!("using {} instead of {}: {why}", choice.chosen, choice.requested);
//! }
//! let pod = PodNetwork::new(
//!     "9f3c2a7d41e0",
//!     Netns::from_path("/var/run/netns/cni-1234")?,
//!     EniRef::Name("eth1".into()),
//! )
//! .with_ip("198.18.0.5/24".parse().unwrap(), "198.18.0.1".parse().unwrap())
//! .with_service_cidr("198.19.0.0/20".parse().unwrap())
//! .with_node_ip("198.18.0.10".parse().unwrap());
//! let driver = choice.driver();
//! let wired = driver.setup(&node, &pod).await?;
//! println!("{} is up with MAC {:?}", wired.interface, wired.mac);
//! assert!(driver.check(&node, &pod).await?.is_empty());
//! driver.teardown(&node, &pod).await?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod drift;
mod driver;
mod error;
pub mod naming;
pub mod netlink;
pub mod netns;
mod plan;
pub mod probe;
mod spec;
pub mod sysctl;

pub use drift::Drift;
pub use driver::{
    ExclusiveEniDriver, IpVlanDriver, Mode, Node, PodDriver, Retired, VethDriver, Wired,
};
pub use error::{Error, NetlinkError, Side};
pub use netns::Netns;
pub use plan::Report;
pub use spec::{EniRef, IpConfig, MAX_IFNAME_LEN, PodNetwork, SpecError, validate_ifname};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
