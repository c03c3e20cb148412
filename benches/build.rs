//! Builds the `cnikit` CNI plugin statically linked, as nodes should run it, for `cni_add_del`.
//!
//! A CNI plugin is exec'd for every pod, so its start is part of every `ADD` and `DEL`. A
//! dynamically linked Rust binary spends ~0.3 ms of that loading `libgcc_s` and `libm` and
//! binding symbols (`libgcc_s`'s constructor alone probes the CPU with `cpuid`, a trap in a VM);
//! the static build skips it and runs on any host's C library. Static linking is a property of
//! the final link only (`-C target-feature=+crt-static`), which cargo cannot set for one
//! binary of a workspace that also builds proc macros, so this script runs one `cargo rustc` of
//! `cnikit-examples`' `cnikit` in a target directory of its own (the `cargo rustc` the
//! examples README gives for nodes).
//!
//! Only for release builds (`cargo bench`): test, check, clippy and doc builds — and builds
//! with `CNIKIT_BENCH_DYNAMIC_PLUGIN` set, or where the static build fails (a machine without
//! the static C library, `libc6-dev`) — leave `CNIKIT_STATIC_PLUGIN` empty, and the bench runs
//! this package's dynamically linked `cnikit-bench-plugin`, saying so in its `BENCH` line.

use std::{
    env,
    fs::File,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The workspace members the plugin is built from; a change in any of them rebuilds it.
const SOURCES: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "examples",
    "cloud-api",
    "eni-pool",
    "netns-setup",
    "ebpf-dataplane/Cargo.toml",
    "ebpf-dataplane/src",
    "ebpf-dataplane/bpf",
    "ebpf-dataplane/common",
    "dns-autopath",
    "test-support",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CNIKIT_BENCH_DYNAMIC_PLUGIN");
    let plugin = if env::var("PROFILE").as_deref() == Ok("release")
        && env::var_os("CNIKIT_BENCH_DYNAMIC_PLUGIN").is_none()
    {
        match build_static_plugin() {
            Ok(path) => path.display().to_string(),
            Err(why) => {
                println!(
                    "cargo::warning=cni_add_del will run the dynamically linked plugin: {why}"
                );
                String::new()
            }
        }
    } else {
        String::new()
    };
    println!("cargo::rustc-env=CNIKIT_STATIC_PLUGIN={plugin}");
}

fn build_static_plugin() -> Result<PathBuf, String> {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().ok_or("the package has no workspace")?;
    for source in SOURCES {
        println!("cargo::rerun-if-changed={}", root.join(source).display());
    }
    let target_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("no OUT_DIR")?).join("static");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["rustc", "--release", "--locked", "--offline"])
        .args([
            "--package",
            "cnikit-examples",
            "--bin",
            "cnikit",
            "--target-dir",
        ])
        .arg(&target_dir)
        .args(["--", "-C", "target-feature=+crt-static"])
        // Not clippy's driver (a `cargo clippy --release`), and nothing on stdout, which cargo
        // reads for this script's instructions.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo rustc` of the static plugin failed ({status})"
        ));
    }
    let plugin = target_dir.join("release").join("cnikit");
    if has_interpreter(&plugin)? {
        return Err(format!("{} is dynamically linked", plugin.display()));
    }
    Ok(plugin)
}

/// Whether an ELF64 executable names a program interpreter (a `PT_INTERP` header), i.e. needs
/// the dynamic loader.
fn has_interpreter(path: &Path) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    let mut elf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(1 << 16).read_to_end(&mut elf))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = || format!("{} is not a 64-bit ELF file", path.display());
    let field = |at: usize, len: usize| -> Result<u64, String> {
        let bytes = elf.get(at..at + len).ok_or_else(bad)?;
        Ok(bytes.iter().rev().fold(0, |v, b| v << 8 | u64::from(*b)))
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return Err(bad());
    }
    let (offset, size, count) = (field(0x20, 8)?, field(0x36, 2)?, field(0x38, 2)?);
    for i in 0..count {
        let at = usize::try_from(offset + i * size).map_err(|_| bad())?;
        if field(at, 4)? == u64::from(PT_INTERP) {
            return Ok(true);
        }
    }
    Ok(false)
}
