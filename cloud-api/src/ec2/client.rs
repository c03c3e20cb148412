//! The AWS EC2 client: SigV4-signed Query calls, retries, rate limits, and the
//! [`CloudProvider`] implementation.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{
    EC2_VERSION, Ec2Action, codes,
    transport::{Ec2HttpRequest, Ec2Transport, ReqwestTransport},
    wire,
};
use crate::{
    CloudProvider,
    credentials::CredentialsProvider,
    ecs::{params::Params, signer::percent_encode_into},
    error::{ApiError, Error, ErrorKind, Result},
    http::excerpt,
    rand::uuid_v4,
    ratelimit::{RateLimiter, RateLimits},
    retry::{self, RetryPolicy},
    types::{
        AssignIpsRequest, AttachEniRequest, CreateEniRequest, DetachEniRequest, Eni, EniFilter,
        EniStatus, InstanceLimits, IpSelection, Subnet,
    },
};

/// Configuration of [`Ec2Client`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Ec2Config {
    /// The region, e.g. `us-east-1` (also the signing region).
    pub region: String,
    /// The endpoint URL; `None` = `https://ec2.<region>.amazonaws.com/`.
    pub endpoint: Option<String>,
    /// TCP/TLS connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Per-request timeout (default 10 s, the AWS VPC CNI's `HTTP_TIMEOUT`).
    pub request_timeout: Duration,
    /// Retries (the same classes and defaults as the ECS client).
    pub retry: RetryPolicy,
    /// Client-side rate limits (default: AWS's published buckets,
    /// [`RateLimits::ec2_published`]).
    pub rate_limits: RateLimits,
    /// `MaxResults` of `DescribeNetworkInterfaces` pages (5–1000, default 1000 as the AWS VPC
    /// CNI).
    pub page_size: u32,
    /// Largest response body accepted (default 8 MiB).
    pub max_response_bytes: usize,
    /// How long a device index chosen for an attach stays reserved until a describe shows the
    /// attachment (default 60 s): concurrent attaches never pick the same index.
    pub device_index_hold: Duration,
}

impl Ec2Config {
    /// Defaults for `region`.
    #[must_use]
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            rate_limits: RateLimits::ec2_published(),
            page_size: 1000,
            max_response_bytes: 8 << 20,
            device_index_hold: Duration::from_secs(60),
        }
    }

    /// Sets the endpoint URL (moto, a VPC endpoint, a proxy).
    #[must_use]
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the rate limits.
    #[must_use]
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        self.rate_limits = limits;
        self
    }

    /// Sets the `DescribeNetworkInterfaces` page size.
    #[must_use]
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n;
        self
    }

    /// The endpoint URL requests go to.
    #[must_use]
    pub fn endpoint_url(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://ec2.{}.amazonaws.com/", self.region))
    }
}

/// Device index → (ENI, reserved since) on one instance.
type Reservations = BTreeMap<u32, (String, Instant)>;

struct Inner {
    cfg: Ec2Config,
    url: String,
    /// `host[:port]` of the URL, as signed.
    authority: String,
    transport: Arc<dyn Ec2Transport>,
    credentials: Arc<dyn CredentialsProvider>,
    limiter: RateLimiter,
    limits_cache: Mutex<HashMap<String, InstanceLimits>>,
    /// Device indices picked for attaches not yet seen in a describe: instance → index → (ENI,
    /// since).
    reserved: Mutex<HashMap<String, Reservations>>,
}

/// The AWS EC2 client. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), cnikit_cloud_api::Error> {
/// use std::sync::Arc;
/// use cnikit_cloud_api::{CloudProvider, credentials::EnvCredentials, ec2::{Ec2Client, Ec2Config}};
///
/// let ec2 = Ec2Client::new(Ec2Config::new("us-east-1"), Arc::new(EnvCredentials::aws_from_env()?))?;
/// let limits = ec2.instance_limits("m5.large").await?;
/// println!("{} ENIs x {} IPv4", limits.max_enis, limits.ipv4_per_eni);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Ec2Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Ec2Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ec2Client")
            .field("region", &self.inner.cfg.region)
            .field("url", &self.inner.url)
            .field("credentials", &self.inner.credentials.name())
            .finish_non_exhaustive()
    }
}

fn is_credentials_rejection(e: &Error) -> bool {
    e.api().is_some_and(|a| {
        matches!(
            a.code.as_str(),
            codes::AUTH_FAILURE | codes::EXPIRED_TOKEN | codes::INVALID_CLIENT_TOKEN_ID
        )
    })
}

