//! The state machine of one simulated region: vSwitches with finite address space, instances and
//! their types, ENIs with asynchronous status transitions, idempotency tokens.
//!
//! Every operation takes `now` and first settles the transitions that are due, so no background
//! task is needed and a paused tokio clock drives everything deterministically.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::{Ipv4Addr, Ipv6Addr},
    time::SystemTime,
};

use tokio::time::Instant;

use super::config::{
    InstanceSpec, InstanceTypeSpec, LatencyConfig, QuotaConfig, SimConfig, VSwitchSpec, VpcSpec,
};
use crate::{
    ecs::codes,
    metadata::{InstanceIdentity, MetadataInterface},
    rand::SplitMix64,
    timefmt::format_utc,
    types::{
        AssignIpsRequest, AttachEniRequest, CreateEniRequest, DetachEniRequest, Eni, EniAttachment,
        EniFilter, EniKind, EniStatus, InstanceLimits, IpSelection, Subnet,
    },
};

/// An error the simulated API answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SimError {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) http_status: u16,
}

pub(crate) fn sim_err(code: &str, http_status: u16, message: impl Into<String>) -> SimError {
    SimError {
        code: code.to_owned(),
        message: message.into(),
        http_status,
    }
}

fn not_found(code: &str, what: &str, id: &str) -> SimError {
    sim_err(
        code,
        404,
        format!("The specified {what} ({id}) does not exist."),
    )
}

fn bad_state(eni: &EniRec, op: &str) -> SimError {
    sim_err(
        codes::INVALID_ENI_STATE,
        403,
        format!(
            "The ENI {} is {}; {op} is not allowed in this state.",
            eni.id, eni.status
        ),
    )
}

#[derive(Clone, Debug)]
pub(crate) struct VSwitch {
    spec: VSwitchSpec,
    used: BTreeSet<Ipv4Addr>,
    cursor: u32,
    v6_used: BTreeSet<Ipv6Addr>,
    v6_cursor: u128,
}

/// IPv6 addresses are handed out from this offset into the vSwitch's prefix.
const V6_FIRST: u128 = 0x100;

impl VSwitch {
    fn new(spec: VSwitchSpec) -> Self {
        Self {
            spec,
            used: BTreeSet::new(),
            cursor: 0,
            v6_used: BTreeSet::new(),
            v6_cursor: 0,
        }
    }

    /// Usable addresses: all but the first and the last three.
    fn usable(&self) -> (u32, u32) {
        let net = u32::from(self.spec.cidr.network());
        let size = 1u64 << (32 - u32::from(self.spec.cidr.prefix()));
        let last = u64::from(net) + size - 1;
        let first_usable = u64::from(net) + 1;
        let last_usable = last.saturating_sub(3);
        if last_usable < first_usable {
            (1, 0)
        } else {
            (
                u32::try_from(first_usable).unwrap_or(u32::MAX),
                u32::try_from(last_usable).unwrap_or(u32::MAX),
            )
        }
    }

    fn capacity(&self) -> u64 {
        let (a, b) = self.usable();
        if b < a { 0 } else { u64::from(b - a) + 1 }
    }

    fn free(&self) -> u64 {
        self.capacity().saturating_sub(self.used.len() as u64)
    }

    fn gateway(&self) -> Ipv4Addr {
        let net = u64::from(u32::from(self.spec.cidr.network()));
        let size = 1u64 << (32 - u32::from(self.spec.cidr.prefix()));
        Ipv4Addr::from(u32::try_from((net + size).saturating_sub(3)).unwrap_or(0))
    }

    fn exhausted(&self, want: u64) -> SimError {
        sim_err(
            codes::VSWITCH_IP_NOT_ENOUGH,
            403,
            format!(
                "The specified VSwitch \"{}\" has not enough IP addresses ({} free, {want} needed).",
                self.spec.id,
                self.free()
            ),
        )
    }

    fn check_explicit(&self, ip: Ipv4Addr) -> Result<(), SimError> {
        let (a, b) = self.usable();
        let n = u32::from(ip);
        if n < a || n > b {
            return Err(sim_err(
                codes::IP_INVALID,
                403,
                format!("The IP address {ip} is not in vSwitch {}.", self.spec.id),
            ));
        }
        if self.used.contains(&ip) {
            return Err(sim_err(
                codes::IP_DUPLICATED,
                400,
                format!("The IP address {ip} is already in use."),
            ));
        }
        Ok(())
    }

    /// Allocates `n` addresses, next-fit from where the last allocation stopped.
    fn alloc(&mut self, n: u64) -> Result<Vec<Ipv4Addr>, SimError> {
        if self.free() < n {
            return Err(self.exhausted(n));
        }
        let (a, b) = self.usable();
        let span = u64::from(b - a) + 1;
        let mut out = Vec::new();
        let mut i = 0u64;
        while (out.len() as u64) < n && i < span {
            let off = (u64::from(self.cursor) + i) % span;
            let ip = Ipv4Addr::from(a + u32::try_from(off).unwrap_or(0));
            if !self.used.contains(&ip) {
                out.push(ip);
            }
            i += 1;
        }
        self.cursor = u32::try_from((u64::from(self.cursor) + i) % span).unwrap_or(0);
        self.used.extend(out.iter().copied());
        Ok(out)
    }

    fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    fn v6_base(&self) -> Result<u128, SimError> {
        match self.spec.ipv6_cidr {
            Some(net) => Ok(u128::from(net.network())),
            None => Err(sim_err(
                codes::IPV6_NOT_TURNED_ON,
                403,
                format!("IPv6 is not enabled on vSwitch {}.", self.spec.id),
            )),
        }
    }

    fn check_explicit_v6(&self, ip: Ipv6Addr) -> Result<(), SimError> {
        let Some(net) = self.spec.ipv6_cidr else {
            return self.v6_base().map(drop);
        };
        if !net.contains(ip) || u128::from(ip) - u128::from(net.network()) < V6_FIRST {
            return Err(sim_err(
                codes::IP_INVALID,
                403,
                format!(
                    "The IPv6 address {ip} is not usable in vSwitch {}.",
                    self.spec.id
                ),
            ));
        }
        if self.v6_used.contains(&ip) {
            return Err(sim_err(
                codes::IP_DUPLICATED,
                400,
                format!("The IPv6 address {ip} is already in use."),
            ));
        }
        Ok(())
    }

