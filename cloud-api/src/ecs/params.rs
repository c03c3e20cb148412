//! Flattening of the provider requests into RPC parameters (`Name.N`, `Tag.N.Key`), and the
//! reverse for the simulator, so both sides agree by construction and are tested as a round
//! trip.

#[cfg(feature = "sim")]
use std::{collections::BTreeMap, str::FromStr};
use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use crate::types::{
    AssignIpsRequest, AttachEniRequest, CreateEniRequest, DetachEniRequest, EniFilter, EniKind,
    EniStatus, IpSelection,
};

/// RPC parameters being built, in insertion order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Params(pub(crate) Vec<(String, String)>);

impl Params {
    pub(crate) fn push(&mut self, k: impl Into<String>, v: impl fmt::Display) -> &mut Self {
        let v = v.to_string();
        // SDKs drop parameters whose value is empty.
        if !v.is_empty() {
            self.0.push((k.into(), v));
        }
        self
    }

    pub(crate) fn push_opt(&mut self, k: &str, v: Option<impl fmt::Display>) -> &mut Self {
        if let Some(v) = v {
            self.push(k, v);
        }
        self
    }

    pub(crate) fn push_list<T: fmt::Display>(
        &mut self,
        prefix: &str,
        items: impl IntoIterator<Item = T>,
    ) -> &mut Self {
        for (i, v) in items.into_iter().enumerate() {
            self.push(format!("{prefix}.{}", i + 1), v);
        }
        self
    }

    fn push_tags<'a>(&mut self, tags: impl IntoIterator<Item = (&'a String, &'a String)>) {
        for (i, (k, v)) in tags.into_iter().enumerate() {
            self.push(format!("Tag.{}.Key", i + 1), k);
            // An empty value is legal for a tag; send it explicitly.
            self.0.push((format!("Tag.{}.Value", i + 1), v.clone()));
        }
    }

    fn push_selection<A: fmt::Display>(
        &mut self,
        count_name: &str,
        list_name: &str,
        sel: &IpSelection<A>,
    ) {
        match sel {
            IpSelection::Count(n) => {
                self.push(count_name, n);
            }
            IpSelection::Explicit(v) => {
                self.push_list(list_name, v);
            }
        }
    }
}

pub(crate) fn create(req: &CreateEniRequest, token: &str) -> Params {
    let mut p = Params::default();
    p.push("VSwitchId", &req.subnet_id)
        .push_list("SecurityGroupIds", &req.security_group_ids)
        .push_opt("PrimaryIpAddress", req.primary_ipv4);
    if let Some(sel) = &req.secondary_ipv4 {
        p.push_selection("SecondaryPrivateIpAddressCount", "PrivateIpAddress", sel);
    }
    if let Some(sel) = &req.ipv6 {
        p.push_selection("Ipv6AddressCount", "Ipv6Address", sel);
    }
    p.push_tags(&req.tags);
    p.push_opt("Description", req.description.as_ref());
    if req.trunk {
        p.push("InstanceType", "Trunk");
    }
    p.push("ClientToken", token);
    p
}

pub(crate) fn attach(req: &AttachEniRequest) -> Params {
    let mut p = Params::default();
    p.push("NetworkInterfaceId", &req.eni_id)
        .push("InstanceId", &req.instance_id)
        .push_opt("NetworkCardIndex", req.network_card_index);
    p
}

pub(crate) fn detach(req: &DetachEniRequest) -> Params {
    let mut p = Params::default();
    p.push("NetworkInterfaceId", &req.eni_id)
        .push("InstanceId", &req.instance_id);
    p
}

pub(crate) fn eni_only(eni_id: &str) -> Params {
    let mut p = Params::default();
    p.push("NetworkInterfaceId", eni_id);
    p
}

pub(crate) fn assign_ipv4(req: &AssignIpsRequest<Ipv4Addr>, token: &str) -> Params {
    let mut p = eni_only(&req.eni_id);
    p.push_selection(
        "SecondaryPrivateIpAddressCount",
        "PrivateIpAddress",
        &req.ips,
    );
    p.push("ClientToken", token);
    p
}

