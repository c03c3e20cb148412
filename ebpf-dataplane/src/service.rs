//! Services: what the service table holds, and the trait both dataplanes implement.

use std::{
    collections::{HashSet, VecDeque},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use cnikit_ebpf_common::service::MAX_BACKENDS;

use crate::{Error, Protocol, Result};

/// Identifies a ClusterIP service: its virtual IP, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The virtual IP.
    pub vip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// [`Protocol::Tcp`] or [`Protocol::Udp`].
    pub protocol: Protocol,
}

impl ServiceKey {
    /// A TCP service.
    #[must_use]
    pub const fn tcp(vip: Ipv4Addr, port: u16) -> Self {
        Self {
            vip,
            port,
            protocol: Protocol::Tcp,
        }
    }

    /// A UDP service.
    #[must_use]
    pub const fn udp(vip: Ipv4Addr, port: u16) -> Self {
        Self {
            vip,
            port,
            protocol: Protocol::Udp,
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.vip, self.port, self.protocol)
    }
}

/// A ClusterIP service and its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// VIP, port and protocol.
    pub key: ServiceKey,
    /// The backends (pod address and target port). Order does not matter; duplicates are an
    /// error. Empty: connections are rejected (ICMP port unreachable).
    pub backends: Vec<SocketAddrV4>,
    /// `sessionAffinity: ClientIP` with this timeout (Kubernetes' default is 3 hours); `None`
    /// for no affinity.
    pub client_ip_affinity: Option<Duration>,
}

impl Service {
    /// A service without session affinity.
    #[must_use]
    pub fn new(key: ServiceKey, backends: impl IntoIterator<Item = SocketAddrV4>) -> Self {
        Self {
            key,
            backends: backends.into_iter().collect(),
            client_ip_affinity: None,
        }
    }

    /// The same service with `ClientIP` session affinity.
    #[must_use]
    pub fn with_client_ip_affinity(mut self, timeout: Duration) -> Self {
        self.client_ip_affinity = Some(timeout);
        self
    }

    /// Checks what both dataplanes require of a service.
    ///
    /// # Errors
    /// [`Error::InvalidService`] naming the problem, or [`Error::TooManyBackends`].
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Error::InvalidService {
            service: self.key,
            reason,
        };
        if self.key.vip.is_unspecified() || self.key.vip.is_broadcast() {
            return Err(invalid(format!("VIP {} is not usable", self.key.vip)));
        }
        if self.key.port == 0 {
            return Err(invalid("port 0".into()));
        }
        if !matches!(self.key.protocol, Protocol::Tcp | Protocol::Udp) {
            return Err(invalid("only TCP and UDP services are translated".into()));
        }
        validate_backends(&self.key, &self.backends)?;
        if let Some(timeout) = self.client_ip_affinity
            && (timeout < Duration::from_secs(1) || timeout.as_secs() > u64::from(u32::MAX))
        {
            return Err(invalid(format!(
                "affinity timeout {timeout:?} is outside 1 s ..= {} s",
                u32::MAX
            )));
        }
        Ok(())
    }

    /// The affinity timeout in whole seconds (0 without affinity).
    pub(crate) fn affinity_secs(&self) -> u32 {
        self.client_ip_affinity
            .map_or(0, |t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX))
    }
}

pub(crate) fn validate_backends(key: &ServiceKey, backends: &[SocketAddrV4]) -> Result<()> {
    if backends.len() > MAX_BACKENDS {
        return Err(Error::TooManyBackends {
            service: *key,
            count: backends.len(),
            max: MAX_BACKENDS,
        });
    }
    let mut seen = HashSet::new();
    for (i, backend) in backends.iter().enumerate() {
        if backend.ip().is_unspecified() || backend.port() == 0 {
            return Err(Error::InvalidService {
                service: *key,
                reason: format!("backend {backend} is not usable"),
            });
        }
        // A short list is checked in place; a long one through a set.
        let twice = if backends.len() <= 16 {
            backends[..i].contains(backend)
        } else {
            !seen.insert(backend)
        };
        if twice {
            return Err(Error::InvalidService {
                service: *key,
                reason: format!("backend {backend} listed twice"),
            });
        }
    }
    Ok(())
}

