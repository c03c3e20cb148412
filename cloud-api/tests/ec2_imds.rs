//! EC2 instance metadata (`IMDSv2`) against a loopback server implementing the token flow as
//! EC2 does: `PUT /latest/api/token` with a TTL header, the token required on every read (401
//! without or with a stale one), EC2's paths and list formats, and the instance profile's
//! credentials. Then the provider configuration filling region, instance and credentials from
//! it.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use cnikit_cloud_api::{
    Error,
    credentials::{CredentialsProvider, RamRoleConfig, RamRoleCredentials},
    ec2::{Ec2CredentialsSource, Ec2ProviderConfig},
    metadata::{
        AWS_TOKEN_HEADER, AWS_TOKEN_TTL_HEADER, Ec2Metadata, ImdsClient, ImdsConfig,
        InstanceMetadata, TokenMode,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const MAC0: &str = "02:aa:bb:cc:dd:01";
const MAC1: &str = "02:aa:bb:cc:dd:02";

/// A minimal EC2 metadata service on 127.0.0.1.
struct Imds {
    addr: SocketAddr,
    token: Arc<Mutex<String>>,
    token_requests: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tree() -> BTreeMap<String, String> {
    let mut t = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        t.insert(format!("/latest/meta-data/{k}"), v.to_owned());
    };
    put("instance-id", "i-0123456789abcdef0");
    put("instance-type", "m5.large");
    put("placement/region", "us-east-1");
    put("placement/availability-zone", "us-east-1a");
    put("mac", MAC0);
    put("network/interfaces/macs/", &format!("{MAC0}/\n{MAC1}/"));
    for (mac, eni, ips, v6) in [
        (MAC0, "eni-0000000000000000a", "198.18.1.10", None),
        (
            MAC1,
            "eni-0000000000000000b",
            "198.18.1.20\n198.18.1.21\n198.18.1.22",
            Some("2001:db8:0:1::20\n2001:db8:0:1::21"),
        ),
    ] {
        let p = |leaf: &str| format!("network/interfaces/macs/{mac}/{leaf}");
        put(&p("interface-id"), eni);
        put(&p("local-ipv4s"), ips);
        put(&p("subnet-id"), "subnet-0aaaaaaaaaaaaaaaa");
        put(&p("subnet-ipv4-cidr-block"), "198.18.1.0/24");
        put(&p("vpc-id"), "vpc-0bbbbbbbbbbbbbbbb");
        put(&p("vpc-ipv4-cidr-block"), "198.18.0.0/16");
        if let Some(v6) = v6 {
            put(&p("ipv6s"), v6);
            put(&p("subnet-ipv6-cidr-blocks"), "2001:db8:0:1::/64");
        }
    }
    put("iam/security-credentials/", "cnikit-node-role");
    put(
        "iam/security-credentials/cnikit-node-role",
        r#"{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC",
            "AccessKeyId":"ASIAIMDSEXAMPLE","SecretAccessKey":"imds-secret",
            "Token":"imds-session-token","Expiration":"2099-01-01T00:00:00Z"}"#,
    );
    t
}

fn reply(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

impl Imds {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = Arc::new(Mutex::new("token-1".to_owned()));
        let token_requests = Arc::new(AtomicU32::new(0));
        let (t, n) = (token.clone(), token_requests.clone());
        let paths = tree();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (t, n, paths) = (t.clone(), n.clone(), paths.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = head.lines();
                    let mut first = lines.next().unwrap_or_default().split(' ');
                    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                    let header = |name: &str| {
                        head.lines().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim()
                                .eq_ignore_ascii_case(name)
                                .then(|| v.trim().to_owned())
                        })
                    };
                    let out = if method == "PUT" && path == "/latest/api/token" {
                        match header(AWS_TOKEN_TTL_HEADER).and_then(|v| v.parse::<u32>().ok()) {
                            Some(1..=21_600) => {
                                n.fetch_add(1, Ordering::SeqCst);
                                reply("200 OK", &t.lock().unwrap())
                            }
                            _ => reply("400 Bad Request", "missing or invalid TTL"),
                        }
                    } else if method != "GET" {
                        reply("405 Method Not Allowed", "")
                    } else if header(AWS_TOKEN_HEADER).as_deref()
                        != Some(t.lock().unwrap().as_str())
                    {
                        reply("401 Unauthorized", "")
                    } else {
                        match paths.get(path) {
                            Some(v) => reply("200 OK", v),
                            None => reply("404 Not Found", ""),
                        }
                    };
                    s.write_all(out.as_bytes()).await.ok();
                    s.shutdown().await.ok();
                });
            }
        });
        Self {
            addr,
            token,
            token_requests,
            task,
        }
    }

    fn config(&self) -> ImdsConfig {
        let mut c = ImdsConfig::aws();
        c.base_url = format!("http://{}", self.addr);
        c
    }
}

