//! Credentials: static keys, environment variables, STS tokens, and the instance's RAM role
//! from the metadata service (refreshed before it expires, without blocking calls in flight).
//!
//! Secrets never appear in `Debug`, `Display` or logs: [`Secret`] prints `***`.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;

use crate::error::{Error, Result};

mod ram_role;

pub use ram_role::{RamRoleConfig, RamRoleCredentials};

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    #[must_use]
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself (for signing).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// An access key, with an STS security token when temporary.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// The access key id (not secret; `STS.…` for temporary keys).
    pub access_key_id: String,
    /// The access key secret.
    pub access_key_secret: Secret,
    /// The STS security token of temporary credentials.
    pub security_token: Option<Secret>,
    /// When temporary credentials expire.
    pub expiration: Option<SystemTime>,
}

impl Credentials {
    /// Long-lived credentials.
    #[must_use]
    pub fn new(access_key_id: impl Into<String>, access_key_secret: impl Into<Secret>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            access_key_secret: access_key_secret.into(),
            security_token: None,
            expiration: None,
        }
    }

    /// Temporary (STS) credentials.
    #[must_use]
    pub fn sts(
        access_key_id: impl Into<String>,
        access_key_secret: impl Into<Secret>,
        security_token: impl Into<Secret>,
        expiration: Option<SystemTime>,
    ) -> Self {
        Self {
            security_token: Some(security_token.into()),
            expiration,
            ..Self::new(access_key_id, access_key_secret)
        }
    }

    /// Whether they expire within `margin` from now (never for long-lived keys).
    #[must_use]
    pub fn expires_within(&self, margin: Duration) -> bool {
        self.expiration.is_some_and(|e| {
            e.duration_since(SystemTime::now())
                .map_or(true, |left| left <= margin)
        })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &self.access_key_secret)
            .field("security_token", &self.security_token)
            .field(
                "expiration",
                &self.expiration.map(crate::timefmt::format_utc),
            )
            .finish()
    }
}

/// Where credentials come from.
#[async_trait]
pub trait CredentialsProvider: Send + Sync + fmt::Debug {
    /// A short name for errors and logs (`static`, `environment`, `ram-role`).
    fn name(&self) -> &str;

    /// Current credentials. Called before every request; must be cheap when cached.
    async fn credentials(&self) -> Result<Credentials>;

    /// The cloud rejected these credentials (expired or revoked token): drop any cache so the
    /// next [`CredentialsProvider::credentials`] fetches fresh ones. Returns whether fresh ones
    /// may differ (so retrying is worthwhile).
    fn invalidate(&self) -> bool {
        false
    }
}

/// Fixed credentials (long-lived keys, or an STS token you manage yourself).
#[derive(Clone, Debug)]
pub struct StaticCredentials(Credentials);

impl StaticCredentials {
    /// Serves `credentials` forever.
    #[must_use]
    pub fn new(credentials: Credentials) -> Self {
        Self(credentials)
    }
}

#[async_trait]
impl CredentialsProvider for StaticCredentials {
    fn name(&self) -> &str {
        "static"
    }

    async fn credentials(&self) -> Result<Credentials> {
        Ok(self.0.clone())
    }
}

/// The environment variable holding the access key id.
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// The environment variable holding the access key secret.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// The environment variable holding an STS security token.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";

/// AWS: the access key id variable.
pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// AWS: the secret access key variable.
pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// AWS: the session token variable (temporary credentials).
pub const AWS_SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// Credentials from `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET` and
/// (optional) `ALIBABA_CLOUD_SECURITY_TOKEN`, read once at construction.
#[derive(Clone, Debug)]
pub struct EnvCredentials(Credentials);

