//! The `cnikit-agent` executable's entry point (also used by benchmarks that exec themselves).

use std::{process::ExitCode, sync::Arc};

use tokio::signal::unix::{SignalKind, signal};

use super::{Agent, AgentConfig, cloud::Cloud, metrics, server};

const USAGE: &str = "usage: cnikit-agent (--config FILE | --print-default-config | \
     --print-example-config (alibaba|aws) | --check-config FILE)";

/// The `cnikit-agent` binary with its arguments (without the program name).
#[must_use]
pub fn cli_main(args: &[String]) -> ExitCode {
    cli_main_with(args, |cloud| cloud)
}

/// As [`cli_main`], passing the configured cloud through `wrap` before the agent uses it: the
/// seam a custom agent swaps its cloud layer at (see `cnikit-agent-audited`).
#[must_use]
pub fn cli_main_with(args: &[String], wrap: fn(Cloud) -> Cloud) -> ExitCode {
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
        ["--print-example-config", cloud] => {
            let example = match *cloud {
                "alibaba" => AgentConfig::EXAMPLE_ALIBABA,
                "aws" => AgentConfig::EXAMPLE_AWS,
                other => {
                    eprintln!("no example for cloud {other:?} (alibaba, aws)\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            print!("{example}");
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
    match runtime.block_on(run(config, wrap)) {
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

async fn run(config: AgentConfig, wrap: fn(Cloud) -> Cloud) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let socket = config.socket.clone();
    let metrics_listen = config.metrics.as_ref().map(|m| m.listen);
    let cloud = wrap(super::cloud::build(&config.cloud).await?);
    let agent = Agent::start_with_cloud(config, cloud).await?;
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
