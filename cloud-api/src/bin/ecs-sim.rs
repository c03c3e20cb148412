//! `ecs-sim`: an ECS-compatible cloud simulator over HTTP.
//!
//! ```text
//! ecs-sim --listen 127.0.0.1:8080 --access-key-id ID --access-key-secret SECRET \
//!         [--config sim.json] [--seed N] [--attach-latency-ms N] [--detach-latency-ms N]
//!         [--api-latency-ms N] [--throttle ACTION=PER_SECOND[/BURST]]... [--fault JSON]...
//!         [--print-config]
//! ```
//!
//! Serves the ECS and VPC RPC APIs at `http://ADDR/` (signatures verified) and the instance
//! metadata service at `http://ADDR/latest/`. Prints `ecs-sim listening on http://ADDR/` once
//! ready; stops on SIGINT or SIGTERM. See the crate README for the configuration format and
//! defaults.

use std::{net::SocketAddr, process::ExitCode};

use cnikit_cloud_api::{
    Rate,
    ecs::Action,
    sim::{AccessKey, FaultRule, HttpSimConfig, SimCloud, SimConfig, serve},
};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: ecs-sim --listen ADDR --access-key-id ID --access-key-secret SECRET \
[--config FILE] [--seed N] [--api-latency-ms N] [--attach-latency-ms N] [--detach-latency-ms N] \
[--delete-latency-ms N] [--throttle ACTION=PER_SECOND[/BURST]]... [--fault JSON]... [--print-config]";

struct Args {
    listen: SocketAddr,
    key: AccessKey,
    config: SimConfig,
    print_config: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen: Option<SocketAddr> = None;
    let mut id = None;
    let mut secret = None;
    let mut config = SimConfig::default();
    let mut overrides: Vec<(String, String)> = Vec::new();
    let mut print_config = false;
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--access-key-id" => id = Some(value("--access-key-id")?),
            "--access-key-secret" => secret = Some(value("--access-key-secret")?),
            "--config" => {
                let path = value("--config")?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                config = SimConfig::from_json(&text).map_err(|e| format!("{path}: {e}"))?;
            }
            "--print-config" => print_config = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            f @ ("--seed"
            | "--api-latency-ms"
            | "--attach-latency-ms"
            | "--detach-latency-ms"
            | "--delete-latency-ms"
            | "--throttle"
            | "--fault") => {
                overrides.push((f.to_owned(), value(f)?));
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    // Flags override the file, whatever their order.
    for (flag, v) in overrides {
        let ms = |v: &str| {
            v.parse::<u64>()
                .map(std::time::Duration::from_millis)
                .map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--seed" => config.seed = v.parse().map_err(|e| format!("--seed {v}: {e}"))?,
            "--api-latency-ms" => config.latency.api = ms(&v)?,
            "--attach-latency-ms" => config.latency.attach = ms(&v)?,
            "--detach-latency-ms" => config.latency.detach = ms(&v)?,
            "--delete-latency-ms" => config.latency.delete = ms(&v)?,
            "--throttle" => {
                let (action, rate) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--throttle {v}: expected ACTION=PER_SECOND[/BURST]"))?;
                let action: Action = action.parse()?;
                let (per_second, burst) = rate.split_once('/').unwrap_or((rate, "1"));
                let per_second: f64 = per_second
                    .parse()
                    .map_err(|e| format!("--throttle {v}: {e}"))?;
                let burst: u32 = burst.parse().map_err(|e| format!("--throttle {v}: {e}"))?;
                config
                    .throttle
                    .per_action
                    .insert(action.as_str().to_owned(), Rate::new(per_second, burst));
            }
            "--fault" => {
                let rule: FaultRule =
                    serde_json::from_str(&v).map_err(|e| format!("--fault {v}: {e}"))?;
                config.faults.push(rule);
            }
            _ => unreachable!("only collected flags are here"),
        }
    }
    Ok(Args {
        listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
        key: AccessKey::new(
            id.ok_or_else(|| format!("--access-key-id is required\n{USAGE}"))?,
            secret.ok_or_else(|| format!("--access-key-secret is required\n{USAGE}"))?,
        ),
        config,
        print_config,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ECS_SIM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("ecs-sim: {msg}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        match serde_json::to_string_pretty(&args.config) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("ecs-sim: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let cloud = match SimCloud::new(args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ecs-sim: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ecs-sim: binding {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(args.listen, |a| a);
    println!("ecs-sim listening on http://{addr}/");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            () = term => {},
        }
        stop.cancel();
    });
    match serve(listener, cloud, HttpSimConfig::new(args.key), shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ecs-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
