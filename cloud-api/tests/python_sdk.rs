//! Differential tests against the official Alibaba Cloud Python SDK (`aliyun-python-sdk-core`,
//! installed by `scripts/setup.sh` from `scripts/pip-requirements.txt`):
//! - our signer and the SDK's sign the same generated inputs byte for byte;
//! - the SDK, unchanged, works against `ecs-sim`, and tampered requests are rejected.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use cnikit_cloud_api::{
    credentials::CredentialsProvider,
    ecs::signer,
    metadata::{ImdsClient, ImdsConfig},
    sim::{AccessKey, DEFAULT_INSTANCE, HttpSim, HttpSimConfig, SimCloud, SimConfig},
};
use cnikit_test_support::require;
use serde_json::{Value, json};

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// `Ok` when python3 can import the SDK.
fn sdk_available() -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-c", "import aliyunsdkcore"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "aliyun-python-sdk-core is not installed (run scripts/setup.sh): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn run_python(name: &str, args: &[&str], stdin: &str) -> Value {
    let mut child = Command::new("python3")
        .arg(script(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// xorshift64*: the test's own reproducible generator.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn string(&mut self, alphabet: &[&str], max_len: usize) -> String {
        (0..self.below(max_len + 1))
            .map(|_| *self.pick(alphabet))
            .collect()
    }
}

/// Characters that stress encoding: spaces, `* ~ ! ( ) '`, `+ / =`, `% & " :`, controls,
/// non-ASCII of 2, 3 and 4 UTF-8 bytes.
const VALUE_CHARS: &[&str] = &[
    "a", "Z", "0", "9", "-", "_", ".", "~", " ", "*", "!", "(", ")", "'", "+", "/", "=", "%", "&",
    "\"", ":", "?", "#", "@", ",", ";", "[", "]", "\n", "\t", "é", "ß", "中", "文", "😀", "ñ",
    "\u{7f}",
];

/// Names that sort differently by bytes than by intuition (case, `.`, digits, `_`, `-`, `~`).
const NAMES: &[&str] = &[
    "A",
    "a",
    "B",
    "b",
    "Z",
    "z",
    "A.1",
    "A.10",
    "A.2",
    "A1",
    "A_1",
    "A-1",
    "A~",
    "AB",
    "Ab",
    "aB",
    "Tag.1.Key",
    "Tag.1.Value",
    "Tag.10.Key",
    "Tag.2.Key",
    "NetworkInterfaceId.1",
    "NetworkInterfaceId.2",
    "NextToken",
    "SignatureNonce",
    "SignatureType",
    "SignatureVersion",
    "SecurityToken",
    "Timestamp",
    "_x",
    "~y",
    "x y",
    "x*y",
    "名字",
];

const SECRET_CHARS: &[&str] = &["a", "B", "3", "/", "+", "=", "-", "_", "~", "&", " ", "é"];

#[test]
fn signatures_match_the_official_python_sdk() {
    require!(
        "signatures_match_the_official_python_sdk",
        "official Python SDK (aliyun-python-sdk-core)",
        sdk_available()
    );
    let seed = std::env::var("CNIKIT_SIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0001_u64);
    let mut g = Gen(seed | 1);
    let mut compose = Vec::new();
    let mut ours = Vec::new();
    for i in 0..600 {
        let mut params = BTreeMap::new();
        for _ in 0..1 + g.below(12) {
            let name = if g.below(5) == 0 {
                g.string(VALUE_CHARS, 8).replace(['\n', '\t', '\u{7f}'], "")
            } else {
                (*g.pick(NAMES)).to_owned()
            };
            if name.is_empty() {
                continue;
            }
            params.insert(name, g.string(VALUE_CHARS, 24));
        }
        if i % 3 == 0 {
            // STS tokens carry `+ / =`.
            params.insert(
                "SecurityToken".into(),
                format!("CAIS+{}/x=={i}", g.string(SECRET_CHARS, 40)),
            );
        }
        let method = if g.below(2) == 0 { "GET" } else { "POST" };
        let secret = g.string(SECRET_CHARS, 30);
        let sts = signer::string_to_sign(method, params.iter());
        ours.push((sts.clone(), signer::sign(&sts, &secret)));
        compose.push(json!({"method": method, "secret": secret, "params": params}));
    }
    // The full SDK path: common parameters added by the SDK (empty SignatureType included),
    // business parameters split between query and form body.
    let mut full = Vec::new();
    for i in 0..60 {
        let mut query = BTreeMap::new();
        let mut body = BTreeMap::new();
        query.insert("Action".to_owned(), "AssignPrivateIpAddresses".to_owned());
        query.insert("Version".to_owned(), "2014-05-26".to_owned());
        query.insert("RegionId".to_owned(), "cn-hangzhou".to_owned());
        for _ in 0..g.below(5) {
            let target = if g.below(2) == 0 {
                &mut query
            } else {
                &mut body
            };
            target.insert(
                format!("P{}.{}", g.below(20), g.below(3)),
                g.string(VALUE_CHARS, 16),
            );
        }
        body.retain(|k, _| !query.contains_key(k));
        full.push(json!({
            "method": if i % 2 == 0 { "POST" } else { "GET" },
            "ak": format!("LTAI{i}"),
            "secret": g.string(SECRET_CHARS, 30),
            "query": query,
            "body": body,
            "timestamp": format!("2024-0{}-1{}T0{}:3{}:5{}Z", 1 + i % 9, i % 10, i % 10, i % 6, i % 10),
            "nonce": format!("{:032x}", g.next()),
        }));
    }
    let input = json!({"compose": compose, "full": full});
    let out = run_python("sdk_sign.py", &[], &input.to_string());

    let theirs = out["compose"].as_array().unwrap();
    assert_eq!(theirs.len(), ours.len());
    for (i, (t, (sts, sig))) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(
            t["string_to_sign"].as_str().unwrap(),
            sts,
            "case {i}: {}",
            compose[i]
        );
        assert_eq!(t["signature"].as_str().unwrap(), sig, "case {i}");
    }

    for (case, t) in full.iter().zip(out["full"].as_array().unwrap()) {
        // Recompute from what the SDK put on the wire plus the body, as the server does.
        let url = t["url"].as_str().unwrap();
        let mut pairs = signer::parse_form(url.strip_prefix("/?").unwrap()).unwrap();
        let their_sig = pairs
            .iter()
            .find(|(k, _)| k == "Signature")
            .unwrap()
            .1
            .clone();
        for (k, v) in case["body"].as_object().unwrap() {
            pairs.push((k.clone(), v.as_str().unwrap().to_owned()));
        }
        assert!(
            pairs
                .iter()
                .any(|(k, v)| k == "SignatureType" && v.is_empty())
        );
        let sts = signer::string_to_sign(
            case["method"].as_str().unwrap(),
            pairs.iter().map(|(k, v)| (k, v)),
        );
        assert_eq!(sts, t["string_to_sign"].as_str().unwrap(), "{case}");
        assert_eq!(
            signer::sign(&sts, case["secret"].as_str().unwrap()),
            their_sig,
            "{case}"
        );
    }
}

fn code(v: &Value) -> &str {
    v["body"]["Code"].as_str().unwrap_or_default()
}

#[test]
fn official_python_sdk_works_against_ecs_sim() {
    require!(
        "official_python_sdk_works_against_ecs_sim",
        "official Python SDK (aliyun-python-sdk-core)",
        sdk_available()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (key, secret) = ("LTAI5tPythonSdk", "py/secret+=");
    let cloud = SimCloud::new(SimConfig::instant()).unwrap();
    let sim = rt
        .block_on(HttpSim::start(
            cloud.clone(),
            HttpSimConfig::new(AccessKey::new(key, secret)),
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    // STS credentials from the simulator's metadata service, for the SDK's STS path.
    let sts = rt
        .block_on(async {
            let imds = ImdsClient::new(ImdsConfig::with_base_url(sim.metadata_url()))?;
            cnikit_cloud_api::credentials::RamRoleCredentials::new(imds, Default::default())
                .credentials()
                .await
        })
        .unwrap();
    let host = sim.addr().to_string();
    let out = run_python(
        "sdk_client.py",
        &[
            &host,
            key,
            secret,
            &sts.access_key_id,
            sts.access_key_secret.expose(),
            sts.security_token.as_ref().unwrap().expose(),
        ],
        "",
    );

    let ok = |k: &str| -> &Value {
        assert!(out[k]["ok"].is_object(), "{k}: {}", out[k]);
        &out[k]["ok"]
    };
    assert_eq!(
        ok("types")["InstanceTypes"]["InstanceType"][0]["EniQuantity"],
        json!(3)
    );
    assert!(
        ok("vswitches")["VSwitches"]["VSwitch"][0]["AvailableIpAddressCount"]
            .as_u64()
            .unwrap()
            > 200
    );
    let eni = ok("create")["NetworkInterfaceId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ok("create_again")["NetworkInterfaceId"].as_str(),
        Some(eni.as_str()),
        "ClientToken"
    );
    assert!(ok("attach")["RequestId"].is_string());
    assert_eq!(
        ok("assign")["AssignedPrivateIpAddressesSet"]["PrivateIpSet"]["PrivateIpAddress"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    ok("unassign");
    let described = &ok("describe")["NetworkInterfaceSets"]["NetworkInterfaceSet"][0];
    assert_eq!(described["NetworkInterfaceId"].as_str(), Some(eni.as_str()));
    assert_eq!(described["InstanceId"].as_str(), Some(DEFAULT_INSTANCE));
    assert_eq!(
        described["Tags"]["Tag"][0]["TagValue"],
        json!("python sdk * ~ ( ) '")
    );
    assert_eq!(out["not_found"]["error"], json!("InvalidEniId.NotFound"));
    assert_eq!(out["not_found"]["status"], json!(404));
    assert!(out["not_found"]["request_id"].is_string());
    // What the SDK did is in the simulator's state.
    let state = cloud.eni(&eni).unwrap();
    assert_eq!(state.secondary_ipv4.len(), 2 + 3 - 1);
    assert_eq!(state.description.as_deref(), Some("café + space"));
    assert_eq!(state.tags["made-by"], "python sdk * ~ ( ) '");

    // STS credentials (token with + / =) accepted; a wrong token refused.
    ok("sts_describe");
    assert_eq!(
        out["sts_wrong_token"]["error"],
        json!("InvalidSecurityToken.MismatchWithAccessKey")
    );

    // Raw signed requests: accepted once, then rejected as a replay; tampering and the rest
    // rejected with ECS's codes.
    assert_eq!(out["raw_ok"]["status"], json!(200), "{}", out["raw_ok"]);
    assert_eq!(code(&out["raw_replayed"]), "SignatureNonceUsed");
    assert_eq!(out["raw_tampered"]["status"], json!(400));
    assert_eq!(code(&out["raw_tampered"]), "SignatureDoesNotMatch");
    assert!(
        out["raw_tampered"]["body"]["Message"]
            .as_str()
            .unwrap()
            .contains("i-evil"),
        "the server's string to sign is quoted"
    );
    assert_eq!(code(&out["raw_unsigned"]), "IncompleteSignature");
    assert_eq!(code(&out["raw_no_timestamp"]), "MissingParameter");
    assert_eq!(code(&out["raw_wrong_secret"]), "SignatureDoesNotMatch");
    assert_eq!(code(&out["raw_unknown_key"]), "InvalidAccessKeyId.NotFound");
    for k in ["raw_tampered", "raw_unsigned", "raw_wrong_secret"] {
        assert!(out[k]["body"]["RequestId"].is_string(), "{k}");
    }
    rt.block_on(sim.stop());
}