#[tokio::test]
async fn ec2_metadata_reads_through_imdsv2_tokens() {
    let imds = Imds::start().await;
    let md = Ec2Metadata::new(imds.config()).unwrap();
    let me = md.identity().await.unwrap();
    assert_eq!(me.instance_id, "i-0123456789abcdef0");
    assert_eq!(me.instance_type, "m5.large");
    assert_eq!(me.region_id, "us-east-1");
    assert_eq!(me.zone_id, "us-east-1a");
    assert_eq!(me.vpc_id, "vpc-0bbbbbbbbbbbbbbbb");
    assert_eq!(me.subnet_id, "subnet-0aaaaaaaaaaaaaaaa");
    assert_eq!(me.primary_mac, MAC0);
    let ifs = md.interfaces().await.unwrap();
    assert_eq!(ifs.len(), 2);
    assert_eq!(ifs[0].eni_id, "eni-0000000000000000a");
    assert!(ifs[0].ipv6s.is_empty());
    let second = &ifs[1];
    assert_eq!(second.primary_ipv4.to_string(), "198.18.1.20");
    assert_eq!(second.private_ipv4s.len(), 3);
    assert_eq!(second.gateway.unwrap().to_string(), "198.18.1.1");
    assert_eq!(second.netmask.unwrap().to_string(), "255.255.255.0");
    assert_eq!(second.ipv6s.len(), 2);
    assert_eq!(
        second.subnet_ipv6_cidr.unwrap().to_string(),
        "2001:db8:0:1::/64"
    );
    // One token served every read.
    assert_eq!(imds.token_requests.load(Ordering::SeqCst), 1);
    // The service rotates its token: the next read gets 401, fetches a new one, goes on.
    *imds.token.lock().unwrap() = "token-2".to_owned();
    assert_eq!(md.instance_id().await.unwrap(), "i-0123456789abcdef0");
    assert_eq!(imds.token_requests.load(Ordering::SeqCst), 2);
    // A path EC2 does not serve is a typed error.
    let e = md.interface("02:00:00:00:00:99").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Metadata {
                http_status: Some(404),
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn reads_without_a_token_are_refused() {
    let imds = Imds::start().await;
    let mut cfg = imds.config();
    cfg.token_mode = TokenMode::Disabled;
    let e = Ec2Metadata::new(cfg)
        .unwrap()
        .instance_id()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Metadata {
                http_status: Some(401),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(imds.token_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn instance_profile_credentials_and_provider_config_from_imds() {
    let imds = Imds::start().await;
    let creds = RamRoleCredentials::new(
        ImdsClient::new(imds.config()).unwrap(),
        RamRoleConfig::aws_instance_profile(),
    );
    let c = creds.credentials().await.unwrap();
    assert_eq!(c.access_key_id, "ASIAIMDSEXAMPLE");
    assert_eq!(c.access_key_secret.expose(), "imds-secret");
    assert_eq!(c.security_token.unwrap().expose(), "imds-session-token");
    assert!(!format!("{creds:?}").contains("imds-secret"));
    // Nothing but the metadata endpoint configured: the rest comes from IMDS.
    let cfg: Ec2ProviderConfig = serde_json::from_str(&format!(
        r#"{{"imds_endpoint": "http://{}", "credentials": {{"source": "instance_profile"}}}}"#,
        imds.addr
    ))
    .unwrap();
    assert_eq!(
        cfg.credentials,
        Ec2CredentialsSource::InstanceProfile { role: None }
    );
    let p = cfg.connect().await.unwrap();
    assert_eq!(p.region, "us-east-1");
    assert_eq!(p.instance_id, "i-0123456789abcdef0");
    assert_eq!(p.instance_type, "m5.large");
    assert!(p.metadata.is_some());
    assert_eq!(
        p.client.config().endpoint_url(),
        "https://ec2.us-east-1.amazonaws.com/"
    );
}
