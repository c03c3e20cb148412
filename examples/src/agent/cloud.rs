//! Building the cloud provider and the instance facts from [`CloudConfig`]: the one place a new
//! provider (e.g. AWS EC2) is added, as one match arm.

use std::sync::Arc;

use cnikit_cloud_api::{
    CloudProvider,
    credentials::{
        Credentials, CredentialsProvider, EnvCredentials, RamRoleConfig, RamRoleCredentials,
        StaticCredentials,
    },
    ecs::{EcsClient, EcsConfig, Endpoint},
    metadata::{ImdsClient, ImdsConfig, InstanceMetadata},
    sim::{SimCloud, SimConfig},
};

use super::config::{AlibabaConfig, CloudConfig, CredentialsConfig, SimulatorConfig};

/// A cloud, ready for the pool.
#[derive(Debug)]
pub struct Cloud {
    /// The provider the pool calls.
    pub provider: Arc<dyn CloudProvider>,
    /// The instance facts (id, type, vSwitch).
    pub metadata: Arc<dyn InstanceMetadata>,
    /// The embedded simulator, when the cloud is one (for its call counters).
    pub simulator: Option<SimCloud>,
}

/// The cloud could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cloud ({provider}): {message}")]
pub struct CloudSetupError {
    /// Which provider.
    pub provider: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Builds the cloud `config` describes.
///
/// # Errors
/// [`CloudSetupError`] for an inconsistent simulator region, missing credentials, or an
/// unreachable metadata service.
pub async fn build(config: &CloudConfig) -> Result<Cloud, CloudSetupError> {
    match config {
        CloudConfig::Simulator(sim) => simulator(sim),
        CloudConfig::Alibaba(ali) => alibaba(ali).await,
    }
}

fn simulator(config: &SimulatorConfig) -> Result<Cloud, CloudSetupError> {
    let err = |message: String| CloudSetupError {
        provider: "simulator",
        message,
    };
    let region: SimConfig = config.region.as_deref().cloned().unwrap_or_default();
    let instance = match &config.instance_id {
        Some(id) => id.clone(),
        None => region
            .instances
            .first()
            .map(|i| i.id.clone())
            .ok_or_else(|| err("the simulated region has no instance".into()))?,
    };
    let cloud = SimCloud::new(region).map_err(|e| err(e.to_string()))?;
    Ok(Cloud {
        provider: Arc::new(cloud.clone()),
        metadata: Arc::new(cloud.metadata(instance)),
        simulator: Some(cloud),
    })
}

async fn alibaba(config: &AlibabaConfig) -> Result<Cloud, CloudSetupError> {
    let err = |message: String| CloudSetupError {
        provider: "alibaba",
        message,
    };
    let imds_config = config
        .metadata_url
        .as_ref()
        .map_or_else(ImdsConfig::default, ImdsConfig::with_base_url);
    let imds = || ImdsClient::new(imds_config.clone()).map_err(|e| err(e.to_string()));
    let metadata = imds()?;
    let region = match &config.region {
        Some(r) => r.clone(),
        None => metadata
            .region_id()
            .await
            .map_err(|e| err(format!("reading the region from the metadata service: {e}")))?,
    };
    let credentials: Arc<dyn CredentialsProvider> = match &config.credentials {
        CredentialsConfig::Default => match EnvCredentials::from_env() {
            Ok(env) => Arc::new(env),
            Err(_) => Arc::new(RamRoleCredentials::new(imds()?, RamRoleConfig::default())),
        },
        CredentialsConfig::Env => {
            Arc::new(EnvCredentials::from_env().map_err(|e| err(e.to_string()))?)
        }
        CredentialsConfig::RamRole { role } => {
            let mut c = RamRoleConfig::default();
            c.role_name.clone_from(role);
            Arc::new(RamRoleCredentials::new(imds()?, c))
        }
        CredentialsConfig::Static {
            access_key_id,
            access_key_secret,
        } => Arc::new(StaticCredentials::new(Credentials::new(
            access_key_id.clone(),
            access_key_secret.clone(),
        ))),
    };
    let mut ecs = EcsConfig::new(region);
    if let Some(url) = &config.endpoint {
        ecs = ecs.with_endpoint(Endpoint::Custom {
            ecs: url.clone(),
            vpc: url.clone(),
        });
    }
    let client = EcsClient::new(ecs, credentials).map_err(|e| err(e.to_string()))?;
    Ok(Cloud {
        provider: Arc::new(client),
        metadata: Arc::new(metadata),
        simulator: None,
    })
}
