//! Finding an ENI's interface on the node: the [`EniLinks`] seam.
//!
//! On a real instance the cloud attaches the ENI and the kernel shows a new NIC with the ENI's
//! MAC ([`MacLookup`] waits for it). In demos and tests nothing appears by itself, so
//! [`SimVpc`] plays the VPC: it creates a veth per ENI whose node end carries the ENI's MAC
//! and whose other end sits in a "VPC" namespace with the vSwitch gateway's address, and it
//! routes each allocated address to its ENI there, as the VPC's fabric would.

use std::{
    collections::HashMap,
    fmt,
    hash::{DefaultHasher, Hash, Hasher},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use cnikit_eni_pool::Allocation;
use cnikit_netns_setup::{
    Netns,
    netlink::{
        Address, Connector, Handle, LinkChange, MacAddr, Neighbour, NewLink, Route, RtConnector,
        Scope, TABLE_MAIN, VethPeer,
    },
};
use ipnetwork::{IpNetwork, Ipv4Network};
use tokio::{sync::Mutex, time::Instant};

/// An ENI's interface could not be found or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The MAC did not show up in time.
    #[error("ENI {eni} (MAC {mac}) did not appear on the node within {waited:?}")]
    NotFound {
        /// The ENI.
        eni: String,
        /// Its MAC.
        mac: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The allocation's MAC is not a MAC.
    #[error("ENI {eni}: {mac:?} is not a MAC address")]
    BadMac {
        /// The ENI.
        eni: String,
        /// The text.
        mac: String,
    },
    /// A netlink request failed.
    #[error("ENI {eni}: {what}: {source}")]
    Netlink {
        /// The ENI.
        eni: String,
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Finds (or, in simulation, makes) the node-namespace interface of an allocation's ENI.
#[async_trait]
pub trait EniLinks: Send + Sync + fmt::Debug {
    /// The interface name of `alloc`'s ENI in the node namespace.
    ///
    /// # Errors
    /// [`LinkError`] when it cannot be found or made.
    async fn ensure(&self, alloc: &Allocation) -> Result<String, LinkError>;

    /// `alloc`'s address went back to the pool (the simulated VPC forgets its route).
    ///
    /// # Errors
    /// [`LinkError`] for a failed cleanup.
    async fn released(&self, alloc: &Allocation) -> Result<(), LinkError>;
}

fn parse_mac(alloc: &Allocation) -> Result<MacAddr, LinkError> {
    alloc.mac.parse().map_err(|_| LinkError::BadMac {
        eni: alloc.eni_id.clone(),
        mac: alloc.mac.clone(),
    })
}

fn nl(
    alloc: &Allocation,
    what: impl Into<String>,
) -> impl FnOnce(cnikit_netns_setup::NetlinkError) -> LinkError {
    let eni = alloc.eni_id.clone();
    let what = what.into();
    move |e| LinkError::Netlink {
        eni,
        what,
        source: Box::new(e),
    }
}

/// Real instances: the interface whose MAC is the ENI's, waiting for a fresh one to appear.
#[derive(Debug)]
pub struct MacLookup {
    node: Handle,
    wait: Duration,
}

impl MacLookup {
    /// Looks in the namespace of `node`, waiting at most `wait`.
    #[must_use]
    pub fn new(node: Handle, wait: Duration) -> Self {
        Self { node, wait }
    }
}

#[async_trait]
impl EniLinks for MacLookup {
    async fn ensure(&self, alloc: &Allocation) -> Result<String, LinkError> {
        let mac = parse_mac(alloc)?;
        let deadline = Instant::now() + self.wait;
        let mut pause = Duration::from_millis(50);
        loop {
            let links = self
                .node
                .links()
                .await
                .map_err(nl(alloc, "listing links"))?;
            if let Some(link) = links.into_iter().find(|l| l.mac == Some(mac)) {
                return Ok(link.name);
            }
            if Instant::now() >= deadline {
                return Err(LinkError::NotFound {
                    eni: alloc.eni_id.clone(),
                    mac: alloc.mac.clone(),
                    waited: self.wait,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn released(&self, _alloc: &Allocation) -> Result<(), LinkError> {
        Ok(())
    }
}

/// The simulated VPC (demos and tests). See the module documentation.
pub struct SimVpc {
    node: Handle,
    vpc: Handle,
    vpc_netns: Netns,
    /// ENI id → (node interface, VPC-side interface index).
    enis: Mutex<HashMap<String, (String, u32)>>,
}

impl fmt::Debug for SimVpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimVpc")
            .field("vpc_netns", &self.vpc_netns)
            .finish_non_exhaustive()
    }
}

impl SimVpc {
    /// A simulated VPC in `vpc_netns`, with ENIs appearing in the namespace of `node`.
    ///
    /// # Errors
    /// When the VPC namespace cannot be opened.
    pub fn new(node: Handle, vpc_netns: Netns) -> cnikit_netns_setup::Result<Self> {
        let vpc = RtConnector.connect(&vpc_netns)?;
        Ok(Self {
            node,
            vpc,
            vpc_netns,
            enis: Mutex::new(HashMap::new()),
        })
    }

    /// Interface names for an ENI: `eth<device index>` on the node as on a real instance, or
    /// `eni` + a hash of its id; `vpc` + the same suffix in the VPC.
    fn names(alloc: &Allocation) -> (String, String) {
        let suffix = alloc.device_index.map_or_else(
            || {
                let mut h = DefaultHasher::new();
                alloc.eni_id.hash(&mut h);
                format!("{:08x}", h.finish() & 0xffff_ffff)
            },
            |d| d.to_string(),
        );
        match alloc.device_index {
            Some(_) => (format!("eth{suffix}"), format!("vpc-eth{suffix}")),
            None => (format!("eni{suffix}"), format!("vpc{suffix}")),
        }
    }

    async fn make_eni(&self, alloc: &Allocation, mac: MacAddr) -> Result<(String, u32), LinkError> {
        let (node_name, vpc_name) = Self::names(alloc);
        let existing = self
            .node
            .links()
            .await
            .map_err(nl(alloc, "listing node links"))?
            .into_iter()
            .find(|l| l.mac == Some(mac));
        if existing.is_none() {
            self.node
                .add_link(&NewLink::Veth {
                    name: node_name.clone(),
                    mtu: None,
                    mac: Some(mac),
                    up: false,
                    peer: VethPeer {
                        name: vpc_name.clone(),
                        netns: Some(self.vpc_netns.clone()),
                        mtu: None,
                        mac: None,
                        // A veth end cannot be opened before the pair is linked (ENOTCONN);
                        // it is brought up below.
                        up: false,
                    },
                })
                .await
                .map_err(nl(alloc, format!("creating {node_name}")))?;
        }
        let vpc_link = self
            .vpc
            .link_by_name(&vpc_name)
            .await
            .map_err(nl(alloc, "reading the VPC side"))?
            .ok_or_else(|| LinkError::Netlink {
                eni: alloc.eni_id.clone(),
                what: format!("{vpc_name} is missing in the VPC namespace"),
                source: "not found".into(),
            })?;
        if !vpc_link.up {
            self.vpc
                .set_link(&LinkChange {
                    index: vpc_link.index,
                    up: Some(true),
                    ..LinkChange::default()
                })
                .await
                .map_err(nl(alloc, format!("bringing {vpc_name} up")))?;
        }
        // The vSwitch gateway answers on every ENI's wire.
        let gateway = Address {
            index: vpc_link.index,
            address: IpNetwork::V4(Ipv4Network::from(alloc.gateway)),
            scope: Scope::Universe,
        };
        match self.vpc.add_address(&gateway).await {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(nl(alloc, "adding the gateway address")(e)),
        }
        let name = existing.map_or(node_name, |l| l.name);
        tracing::info!(eni = %alloc.eni_id, %name, mac = %alloc.mac, gateway = %alloc.gateway, "simulated ENI attached");
        Ok((name, vpc_link.index))
    }
}

#[async_trait]
impl EniLinks for SimVpc {
    async fn ensure(&self, alloc: &Allocation) -> Result<String, LinkError> {
        let mac = parse_mac(alloc)?;
        // The lock covers making an ENI once, not the routing below (concurrent `ADD`s).
        let (name, vpc_index) = {
            let mut enis = self.enis.lock().await;
            match enis.get(&alloc.eni_id) {
                Some(known) => known.clone(),
                None => {
                    let made = self.make_eni(alloc, mac).await?;
                    enis.insert(alloc.eni_id.clone(), made.clone());
                    made
                }
            }
        };
        // The VPC delivers the address to its ENI.
        let route = Route::new(
            IpNetwork::V4(Ipv4Network::from(alloc.ipv4)),
            vpc_index,
            None,
            TABLE_MAIN,
        );
        self.vpc
            .add_route(&route, true)
            .await
            .map_err(nl(alloc, format!("routing {} in the VPC", alloc.ipv4)))?;
        self.vpc
            .add_neighbour(
                &Neighbour {
                    index: vpc_index,
                    ip: IpAddr::V4(alloc.ipv4),
                    mac: Some(mac),
                    permanent: true,
                },
                true,
            )
            .await
            .map_err(nl(alloc, format!("neighbour {} in the VPC", alloc.ipv4)))?;
        Ok(name)
    }

    async fn released(&self, alloc: &Allocation) -> Result<(), LinkError> {
        let Some((_, vpc_index)) = self.enis.lock().await.get(&alloc.eni_id).cloned() else {
            return Ok(());
        };
        let route = Route::new(
            IpNetwork::V4(Ipv4Network::from(alloc.ipv4)),
            vpc_index,
            None,
            TABLE_MAIN,
        );
        match self.vpc.del_route(&route).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(nl(alloc, format!("unrouting {}", alloc.ipv4))(e)),
        }
        Ok(())
    }
}

/// Shared handle to an [`EniLinks`].
pub type SharedLinks = Arc<dyn EniLinks>;
