//! `cnikit-dns`: a node-local DNS server with AutoPath, configured by a JSON file.
//!
//! ```sh
//! cargo run -p cnikit-dns-autopath --example cnikit-dns -- --print-example-config > dns.json
//! cargo run -p cnikit-dns-autopath --example cnikit-dns -- --config dns.json [--listen 127.0.0.1:5300]
//! ```
//!
//! Logs go to stderr (`RUST_LOG=debug` for more); SIGINT/SIGTERM stop it. Every 60 s (and on
//! exit) it logs its counters.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use cnikit_dns_autopath::config::NodeDnsConfig;

const USAGE: &str = "usage: cnikit-dns --config FILE [--listen ADDR:PORT] | --print-example-config";

fn parse_args() -> Result<Option<(String, Option<SocketAddr>)>, String> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut listen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--print-example-config" => {
                print!("{}", NodeDnsConfig::EXAMPLE);
                return Ok(None);
            }
            "--config" => config = Some(args.next().ok_or("--config needs a file")?),
            "--listen" => {
                let addr = args.next().ok_or("--listen needs an address")?;
                listen = Some(addr.parse().map_err(|e| format!("--listen {addr}: {e}"))?);
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let config = config.ok_or_else(|| USAGE.to_owned())?;
    Ok(Some((config, listen)))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (path, listen) = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("reading {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = match NodeDnsConfig::from_json(&text) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(addr) = listen {
        config = config.listen(addr);
    }
    let (server, _table) = match config.start().await {
        Ok(started) => started,
        Err(e) => {
            eprintln!("starting: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("cnikit-dns listening on {}", server.local_addr());
    let mut ticker = tokio::time::interval(Duration::from_secs(60));
    ticker.tick().await;
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => tracing::info!(stats = ?server.stats(), "counters"),
        }
    }
    tracing::info!(stats = ?server.stats(), "stopping");
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
