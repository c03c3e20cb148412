//! The policy table in the kernel: endpoint entries and the two policy tries, with rule sets
//! swapped in by generation.

use std::{collections::HashMap, net::Ipv4Addr};

use aya::maps::lpm_trie::Key;
use cnikit_ebpf_common::{
    endpoint::{
        ENDPOINTS_MAP, EP_EGRESS_ENFORCED, EP_EGRESS_GEN, EP_INGRESS_ENFORCED, EP_INGRESS_GEN,
        EndpointKey, EndpointValue, MAX_NODE_ADDRS, NODE_ADDR_PRESENT, NODE_ADDRS_MAP,
    },
    net::{ipv4_octets, ipv4_raw, port_raw},
    policy::{
        MAX_RULE_GROUPS, POLICY_PEERS_MAP, POLICY_PORTS_MAP, PeerPrefix, PortPrefix,
        SLOT_PREFIX_LEN, policy_slot,
    },
};

use super::{
    Dataplane, InstalledEndpoint, SlotKeys,
    maps::{is_missing, map_error, write_error},
    slot_index,
};
use crate::{
    EndpointPolicy, Error, PolicyTable, Result, Table,
    compile::{self, Compiled},
    ids::IdAllocator,
};

const fn enforced_bit(egress: bool) -> u32 {
    if egress {
        EP_EGRESS_ENFORCED
    } else {
        EP_INGRESS_ENFORCED
    }
}

const fn generation_bit(egress: bool) -> u32 {
    if egress {
        EP_EGRESS_GEN
    } else {
        EP_INGRESS_GEN
    }
}

fn endpoint_key(addr: Ipv4Addr) -> EndpointKey {
    EndpointKey {
        addr: ipv4_raw(addr.octets()),
    }
}

/// The trie keys of `compiled` for `slot`.
fn slot_keys(slot: u32, compiled: &Compiled) -> (SlotKeys, Vec<u64>, Vec<u64>) {
    let mut keys = SlotKeys::default();
    let mut peer_bits = Vec::with_capacity(compiled.peers.len());
    let mut port_bits = Vec::with_capacity(compiled.ports.len());
    for (block, bits) in &compiled.peers {
        keys.peers.push((
            SLOT_PREFIX_LEN + u32::from(block.prefix_len()),
            PeerPrefix::new(slot, ipv4_raw(block.addr().octets())),
        ));
        peer_bits.push(*bits);
    }
    for (block, bits) in &compiled.ports {
        keys.ports.push((
            SLOT_PREFIX_LEN + u32::from(block.rel_len),
            PortPrefix::new(slot, block.protocol, port_raw(block.port)),
        ));
        port_bits.push(*bits);
    }
    (keys, peer_bits, port_bits)
}

impl Dataplane {
    fn compile_direction(
        addr: Ipv4Addr,
        egress: bool,
        rules: Option<&Vec<crate::Rule>>,
    ) -> Result<Option<Compiled>> {
        rules
            .map(|rules| {
                compile::compile(rules).map_err(|compile::TooManyGroups(groups)| {
                    Error::TooManyRuleGroups {
                        endpoint: addr,
                        egress,
                        groups,
                        max: MAX_RULE_GROUPS,
                    }
                })
            })
            .transpose()
    }