impl EnvCredentials {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`Error::Credentials`] when the id or the secret is missing or empty.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `lookup` (for tests and custom sources).
    ///
    /// # Errors
    /// [`Error::Credentials`] when the id or the secret is missing or empty.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::from_names(
            lookup,
            [ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN],
        )
    }

    /// Reads AWS's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optional)
    /// `AWS_SESSION_TOKEN` from the process environment.
    ///
    /// # Errors
    /// [`Error::Credentials`] when the id or the secret is missing or empty.
    pub fn aws_from_env() -> Result<Self> {
        Self::aws_from_lookup(|k| std::env::var(k).ok())
    }

    /// AWS's variables through `lookup`.
    ///
    /// # Errors
    /// [`Error::Credentials`] when the id or the secret is missing or empty.
    pub fn aws_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::from_names(
            lookup,
            [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN],
        )
    }

    fn from_names(lookup: impl Fn(&str) -> Option<String>, names: [&str; 3]) -> Result<Self> {
        let [id_name, secret_name, token_name] = names;
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let missing = |k: &str| Error::Credentials {
            provider: "environment".to_owned(),
            detail: format!("{k} is not set"),
            source: None,
        };
        let id = get(id_name).ok_or_else(|| missing(id_name))?;
        let secret = get(secret_name).ok_or_else(|| missing(secret_name))?;
        let mut creds = Credentials::new(id.trim(), secret.trim());
        creds.security_token = get(token_name).map(|t| Secret::new(t.trim()));
        Ok(Self(creds))
    }
}

#[async_trait]
impl CredentialsProvider for EnvCredentials {
    fn name(&self) -> &str {
        "environment"
    }

    async fn credentials(&self) -> Result<Credentials> {
        Ok(self.0.clone())
    }
}

/// The default chain: environment variables if set, else the instance's RAM role.
///
/// # Errors
/// When neither source is usable (the RAM role is only checked at first use).
pub fn default_chain(
    metadata: &crate::metadata::ImdsConfig,
) -> Result<Arc<dyn CredentialsProvider>> {
    match EnvCredentials::from_env() {
        Ok(env) => Ok(Arc::new(env)),
        Err(_) => Ok(Arc::new(RamRoleCredentials::new(
            crate::metadata::ImdsClient::new(metadata.clone())?,
            RamRoleConfig::default(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials::sts(
            "STS.id",
            "very-secret-value",
            "token-value-xyz",
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        );
        for s in [
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{}", c.access_key_secret),
        ] {
            assert!(!s.contains("very-secret-value"), "{s}");
            assert!(!s.contains("token-value-xyz"), "{s}");
        }
        assert!(format!("{c:?}").contains("STS.id"));
        assert!(format!("{c:?}").contains("2023-11-14T22:13:20Z"));
        let p = StaticCredentials::new(c.clone());
        assert!(!format!("{p:?}").contains("very-secret-value"));
        assert_eq!(c.access_key_secret.expose(), "very-secret-value");
    }

    #[test]
    fn expiry_margin() {
        let soon = Credentials::sts(
            "a",
            "b",
            "c",
            Some(SystemTime::now() + Duration::from_secs(60)),
        );
        assert!(soon.expires_within(Duration::from_secs(120)));
        assert!(!soon.expires_within(Duration::from_secs(10)));
        let past = Credentials::sts(
            "a",
            "b",
            "c",
            Some(SystemTime::now() - Duration::from_secs(1)),
        );
        assert!(past.expires_within(Duration::ZERO));
        assert!(!Credentials::new("a", "b").expires_within(Duration::from_secs(1 << 30)));
    }

    #[tokio::test]
    async fn environment_variables() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = EnvCredentials::from_lookup(env(&[
            (ENV_ACCESS_KEY_ID, "LTAIid"),
            (ENV_ACCESS_KEY_SECRET, "sec"),
        ]))
        .unwrap()
        .credentials()
        .await
        .unwrap();
        assert_eq!(c.access_key_id, "LTAIid");
        assert!(c.security_token.is_none());
        let c = EnvCredentials::from_lookup(env(&[
            (ENV_ACCESS_KEY_ID, "STS.x"),
            (ENV_ACCESS_KEY_SECRET, "sec"),
            (ENV_SECURITY_TOKEN, "tok"),
        ]))
        .unwrap()
        .credentials()
        .await
        .unwrap();
        assert_eq!(c.security_token.unwrap().expose(), "tok");
        let err = EnvCredentials::from_lookup(env(&[
            (ENV_ACCESS_KEY_ID, "x"),
            (ENV_ACCESS_KEY_SECRET, " "),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains(ENV_ACCESS_KEY_SECRET), "{err}");
    }
}