pub(crate) fn assign_ipv6(req: &AssignIpsRequest<Ipv6Addr>, token: &str) -> Params {
    let mut p = eni_only(&req.eni_id);
    p.push_selection("Ipv6AddressCount", "Ipv6Address", &req.ips);
    p.push("ClientToken", token);
    p
}

pub(crate) fn unassign<A: fmt::Display>(list_name: &str, eni_id: &str, ips: &[A]) -> Params {
    let mut p = eni_only(eni_id);
    p.push_list(list_name, ips);
    p
}

/// `DescribeNetworkInterfaces` for one page; `ids` is at most 100 of the filter's ids.
pub(crate) fn describe(
    filter: &EniFilter,
    ids: &[String],
    max_results: u32,
    next_token: Option<&str>,
) -> Params {
    let mut p = Params::default();
    p.push_list("NetworkInterfaceId", ids)
        .push_opt("InstanceId", filter.instance_id.as_ref())
        .push_opt("VSwitchId", filter.subnet_id.as_ref())
        .push_opt("VpcId", filter.vpc_id.as_ref())
        .push_opt("Status", filter.status.as_ref().map(EniStatus::as_str))
        .push_opt("Type", filter.kind.as_ref().map(EniKind::as_str));
    p.push_tags(&filter.tags);
    p.push("MaxResults", max_results)
        .push_opt("NextToken", next_token);
    p
}

/// Parameters as received, by name.
#[cfg(feature = "sim")]
#[derive(Clone, Debug, Default)]
pub(crate) struct ParamMap(pub(crate) BTreeMap<String, String>);

/// A parameter problem, with its ECS code.
#[cfg(feature = "sim")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParamError {
    pub(crate) code: String,
    pub(crate) message: String,
}

#[cfg(feature = "sim")]
fn missing(name: &str) -> ParamError {
    ParamError {
        code: format!("MissingParameter.{name}"),
        message: format!(
            "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
        ),
    }
}

#[cfg(feature = "sim")]
fn invalid(name: &str, value: &str) -> ParamError {
    ParamError {
        code: format!("InvalidParameter.{name}"),
        message: format!("The specified parameter \"{name}\" ({value:?}) is not valid."),
    }
}

#[cfg(feature = "sim")]
impl ParamMap {
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub(crate) fn require(&self, k: &str) -> Result<&str, ParamError> {
        self.get(k).ok_or_else(|| missing(k))
    }

    pub(crate) fn parse<T: FromStr>(&self, k: &str) -> Result<Option<T>, ParamError> {
        self.get(k)
            .map(|v| v.parse().map_err(|_| invalid(k, v)))
            .transpose()
    }

    /// `prefix.1`, `prefix.2`, … in numeric order (gaps allowed, as the gateway accepts).
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<String>, ParamError> {
        let mut items: Vec<(u32, String)> = Vec::new();
        let dotted = format!("{prefix}.");
        for (k, v) in self.0.range(dotted.clone()..) {
            let Some(n) = k.strip_prefix(&dotted) else {
                break;
            };
            if n.contains('.') {
                continue;
            }
            let idx: u32 = n.parse().map_err(|_| invalid(k, v))?;
            if !v.is_empty() {
                items.push((idx, v.clone()));
            }
        }
        items.sort_by_key(|(i, _)| *i);
        Ok(items.into_iter().map(|(_, v)| v).collect())
    }

    fn parse_list<T: FromStr>(&self, prefix: &str) -> Result<Vec<T>, ParamError> {
        self.list(prefix)?
            .iter()
            .map(|v| v.parse().map_err(|_| invalid(prefix, v)))
            .collect()
    }

    fn tags(&self) -> Result<BTreeMap<String, String>, ParamError> {
        let mut out = BTreeMap::new();
        for n in 1..=64u32 {
            let key = format!("Tag.{n}.Key");
            if let Some(k) = self.get(&key) {
                let v = self
                    .0
                    .get(&format!("Tag.{n}.Value"))
                    .cloned()
                    .unwrap_or_default();
                out.insert(k.to_owned(), v);
            } else if self.0.contains_key(&format!("Tag.{n}.Value")) {
                return Err(missing(&key));
            }
        }
        Ok(out)
    }

