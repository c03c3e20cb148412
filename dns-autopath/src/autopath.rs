//! The AutoPath planner: decides whether a query is the first step of a pod's search-list walk
//! and, if so, which names the server should try on the client's behalf.
//!
//! A pod in namespace `prod` has (kubelet, `ClusterFirst`)
//!
//! ```text
//! search prod.svc.cluster.local svc.cluster.local cluster.local <node search domains...>
//! options ndots:5
//! ```
//!
//! so its stub resolver turns a lookup of `example.com` (1 dot < 5) into
//! `example.com.prod.svc.cluster.local`, then `example.com.svc.cluster.local`, ... and finally
//! `example.com.` itself, each for A and AAAA. When the server sees a query whose name ends in the
//! *client's own* first search suffix (CoreDNS's trigger rule), it walks the rest of the list
//! itself and answers the first query with whatever the walk finds (a CNAME from the asked name
//! to the found one; see the crate README).
//!
//! The planner is pure: it knows the cluster domain, the extra search domains and `ndots`, and is
//! handed the question and the client's namespace. Its rules:
//!
//! - only class IN, never zone transfers or OPT;
//! - only when the client's namespace is known, and the name lies *strictly* below
//!   `<namespace>.svc.<zone>` (the namespace apex itself is a real name, not a search step);
//! - candidates are `base.<s>` for every search suffix `s`, in the client's order, then `base.`
//!   itself, where `base` is the name minus the first suffix;
//! - `base.` is left out when `base` has at least `ndots` dots: the stub resolver then tried the
//!   name as given *before* the search list, so asking again cannot change the outcome;
//! - candidates that would exceed 255 bytes are skipped (the stub resolver cannot send them
//!   either), and duplicates are dropped.

use crate::{
    DnsClass, Name, RecordType,
    error::NameError,
    name::{wire_label_offsets, wire_suffix_start},
};

/// Default `ndots` (what kubelet writes for `ClusterFirst` pods).
pub const DEFAULT_NDOTS: u8 = 5;

/// What the planner needs to know about the clients' resolv.conf.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AutoPathConfig {
    /// Search domains after the three cluster ones (kubelet appends the node's own), in order.
    #[serde(default)]
    pub extra_search: Vec<Name>,
    /// The clients' `options ndots:N`.
    #[serde(default = "default_ndots")]
    pub ndots: u8,
}

fn default_ndots() -> u8 {
    DEFAULT_NDOTS
}

impl Default for AutoPathConfig {
    fn default() -> Self {
        Self {
            extra_search: Vec::new(),
            ndots: DEFAULT_NDOTS,
        }
    }
}

impl AutoPathConfig {
    /// A configuration with the given extra search domains and the default `ndots`.
    #[must_use]
    pub fn with_extra_search(extra_search: Vec<Name>) -> Self {
        Self {
            extra_search,
            ndots: DEFAULT_NDOTS,
        }
    }

    /// Sets `ndots`.
    #[must_use]
    pub fn ndots(mut self, ndots: u8) -> Self {
        self.ndots = ndots;
        self
    }
}

/// The names to try for one query, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchPlan {
    /// The name the client asked (always `candidates[0]`).
    pub asked: Name,
    /// The name the user typed, as the stub resolver saw it (the asked name minus the client's
    /// first search suffix).
    pub base: Name,
    /// Names to resolve, in order; the first one that does not end in NXDOMAIN (or a server
    /// failure) answers the query.
    pub candidates: Vec<Name>,
}

/// Decides AutoPath plans (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct AutoPathPlanner {
    cluster_domain: Name,
    svc_zone: Name,
    extra_search: Vec<Name>,
    ndots: u8,
}

impl AutoPathPlanner {
    /// A planner for clients in `cluster_domain` (e.g. `cluster.local`).
    ///
    /// # Errors
    /// When `svc.<cluster_domain>` is not a valid name.
    pub fn new(cluster_domain: Name, config: &AutoPathConfig) -> Result<Self, NameError> {
        let svc_zone = cluster_domain.prepend(b"svc")?;
        Ok(Self {
            cluster_domain,
            svc_zone,
            extra_search: config.extra_search.clone(),
            ndots: config.ndots,
        })
    }

