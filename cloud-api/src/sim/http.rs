//! The simulator over HTTP: the ECS/VPC RPC protocol at `/` (signatures verified as ECS does)
//! and the instance metadata service at `/latest/`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{GarbageKind, MetadataFault, Served, SimCloud, SimFailure, lock, state::sim_err};
use crate::{
    ecs::{
        Action, codes,
        params::{ParamError, ParamMap},
        signer, wire,
    },
    error::{Error, Result},
    metadata::{MetadataInterface, TOKEN_HEADER, TOKEN_TTL_HEADER},
    rand::{SplitMix64, entropy, uuid_v4},
    timefmt::{format_utc, parse_utc},
    types::{Eni, EniFilter},
};

/// An access key the simulator accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The id.
    pub id: String,
    /// The secret.
    pub secret: String,
}

impl AccessKey {
    /// A key.
    #[must_use]
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: secret.into(),
        }
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"***")
            .finish()
    }
}

/// Settings of the HTTP front end.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpSimConfig {
    /// Keys whose signatures are accepted (STS keys handed out by the metadata service are
    /// accepted too).
    pub access_keys: Vec<AccessKey>,
    /// Allowed distance between a request's `Timestamp` and the server clock (default 15 min).
    pub timestamp_window: Duration,
    /// Largest request body (default 1 MiB).
    pub max_body: usize,
}

impl HttpSimConfig {
    /// Accepts one key.
    #[must_use]
    pub fn new(key: AccessKey) -> Self {
        Self {
            access_keys: vec![key],
            timestamp_window: Duration::from_secs(15 * 60),
            max_body: 1 << 20,
        }
    }
}

/// A key the server knows, with STS details for temporary ones.
#[derive(Clone)]
struct KeyRec {
    secret: String,
    token: Option<String>,
    expires: Option<SystemTime>,
}

#[derive(Clone)]
struct StsIssue {
    id: String,
    issued: SystemTime,
    expires: SystemTime,
}

/// Nonces seen (by value) and in arrival order (for pruning).
type NonceLog = (HashMap<String, SystemTime>, VecDeque<(SystemTime, String)>);

struct Server {
    cloud: SimCloud,
    cfg: HttpSimConfig,
    keys: Mutex<HashMap<String, KeyRec>>,
    nonces: Mutex<NonceLog>,
    imds_tokens: Mutex<HashMap<String, tokio::time::Instant>>,
    sts: Mutex<Option<StsIssue>>,
    rng: Mutex<SplitMix64>,
    token_requests: AtomicU64,
    metadata_reads: AtomicU64,
    metadata_faults: Mutex<Vec<(MetadataFault, u64)>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("region", &self.region())
            .field("access_keys", &self.cfg.access_keys)
            .finish_non_exhaustive()
    }
}

/// Ends the connection without an answer (the "response lost" fault).
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("simulated dropped response")
    }
}

impl std::error::Error for DropConnection {}

type Reply = std::result::Result<Response<Full<Bytes>>, DropConnection>;

fn reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(r)
}

fn json<T: Serialize>(status: u16, body: &T) -> Reply {
    reply(
        status,
        "application/json;charset=utf-8",
        serde_json::to_vec(body).unwrap_or_default(),
    )
}

fn text(status: u16, body: impl Into<String>) -> Reply {
    reply(status, "text/plain", body.into())
}

impl Server {
    fn region(&self) -> String {
        self.cloud.region_id()
    }

    fn request_id(&self) -> String {
        let mut rng = lock(&self.rng);
        crate::rand::format_uuid(rng.next_u64(), rng.next_u64()).to_ascii_uppercase()
    }

    fn error(&self, request_id: &str, e: &super::state::SimError, product: &str) -> Reply {
        let region = self.region();
        json(
            e.http_status,
            &wire::ErrorBody {
                request_id: Some(request_id.to_owned()),
                host_id: Some(format!("{product}.{region}.aliyuncs.com")),
                code: Some(e.code.clone()),
                message: Some(e.message.clone()),
                recommend: Some(format!(
                    "https://api.aliyun.com/troubleshoot?q={}&product={}&requestId={request_id}",
                    e.code,
                    if product == "vpc" { "Vpc" } else { "Ecs" }
                )),
            },
        )
    }

