//! The Alibaba Cloud ECS client: signed RPC calls over HTTPS, retries, rate limits, and the
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
    Action, codes,
    params::{self, Params},
    signer, wire,
};
use crate::{
    CloudProvider,
    credentials::CredentialsProvider,
    error::{ApiError, Error, Result},
    http::{BodyError, build_client, excerpt, read_capped},
    rand::uuid_v4,
    ratelimit::{RateLimiter, RateLimits},
    retry::{self, RetryPolicy},
    timefmt::format_utc,
    types::{
        AssignIpsRequest, AttachEniRequest, CreateEniRequest, DetachEniRequest, Eni, EniFilter,
        EniStatus, InstanceLimits, IpSelection, Subnet,
    },
};

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `https://ecs.<region>.aliyuncs.com/` and `https://vpc.<region>.aliyuncs.com/`.
    Public,
    /// `https://ecs-vpc.<region>.aliyuncs.com/` and `https://vpc-vpc.<region>.aliyuncs.com/`:
    /// reachable only from inside an Alibaba VPC, no public address needed. The best choice
    /// for a node plugin.
    Vpc,
    /// Explicit base URLs (e.g. the simulator's `http://127.0.0.1:PORT/` for both).
    Custom {
        /// Base URL of the ECS API.
        ecs: String,
        /// Base URL of the VPC API (`DescribeVSwitches`).
        vpc: String,
    },
}

impl Endpoint {
    /// The same base URL for both products (the simulator serves both).
    #[must_use]
    pub fn custom(url: impl Into<String>) -> Self {
        let url = url.into();
        Self::Custom {
            ecs: url.clone(),
            vpc: url,
        }
    }

    /// `(ecs, vpc)` base URLs for `region`.
    #[must_use]
    pub fn urls(&self, region: &str) -> (String, String) {
        match self {
            Self::Public => (
                format!("https://ecs.{region}.aliyuncs.com/"),
                format!("https://vpc.{region}.aliyuncs.com/"),
            ),
            Self::Vpc => (
                format!("https://ecs-vpc.{region}.aliyuncs.com/"),
                format!("https://vpc-vpc.{region}.aliyuncs.com/"),
            ),
            Self::Custom { ecs, vpc } => (ecs.clone(), vpc.clone()),
        }
    }
}

/// Configuration of [`EcsClient`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EcsConfig {
    /// The region, e.g. `cn-hangzhou`.
    pub region_id: String,
    /// Where to send requests (default [`Endpoint::Vpc`]).
    pub endpoint: Endpoint,
    /// TCP/TLS connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Per-request timeout by action name; the official Python SDK's values by default
    /// (16 s for the ENI lifecycle and `DescribeNetworkInterfaces`, 10 s for address calls,
    /// 17 s for `DescribeInstanceTypes` and `DescribeVSwitches`).
    pub request_timeouts: BTreeMap<String, Duration>,
    /// Timeout of actions without an entry (default 10 s).
    pub default_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Client-side rate limits (default: Terway's, see [`RateLimits`]).
    pub rate_limits: RateLimits,
    /// `MaxResults` of `DescribeNetworkInterfaces` pages (10–500, default 100).
    pub page_size: u32,
    /// Largest response body accepted (default 8 MiB).
    pub max_response_bytes: usize,
}

impl EcsConfig {
    /// Defaults for `region_id`.
    #[must_use]
    pub fn new(region_id: impl Into<String>) -> Self {
        let mut request_timeouts = BTreeMap::new();
        for a in Action::ALL {
            let secs = match a {
                Action::CreateNetworkInterface
                | Action::AttachNetworkInterface
                | Action::DetachNetworkInterface
                | Action::DeleteNetworkInterface
                | Action::DescribeNetworkInterfaces => 16,
                Action::DescribeInstanceTypes | Action::DescribeVSwitches => 17,
                Action::AssignPrivateIpAddresses
                | Action::UnassignPrivateIpAddresses
                | Action::AssignIpv6Addresses
                | Action::UnassignIpv6Addresses => 10,
            };
            request_timeouts.insert(a.as_str().to_owned(), Duration::from_secs(secs));
        }
        Self {
            region_id: region_id.into(),
            endpoint: Endpoint::Vpc,
            connect_timeout: Duration::from_secs(5),
            request_timeouts,
            default_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            rate_limits: RateLimits::default(),
            page_size: 100,
            max_response_bytes: 8 << 20,
        }
    }

