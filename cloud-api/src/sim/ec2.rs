//! The simulator behind EC2's Query API, in process (features `sim` and `aws`): an
//! [`Ec2Transport`] that decodes the EC2 client's signed form requests, runs them on a
//! [`SimCloud`], and answers EC2-shaped XML — paging, EC2 error codes, throttling as
//! `RequestLimitExceeded`, `ClientToken` idempotency, lost answers as transport errors.
//!
//! The whole EC2 client (parameters, `SigV4` headers, XML parsing, error classes, device
//! indices) runs against the simulator's state machine, its faults and its latencies, on
//! tokio's clock (so paused-time tests and the pool's property tests work on EC2 too).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
    sync::Arc,
};

use async_trait::async_trait;

use super::SimCloud;
use crate::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, DetachEniRequest,
    EniFilter, EniStatus, IpSelection,
    credentials::{Credentials, StaticCredentials},
    ec2::{Ec2Client, Ec2Config, Ec2HttpRequest, Ec2HttpResponse, Ec2Transport, codes, wire},
    ecs::{
        codes as ecs_codes,
        params::{ParamError, ParamMap},
        signer::percent_decode,
    },
    error::{Error, ErrorKind, Result},
};

/// `DescribeNetworkInterfaces` pages at most this many ENIs, whatever `MaxResults` says.
pub const SIM_EC2_MAX_PAGE: usize = 1000;

/// The in-process EC2 front of a [`SimCloud`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SimEc2 {
    sim: SimCloud,
}

/// One EC2 error answer.
struct Ec2Err {
    status: u16,
    code: String,
    message: String,
}

impl Ec2Err {
    fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl From<ParamError> for Ec2Err {
    fn from(e: ParamError) -> Self {
        let code = if e.code.starts_with("MissingParameter") {
            "MissingParameter"
        } else {
            codes::INVALID_PARAMETER_VALUE
        };
        Self::new(400, code, e.message)
    }
}

/// Marks a lost answer: `send` turns it back into a transport error.
const LOST: &str = "\u{0}lost";

/// What the EC2 front answers for a simulator error.
fn translate(e: Error) -> Ec2Err {
    let api = match e {
        Error::Transport { .. } => {
            return Ec2Err {
                status: 0,
                code: LOST.to_owned(),
                message: e.to_string(),
            };
        }
        Error::NotFound { what, id } => {
            let code = match what {
                "instance type" => codes::INVALID_INSTANCE_TYPE,
                "vSwitch" | "subnet" => codes::SUBNET_NOT_FOUND,
                _ => codes::ENI_NOT_FOUND,
            };
            return Ec2Err::new(400, code, format!("The {what} '{id}' does not exist"));
        }
        Error::Api(a) => a,
        Error::InvalidResponse { .. } => return Ec2Err::new(500, GARBAGE, "garbage"),
        other => return Ec2Err::new(500, codes::INTERNAL_ERROR, other.to_string()),
    };
    let c = api.code.as_str();
    let code = match api.kind {
        ErrorKind::Throttled => codes::REQUEST_LIMIT_EXCEEDED,
        ErrorKind::Transient => codes::INTERNAL_ERROR,
        ErrorKind::Conflict => "ConcurrentModification",
        ErrorKind::InvalidState => codes::INCORRECT_STATE,
        ErrorKind::NotFound => match c {
            ecs_codes::VSWITCH_NOT_FOUND => codes::SUBNET_NOT_FOUND,
            ecs_codes::INSTANCE_NOT_FOUND | ecs_codes::ECS_NOT_FOUND => codes::INSTANCE_NOT_FOUND,
            ecs_codes::SECURITY_GROUP_NOT_FOUND => codes::GROUP_NOT_FOUND,
            ecs_codes::IP_UNASSIGNED => codes::INVALID_PARAMETER_VALUE,
            _ => codes::ENI_NOT_FOUND,
        },
        ErrorKind::SubnetExhausted => codes::INSUFFICIENT_FREE_ADDRESSES,
        ErrorKind::QuotaExceeded => match c {
            ecs_codes::ENI_PER_INSTANCE_LIMIT | "MaxEniCountExceeded" => {
                codes::ATTACHMENT_LIMIT_EXCEEDED
            }
            ecs_codes::IPV4_COUNT_EXCEEDED | ecs_codes::IPV6_COUNT_EXCEEDED => {
                codes::PRIVATE_IP_LIMIT_EXCEEDED
            }
            _ => codes::NETWORK_INTERFACE_LIMIT_EXCEEDED,
        },
        ErrorKind::IdempotencyMismatch => codes::IDEMPOTENT_PARAMETER_MISMATCH,
        ErrorKind::Permission => codes::UNAUTHORIZED_OPERATION,
        ErrorKind::Authentication => codes::AUTH_FAILURE,
        ErrorKind::ClockSkew => codes::REQUEST_EXPIRED,
        _ => codes::INVALID_PARAMETER_VALUE,
    };
    let status = match api.kind {
        ErrorKind::Throttled => 503,
        ErrorKind::Transient => 500,
        ErrorKind::Authentication => 401,
        ErrorKind::Permission => 403,
        _ => 400,
    };
    Ec2Err::new(status, code, format!("{} ({c})", api.message))
}

/// Marks an injected garbage answer.
const GARBAGE: &str = "\u{0}garbage";

fn xml<T: serde::Serialize>(root: &str, value: &T) -> Ec2HttpResponse {
    match quick_xml::se::to_string_with_root(root, value) {
        Ok(body) => Ec2HttpResponse::new(200, body),
        Err(e) => error_response(&Ec2Err::new(500, codes::INTERNAL_ERROR, e.to_string())),
    }
}

fn error_response(e: &Ec2Err) -> Ec2HttpResponse {
    let body = wire::ErrorResponse {
        errors: Some(wire::Errors {
            error: vec![wire::ErrorItem {
                code: e.code.clone(),
                message: e.message.clone(),
            }],
        }),
        error: None,
        request_id: Some(crate::rand::uuid_v4()),
        request_id_alt: None,
    };
    let mut r = xml("Response", &body);
    r.status = e.status;
    r
}

fn rid() -> Option<String> {
    Some(crate::rand::uuid_v4())
}

fn parse_all<A: FromStr>(name: &str, items: &[String]) -> std::result::Result<Vec<A>, Ec2Err> {
    items
        .iter()
        .map(|s| {
            s.parse().map_err(|_| {
                Ec2Err::new(
                    400,
                    codes::INVALID_PARAMETER_VALUE,
                    format!("{name}: {s:?}"),
                )
            })
        })
        .collect()
}

/// `Name.N.Field` values in order of N.
fn nested(p: &ParamMap, prefix: &str, field: &str) -> Vec<String> {
    let mut out: Vec<(u32, String)> =
        p.0.iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
                let (n, f) = rest.split_once('.')?;
                (f == field).then(|| Some((n.parse().ok()?, v.clone())))?
            })
            .collect();
    out.sort_by_key(|(n, _)| *n);
    out.into_iter().map(|(_, v)| v).collect()
}

