//! STS credentials of the instance's RAM role, from the metadata service.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use serde::Deserialize;

use super::{Credentials, CredentialsProvider, Secret};
use crate::{
    error::{Error, Result},
    metadata::ImdsClient,
    timefmt::parse_utc,
};

/// Configuration of [`RamRoleCredentials`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RamRoleConfig {
    /// The role; `None` discovers it from `ram/security-credentials/`.
    pub role_name: Option<String>,
    /// Refresh in the background once less than this is left (default 15 min; new credentials
    /// appear 30 min before the old ones expire).
    pub refresh_before: Duration,
    /// Credentials with less than this left are not used: callers wait for fresh ones
    /// (default 60 s).
    pub min_remaining: Duration,
    /// Where the role's documents are, relative to `/latest/` (default
    /// `meta-data/ram/security-credentials/`; AWS: `meta-data/iam/security-credentials/`, see
    /// [`RamRoleConfig::aws_instance_profile`]).
    pub path: String,
}

impl Default for RamRoleConfig {
    fn default() -> Self {
        Self {
            role_name: None,
            refresh_before: Duration::from_secs(15 * 60),
            min_remaining: Duration::from_secs(60),
            path: "meta-data/ram/security-credentials/".to_owned(),
        }
    }
}

impl RamRoleConfig {
    /// The AWS instance profile's role (`meta-data/iam/security-credentials/<role>`, whose
    /// documents carry `SecretAccessKey` and `Token`), read through an `IMDSv2` client
    /// ([`crate::metadata::ImdsConfig::aws`]).
    #[must_use]
    pub fn aws_instance_profile() -> Self {
        Self {
            path: "meta-data/iam/security-credentials/".to_owned(),
            ..Self::default()
        }
    }

    /// The defaults for a known role.
    #[must_use]
    pub fn role(name: impl Into<String>) -> Self {
        Self {
            role_name: Some(name.into()),
            ..Self::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleDocument {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default, alias = "SecretAccessKey")]
    access_key_secret: Option<String>,
    #[serde(default, alias = "Token")]
    security_token: Option<String>,
    #[serde(default)]
    expiration: Option<String>,
}

#[derive(Debug)]
struct Inner {
    imds: ImdsClient,
    cfg: RamRoleConfig,
    cached: RwLock<Option<Credentials>>,
    fetch: tokio::sync::Mutex<()>,
    background: AtomicBool,
}

/// The instance RAM role's STS credentials, cached and refreshed before they expire.
///
/// Calls made while a refresh runs keep using the current credentials (they are still valid);
/// only when none are valid does a call wait, and then one fetch serves every waiter.
#[derive(Clone, Debug)]
pub struct RamRoleCredentials {
    inner: Arc<Inner>,
}

fn cred_err(detail: impl Into<String>, source: Option<Error>) -> Error {
    Error::Credentials {
        provider: "ram-role".to_owned(),
        detail: detail.into(),
        source: source.map(|e| Box::new(e) as _),
    }
}

impl Inner {
    fn current(&self) -> Option<Credentials> {
        self.cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn store(&self, c: Option<Credentials>) {
        *self
            .cached
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = c;
    }

    async fn fetch(&self) -> Result<Credentials> {
        let base = self.cfg.path.as_str();
        let role = match &self.cfg.role_name {
            Some(r) => r.clone(),
            None => self
                .imds
                .get_optional(base)
                .await
                .map_err(|e| cred_err("listing the instance's RAM role", Some(e)))?
                .and_then(|s| {
                    s.lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty())
                        .map(str::to_owned)
                })
                .ok_or_else(|| cred_err("no RAM role is attached to the instance", None))?,
        };
        let body = self
            .imds
            .get(&format!("{base}{role}"))
            .await
            .map_err(|e| cred_err(format!("reading role {role}"), Some(e)))?;
        let doc: RoleDocument = serde_json::from_str(&body).map_err(|e| {
            cred_err(
                format!("role {role}: malformed credentials document: {e}"),
                None,
            )
        })?;
        if doc.code.as_deref() != Some("Success") {
            return Err(cred_err(
                format!("role {role}: Code is {:?}, not \"Success\"", doc.code),
                None,
            ));
        }
        let (Some(id), Some(secret), Some(token)) =
            (doc.access_key_id, doc.access_key_secret, doc.security_token)
        else {
            return Err(cred_err(
                format!("role {role}: incomplete credentials"),
                None,
            ));
        };
        let expiration = doc
            .expiration
            .as_deref()
            .map(|e| {
                parse_utc(e)
                    .ok_or_else(|| cred_err(format!("role {role}: bad Expiration {e:?}"), None))
            })
            .transpose()?;
        tracing::debug!(role, access_key_id = %id, "fetched RAM role credentials");
        Ok(Credentials::sts(id, secret, Secret::new(token), expiration))
    }

    async fn refresh(&self) -> Result<Credentials> {
        let _one_at_a_time = self.fetch.lock().await;
        if let Some(c) = self.current()
            && !c.expires_within(self.cfg.refresh_before)
        {
            return Ok(c); // another caller refreshed while we waited
        }
        let fresh = self.fetch().await?;
        self.store(Some(fresh.clone()));
        Ok(fresh)
    }
}

impl RamRoleCredentials {
    /// Credentials of the role `cfg` names (or the attached one), read through `imds`.
    #[must_use]
    pub fn new(imds: ImdsClient, cfg: RamRoleConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                imds,
                cfg,
                cached: RwLock::new(None),
                fetch: tokio::sync::Mutex::new(()),
                background: AtomicBool::new(false),
            }),
        }
    }
}

#[async_trait]
impl CredentialsProvider for RamRoleCredentials {
    fn name(&self) -> &str {
        "ram-role"
    }

    async fn credentials(&self) -> Result<Credentials> {
        let inner = &self.inner;
        if let Some(c) = inner.current()
            && !c.expires_within(inner.cfg.min_remaining)
        {
            if c.expires_within(inner.cfg.refresh_before)
                && !inner.background.swap(true, Ordering::AcqRel)
            {
                let bg = Arc::clone(inner);
                tokio::spawn(async move {
                    if let Err(e) = bg.refresh().await {
                        tracing::warn!(error = %e, "background refresh of RAM role credentials failed");
                    }
                    bg.background.store(false, Ordering::Release);
                });
            }
            return Ok(c);
        }
        inner.refresh().await
    }

    fn invalidate(&self) -> bool {
        self.inner.store(None);
        true
    }
}