    /// Sets the endpoint.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
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

    /// Sets every request timeout to `t`.
    #[must_use]
    pub fn with_request_timeout(mut self, t: Duration) -> Self {
        for v in self.request_timeouts.values_mut() {
            *v = t;
        }
        self.default_timeout = t;
        self
    }

    fn timeout(&self, action: Action) -> Duration {
        self.request_timeouts
            .get(action.as_str())
            .copied()
            .unwrap_or(self.default_timeout)
    }
}

struct Inner {
    cfg: EcsConfig,
    http: reqwest::Client,
    credentials: Arc<dyn CredentialsProvider>,
    limiter: RateLimiter,
    ecs_url: String,
    vpc_url: String,
    limits_cache: Mutex<HashMap<String, InstanceLimits>>,
}

/// The Alibaba Cloud ECS client. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), cnikit_cloud_api::Error> {
/// use std::sync::Arc;
/// use cnikit_cloud_api::{CloudProvider, credentials::EnvCredentials, ecs::{EcsClient, EcsConfig}};
///
/// let client = EcsClient::new(EcsConfig::new("cn-hangzhou"), Arc::new(EnvCredentials::from_env()?))?;
/// for eni in client.list_instance_enis("i-bp13znx0m0me8cquxxxx").await? {
///     println!("{} {} {:?}", eni.id, eni.status, eni.primary_ipv4);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EcsClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for EcsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcsClient")
            .field("region_id", &self.inner.cfg.region_id)
            .field("ecs_url", &self.inner.ecs_url)
            .field("vpc_url", &self.inner.vpc_url)
            .field("credentials", &self.inner.credentials.name())
            .finish_non_exhaustive()
    }
}

/// Codes meaning the credentials themselves were rejected (worth one refresh).
fn is_credentials_rejection(e: &Error) -> bool {
    e.api().is_some_and(|a| {
        a.code.starts_with("InvalidSecurityToken")
            || a.code == codes::ACCESS_KEY_NOT_FOUND
            || a.code == codes::MISSING_SECURITY_TOKEN
    })
}

fn request_id_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Id {
        request_id: Option<String>,
    }
    serde_json::from_slice::<Id>(body)
        .ok()
        .and_then(|i| i.request_id)
}

fn decode<T: DeserializeOwned>(action: Action, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidResponse {
        action: action.as_str().to_owned(),
        http_status: Some(200),
        request_id: request_id_of(body),
        detail: format!("{e}; body starts {:?}", excerpt(body)),
    })
}

fn parse_ips<A: FromStr>(
    action: Action,
    request_id: Option<&String>,
    ips: &[String],
) -> Result<Vec<A>> {
    ips.iter()
        .map(|s| {
            s.trim().parse().map_err(|_| Error::InvalidResponse {
                action: action.as_str().to_owned(),
                http_status: Some(200),
                request_id: request_id.cloned(),
                detail: format!("{s:?} is not an address"),
            })
        })
        .collect()
}

