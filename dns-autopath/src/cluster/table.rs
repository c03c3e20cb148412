//! [`ClusterTable`]: the cluster zone held in memory.

use std::{
    collections::{HashMap, hash_map::Entry},
    net::IpAddr,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{
    ClusterRecords, Lookup, Pod, PodRecords, Service, ServiceKind,
    objects::{dashed, undashed},
    reverse_name,
};
use crate::{Error, Name, PodIndex, Record, RecordData, RecordType};

/// Default TTL of cluster records, seconds (CoreDNS's `kubernetes` plugin default).
pub const DEFAULT_RECORD_TTL: u32 = 5;
/// The schema version published at `dns-version.<zone>` (TXT).
pub const SCHEMA_VERSION: &str = "1.1.0";

/// How the table presents the zone.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClusterTableConfig {
    /// TTL of every record, and the SOA's negative-caching TTL.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Which pod names exist.
    #[serde(default)]
    pub pod_records: PodRecords,
}

fn default_ttl() -> u32 {
    DEFAULT_RECORD_TTL
}

impl Default for ClusterTableConfig {
    fn default() -> Self {
        Self {
            ttl: DEFAULT_RECORD_TTL,
            pod_records: PodRecords::default(),
        }
    }
}

/// Key of an object that contributes records.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Owner {
    Service { namespace: String, name: String },
    Pod(IpAddr),
}

#[derive(Debug, Default)]
struct Node {
    records: Vec<Record>,
    /// How many records live at or below this name (it exists while > 0).
    refs: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every name in the zone that exists, with its records.
    names: HashMap<Name, Node>,
    /// PTR records, by reverse name (outside the zone).
    reverse: HashMap<Name, Vec<Record>>,
    /// Records each object contributed, to take them out again on update or removal.
    contributed: HashMap<Owner, Vec<Record>>,
    /// Pod address -> namespace.
    pods: HashMap<IpAddr, Arc<str>>,
}

/// The cluster zone per the Kubernetes DNS specification, held in memory.
///
/// - ClusterIP Service: `<svc>.<ns>.svc.<zone>` A/AAAA, `_<port>._<proto>.<svc>...` SRV for
///   named ports, PTR for each ClusterIP;
/// - headless Service: A/AAAA per ready endpoint, `<hostname>.<svc>...` per endpoint (the
///   address with dashes when no hostname is set), SRV per endpoint and named port, PTR per
///   endpoint address; no ready endpoint: the name does not exist;
/// - `ExternalName` Service: a CNAME;
/// - `<a-b-c-d>.<ns>.pod.<zone>` A/AAAA per [`PodRecords`];
/// - `dns-version.<zone>` TXT, the zone's SOA and NS;
/// - names that exist without records of the asked type (including empty non-terminals such as
///   `<ns>.svc.<zone>`) answer NODATA, others NXDOMAIN, both with the SOA.
///
/// It also implements [`PodIndex`] from the pods it knows.
///
/// ```
/// use cnikit_dns_autopath::cluster::{ClusterRecords, ClusterTable, Lookup, Protocol, Service};
/// use cnikit_dns_autopath::RecordType;
///
/// let table = ClusterTable::new("cluster.local".parse().unwrap());
/// table.upsert_service(
///     &Service::cluster_ip("prod", "web", vec!["10.96.0.10".parse().unwrap()])
///         .with_port(Some("http"), Protocol::Tcp, 80),
/// ).unwrap();
/// let answer = table.lookup(&"web.prod.svc.cluster.local".parse().unwrap(), RecordType::A);
/// assert!(matches!(answer, Some(Lookup::Answer { .. })));
/// ```
#[derive(Debug)]
pub struct ClusterTable {
    zone: Name,
    svc_zone: Name,
    pod_zone: Name,
    config: ClusterTableConfig,
    soa: Record,
    inner: RwLock<Inner>,
    generation: AtomicU64,
}

