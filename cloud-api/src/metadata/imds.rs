//! The Alibaba instance metadata service client, with the hardened token mode.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::Mutex, time::Instant};

use super::{InstanceMetadata, MetadataInterface, normalize_mac, parse_mac_list};
use crate::{
    backoff::Backoff,
    error::{Error, Result},
    http::{BodyError, build_client, excerpt, read_capped},
    rand::{SplitMix64, entropy},
};

/// The header asking for a token's lifetime.
pub const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
/// The header carrying the token.
pub const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";

/// AWS `IMDSv2`: the header asking for a token's lifetime.
pub const AWS_TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
/// AWS `IMDSv2`: the header carrying the token.
pub const AWS_TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";

/// Whether to use the token (`IMDSv2`-style) mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenMode {
    /// Get a token; fall back to tokenless reads when the service does not hand one out.
    #[default]
    Preferred,
    /// Always use a token; fail without one.
    Required,
    /// Never ask for a token.
    Disabled,
}

/// Configuration of [`ImdsClient`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ImdsConfig {
    /// Base URL, without `/latest` (default `http://100.100.100.200`).
    pub base_url: String,
    /// Token mode.
    pub token_mode: TokenMode,
    /// Token lifetime to ask for (1 s – 6 h; default 6 h). Tokens are reused until half of it
    /// has passed.
    pub token_ttl: Duration,
    /// Per-request timeout (default 5 s).
    pub timeout: Duration,
    /// Attempts per read on transport errors, 429 and 5xx (default 4).
    pub attempts: u32,
    /// Backoff between attempts (default 500 ms ×1.2, 10 % jitter, as Terway).
    pub backoff: Backoff,
    /// Largest body accepted (default 1 MiB).
    pub max_body: usize,
    /// The header asking for a token's lifetime (default [`TOKEN_TTL_HEADER`]; AWS:
    /// [`AWS_TOKEN_TTL_HEADER`]).
    pub token_ttl_header: String,
    /// The header carrying the token (default [`TOKEN_HEADER`]; AWS: [`AWS_TOKEN_HEADER`]).
    pub token_header: String,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        Self {
            base_url: "http://100.100.100.200".to_owned(),
            token_mode: TokenMode::Preferred,
            token_ttl: Duration::from_secs(21_600),
            timeout: Duration::from_secs(5),
            attempts: 4,
            backoff: Backoff::new(Duration::from_millis(500), 1.2, Duration::from_secs(5), 0.1),
            max_body: 1 << 20,
            token_ttl_header: TOKEN_TTL_HEADER.to_owned(),
            token_header: TOKEN_HEADER.to_owned(),
        }
    }
}

impl ImdsConfig {
    /// EC2's instance metadata service, `IMDSv2` only: `http://169.254.169.254`, a token from
    /// `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` sent as
    /// `X-aws-ec2-metadata-token` ([`TokenMode::Required`]).
    #[must_use]
    pub fn aws() -> Self {
        Self {
            base_url: "http://169.254.169.254".to_owned(),
            token_mode: TokenMode::Required,
            token_ttl_header: AWS_TOKEN_TTL_HEADER.to_owned(),
            token_header: AWS_TOKEN_HEADER.to_owned(),
            ..Self::default()
        }
    }

    /// The defaults with another base URL (e.g. the simulator's `http://127.0.0.1:PORT`).
    #[must_use]
    pub fn with_base_url(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ..Self::default()
        }
    }
}

#[derive(Debug)]
enum CachedToken {
    Token { value: String, renew_at: Instant },
    Tokenless { retry_at: Instant },
}

/// Reads the instance metadata service (`/latest/meta-data/…`).
#[derive(Debug)]
pub struct ImdsClient {
    cfg: ImdsConfig,
    http: reqwest::Client,
    token: Mutex<Option<CachedToken>>,
}

enum Attempt {
    Done(Option<String>),
    Retry(Error),
    Unauthorized(Error),
    Fail(Error),
}

impl ImdsClient {
    /// A client for `cfg`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: ImdsConfig) -> Result<Self> {
        Ok(Self {
            http: build_client(cfg.timeout)?,
            cfg,
            token: Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/latest/{}",
            self.cfg.base_url.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    async fn fetch_token(&self) -> Result<String> {
        let path = "api/token";
        let ttl = self.cfg.token_ttl.as_secs().clamp(1, 21_600);
        let resp = self
            .http
            .put(self.url(path))
            .header(self.cfg.token_ttl_header.as_str(), ttl.to_string())
            .timeout(self.cfg.timeout)
            .send()
            .await
            .map_err(|e| {
                meta_err(
                    path,
                    None,
                    format!("token request failed: {}", e.without_url()),
                )
            })?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, 4096)
            .await
            .map_err(|e| meta_err(path, Some(status), body_err(&e)))?;
        if status != 200 {
            return Err(meta_err(path, Some(status), excerpt(&body)));
        }
        let token = String::from_utf8(body)
            .map_err(|_| meta_err(path, Some(status), "token is not UTF-8"))?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(meta_err(path, Some(status), "empty token"));
        }
        Ok(token)
    }