fn invalid(action: Ec2Action, request_id: Option<String>, detail: impl Into<String>) -> Error {
    Error::InvalidResponse {
        action: action.as_str().to_owned(),
        http_status: Some(200),
        request_id,
        detail: detail.into(),
    }
}

fn decode<T: DeserializeOwned>(action: Ec2Action, body: &[u8]) -> Result<T> {
    let text = std::str::from_utf8(body).map_err(|_| {
        invalid(
            action,
            None,
            format!("body is not UTF-8: {:?}", excerpt(body)),
        )
    })?;
    // The root must be `<{Action}Response>`: an HTML page or another answer would otherwise
    // decode into an empty (defaulted) response.
    let expected = format!("{}Response", action.as_str());
    if root_element(text) != Some(expected.as_str()) {
        return Err(invalid(
            action,
            None,
            format!("not a {expected}: body starts {:?}", excerpt(body)),
        ));
    }
    quick_xml::de::from_str(text).map_err(|e| {
        invalid(
            action,
            None,
            format!("{e}; body starts {:?}", excerpt(body)),
        )
    })
}

fn parse_ips<A: FromStr + PartialEq>(
    action: Ec2Action,
    rid: Option<&String>,
    ips: &[String],
) -> Result<Vec<A>> {
    let mut out: Vec<A> = Vec::with_capacity(ips.len());
    for s in ips {
        let ip: A = s
            .trim()
            .parse()
            .map_err(|_| invalid(action, rid.cloned(), format!("{s:?} is not an address")))?;
        // An address listed twice is one address.
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// The name of the first element of an XML document (after the declaration and comments).
fn root_element(text: &str) -> Option<&str> {
    let mut rest = text.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("<?") {
            rest = r.split_once("?>")?.1.trim_start();
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = r.split_once("-->")?.1.trim_start();
        } else {
            let r = rest.strip_prefix('<')?;
            let end = r.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
            return Some(&r[..end]);
        }
    }
}

/// The `host[:port]` part of a URL.
fn authority_of(url: &str) -> Result<String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| Error::Config(format!("endpoint {url:?} has no scheme")))?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(Error::Config(format!("endpoint {url:?} has no host")));
    }
    Ok(authority.to_owned())
}

fn push_filter(p: &mut Params, n: &mut usize, name: &str, values: &[&str]) {
    *n += 1;
    p.push(format!("Filter.{n}.Name"), name);
    for (i, v) in values.iter().enumerate() {
        p.push(format!("Filter.{n}.Value.{}", i + 1), v);
    }
}

/// The EC2 spelling of an ENI status filter value.
fn status_filter(s: &EniStatus) -> Option<&'static str> {
    Some(match s {
        EniStatus::Available => "available",
        EniStatus::Attaching => "attaching",
        EniStatus::InUse => "in-use",
        EniStatus::Detaching => "detaching",
        _ => return None,
    })
}

/// `DescribeNetworkInterfaces` filters for `filter` (what EC2 cannot filter is checked on the
/// answers with [`EniFilter::matches`]).
fn describe_filters(filter: &EniFilter, p: &mut Params) {
    let mut n = 0;
    if let Some(i) = &filter.instance_id {
        push_filter(p, &mut n, "attachment.instance-id", &[i]);
    }
    if let Some(s) = &filter.subnet_id {
        push_filter(p, &mut n, "subnet-id", &[s]);
    }
    if let Some(v) = &filter.vpc_id {
        push_filter(p, &mut n, "vpc-id", &[v]);
    }
    if let Some(s) = filter.status.as_ref().and_then(status_filter) {
        push_filter(p, &mut n, "status", &[s]);
    }
    for (k, v) in &filter.tags {
        push_filter(p, &mut n, &format!("tag:{k}"), &[v]);
    }
}

impl Ec2Client {
    /// A client for `cfg` signing with `credentials`, over HTTPS.
    ///
    /// # Errors
    /// [`Error::Config`] when the region or endpoint is unusable or the HTTP client cannot be
    /// built.
    pub fn new(cfg: Ec2Config, credentials: Arc<dyn CredentialsProvider>) -> Result<Self> {
        let transport = Arc::new(ReqwestTransport::new(
            cfg.connect_timeout,
            cfg.max_response_bytes,
        )?);
        Self::with_transport(cfg, credentials, transport)
    }

