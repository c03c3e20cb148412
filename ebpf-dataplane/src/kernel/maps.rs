//! The dataplane's maps: names, expected layouts, typed handles, and error mapping.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, MapError, MapInfo, MapType, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use cnikit_ebpf_common::{
    conntrack::{CT_MAP, CtKey, CtValue},
    endpoint::{ENDPOINTS_MAP, EndpointKey, EndpointValue, MAX_NODE_ADDRS, NODE_ADDRS_MAP},
    policy::{POLICY_PEERS_MAP, POLICY_PORTS_MAP, PeerPrefix, PortPrefix, RuleBits},
    service::{
        AFFINITY_MAP, AffinityKey, AffinityValue, SERVICES_MAP, ServiceKey as RawServiceKey,
        ServiceValue,
    },
    stats::{ENDPOINT_STATS_MAP, EndpointStats, SERVICE_STATS_MAP, ServiceStats},
};

use crate::{Capacity, Error, Table, error::Source};

/// What a map must look like.
pub(super) struct MapSpec {
    pub(super) name: &'static str,
    kind: MapType,
    key_size: usize,
    value_size: usize,
    pub(super) max_entries: u32,
}

pub(super) fn specs(capacity: &Capacity) -> [MapSpec; 9] {
    let lpm_key = |data: usize| 4 + data;
    [
        MapSpec {
            name: SERVICES_MAP,
            kind: MapType::Hash,
            key_size: size_of::<RawServiceKey>(),
            value_size: size_of::<ServiceValue>(),
            max_entries: capacity.services,
        },
        MapSpec {
            name: CT_MAP,
            kind: MapType::LruHash,
            key_size: size_of::<CtKey>(),
            value_size: size_of::<CtValue>(),
            max_entries: capacity.conntrack,
        },
        MapSpec {
            name: AFFINITY_MAP,
            kind: MapType::LruHash,
            key_size: size_of::<AffinityKey>(),
            value_size: size_of::<AffinityValue>(),
            max_entries: capacity.affinity,
        },
        MapSpec {
            name: ENDPOINTS_MAP,
            kind: MapType::Hash,
            key_size: size_of::<EndpointKey>(),
            value_size: size_of::<EndpointValue>(),
            max_entries: capacity.endpoints,
        },
        MapSpec {
            name: NODE_ADDRS_MAP,
            kind: MapType::Hash,
            key_size: size_of::<EndpointKey>(),
            value_size: size_of::<u32>(),
            max_entries: MAX_NODE_ADDRS,
        },
        MapSpec {
            name: POLICY_PEERS_MAP,
            kind: MapType::LpmTrie,
            key_size: lpm_key(size_of::<PeerPrefix>()),
            value_size: size_of::<RuleBits>(),
            max_entries: capacity.policy_peer_prefixes,
        },
        MapSpec {
            name: POLICY_PORTS_MAP,
            kind: MapType::LpmTrie,
            key_size: lpm_key(size_of::<PortPrefix>()),
            value_size: size_of::<RuleBits>(),
            max_entries: capacity.policy_port_prefixes,
        },
        MapSpec {
            name: SERVICE_STATS_MAP,
            kind: MapType::PerCpuArray,
            key_size: 4,
            value_size: size_of::<ServiceStats>(),
            max_entries: capacity.services,
        },
        MapSpec {
            name: ENDPOINT_STATS_MAP,
            kind: MapType::PerCpuArray,
            key_size: 4,
            value_size: size_of::<EndpointStats>(),
            max_entries: capacity.endpoints,
        },
    ]
}

/// Where map `name` is pinned under `dir`.
pub(super) fn pin_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("maps").join(name)
}

/// Checks a map pinned by an earlier run against `spec`; `Ok(false)` when nothing is pinned.
pub(super) fn check_pinned(path: &Path, spec: &MapSpec) -> Result<bool, Error> {
    if !path.exists() {
        return Ok(false);
    }
    let info = MapInfo::from_pin(path).map_err(|e| Error::Pin {
        path: path.to_owned(),
        source: e.into(),
    })?;
    let mismatch = |reason: String| Error::PinnedMapMismatch {
        path: path.to_owned(),
        reason,
    };
    match info.map_type() {
        Ok(kind) if kind == spec.kind => {}
        Ok(kind) => return Err(mismatch(format!("type {kind:?}, expected {:?}", spec.kind))),
        Err(e) => return Err(mismatch(format!("unknown type: {e}"))),
    }
    let sizes = (info.key_size() as usize, info.value_size() as usize);
    if sizes != (spec.key_size, spec.value_size) {
        return Err(mismatch(format!(
            "key/value sizes {sizes:?}, this build uses ({}, {})",
            spec.key_size, spec.value_size
        )));
    }
    if info.max_entries() != spec.max_entries {
        return Err(mismatch(format!(
            "{} entries, the configured capacity is {}",
            info.max_entries(),
            spec.max_entries
        )));
    }
    Ok(true)
}