    /// The token to send, if any (cached until half its lifetime has passed).
    async fn token(&self) -> Result<Option<String>> {
        if self.cfg.token_mode == TokenMode::Disabled {
            return Ok(None);
        }
        let mut cached = self.token.lock().await;
        let now = Instant::now();
        match &*cached {
            Some(CachedToken::Token { value, renew_at }) if *renew_at > now => {
                return Ok(Some(value.clone()));
            }
            Some(CachedToken::Tokenless { retry_at }) if *retry_at > now => return Ok(None),
            _ => {}
        }
        match self.fetch_token().await {
            Ok(value) => {
                let renew_at = now
                    + self
                        .cfg
                        .token_ttl
                        .clamp(Duration::from_secs(1), Duration::from_secs(21_600))
                        / 2;
                *cached = Some(CachedToken::Token {
                    value: value.clone(),
                    renew_at,
                });
                Ok(Some(value))
            }
            Err(e) if self.cfg.token_mode == TokenMode::Preferred => {
                tracing::debug!(error = %e, "metadata token unavailable; reading without one");
                *cached = Some(CachedToken::Tokenless {
                    retry_at: now + Duration::from_secs(60),
                });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn attempt(&self, path: &str, token: Option<&str>) -> Attempt {
        let mut req = self.http.get(self.url(path)).timeout(self.cfg.timeout);
        if let Some(t) = token {
            req = req.header(self.cfg.token_header.as_str(), t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry(meta_err(
                    path,
                    None,
                    format!("request failed: {}", e.without_url()),
                ));
            }
        };
        let status = resp.status().as_u16();
        let body = match read_capped(resp, self.cfg.max_body).await {
            Ok(b) => b,
            Err(e @ BodyError::TooLarge(_)) => {
                return Attempt::Fail(meta_err(path, Some(status), body_err(&e)));
            }
            Err(e) => return Attempt::Retry(meta_err(path, Some(status), body_err(&e))),
        };
        match status {
            200 => match String::from_utf8(body) {
                Ok(s) => Attempt::Done(Some(s)),
                Err(_) => Attempt::Fail(meta_err(path, Some(status), "body is not UTF-8")),
            },
            404 => Attempt::Done(None),
            401 => Attempt::Unauthorized(meta_err(path, Some(status), excerpt(&body))),
            429 | 500..=599 => Attempt::Retry(meta_err(path, Some(status), excerpt(&body))),
            _ => Attempt::Fail(meta_err(path, Some(status), excerpt(&body))),
        }
    }

    /// Reads `path` (relative to `/latest/`); `None` on 404.
    ///
    /// # Errors
    /// [`Error::Metadata`] after the retries, or at once on a non-retryable status.
    pub async fn get_optional(&self, path: &str) -> Result<Option<String>> {
        let mut rng = SplitMix64::new(entropy());
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            let token = self.token().await?;
            match self.attempt(path, token.as_deref()).await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Unauthorized(e) => {
                    // Token expired or revoked: get a new one, once.
                    if refreshed || token.is_none() {
                        return Err(e);
                    }
                    refreshed = true;
                    *self.token.lock().await = None;
                }
                Attempt::Retry(e) => {
                    attempt += 1;
                    if attempt >= self.cfg.attempts.max(1) {
                        return Err(e);
                    }
                    tokio::time::sleep(self.cfg.backoff.delay(attempt - 1, rng.next_f64())).await;
                }
            }
        }
    }

    /// Reads `path` (relative to `/latest/`).
    ///
    /// # Errors
    /// [`Error::Metadata`] (with status 404 when the path does not exist).
    pub async fn get(&self, path: &str) -> Result<String> {
        self.get_optional(path)
            .await?
            .ok_or_else(|| meta_err(path, Some(404), "not found"))
    }

    async fn meta(&self, leaf: impl AsRef<str> + Send) -> Result<String> {
        let leaf = leaf.as_ref();
        Ok(self
            .get(&format!("meta-data/{leaf}"))
            .await?
            .trim()
            .to_owned())
    }

    async fn meta_opt(&self, leaf: impl AsRef<str> + Send) -> Result<Option<String>> {
        let leaf = leaf.as_ref();
        Ok(self
            .get_optional(&format!("meta-data/{leaf}"))
            .await?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()))
    }
}

fn meta_err(path: &str, status: Option<u16>, detail: impl Into<String>) -> Error {
    Error::Metadata {
        path: path.to_owned(),
        http_status: status,
        detail: detail.into(),
    }
}

fn body_err(e: &BodyError) -> String {
    match e {
        BodyError::TooLarge(max) => format!("body larger than {max} bytes"),
        BodyError::Transport(e) => format!("reading body: {e}"),
    }
}

