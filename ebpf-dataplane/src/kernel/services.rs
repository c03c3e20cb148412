//! The service table in the kernel: one map entry per service, written whole.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use cnikit_ebpf_common::{
    net::{ipv4_octets, ipv4_raw, port_host, port_raw},
    service::{SERVICE_FLAG_AFFINITY, SERVICES_MAP, ServiceKey as RawServiceKey, ServiceValue},
};

use super::{
    Dataplane, Installed,
    maps::{is_missing, map_error, write_error},
};
use crate::{
    Error, Protocol, Result, Service, ServiceKey, ServiceTable, Table, ids::IdAllocator, maglev,
    service::assign_slots,
};

pub(super) fn raw_key(key: &ServiceKey) -> RawServiceKey {
    RawServiceKey::new(key.vip.octets(), key.port, key.protocol.number())
}

/// A service's slots and Maglev table (as slots): the costly part of a write, computed apart so
/// that bulk writes can compute many in parallel.
struct Prepared {
    slots: Vec<Option<SocketAddrV4>>,
    lut: Vec<u16>,
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "slot counts are at most MAX_BACKENDS"
)]
fn prepare(old_slots: &[Option<SocketAddrV4>], backends: &[SocketAddrV4]) -> Prepared {
    let slots = assign_slots(old_slots, backends);
    let mut live: Vec<(SocketAddrV4, u16)> = slots
        .iter()
        .enumerate()
        .filter_map(|(slot, b)| b.map(|b| (b, slot as u16)))
        .collect();
    live.sort_unstable();
    let ordered: Vec<SocketAddrV4> = live.iter().map(|(b, _)| *b).collect();
    let lut = maglev::table(&ordered)
        .into_iter()
        .map(|index| live[usize::from(index)].1)
        .collect();
    Prepared { slots, lut }
}

/// Fills `value` for `installed` (whose slots `lut` indexes).
#[expect(
    clippy::cast_possible_truncation,
    reason = "slot counts are at most MAX_BACKENDS"
)]
fn fill_value(value: &mut ServiceValue, installed: &Installed, rev: u32, lut: &[u16]) {
    *value = ServiceValue::EMPTY;
    value.id = installed.id;
    value.rev = rev;
    value.generation = installed.generation;
    if installed.service.client_ip_affinity.is_some() {
        value.flags |= SERVICE_FLAG_AFFINITY;
        value.affinity_timeout_s = installed.service.affinity_secs();
    }
    value.slots_used = installed.slots.len() as u16;
    let mut count = 0;
    for (slot, backend) in installed.slots.iter().enumerate() {
        if let Some(b) = backend {
            value.backend_addrs[slot] = ipv4_raw(b.ip().octets());
            value.backend_ports[slot] = port_raw(b.port());
            count += 1;
        }
    }
    value.count = count;
    for (entry, slot) in value.lut.iter_mut().zip(lut) {
        *entry = *slot;
    }
}

/// Services per thread below which a bulk write does not spread the work.
const PARALLEL_CHUNK: usize = 256;

impl Dataplane {
    fn next_rev(&mut self) -> u32 {
        let rev = self.rev;
        self.rev = self.rev.wrapping_add(1).max(1);
        rev
    }

    /// Writes `service` as one map update (atomic for the datapath).
    fn write_service(&mut self, service: &Service) -> Result<()> {
        service.validate()?;
        let old = self.services.get(&service.key).map(|i| i.slots.as_slice());
        let prepared = prepare(old.unwrap_or_default(), &service.backends);
        self.write_prepared(service, prepared)
    }

