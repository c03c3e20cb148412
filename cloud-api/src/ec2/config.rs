//! Building an EC2 provider from a configuration file: endpoint, region, credentials (static,
//! environment, or the instance profile through `IMDSv2`) and the node's identity.

use std::sync::Arc;

use serde::Deserialize;

use super::{Ec2Client, Ec2Config};
use crate::{
    credentials::{
        Credentials, CredentialsProvider, EnvCredentials, RamRoleConfig, RamRoleCredentials,
        Secret, StaticCredentials,
    },
    error::{Error, Result},
    metadata::{Ec2Metadata, ImdsClient, ImdsConfig, InstanceMetadata},
    ratelimit::RateLimits,
};

/// Where the EC2 client's credentials come from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Ec2CredentialsSource {
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` when set, else the
    /// instance profile.
    #[default]
    Auto,
    /// Only the environment variables.
    Environment,
    /// The instance profile's role from the metadata service (`role` = `None` discovers it).
    InstanceProfile {
        /// The role name.
        #[serde(default)]
        role: Option<String>,
    },
    /// Fixed keys (tests, moto).
    Static {
        /// The access key id.
        access_key_id: String,
        /// The secret access key (never printed).
        secret_access_key: SecretString,
        /// A session token of temporary keys.
        #[serde(default)]
        session_token: Option<SecretString>,
    },
}

/// A secret read from a configuration file; prints `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct SecretString(Secret);

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self(Secret::new(s))
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The EC2 provider's configuration, e.g. the `aws` table of a CNI agent's configuration.
///
/// Every field is optional: what is missing comes from the instance metadata service
/// (`IMDSv2`). Against moto: `{"endpoint": "http://127.0.0.1:5055/", "region": "us-east-1",
/// "instance_id": "i-…", "instance_type": "m5.large", "credentials": {"source": "static",
/// "access_key_id": "testing", "secret_access_key": "testing"}}`.
///
/// ```
/// let cfg: cnikit_cloud_api::ec2::Ec2ProviderConfig = serde_json::from_str(r#"{
///     "endpoint": "http://127.0.0.1:5055/", "region": "us-east-1",
///     "credentials": {"source": "environment"}, "nodes_sharing_limits": 20
/// }"#).unwrap();
/// assert_eq!(cfg.region.as_deref(), Some("us-east-1"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Ec2ProviderConfig {
    /// The region; default: the metadata service's `placement/region`.
    pub region: Option<String>,
    /// The EC2 endpoint URL; default `https://ec2.<region>.amazonaws.com/`.
    pub endpoint: Option<String>,
    /// This node's instance id; default: the metadata service's.
    pub instance_id: Option<String>,
    /// This node's instance type; default: the metadata service's.
    pub instance_type: Option<String>,
    /// Credentials (default: environment, else the instance profile).
    pub credentials: Ec2CredentialsSource,
    /// The metadata service's base URL (default `http://169.254.169.254`).
    pub imds_endpoint: Option<String>,
    /// How many nodes share the account's EC2 rate limits: the client paces itself to its
    /// share of AWS's published buckets (default 1: the whole bucket).
    pub nodes_sharing_limits: Option<u32>,
}

/// What [`Ec2ProviderConfig::connect`] builds: the client and the node's identity.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Ec2Provider {
    /// The client (a [`crate::CloudProvider`]).
    pub client: Ec2Client,
    /// The region.
    pub region: String,
    /// This node's instance id.
    pub instance_id: String,
    /// This node's instance type.
    pub instance_type: String,
    /// The metadata reader, when the configuration needed it.
    pub metadata: Option<Arc<Ec2Metadata>>,
}

impl Ec2ProviderConfig {
    fn imds_config(&self) -> ImdsConfig {
        let mut c = ImdsConfig::aws();
        if let Some(url) = &self.imds_endpoint {
            c.base_url.clone_from(url);
        }
        c
    }

    fn needs_metadata(&self) -> bool {
        self.region.is_none() || self.instance_id.is_none() || self.instance_type.is_none()
    }

    /// The credentials provider the configuration names.
    ///
    /// # Errors
    /// [`Error::Credentials`] when the environment is asked for and incomplete.
    pub fn credentials_provider(&self) -> Result<Arc<dyn CredentialsProvider>> {
        let profile = |role: Option<&String>| -> Result<Arc<dyn CredentialsProvider>> {
            let mut cfg = RamRoleConfig::aws_instance_profile();
            cfg.role_name = role.cloned();
            Ok(Arc::new(RamRoleCredentials::new(
                ImdsClient::new(self.imds_config())?,
                cfg,
            )))
        };
        Ok(match &self.credentials {
            Ec2CredentialsSource::Auto => match EnvCredentials::aws_from_env() {
                Ok(env) => Arc::new(env),
                Err(_) => profile(None)?,
            },
            Ec2CredentialsSource::Environment => Arc::new(EnvCredentials::aws_from_env()?),
            Ec2CredentialsSource::InstanceProfile { role } => profile(role.as_ref())?,
            Ec2CredentialsSource::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let mut c = Credentials::new(access_key_id.clone(), secret_access_key.0.clone());
                c.security_token = session_token.as_ref().map(|t| t.0.clone());
                Arc::new(StaticCredentials::new(c))
            }
        })
    }

    /// Builds the client, reading what is not configured from the metadata service.
    ///
    /// # Errors
    /// [`Error::Metadata`] when the metadata service is needed and unreachable,
    /// [`Error::Credentials`] or [`Error::Config`] for unusable settings.
    pub async fn connect(&self) -> Result<Ec2Provider> {
        let metadata = if self.needs_metadata() {
            Some(Arc::new(Ec2Metadata::new(self.imds_config())?))
        } else {
            None
        };
        let imds = || {
            metadata
                .as_deref()
                .ok_or_else(|| Error::Config("metadata service not configured".to_owned()))
        };
        let region = match &self.region {
            Some(r) => r.clone(),
            None => imds()?.region_id().await?,
        };
        let instance_id = match &self.instance_id {
            Some(i) => i.clone(),
            None => imds()?.instance_id().await?,
        };
        let instance_type = match &self.instance_type {
            Some(t) => t.clone(),
            None => imds()?.instance_type().await?,
        };
        let mut cfg = Ec2Config::new(region.clone());
        cfg.endpoint.clone_from(&self.endpoint);
        if let Some(n) = self.nodes_sharing_limits {
            cfg.rate_limits = RateLimits::ec2_shared_by(n);
        }
        let client = Ec2Client::new(cfg, self.credentials_provider()?)?;
        Ok(Ec2Provider {
            client,
            region,
            instance_id,
            instance_type,
            metadata,
        })
    }
}