impl EcsClient {
    /// A client for `cfg` signing with `credentials`.
    ///
    /// # Errors
    /// [`Error::Config`] when the HTTP client cannot be built or the region is empty.
    pub fn new(cfg: EcsConfig, credentials: Arc<dyn CredentialsProvider>) -> Result<Self> {
        if cfg.region_id.trim().is_empty() {
            return Err(Error::Config("region_id is empty".to_owned()));
        }
        let (ecs_url, vpc_url) = cfg.endpoint.urls(&cfg.region_id);
        Ok(Self {
            inner: Arc::new(Inner {
                http: build_client(cfg.connect_timeout)?,
                limiter: RateLimiter::new(&cfg.rate_limits),
                credentials,
                ecs_url,
                vpc_url,
                limits_cache: Mutex::new(HashMap::new()),
                cfg,
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EcsConfig {
        &self.inner.cfg
    }

    /// One signed request, no retry.
    async fn attempt(&self, action: Action, params: &Params, deadline: Instant) -> Result<Vec<u8>> {
        let inner = &*self.inner;
        let waited = inner.limiter.acquire(action.as_str()).await;
        if !waited.is_zero() {
            tracing::debug!(%action, ?waited, "client-side rate limit");
        }
        let creds = inner.credentials.credentials().await?;
        let nonce = uuid_v4();
        let timestamp = format_utc(SystemTime::now());
        let mut all: Vec<(&str, &str)> = vec![
            ("Action", action.as_str()),
            ("Version", action.version()),
            ("Format", "JSON"),
            ("AccessKeyId", &creds.access_key_id),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", &nonce),
            ("Timestamp", &timestamp),
            ("RegionId", &inner.cfg.region_id),
        ];
        if let Some(t) = &creds.security_token {
            all.push(("SecurityToken", t.expose()));
        }
        all.extend(params.0.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let sts = signer::string_to_sign("POST", all.iter().copied());
        let signature = signer::sign(&sts, creds.access_key_secret.expose());
        let base = if action.is_vpc() {
            &inner.vpc_url
        } else {
            &inner.ecs_url
        };
        let mut url = String::with_capacity(base.len() + sts.len());
        url.push_str(base);
        url.push('?');
        for (k, v) in all
            .iter()
            .copied()
            .chain([("Signature", signature.as_str())])
        {
            if !url.ends_with('?') {
                url.push('&');
            }
            signer::percent_encode_into(k, &mut url);
            url.push('=');
            signer::percent_encode_into(v, &mut url);
        }
        let timeout = inner
            .cfg
            .timeout(action)
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        // `without_url`: the URL carries the signature and any STS token.
        let transport = |e: reqwest::Error| Error::Transport {
            action: action.as_str().to_owned(),
            endpoint: base.clone(),
            timed_out: e.is_timeout(),
            source: Box::new(e.without_url()),
        };
        let resp = inner
            .http
            .post(url)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .timeout(timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let body = match read_capped(resp, inner.cfg.max_response_bytes).await {
            Ok(b) => b,
            Err(BodyError::Transport(e)) => return Err(transport(e)),
            Err(BodyError::TooLarge(max)) => {
                return Err(Error::InvalidResponse {
                    action: action.as_str().to_owned(),
                    http_status: Some(status),
                    request_id: None,
                    detail: format!("body larger than {max} bytes"),
                });
            }
        };
        if (200..300).contains(&status) {
            tracing::debug!(%action, request_id = request_id_of(&body).as_deref().unwrap_or("-"), "ok");
            return Ok(body);
        }
        match serde_json::from_slice::<wire::ErrorBody>(&body) {
            Ok(wire::ErrorBody {
                code: Some(code),
                message,
                request_id,
                ..
            }) if !code.is_empty() => {
                let kind = codes::classify(&code, Some(status));
                Err(ApiError {
                    action: action.as_str().to_owned(),
                    code,
                    message: message.unwrap_or_default(),
                    request_id,
                    http_status: Some(status),
                    kind,
                }
                .into())
            }
            _ => Err(Error::InvalidResponse {
                action: action.as_str().to_owned(),
                http_status: Some(status),
                request_id: request_id_of(&body),
                detail: format!("error response without a Code: {:?}", excerpt(&body)),
            }),
        }
    }

    /// A call with retries under the policy's deadline. Codes in `stop_on` end the retries at
    /// once (the caller reconciles them).
    async fn execute(&self, action: Action, params: &Params, stop_on: &[&str]) -> Result<Vec<u8>> {
        retry::run(
            &self.inner.cfg.retry,
            action.as_str(),
            &*self.inner.credentials,
            is_credentials_rejection,
            |e| e.api().is_some_and(|a| stop_on.contains(&a.code.as_str())),
            |deadline| self.attempt(action, params, deadline),
        )
        .await
    }

    /// `execute` for actions answering only a `RequestId`; the body must still be JSON.
    async fn execute_ack(&self, action: Action, params: &Params, stop_on: &[&str]) -> Result<()> {
        let body = self.execute(action, params, stop_on).await?;
        decode::<wire::Ack>(action, &body).map(drop)
    }

    /// `execute_ack`, then not-found-style errors that mean "already done" become success.
    async fn execute_gone_ok(&self, action: Action, params: &Params) -> Result<()> {
        match self.execute_ack(action, params, &[]).await {
            Ok(()) => Ok(()),
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

    /// Describes the ENI to decide whether a state error means the goal is already reached.
    async fn reconcile(&self, eni_id: &str, done: impl Fn(&Eni) -> bool, err: Error) -> Result<()> {
        match self.describe_eni(eni_id).await {
            Ok(Some(eni)) if done(&eni) => {
                tracing::debug!(eni_id, status = %eni.status, "state error, but the goal is reached");
                Ok(())
            }
            _ => Err(err),
        }
    }

    async fn unassign_all<A: fmt::Display + Sync>(
        &self,
        action: Action,
        list_name: &str,
        eni_id: &str,
        ips: &[A],
    ) -> Result<()> {
        // One documented limit is 32 addresses per call.
        for chunk in ips.chunks(32) {
            self.execute_gone_ok(action, &params::unassign(list_name, eni_id, chunk))
                .await?;
        }
        Ok(())
    }

    fn check_assigned<A>(
        action: Action,
        request_id: Option<&String>,
        wanted: &IpSelection<A>,
        got: &[A],
    ) -> Result<()> {
        if got.len() == wanted.len() {
            Ok(())
        } else {
            Err(Error::Unexpected {
                action: action.as_str().to_owned(),
                request_id: request_id.cloned(),
                detail: format!("asked for {} addresses, got {}", wanted.len(), got.len()),
            })
        }
    }
}

#[async_trait]
impl CloudProvider for EcsClient {
    fn name(&self) -> &str {
        "alibaba-ecs"
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
        let action = Action::DescribeInstanceTypes;
        let mut next: Option<String> = None;
        let mut seen = BTreeSet::new();
        loop {
            let mut p = Params::default();
            p.push("InstanceTypes.1", instance_type)
                .push("MaxResults", 100)
                .push_opt("NextToken", next.as_ref());
            let body = self.execute(action, &p, &[]).await?;
            let resp: wire::DescribeInstanceTypesResponse = decode(action, &body)?;
            if let Some(t) = resp
                .instance_types
                .instance_type
                .into_iter()
                .find(|t| t.instance_type_id == instance_type)
            {
                let limits = t.into_limits();
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
        let action = Action::DescribeVSwitches;
        let mut p = Params::default();
        p.push("VSwitchId", subnet_id).push("PageSize", 50);
        let body = self.execute(action, &p, &[]).await?;
        let resp: wire::DescribeVSwitchesResponse = decode(action, &body)?;
        let rid = resp.request_id.clone();
        resp.vswitches
            .vswitch
            .into_iter()
            .find(|v| v.vswitch_id == subnet_id)
            .ok_or_else(|| Error::NotFound {
                what: "vSwitch",
                id: subnet_id.to_owned(),
            })?
            .into_subnet()
            .map_err(|detail| Error::InvalidResponse {
                action: action.as_str().to_owned(),
                http_status: Some(200),
                request_id: rid,
                detail,
            })
    }

    async fn create_eni(&self, request: &CreateEniRequest) -> Result<Eni> {
        let action = Action::CreateNetworkInterface;
        if request.security_group_ids.is_empty() {
            return Err(Error::InvalidArgument(
                "CreateNetworkInterface needs at least one security group".to_owned(),
            ));
        }
        let token = request.client_token.clone().unwrap_or_else(uuid_v4);
        let body = self
            .execute(action, &params::create(request, &token), &[])
            .await?;
        let resp: wire::CreateResponse = decode(action, &body)?;
        let rid = resp.request_id.clone();
        let eni = resp
            .eni
            .into_eni()
            .map_err(|detail| Error::InvalidResponse {
                action: action.as_str().to_owned(),
                http_status: Some(200),
                request_id: rid.clone(),
                detail,
            })?;
        tracing::info!(eni_id = %eni.id, subnet = %request.subnet_id, request_id = rid.as_deref().unwrap_or("-"), "created ENI");
        Ok(eni)
    }

    async fn attach_eni(&self, request: &AttachEniRequest) -> Result<()> {
        let action = Action::AttachNetworkInterface;
        match self
            .execute_ack(
                action,
                &params::attach(request),
                &[codes::INVALID_ENI_STATE],
            )
            .await
        {
            Ok(()) => Ok(()),
            // A retried attach whose first attempt went through sees the ENI Attaching/InUse.
            Err(e) if e.code() == Some(codes::INVALID_ENI_STATE) => {
                let instance = request.instance_id.as_str();
                self.reconcile(
                    &request.eni_id,
                    |eni| {
                        eni.instance_id() == Some(instance)
                            && matches!(eni.status, EniStatus::Attaching | EniStatus::InUse)
                    },
                    e,
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn detach_eni(&self, request: &DetachEniRequest) -> Result<()> {
        let action = Action::DetachNetworkInterface;
        match self
            .execute_ack(
                action,
                &params::detach(request),
                &[codes::INVALID_ENI_STATE],
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if e.api()
                    .is_some_and(|a| codes::is_success_on(action, &a.code)) =>
            {
                Ok(())
            }
            Err(e) if e.code() == Some(codes::INVALID_ENI_STATE) => {
                let instance = request.instance_id.as_str();
                self.reconcile(
                    &request.eni_id,
                    |eni| eni.status == EniStatus::Detaching || eni.instance_id() != Some(instance),
                    e,
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_eni(&self, eni_id: &str) -> Result<()> {
        self.execute_gone_ok(Action::DeleteNetworkInterface, &params::eni_only(eni_id))
            .await
    }

    async fn assign_ipv4(&self, request: &AssignIpsRequest<Ipv4Addr>) -> Result<Vec<Ipv4Addr>> {
        let action = Action::AssignPrivateIpAddresses;
        let token = request.client_token.clone().unwrap_or_else(uuid_v4);
        let body = self
            .execute(action, &params::assign_ipv4(request, &token), &[])
            .await?;
        let resp: wire::AssignIpv4Response = decode(action, &body)?;
        let ips = parse_ips(
            action,
            resp.request_id.as_ref(),
            &resp
                .assigned_private_ip_addresses_set
                .private_ip_set
                .private_ip_address,
        )?;
        Self::check_assigned(action, resp.request_id.as_ref(), &request.ips, &ips)?;
        Ok(ips)
    }

    async fn unassign_ipv4(&self, eni_id: &str, ips: &[Ipv4Addr]) -> Result<()> {
        self.unassign_all(
            Action::UnassignPrivateIpAddresses,
            "PrivateIpAddress",
            eni_id,
            ips,
        )
        .await
    }

    async fn assign_ipv6(&self, request: &AssignIpsRequest<Ipv6Addr>) -> Result<Vec<Ipv6Addr>> {
        let action = Action::AssignIpv6Addresses;
        let token = request.client_token.clone().unwrap_or_else(uuid_v4);
        let body = self
            .execute(action, &params::assign_ipv6(request, &token), &[])
            .await?;
        let resp: wire::AssignIpv6Response = decode(action, &body)?;
        let ips = parse_ips(
            action,
            resp.request_id.as_ref(),
            &resp.ipv6_sets.ipv6_address,
        )?;
        Self::check_assigned(action, resp.request_id.as_ref(), &request.ips, &ips)?;
        Ok(ips)
    }

    async fn unassign_ipv6(&self, eni_id: &str, ips: &[Ipv6Addr]) -> Result<()> {
        self.unassign_all(Action::UnassignIpv6Addresses, "Ipv6Address", eni_id, ips)
            .await
    }

    async fn describe_enis(&self, filter: &EniFilter) -> Result<Vec<Eni>> {
        let action = Action::DescribeNetworkInterfaces;
        let page_size = self.inner.cfg.page_size.clamp(10, 500);
        // At most 100 ids per request.
        let id_chunks: Vec<&[String]> = if filter.eni_ids.is_empty() {
            vec![&[]]
        } else {
            filter.eni_ids.chunks(100).collect()
        };
        let mut out: Vec<Eni> = Vec::new();
        let mut ids_seen = BTreeSet::new();
        for ids in id_chunks {
            let mut next: Option<String> = None;
            let mut tokens_seen = BTreeSet::new();
            loop {
                let p = params::describe(filter, ids, page_size, next.as_deref());
                let body = self.execute(action, &p, &[]).await?;
                let resp: wire::DescribeEnisResponse = decode(action, &body)?;
                for item in resp.network_interface_sets.network_interface_set {
                    let eni = item.into_eni().map_err(|detail| Error::InvalidResponse {
                        action: action.as_str().to_owned(),
                        http_status: Some(200),
                        request_id: resp.request_id.clone(),
                        detail,
                    })?;
                    if ids_seen.insert(eni.id.clone()) {
                        out.push(eni);
                    }
                }
                match resp.next_token.filter(|t| !t.is_empty()) {
                    None => break,
                    Some(t) if !tokens_seen.insert(t.clone()) => {
                        return Err(Error::InvalidResponse {
                            action: action.as_str().to_owned(),
                            http_status: Some(200),
                            request_id: resp.request_id,
                            detail: format!("NextToken {t:?} repeats: paging would never end"),
                        });
                    }
                    Some(t) => next = Some(t),
                }
            }
        }
        Ok(out)
    }
}