    fn selection<A: FromStr>(
        &self,
        count_name: &str,
        list_name: &str,
    ) -> Result<Option<IpSelection<A>>, ParamError> {
        let count: Option<u32> = self.parse(count_name)?;
        let list: Vec<A> = self.parse_list(list_name)?;
        match (count, list.is_empty()) {
            (Some(_), false) => Err(ParamError {
                code: "InvalidParameter.Conflict".to_owned(),
                message: format!("{count_name} and {list_name}.N are mutually exclusive."),
            }),
            (Some(n), true) => Ok(Some(IpSelection::Count(n))),
            (None, false) => Ok(Some(IpSelection::Explicit(list))),
            (None, true) => Ok(None),
        }
    }

    pub(crate) fn decode_create(&self) -> Result<CreateEniRequest, ParamError> {
        let mut sgs = self.list("SecurityGroupIds")?;
        if let Some(sg) = self.get("SecurityGroupId") {
            sgs.insert(0, sg.to_owned());
        }
        let mut req = CreateEniRequest::new(self.require("VSwitchId")?, sgs);
        req.primary_ipv4 = self.parse("PrimaryIpAddress")?;
        req.secondary_ipv4 =
            self.selection("SecondaryPrivateIpAddressCount", "PrivateIpAddress")?;
        req.ipv6 = self.selection("Ipv6AddressCount", "Ipv6Address")?;
        req.tags = self.tags()?;
        req.description = self.get("Description").map(str::to_owned);
        req.trunk = match self.get("InstanceType") {
            None | Some("Secondary") => false,
            Some("Trunk") => true,
            Some(other) => return Err(invalid("InstanceType", other)),
        };
        req.client_token = self.get("ClientToken").map(str::to_owned);
        Ok(req)
    }

    pub(crate) fn decode_attach(&self) -> Result<AttachEniRequest, ParamError> {
        let mut req = AttachEniRequest::new(
            self.require("NetworkInterfaceId")?,
            self.require("InstanceId")?,
        );
        req.network_card_index = self.parse("NetworkCardIndex")?;
        Ok(req)
    }

    pub(crate) fn decode_detach(&self) -> Result<DetachEniRequest, ParamError> {
        Ok(DetachEniRequest::new(
            self.require("NetworkInterfaceId")?,
            self.require("InstanceId")?,
        ))
    }

    pub(crate) fn decode_assign<A: FromStr>(
        &self,
        count_name: &str,
        list_name: &str,
    ) -> Result<AssignIpsRequest<A>, ParamError> {
        let eni = self.require("NetworkInterfaceId")?;
        let sel = self
            .selection(count_name, list_name)?
            .ok_or_else(|| missing(count_name))?;
        let mut req = match sel {
            IpSelection::Count(n) => AssignIpsRequest::count(eni, n),
            IpSelection::Explicit(v) => AssignIpsRequest::explicit(eni, v),
        };
        req.client_token = self.get("ClientToken").map(str::to_owned);
        Ok(req)
    }

    pub(crate) fn decode_unassign<A: FromStr>(
        &self,
        list_name: &str,
    ) -> Result<(String, Vec<A>), ParamError> {
        Ok((
            self.require("NetworkInterfaceId")?.to_owned(),
            self.parse_list(list_name)?,
        ))
    }