    /// The cluster domain.
    #[must_use]
    pub fn cluster_domain(&self) -> &Name {
        &self.cluster_domain
    }

    /// The search list kubelet writes for a pod in `namespace`:
    /// `<namespace>.svc.<zone>`, `svc.<zone>`, `<zone>`, then the extra domains.
    ///
    /// # Errors
    /// When `namespace` is not a valid DNS label.
    pub fn search_list(&self, namespace: &str) -> Result<Vec<Name>, NameError> {
        let mut list = Vec::with_capacity(3 + self.extra_search.len());
        list.push(self.svc_zone.prepend(namespace.as_bytes())?);
        list.push(self.svc_zone.clone());
        list.push(self.cluster_domain.clone());
        list.extend(self.extra_search.iter().cloned());
        Ok(list)
    }

    /// The plan for a question from a client in `client_namespace`, or `None` when the query
    /// is not the first step of that client's search-list walk.
    #[must_use]
    pub fn plan(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DnsClass,
        client_namespace: Option<&str>,
    ) -> Option<SearchPlan> {
        if qclass != DnsClass::IN || qtype.is_meta() {
            return None;
        }
        let namespace = client_namespace?;
        // The cheap test first: most names are not below `<namespace>.svc.<zone>`.
        let label = self.namespace_label(name.as_wire())?;
        if !label.eq_ignore_ascii_case(namespace.as_bytes()) {
            return None;
        }
        let first = self.svc_zone.prepend(namespace.as_bytes()).ok()?;
        let base = name.strip_suffix(&first)?;
        let mut candidates: Vec<Name> = Vec::with_capacity(self.extra_search.len() + 4);
        candidates.push(name.clone());
        let rest = [&self.svc_zone, &self.cluster_domain]
            .into_iter()
            .chain(&self.extra_search);
        for suffix in rest {
            if let Ok(candidate) = base.join(suffix)
                && !candidates.contains(&candidate)
            {
                candidates.push(candidate);
            }
        }
        if base.dots() < usize::from(self.ndots) && !candidates.contains(&base) {
            candidates.push(base.clone());
        }
        Some(SearchPlan {
            asked: name.clone(),
            base,
            candidates,
        })
    }