    fn garbage(request_id: &str, kind: GarbageKind) -> Reply {
        match kind {
            GarbageKind::Html => reply(
                502,
                "text/html",
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>Tengine</center></body></html>",
            ),
            GarbageKind::TruncatedJson => reply(
                200,
                "application/json",
                format!(
                    "{{\"RequestId\":\"{request_id}\",\"NetworkInterfaceSets\":{{\"NetworkInterfaceSet\":[{{\"NetworkInterfaceId\":\"eni-"
                ),
            ),
            GarbageKind::WrongTypes => reply(
                200,
                "application/json",
                "{\"RequestId\":12345,\"NetworkInterfaceId\":7,\"AssignedPrivateIpAddressesSet\":\"none\",\"Ipv6Sets\":5,\"NetworkInterfaceSets\":[1,2],\"InstanceTypes\":true,\"VSwitches\":false,\"NextToken\":9}",
            ),
            GarbageKind::MissingFields => {
                json(200, &serde_json::json!({ "RequestId": request_id }))
            }
            GarbageKind::Huge => reply(200, "application/json", vec![b' '; 16 << 20]),
            GarbageKind::Empty => reply(200, "application/json", Bytes::new()),
        }
    }

    /// Verifies the signature and the common parameters; returns the parameters by name.
    fn authenticate(
        &self,
        method: &str,
        pairs: &[(String, String)],
    ) -> std::result::Result<ParamMap, super::state::SimError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), v.clone()).is_some() {
                return Err(sim_err(
                    "InvalidParameter.Duplicate",
                    400,
                    format!("The parameter {k} is given more than once."),
                ));
            }
        }
        let params = ParamMap(map);
        let Some(signature) = params.0.get("Signature") else {
            return Err(sim_err(
                codes::INCOMPLETE_SIGNATURE,
                400,
                "The request signature does not conform to Aliyun standards: Signature is missing.",
            ));
        };
        for p in [
            "AccessKeyId",
            "SignatureMethod",
            "SignatureNonce",
            "SignatureVersion",
            "Timestamp",
        ] {
            if params.get(p).is_none() {
                return Err(sim_err(
                    codes::MISSING_PARAMETER,
                    400,
                    format!(
                        "The input parameter \"{p}\" that is mandatory for processing this request is not supplied."
                    ),
                ));
            }
        }
        if params.get("SignatureMethod") != Some("HMAC-SHA1")
            || params.get("SignatureVersion") != Some("1.0")
        {
            return Err(sim_err(
                codes::INCOMPLETE_SIGNATURE,
                400,
                "The request signature does not conform to Aliyun standards: only HMAC-SHA1, version 1.0.",
            ));
        }
        let key_id = params.get("AccessKeyId").unwrap_or_default();
        let key = lock(&self.keys).get(key_id).cloned().ok_or_else(|| {
            sim_err(
                codes::ACCESS_KEY_NOT_FOUND,
                404,
                "Specified access key is not found.",
            )
        })?;
        if let Some(expected) = &key.token {
            match params.get("SecurityToken") {
                None => {
                    return Err(sim_err(
                        codes::MISSING_SECURITY_TOKEN,
                        400,
                        "SecurityToken is mandatory for a temporary access key.",
                    ));
                }
                Some(t) if t != expected => {
                    return Err(sim_err(
                        codes::SECURITY_TOKEN_MISMATCH,
                        400,
                        "The security token does not belong to the access key.",
                    ));
                }
                Some(_) => {}
            }
            if key.expires.is_some_and(|e| e <= SystemTime::now()) {
                return Err(sim_err(
                    codes::SECURITY_TOKEN_EXPIRED,
                    400,
                    "The security token you provided has expired.",
                ));
            }
        }
        let ts = params.get("Timestamp").unwrap_or_default();
        let Some(ts) = parse_utc(ts) else {
            return Err(sim_err(
                codes::ILLEGAL_TIMESTAMP,
                400,
                format!(
                    "The input parameter \"Timestamp\" ({ts:?}) does not conform to yyyy-MM-ddTHH:mm:ssZ."
                ),
            ));
        };
        let now = SystemTime::now();
        let skew = now
            .duration_since(ts)
            .or_else(|_| ts.duration_since(now))
            .unwrap_or_default();
        if skew > self.cfg.timestamp_window {
            return Err(sim_err(
                codes::TIMESTAMP_EXPIRED,
                400,
                "Specified time stamp or date value is expired.",
            ));
        }
        let sts = signer::string_to_sign(
            method,
            params.0.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let expected = signer::sign(&sts, &key.secret);
        if !signer::signatures_equal(signature, &expected) {
            return Err(sim_err(
                codes::SIGNATURE_DOES_NOT_MATCH,
                400,
                format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{sts}"
                ),
            ));
        }
        let nonce = params.get("SignatureNonce").unwrap_or_default().to_owned();
        let mut nonces = lock(&self.nonces);
        let (seen, order) = &mut *nonces;
        while let Some((t, n)) = order.front() {
            if now.duration_since(*t).unwrap_or_default() <= self.cfg.timestamp_window * 2 {
                break;
            }
            seen.remove(n);
            order.pop_front();
        }
        if seen.contains_key(&nonce) {
            return Err(sim_err(
                codes::SIGNATURE_NONCE_USED,
                400,
                "Specified signature nonce was used already.",
            ));
        }
        seen.insert(nonce.clone(), now);
        order.push_back((now, nonce));
        Ok(params)
    }

    async fn rpc(&self, method: &Method, query: &str, body: &[u8]) -> Reply {
        let product_of = |a: Option<Action>| {
            if a.is_some_and(Action::is_vpc) {
                "vpc"
            } else {
                "ecs"
            }
        };
        let bad = |code: &str, msg: &str| {
            let rid = self.request_id();
            self.error(&rid, &sim_err(code, 400, msg), "ecs")
        };
        let (Some(mut pairs), Some(body_pairs)) = (
            signer::parse_form(query),
            std::str::from_utf8(body).ok().and_then(signer::parse_form),
        ) else {
            return bad(
                codes::INVALID_PARAMETER,
                "The request is not valid form encoding.",
            );
        };
        pairs.extend(body_pairs);
        let params = match self.authenticate(method.as_str(), &pairs) {
            Ok(p) => p,
            Err(e) => {
                let rid = self.request_id();
                let action = pairs
                    .iter()
                    .find(|(k, _)| k == "Action")
                    .and_then(|(_, v)| v.parse().ok());
                return self.error(&rid, &e, product_of(action));
            }
        };
        let action: Action = match params.get("Action").map(str::parse) {
            Some(Ok(a)) => a,
            Some(Err(_)) | None => {
                let rid = self.request_id();
                return self.error(
                    &rid,
                    &sim_err(
                        codes::INVALID_ACTION,
                        404,
                        "Specified api is not found, please check your url and method.",
                    ),
                    "ecs",
                );
            }
        };
        let product = product_of(Some(action));
        if params.get("Version") != Some(action.version()) {
            return bad(
                "InvalidVersion",
                "Specified parameter Version is not valid.",
            );
        }
        if params
            .get("Format")
            .is_some_and(|f| !f.eq_ignore_ascii_case("JSON"))
        {
            return bad(
                "InvalidParameter.Format",
                "The simulator only answers Format=JSON.",
            );
        }
        let region = self.region();
        match params.get("RegionId") {
            None => {
                return bad(
                    "MissingParameter.RegionId",
                    "The input parameter \"RegionId\" that is mandatory for processing this request is not supplied.",
                );
            }
            Some(r) if r != region => {
                let rid = self.request_id();
                return self.error(
                    &rid,
                    &sim_err(
                        "InvalidRegionId.NotFound",
                        404,
                        format!("The region {r} does not exist here (this is {region})."),
                    ),
                    product,
                );
            }
            Some(_) => {}
        }
        let result = self.dispatch(action, &params).await;
        match result {
            Ok(Served { request_id, value }) => {
                let mut value = value;
                if let Some(obj) = value.as_object_mut() {
                    obj.insert(
                        "RequestId".to_owned(),
                        serde_json::Value::String(request_id),
                    );
                }
                json(200, &value)
            }
            Err(SimFailure::Api { request_id, error }) => self.error(&request_id, &error, product),
            Err(SimFailure::Dropped { .. }) => Err(DropConnection),
            Err(SimFailure::Garbage { request_id, kind }) => Self::garbage(&request_id, kind),
        }
    }

    /// Runs the action through the simulator and renders the success body (without
    /// `RequestId`, which the caller adds).
    async fn dispatch(
        &self,
        action: Action,
        p: &ParamMap,
    ) -> std::result::Result<Served<serde_json::Value>, SimFailure> {
        fn pe(e: ParamError) -> super::state::SimError {
            sim_err(&e.code, 400, e.message)
        }
        fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).unwrap_or_default()
        }
        let ack = || serde_json::json!({});
        let cloud = &self.cloud;
        match action {
            Action::CreateNetworkInterface => {
                cloud
                    .call(action, |st, _, _| {
                        let eni = st.create_eni(&p.decode_create().map_err(pe)?)?;
                        Ok(to_json(&wire::CreateResponse {
                            request_id: None,
                            eni: wire::NetworkInterface::from_eni(&eni),
                        }))
                    })
                    .await
            }
            Action::AttachNetworkInterface => {
                cloud
                    .call(action, |st, now, fail| {
                        st.attach_eni(&p.decode_attach().map_err(pe)?, fail, now)?;
                        Ok(ack())
                    })
                    .await
            }
            Action::DetachNetworkInterface => {
                cloud
                    .call(action, |st, now, _| {
                        st.detach_eni(&p.decode_detach().map_err(pe)?, now)?;
                        Ok(ack())
                    })
                    .await
            }
            Action::DeleteNetworkInterface => {
                cloud
                    .call(action, |st, now, _| {
                        st.delete_eni(p.require("NetworkInterfaceId").map_err(pe)?, now)?;
                        Ok(ack())
                    })
                    .await
            }
            Action::AssignPrivateIpAddresses => {
                cloud
                    .call(action, |st, _, _| {
                        let req = p
                            .decode_assign::<Ipv4Addr>(
                                "SecondaryPrivateIpAddressCount",
                                "PrivateIpAddress",
                            )
                            .map_err(pe)?;
                        let ips = st.assign(&req)?;
                        Ok(to_json(&wire::AssignIpv4Response {
                            request_id: None,
                            assigned_private_ip_addresses_set:
                                wire::AssignedPrivateIpAddressesSet {
                                    network_interface_id: Some(req.eni_id.clone()),
                                    private_ip_set: wire::AssignedPrivateIps {
                                        private_ip_address: ips
                                            .iter()
                                            .map(ToString::to_string)
                                            .collect(),
                                    },
                                },
                        }))
                    })
                    .await
            }
            Action::AssignIpv6Addresses => {
                cloud
                    .call(action, |st, _, _| {
                        let req = p
                            .decode_assign::<Ipv6Addr>("Ipv6AddressCount", "Ipv6Address")
                            .map_err(pe)?;
                        let ips = st.assign(&req)?;
                        Ok(to_json(&wire::AssignIpv6Response {
                            request_id: None,
                            network_interface_id: Some(req.eni_id.clone()),
                            ipv6_sets: wire::AssignedIpv6s {
                                ipv6_address: ips.iter().map(ToString::to_string).collect(),
                            },
                        }))
                    })
                    .await
            }
            Action::UnassignPrivateIpAddresses => {
                cloud
                    .call(action, |st, _, _| {
                        let (eni, ips) = p
                            .decode_unassign::<Ipv4Addr>("PrivateIpAddress")
                            .map_err(pe)?;
                        st.unassign(&eni, &ips)?;
                        Ok(ack())
                    })
                    .await
            }
            Action::UnassignIpv6Addresses => {
                cloud
                    .call(action, |st, _, _| {
                        let (eni, ips) =
                            p.decode_unassign::<Ipv6Addr>("Ipv6Address").map_err(pe)?;
                        st.unassign(&eni, &ips)?;
                        Ok(ack())
                    })
                    .await
            }
            Action::DescribeNetworkInterfaces => {
                cloud
                    .call(action, |st, _, _| {
                        let filter: EniFilter = p.decode_describe().map_err(pe)?;
                        let all = st.describe_enis(&filter);
                        let max = p
                            .parse::<u32>("MaxResults")
                            .map_err(pe)?
                            .unwrap_or(10)
                            .clamp(10, 500) as usize;
                        let (page, next) =
                            paginate(&all, |e: &Eni| e.id.as_str(), p.get("NextToken"), max)?;
                        Ok(to_json(&wire::DescribeEnisResponse {
                            request_id: None,
                            next_token: Some(next),
                            total_count: Some(all.len() as u64),
                            network_interface_sets: wire::NetworkInterfaceSets {
                                network_interface_set: page
                                    .iter()
                                    .map(wire::NetworkInterface::from_eni)
                                    .collect(),
                            },
                        }))
                    })
                    .await
            }
            Action::DescribeInstanceTypes => {
                cloud
                    .call(action, |st, _, _| {
                        let ids = p.list("InstanceTypes").map_err(pe)?;
                        let all = st.instance_types(&ids);
                        let max = p
                            .parse::<u32>("MaxResults")
                            .map_err(pe)?
                            .unwrap_or(100)
                            .clamp(1, 100) as usize;
                        let (page, next) =
                            paginate(&all, |t| t.id.as_str(), p.get("NextToken"), max)?;
                        Ok(to_json(&wire::DescribeInstanceTypesResponse {
                            request_id: None,
                            next_token: Some(next),
                            instance_types: wire::InstanceTypes {
                                instance_type: page
                                    .iter()
                                    .map(|t| wire::InstanceType {
                                        instance_type_id: t.id.clone(),
                                        eni_quantity: t.eni_quantity,
                                        eni_private_ip_address_quantity: t.eni_private_ip_quantity,
                                        eni_ipv6_address_quantity: t.eni_ipv6_quantity,
                                        eni_total_quantity: t.eni_total_quantity,
                                        eni_trunk_supported: t.trunk_supported,
                                    })
                                    .collect(),
                            },
                        }))
                    })
                    .await
            }
            Action::DescribeVSwitches => {
                cloud
                    .call(action, |st, _, _| {
                        let all = st.vswitches(p.get("VSwitchId"), p.get("VpcId"), p.get("ZoneId"));
                        let size = p
                            .parse::<u64>("PageSize")
                            .map_err(pe)?
                            .unwrap_or(10)
                            .clamp(1, 50);
                        let number = p
                            .parse::<u64>("PageNumber")
                            .map_err(pe)?
                            .unwrap_or(1)
                            .max(1);
                        let skip = usize::try_from((number - 1).saturating_mul(size))
                            .unwrap_or(usize::MAX);
                        Ok(to_json(&wire::DescribeVSwitchesResponse {
                            request_id: None,
                            total_count: Some(all.len() as u64),
                            page_number: Some(number),
                            page_size: Some(size),
                            vswitches: wire::VSwitches {
                                vswitch: all
                                    .iter()
                                    .skip(skip)
                                    .take(usize::try_from(size).unwrap_or(10))
                                    .map(wire::VSwitch::from_subnet)
                                    .collect(),
                            },
                        }))
                    })
                    .await
            }
        }
    }

    // ---- the metadata service ----

    fn issue_sts(&self) -> (StsIssue, KeyRec) {
        let ttl = self
            .cloud
            .config()
            .metadata
            .sts_ttl
            .max(Duration::from_secs(1));
        let now = SystemTime::now();
        let mut current = lock(&self.sts);
        if let Some(cur) = current.as_ref()
            && now.duration_since(cur.issued).unwrap_or_default() < ttl / 2
            && let Some(rec) = lock(&self.keys).get(&cur.id).cloned()
        {
            return (cur.clone(), rec);
        }
        let mut rng = lock(&self.rng);
        let hex = |rng: &mut SplitMix64| format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64());
        let id = format!("STS.{}", hex(&mut rng).to_ascii_uppercase());
        // Tokens carry `+ / =`, which signing must encode.
        let token = format!("CAIS+{}/{}==", hex(&mut rng), hex(&mut rng));
        let rec = KeyRec {
            secret: hex(&mut rng),
            token: Some(token),
            expires: Some(now + ttl),
        };
        let issue = StsIssue {
            id: id.clone(),
            issued: now,
            expires: now + ttl,
        };
        lock(&self.keys).insert(id, rec.clone());
        *current = Some(issue.clone());
        (issue, rec)
    }

    fn metadata_text(&self, path: &str) -> Option<String> {
        let cfg = &self.cloud.config().metadata;
        let instance = cfg
            .instance_id
            .clone()
            .or_else(|| self.cloud.config().instances.first().map(|i| i.id.clone()))?;
        let leaf = path.strip_prefix("meta-data/")?;
        if let Some(rest) = leaf.strip_prefix("ram/security-credentials/") {
            let role = cfg.ram_role.as_ref()?;
            if rest.is_empty() {
                return Some(role.clone());
            }
            if rest != role {
                return None;
            }
            let (issue, rec) = self.issue_sts();
            return Some(
                serde_json::json!({
                    "AccessKeyId": issue.id,
                    "AccessKeySecret": rec.secret,
                    "Expiration": format_utc(issue.expires),
                    "SecurityToken": rec.token,
                    "LastUpdated": format_utc(issue.issued),
                    "Code": "Success",
                })
                .to_string(),
            );
        }
        let (identity, ifaces) = self
            .cloud
            .with_state(|st| (st.identity(&instance), st.metadata_interfaces(&instance)));
        let identity = identity?;
        let primary = ifaces.iter().find(|i| i.mac == identity.primary_mac);
        let simple = match leaf {
            "instance-id" => Some(identity.instance_id.clone()),
            "region-id" => Some(identity.region_id.clone()),
            "zone-id" => Some(identity.zone_id.clone()),
            "instance/instance-type" => Some(identity.instance_type.clone()),
            "vpc-id" => Some(identity.vpc_id.clone()),
            "vswitch-id" => Some(identity.subnet_id.clone()),
            "mac" => Some(identity.primary_mac.clone()),
            "private-ipv4" => primary.map(|i| i.primary_ipv4.to_string()),
            "vpc-cidr-block" => primary.and_then(|i| i.vpc_cidr).map(|c| c.to_string()),
            "vswitch-cidr-block" => primary.and_then(|i| i.subnet_cidr).map(|c| c.to_string()),
            "network/interfaces/macs" | "network/interfaces/macs/" => Some(
                ifaces
                    .iter()
                    .map(|i| format!("{}/", i.mac))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            _ => None,
        };
        if simple.is_some() {
            return simple;
        }
        let rest = leaf.strip_prefix("network/interfaces/macs/")?;
        let (mac, field) = rest.split_once('/')?;
        let iface = ifaces.iter().find(|i| i.mac.eq_ignore_ascii_case(mac))?;
        interface_field(iface, field)
    }

    /// The canned answer for `path`, if a metadata fault with hits left matches.
    fn metadata_fault(&self, path: &str) -> Option<Reply> {
        let mut faults = lock(&self.metadata_faults);
        let (fault, hits) = faults.iter_mut().find(|(f, hits)| {
            path.starts_with(&f.path_prefix) && f.times.is_none_or(|t| *hits < t)
        })?;
        *hits += 1;
        Some(text(fault.status, fault.body.clone()))
    }

    fn metadata(&self, method: &Method, path: &str, headers: &hyper::HeaderMap) -> Reply {
        if let Some(canned) = self.metadata_fault(path) {
            return canned;
        }
        let cfg = &self.cloud.config().metadata;
        let now = tokio::time::Instant::now();
        if path == "api/token" {
            self.token_requests.fetch_add(1, Ordering::Relaxed);
            if method != Method::PUT {
                return text(405, "token requests must use PUT");
            }
            if headers.contains_key("x-forwarded-for") {
                return text(403, "proxied token requests are refused");
            }
            let ttl = headers
                .get(TOKEN_TTL_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let Some(ttl) = ttl.filter(|t| (1..=21_600).contains(t)) else {
                return text(
                    400,
                    "X-aliyun-ecs-metadata-token-ttl-seconds must be 1..21600",
                );
            };
            let token = uuid_v4().replace('-', "");
            let mut tokens = lock(&self.imds_tokens);
            tokens.retain(|_, exp| *exp > now);
            tokens.insert(token.clone(), now + Duration::from_secs(ttl));
            return text(200, token);
        }
        if method != Method::GET {
            return text(405, "metadata reads use GET");
        }
        self.metadata_reads.fetch_add(1, Ordering::Relaxed);
        match headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()) {
            Some(t) if lock(&self.imds_tokens).get(t).is_none_or(|exp| *exp <= now) => {
                return text(401, "invalid or expired metadata token");
            }
            None if cfg.token_required => return text(401, "a metadata token is required"),
            _ => {}
        }
        match self.metadata_text(path) {
            Some(body) => text(200, body),
            None => text(404, "Not Found"),
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Reply {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let headers = req.headers().clone();
        let body = match Limited::new(req.into_body(), self.cfg.max_body)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return text(413, "request body too large"),
        };
        if let Some(rest) = path.strip_prefix("/latest/") {
            let latency = self.cloud.config().metadata.latency;
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            return self.metadata(&method, rest, &headers);
        }
        if path != "/" {
            return text(404, "Not Found");
        }
        if method != Method::GET && method != Method::POST {
            return text(405, "RPC calls use GET or POST");
        }
        self.rpc(&method, &query, &body).await
    }
}

fn interface_field(i: &MetadataInterface, field: &str) -> Option<String> {
    let list4 = || {
        serde_json::to_string(
            &i.private_ipv4s
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .ok()
    };
    match field.trim_end_matches('/') {
        "network-interface-id" => Some(i.eni_id.clone()),
        "primary-ip-address" => Some(i.primary_ipv4.to_string()),
        "private-ipv4s" => list4(),
        "netmask" => i.netmask.map(|m| m.to_string()),
        "gateway" => i.gateway.map(|g| g.to_string()),
        "vswitch-id" => i.subnet_id.clone(),
        "vswitch-cidr-block" => i.subnet_cidr.map(|c| c.to_string()),
        "vpc-id" => i.vpc_id.clone(),
        "vpc-cidr-block" => i.vpc_cidr.map(|c| c.to_string()),
        "ipv6s" if !i.ipv6s.is_empty() => Some(format!(
            "[{}]",
            i.ipv6s
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )),
        "ipv6-gateway" => i.ipv6_gateway.map(|g| g.to_string()),
        "vswitch-ipv6-cidr-block" => i.subnet_ipv6_cidr.map(|c| c.to_string()),
        "mac" => Some(i.mac.clone()),
        _ => None,
    }
}

/// One page of `all` (sorted by key) after the `NextToken`; the token is the hex of the last
/// key returned, empty on the last page.
fn paginate<'a, T>(
    all: &'a [T],
    key: impl Fn(&T) -> &str,
    token: Option<&str>,
    max: usize,
) -> std::result::Result<(&'a [T], String), super::state::SimError> {
    let start = match token {
        None => 0,
        Some(t) => {
            let after = decode_hex(t).ok_or_else(|| {
                sim_err(
                    "InvalidParameter.NextToken",
                    400,
                    "The specified NextToken is not valid.",
                )
            })?;
            all.partition_point(|x| key(x) <= after.as_str())
        }
    };
    let page = &all[start..(start + max).min(all.len())];
    let next = if start + page.len() < all.len() {
        page.last().map(|x| encode_hex(key(x))).unwrap_or_default()
    } else {
        String::new()
    };
    Ok((page, next))
}

fn encode_hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Serves the simulator on `listener` until `shutdown` fires.
///
/// # Errors
/// When accepting connections fails for good.
pub async fn serve(
    listener: TcpListener,
    cloud: SimCloud,
    cfg: HttpSimConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_server(listener, Server::new(cloud, cfg), shutdown).await
}

impl Server {
    fn new(cloud: SimCloud, cfg: HttpSimConfig) -> Arc<Self> {
        let cloud_faults = cloud.config().metadata.faults.clone();
        let keys = cfg
            .access_keys
            .iter()
            .map(|k| {
                (
                    k.id.clone(),
                    KeyRec {
                        secret: k.secret.clone(),
                        token: None,
                        expires: None,
                    },
                )
            })
            .collect();
        Arc::new(Self {
            rng: Mutex::new(SplitMix64::new(cloud.config().seed ^ entropy())),
            cloud,
            cfg,
            keys: Mutex::new(keys),
            nonces: Mutex::new((HashMap::new(), VecDeque::new())),
            imds_tokens: Mutex::new(HashMap::new()),
            sts: Mutex::new(None),
            token_requests: AtomicU64::new(0),
            metadata_reads: AtomicU64::new(0),
            metadata_faults: Mutex::new(cloud_faults.into_iter().map(|f| (f, 0)).collect()),
        })
    }
}

async fn serve_server(
    listener: TcpListener,
    server: Arc<Server>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let server = Arc::clone(&server);
        conns.spawn(async move {
            let svc = service_fn(move |req| Arc::clone(&server).handle(req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    conns.shutdown().await;
    Ok(())
}

/// A running HTTP simulator (for tests and benches); stops on drop.
#[derive(Debug)]
pub struct HttpSim {
    addr: SocketAddr,
    cloud: SimCloud,
    server: Arc<Server>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl HttpSim {
    /// Starts serving `cloud` on `listen` (use port 0 for any free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(cloud: SimCloud, cfg: HttpSimConfig, listen: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| Error::Config(format!("binding {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Config(format!("local address: {e}")))?;
        let shutdown = CancellationToken::new();
        let server = Server::new(cloud.clone(), cfg);
        let task = tokio::spawn(serve_server(
            listener,
            Arc::clone(&server),
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            cloud,
            server,
            shutdown,
            task: Some(task),
        })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`: the RPC endpoint (ECS and VPC alike).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `http://ADDR`: the metadata service's base URL.
    #[must_use]
    pub fn metadata_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulated region behind it.
    #[must_use]
    pub fn cloud(&self) -> &SimCloud {
        &self.cloud
    }

    /// Adds a canned metadata answer (after the configured ones).
    pub fn add_metadata_fault(&self, fault: MetadataFault) {
        lock(&self.server.metadata_faults).push((fault, 0));
    }

    /// Metadata token requests (`PUT /latest/api/token`) served so far.
    #[must_use]
    pub fn metadata_token_requests(&self) -> u64 {
        self.server.token_requests.load(Ordering::Relaxed)
    }

    /// Metadata reads (`GET /latest/…`) served so far.
    #[must_use]
    pub fn metadata_reads(&self) -> u64 {
        self.server.metadata_reads.load(Ordering::Relaxed)
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _finished = t.await;
        }
    }
}

impl Drop for HttpSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_is_stable_and_validates_tokens() {
        let all: Vec<String> = (0..25).map(|i| format!("eni-{i:02}")).collect();
        let (p1, t1) = paginate(&all, String::as_str, None, 10).unwrap();
        assert_eq!(p1.len(), 10);
        let (p2, t2) = paginate(&all, String::as_str, Some(&t1), 10).unwrap();
        assert_eq!(p2[0], "eni-10");
        let (p3, t3) = paginate(&all, String::as_str, Some(&t2), 10).unwrap();
        assert_eq!((p3.len(), t3.as_str()), (5, ""));
        assert!(paginate(&all, String::as_str, Some("zz"), 10).is_err());
        assert!(paginate(&all, String::as_str, Some("abc"), 10).is_err());
    }
}