impl ClusterTable {
    /// An empty table for `zone` (e.g. `cluster.local`) with default settings.
    ///
    /// # Panics
    /// When `zone` is so long that `svc.<zone>` is not a valid name (over 250 bytes).
    #[must_use]
    pub fn new(zone: Name) -> Self {
        match Self::with_config(zone, ClusterTableConfig::default()) {
            Ok(table) => table,
            Err(e) => panic!("cluster zone: {e}"),
        }
    }

    /// An empty table for `zone` with `config`.
    ///
    /// # Errors
    /// When names under `zone` (`svc.<zone>`, `ns.dns.<zone>`) would be invalid.
    pub fn with_config(zone: Name, config: ClusterTableConfig) -> Result<Self, Error> {
        let name_err = |source| Error::Name {
            name: zone.to_string(),
            source,
        };
        let svc_zone = zone.prepend(b"svc").map_err(name_err)?;
        let pod_zone = zone.prepend(b"pod").map_err(name_err)?;
        let mname = zone
            .prepend(b"dns")
            .and_then(|n| n.prepend(b"ns"))
            .map_err(name_err)?;
        let rname = zone.prepend(b"hostmaster").map_err(name_err)?;
        let soa = Record::new(
            zone.clone(),
            config.ttl,
            RecordData::Soa {
                mname,
                rname,
                serial: 1,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: config.ttl,
            },
        );
        let table = Self {
            zone,
            svc_zone,
            pod_zone,
            config,
            soa,
            inner: RwLock::new(Inner::default()),
            generation: AtomicU64::new(0),
        };
        table.install_static();
        Ok(table)
    }

    /// The zone.
    #[must_use]
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    fn install_static(&self) {
        let mut inner = self.write();
        let ns_name = match &self.soa.data {
            RecordData::Soa { mname, .. } => mname.clone(),
            _ => unreachable!("the SOA record is built above"),
        };
        let mut records = vec![
            self.soa.clone(),
            Record::new(self.zone.clone(), self.config.ttl, RecordData::Ns(ns_name)),
        ];
        if let Ok(version) = self.zone.prepend(b"dns-version") {
            records.push(Record::new(
                version,
                self.config.ttl,
                RecordData::Txt(vec![SCHEMA_VERSION.to_owned()]),
            ));
        }
        for r in records {
            self.add_record(&mut inner, r);
        }
        // `svc.<zone>` and `pod.<zone>` exist even when empty.
        for name in [self.svc_zone.clone(), self.pod_zone.clone()] {
            inner.names.entry(name).or_default().refs += 1;
        }
    }

    /// Adds or replaces a Service.
    ///
    /// # Errors
    /// When its namespace, name, port names or endpoint hostnames are not valid DNS labels.
    pub fn upsert_service(&self, service: &Service) -> Result<(), Error> {
        let records = self.service_records(service)?;
        let owner = Owner::Service {
            namespace: service.namespace.to_ascii_lowercase(),
            name: service.name.to_ascii_lowercase(),
        };
        self.replace(owner, records);
        Ok(())
    }

    /// Removes a Service; returns whether it was present.
    pub fn remove_service(&self, namespace: &str, name: &str) -> bool {
        let owner = Owner::Service {
            namespace: namespace.to_ascii_lowercase(),
            name: name.to_ascii_lowercase(),
        };
        self.remove(&owner)
    }

    /// Adds or replaces a pod (by address).
    ///
    /// # Errors
    /// When the namespace is not a valid DNS label.
    pub fn upsert_pod(&self, pod: &Pod) -> Result<(), Error> {
        let namespace = pod.namespace.to_ascii_lowercase();
        let records = match self.config.pod_records {
            PodRecords::Verified => vec![
                self.address_record(
                    self.pod_zone
                        .prepend(namespace.as_bytes())
                        .and_then(|n| n.prepend(dashed(pod.ip).as_bytes()))
                        .map_err(|source| Error::Name {
                            name: format!("pod {}/{}", pod.namespace, pod.name),
                            source,
                        })?,
                    pod.ip,
                ),
            ],
            PodRecords::Insecure | PodRecords::Disabled => Vec::new(),
        };
        self.replace(Owner::Pod(pod.ip), records);
        self.write().pods.insert(pod.ip, namespace.into());
        Ok(())
    }