    /// A client sending through `transport` (for in-process clouds and proxies).
    ///
    /// # Errors
    /// [`Error::Config`] when the region or endpoint is unusable.
    pub fn with_transport(
        cfg: Ec2Config,
        credentials: Arc<dyn CredentialsProvider>,
        transport: Arc<dyn Ec2Transport>,
    ) -> Result<Self> {
        if cfg.region.trim().is_empty() {
            return Err(Error::Config("region is empty".to_owned()));
        }
        let url = cfg.endpoint_url();
        let authority = authority_of(&url)?;
        Ok(Self {
            inner: Arc::new(Inner {
                limiter: RateLimiter::for_actions(
                    &cfg.rate_limits,
                    Ec2Action::ALL.map(Ec2Action::as_str),
                ),
                url,
                authority,
                transport,
                credentials,
                limits_cache: Mutex::new(HashMap::new()),
                reserved: Mutex::new(HashMap::new()),
                cfg,
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Ec2Config {
        &self.inner.cfg
    }

    /// Calls any EC2 action (one this crate does not model, e.g. `CreateVpc`,
    /// `ModifyNetworkInterfaceAttribute`) with `params`, signed, retried and rate limited like
    /// the others; returns the XML answer.
    ///
    /// # Errors
    /// As the modelled actions: [`Error::Api`] with the EC2 code, transport errors, deadline.
    pub async fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<String> {
        let mut p = Params::default();
        for (k, v) in params {
            p.0.push(((*k).to_owned(), (*v).to_owned()));
        }
        let body = retry::run(
            &self.inner.cfg.retry,
            action,
            &*self.inner.credentials,
            is_credentials_rejection,
            |_| false,
            |deadline| self.attempt(action, &p, deadline),
        )
        .await?;
        String::from_utf8(body).map_err(|_| Error::InvalidResponse {
            action: action.to_owned(),
            http_status: Some(200),
            request_id: None,
            detail: "body is not UTF-8".to_owned(),
        })
    }

    /// The form body of `action` with `params`.
    fn form(action: &str, params: &Params) -> String {
        let mut body = String::with_capacity(64 + params.0.len() * 32);
        body.push_str("Action=");
        body.push_str(action);
        body.push_str("&Version=");
        body.push_str(EC2_VERSION);
        for (k, v) in &params.0 {
            body.push('&');
            percent_encode_into(k, &mut body);
            body.push('=');
            percent_encode_into(v, &mut body);
        }
        body
    }

    /// One signed request, no retry.
    async fn attempt(&self, action: &str, params: &Params, deadline: Instant) -> Result<Vec<u8>> {
        let inner = &*self.inner;
        let waited = inner.limiter.acquire(action).await;
        if !waited.is_zero() {
            tracing::debug!(%action, ?waited, "client-side rate limit");
        }
        let creds = inner.credentials.credentials().await?;
        let body = Self::form(action, params);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let signing_error = |e: &dyn std::error::Error| Error::Credentials {
            provider: inner.credentials.name().to_owned(),
            detail: format!("SigV4 signing failed: {e}"),
            source: None,
        };
        let identity = aws_credential_types::Credentials::new(
            creds.access_key_id.clone(),
            creds.access_key_secret.expose().to_owned(),
            creds.security_token.as_ref().map(|t| t.expose().to_owned()),
            creds.expiration,
            "cnikit",
        )
        .into();
        let params_v4 = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&inner.cfg.region)
            .name("ec2")
            .time(SystemTime::now())
            .settings(aws_sigv4::http_request::SigningSettings::default())
            .build()
            .map_err(|e| signing_error(&e))?
            .into();
        let signable = aws_sigv4::http_request::SignableRequest::new(
            "POST",
            inner.url.as_str(),
            [
                ("host", inner.authority.as_str()),
                ("content-type", content_type),
            ]
            .into_iter(),
            aws_sigv4::http_request::SignableBody::Bytes(body.as_bytes()),
        )
        .map_err(|e| signing_error(&e))?;
        let (instructions, _signature) = aws_sigv4::http_request::sign(signable, &params_v4)
            .map_err(|e| signing_error(&e))?
            .into_parts();
        let mut headers = vec![("content-type".to_owned(), content_type.to_owned())];
        headers.extend(
            instructions
                .headers()
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let timeout = inner
            .cfg
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let resp = inner
            .transport
            .send(Ec2HttpRequest {
                action: action.to_owned(),
                url: inner.url.clone(),
                headers,
                body: body.into_bytes(),
                timeout,
            })
            .await?;
        let status = resp.status;
        if (200..300).contains(&status) {
            return Ok(resp.body);
        }
        let parsed = std::str::from_utf8(&resp.body)
            .ok()
            .and_then(|t| quick_xml::de::from_str::<wire::ErrorResponse>(t).ok())
            .and_then(wire::ErrorResponse::into_parts);
        match parsed {
            Some((e, request_id)) => {
                let kind = codes::classify(&e.code, Some(status));
                Err(ApiError {
                    action: action.to_owned(),
                    code: e.code,
                    message: e.message,
                    request_id,
                    http_status: Some(status),
                    kind,
                }
                .into())
            }
            None => Err(Error::InvalidResponse {
                action: action.to_owned(),
                http_status: Some(status),
                request_id: None,
                detail: format!("error body is not an EC2 error: {:?}", excerpt(&resp.body)),
            }),
        }
    }

    /// A call with retries; errors matching `stop` end the retries at once.
    async fn execute(
        &self,
        action: Ec2Action,
        params: &Params,
        stop: impl Fn(&Error) -> bool,
    ) -> Result<Vec<u8>> {
        retry::run(
            &self.inner.cfg.retry,
            action.as_str(),
            &*self.inner.credentials,
            is_credentials_rejection,
            stop,
            |deadline| self.attempt(action.as_str(), params, deadline),
        )
        .await
    }

    /// `execute`, checking the answer is XML, with "already gone" errors as success.
    async fn execute_gone_ok(&self, action: Ec2Action, params: &Params) -> Result<()> {
        match self.execute(action, params, |_| false).await {
            Ok(body) => decode::<wire::Ack>(action, &body).map(drop),
            Err(e)
                if e.api()
                    .is_some_and(|a| codes::is_success_on(action, &a.code)) =>
            {
                tracing::debug!(%action, error = %e, "already done");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The lowest device index (≥ 1) neither attached on `instance` nor reserved, reserved for
    /// `eni_id`.
    async fn pick_device_index(&self, instance: &str, eni_id: &str) -> Result<u32> {
        let attached = self.list_instance_enis(instance).await?;
        let now = Instant::now();
        let hold = self.inner.cfg.device_index_hold;
        let mut reserved = self
            .inner
            .reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mine = reserved.entry(instance.to_owned()).or_default();
        let mut used: BTreeSet<u32> = BTreeSet::new();
        for e in &attached {
            if let Some(i) = e.attachment.as_ref().and_then(|a| a.device_index) {
                used.insert(i);
                // Seen: the reservation has done its job.
                if mine.get(&i).is_some_and(|(id, _)| *id == e.id) {
                    mine.remove(&i);
                }
            }
        }
        mine.retain(|_, (_, since)| now.saturating_duration_since(*since) < hold);
        used.extend(mine.keys().copied());
        let index = (1u32..).find(|i| !used.contains(i)).unwrap_or(1);
        mine.insert(index, (eni_id.to_owned(), now));
        Ok(index)
    }

    fn release_device_index(&self, instance: &str, index: u32) {
        if let Some(m) = self
            .inner
            .reserved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(instance)
        {
            m.remove(&index);
        }
    }

    /// Describes the ENI to decide whether a state error means the goal is already reached.
    async fn reconcile(
        &self,
        eni_id: &str,
        done: impl Fn(Option<&Eni>) -> bool,
        err: Error,
    ) -> Result<()> {
        match self.describe_eni(eni_id).await {
            Ok(eni) if done(eni.as_ref()) => {
                tracing::debug!(eni_id, "state error, but the goal is reached");
                Ok(())
            }
            _ => Err(err),
        }
    }

    /// Takes the assigned addresses out of an assign answer. EC2 lists only the new ones; some
    /// emulators (moto ≤ 5.2) list every address of the ENI, new ones last.
    fn newly_assigned<A: Copy + PartialEq>(
        action: Ec2Action,
        rid: Option<&String>,
        wanted: &IpSelection<A>,
        got: &[A],
    ) -> Result<Vec<A>> {
        match wanted {
            IpSelection::Count(n) => {
                let n = *n as usize;
                if got.len() < n {
                    return Err(Error::Unexpected {
                        action: action.as_str().to_owned(),
                        request_id: rid.cloned(),
                        detail: format!("asked for {n} addresses, got {}", got.len()),
                    });
                }
                Ok(got[got.len() - n..].to_vec())
            }
            IpSelection::Explicit(v) => {
                if !got.is_empty() && v.iter().any(|ip| !got.contains(ip)) {
                    return Err(Error::Unexpected {
                        action: action.as_str().to_owned(),
                        request_id: rid.cloned(),
                        detail: "the answer lacks addresses asked for".to_owned(),
                    });
                }
                Ok(v.clone())
            }
        }
    }

    /// Unassigns `ips` in chunks; addresses already gone (EC2 answers
    /// `InvalidParameterValue`) are checked against the ENI and the rest retried once.
    async fn unassign_all<A>(
        &self,
        action: Ec2Action,
        list_name: &str,
        eni_id: &str,
        ips: &[A],
        on_eni: fn(&Eni) -> Vec<A>,
    ) -> Result<()>
    where
        A: fmt::Display + Copy + PartialEq + Send + Sync,
    {
        for chunk in ips.chunks(100) {
            let mut p = Params::default();
            p.push("NetworkInterfaceId", eni_id)
                .push_list(list_name, chunk);
            match self.execute_gone_ok(action, &p).await {
                Ok(()) => {}
                Err(e) if e.code() == Some(codes::INVALID_PARAMETER_VALUE) => {
                    let Some(eni) = self.describe_eni(eni_id).await? else {
                        continue;
                    };
                    let present = on_eni(&eni);
                    let left: Vec<A> = chunk
                        .iter()
                        .copied()
                        .filter(|ip| present.contains(ip))
                        .collect();
                    if left.is_empty() {
                        continue;
                    }
                    if left.len() == chunk.len() {
                        return Err(e);
                    }
                    let mut p = Params::default();
                    p.push("NetworkInterfaceId", eni_id)
                        .push_list(list_name, &left);
                    self.execute_gone_ok(action, &p).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Ambiguous failures of a count assign are not retried by the client: EC2's
/// `AssignPrivateIpAddresses` has no `ClientToken`, so a retry after a lost answer could
/// assign twice. The caller sees the transport error and reconciles (the pool adopts extra
/// addresses it finds on its ENIs).
fn ambiguous(e: &Error) -> bool {
    matches!(e, Error::Transport { .. })
}

#[async_trait]
impl CloudProvider for Ec2Client {
    fn name(&self) -> &str {
        "aws-ec2"
    }

    async fn instance_limits(&self, instance_type: &str) -> Result<InstanceLimits> {
        if let Some(l) = self
            .inner
            .limits_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(instance_type)
        {
            return Ok(l.clone());
        }
        let action = Ec2Action::DescribeInstanceTypes;
        let mut next: Option<String> = None;
        let mut seen = BTreeSet::new();
        loop {
            let mut p = Params::default();
            p.push("InstanceType.1", instance_type)
                .push_opt("NextToken", next.as_ref());
            let body = self.execute(action, &p, |_| false).await?;
            let resp: wire::DescribeInstanceTypesResponse = decode(action, &body)?;
            if let Some(t) = resp
                .set
                .item
                .into_iter()
                .find(|t| t.instance_type == instance_type)
            {
                let limits = t
                    .into_limits()
                    .map_err(|d| invalid(action, resp.request_id.clone(), d))?;
                self.inner
                    .limits_cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(instance_type.to_owned(), limits.clone());
                return Ok(limits);
            }
            match resp.next_token.filter(|t| !t.is_empty()) {
                Some(t) if seen.insert(t.clone()) => next = Some(t),
                _ => {
                    return Err(Error::NotFound {
                        what: "instance type",
                        id: instance_type.to_owned(),
                    });
                }
            }
        }
    }

    async fn describe_subnet(&self, subnet_id: &str) -> Result<Subnet> {
        let action = Ec2Action::DescribeSubnets;
        let mut p = Params::default();
        p.push("SubnetId.1", subnet_id);
        let body = self.execute(action, &p, |_| false).await?;
        let resp: wire::DescribeSubnetsResponse = decode(action, &body)?;
        let rid = resp.request_id.clone();
        resp.set
            .item
            .into_iter()
            .find(|s| s.subnet_id == subnet_id)
            .ok_or_else(|| Error::NotFound {
                what: "subnet",
                id: subnet_id.to_owned(),
            })?
            .into_subnet()
            .map_err(|d| invalid(action, rid, d))
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> Result<Eni> {
        let action = Ec2Action::CreateNetworkInterface;
        if request.security_group_ids.is_empty() {
            return Err(Error::InvalidArgument(
                "CreateNetworkInterface needs at least one security group".to_owned(),
            ));
        }
        let token = request.client_token.clone().unwrap_or_else(uuid_v4);
        let mut p = Params::default();
        p.push("SubnetId", &request.subnet_id)
            .push_list("SecurityGroupId", &request.security_group_ids)
            .push_opt("PrivateIpAddress", request.primary_ipv4)
            .push_opt("Description", request.description.as_ref())
            .push("ClientToken", &token);
        match &request.secondary_ipv4 {
            Some(IpSelection::Count(n)) => {
                p.push("SecondaryPrivateIpAddressCount", n);
            }
            Some(IpSelection::Explicit(v)) => {
                for (i, ip) in v.iter().enumerate() {
                    p.push(format!("PrivateIpAddresses.{}.PrivateIpAddress", i + 1), ip);
                    p.push(format!("PrivateIpAddresses.{}.Primary", i + 1), "false");
                }
            }
            None => {}
        }
        match &request.ipv6 {
            Some(IpSelection::Count(n)) => {
                p.push("Ipv6AddressCount", n);
            }
            Some(IpSelection::Explicit(v)) => {
                for (i, ip) in v.iter().enumerate() {
                    p.push(format!("Ipv6Addresses.{}.Ipv6Address", i + 1), ip);
                }
            }
            None => {}
        }
        if request.trunk {
            p.push("InterfaceType", "trunk");
        }
        if !request.tags.is_empty() {
            p.push("TagSpecification.1.ResourceType", "network-interface");
            for (i, (k, v)) in request.tags.iter().enumerate() {
                p.push(format!("TagSpecification.1.Tag.{}.Key", i + 1), k);
                p.0.push((format!("TagSpecification.1.Tag.{}.Value", i + 1), v.clone()));
            }
        }
        let body = self.execute(action, &p, |_| false).await?;
        let resp: wire::CreateResponse = decode(action, &body)?;
        let rid = resp.request_id.clone();
        let eni = resp
            .network_interface
            .into_eni()
            .map_err(|d| invalid(action, rid.clone(), d))?;
        tracing::info!(eni_id = %eni.id, subnet = %request.subnet_id, request_id = rid.as_deref().unwrap_or("-"), "created ENI");
        Ok(eni)
    }

    async fn attach_eni(&self, request: &AttachEniRequest) -> Result<()> {
        let action = Ec2Action::AttachNetworkInterface;
        let instance = request.instance_id.as_str();
        let (index, picked) = match request.device_index {
            Some(i) => (i, false),
            None => (
                self.pick_device_index(instance, &request.eni_id).await?,
                true,
            ),
        };
        let mut p = Params::default();
        p.push("NetworkInterfaceId", &request.eni_id)
            .push("InstanceId", instance)
            .push("DeviceIndex", index)
            .push_opt("NetworkCardIndex", request.network_card_index);
        let result = match self
            .execute(action, &p, |e| e.kind() == ErrorKind::InvalidState)
            .await
        {
            Ok(body) => decode::<wire::AttachResponse>(action, &body).map(drop),
            // A retried attach whose first attempt went through sees the ENI in use.
            Err(e) if e.kind() == ErrorKind::InvalidState => {
                self.reconcile(
                    &request.eni_id,
                    |eni| {
                        eni.is_some_and(|eni| {
                            eni.instance_id() == Some(instance)
                                && matches!(eni.status, EniStatus::Attaching | EniStatus::InUse)
                        })
                    },
                    e,
                )
                .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() && picked {
            self.release_device_index(instance, index);
        }
        result
    }

    async fn detach_eni(&self, request: &DetachEniRequest) -> Result<()> {
        let action = Ec2Action::DetachNetworkInterface;
        let instance = request.instance_id.as_str();
        let attachment_id = match &request.attachment_id {
            Some(a) => a.clone(),
            None => {
                let Some(eni) = self.describe_eni(&request.eni_id).await? else {
                    return Ok(());
                };
                match eni.attachment {
                    Some(a) if a.instance_id == instance && eni.status != EniStatus::Detaching => {
                        match a.attachment_id {
                            Some(id) => id,
                            None => {
                                return Err(invalid(
                                    Ec2Action::DescribeNetworkInterfaces,
                                    None,
                                    format!("ENI {} is attached without an attachment id", eni.id),
                                ));
                            }
                        }
                    }
                    // Not attached here (any more): nothing to detach.
                    _ => return Ok(()),
                }
            }
        };
        let mut p = Params::default();
        p.push("AttachmentId", &attachment_id);
        match self
            .execute(action, &p, |e| e.kind() == ErrorKind::InvalidState)
            .await
        {
            Ok(body) => decode::<wire::Ack>(action, &body).map(drop),
            Err(e)
                if e.api()
                    .is_some_and(|a| codes::is_success_on(action, &a.code)) =>
            {
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::InvalidState => {
                self.reconcile(
                    &request.eni_id,
                    |eni| {
                        eni.is_none_or(|eni| {
                            eni.status == EniStatus::Detaching
                                || eni.instance_id() != Some(instance)
                        })
                    },
                    e,
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_eni(&self, eni_id: &str) -> Result<()> {
        let mut p = Params::default();
        p.push("NetworkInterfaceId", eni_id);
        self.execute_gone_ok(Ec2Action::DeleteNetworkInterface, &p)
            .await
    }

    async fn assign_ipv4(&self, request: &AssignIpsRequest<Ipv4Addr>) -> Result<Vec<Ipv4Addr>> {
        let action = Ec2Action::AssignPrivateIpAddresses;
        let mut p = Params::default();
        p.push("NetworkInterfaceId", &request.eni_id);
        let count = matches!(request.ips, IpSelection::Count(_));
        match &request.ips {
            IpSelection::Count(n) => {
                p.push("SecondaryPrivateIpAddressCount", n);
            }
            IpSelection::Explicit(v) => {
                p.push_list("PrivateIpAddress", v);
            }
        }
        let body = self.execute(action, &p, |e| count && ambiguous(e)).await?;
        let resp: wire::AssignIpv4Response = decode(action, &body)?;
        let got: Vec<String> = resp
            .assigned
            .item
            .into_iter()
            .map(|i| i.private_ip_address)
            .collect();
        let got = parse_ips(action, resp.request_id.as_ref(), &got)?;
        Self::newly_assigned(action, resp.request_id.as_ref(), &request.ips, &got)
    }

    async fn unassign_ipv4(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Result<()> {
        self.unassign_all(
            Ec2Action::UnassignPrivateIpAddresses,
            "PrivateIpAddress",
            eni_id,
            ips,
            |e| e.ipv4_addresses().collect(),
        )
        .await
    }

    async fn assign_ipv6(&self, request: &AssignIpsRequest<Ipv6Addr>) -> Result<Vec<Ipv6Addr>> {
        let action = Ec2Action::AssignIpv6Addresses;
        let mut p = Params::default();
        p.push("NetworkInterfaceId", &request.eni_id);
        let count = matches!(request.ips, IpSelection::Count(_));
        match &request.ips {
            IpSelection::Count(n) => {
                p.push("Ipv6AddressCount", n);
            }
            IpSelection::Explicit(v) => {
                p.push_list("Ipv6Addresses", v);
            }
        }
        let body = self.execute(action, &p, |e| count && ambiguous(e)).await?;
        let resp: wire::AssignIpv6Response = decode(action, &body)?;
        let got = parse_ips(action, resp.request_id.as_ref(), &resp.assigned.item)?;
        Self::newly_assigned(action, resp.request_id.as_ref(), &request.ips, &got)
    }

    async fn unassign_ipv6(&self, eni_id: &str, ips: &[Ipv6Addr]) -> Result<()> {
        self.unassign_all(
            Ec2Action::UnassignIpv6Addresses,
            "Ipv6Addresses",
            eni_id,
            ips,
            |e| e.ipv6.clone(),
        )
        .await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> Result<Vec<Eni>> {
        let action = Ec2Action::DescribeNetworkInterfaces;
        let page_size = self.inner.cfg.page_size.clamp(5, 1000);
        // EC2 takes ids or paging, not both: ids go in chunks of 200 without `MaxResults`.
        let id_chunks: Vec<&[String]> = if filter.eni_ids.is_empty() {
            vec![&[]]
        } else {
            filter.eni_ids.chunks(200).collect()
        };
        let mut out: Vec<Eni> = Vec::new();
        let mut ids_seen = BTreeSet::new();
        for ids in id_chunks {
            let mut next: Option<String> = None;
            let mut tokens_seen = BTreeSet::new();
            loop {
                let mut p = Params::default();
                p.push_list("NetworkInterfaceId", ids);
                describe_filters(filter, &mut p);
                if ids.is_empty() {
                    p.push("MaxResults", page_size);
                }
                p.push_opt("NextToken", next.as_ref());
                // An id that no longer exists fails the whole call: describe the rest one by one.
                let body = match self
                    .execute(action, &p, |e| e.code() == Some(codes::ENI_NOT_FOUND))
                    .await
                {
                    Ok(b) => b,
                    Err(e) if e.code() == Some(codes::ENI_NOT_FOUND) && ids.len() > 1 => {
                        for id in ids {
                            let one = EniFilter {
                                eni_ids: vec![id.clone()],
                                ..filter.clone()
                            };
                            for eni in Box::pin(self.describe_enis(&one)).await? {
                                if ids_seen.insert(eni.id.clone()) {
                                    out.push(eni);
                                }
                            }
                        }
                        break;
                    }
                    Err(e) if e.code() == Some(codes::ENI_NOT_FOUND) => break,
                    Err(e) => return Err(e),
                };
                let resp: wire::DescribeEnisResponse = decode(action, &body)?;
                for item in resp.set.item {
                    let eni = item
                        .into_eni()
                        .map_err(|d| invalid(action, resp.request_id.clone(), d))?;
                    if filter.matches(&eni) && ids_seen.insert(eni.id.clone()) {
                        out.push(eni);
                    }
                }
                match resp.next_token.filter(|t| !t.is_empty()) {
                    None => break,
                    Some(t) if !tokens_seen.insert(t.clone()) => {
                        return Err(invalid(
                            action,
                            resp.request_id,
                            format!("nextToken {t:?} repeats: paging would never end"),
                        ));
                    }
                    Some(t) => next = Some(t),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_and_form() {
        assert_eq!(
            authority_of("http://127.0.0.1:5055/").unwrap(),
            "127.0.0.1:5055"
        );
        assert_eq!(
            authority_of("https://ec2.us-east-1.amazonaws.com/").unwrap(),
            "ec2.us-east-1.amazonaws.com"
        );
        assert!(authority_of("ec2.example").is_err());
        let mut p = Params::default();
        p.push("TagSpecification.1.Tag.1.Key", "cnikit.io/pool")
            .push("Description", "a b+c");
        assert_eq!(
            Ec2Client::form("CreateNetworkInterface", &p),
            "Action=CreateNetworkInterface&Version=2016-11-15&TagSpecification.1.Tag.1.Key=cnikit.io%2Fpool&Description=a%20b%2Bc"
        );
    }

    #[test]
    fn answers_must_be_the_action_s_response() {
        assert_eq!(
            root_element(
                "<?xml version=\"1.0\"?>\n<!-- x --><AResponse xmlns=\"u\"><a/></AResponse>"
            ),
            Some("AResponse")
        );
        assert_eq!(root_element("<html><body/></html>"), Some("html"));
        assert_eq!(root_element("garbage"), None);
        let e = decode::<wire::Ack>(Ec2Action::DeleteNetworkInterface, b"<html>503</html>")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidResponse);
        assert!(
            decode::<wire::Ack>(
                Ec2Action::DeleteNetworkInterface,
                b"<DeleteNetworkInterfaceResponse><return>true</return></DeleteNetworkInterfaceResponse>"
            )
            .is_ok()
        );
    }

    #[test]
    fn assign_answers_listing_every_address_give_the_new_ones() {
        let a = Ec2Action::AssignPrivateIpAddresses;
        let ip = |n| Ipv4Addr::new(10, 0, 0, n);
        let got =
            Ec2Client::newly_assigned(a, None, &IpSelection::Count(2), &[ip(1), ip(2), ip(3)]);
        assert_eq!(got.unwrap(), vec![ip(2), ip(3)]);
        assert!(Ec2Client::newly_assigned(a, None, &IpSelection::Count(2), &[ip(1)]).is_err());
        let explicit = IpSelection::Explicit(vec![ip(9)]);
        assert_eq!(
            Ec2Client::newly_assigned(a, None, &explicit, &[]).unwrap(),
            vec![ip(9)]
        );
        assert!(Ec2Client::newly_assigned(a, None, &explicit, &[ip(1)]).is_err());
    }
}
