//! `ecs_sign`: cost of the RPC signature v1 (HMAC-SHA1) on realistic requests, next to the
//! official Python SDK's signer on the same inputs (when it is installed).
//!
//! Prints `BENCH ecs_sign ...` with medians per request kind and the ratio to Python.

use std::{
    hint::black_box,
    process::Command,
    time::{Duration, Instant},
};

use cnikit_benches::{Summary, report, smoke_mode, us};
use cnikit_cloud_api::ecs::signer;
use criterion::{Criterion, criterion_group, criterion_main};

/// A `DescribeNetworkInterfaces` page request with an STS token (15 parameters).
fn describe_params() -> Vec<(String, String)> {
    let mut p: Vec<(String, String)> = [
        ("AccessKeyId", "STS.NUgYrLnoC37mZZCNnAbez2BSj"),
        ("Action", "DescribeNetworkInterfaces"),
        ("Format", "JSON"),
        ("InstanceId", "i-bp13znx0m0me8cquxxxx"),
        ("MaxResults", "100"),
        ("NextToken", "caeba0bbb2be03f84eb48b699f0a4883"),
        ("RegionId", "cn-hangzhou"),
        (
            "SecurityToken",
            "CAIS+token/with=special+chars/and/a/long/tail/ZmFrZXRva2VuZmFrZXRva2VuZmFrZXRva2Vu==",
        ),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "c0ffee00-0000-4000-8000-000000000001"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2024-01-02T03:04:05Z"),
        ("Version", "2014-05-26"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    p.push((
        "NetworkInterfaceId.1".into(),
        "eni-bp1aaaaaaaaaaaaaaaaa".into(),
    ));
    p.push((
        "NetworkInterfaceId.2".into(),
        "eni-bp1bbbbbbbbbbbbbbbbb".into(),
    ));
    p
}

/// A `CreateNetworkInterface` with 10 tags and a description (37 parameters).
fn create_params() -> Vec<(String, String)> {
    let mut p = describe_params();
    p.retain(|(k, _)| {
        !k.starts_with("NetworkInterfaceId") && k != "NextToken" && k != "MaxResults"
    });
    p.push(("VSwitchId".into(), "vsw-bp16usj2p27htro3xxxx".into()));
    p.push((
        "SecurityGroupIds.1".into(),
        "sg-bp18kz60mefsicfgxxxx".into(),
    ));
    p.push(("SecondaryPrivateIpAddressCount".into(), "9".into()));
    p.push((
        "ClientToken".into(),
        "0c593ea1-3bea-11e9-b96b-88e9fe637760".into(),
    ));
    p.push((
        "Description".into(),
        "interface created by cnikit for node n1 (pool)".into(),
    ));
    for i in 1..=10 {
        p.push((format!("Tag.{i}.Key"), format!("cnikit.io/key-{i}")));
        p.push((format!("Tag.{i}.Value"), format!("value {i} * ~ é")));
    }
    p
}

fn sign(params: &[(String, String)]) -> String {
    let sts = signer::string_to_sign("POST", params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    signer::sign(&sts, "my/secret+key=")
}

/// Microseconds per signature of the official Python SDK on the same parameters, or `None`.
fn python_us(params: &[(String, String)], rounds: u32) -> Option<f64> {
    let script = r#"
import json, sys, timeit
from aliyunsdkcore.auth.composer import rpc_signature_composer as c
compose = getattr(c, "__compose_string_to_sign"); get = getattr(c, "__get_signature")
params = dict(json.load(sys.stdin)); n = int(sys.argv[1])
t = timeit.timeit(lambda: get(compose("POST", params), "my/secret+key="), number=n)
print(t / n * 1e6)
"#;
    let json = serde_json_string(params);
    let mut child = Command::new("python3")
        .args(["-c", script, &rounds.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    use std::io::Write as _;
    child.stdin.take()?.write_all(json.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn serde_json_string(params: &[(String, String)]) -> String {
    let items: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("[{},{}]", quote(k), quote(v)))
        .collect();
    format!("[{}]", items.join(","))
}

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn samples(params: &[(String, String)], n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            black_box(sign(black_box(params)));
            t.elapsed()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let describe = describe_params();
    let create = create_params();
    let mut group = c.benchmark_group("ecs_sign");
    group.bench_function("describe_15_params", |b| {
        b.iter(|| black_box(sign(black_box(&describe))));
    });
    group.bench_function("create_37_params", |b| {
        b.iter(|| black_box(sign(black_box(&create))));
    });
    group.finish();

    let n = if smoke_mode() { 20 } else { 20_000 };
    let (Some(d), Some(cr)) = (
        Summary::of(&samples(&describe, n)),
        Summary::of(&samples(&create, n)),
    ) else {
        return;
    };
    let py_rounds = if smoke_mode() { 10 } else { 5_000 };
    let py_d = python_us(&describe, py_rounds);
    let py_c = python_us(&create, py_rounds);
    let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"));
    let ratio = |py: Option<f64>, ours: Duration| {
        py.map_or_else(
            || "n/a".to_owned(),
            |p| format!("{:.1}", p / (ours.as_secs_f64() * 1e6)),
        )
    };
    report(
        "ecs_sign",
        &[
            ("describe_p50_us", &us(d.p50)),
            ("describe_p99_us", &us(d.p99)),
            ("create_p50_us", &us(cr.p50)),
            ("create_p99_us", &us(cr.p99)),
            ("python_describe_us", &fmt(py_d)),
            ("python_create_us", &fmt(py_c)),
            ("python_over_rust_describe", &ratio(py_d, d.p50)),
            ("python_over_rust_create", &ratio(py_c, cr.p50)),
            ("samples", &n),
        ],
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