    pub(crate) fn decode_describe(&self) -> Result<EniFilter, ParamError> {
        let mut f = EniFilter::ids(self.list("NetworkInterfaceId")?);
        f.instance_id = self.get("InstanceId").map(str::to_owned);
        f.subnet_id = self.get("VSwitchId").map(str::to_owned);
        f.vpc_id = self.get("VpcId").map(str::to_owned);
        f.status = self.get("Status").map(EniStatus::parse);
        f.kind = self.get("Type").map(EniKind::parse);
        f.tags = self.tags()?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sim")]
    fn map(p: &Params) -> ParamMap {
        ParamMap(p.0.iter().cloned().collect())
    }

    #[test]
    #[cfg(feature = "sim")]
    fn create_round_trips() {
        let mut req = CreateEniRequest::new("vsw-1", ["sg-1", "sg-2"])
            .with_secondary_ipv4_count(3)
            .with_tag("a", "1")
            .with_tag("b", "")
            .with_description("desc with spaces");
        req.ipv6 = Some(IpSelection::Explicit(vec!["2001:db8::5".parse().unwrap()]));
        req.primary_ipv4 = Some(Ipv4Addr::new(198, 18, 0, 9));
        req.trunk = true;
        let p = create(&req, "tok");
        let names: Vec<&str> = p.0.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"SecurityGroupIds.2") && names.contains(&"Tag.2.Value"));
        let back = map(&p).decode_create().unwrap();
        assert_eq!(back, req.with_client_token("tok"));
    }

    #[test]
    #[cfg(feature = "sim")]
    fn describe_and_ip_calls_round_trip() {
        let mut f = EniFilter::instance("i-1").with_status(EniStatus::InUse);
        f.eni_ids = (1..=12).map(|i| format!("eni-{i}")).collect();
        f.tags.insert("owner".into(), "me".into());
        f.kind = Some(EniKind::Secondary);
        let p = describe(&f, &f.eni_ids, 100, Some("next"));
        let back = map(&p).decode_describe().unwrap();
        assert_eq!(back, f, "ids come back in numeric, not lexical, order");

        let a = AssignIpsRequest::<Ipv4Addr>::explicit("eni-1", vec![Ipv4Addr::new(1, 2, 3, 4)]);
        let back: AssignIpsRequest<Ipv4Addr> = map(&assign_ipv4(&a, "t"))
            .decode_assign("SecondaryPrivateIpAddressCount", "PrivateIpAddress")
            .unwrap();
        assert_eq!(back, a.with_client_token("t"));
        let ips: Vec<Ipv6Addr> = vec!["2001:db8::1".parse().unwrap()];
        let (eni, got) = map(&unassign("Ipv6Address", "eni-2", &ips))
            .decode_unassign::<Ipv6Addr>("Ipv6Address")
            .unwrap();
        assert_eq!((eni.as_str(), got), ("eni-2", ips));
    }

    #[test]
    #[cfg(feature = "sim")]
    fn decoding_errors_are_typed() {
        let m = ParamMap([("VSwitchId".to_owned(), "v".to_owned())].into());
        assert_eq!(m.decode_create().unwrap().security_group_ids.len(), 0);
        let m = ParamMap::default();
        assert_eq!(
            m.decode_create().unwrap_err().code,
            "MissingParameter.VSwitchId"
        );
        let m = ParamMap(
            [
                ("NetworkInterfaceId".to_owned(), "e".to_owned()),
                ("SecondaryPrivateIpAddressCount".to_owned(), "2".to_owned()),
                ("PrivateIpAddress.1".to_owned(), "1.2.3.4".to_owned()),
            ]
            .into(),
        );
        assert_eq!(
            m.decode_assign::<Ipv4Addr>("SecondaryPrivateIpAddressCount", "PrivateIpAddress")
                .unwrap_err()
                .code,
            "InvalidParameter.Conflict"
        );
        let m = ParamMap(
            [
                ("NetworkInterfaceId".to_owned(), "e".to_owned()),
                ("PrivateIpAddress.x".to_owned(), "1".to_owned()),
            ]
            .into(),
        );
        assert!(m.decode_unassign::<Ipv4Addr>("PrivateIpAddress").is_err());
        let m = ParamMap(
            [
                ("NetworkInterfaceId".to_owned(), "e".to_owned()),
                ("PrivateIpAddress.1".to_owned(), "300.1.1.1".to_owned()),
            ]
            .into(),
        );
        assert_eq!(
            m.decode_unassign::<Ipv4Addr>("PrivateIpAddress")
                .unwrap_err()
                .code,
            "InvalidParameter.PrivateIpAddress"
        );
    }
}