fn selection<A: FromStr>(
    p: &ParamMap,
    count: &str,
    list: &[String],
    name: &str,
) -> std::result::Result<Option<IpSelection<A>>, Ec2Err> {
    let n: Option<u32> = p.parse(count)?;
    match (n, list.is_empty()) {
        (Some(_), false) => Err(Ec2Err::new(
            400,
            "InvalidParameterCombination",
            format!("{count} and {name} are mutually exclusive"),
        )),
        (Some(n), true) => Ok(Some(IpSelection::Count(n))),
        (None, false) => Ok(Some(IpSelection::Explicit(parse_all(name, list)?))),
        (None, true) => Ok(None),
    }
}

fn eni_of_attachment(attachment_id: &str) -> Option<String> {
    attachment_id
        .strip_prefix("eni-attach-")
        .map(|s| format!("eni-{s}"))
}

impl SimEc2 {
    /// The EC2 front of `sim`.
    #[must_use]
    pub fn new(sim: SimCloud) -> Self {
        Self { sim }
    }

    /// The simulator behind it.
    #[must_use]
    pub fn sim(&self) -> &SimCloud {
        &self.sim
    }

    /// An [`Ec2Client`] talking to this front with `cfg` (region and endpoint are only
    /// signed, never dialled).
    ///
    /// # Errors
    /// When `cfg` is unusable.
    pub fn client(&self, cfg: Ec2Config) -> Result<Ec2Client> {
        let cfg = if cfg.endpoint.is_none() {
            cfg.with_endpoint("http://ec2.sim.invalid/")
        } else {
            cfg
        };
        Ec2Client::with_transport(
            cfg,
            Arc::new(StaticCredentials::new(Credentials::new(
                "AKIDSIMEC2",
                "sim-secret",
            ))),
            Arc::new(self.clone()),
        )
    }