    fn write_prepared(&mut self, service: &Service, prepared: Prepared) -> Result<()> {
        let key = service.key;
        let (mut installed, new_id) = match self.services.get(&key) {
            Some(existing) => (
                Installed {
                    service: service.clone(),
                    id: existing.id,
                    generation: existing.generation,
                    slots: Vec::new(),
                },
                None,
            ),
            None => {
                let (id, reused) = self.service_ids.allocate().ok_or(Error::CapacityExceeded {
                    table: Table::Services,
                    capacity: self.capacity.services,
                })?;
                let installed = Installed {
                    service: service.clone(),
                    id,
                    generation: 0,
                    slots: Vec::new(),
                };
                (installed, Some((id, reused)))
            }
        };
        let rev = self.next_rev();
        if new_id.is_some() {
            installed.generation = rev;
        }
        installed.slots = prepared.slots;
        fill_value(&mut self.scratch, &installed, rev, &prepared.lut);

        let release = |dp: &mut Self| {
            if let Some((id, _)) = new_id {
                dp.service_ids.release(id);
            }
        };
        if let Some((id, true)) = new_id {
            // Counters of an earlier service with this id.
            if let Err(e) = self.maps.zero_service_stats(id) {
                release(self);
                return Err(e);
            }
        }
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "borrowing avoids copying the 3.6 KiB value"
        )]
        let written = self.maps.services.insert(raw_key(&key), &*self.scratch, 0);
        if let Err(e) = written {
            release(self);
            return Err(write_error(
                SERVICES_MAP,
                Table::Services,
                self.capacity.services,
            )(e));
        }
        self.services.insert(key, installed);
        Ok(())
    }

    pub(super) fn restore_services(&mut self) -> Result<()> {
        let mut used = Vec::new();
        let mut max_rev = 0;
        for item in &self.maps.services {
            let (key, value) = item.map_err(map_error(SERVICES_MAP, "read"))?;
            let Some(protocol) = Protocol::from_number(key.proto) else {
                continue;
            };
            let key = ServiceKey {
                vip: Ipv4Addr::from(ipv4_octets(key.vip)),
                port: port_host(key.port),
                protocol,
            };
            let slots: Vec<Option<SocketAddrV4>> = (0..usize::from(value.slots_used))
                .map(|slot| {
                    value.backend(slot).map(|(addr, port)| {
                        SocketAddrV4::new(Ipv4Addr::from(ipv4_octets(addr)), port_host(port))
                    })
                })
                .collect();
            let mut service = Service::new(key, slots.iter().flatten().copied());
            if value.flags & SERVICE_FLAG_AFFINITY != 0 {
                service.client_ip_affinity =
                    Some(Duration::from_secs(u64::from(value.affinity_timeout_s)));
            }
            used.push(value.id);
            max_rev = max_rev.max(value.rev).max(value.generation);
            self.services.insert(
                key,
                Installed {
                    service,
                    id: value.id,
                    generation: value.generation,
                    slots,
                },
            );
        }
        self.service_ids = IdAllocator::with_used(self.capacity.services, used);
        self.rev = max_rev.wrapping_add(1).max(1);
        Ok(())
    }
}

impl ServiceTable for Dataplane {
    fn upsert_service(&mut self, service: &Service) -> Result<()> {
        self.write_service(service)
    }

    /// Validates every service first, computes their Maglev tables on all CPUs, then writes them
    /// one map update each (each service atomic, in order).
    fn upsert_services(&mut self, services: &[Service]) -> Result<()> {
        for service in services {
            service.validate()?;
        }
        let olds: Vec<Vec<Option<SocketAddrV4>>> = services
            .iter()
            .map(|s| {
                self.services
                    .get(&s.key)
                    .map(|i| i.slots.clone())
                    .unwrap_or_default()
            })
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(services.len().div_ceil(PARALLEL_CHUNK))
            .max(1);
        let chunk = services.len().div_ceil(threads).max(1);
        let prepared: Vec<Prepared> = std::thread::scope(|scope| {
            let workers: Vec<_> = services
                .chunks(chunk)
                .zip(olds.chunks(chunk))
                .map(|(services, olds)| {
                    scope.spawn(move || {
                        services
                            .iter()
                            .zip(olds)
                            .map(|(s, old)| prepare(old, &s.backends))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        if prepared.len() != services.len() {
            return Err(Error::InvalidConfig(
                "a worker computing Maglev tables failed".into(),
            ));
        }
        for (service, prepared) in services.iter().zip(prepared) {
            self.write_prepared(service, prepared)?;
        }
        Ok(())
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<bool> {
        let Some(installed) = self.services.get(key) else {
            return Ok(false);
        };
        let id = installed.id;
        match self.maps.services.remove(&raw_key(key)) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(map_error(SERVICES_MAP, "remove")(e)),
        }
        self.services.remove(key);
        self.service_ids.release(id);
        Ok(true)
    }

    fn service(&self, key: &ServiceKey) -> Option<Service> {
        self.services.get(key).map(|s| s.service.clone())
    }

    fn service_keys(&self) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = self.services.keys().copied().collect();
        keys.sort_unstable();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(i: u8) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, i), 80)
    }

    #[test]
    fn value_table_points_at_live_slots() {
        let installed = Installed {
            service: Service::new(
                ServiceKey::tcp(Ipv4Addr::new(198, 19, 0, 1), 80),
                [b(1), b(3)],
            ),
            id: 7,
            generation: 3,
            slots: vec![Some(b(1)), None, Some(b(3))],
        };
        let mut value = Box::new(ServiceValue::EMPTY);
        let prepared = prepare(&[Some(b(1)), Some(b(2)), Some(b(3))], &[b(1), b(3)]);
        assert_eq!(prepared.slots, installed.slots);
        fill_value(&mut value, &installed, 9, &prepared.lut);
        assert_eq!(
            (
                value.id,
                value.rev,
                value.generation,
                value.count,
                value.slots_used
            ),
            (7, 9, 3, 2, 3)
        );
        assert!(value.lut.iter().all(|&s| s == 0 || s == 2));
        let on_first = value.lut.iter().filter(|&&s| s == 0).count();
        assert!(on_first.abs_diff(value.lut.len() / 2) <= 1);
        assert_eq!(value.backend(1), None);
    }
}
