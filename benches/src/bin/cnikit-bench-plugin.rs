//! The `cnikit` CNI plugin, built in this package so that `cni_add_del` execs a binary of the
//! plugin's own size (benchmarks cannot use another package's binaries). Same entry point as
//! `cnikit-examples`' `cnikit`.

fn main() -> std::process::ExitCode {
    cnikit_examples::plugin::cli::cli_main()
}
