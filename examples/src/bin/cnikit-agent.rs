//! `cnikit-agent`: the node agent (see `cnikit_examples::agent`).
//!
//! ```text
//! cnikit-agent --print-default-config          # a working configuration (embedded simulator)
//! cnikit-agent --config /etc/cnikit/agent.json  # run
//! cnikit-agent --check-config FILE              # validate and exit
//! ```
//!
//! Logs with `tracing` on standard error (`RUST_LOG`, default `info`). Prints
//! `cnikit-agent ready on <socket>` once the socket accepts requests. Stops on SIGTERM or
//! SIGINT: requests in flight finish (within `shutdown_grace`), records stay on disk.

use std::{process::ExitCode, sync::Arc};

use cnikit_examples::agent::{Agent, AgentConfig, metrics, server};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str =
    "usage: cnikit-agent (--config FILE | --print-default-config | --check-config FILE)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config_path = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--print-default-config"] => {
            print!("{}", AgentConfig::DEFAULT);
            return ExitCode::SUCCESS;
        }
        ["--config", path] => (*path).to_owned(),
        ["--check-config", path] => {
            return match read_config(path) {
                Ok(_) => {
                    println!("{path}: ok");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            };
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match read_config(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cnikit-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cnikit-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn read_config(path: &str) -> Result<AgentConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    AgentConfig::from_json(&text).map_err(|e| format!("{path}: {e}"))
}

async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let socket = config.socket.clone();
    let metrics_listen = config.metrics.as_ref().map(|m| m.listen);
    let agent = Agent::start(config).await?;
    let listener = server::bind(&socket).await?;
    if let Some(addr) = metrics_listen {
        let listener = metrics::bind(addr).await?;
        let agent = Arc::clone(&agent);
        tokio::spawn(metrics::serve(listener, move || agent.prometheus()));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(server::serve(
        Arc::clone(&agent),
        listener,
        socket.clone(),
        stop_rx,
    ));
    {
        // Releases queued by plugins while the agent was unreachable.
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                agent.drain_released().await;
            }
        });
    }
    println!("cnikit-agent ready on {}", socket.display());
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    let _ = stop_tx.send(true);
    if let Err(e) = serving.await {
        tracing::warn!(error = %e, "the socket server ended badly");
    }
    agent.stop_dns().await;
    agent.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