/// Typed handles of the maps, taken out of the loaded object.
pub(super) struct Maps {
    pub(super) services: HashMap<MapData, RawServiceKey, ServiceValue>,
    pub(super) ct: HashMap<MapData, CtKey, CtValue>,
    pub(super) endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    pub(super) node_addrs: HashMap<MapData, EndpointKey, u32>,
    pub(super) peers: LpmTrie<MapData, PeerPrefix, RuleBits>,
    pub(super) ports: LpmTrie<MapData, PortPrefix, RuleBits>,
    pub(super) service_stats: PerCpuArray<MapData, ServiceStats>,
    pub(super) endpoint_stats: PerCpuArray<MapData, EndpointStats>,
    pub(super) cpus: usize,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps")
            .field("cpus", &self.cpus)
            .finish_non_exhaustive()
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(Error::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|e| map_error(name, "open")(e))
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let cpus = nr_cpus().map_err(|(path, e)| Error::Map {
            map: SERVICE_STATS_MAP,
            op: "count CPUs",
            source: format!("{path}: {e}").into(),
        })?;
        Ok(Self {
            services: take(ebpf, SERVICES_MAP)?,
            ct: take(ebpf, CT_MAP)?,
            endpoints: take(ebpf, ENDPOINTS_MAP)?,
            node_addrs: take(ebpf, NODE_ADDRS_MAP)?,
            peers: take(ebpf, POLICY_PEERS_MAP)?,
            ports: take(ebpf, POLICY_PORTS_MAP)?,
            service_stats: take(ebpf, SERVICE_STATS_MAP)?,
            endpoint_stats: take(ebpf, ENDPOINT_STATS_MAP)?,
            cpus,
        })
    }

    pub(super) fn zero_service_stats(&mut self, id: u32) -> Result<(), Error> {
        let zero =
            PerCpuValues::try_from(vec![ServiceStats::default(); self.cpus]).map_err(|e| {
                Error::Map {
                    map: SERVICE_STATS_MAP,
                    op: "clear",
                    source: e.into(),
                }
            })?;
        self.service_stats
            .set(id, zero, 0)
            .map_err(map_error(SERVICE_STATS_MAP, "clear"))
    }

    pub(super) fn zero_endpoint_stats(&mut self, id: u32) -> Result<(), Error> {
        let zero =
            PerCpuValues::try_from(vec![EndpointStats::default(); self.cpus]).map_err(|e| {
                Error::Map {
                    map: ENDPOINT_STATS_MAP,
                    op: "clear",
                    source: e.into(),
                }
            })?;
        self.endpoint_stats
            .set(id, zero, 0)
            .map_err(map_error(ENDPOINT_STATS_MAP, "clear"))
    }
}

/// The errno of a failed map syscall.
pub(super) fn errno(e: &MapError) -> Option<i32> {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// Whether `e` says the map has no room left.
pub(super) fn is_full(e: &MapError) -> bool {
    matches!(errno(e), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM))
}

/// Whether `e` says the key is not there.
pub(super) fn is_missing(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound) || errno(e) == Some(libc::ENOENT)
}

pub(super) fn map_error(map: &'static str, op: &'static str) -> impl Fn(MapError) -> Error {
    move |e| Error::Map {
        map,
        op,
        source: Source::from(e),
    }
}

/// A map write error, as a capacity error when the map is full.
pub(super) fn write_error(
    map: &'static str,
    table: Table,
    capacity: u32,
) -> impl Fn(MapError) -> Error {
    move |e| {
        if is_full(&e) {
            Error::CapacityExceeded { table, capacity }
        } else {
            map_error(map, "insert")(e)
        }
    }
}
