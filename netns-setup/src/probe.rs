//! Capability probing and driver choice.
//!
//! Whether the running kernel can create ipvlan links is found out by *trying*, in a scratch
//! namespace that disappears afterwards, never by parsing kernel versions or configs: modules may
//! be missing, built in, or blocked regardless of the version.

use std::fmt;

use crate::{
    Result,
    driver::{Mode, PodDriver},
    netlink::{Connector, IpVlanMode, NewLink, VethPeer},
};

/// Whether a capability is there, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// It works.
    Supported,
    /// It does not; the reason as the kernel reported it.
    Unsupported(String),
}

impl Support {
    /// Whether it works.
    #[must_use]
    pub fn is_supported(&self) -> bool {
        matches!(self, Self::Supported)
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Supported => f.write_str("supported"),
            Self::Unsupported(why) => write!(f, "unsupported ({why})"),
        }
    }
}

/// What the running kernel can do, as far as the drivers care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// ipvlan links (the IPVLAN driver).
    pub ipvlan: Support,
}

/// Probes the kernel through `connector`.
///
/// # Errors
/// When the scratch namespace cannot be created or its veth pair fails (the probe itself could
/// not run; an unsupported ipvlan is *not* an error).
pub async fn probe(connector: &dyn Connector) -> Result<Capabilities> {
    Ok(Capabilities {
        ipvlan: probe_ipvlan(connector).await?,
    })
}

/// Tries to create an L2 ipvlan on a veth inside a scratch namespace.
///
/// # Errors
/// As [`probe`].
pub async fn probe_ipvlan(connector: &dyn Connector) -> Result<Support> {
    let scratch = connector.scratch()?;
    let handle = connector.connect(&scratch)?;
    let nl = |e| crate::Error::netlink(crate::error::Side::Node, e);
    handle
        .add_link(&NewLink::Veth {
            name: "probe0".to_owned(),
            mtu: None,
            mac: None,
            up: false,
            peer: VethPeer {
                name: "probe1".to_owned(),
                netns: None,
                mtu: None,
                mac: None,
                up: false,
            },
        })
        .await
        .map_err(nl)?;
    let parent = handle
        .link_by_name("probe0")
        .await
        .map_err(nl)?
        .ok_or_else(|| {
            nl(crate::error::NetlinkError::from_errno(
                "find link probe0",
                libc::ENODEV,
            ))
        })?;
    let created = handle
        .add_link(&NewLink::IpVlan {
            name: "probe0.ipvl".to_owned(),
            parent: parent.index,
            mode: IpVlanMode::L2,
            netns: None,
            mtu: None,
            up: false,
            noarp: false,
        })
        .await;
    // Everything goes with the namespace when `handle` and `scratch` drop.
    Ok(match created {
        Ok(()) => Support::Supported,
        Err(e) => Support::Unsupported(e.to_string()),
    })
}

/// The driver chosen for a requested mode, and why it differs when it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverChoice {
    /// What was asked for.
    pub requested: Mode,
    /// What will be used.
    pub chosen: Mode,
    /// Why `chosen` differs from `requested`.
    pub fallback_reason: Option<String>,
}

impl DriverChoice {
    /// The chosen driver, with default settings.
    #[must_use]
    pub fn driver(&self) -> Box<dyn PodDriver> {
        self.chosen.driver()
    }
}

/// Chooses the driver for `requested` given `capabilities`: IPVLAN falls back to veth when the
/// kernel cannot create ipvlan links. The fallback is logged (warn) and reported.
#[must_use]
pub fn choose(requested: Mode, capabilities: &Capabilities) -> DriverChoice {
    match (requested, &capabilities.ipvlan) {
        (Mode::IpVlan, Support::Unsupported(why)) => {
            let reason = format!("ipvlan is not available on this kernel: {why}");
            tracing::warn!(requested = %requested, chosen = %Mode::Veth, %reason, "falling back");
            DriverChoice {
                requested,
                chosen: Mode::Veth,
                fallback_reason: Some(reason),
            }
        }
        _ => DriverChoice {
            requested,
            chosen: requested,
            fallback_reason: None,
        },
    }
}

/// [`probe`] then [`choose`].
///
/// # Errors
/// As [`probe`].
pub async fn probe_and_choose(requested: Mode, connector: &dyn Connector) -> Result<DriverChoice> {
    let capabilities = probe(connector).await?;
    Ok(choose(requested, &capabilities))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::fake::FakeKernel;

    #[tokio::test]
    async fn probe_follows_the_kernel_and_falls_back() {
        let kernel = FakeKernel::new();
        let connector = kernel.connector();
        let caps = probe(connector.as_ref()).await.unwrap();
        assert!(caps.ipvlan.is_supported());
        assert_eq!(choose(Mode::IpVlan, &caps).chosen, Mode::IpVlan);

        kernel.set_ipvlan_supported(false);
        let caps = probe(connector.as_ref()).await.unwrap();
        let Support::Unsupported(why) = &caps.ipvlan else {
            panic!("expected unsupported");
        };
        assert!(why.contains("not supported"), "{why}");
        let choice = choose(Mode::IpVlan, &caps);
        assert_eq!(choice.chosen, Mode::Veth);
        assert_eq!(choice.driver().mode(), Mode::Veth);
        assert!(choice.fallback_reason.unwrap().contains("ipvlan"));
        // Other modes never fall back.
        assert_eq!(choose(Mode::ExclusiveEni, &caps).chosen, Mode::ExclusiveEni);
        assert_eq!(choose(Mode::Veth, &caps).fallback_reason, None);
    }
}
