//! `cnikit`: the CNI plugin binary (network configuration `"type": "cnikit"`).
//!
//! Reads the network configuration on standard input and `CNI_*` from the environment, talks
//! to `cnikit-agent` over its unix socket (which wires the pod's namespace, or hands the plugin
//! what to wire with `"wiring": "plugin"`), and prints the result (or
//! the specification's error JSON, exit status 1). See `cnikit_examples::plugin`.

fn main() -> std::process::ExitCode {
    cnikit_examples::plugin::cli::cli_main()
}