fn parse_value<T: FromStr>(path: &str, s: &str) -> Result<T> {
    s.trim().parse().map_err(|_| {
        meta_err(
            path,
            Some(200),
            format!("unparsable value {:?}", excerpt(s.as_bytes())),
        )
    })
}

fn parse_opt<T: FromStr>(path: &str, v: Option<String>) -> Result<Option<T>> {
    v.map(|s| parse_value(path, &s)).transpose()
}

/// `["192.168.0.10","192.168.0.11"]` (a JSON array of strings).
pub(crate) fn parse_ipv4_list(path: &str, s: &str) -> Result<Vec<Ipv4Addr>> {
    let items: Vec<String> = serde_json::from_str(s.trim()).map_err(|e| {
        meta_err(
            path,
            Some(200),
            format!("not a JSON array of addresses: {e}"),
        )
    })?;
    items.iter().map(|i| parse_value(path, i)).collect()
}

/// `[2408:4005::1,2408:4005::2]` (bracketed, unquoted, comma-separated); quoted JSON accepted.
pub(crate) fn parse_ipv6_list(path: &str, s: &str) -> Result<Vec<Ipv6Addr>> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|i| i.trim().trim_matches('"'))
        .filter(|i| !i.is_empty())
        .map(|i| parse_value(path, i))
        .collect()
}

#[async_trait]
impl InstanceMetadata for ImdsClient {
    async fn instance_id(&self) -> Result<String> {
        self.meta("instance-id").await
    }
    async fn instance_type(&self) -> Result<String> {
        self.meta("instance/instance-type").await
    }
    async fn region_id(&self) -> Result<String> {
        self.meta("region-id").await
    }
    async fn zone_id(&self) -> Result<String> {
        self.meta("zone-id").await
    }
    async fn vpc_id(&self) -> Result<String> {
        self.meta("vpc-id").await
    }
    async fn subnet_id(&self) -> Result<String> {
        self.meta("vswitch-id").await
    }
    async fn primary_mac(&self) -> Result<String> {
        Ok(normalize_mac(&self.meta("mac").await?))
    }
    async fn macs(&self) -> Result<Vec<String>> {
        Ok(parse_mac_list(
            &self.meta("network/interfaces/macs/").await?,
        ))
    }
    async fn interface(&self, mac: &str) -> Result<MetadataInterface> {
        let mac = normalize_mac(mac);
        let p = |leaf: &str| format!("network/interfaces/macs/{mac}/{leaf}");
        let (eni, primary, ips, gw, mask, vsw, vsw_cidr, vpc, vpc_cidr, v6, v6_gw, v6_cidr) = tokio::try_join!(
            self.meta(p("network-interface-id")),
            self.meta(p("primary-ip-address")),
            self.meta(p("private-ipv4s")),
            self.meta_opt(p("gateway")),
            self.meta_opt(p("netmask")),
            self.meta_opt(p("vswitch-id")),
            self.meta_opt(p("vswitch-cidr-block")),
            self.meta_opt(p("vpc-id")),
            self.meta_opt(p("vpc-cidr-block")),
            self.meta_opt(p("ipv6s")),
            self.meta_opt(p("ipv6-gateway")),
            self.meta_opt(p("vswitch-ipv6-cidr-block")),
        )?;
        Ok(MetadataInterface {
            primary_ipv4: parse_value(&p("primary-ip-address"), &primary)?,
            private_ipv4s: parse_ipv4_list(&p("private-ipv4s"), &ips)?,
            gateway: parse_opt(&p("gateway"), gw)?,
            netmask: parse_opt(&p("netmask"), mask)?,
            subnet_id: vsw,
            subnet_cidr: parse_opt(&p("vswitch-cidr-block"), vsw_cidr)?,
            vpc_id: vpc,
            vpc_cidr: parse_opt(&p("vpc-cidr-block"), vpc_cidr)?,
            ipv6s: v6
                .map(|s| parse_ipv6_list(&p("ipv6s"), &s))
                .transpose()?
                .unwrap_or_default(),
            ipv6_gateway: parse_opt(&p("ipv6-gateway"), v6_gw)?,
            subnet_ipv6_cidr: parse_opt(&p("vswitch-ipv6-cidr-block"), v6_cidr)?,
            eni_id: eni,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_formats() {
        assert_eq!(
            parse_ipv4_list("p", "[\"192.168.0.10\",\"192.168.0.11\"]").unwrap(),
            vec![
                Ipv4Addr::new(192, 168, 0, 10),
                Ipv4Addr::new(192, 168, 0, 11)
            ]
        );
        assert!(parse_ipv4_list("p", "192.168.0.10").is_err());
        assert!(parse_ipv4_list("p", "[\"999.1.1.1\"]").is_err());
        assert_eq!(
            parse_ipv6_list("p", "[2408:4005::1,2408:4005::2]")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse_ipv6_list("p", "[\"2408:4005::1\"]").unwrap().len(), 1);
        assert!(parse_ipv6_list("p", "[]").unwrap().is_empty());
        assert!(parse_ipv6_list("p", "[zz::1]").is_err());
    }
}
