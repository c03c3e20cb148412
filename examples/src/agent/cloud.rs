//! Building the cloud provider and the instance facts from [`CloudConfig`]: the one place a new
//! provider (e.g. AWS EC2) is added, as one match arm.

use std::sync::Arc;

use async_trait::async_trait;
use cnikit_cloud_api::{
    CloudProvider,
    credentials::{
        Credentials, CredentialsProvider, EnvCredentials, RamRoleConfig, RamRoleCredentials,
        StaticCredentials,
    },
    ec2::Ec2ProviderConfig,
    ecs::{EcsClient, EcsConfig, Endpoint},
    metadata::{Ec2Metadata, ImdsClient, ImdsConfig, InstanceMetadata, MetadataInterface},
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
/// unreachable metadata service. On AWS, call [`apply_provider_rules`] on the pool's
/// configuration too.
pub async fn build(config: &CloudConfig) -> Result<Cloud, CloudSetupError> {
    match config {
        CloudConfig::Simulator(sim) => simulator(sim),
        CloudConfig::Alibaba(ali) => alibaba(ali).await,
        CloudConfig::Aws(ec2) => aws(ec2).await,
    }
}

/// The pool rules a provider imposes whatever the configuration says: on AWS (as the AWS VPC
/// CNI does) an ENI's primary address is never a pod's, and a subnet's gateway is its first
/// address.
pub fn apply_provider_rules(config: &CloudConfig, pool: &mut cnikit_eni_pool::PoolConfig) {
    if let CloudConfig::Aws(_) = config {
        if pool.hand_out_eni_primary_ip {
            tracing::info!("AWS: an ENI's primary address is never handed to a pod");
        }
        pool.hand_out_eni_primary_ip = false;
        pool.gateway = cnikit_eni_pool::GatewayRule::First;
    }
}

async fn aws(config: &Ec2ProviderConfig) -> Result<Cloud, CloudSetupError> {
    let err = |message: String| CloudSetupError {
        provider: "aws",
        message,
    };
    let ec2 = config.connect().await.map_err(|e| err(e.to_string()))?;
    // What the configuration names wins; the rest (the subnet when `pool.vswitches` is empty,
    // the VPC, the MACs) comes from IMDSv2, asked only when needed.
    let imds = match ec2.metadata {
        Some(m) => m,
        None => {
            let mut imds = ImdsConfig::aws();
            if let Some(url) = &config.imds_endpoint {
                imds.base_url.clone_from(url);
            }
            Arc::new(Ec2Metadata::new(imds).map_err(|e| err(e.to_string()))?)
        }
    };
    Ok(Cloud {
        provider: Arc::new(ec2.client),
        metadata: Arc::new(Ec2Node {
            instance_id: ec2.instance_id,
            instance_type: ec2.instance_type,
            region: ec2.region,
            imds,
        }),
        simulator: None,
    })
}

/// An EC2 node's facts: the identity the configuration (or one earlier metadata read) gave,
/// everything else from `IMDSv2`.
#[derive(Debug)]
struct Ec2Node {
    instance_id: String,
    instance_type: String,
    region: String,
    imds: Arc<Ec2Metadata>,
}

#[async_trait]
impl InstanceMetadata for Ec2Node {
    async fn instance_id(&self) -> cnikit_cloud_api::Result<String> {
        Ok(self.instance_id.clone())
    }
    async fn instance_type(&self) -> cnikit_cloud_api::Result<String> {
        Ok(self.instance_type.clone())
    }
    async fn region_id(&self) -> cnikit_cloud_api::Result<String> {
        Ok(self.region.clone())
    }
    async fn zone_id(&self) -> cnikit_cloud_api::Result<String> {
        self.imds.zone_id().await
    }
    async fn vpc_id(&self) -> cnikit_cloud_api::Result<String> {
        self.imds.vpc_id().await
    }
    async fn subnet_id(&self) -> cnikit_cloud_api::Result<String> {
        self.imds.subnet_id().await
    }
    async fn primary_mac(&self) -> cnikit_cloud_api::Result<String> {
        self.imds.primary_mac().await
    }
    async fn macs(&self) -> cnikit_cloud_api::Result<Vec<String>> {
        self.imds.macs().await
    }
    async fn interface(&self, mac: &str) -> cnikit_cloud_api::Result<MetadataInterface> {
        self.imds.interface(mac).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentConfig;

    /// The configured identity is answered without the metadata service; what is not
    /// configured is asked of it (unreachable here, so the error names it).
    #[tokio::test]
    async fn aws_identity_from_the_configuration_first() {
        let config = AgentConfig::from_json(
            r#"{"cloud":{"provider":"aws","endpoint":"http://127.0.0.1:9/",
                "region":"eu-west-1","instance_id":"i-0abc","instance_type":"m5.large",
                "imds_endpoint":"http://127.0.0.1:9/",
                "credentials":{"source":"static","access_key_id":"a","secret_access_key":"b"}},
                "pool":{"security_groups":["sg-1"]}}"#,
        )
        .unwrap();
        let cloud = build(&config.cloud).await.unwrap();
        assert!(cloud.simulator.is_none());
        assert_eq!(cloud.metadata.instance_id().await.unwrap(), "i-0abc");
        assert_eq!(cloud.metadata.instance_type().await.unwrap(), "m5.large");
        assert_eq!(cloud.metadata.region_id().await.unwrap(), "eu-west-1");
        let err = cloud.metadata.subnet_id().await.unwrap_err().to_string();
        assert!(
            err.contains("127.0.0.1:9") || err.contains("metadata"),
            "{err}"
        );

        let mut pool = config.pool.clone();
        assert!(pool.hand_out_eni_primary_ip);
        apply_provider_rules(&config.cloud, &mut pool);
        assert!(!pool.hand_out_eni_primary_ip);
        assert_eq!(pool.gateway, cnikit_eni_pool::GatewayRule::First);
        let mut sim_pool = config.pool;
        apply_provider_rules(&CloudConfig::default(), &mut sim_pool);
        assert!(sim_pool.hand_out_eni_primary_ip);
    }
}
