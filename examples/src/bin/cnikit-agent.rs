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

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    cnikit_examples::agent::cli::cli_main(&args)
}