    async fn dispatch(
        &self,
        action: &str,
        p: &ParamMap,
    ) -> std::result::Result<Ec2HttpResponse, Ec2Err> {
        let sim = &self.sim;
        macro_rules! call {
            ($e:expr) => {
                $e.await.map_err(translate)?
            };
        }
        Ok(match action {
            "DescribeInstanceTypes" => {
                let t = p.require("InstanceType.1")?;
                let l = call!(sim.instance_limits(t));
                xml(
                    "DescribeInstanceTypesResponse",
                    &wire::DescribeInstanceTypesResponse {
                        request_id: rid(),
                        set: vec![wire::InstanceTypeInfo {
                            instance_type: l.instance_type,
                            network_info: Some(wire::NetworkInfo {
                                maximum_network_interfaces: l.max_enis,
                                ipv4_addresses_per_interface: l.ipv4_per_eni,
                                ipv6_addresses_per_interface: l.ipv6_per_eni,
                                ipv6_supported: l.ipv6_per_eni > 0,
                                maximum_network_cards: Some(1),
                            }),
                        }]
                        .into(),
                        next_token: None,
                    },
                )
            }
            "DescribeSubnets" => {
                let id = p.require("SubnetId.1")?;
                let s = call!(sim.describe_subnet(id));
                xml(
                    "DescribeSubnetsResponse",
                    &wire::DescribeSubnetsResponse {
                        request_id: rid(),
                        set: vec![wire::SubnetItem {
                            subnet_id: s.id,
                            vpc_id: s.vpc_id,
                            availability_zone: s.zone_id,
                            cidr_block: s.ipv4_cidr.map(|c| c.to_string()).unwrap_or_default(),
                            available_ip_address_count: s.available_ipv4,
                            ipv6: s
                                .ipv6_cidr
                                .map(|c| wire::Ipv6CidrAssociation {
                                    ipv6_cidr_block: c.to_string(),
                                })
                                .into_iter()
                                .collect::<Vec<_>>()
                                .into(),
                        }]
                        .into(),
                        next_token: None,
                    },
                )
            }
            "CreateNetworkInterface" => {
                let mut req =
                    CreateEniRequest::new(p.require("SubnetId")?, p.list("SecurityGroupId")?);
                req.primary_ipv4 = p.parse("PrivateIpAddress")?;
                req.secondary_ipv4 = selection(
                    p,
                    "SecondaryPrivateIpAddressCount",
                    &nested(p, "PrivateIpAddresses", "PrivateIpAddress"),
                    "PrivateIpAddresses",
                )?;
                req.ipv6 = selection(
                    p,
                    "Ipv6AddressCount",
                    &nested(p, "Ipv6Addresses", "Ipv6Address"),
                    "Ipv6Addresses",
                )?;
                req.description = p.get("Description").map(str::to_owned);
                req.client_token = p.get("ClientToken").map(str::to_owned);
                req.trunk = p.get("InterfaceType") == Some("trunk");
                let keys = nested(p, "TagSpecification.1.Tag", "Key");
                let values = nested(p, "TagSpecification.1.Tag", "Value");
                req.tags = keys.into_iter().zip(values).collect::<BTreeMap<_, _>>();
                let eni = call!(sim.create_eni(&req));
                xml(
                    "CreateNetworkInterfaceResponse",
                    &wire::CreateResponse {
                        request_id: rid(),
                        network_interface: wire::NetworkInterface::from_eni(&eni),
                    },
                )
            }
            "AttachNetworkInterface" => {
                let eni = p.require("NetworkInterfaceId")?;
                let mut req = AttachEniRequest::new(eni, p.require("InstanceId")?);
                req.device_index = Some(
                    p.parse("DeviceIndex")?
                        .ok_or_else(|| Ec2Err::new(400, "MissingParameter", "DeviceIndex"))?,
                );
                call!(sim.attach_eni(&req));
                xml(
                    "AttachNetworkInterfaceResponse",
                    &wire::AttachResponse {
                        request_id: rid(),
                        attachment_id: Some(format!(
                            "eni-attach-{}",
                            eni.trim_start_matches("eni-")
                        )),
                    },
                )
            }
            "DetachNetworkInterface" => {
                let att = p.require("AttachmentId")?;
                let not_found = || {
                    Ec2Err::new(
                        400,
                        codes::ATTACHMENT_NOT_FOUND,
                        format!("The attachment ID '{att}' does not exist"),
                    )
                };
                let eni_id = eni_of_attachment(att).ok_or_else(not_found)?;
                let eni = call!(sim.describe_eni(&eni_id)).ok_or_else(not_found)?;
                let instance = eni.instance_id().ok_or_else(not_found)?.to_owned();
                call!(sim.detach_eni(&DetachEniRequest::new(&eni_id, instance)));
                ack("DetachNetworkInterfaceResponse")
            }
            "DeleteNetworkInterface" => {
                call!(sim.delete_eni(p.require("NetworkInterfaceId")?));
                ack("DeleteNetworkInterfaceResponse")
            }
            "AssignPrivateIpAddresses" => {
                let eni = p.require("NetworkInterfaceId")?;
                let sel = selection(
                    p,
                    "SecondaryPrivateIpAddressCount",
                    &p.list("PrivateIpAddress")?,
                    "PrivateIpAddress",
                )?
                .ok_or_else(|| Ec2Err::new(400, "MissingParameter", "no addresses asked"))?;
                let req = AssignIpsRequest {
                    eni_id: eni.to_owned(),
                    ips: sel,
                    client_token: None,
                };
                let ips: Vec<Ipv4Addr> = call!(sim.assign_ipv4(&req));
                xml(
                    "AssignPrivateIpAddressesResponse",
                    &wire::AssignIpv4Response {
                        request_id: rid(),
                        assigned: ips
                            .iter()
                            .map(|ip| wire::AssignedPrivateIp {
                                private_ip_address: ip.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .into(),
                    },
                )
            }
            "AssignIpv6Addresses" => {
                let eni = p.require("NetworkInterfaceId")?;
                let sel = selection(
                    p,
                    "Ipv6AddressCount",
                    &p.list("Ipv6Addresses")?,
                    "Ipv6Addresses",
                )?
                .ok_or_else(|| Ec2Err::new(400, "MissingParameter", "no addresses asked"))?;
                let req = AssignIpsRequest {
                    eni_id: eni.to_owned(),
                    ips: sel,
                    client_token: None,
                };
                let ips: Vec<Ipv6Addr> = call!(sim.assign_ipv6(&req));
                xml(
                    "AssignIpv6AddressesResponse",
                    &wire::AssignIpv6Response {
                        request_id: rid(),
                        assigned: ips
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .into(),
                    },
                )
            }
            "UnassignPrivateIpAddresses" => {
                let eni = p.require("NetworkInterfaceId")?;
                let ips: Vec<Ipv4Addr> =
                    parse_all("PrivateIpAddress", &p.list("PrivateIpAddress")?)?;
                self.check_assigned(eni, |e| {
                    e.ipv4_addresses().any(|a| ips.contains(&a)) || ips.is_empty()
                })?;
                call!(sim.unassign_ipv4(eni, &ips));
                ack("UnassignPrivateIpAddressesResponse")
            }
            "UnassignIpv6Addresses" => {
                let eni = p.require("NetworkInterfaceId")?;
                let ips: Vec<Ipv6Addr> = parse_all("Ipv6Addresses", &p.list("Ipv6Addresses")?)?;
                self.check_assigned(eni, |e| {
                    e.ipv6.iter().any(|a| ips.contains(a)) || ips.is_empty()
                })?;
                call!(sim.unassign_ipv6(eni, &ips));
                ack("UnassignIpv6AddressesResponse")
            }
            "DescribeNetworkInterfaces" => self.describe(p).await?,
            other => {
                return Err(Ec2Err::new(
                    400,
                    "InvalidAction",
                    format!("The action {other} is not valid for this web service."),
                ));
            }
        })
    }

    /// EC2 refuses to unassign addresses none of which is on the ENI (`InvalidParameterValue`);
    /// an ENI that does not exist is `InvalidNetworkInterfaceID.NotFound`.
    fn check_assigned(
        &self,
        eni_id: &str,
        any_present: impl Fn(&crate::Eni) -> bool,
    ) -> std::result::Result<(), Ec2Err> {
        let Some(eni) = self.sim.eni(eni_id) else {
            return Err(Ec2Err::new(
                400,
                codes::ENI_NOT_FOUND,
                format!("The networkInterface ID '{eni_id}' does not exist"),
            ));
        };
        if any_present(&eni) {
            Ok(())
        } else {
            Err(Ec2Err::new(
                400,
                codes::INVALID_PARAMETER_VALUE,
                "Some of the specified addresses are not assigned to interface",
            ))
        }
    }

    async fn describe(&self, p: &ParamMap) -> std::result::Result<Ec2HttpResponse, Ec2Err> {
        let mut filter = EniFilter::ids(p.list("NetworkInterfaceId")?);
        let mut n = 1;
        while let Some(name) = p.get(&format!("Filter.{n}.Name")) {
            let values = p.list(&format!("Filter.{n}.Value"))?;
            let value = values.first().cloned().unwrap_or_default();
            match name {
                "attachment.instance-id" => filter.instance_id = Some(value),
                "subnet-id" => filter.subnet_id = Some(value),
                "vpc-id" => filter.vpc_id = Some(value),
                "status" => filter.status = Some(EniStatus::parse(&value)),
                tag if tag.starts_with("tag:") => {
                    filter.tags.insert(tag[4..].to_owned(), value);
                }
                other => {
                    return Err(Ec2Err::new(
                        400,
                        codes::INVALID_PARAMETER_VALUE,
                        format!("The filter '{other}' is invalid"),
                    ));
                }
            }
            n += 1;
        }
        let by_ids = !filter.eni_ids.is_empty();
        let max: Option<usize> = p.parse("MaxResults")?;
        if by_ids && max.is_some() {
            return Err(Ec2Err::new(
                400,
                "InvalidParameterCombination",
                "The parameter NetworkInterfaceIds cannot be used with the parameter MaxResults",
            ));
        }
        let mut enis = self.sim.describe_enis(&filter).await.map_err(translate)?;
        if let Some(missing) = filter
            .eni_ids
            .iter()
            .find(|id| !enis.iter().any(|e| e.id == **id))
        {
            return Err(Ec2Err::new(
                400,
                codes::ENI_NOT_FOUND,
                format!("The networkInterface ID '{missing}' does not exist"),
            ));
        }
        enis.sort_by(|a, b| a.id.cmp(&b.id));
        let page = max.unwrap_or(SIM_EC2_MAX_PAGE).clamp(5, SIM_EC2_MAX_PAGE);
        let start = match p.get("NextToken") {
            None => 0,
            Some(t) => t
                .strip_prefix("sim-page-")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Ec2Err::new(400, "InvalidNextToken", "The token is not valid"))?,
        };
        let end = (start + page).min(enis.len());
        let next_token = (end < enis.len()).then(|| format!("sim-page-{end}"));
        Ok(xml(
            "DescribeNetworkInterfacesResponse",
            &wire::DescribeEnisResponse {
                request_id: rid(),
                set: enis
                    .get(start..end)
                    .unwrap_or_default()
                    .iter()
                    .map(wire::NetworkInterface::from_eni)
                    .collect::<Vec<_>>()
                    .into(),
                next_token,
            },
        ))
    }
}

fn ack(root: &str) -> Ec2HttpResponse {
    xml(
        root,
        &wire::Ack {
            request_id: rid(),
            ok: Some(true),
        },
    )
}

fn form(body: &[u8]) -> std::result::Result<ParamMap, Ec2Err> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Ec2Err::new(400, "MalformedQueryString", "body is not UTF-8"))?;
    let mut map = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = || {
            Ec2Err::new(
                400,
                "MalformedQueryString",
                format!("bad encoding in {pair:?}"),
            )
        };
        map.insert(
            percent_decode(k, true).ok_or_else(bad)?,
            percent_decode(v, true).ok_or_else(bad)?,
        );
    }
    Ok(ParamMap(map))
}

fn signed(req: &Ec2HttpRequest) -> bool {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    header("authorization").is_some_and(|a| {
        a.starts_with("AWS4-HMAC-SHA256 Credential=") && a.contains("/ec2/aws4_request")
    }) && header("x-amz-date").is_some()
}

#[async_trait]
impl Ec2Transport for SimEc2 {
    async fn send(&self, request: Ec2HttpRequest) -> Result<Ec2HttpResponse> {
        if !signed(&request) {
            return Ok(error_response(&Ec2Err::new(
                401,
                "IncompleteSignature",
                "The request must contain a SigV4 Authorization header",
            )));
        }
        let outcome = match form(&request.body) {
            Ok(p) => {
                let action = p.get("Action").unwrap_or_default().to_owned();
                self.dispatch(&action, &p).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(r) => Ok(r),
            Err(e) if e.code == LOST => Err(Error::Transport {
                action: request.action.clone(),
                endpoint: request.url.clone(),
                timed_out: true,
                source: e.message.into(),
            }),
            Err(e) if e.code == GARBAGE => Ok(Ec2HttpResponse::new(
                200,
                "<html><body>503 Service Temporarily Unavailable</body></html>",
            )),
            Err(e) => Ok(error_response(&e)),
        }
    }
}
