//! Developer tasks for the cnikit workspace, run as `cargo xtask <task>`.
//!
//! - `build-ebpf [--check]`: build the kernel-side programs with the nightly toolchain,
//!   `rust-src` and bpf-linker (installing the latter two when missing) and copy the object to
//!   `ebpf-dataplane/bpf/cnikit.bpf.o`. With `--check`, fail if the committed object differs from
//!   a fresh build instead of replacing it.
//! - `ebpf-toolchain`: only install / verify the eBPF toolchain.
//! - `sweep`: remove network namespaces left behind by killed test runs.
//! - `vmtest [6.1|6.12|all]`: run the VM test targets inside qemu on Debian kernels (default all).

mod cpio;
mod ebpf;
mod sweep;
mod vmtest;

use std::{path::PathBuf, process::ExitCode};

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <task>\n\n\
         tasks:\n  \
         build-ebpf [--check]   build the eBPF object (and with --check, fail if the shipped one is stale)\n  \
         ebpf-toolchain         install/verify nightly rust-src and bpf-linker\n  \
         sweep                  remove leftover cnikit test namespaces of dead runs\n  \
         vmtest [6.1|6.12|all]  run the VM test targets in qemu on Debian kernels (default: all)"
    );
    ExitCode::from(2)
}

/// The workspace root (the parent of this crate's manifest directory).
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["build-ebpf"] => ebpf::build(&workspace_root(), false),
        ["build-ebpf", "--check"] => ebpf::build(&workspace_root(), true),
        ["ebpf-toolchain"] => ebpf::ensure_toolchain().map(|_| ()),
        ["sweep"] => sweep::run(),
        ["vmtest"] => vmtest::Kernel::parse("all").and_then(|k| vmtest::run(&workspace_root(), &k)),
        ["vmtest", which] => {
            vmtest::Kernel::parse(which).and_then(|k| vmtest::run(&workspace_root(), &k))
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}