/// New slots for `backends`: backends already present keep their slot, freed slots are reused
/// lowest first, trailing holes are trimmed. Both dataplanes use it: a flow or an affinity entry
/// stays with its backend while the backend holds the slot it had when the entry was made.
pub(crate) fn assign_slots(
    old: &[Option<SocketAddrV4>],
    backends: &[SocketAddrV4],
) -> Vec<Option<SocketAddrV4>> {
    if old.is_empty() {
        return backends.iter().copied().map(Some).collect();
    }
    let wanted: HashSet<&SocketAddrV4> = backends.iter().collect();
    let mut slots: Vec<Option<SocketAddrV4>> = old
        .iter()
        .map(|s| s.filter(|b| wanted.contains(b)))
        .collect();
    let present: HashSet<SocketAddrV4> = slots.iter().flatten().copied().collect();
    let mut holes: VecDeque<usize> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.is_none().then_some(i))
        .collect();
    for backend in backends.iter().filter(|b| !present.contains(b)) {
        match holes.pop_front() {
            Some(hole) => slots[hole] = Some(*backend),
            None => slots.push(Some(*backend)),
        }
    }
    while slots.last() == Some(&None) {
        slots.pop();
    }
    slots
}

/// The service table: ClusterIP services and their backends.
///
/// Implemented by the kernel dataplane ([`crate::Dataplane`]) and by the reference model
/// ([`crate::ReferenceModel`]), with the same semantics. Every change is incremental (it touches
/// only the service it names) and atomic (no packet sees a half-updated service).
pub trait ServiceTable {
    /// Creates `service`, or replaces it (backends and affinity) if its key exists. Connections
    /// already established keep their backends.
    ///
    /// # Errors
    /// Invalid input ([`Error::InvalidService`], [`Error::TooManyBackends`]), a full table
    /// ([`Error::CapacityExceeded`]), or a failed map update.
    fn upsert_service(&mut self, service: &Service) -> Result<()>;

    /// Creates or replaces many services (an agent's start-up or full resync). Each service is
    /// written atomically, in order; on an error the services before the failing one are in
    /// place. Implementations may spread the work over CPUs.
    ///
    /// # Errors
    /// As [`upsert_service`](Self::upsert_service), for the first service that fails.
    fn upsert_services(&mut self, services: &[Service]) -> Result<()> {
        services.iter().try_for_each(|s| self.upsert_service(s))
    }

    /// Replaces the backends of an existing service, keeping its other settings.
    ///
    /// # Errors
    /// [`Error::UnknownService`], invalid backends, or a failed map update.
    fn replace_backends(&mut self, key: &ServiceKey, backends: &[SocketAddrV4]) -> Result<()> {
        let mut service = self
            .service(key)
            .ok_or(Error::UnknownService { service: *key })?;
        service.backends = backends.to_vec();
        self.upsert_service(&service)
    }

    /// Removes a service; returns whether it existed. Its connections lose their translation.
    ///
    /// # Errors
    /// A failed map update.
    fn remove_service(&mut self, key: &ServiceKey) -> Result<bool>;

    /// The service with `key` as last written (backends in the order given).
    fn service(&self, key: &ServiceKey) -> Option<Service>;

    /// Keys of every service, sorted.
    fn service_keys(&self) -> Vec<ServiceKey>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(i: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, i), 80)
    }

    #[test]
    fn backends_keep_their_slots() {
        let slots = assign_slots(&[], &[b(1), b(2), b(3)]);
        assert_eq!(slots, vec![Some(b(1)), Some(b(2)), Some(b(3))]);
        let slots = assign_slots(&slots, &[b(3), b(1)]);
        assert_eq!(slots, vec![Some(b(1)), None, Some(b(3))]);
        let slots = assign_slots(&slots, &[b(3), b(1), b(4), b(5)]);
        assert_eq!(slots, vec![Some(b(1)), Some(b(4)), Some(b(3)), Some(b(5))]);
        let slots = assign_slots(&slots, &[b(1)]);
        assert_eq!(slots, vec![Some(b(1))]);
        assert!(assign_slots(&slots, &[]).is_empty());
    }
}