    /// Writes `keys` with their bits; on failure removes what it wrote.
    fn write_slot(&mut self, keys: &SlotKeys, peer_bits: &[u64], port_bits: &[u64]) -> Result<()> {
        let mut done = SlotKeys::default();
        let result = (|| {
            for ((len, data), bits) in keys.peers.iter().zip(peer_bits) {
                self.maps
                    .peers
                    .insert(&Key::new(*len, *data), bits, 0)
                    .map_err(write_error(
                        POLICY_PEERS_MAP,
                        Table::PolicyPeers,
                        self.capacity.policy_peer_prefixes,
                    ))?;
                done.peers.push((*len, *data));
            }
            for ((len, data), bits) in keys.ports.iter().zip(port_bits) {
                self.maps
                    .ports
                    .insert(&Key::new(*len, *data), bits, 0)
                    .map_err(write_error(
                        POLICY_PORTS_MAP,
                        Table::PolicyPorts,
                        self.capacity.policy_port_prefixes,
                    ))?;
                done.ports.push((*len, *data));
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.peer_entries += keys.peers.len();
                self.port_entries += keys.ports.len();
                Ok(())
            }
            Err(e) => {
                self.peer_entries += done.peers.len();
                self.port_entries += done.ports.len();
                if let Err(undo) = self.remove_slot(&done) {
                    tracing::warn!(error = %undo, "removing a half-written policy");
                }
                Err(e)
            }
        }
    }

    /// Removes the trie entries of one slot, continuing past failures.
    fn remove_slot(&mut self, keys: &SlotKeys) -> Result<()> {
        let mut first_error = None;
        for (len, data) in &keys.peers {
            match self.maps.peers.remove(&Key::new(*len, *data)) {
                Ok(()) => self.peer_entries = self.peer_entries.saturating_sub(1),
                Err(e) if is_missing(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(map_error(POLICY_PEERS_MAP, "remove")(e));
                }
            }
        }
        for (len, data) in &keys.ports {
            match self.maps.ports.remove(&Key::new(*len, *data)) {
                Ok(()) => self.port_entries = self.port_entries.saturating_sub(1),
                Err(e) if is_missing(&e) => {}
                Err(e) => {
                    first_error.get_or_insert(map_error(POLICY_PORTS_MAP, "remove")(e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn undo_slots(&mut self, written: &[(usize, SlotKeys)]) {
        for (_, keys) in written {
            if let Err(e) = self.remove_slot(keys) {
                tracing::warn!(error = %e, "removing a policy that did not take effect");
            }
        }
    }

    fn write_endpoint(&mut self, addr: Ipv4Addr, id: u32, flags: u32) -> Result<()> {
        self.maps
            .endpoints
            .insert(endpoint_key(addr), EndpointValue { id, flags }, 0)
            .map_err(write_error(
                ENDPOINTS_MAP,
                Table::Endpoints,
                self.capacity.endpoints,
            ))
    }

    pub(super) fn restore_node_addresses(&mut self) -> Result<()> {
        for key in self.maps.node_addrs.keys() {
            let key = key.map_err(map_error(NODE_ADDRS_MAP, "read"))?;
            self.node_addrs
                .insert(Ipv4Addr::from(ipv4_octets(key.addr)));
        }
        Ok(())
    }

    pub(super) fn restore_endpoints(&mut self) -> Result<()> {
        let mut by_id: HashMap<u32, Ipv4Addr> = HashMap::new();
        for item in &self.maps.endpoints {
            let (key, value) = item.map_err(map_error(ENDPOINTS_MAP, "read"))?;
            let addr = Ipv4Addr::from(ipv4_octets(key.addr));
            by_id.insert(value.id, addr);
            self.endpoints.insert(
                addr,
                InstalledEndpoint {
                    id: value.id,
                    flags: value.flags,
                    policy: None,
                    slots: Default::default(),
                },
            );
        }
        self.endpoint_ids = IdAllocator::with_used(self.capacity.endpoints, by_id.keys().copied());
        // Sort trie entries into their endpoints' slots; entries of no endpoint, or of a
        // generation not in force (an update cut short), are stale.
        let mut stale = SlotKeys::default();
        let place = |slot: u32, dp: &mut Self| -> Option<(Ipv4Addr, usize)> {
            let (id, egress, generation) = (slot >> 2, slot & 2 != 0, slot & 1 != 0);
            let addr = *by_id.get(&id)?;
            let ep = dp.endpoints.get(&addr)?;
            let in_force = ep.flags & enforced_bit(egress) != 0
                && (ep.flags & generation_bit(egress) != 0) == generation;
            in_force.then_some((addr, slot_index(egress, generation)))
        };
        let peers: Vec<(u32, PeerPrefix)> = self
            .maps
            .peers
            .keys()
            .map(|k| k.map(|k| (k.prefix_len(), k.data())))
            .collect::<Result<_, _>>()
            .map_err(map_error(POLICY_PEERS_MAP, "read"))?;
        let ports: Vec<(u32, PortPrefix)> = self
            .maps
            .ports
            .keys()
            .map(|k| k.map(|k| (k.prefix_len(), k.data())))
            .collect::<Result<_, _>>()
            .map_err(map_error(POLICY_PORTS_MAP, "read"))?;
        self.peer_entries = peers.len();
        self.port_entries = ports.len();
        for (len, data) in peers {
            match place(u32::from_be_bytes(data.slot), self) {
                Some((addr, i)) => {
                    if let Some(ep) = self.endpoints.get_mut(&addr) {
                        ep.slots[i].peers.push((len, data));
                    }
                }
                None => stale.peers.push((len, data)),
            }
        }
        for (len, data) in ports {
            match place(u32::from_be_bytes(data.slot), self) {
                Some((addr, i)) => {
                    if let Some(ep) = self.endpoints.get_mut(&addr) {
                        ep.slots[i].ports.push((len, data));
                    }
                }
                None => stale.ports.push((len, data)),
            }
        }
        if !stale.peers.is_empty() || !stale.ports.is_empty() {
            tracing::info!(
                peers = stale.peers.len(),
                ports = stale.ports.len(),
                "removing stale policy entries"
            );
            self.remove_slot(&stale)?;
        }
        Ok(())
    }
}

impl PolicyTable for Dataplane {
    fn add_endpoint(&mut self, addr: Ipv4Addr) -> Result<()> {
        if self.endpoints.contains_key(&addr) {
            return Ok(());
        }
        let (id, reused) = self
            .endpoint_ids
            .allocate()
            .ok_or(Error::CapacityExceeded {
                table: Table::Endpoints,
                capacity: self.capacity.endpoints,
            })?;
        let written = if reused {
            self.maps.zero_endpoint_stats(id)
        } else {
            Ok(())
        }
        .and_then(|()| self.write_endpoint(addr, id, 0));
        if let Err(e) = written {
            self.endpoint_ids.release(id);
            return Err(e);
        }
        self.endpoints.insert(
            addr,
            InstalledEndpoint {
                id,
                flags: 0,
                policy: Some(EndpointPolicy::default()),
                slots: Default::default(),
            },
        );
        Ok(())
    }

    fn remove_endpoint(&mut self, addr: Ipv4Addr) -> Result<bool> {
        let Some(ep) = self.endpoints.get(&addr).cloned() else {
            return Ok(false);
        };
        match self.maps.endpoints.remove(&endpoint_key(addr)) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(map_error(ENDPOINTS_MAP, "remove")(e)),
        }
        self.endpoints.remove(&addr);
        self.endpoint_ids.release(ep.id);
        let mut result = Ok(());
        for keys in &ep.slots {
            if let Err(e) = self.remove_slot(keys) {
                result = Err(e);
            }
        }
        result.map(|()| true)
    }

    fn set_policy(&mut self, addr: Ipv4Addr, policy: &EndpointPolicy) -> Result<()> {
        policy.validate(addr)?;
        let ingress = Self::compile_direction(addr, false, policy.ingress.as_ref())?;
        let egress = Self::compile_direction(addr, true, policy.egress.as_ref())?;
        let new_peers: usize = [&ingress, &egress]
            .iter()
            .flat_map(|c| c.iter())
            .map(|c| c.peers.len())
            .sum();
        let new_ports: usize = [&ingress, &egress]
            .iter()
            .flat_map(|c| c.iter())
            .map(|c| c.ports.len())
            .sum();
        let full = |table, capacity| Error::CapacityExceeded { table, capacity };
        if self.peer_entries + new_peers > self.capacity.policy_peer_prefixes as usize {
            return Err(full(Table::PolicyPeers, self.capacity.policy_peer_prefixes));
        }
        if self.port_entries + new_ports > self.capacity.policy_port_prefixes as usize {
            return Err(full(Table::PolicyPorts, self.capacity.policy_port_prefixes));
        }
        self.add_endpoint(addr)?;
        let Some(ep) = self.endpoints.get(&addr).cloned() else {
            return Err(Error::InvalidPolicy {
                endpoint: addr,
                reason: "endpoint vanished".into(),
            });
        };

        // Write each isolated direction's rules into its idle generation.
        let mut flags = ep.flags;
        let mut written: Vec<(usize, SlotKeys)> = Vec::new();
        for (egress, compiled) in [(false, &ingress), (true, &egress)] {
            let Some(compiled) = compiled else {
                flags &= !enforced_bit(egress);
                continue;
            };
            let generation = ep.flags & generation_bit(egress) == 0;
            let index = slot_index(egress, generation);
            // Leftovers of an update cut short.
            self.remove_slot(&ep.slots[index])?;
            let (keys, peer_bits, port_bits) =
                slot_keys(policy_slot(ep.id, egress, generation), compiled);
            if let Err(e) = self.write_slot(&keys, &peer_bits, &port_bits) {
                self.undo_slots(&written);
                return Err(e);
            }
            written.push((index, keys));
            flags |= enforced_bit(egress);
            flags = if generation {
                flags | generation_bit(egress)
            } else {
                flags & !generation_bit(egress)
            };
        }

        // One update switches both directions to their new rules.
        if let Err(e) = self.write_endpoint(addr, ep.id, flags) {
            self.undo_slots(&written);
            return Err(e);
        }

        // The rules no longer in force.
        let mut slots = ep.slots.clone();
        let mut stale = Vec::new();
        for egress in [false, true] {
            let was = ep.flags & enforced_bit(egress) != 0;
            let old_index = slot_index(egress, ep.flags & generation_bit(egress) != 0);
            let new_index = slot_index(egress, flags & generation_bit(egress) != 0);
            let still = flags & enforced_bit(egress) != 0 && new_index == old_index;
            if was && !still {
                stale.push(std::mem::take(&mut slots[old_index]));
            }
        }
        for (index, keys) in written {
            slots[index] = keys;
        }
        if let Some(installed) = self.endpoints.get_mut(&addr) {
            installed.flags = flags;
            installed.policy = Some(policy.clone());
            installed.slots = slots;
        }
        for keys in stale {
            if let Err(e) = self.remove_slot(&keys) {
                tracing::warn!(endpoint = %addr, error = %e, "removing replaced policy entries");
            }
        }
        Ok(())
    }

    fn clear_policy(&mut self, addr: Ipv4Addr) -> Result<bool> {
        let Some(ep) = self.endpoints.get(&addr).cloned() else {
            return Ok(false);
        };
        let enforced = EP_INGRESS_ENFORCED | EP_EGRESS_ENFORCED;
        let had = ep.flags & enforced != 0;
        let flags = ep.flags & !enforced;
        self.write_endpoint(addr, ep.id, flags)?;
        if let Some(installed) = self.endpoints.get_mut(&addr) {
            installed.flags = flags;
            installed.policy = Some(EndpointPolicy::default());
            installed.slots = Default::default();
        }
        let mut result = Ok(had);
        for keys in &ep.slots {
            if let Err(e) = self.remove_slot(keys) {
                result = Err(e);
            }
        }
        result
    }

    fn policy(&self, addr: Ipv4Addr) -> Option<EndpointPolicy> {
        self.endpoints.get(&addr).and_then(|ep| ep.policy.clone())
    }

    fn endpoints(&self) -> Vec<Ipv4Addr> {
        let mut addrs: Vec<Ipv4Addr> = self.endpoints.keys().copied().collect();
        addrs.sort_unstable();
        addrs
    }

    fn set_node_addresses(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        let wanted: std::collections::BTreeSet<Ipv4Addr> = addrs.iter().copied().collect();
        if wanted.len() > MAX_NODE_ADDRS as usize {
            return Err(Error::CapacityExceeded {
                table: Table::NodeAddresses,
                capacity: MAX_NODE_ADDRS,
            });
        }
        // Add before removing: an address in both sets never disappears in between.
        for addr in wanted.difference(&self.node_addrs) {
            self.maps
                .node_addrs
                .insert(endpoint_key(*addr), NODE_ADDR_PRESENT, 0)
                .map_err(write_error(
                    NODE_ADDRS_MAP,
                    Table::NodeAddresses,
                    MAX_NODE_ADDRS,
                ))?;
        }
        for addr in self.node_addrs.difference(&wanted) {
            match self.maps.node_addrs.remove(&endpoint_key(*addr)) {
                Ok(()) => {}
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(map_error(NODE_ADDRS_MAP, "remove")(e)),
            }
        }
        self.node_addrs = wanted;
        Ok(())
    }

    fn node_addresses(&self) -> Vec<Ipv4Addr> {
        self.node_addrs.iter().copied().collect()
    }
}