    /// Removes a pod by address; returns whether it was present.
    pub fn remove_pod(&self, ip: IpAddr) -> bool {
        let had = self.write().pods.remove(&ip).is_some();
        self.remove(&Owner::Pod(ip)) || had
    }

    fn replace(&self, owner: Owner, records: Vec<Record>) {
        let mut inner = self.write();
        if let Some(old) = inner.contributed.remove(&owner) {
            for r in old {
                self.remove_record(&mut inner, &r);
            }
        }
        for r in &records {
            self.add_record(&mut inner, r.clone());
        }
        inner.contributed.insert(owner, records);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn remove(&self, owner: &Owner) -> bool {
        let mut inner = self.write();
        let Some(old) = inner.contributed.remove(owner) else {
            return false;
        };
        for r in old {
            self.remove_record(&mut inner, &r);
        }
        self.generation.fetch_add(1, Ordering::Release);
        true
    }

    fn add_record(&self, inner: &mut Inner, record: Record) {
        if !record.name.is_subdomain_of(&self.zone) {
            inner
                .reverse
                .entry(record.name.clone())
                .or_default()
                .push(record);
            return;
        }
        // The owner and each ancestor down to the zone apex exist while this record does.
        let mut name = Some(record.name.clone());
        while let Some(n) = name {
            let at_apex = n == self.zone;
            inner.names.entry(n.clone()).or_default().refs += 1;
            name = if at_apex { None } else { n.parent() };
        }
        inner
            .names
            .entry(record.name.clone())
            .or_default()
            .records
            .push(record);
    }

    fn remove_record(&self, inner: &mut Inner, record: &Record) {
        if !record.name.is_subdomain_of(&self.zone) {
            if let Entry::Occupied(mut e) = inner.reverse.entry(record.name.clone()) {
                if let Some(i) = e.get().iter().position(|r| r == record) {
                    e.get_mut().swap_remove(i);
                }
                if e.get().is_empty() {
                    e.remove();
                }
            }
            return;
        }
        if let Some(node) = inner.names.get_mut(&record.name)
            && let Some(i) = node.records.iter().position(|r| r == record)
        {
            node.records.swap_remove(i);
        }
        let mut name = Some(record.name.clone());
        while let Some(n) = name {
            let at_apex = n == self.zone;
            if let Entry::Occupied(mut e) = inner.names.entry(n.clone()) {
                e.get_mut().refs = e.get().refs.saturating_sub(1);
                if e.get().refs == 0 {
                    e.remove();
                }
            }
            name = if at_apex { None } else { n.parent() };
        }
    }

    fn address_record(&self, name: Name, ip: IpAddr) -> Record {
        let data = match ip {
            IpAddr::V4(v4) => RecordData::A(v4),
            IpAddr::V6(v6) => RecordData::Aaaa(v6),
        };
        Record::new(name, self.config.ttl, data)
    }

    /// Every record a Service contributes.
    fn service_records(&self, service: &Service) -> Result<Vec<Record>, Error> {
        let label_err = |what: &str| {
            let what = what.to_owned();
            move |source| Error::Name {
                name: format!("service {}/{}: {what}", service.namespace, service.name),
                source,
            }
        };
        let ttl = self.config.ttl;
        let svc_name = self
            .svc_zone
            .prepend(service.namespace.as_bytes())
            .and_then(|n| n.prepend(service.name.as_bytes()))
            .map_err(label_err("name"))?;
        let mut records = Vec::new();
        // (target, ...) of every SRV target: the Service itself or one name per endpoint.
        let mut targets: Vec<Name> = Vec::new();
        match &service.kind {
            ServiceKind::ClusterIp { cluster_ips } => {
                for &ip in cluster_ips {
                    records.push(self.address_record(svc_name.clone(), ip));
                    records.push(Record::new(
                        reverse_name(ip),
                        ttl,
                        RecordData::Ptr(svc_name.clone()),
                    ));
                }
                targets.push(svc_name.clone());
            }
            ServiceKind::Headless { endpoints } => {
                for ep in endpoints.iter().filter(|e| e.ready) {
                    let mut named: Vec<(Name, IpAddr)> = Vec::new();
                    if let Some(hostname) = &ep.hostname {
                        let host = svc_name
                            .prepend(hostname.as_bytes())
                            .map_err(label_err("endpoint hostname"))?;
                        named.extend(ep.ips.iter().map(|&ip| (host.clone(), ip)));
                    } else {
                        for &ip in &ep.ips {
                            let host = svc_name
                                .prepend(dashed(ip).as_bytes())
                                .map_err(label_err("endpoint address"))?;
                            named.push((host, ip));
                        }
                    }
                    for (host, ip) in named {
                        records.push(self.address_record(svc_name.clone(), ip));
                        records.push(self.address_record(host.clone(), ip));
                        records.push(Record::new(
                            reverse_name(ip),
                            ttl,
                            RecordData::Ptr(host.clone()),
                        ));
                        if !targets.contains(&host) {
                            targets.push(host);
                        }
                    }
                }
            }
            ServiceKind::ExternalName { external_name } => {
                records.push(Record::new(
                    svc_name.clone(),
                    ttl,
                    RecordData::Cname(external_name.clone()),
                ));
            }
        }
        if !matches!(service.kind, ServiceKind::ExternalName { .. }) {
            let weight = u16::try_from(100 / targets.len().max(1))
                .unwrap_or(1)
                .max(1);
            for port in &service.ports {
                let Some(port_name) = &port.name else {
                    continue;
                };
                let srv_name = svc_name
                    .prepend(port.protocol.srv_label().as_bytes())
                    .and_then(|n| n.prepend(format!("_{port_name}").as_bytes()))
                    .map_err(label_err("port name"))?;
                for target in &targets {
                    records.push(Record::new(
                        srv_name.clone(),
                        ttl,
                        RecordData::Srv {
                            priority: 0,
                            weight,
                            port: port.port,
                            target: target.clone(),
                        },
                    ));
                }
            }
        }
        Ok(records)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Updates run to completion without panicking points between related changes that a
        // reader could not tolerate, so a poisoned lock still holds a usable table.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn insecure_pod(&self, name: &Name) -> Option<Record> {
        // <dashed-ip>.<ns>.pod.<zone>
        let rest = name.strip_suffix(&self.pod_zone)?;
        let labels: Vec<&[u8]> = rest.labels().collect();
        let [ip_label, _ns] = labels.as_slice() else {
            return None;
        };
        let ip = undashed(ip_label)?;
        Some(self.address_record(name.clone(), ip))
    }

    fn answer_from(records: &[Record], qtype: RecordType) -> Vec<Record> {
        let matching: Vec<Record> = records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect();
        if !matching.is_empty() {
            return matching;
        }
        // A CNAME answers every other type (the server follows it).
        records
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .cloned()
            .collect()
    }
}

impl ClusterRecords for ClusterTable {
    fn lookup(&self, name: &Name, qtype: RecordType) -> Option<Lookup> {
        if !name.is_subdomain_of(&self.zone) {
            let inner = self.read();
            let ptrs = inner.reverse.get(name)?;
            let answers = Self::answer_from(ptrs, qtype);
            return Some(if answers.is_empty() {
                Lookup::NoData { soa: None }
            } else {
                Lookup::Answer {
                    answers,
                    additionals: Vec::new(),
                }
            });
        }
        let soa = Some(self.soa.clone());
        let inner = self.read();
        let Some(node) = inner.names.get(name) else {
            drop(inner);
            if self.config.pod_records == PodRecords::Insecure
                && let Some(record) = self.insecure_pod(name)
            {
                return Some(
                    if record.record_type() == qtype || qtype == RecordType::ANY {
                        Lookup::Answer {
                            answers: vec![record],
                            additionals: Vec::new(),
                        }
                    } else {
                        Lookup::NoData { soa }
                    },
                );
            }
            return Some(Lookup::NxDomain { soa });
        };
        let answers = Self::answer_from(&node.records, qtype);
        if answers.is_empty() {
            return Some(Lookup::NoData { soa });
        }
        let mut additionals = Vec::new();
        for r in &answers {
            if let RecordData::Srv { target, .. } = &r.data
                && let Some(t) = inner.names.get(target)
            {
                for a in &t.records {
                    let is_address = matches!(a.data, RecordData::A(_) | RecordData::Aaaa(_));
                    if is_address && !additionals.contains(a) {
                        additionals.push(a.clone());
                    }
                }
            }
        }
        Some(Lookup::Answer {
            answers,
            additionals,
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl PodIndex for ClusterTable {
    fn namespace_of(&self, ip: IpAddr) -> Option<Arc<str>> {
        self.read().pods.get(&ip).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Endpoint, Protocol};

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table() -> ClusterTable {
        let t = ClusterTable::new(n("cluster.local"));
        t.upsert_service(
            &Service::cluster_ip("prod", "web", vec![ip("10.96.0.10"), ip("fd00:96::10")])
                .with_port(Some("http"), Protocol::Tcp, 80)
                .with_port(None, Protocol::Tcp, 8080)
                .with_port(Some("dns"), Protocol::Udp, 53),
        )
        .unwrap();
        t.upsert_service(
            &Service::headless(
                "prod",
                "db",
                vec![
                    Endpoint::with_hostname(ip("198.18.0.7"), "db-0"),
                    Endpoint::ready(ip("198.18.0.8")),
                    Endpoint {
                        ips: vec![ip("198.18.0.9")],
                        hostname: Some("db-2".into()),
                        ready: false,
                    },
                ],
            )
            .with_port(Some("pg"), Protocol::Tcp, 5432),
        )
        .unwrap();
        t.upsert_service(&Service::external_name("prod", "ext", n("www.example.com")))
            .unwrap();
        t.upsert_pod(&Pod {
            namespace: "prod".into(),
            name: "client".into(),
            ip: ip("198.18.0.10"),
        })
        .unwrap();
        t
    }

    fn answers(t: &ClusterTable, name: &str, qtype: RecordType) -> Vec<String> {
        match t.lookup(&n(name), qtype) {
            Some(Lookup::Answer { answers, .. }) => {
                let mut v: Vec<String> = answers.iter().map(ToString::to_string).collect();
                v.sort();
                v
            }
            other => panic!("{name} {qtype}: {other:?}"),
        }
    }

    fn is_nx(t: &ClusterTable, name: &str, qtype: RecordType) -> bool {
        matches!(
            t.lookup(&n(name), qtype),
            Some(Lookup::NxDomain { soa: Some(_) })
        )
    }

    fn is_nodata(t: &ClusterTable, name: &str, qtype: RecordType) -> bool {
        matches!(t.lookup(&n(name), qtype), Some(Lookup::NoData { .. }))
    }

    #[test]
    fn cluster_ip_service_records() {
        let t = table();
        assert_eq!(
            answers(&t, "web.prod.svc.cluster.local", RecordType::A),
            ["web.prod.svc.cluster.local. 5 IN A 10.96.0.10"]
        );
        assert_eq!(
            answers(&t, "WEB.prod.svc.cluster.local.", RecordType::AAAA),
            ["web.prod.svc.cluster.local. 5 IN AAAA fd00:96::10"]
        );
        assert_eq!(
            answers(&t, "_http._tcp.web.prod.svc.cluster.local", RecordType::SRV),
            [
                "_http._tcp.web.prod.svc.cluster.local. 5 IN SRV 0 100 80 web.prod.svc.cluster.local."
            ]
        );
        assert_eq!(
            answers(&t, "_dns._udp.web.prod.svc.cluster.local", RecordType::SRV).len(),
            1
        );
        // SRV answers carry the target's addresses.
        let Some(Lookup::Answer { additionals, .. }) =
            t.lookup(&n("_http._tcp.web.prod.svc.cluster.local"), RecordType::SRV)
        else {
            panic!("no SRV answer");
        };
        assert_eq!(additionals.len(), 2);
        // Unnamed ports have no SRV; wrong protocol does not exist.
        assert!(is_nx(
            &t,
            "_http._udp.web.prod.svc.cluster.local",
            RecordType::SRV
        ));
        assert_eq!(
            answers(&t, "10.0.96.10.in-addr.arpa", RecordType::PTR),
            ["10.0.96.10.in-addr.arpa. 5 IN PTR web.prod.svc.cluster.local."]
        );
        let v6_ptr = reverse_name(ip("fd00:96::10")).to_string();
        assert_eq!(answers(&t, &v6_ptr, RecordType::PTR).len(), 1);
        // The name exists; TXT is NODATA, with the SOA.
        assert!(matches!(
            t.lookup(&n("web.prod.svc.cluster.local"), RecordType::TXT),
            Some(Lookup::NoData { soa: Some(_) })
        ));
    }

    #[test]
    fn headless_service_records() {
        let t = table();
        assert_eq!(
            answers(&t, "db.prod.svc.cluster.local", RecordType::A),
            [
                "db.prod.svc.cluster.local. 5 IN A 198.18.0.7",
                "db.prod.svc.cluster.local. 5 IN A 198.18.0.8"
            ]
        );
        assert_eq!(
            answers(&t, "db-0.db.prod.svc.cluster.local", RecordType::A),
            ["db-0.db.prod.svc.cluster.local. 5 IN A 198.18.0.7"]
        );
        assert_eq!(
            answers(&t, "198-18-0-8.db.prod.svc.cluster.local", RecordType::A),
            ["198-18-0-8.db.prod.svc.cluster.local. 5 IN A 198.18.0.8"]
        );
        // Not ready: not published.
        assert!(is_nx(&t, "db-2.db.prod.svc.cluster.local", RecordType::A));
        assert_eq!(
            answers(&t, "_pg._tcp.db.prod.svc.cluster.local", RecordType::SRV),
            [
                "_pg._tcp.db.prod.svc.cluster.local. 5 IN SRV 0 50 5432 198-18-0-8.db.prod.svc.cluster.local.",
                "_pg._tcp.db.prod.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.prod.svc.cluster.local."
            ]
        );
        assert_eq!(
            answers(&t, "7.0.18.198.in-addr.arpa", RecordType::PTR),
            ["7.0.18.198.in-addr.arpa. 5 IN PTR db-0.db.prod.svc.cluster.local."]
        );
        // No ready endpoints: NXDOMAIN.
        t.upsert_service(&Service::headless("prod", "empty", vec![]))
            .unwrap();
        assert!(is_nx(&t, "empty.prod.svc.cluster.local", RecordType::A));
    }

    #[test]
    fn external_name_is_a_cname_for_every_type() {
        let t = table();
        for qtype in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::CNAME,
            RecordType::MX,
        ] {
            assert_eq!(
                answers(&t, "ext.prod.svc.cluster.local", qtype),
                ["ext.prod.svc.cluster.local. 5 IN CNAME www.example.com."]
            );
        }
    }

    #[test]
    fn pods_schema_and_apex() {
        let t = table();
        assert_eq!(
            answers(&t, "198-18-0-10.prod.pod.cluster.local", RecordType::A),
            ["198-18-0-10.prod.pod.cluster.local. 5 IN A 198.18.0.10"]
        );
        // Verified: wrong namespace or unknown pod does not exist.
        assert!(is_nx(
            &t,
            "198-18-0-10.other.pod.cluster.local",
            RecordType::A
        ));
        assert!(is_nx(
            &t,
            "198-18-0-99.prod.pod.cluster.local",
            RecordType::A
        ));
        assert_eq!(
            answers(&t, "dns-version.cluster.local", RecordType::TXT),
            ["dns-version.cluster.local. 5 IN TXT \"1.1.0\""]
        );
        assert_eq!(answers(&t, "cluster.local", RecordType::SOA).len(), 1);
        assert_eq!(answers(&t, "cluster.local", RecordType::NS).len(), 1);
        assert_eq!(t.namespace_of(ip("198.18.0.10")).as_deref(), Some("prod"));
        assert_eq!(t.namespace_of(ip("198.18.0.11")), None);
    }

    #[test]
    fn insecure_pods_answer_any_spelled_address() {
        let t = ClusterTable::with_config(
            n("cluster.local"),
            ClusterTableConfig {
                pod_records: PodRecords::Insecure,
                ..ClusterTableConfig::default()
            },
        )
        .unwrap();
        assert_eq!(
            answers(&t, "10-1-2-3.any.pod.cluster.local", RecordType::A),
            ["10-1-2-3.any.pod.cluster.local. 5 IN A 10.1.2.3"]
        );
        assert!(is_nodata(
            &t,
            "10-1-2-3.any.pod.cluster.local",
            RecordType::AAAA
        ));
        assert!(is_nx(&t, "x-1-2-3.any.pod.cluster.local", RecordType::A));
    }

    #[test]
    fn empty_non_terminals_are_nodata_and_unknown_names_nxdomain() {
        let t = table();
        assert!(is_nodata(&t, "prod.svc.cluster.local", RecordType::A));
        assert!(is_nodata(&t, "svc.cluster.local", RecordType::A));
        assert!(is_nodata(&t, "pod.cluster.local", RecordType::A));
        assert!(is_nodata(
            &t,
            "_tcp.web.prod.svc.cluster.local",
            RecordType::A
        ));
        assert!(is_nx(&t, "other.svc.cluster.local", RecordType::A));
        assert!(is_nx(
            &t,
            "www.example.com.prod.svc.cluster.local",
            RecordType::A
        ));
        assert!(is_nx(&t, "nothing.cluster.local", RecordType::AAAA));
        // Outside the zone and not a known reverse name: not ours.
        assert_eq!(t.lookup(&n("www.example.com"), RecordType::A), None);
        assert_eq!(t.lookup(&n("1.1.1.1.in-addr.arpa"), RecordType::PTR), None);
    }

    #[test]
    fn updates_and_removals_change_the_generation_and_clean_up() {
        let t = table();
        let g0 = t.generation();
        t.upsert_service(&Service::cluster_ip("prod", "web", vec![ip("10.96.0.11")]))
            .unwrap();
        assert!(t.generation() > g0);
        assert_eq!(
            answers(&t, "web.prod.svc.cluster.local", RecordType::A),
            ["web.prod.svc.cluster.local. 5 IN A 10.96.0.11"]
        );
        // The old ports and reverse names are gone.
        assert!(is_nx(
            &t,
            "_http._tcp.web.prod.svc.cluster.local",
            RecordType::SRV
        ));
        assert_eq!(
            t.lookup(&n("10.0.96.10.in-addr.arpa"), RecordType::PTR),
            None
        );
        assert!(t.remove_service("prod", "web"));
        assert!(!t.remove_service("prod", "web"));
        assert!(is_nx(&t, "web.prod.svc.cluster.local", RecordType::A));
        // Removing everything in a namespace removes the namespace's empty non-terminal.
        assert!(t.remove_service("prod", "db"));
        assert!(t.remove_service("prod", "ext"));
        assert!(is_nx(&t, "prod.svc.cluster.local", RecordType::A));
        assert!(is_nodata(&t, "svc.cluster.local", RecordType::A));
        assert!(t.remove_pod(ip("198.18.0.10")));
        assert!(is_nx(
            &t,
            "198-18-0-10.prod.pod.cluster.local",
            RecordType::A
        ));
        assert_eq!(t.namespace_of(ip("198.18.0.10")), None);
        // Only the static records remain.
        assert!(is_nodata(&t, "cluster.local", RecordType::A));
        assert_eq!(t.read().contributed.len(), 0);
        assert!(t.read().reverse.is_empty());
    }

    #[test]
    fn invalid_labels_are_typed_errors() {
        let t = table();
        let bad = Service::cluster_ip("prod", &"x".repeat(64), vec![ip("10.96.0.1")]);
        assert!(matches!(t.upsert_service(&bad), Err(Error::Name { .. })));
        let bad = Service::cluster_ip("", "web", vec![ip("10.96.0.1")]);
        assert!(matches!(t.upsert_service(&bad), Err(Error::Name { .. })));
        // The failed updates changed nothing.
        assert_eq!(
            answers(&t, "web.prod.svc.cluster.local", RecordType::A).len(),
            1
        );
    }
}