    /// For a lower-case uncompressed wire name strictly below `<label>.svc.<zone>`, the
    /// namespace label; the cheap first test of the trigger rule, done before the pod index is
    /// consulted.
    pub(crate) fn namespace_label<'a>(&self, wire: &'a [u8]) -> Option<&'a [u8]> {
        let svc_start = wire_suffix_start(wire, self.svc_zone.as_wire())?;
        let head = &wire[..svc_start];
        // At least two labels before `svc.<zone>`: something, then the namespace.
        let mut offsets = wire_label_offsets(head);
        let mut last = offsets.next()?;
        let mut count = 1;
        for at in offsets {
            last = at;
            count += 1;
        }
        if count < 2 {
            return None;
        }
        let len = usize::from(head[last]);
        head.get(last + 1..last + 1 + len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn planner(extra: &[&str], ndots: u8) -> AutoPathPlanner {
        let config =
            AutoPathConfig::with_extra_search(extra.iter().map(|s| n(s)).collect()).ndots(ndots);
        AutoPathPlanner::new(n("cluster.local"), &config).unwrap()
    }

    fn candidates(p: &AutoPathPlanner, name: &str, ns: &str) -> Option<Vec<String>> {
        p.plan(&n(name), RecordType::A, DnsClass::IN, Some(ns))
            .map(|plan| plan.candidates.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn search_list_matches_kubelet() {
        let p = planner(&["example.internal"], 5);
        let list: Vec<String> = p
            .search_list("prod")
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            list,
            [
                "prod.svc.cluster.local.",
                "svc.cluster.local.",
                "cluster.local.",
                "example.internal."
            ]
        );
        assert!(p.search_list("").is_err());
        assert!(p.search_list(&"x".repeat(64)).is_err());
    }

    #[test]
    fn external_name_walks_the_whole_list_then_the_name_itself() {
        let p = planner(&["example.internal"], 5);
        let plan = p
            .plan(
                &n("www.example.com.prod.svc.cluster.local"),
                RecordType::AAAA,
                DnsClass::IN,
                Some("prod"),
            )
            .unwrap();
        assert_eq!(plan.asked, n("www.example.com.prod.svc.cluster.local"));
        assert_eq!(plan.base, n("www.example.com"));
        let names: Vec<String> = plan.candidates.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "www.example.com.prod.svc.cluster.local.",
                "www.example.com.svc.cluster.local.",
                "www.example.com.cluster.local.",
                "www.example.com.example.internal.",
                "www.example.com.",
            ]
        );
    }

    #[test]
    fn only_the_clients_own_first_suffix_triggers() {
        let p = planner(&[], 5);
        // Service in another namespace as typed "web.other": first step is below prod.
        assert!(candidates(&p, "web.other.prod.svc.cluster.local", "prod").is_some());
        // The same name from a client in another namespace is a real query, not a walk.
        assert_eq!(
            candidates(&p, "web.other.prod.svc.cluster.local", "other"),
            None
        );
        // Second and later steps never trigger.
        assert_eq!(candidates(&p, "web.svc.cluster.local", "prod"), None);
        assert_eq!(candidates(&p, "web.cluster.local", "prod"), None);
        assert_eq!(candidates(&p, "www.example.com", "prod"), None);
        // The namespace apex and anything above it are names, not search steps.
        assert_eq!(candidates(&p, "prod.svc.cluster.local", "prod"), None);
        assert_eq!(candidates(&p, "svc.cluster.local", "prod"), None);
        // Unknown client: no plan.
        assert_eq!(
            p.plan(
                &n("x.prod.svc.cluster.local"),
                RecordType::A,
                DnsClass::IN,
                None
            ),
            None
        );
        // A suffix match must be on a label boundary: "xprod" is not "prod".
        assert_eq!(candidates(&p, "web.xprod.svc.cluster.local", "prod"), None);
    }

    #[test]
    fn other_namespace_service_is_found_at_the_second_step() {
        let p = planner(&[], 5);
        assert_eq!(
            candidates(&p, "db.other.prod.svc.cluster.local", "prod").unwrap(),
            [
                "db.other.prod.svc.cluster.local.",
                "db.other.svc.cluster.local.",
                "db.other.cluster.local.",
                "db.other.",
            ]
        );
    }

    #[test]
    fn ndots_decides_whether_the_name_as_given_is_a_candidate() {
        // base with ndots-1 dots: the client searches first, the name as given last.
        let p = planner(&[], 3);
        let c = candidates(&p, "a.b.c.prod.svc.cluster.local", "prod").unwrap();
        assert_eq!(c.last().unwrap(), "a.b.c.");
        // base with exactly ndots dots: the client tried it before searching.
        let c = candidates(&p, "a.b.c.d.prod.svc.cluster.local", "prod").unwrap();
        assert_eq!(c.last().unwrap(), "a.b.c.d.cluster.local.");
        assert_eq!(c.len(), 3);
        // More than ndots dots: same.
        let c = candidates(&p, "a.b.c.d.e.prod.svc.cluster.local", "prod").unwrap();
        assert!(!c.contains(&"a.b.c.d.e.".to_owned()));
        // ndots:0: every name is tried as given first.
        let p0 = planner(&[], 0);
        let c = candidates(&p0, "web.prod.svc.cluster.local", "prod").unwrap();
        assert_eq!(
            c,
            [
                "web.prod.svc.cluster.local.",
                "web.svc.cluster.local.",
                "web.cluster.local."
            ]
        );
        // ndots:1 and a single-label name: searched first, then as given.
        let p1 = planner(&[], 1);
        let c = candidates(&p1, "web.prod.svc.cluster.local", "prod").unwrap();
        assert_eq!(c.last().unwrap(), "web.");
        // ... and a dotted one was tried as given first.
        let c = candidates(&p1, "www.example.com.prod.svc.cluster.local", "prod").unwrap();
        assert_eq!(c.last().unwrap(), "www.example.com.cluster.local.");
        // The default is kubelet's ndots:5: a 4-dot name is searched first.
        let p5 = planner(&[], DEFAULT_NDOTS);
        let c = candidates(&p5, "a.b.c.d.e.prod.svc.cluster.local", "prod").unwrap();
        assert_eq!(c.last().unwrap(), "a.b.c.d.e.");
    }

    #[test]
    fn an_already_absolute_cluster_name_is_its_own_first_candidate() {
        // The client asked "web.prod.svc.cluster.local." (trailing dot): the wire name is the
        // same as a first search step for "web", so the plan starts with the name itself and
        // resolving it answers the query unchanged.
        let p = planner(&[], 5);
        let plan = p
            .plan(
                &n("web.prod.svc.cluster.local."),
                RecordType::A,
                DnsClass::IN,
                Some("prod"),
            )
            .unwrap();
        assert_eq!(plan.candidates[0], plan.asked);
        assert_eq!(plan.base, n("web"));
        // A fully qualified name typed without the dot (4 dots < ndots 5) is searched; the
        // walk ends with the name itself, which is where it is found.
        let c = candidates(
            &p,
            "web.prod.svc.cluster.local.prod.svc.cluster.local",
            "prod",
        )
        .unwrap();
        assert_eq!(c.last().unwrap(), "web.prod.svc.cluster.local.");
    }

    #[test]
    fn mixed_case_and_trailing_dots_are_normalised() {
        let p = planner(&["Example.Internal."], 5);
        let upper = candidates(&p, "WWW.Example.COM.Prod.SVC.cluster.LOCAL.", "Prod").unwrap();
        let lower = candidates(&p, "www.example.com.prod.svc.cluster.local", "prod").unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper[3], "www.example.com.example.internal.");
    }

    #[test]
    fn non_in_classes_and_meta_types_are_left_alone() {
        let p = planner(&[], 5);
        let name = n("x.prod.svc.cluster.local");
        for class in [DnsClass::CH, DnsClass::HS, DnsClass::ANY, DnsClass(254)] {
            assert_eq!(p.plan(&name, RecordType::A, class, Some("prod")), None);
        }
        for t in [RecordType::AXFR, RecordType::IXFR, RecordType::OPT] {
            assert_eq!(p.plan(&name, t, DnsClass::IN, Some("prod")), None);
        }
        for t in [
            RecordType::A,
            RecordType::AAAA,
            RecordType::SRV,
            RecordType::TXT,
            RecordType::ANY,
            RecordType(65280),
        ] {
            assert!(p.plan(&name, t, DnsClass::IN, Some("prod")).is_some());
        }
    }

    #[test]
    fn over_long_candidates_are_skipped_and_duplicates_dropped() {
        // A base so long that only the shorter suffixes fit.
        let label = "a".repeat(63);
        let base = format!("{label}.{label}.{}", "b".repeat(60)); // 64+64+61 = 189 bytes + root
        let asked = format!("{base}.p.svc.cluster.local"); // + 2+4+8+6 = 209 bytes + root
        let long_extra = format!("{}.internal", "c".repeat(63)); // 189 + 73 + root > 255
        let p = planner(&[&long_extra], 5);
        let c = candidates(&p, &asked, "p").unwrap();
        assert_eq!(c.len(), 4, "{c:?}"); // asked, svc, cluster.local, as given; extra too long
        assert!(!c.iter().any(|s| s.ends_with("internal.")));
        // An extra search domain equal to a cluster one is not tried twice.
        let p = planner(&["cluster.local"], 5);
        let c = candidates(&p, "x.p.svc.cluster.local", "p").unwrap();
        assert_eq!(c.iter().filter(|s| *s == "x.cluster.local.").count(), 1);
    }

    #[test]
    fn namespace_label_is_the_label_before_svc() {
        let p = planner(&[], 5);
        let label = |s: &str| p.namespace_label(n(s).as_wire()).map(<[u8]>::to_vec);
        assert_eq!(label("web.prod.svc.cluster.local"), Some(b"prod".to_vec()));
        assert_eq!(
            label("a.b.web.prod.svc.cluster.local"),
            Some(b"prod".to_vec())
        );
        assert_eq!(label("prod.svc.cluster.local"), None);
        assert_eq!(label("svc.cluster.local"), None);
        assert_eq!(label("web.prod.svc.other.local"), None);
        assert_eq!(label("web.prodsvc.cluster.local"), None);
    }
}