    fn alloc_v6(&mut self, n: u64) -> Result<Vec<Ipv6Addr>, SimError> {
        let base = self.v6_base()?;
        let mut out = Vec::new();
        while (out.len() as u64) < n {
            let ip = Ipv6Addr::from(base + V6_FIRST + self.v6_cursor);
            self.v6_cursor = (self.v6_cursor + 1) % (1 << 48);
            if !self.v6_used.contains(&ip) {
                out.push(ip);
                self.v6_used.insert(ip);
            }
        }
        Ok(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TransitionKind {
    AttachOk,
    AttachFail,
    Detach,
    Delete,
}

#[derive(Clone, Debug)]
pub(crate) struct EniRec {
    id: String,
    mac: String,
    kind: EniKind,
    status: EniStatus,
    instance_id: Option<String>,
    device_index: Option<u32>,
    vswitch_id: String,
    vpc_id: String,
    zone_id: String,
    primary: Ipv4Addr,
    secondary: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
    security_group_ids: Vec<String>,
    tags: BTreeMap<String, String>,
    description: Option<String>,
    created_at: String,
    transition: Option<(Instant, TransitionKind)>,
}

impl EniRec {
    fn to_eni(&self) -> Eni {
        let mut e = Eni::new(self.id.clone());
        e.mac.clone_from(&self.mac);
        e.status = self.status.clone();
        e.kind = self.kind.clone();
        e.attachment = self.instance_id.as_ref().map(|i| EniAttachment {
            instance_id: i.clone(),
            device_index: self.device_index,
            attachment_id: None,
        });
        e.subnet_id.clone_from(&self.vswitch_id);
        e.vpc_id.clone_from(&self.vpc_id);
        e.zone_id.clone_from(&self.zone_id);
        e.primary_ipv4 = Some(self.primary);
        e.secondary_ipv4.clone_from(&self.secondary);
        e.ipv6.clone_from(&self.ipv6);
        e.security_group_ids.clone_from(&self.security_group_ids);
        e.tags.clone_from(&self.tags);
        e.description.clone_from(&self.description);
        e.created_at = Some(self.created_at.clone());
        e
    }

    fn ipv4_count(&self) -> usize {
        1 + self.secondary.len()
    }
}

#[derive(Clone, Debug)]
struct Instance {
    spec: InstanceSpec,
    zone_id: String,
    vpc_id: String,
    primary_eni: String,
}

#[derive(Clone, Debug)]
pub(crate) enum TokenResult {
    Eni(Box<Eni>),
    V4(Vec<Ipv4Addr>),
    V6(Vec<Ipv6Addr>),
}

#[derive(Clone, Debug)]
struct TokenRec {
    action: &'static str,
    fingerprint: String,
    result: TokenResult,
}

const MAX_TOKENS: usize = 100_000;

/// What differs between IPv4 and IPv6 address operations.
pub(crate) trait Family:
    Copy + Ord + std::fmt::Display + serde::Serialize + std::fmt::Debug
{
    const NAME: &'static str;
    const ASSIGN: &'static str;
    const COUNT_EXCEEDED: &'static str;
    const COUNT_PARAM_ERROR: &'static str;
    const MISSING_ADDRESS_ERROR: &'static str;
    fn list(e: &EniRec) -> &Vec<Self>;
    fn list_mut(e: &mut EniRec) -> &mut Vec<Self>;
    /// Addresses counted against the per-ENI limit.
    fn count(e: &EniRec) -> usize;
    fn limit_attached(t: &InstanceTypeSpec) -> usize;
    fn limit_unattached(q: &QuotaConfig) -> usize;
    fn check_explicit(vsw: &VSwitch, ip: Self) -> Result<(), SimError>;
    fn alloc(vsw: &mut VSwitch, n: u64) -> Result<Vec<Self>, SimError>;
    fn mark_used(vsw: &mut VSwitch, ip: Self);
    fn release(vsw: &mut VSwitch, ip: Self);
    fn to_token(v: Vec<Self>) -> TokenResult;
    fn from_token(r: &TokenResult) -> Option<Vec<Self>>;
}

impl Family for Ipv4Addr {
    const NAME: &'static str = "IPv4";
    const ASSIGN: &'static str = "AssignPrivateIpAddresses";
    const COUNT_EXCEEDED: &'static str = codes::IPV4_COUNT_EXCEEDED;
    const COUNT_PARAM_ERROR: &'static str = "InvalidParameter.SecondaryPrivateIpAddressCount";
    const MISSING_ADDRESS_ERROR: &'static str = "MissingParameter.PrivateIpAddress";
    fn list(e: &EniRec) -> &Vec<Self> {
        &e.secondary
    }
    fn list_mut(e: &mut EniRec) -> &mut Vec<Self> {
        &mut e.secondary
    }
    fn count(e: &EniRec) -> usize {
        e.ipv4_count()
    }
    fn limit_attached(t: &InstanceTypeSpec) -> usize {
        t.eni_private_ip_quantity as usize
    }
    fn limit_unattached(q: &QuotaConfig) -> usize {
        1 + q.max_secondary_ipv4_unattached as usize
    }
    fn check_explicit(vsw: &VSwitch, ip: Self) -> Result<(), SimError> {
        vsw.check_explicit(ip)
    }
    fn alloc(vsw: &mut VSwitch, n: u64) -> Result<Vec<Self>, SimError> {
        vsw.alloc(n)
    }
    fn mark_used(vsw: &mut VSwitch, ip: Self) {
        vsw.used.insert(ip);
    }
    fn release(vsw: &mut VSwitch, ip: Self) {
        vsw.used.remove(&ip);
    }
    fn to_token(v: Vec<Self>) -> TokenResult {
        TokenResult::V4(v)
    }
    fn from_token(r: &TokenResult) -> Option<Vec<Self>> {
        match r {
            TokenResult::V4(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl Family for Ipv6Addr {
    const NAME: &'static str = "IPv6";
    const ASSIGN: &'static str = "AssignIpv6Addresses";
    const COUNT_EXCEEDED: &'static str = codes::IPV6_COUNT_EXCEEDED;
    const COUNT_PARAM_ERROR: &'static str = "InvalidParameter.Ipv6AddressCount";
    const MISSING_ADDRESS_ERROR: &'static str = "MissingParameter.Ipv6Address";
    fn list(e: &EniRec) -> &Vec<Self> {
        &e.ipv6
    }
    fn list_mut(e: &mut EniRec) -> &mut Vec<Self> {
        &mut e.ipv6
    }
    fn count(e: &EniRec) -> usize {
        e.ipv6.len()
    }
    fn limit_attached(t: &InstanceTypeSpec) -> usize {
        t.eni_ipv6_quantity as usize
    }
    fn limit_unattached(q: &QuotaConfig) -> usize {
        q.max_ipv6_unattached as usize
    }
    fn check_explicit(vsw: &VSwitch, ip: Self) -> Result<(), SimError> {
        vsw.check_explicit_v6(ip)
    }
    fn alloc(vsw: &mut VSwitch, n: u64) -> Result<Vec<Self>, SimError> {
        vsw.alloc_v6(n)
    }
    fn mark_used(vsw: &mut VSwitch, ip: Self) {
        vsw.v6_used.insert(ip);
    }
    fn release(vsw: &mut VSwitch, ip: Self) {
        vsw.v6_used.remove(&ip);
    }
    fn to_token(v: Vec<Self>) -> TokenResult {
        TokenResult::V6(v)
    }
    fn from_token(r: &TokenResult) -> Option<Vec<Self>> {
        match r {
            TokenResult::V6(v) => Some(v.clone()),
            _ => None,
        }
    }
}

/// The region's state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) region_id: String,
    quotas: QuotaConfig,
    latency: LatencyConfig,
    vpcs: BTreeMap<String, VpcSpec>,
    vswitches: BTreeMap<String, VSwitch>,
    security_groups: BTreeMap<String, String>,
    instance_types: BTreeMap<String, InstanceTypeSpec>,
    instances: BTreeMap<String, Instance>,
    enis: BTreeMap<String, EniRec>,
    pending: BTreeSet<(Instant, String)>,
    tokens: HashMap<String, TokenRec>,
    token_order: VecDeque<String>,
    ids: SplitMix64,
    mac_seq: u32,
}

fn fingerprint<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl State {
    /// Builds the region from its configuration.
    pub(crate) fn new(cfg: &SimConfig) -> Result<Self, crate::Error> {
        let mut st = Self {
            region_id: cfg.region_id.clone(),
            quotas: cfg.quotas.clone(),
            latency: cfg.latency.clone(),
            vpcs: BTreeMap::new(),
            vswitches: BTreeMap::new(),
            security_groups: BTreeMap::new(),
            instance_types: BTreeMap::new(),
            instances: BTreeMap::new(),
            enis: BTreeMap::new(),
            pending: BTreeSet::new(),
            tokens: HashMap::new(),
            token_order: VecDeque::new(),
            ids: SplitMix64::new(cfg.seed ^ 0x05EE_D1D5),
            mac_seq: 0,
        };
        for v in &cfg.vpcs {
            st.vpcs.insert(v.id.clone(), v.clone());
        }
        for v in &cfg.vswitches {
            st.add_vswitch(v.clone())?;
        }
        for sg in &cfg.security_groups {
            if !st.vpcs.contains_key(&sg.vpc_id) {
                return Err(crate::Error::Config(format!(
                    "security group {} names unknown VPC {}",
                    sg.id, sg.vpc_id
                )));
            }
            st.security_groups.insert(sg.id.clone(), sg.vpc_id.clone());
        }
        for t in &cfg.instance_types {
            st.instance_types.insert(t.id.clone(), t.clone());
        }
        for i in &cfg.instances {
            st.add_instance(i.clone())?;
        }
        Ok(st)
    }

    pub(crate) fn add_vswitch(&mut self, spec: VSwitchSpec) -> Result<(), crate::Error> {
        if !self.vpcs.contains_key(&spec.vpc_id) {
            return Err(crate::Error::Config(format!(
                "vSwitch {} names unknown VPC {}",
                spec.id, spec.vpc_id
            )));
        }
        self.vswitches.insert(spec.id.clone(), VSwitch::new(spec));
        Ok(())
    }

    pub(crate) fn set_latency(&mut self, latency: LatencyConfig) {
        self.latency = latency;
    }

    pub(crate) fn add_instance_type(&mut self, spec: InstanceTypeSpec) {
        self.instance_types.insert(spec.id.clone(), spec);
    }

    /// Adds an instance with a primary ENI (`InUse`, device 0).
    pub(crate) fn add_instance(&mut self, spec: InstanceSpec) -> Result<String, crate::Error> {
        let cfg_err = crate::Error::Config;
        if !self.instance_types.contains_key(&spec.instance_type) {
            return Err(cfg_err(format!(
                "instance {} has unknown type {}",
                spec.id, spec.instance_type
            )));
        }
        let Some(vsw) = self.vswitches.get_mut(&spec.vswitch_id) else {
            return Err(cfg_err(format!(
                "instance {} names unknown vSwitch {}",
                spec.id, spec.vswitch_id
            )));
        };
        let ip = vsw
            .alloc(1)
            .map_err(|e| cfg_err(format!("instance {}: {}", spec.id, e.message)))?[0];
        let (zone_id, vpc_id) = (vsw.spec.zone_id.clone(), vsw.spec.vpc_id.clone());
        let eni_id = self.new_eni_id();
        let mac = self.new_mac();
        self.enis.insert(
            eni_id.clone(),
            EniRec {
                id: eni_id.clone(),
                mac,
                kind: EniKind::Primary,
                status: EniStatus::InUse,
                instance_id: Some(spec.id.clone()),
                device_index: Some(0),
                vswitch_id: spec.vswitch_id.clone(),
                vpc_id: vpc_id.clone(),
                zone_id: zone_id.clone(),
                primary: ip,
                secondary: Vec::new(),
                ipv6: Vec::new(),
                security_group_ids: spec.security_group_ids.clone(),
                tags: BTreeMap::new(),
                description: None,
                created_at: format_utc(SystemTime::now()),
                transition: None,
            },
        );
        self.instances.insert(
            spec.id.clone(),
            Instance {
                spec,
                zone_id,
                vpc_id,
                primary_eni: eni_id.clone(),
            },
        );
        Ok(eni_id)
    }

    fn new_eni_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        loop {
            let mut id = String::from("eni-");
            for _ in 0..20 {
                let i = usize::try_from(self.ids.below(36)).unwrap_or(0);
                id.push(char::from(ALPHABET[i]));
            }
            if !self.enis.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_mac(&mut self) -> String {
        self.mac_seq = self.mac_seq.wrapping_add(1);
        let b = self.mac_seq.to_be_bytes();
        format!("00:16:3e:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
    }

    /// Applies every transition due at `now`.
    pub(crate) fn settle(&mut self, now: Instant) {
        while let Some((at, id)) = self.pending.first().cloned() {
            if at > now {
                break;
            }
            self.pending.remove(&(at, id.clone()));
            let Some(eni) = self.enis.get_mut(&id) else {
                continue;
            };
            let Some((due, kind)) = eni.transition else {
                continue;
            };
            if due != at {
                continue;
            }
            eni.transition = None;
            match kind {
                TransitionKind::AttachOk => eni.status = EniStatus::InUse,
                TransitionKind::AttachFail | TransitionKind::Detach => {
                    eni.status = EniStatus::Available;
                    eni.instance_id = None;
                    eni.device_index = None;
                }
                TransitionKind::Delete => {
                    if let Some(eni) = self.enis.remove(&id)
                        && let Some(vsw) = self.vswitches.get_mut(&eni.vswitch_id)
                    {
                        vsw.release(eni.primary);
                        for ip in &eni.secondary {
                            vsw.release(*ip);
                        }
                        for ip in &eni.ipv6 {
                            vsw.v6_used.remove(ip);
                        }
                    }
                }
            }
        }
    }

    fn schedule(
        &mut self,
        id: &str,
        now: Instant,
        after: std::time::Duration,
        kind: TransitionKind,
    ) {
        let at = now + after;
        if let Some(eni) = self.enis.get_mut(id) {
            if let Some((old, _)) = eni.transition.take() {
                self.pending.remove(&(old, id.to_owned()));
            }
            eni.transition = Some((at, kind));
            self.pending.insert((at, id.to_owned()));
        }
    }

    fn replay<T>(
        &self,
        action: &'static str,
        token: Option<&String>,
        fp: &str,
        pick: impl FnOnce(&TokenResult) -> Option<T>,
    ) -> Result<Option<T>, SimError> {
        let Some(token) = token else { return Ok(None) };
        let Some(rec) = self.tokens.get(token) else {
            return Ok(None);
        };
        if rec.action != action || rec.fingerprint != fp {
            return Err(sim_err(
                codes::IDEMPOTENT_PARAMETER_MISMATCH,
                400,
                format!("The ClientToken {token} was used with different parameters."),
            ));
        }
        Ok(pick(&rec.result))
    }

    fn remember(
        &mut self,
        action: &'static str,
        token: Option<&String>,
        fp: String,
        result: TokenResult,
    ) {
        let Some(token) = token else { return };
        if self.token_order.len() >= MAX_TOKENS
            && let Some(old) = self.token_order.pop_front()
        {
            self.tokens.remove(&old);
        }
        self.token_order.push_back(token.clone());
        self.tokens.insert(
            token.clone(),
            TokenRec {
                action,
                fingerprint: fp,
                result,
            },
        );
    }

    fn eni(&self, id: &str) -> Result<&EniRec, SimError> {
        self.enis
            .get(id)
            .ok_or_else(|| not_found(codes::ENI_NOT_FOUND, "ENI", id))
    }

    fn instance_type_of(&self, instance_id: &str) -> Option<&InstanceTypeSpec> {
        self.instances
            .get(instance_id)
            .and_then(|i| self.instance_types.get(&i.spec.instance_type))
    }

    /// `CreateNetworkInterface`.
    pub(crate) fn create_eni(&mut self, req: &CreateEniRequest) -> Result<Eni, SimError> {
        const ACTION: &str = "CreateNetworkInterface";
        let mut keyed = req.clone();
        keyed.client_token = None;
        let fp = fingerprint(&keyed);
        if let Some(eni) = self.replay(ACTION, req.client_token.as_ref(), &fp, |r| match r {
            TokenResult::Eni(e) => Some((**e).clone()),
            _ => None,
        })? {
            return Ok(eni);
        }
        if req.subnet_id.is_empty() {
            return Err(sim_err(
                "MissingParameter.VSwitchId",
                400,
                "VSwitchId is mandatory.",
            ));
        }
        if req.security_group_ids.is_empty() {
            return Err(sim_err(
                "MissingParameter.SecurityGroupId",
                400,
                "SecurityGroupId or SecurityGroupIds.N is mandatory.",
            ));
        }
        let vsw = self
            .vswitches
            .get(&req.subnet_id)
            .ok_or_else(|| not_found(codes::VSWITCH_NOT_FOUND, "vSwitch", &req.subnet_id))?;
        for sg in &req.security_group_ids {
            match self.security_groups.get(sg) {
                None => {
                    return Err(not_found(
                        codes::SECURITY_GROUP_NOT_FOUND,
                        "security group",
                        sg,
                    ));
                }
                Some(vpc) if *vpc != vsw.spec.vpc_id => {
                    return Err(sim_err(
                        codes::VPC_MISMATCH,
                        403,
                        format!("Security group {sg} is not in the vSwitch's VPC."),
                    ));
                }
                Some(_) => {}
            }
        }
        if req.tags.len() > self.quotas.max_tags as usize {
            return Err(sim_err("QuotaExceed.Tags", 403, "Too many tags."));
        }
        if let Some(k) = req
            .tags
            .keys()
            .find(|k| k.is_empty() || k.starts_with("aliyun") || k.starts_with("acs:"))
        {
            return Err(sim_err(
                "InvalidTagKey.Malformed",
                400,
                format!("The tag key {k:?} is not allowed."),
            ));
        }
        if self.enis.len() >= self.quotas.max_enis as usize {
            return Err(sim_err(
                "QuotaExceeded.NetworkInterface",
                403,
                "The ENI quota of the region is reached.",
            ));
        }
        let secondary_n = req.secondary_ipv4.as_ref().map_or(0, IpSelection::len);
        if secondary_n > self.quotas.max_secondary_ipv4_unattached as usize {
            return Err(sim_err(
                codes::IPV4_COUNT_EXCEEDED,
                403,
                format!(
                    "At most {} secondary private IPs can be assigned at creation.",
                    self.quotas.max_secondary_ipv4_unattached
                ),
            ));
        }
        let v6_n = req.ipv6.as_ref().map_or(0, IpSelection::len);
        if v6_n > self.quotas.max_ipv6_unattached as usize {
            return Err(sim_err(
                codes::IPV6_COUNT_EXCEEDED,
                403,
                format!(
                    "At most {} IPv6 addresses.",
                    self.quotas.max_ipv6_unattached
                ),
            ));
        }
        // Validate explicit addresses before taking any.
        let mut explicit4: Vec<Ipv4Addr> = req.primary_ipv4.into_iter().collect();
        if let Some(IpSelection::Explicit(v)) = &req.secondary_ipv4 {
            explicit4.extend(v.iter().copied());
        }
        let distinct: BTreeSet<_> = explicit4.iter().collect();
        if distinct.len() != explicit4.len() {
            return Err(sim_err(
                codes::IP_DUPLICATED,
                400,
                "An address is given twice.",
            ));
        }
        for ip in &explicit4 {
            vsw.check_explicit(*ip)?;
        }
        if v6_n > 0 {
            vsw.v6_base()?;
        }
        if let Some(IpSelection::Explicit(v)) = &req.ipv6 {
            for ip in v {
                vsw.check_explicit_v6(*ip)?;
            }
        }
        let auto4 = u64::from(req.primary_ipv4.is_none())
            + match &req.secondary_ipv4 {
                Some(IpSelection::Count(n)) => u64::from(*n),
                _ => 0,
            };
        let total4 = auto4 + explicit4.len() as u64;
        if vsw.free() < total4 {
            return Err(vsw.exhausted(total4));
        }
        let (vpc_id, zone_id) = (vsw.spec.vpc_id.clone(), vsw.spec.zone_id.clone());
        // Commit.
        let vsw = self
            .vswitches
            .get_mut(&req.subnet_id)
            .expect("vSwitch looked up above");
        vsw.used.extend(explicit4.iter().copied());
        let mut auto = vsw.alloc(auto4)?.into_iter();
        let primary = match req.primary_ipv4 {
            Some(ip) => ip,
            None => auto.next().expect("one address allocated for the primary"),
        };
        let mut secondary: Vec<Ipv4Addr> = match &req.secondary_ipv4 {
            Some(IpSelection::Explicit(v)) => v.clone(),
            _ => Vec::new(),
        };
        secondary.extend(auto);
        let ipv6 = match &req.ipv6 {
            None => Vec::new(),
            Some(IpSelection::Count(n)) => vsw.alloc_v6(u64::from(*n))?,
            Some(IpSelection::Explicit(v)) => {
                vsw.v6_used.extend(v.iter().copied());
                v.clone()
            }
        };
        let id = self.new_eni_id();
        let mac = self.new_mac();
        let rec = EniRec {
            id: id.clone(),
            mac,
            kind: if req.trunk {
                EniKind::Trunk
            } else {
                EniKind::Secondary
            },
            status: EniStatus::Available,
            instance_id: None,
            device_index: None,
            vswitch_id: req.subnet_id.clone(),
            vpc_id,
            zone_id,
            primary,
            secondary,
            ipv6,
            security_group_ids: req.security_group_ids.clone(),
            tags: req.tags.clone(),
            description: req.description.clone(),
            created_at: format_utc(SystemTime::now()),
            transition: None,
        };
        let eni = rec.to_eni();
        self.enis.insert(id, rec);
        self.remember(
            ACTION,
            req.client_token.as_ref(),
            fp,
            TokenResult::Eni(Box::new(eni.clone())),
        );
        Ok(eni)
    }

    /// `AttachNetworkInterface`; `fail` makes the attach fail asynchronously.
    pub(crate) fn attach_eni(
        &mut self,
        req: &AttachEniRequest,
        fail: bool,
        now: Instant,
    ) -> Result<(), SimError> {
        let eni = self.eni(&req.eni_id)?;
        let inst = self
            .instances
            .get(&req.instance_id)
            .ok_or_else(|| not_found(codes::INSTANCE_NOT_FOUND, "instance", &req.instance_id))?;
        if eni.kind == EniKind::Primary {
            return Err(sim_err(
                codes::INVALID_ENI_TYPE,
                403,
                "A primary ENI cannot be attached.",
            ));
        }
        if eni.status != EniStatus::Available {
            return Err(bad_state(eni, "attaching"));
        }
        if eni.zone_id != inst.zone_id {
            return Err(sim_err(
                codes::ZONE_MISMATCH,
                403,
                format!(
                    "ENI zone {} differs from instance zone {}.",
                    eni.zone_id, inst.zone_id
                ),
            ));
        }
        if eni.vpc_id != inst.vpc_id {
            return Err(sim_err(
                codes::VPC_MISMATCH,
                403,
                "ENI and instance are in different VPCs.",
            ));
        }
        let ty = self
            .instance_type_of(&req.instance_id)
            .expect("instances only exist with a known type");
        let attached: Vec<&EniRec> = self
            .enis
            .values()
            .filter(|e| e.instance_id.as_deref() == Some(req.instance_id.as_str()))
            .collect();
        if attached.len() >= ty.eni_quantity as usize {
            return Err(sim_err(
                codes::ENI_PER_INSTANCE_LIMIT,
                403,
                format!(
                    "Instance {} already has {} ENIs ({} allows {}).",
                    req.instance_id,
                    attached.len(),
                    ty.id,
                    ty.eni_quantity
                ),
            ));
        }
        if eni.ipv4_count() > ty.eni_private_ip_quantity as usize {
            return Err(sim_err(
                codes::IPV4_COUNT_EXCEEDED,
                403,
                format!(
                    "The ENI has more IPv4 addresses than {} allows per ENI.",
                    ty.id
                ),
            ));
        }
        if eni.ipv6.len() > ty.eni_ipv6_quantity as usize {
            return Err(sim_err(
                codes::IPV6_COUNT_EXCEEDED,
                403,
                format!(
                    "The ENI has more IPv6 addresses than {} allows per ENI.",
                    ty.id
                ),
            ));
        }
        let used: BTreeSet<u32> = attached.iter().filter_map(|e| e.device_index).collect();
        let device = (1u32..).find(|i| !used.contains(i)).unwrap_or(1);
        let delay = self.latency.attach;
        let eni = self.enis.get_mut(&req.eni_id).expect("looked up above");
        eni.status = EniStatus::Attaching;
        eni.instance_id = Some(req.instance_id.clone());
        eni.device_index = Some(device);
        let kind = if fail {
            TransitionKind::AttachFail
        } else {
            TransitionKind::AttachOk
        };
        self.schedule(&req.eni_id, now, delay, kind);
        Ok(())
    }

    /// `DetachNetworkInterface`.
    pub(crate) fn detach_eni(
        &mut self,
        req: &DetachEniRequest,
        now: Instant,
    ) -> Result<(), SimError> {
        let eni = self.eni(&req.eni_id)?;
        if !self.instances.contains_key(&req.instance_id) {
            return Err(not_found(
                codes::ECS_NOT_FOUND,
                "instance",
                &req.instance_id,
            ));
        }
        if eni.kind == EniKind::Primary {
            return Err(sim_err(
                codes::DETACH_PRIMARY,
                403,
                "The primary ENI cannot be detached.",
            ));
        }
        if eni.instance_id.as_deref() != Some(req.instance_id.as_str()) {
            return Err(bad_state(
                eni,
                &format!("detaching from {}", req.instance_id),
            ));
        }
        match eni.status {
            EniStatus::InUse => {
                let delay = self.latency.detach;
                if let Some(e) = self.enis.get_mut(&req.eni_id) {
                    e.status = EniStatus::Detaching;
                }
                self.schedule(&req.eni_id, now, delay, TransitionKind::Detach);
                Ok(())
            }
            EniStatus::Detaching => Ok(()),
            _ => Err(bad_state(eni, "detaching")),
        }
    }

    /// `DeleteNetworkInterface`.
    pub(crate) fn delete_eni(&mut self, id: &str, now: Instant) -> Result<(), SimError> {
        let eni = self.eni(id)?;
        if eni.kind == EniKind::Primary {
            return Err(sim_err(
                codes::INVALID_ENI_TYPE,
                403,
                "The primary ENI cannot be deleted.",
            ));
        }
        match eni.status {
            EniStatus::Available => {
                let delay = self.latency.delete;
                if let Some(e) = self.enis.get_mut(id) {
                    e.status = EniStatus::Deleting;
                }
                self.schedule(id, now, delay, TransitionKind::Delete);
                Ok(())
            }
            EniStatus::Deleting => Ok(()),
            _ => Err(bad_state(eni, "deleting")),
        }
    }

    fn check_ip_op_state(eni: &EniRec, op: &str) -> Result<(), SimError> {
        if matches!(eni.status, EniStatus::Available | EniStatus::InUse) {
            Ok(())
        } else {
            Err(bad_state(eni, op))
        }
    }

    /// `AssignPrivateIpAddresses` / `AssignIpv6Addresses`.
    pub(crate) fn assign<A: Family>(
        &mut self,
        req: &AssignIpsRequest<A>,
    ) -> Result<Vec<A>, SimError> {
        let mut keyed = req.clone();
        keyed.client_token = None;
        let fp = fingerprint(&keyed);
        if let Some(v) = self.replay(A::ASSIGN, req.client_token.as_ref(), &fp, A::from_token)? {
            return Ok(v);
        }
        let eni = self.eni(&req.eni_id)?;
        Self::check_ip_op_state(eni, "assigning addresses")?;
        let n = req.ips.len();
        if n == 0 {
            return Err(sim_err(
                A::COUNT_PARAM_ERROR,
                400,
                "Ask for at least one address.",
            ));
        }
        let limit = match eni
            .instance_id
            .as_deref()
            .and_then(|i| self.instance_type_of(i))
        {
            Some(ty) => A::limit_attached(ty),
            None => A::limit_unattached(&self.quotas),
        };
        let have = A::count(eni);
        if have + n > limit {
            return Err(sim_err(
                A::COUNT_EXCEEDED,
                403,
                format!(
                    "The ENI {} has {have} {} addresses; {n} more exceed the limit of {limit}.",
                    eni.id,
                    A::NAME
                ),
            ));
        }
        let vsw_id = eni.vswitch_id.clone();
        let vsw = self
            .vswitches
            .get_mut(&vsw_id)
            .expect("ENIs only exist in known vSwitches");
        let ips = match &req.ips {
            IpSelection::Count(n) => A::alloc(vsw, u64::from(*n))?,
            IpSelection::Explicit(v) => {
                let distinct: BTreeSet<_> = v.iter().collect();
                if distinct.len() != v.len() {
                    return Err(sim_err(
                        codes::IP_DUPLICATED,
                        400,
                        "An address is given twice.",
                    ));
                }
                for ip in v {
                    A::check_explicit(vsw, *ip)?;
                }
                for ip in v {
                    A::mark_used(vsw, *ip);
                }
                v.clone()
            }
        };
        A::list_mut(self.enis.get_mut(&req.eni_id).expect("looked up above"))
            .extend(ips.iter().copied());
        self.remember(
            A::ASSIGN,
            req.client_token.as_ref(),
            fp,
            A::to_token(ips.clone()),
        );
        Ok(ips)
    }

    /// `UnassignPrivateIpAddresses` / `UnassignIpv6Addresses`.
    pub(crate) fn unassign<A: Family>(&mut self, id: &str, ips: &[A]) -> Result<(), SimError> {
        let eni = self.eni(id)?;
        Self::check_ip_op_state(eni, "unassigning addresses")?;
        if ips.is_empty() {
            return Err(sim_err(
                A::MISSING_ADDRESS_ERROR,
                400,
                "The addresses to unassign are mandatory.",
            ));
        }
        if let Some(ip) = ips.iter().find(|ip| !A::list(eni).contains(ip)) {
            return Err(sim_err(
                codes::IP_UNASSIGNED,
                403,
                format!("The address {ip} is not a secondary address of {id}."),
            ));
        }
        let vsw_id = eni.vswitch_id.clone();
        A::list_mut(self.enis.get_mut(id).expect("looked up above")).retain(|ip| !ips.contains(ip));
        if let Some(vsw) = self.vswitches.get_mut(&vsw_id) {
            for ip in ips {
                A::release(vsw, *ip);
            }
        }
        Ok(())
    }

    /// ENIs matching `filter`, sorted by id.
    pub(crate) fn describe_enis(&self, filter: &EniFilter) -> Vec<Eni> {
        let matching = |e: &&EniRec| {
            // Cheap pre-filters before building the full view.
            (filter.eni_ids.is_empty() || filter.eni_ids.contains(&e.id))
                && filter
                    .instance_id
                    .as_ref()
                    .is_none_or(|i| e.instance_id.as_ref() == Some(i))
        };
        self.enis
            .values()
            .filter(matching)
            .map(EniRec::to_eni)
            .filter(|e| filter.matches(e))
            .collect()
    }

    /// Instance types by id (all when `ids` is empty), sorted by id.
    pub(crate) fn instance_types(&self, ids: &[String]) -> Vec<InstanceTypeSpec> {
        self.instance_types
            .values()
            .filter(|t| ids.is_empty() || ids.contains(&t.id))
            .cloned()
            .collect()
    }

    /// Limits of one instance type.
    pub(crate) fn limits(&self, instance_type: &str) -> Option<InstanceLimits> {
        self.instance_types.get(instance_type).map(limits_of)
    }

    /// vSwitches matching the filters (all when empty), sorted by id.
    pub(crate) fn vswitches(
        &self,
        id: Option<&str>,
        vpc_id: Option<&str>,
        zone_id: Option<&str>,
    ) -> Vec<Subnet> {
        self.vswitches
            .values()
            .filter(|v| {
                id.is_none_or(|i| v.spec.id == i)
                    && vpc_id.is_none_or(|i| v.spec.vpc_id == i)
                    && zone_id.is_none_or(|z| v.spec.zone_id == z)
            })
            .map(|v| Subnet {
                id: v.spec.id.clone(),
                vpc_id: v.spec.vpc_id.clone(),
                zone_id: v.spec.zone_id.clone(),
                ipv4_cidr: Some(v.spec.cidr),
                ipv6_cidr: v.spec.ipv6_cidr,
                available_ipv4: v.free(),
            })
            .collect()
    }

    /// The identity of an instance, as its metadata service shows it.
    pub(crate) fn identity(&self, instance_id: &str) -> Option<InstanceIdentity> {
        let inst = self.instances.get(instance_id)?;
        let primary = self.enis.get(&inst.primary_eni)?;
        Some(InstanceIdentity {
            instance_id: inst.spec.id.clone(),
            instance_type: inst.spec.instance_type.clone(),
            region_id: self.region_id.clone(),
            zone_id: inst.zone_id.clone(),
            vpc_id: inst.vpc_id.clone(),
            subnet_id: inst.spec.vswitch_id.clone(),
            primary_mac: primary.mac.clone(),
        })
    }

    /// The attached (`InUse`) ENIs of an instance as its metadata service shows them, by
    /// device index.
    pub(crate) fn metadata_interfaces(&self, instance_id: &str) -> Vec<MetadataInterface> {
        let mut enis: Vec<&EniRec> = self
            .enis
            .values()
            .filter(|e| {
                e.instance_id.as_deref() == Some(instance_id) && e.status == EniStatus::InUse
            })
            .collect();
        enis.sort_by_key(|e| e.device_index);
        enis.into_iter()
            .filter_map(|e| {
                let vsw = self.vswitches.get(&e.vswitch_id)?;
                let vpc = self.vpcs.get(&e.vpc_id);
                Some(MetadataInterface {
                    mac: e.mac.clone(),
                    eni_id: e.id.clone(),
                    primary_ipv4: e.primary,
                    private_ipv4s: std::iter::once(e.primary)
                        .chain(e.secondary.iter().copied())
                        .collect(),
                    gateway: Some(vsw.gateway()),
                    netmask: Some(vsw.spec.cidr.mask()),
                    subnet_id: Some(vsw.spec.id.clone()),
                    subnet_cidr: Some(vsw.spec.cidr),
                    vpc_id: Some(e.vpc_id.clone()),
                    vpc_cidr: vpc.map(|v| v.cidr),
                    ipv6s: e.ipv6.clone(),
                    ipv6_gateway: vsw
                        .spec
                        .ipv6_cidr
                        .map(|n| Ipv6Addr::from(u128::from(n.network()) + 1)),
                    subnet_ipv6_cidr: vsw.spec.ipv6_cidr,
                })
            })
            .collect()
    }

    /// Number of ENIs (all statuses).
    #[cfg(test)]
    fn eni_count(&self) -> usize {
        self.enis.len()
    }
}

/// The provider-facing limits of an instance type.
pub(crate) fn limits_of(t: &InstanceTypeSpec) -> InstanceLimits {
    InstanceLimits {
        instance_type: t.id.clone(),
        max_enis: t.eni_quantity,
        ipv4_per_eni: t.eni_private_ip_quantity,
        ipv6_per_eni: t.eni_ipv6_quantity,
        max_total_enis: t.eni_total_quantity,
        trunk_supported: t.trunk_supported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::config::{
        DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, DEFAULT_VSWITCH_TINY,
    };

    fn state() -> State {
        State::new(&SimConfig::instant()).unwrap()
    }

    #[test]
    fn vswitch_reserves_first_and_last_three() {
        let st = state();
        let tiny = st.vswitches(Some(DEFAULT_VSWITCH_TINY), None, None);
        assert_eq!(tiny[0].available_ipv4, 12);
        let vsw = &st.vswitches[DEFAULT_VSWITCH];
        assert_eq!(
            vsw.usable(),
            (
                u32::from(Ipv4Addr::new(198, 18, 0, 1)),
                u32::from(Ipv4Addr::new(198, 18, 0, 252))
            )
        );
        assert_eq!(vsw.gateway(), Ipv4Addr::new(198, 18, 0, 253));
        // The default instance's primary ENI took one address.
        assert_eq!(vsw.free(), 251);
    }

    #[test]
    fn lifecycle_with_transitions() {
        let mut st = state();
        let now = Instant::now();
        let eni = st
            .create_eni(
                &CreateEniRequest::new(DEFAULT_VSWITCH, [DEFAULT_SECURITY_GROUP])
                    .with_secondary_ipv4_count(2),
            )
            .unwrap();
        assert_eq!(eni.status, EniStatus::Available);
        assert_eq!(eni.secondary_ipv4.len(), 2);
        st.attach_eni(
            &AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE),
            false,
            now,
        )
        .unwrap();
        assert_eq!(
            st.describe_enis(&EniFilter::ids([&eni.id]))[0].status,
            EniStatus::Attaching
        );
        let err = st.delete_eni(&eni.id, now).unwrap_err();
        assert_eq!(err.code, codes::INVALID_ENI_STATE);
        st.settle(now);
        let d = &st.describe_enis(&EniFilter::ids([&eni.id]))[0];
        assert_eq!(d.status, EniStatus::InUse);
        assert_eq!(d.attachment.as_ref().unwrap().device_index, Some(1));
        assert_eq!(st.metadata_interfaces(DEFAULT_INSTANCE).len(), 2);
        st.detach_eni(&DetachEniRequest::new(&eni.id, DEFAULT_INSTANCE), now)
            .unwrap();
        st.detach_eni(&DetachEniRequest::new(&eni.id, DEFAULT_INSTANCE), now)
            .unwrap();
        st.settle(now);
        st.delete_eni(&eni.id, now).unwrap();
        st.settle(now);
        assert!(st.describe_enis(&EniFilter::ids([&eni.id])).is_empty());
        assert_eq!(
            st.vswitches[DEFAULT_VSWITCH].free(),
            251,
            "addresses released"
        );
        assert_eq!(
            st.delete_eni(&eni.id, now).unwrap_err().code,
            codes::ENI_NOT_FOUND
        );
    }

    #[test]
    fn exhaustion_is_atomic() {
        let mut st = state();
        let req = CreateEniRequest::new(DEFAULT_VSWITCH_TINY, [DEFAULT_SECURITY_GROUP])
            .with_secondary_ipv4_count(12);
        let err = st.create_eni(&req).unwrap_err();
        assert_eq!(err.code, codes::VSWITCH_IP_NOT_ENOUGH);
        assert_eq!(
            st.vswitches[DEFAULT_VSWITCH_TINY].free(),
            12,
            "nothing taken"
        );
        let ok = st
            .create_eni(
                &CreateEniRequest::new(DEFAULT_VSWITCH_TINY, [DEFAULT_SECURITY_GROUP])
                    .with_secondary_ipv4_count(11),
            )
            .unwrap();
        assert_eq!(ok.secondary_ipv4.len(), 11);
        let err = st
            .assign::<Ipv4Addr>(&AssignIpsRequest::count(&ok.id, 1))
            .unwrap_err();
        assert_eq!(err.code, codes::VSWITCH_IP_NOT_ENOUGH);
    }

    #[test]
    fn client_token_replays_and_detects_mismatch() {
        let mut st = state();
        let req = CreateEniRequest::new(DEFAULT_VSWITCH, [DEFAULT_SECURITY_GROUP])
            .with_client_token("tok-1");
        let a = st.create_eni(&req).unwrap();
        let b = st.create_eni(&req).unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(st.eni_count(), 2, "primary + one");
        let other = req.clone().with_secondary_ipv4_count(1);
        assert_eq!(
            st.create_eni(&other).unwrap_err().code,
            codes::IDEMPOTENT_PARAMETER_MISMATCH
        );
        let assign: AssignIpsRequest<Ipv4Addr> =
            AssignIpsRequest::count(&a.id, 2).with_client_token("tok-2");
        let x = st.assign(&assign).unwrap();
        let y = st.assign(&assign).unwrap();
        assert_eq!(x, y);
        assert_eq!(
            st.describe_enis(&EniFilter::ids([&a.id]))[0].secondary_ipv4,
            x
        );
    }

    #[test]
    fn per_instance_limits() {
        let mut st = state();
        let now = Instant::now();
        // ecs.g7.xlarge: 4 ENIs (1 primary + 3), 15 IPv4 per ENI.
        let mut ids = Vec::new();
        for _ in 0..4 {
            let e = st
                .create_eni(&CreateEniRequest::new(
                    DEFAULT_VSWITCH,
                    [DEFAULT_SECURITY_GROUP],
                ))
                .unwrap();
            ids.push(e.id);
        }
        for id in &ids[..3] {
            st.attach_eni(&AttachEniRequest::new(id, DEFAULT_INSTANCE), false, now)
                .unwrap();
        }
        let err = st
            .attach_eni(
                &AttachEniRequest::new(&ids[3], DEFAULT_INSTANCE),
                false,
                now,
            )
            .unwrap_err();
        assert_eq!(err.code, codes::ENI_PER_INSTANCE_LIMIT);
        st.settle(now);
        st.assign::<Ipv4Addr>(&AssignIpsRequest::count(&ids[0], 14))
            .unwrap();
        let err = st
            .assign::<Ipv4Addr>(&AssignIpsRequest::count(&ids[0], 1))
            .unwrap_err();
        assert_eq!(err.code, codes::IPV4_COUNT_EXCEEDED);
        // IPv6: 15 per ENI on this type.
        st.assign::<Ipv6Addr>(&AssignIpsRequest::count(&ids[0], 15))
            .unwrap();
        let err = st
            .assign::<Ipv6Addr>(&AssignIpsRequest::count(&ids[0], 1))
            .unwrap_err();
        assert_eq!(err.code, codes::IPV6_COUNT_EXCEEDED);
    }

    #[test]
    fn unassign_rules() {
        let mut st = state();
        let e = st
            .create_eni(
                &CreateEniRequest::new(DEFAULT_VSWITCH, [DEFAULT_SECURITY_GROUP])
                    .with_secondary_ipv4_count(2),
            )
            .unwrap();
        let primary = e.primary_ipv4.unwrap();
        assert_eq!(
            st.unassign(&e.id, &[primary]).unwrap_err().code,
            codes::IP_UNASSIGNED
        );
        st.unassign(&e.id, &e.secondary_ipv4[..1]).unwrap();
        assert_eq!(
            st.unassign(&e.id, &e.secondary_ipv4[..1]).unwrap_err().code,
            codes::IP_UNASSIGNED
        );
        // IPv6 needs an IPv6 vSwitch.
        let b = st
            .create_eni(&CreateEniRequest::new(
                crate::sim::config::DEFAULT_VSWITCH_B,
                [DEFAULT_SECURITY_GROUP],
            ))
            .unwrap();
        assert_eq!(
            st.assign::<Ipv6Addr>(&AssignIpsRequest::count(&b.id, 1))
                .unwrap_err()
                .code,
            codes::IPV6_NOT_TURNED_ON
        );
    }

    #[test]
    fn attach_failure_falls_back_to_available() {
        let mut st = state();
        let now = Instant::now();
        let e = st
            .create_eni(&CreateEniRequest::new(
                DEFAULT_VSWITCH,
                [DEFAULT_SECURITY_GROUP],
            ))
            .unwrap();
        st.attach_eni(&AttachEniRequest::new(&e.id, DEFAULT_INSTANCE), true, now)
            .unwrap();
        st.settle(now);
        let d = &st.describe_enis(&EniFilter::ids([&e.id]))[0];
        assert_eq!(d.status, EniStatus::Available);
        assert!(d.attachment.is_none());
    }

    #[test]
    fn primary_eni_is_protected() {
        let mut st = state();
        let now = Instant::now();
        let primary = st.describe_enis(&EniFilter::instance(DEFAULT_INSTANCE))[0]
            .id
            .clone();
        assert_eq!(
            st.detach_eni(&DetachEniRequest::new(&primary, DEFAULT_INSTANCE), now)
                .unwrap_err()
                .code,
            codes::DETACH_PRIMARY
        );
        assert_eq!(
            st.delete_eni(&primary, now).unwrap_err().code,
            codes::INVALID_ENI_TYPE
        );
    }
}
