//! `cnikit`: the CNI plugin binary (network configuration `"type": "cnikit"`).
//!
//! Reads the network configuration on standard input and `CNI_*` from the environment, talks
//! to `cnikit-agent` over its unix socket, wires the pod's namespace, and prints the result (or
//! the specification's error JSON, exit status 1). See `cnikit_examples::plugin`.

use std::{
    io::{Read, Write},
    process::ExitCode,
};

use cnikit_examples::{
    cni::{CniError, Environment, ErrorCode, NetConf, Version},
    plugin,
};

/// The largest configuration read from standard input.
const MAX_STDIN: u64 = 4 << 20;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(MAX_STDIN).read_to_end(&mut stdin);
    // Answer errors in the version the configuration asked for, when it can be read.
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| Version::LATEST.to_string());
    let outcome = match read {
        Err(e) => Err(
            CniError::new(ErrorCode::IO_FAILURE, "cannot read standard input")
                .with_details(e.to_string()),
        ),
        Ok(_) => Environment::from_env().and_then(|env| {
            init_logs(&stdin);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    CniError::new(ErrorCode::INTERNAL, "cannot start the async runtime")
                        .with_details(e.to_string())
                })?;
            runtime.block_on(plugin::run(&env, &stdin))
        }),
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(Some(value)) => {
            writeln!(out, "{value}").ok();
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::warn!(code = e.code.0, msg = %e.msg, details = %e.details, "failed");
            writeln!(out, "{}", e.to_json(&version)).ok();
            ExitCode::FAILURE
        }
    }
}

/// Logs go to `logFile` when the configuration names one, else to standard error, filtered
/// by `logLevel` (default `warn`). A log that cannot be opened is not an error of the command.
fn init_logs(stdin: &[u8]) {
    let conf = NetConf::parse(stdin).ok();
    let level = conf
        .as_ref()
        .and_then(|c| c.log_level.clone())
        .unwrap_or_else(|| "warn".to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let file = conf.and_then(|c| c.log_file).and_then(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    });
    let installed = match file {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    installed.ok();
}
