//! Building the kernel-side eBPF object reproducibly, and checking the shipped copy.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The nightly toolchain used for `-Z build-std=core`.
const NIGHTLY: &str = "nightly";
/// bpf-linker 0.10.x loads rustc's own LLVM (`rust-llvm-22`), so it needs no system LLVM.
const BPF_LINKER_VERSION: &str = "0.10.0";
/// The LLVM major version bpf-linker 0.10.0 links against; the nightly must emit the same.
const LLVM_MAJOR: &str = "22";
const TARGET: &str = "bpfel-unknown-none";
/// Kernel-side crate, relative to the workspace root.
const EBPF_CRATE: &str = "ebpf-dataplane/ebpf";
/// Binary name of the kernel-side crate.
const EBPF_BIN: &str = "cnikit";
/// The fixed directory the kernel-side sources are copied to before building.
const STAGING_ROOT: &str = "/tmp/cnikit-ebpf-build";
/// What the kernel-side build reads, relative to the workspace root: the root manifest (the shared
/// crate inherits its package fields from it), the shared types and the eBPF crate.
const STAGED_SOURCES: &[&str] = &["Cargo.toml", "ebpf-dataplane/common", EBPF_CRATE];
/// Where the built object is shipped, relative to the workspace root.
pub(crate) const SHIPPED_OBJECT: &str = "ebpf-dataplane/bpf/cnikit.bpf.o";

fn run(cmd: &mut Command) -> Result<String, String> {
    let output = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A `rustup run <toolchain> <program>` command with the outer cargo's environment removed, so
/// the nested build never inherits stable's `RUSTC`, wrappers or flags.
fn rustup_run(toolchain: &str, program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, program]);
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        let inherited = key_str.starts_with("CARGO")
            || key_str.starts_with("RUSTC")
            || key_str == "RUSTDOC"
            || key_str == "RUSTUP_TOOLCHAIN"
            || key_str == "RUSTFLAGS"
            || key_str == "RUSTDOCFLAGS";
        // CARGO_HOME decides where bpf-linker and the registry live; keep it.
        if inherited && key_str != "CARGO_HOME" {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME").map_or_else(|| home().join(".cargo"), PathBuf::from)
}

fn rustup_home() -> PathBuf {
    std::env::var_os("RUSTUP_HOME").map_or_else(|| home().join(".rustup"), PathBuf::from)
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// Installs what is missing (rust-src for nightly, bpf-linker) and checks the LLVM versions
/// agree. Returns the bpf-linker binary to use. Does nothing slow when all is present.
pub(crate) fn ensure_toolchain() -> Result<PathBuf, String> {
    let version = run(rustup_run(NIGHTLY, "rustc").arg("-vV")).map_err(|e| {
        format!("the `{NIGHTLY}` toolchain is required to build eBPF programs: {e}")
    })?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .unwrap_or("unknown");
    if !llvm.starts_with(&format!("{LLVM_MAJOR}.")) {
        return Err(format!(
            "nightly rustc uses LLVM {llvm}, but bpf-linker {BPF_LINKER_VERSION} needs LLVM \
             {LLVM_MAJOR}; pick a nightly with LLVM {LLVM_MAJOR} or change BPF_LINKER_VERSION"
        ));
    }

    let components = run(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if components.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: rust-src for {NIGHTLY}: present");
    } else {
        eprintln!("xtask: installing rust-src for {NIGHTLY}");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }

    let linker = cargo_home().join("bin").join("bpf-linker");
    let installed = Command::new(&linker)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    match installed {
        Some(v) if v.contains(BPF_LINKER_VERSION) => {
            eprintln!("xtask: bpf-linker {BPF_LINKER_VERSION}: present");
        }
        _ => {
            eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about 1-2 minutes)");
            run(rustup_run("stable", "cargo").args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
            ]))?;
        }
    }
    Ok(linker)
}

/// Builds the object; with `check`, compares it with the shipped one instead of replacing it.
pub(crate) fn build(root: &Path, check: bool) -> Result<(), String> {
    let linker = ensure_toolchain()?;
    // Cargo derives each crate's symbol-name hash from its dependencies' package ids, and a path
    // dependency outside the building workspace (here `common/`, outside `ebpf/`) is identified by
    // its absolute path. Building from a copy at one fixed path makes the object independent of
    // where the repository is cloned. The lock serialises concurrent builds from several clones.
    let staging = Path::new(STAGING_ROOT);
    fs::create_dir_all(staging).map_err(|e| format!("creating {STAGING_ROOT}: {e}"))?;
    let lock = fs::File::create(staging.with_extension("lock"))
        .map_err(|e| format!("creating the staging lock: {e}"))?;
    lock.lock()
        .map_err(|e| format!("locking {STAGING_ROOT}: {e}"))?;
    for source in STAGED_SOURCES {
        sync_tree(&root.join(source), &staging.join(source))?;
    }
    let crate_dir = staging.join(EBPF_CRATE);
    let target_dir = root.join("target").join("ebpf");

    // Remap every absolute path the compiler could embed, so that the object is byte-for-byte the
    // same whatever directory the repository is cloned into and whoever builds it.
    let remaps = [
        (staging.to_path_buf(), "/cnikit"),
        (cargo_home(), "/cargo"),
        (rustup_home(), "/rustup"),
    ];
    let mut rustflags: Vec<OsString> = vec![
        "--cfg".into(),
        "bpf_target_arch=\"x86_64\"".into(),
        "-C".into(),
        format!("linker={}", linker.display()).into(),
    ];
    for (from, to) in &remaps {
        rustflags.push(format!("--remap-path-prefix={}={to}", from.display()).into());
    }
    let encoded = rustflags
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\u{1f}");

    let mut cmd = rustup_run(NIGHTLY, "cargo");
    cmd.current_dir(&crate_dir)
        .args(["build", "--release", "--locked", "--target", TARGET])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", encoded);
    // Let the nested cargo print its progress.
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run nightly cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building {EBPF_CRATE} failed ({status})"));
    }

    let built = target_dir.join(TARGET).join("release").join(EBPF_BIN);
    let fresh = fs::read(&built).map_err(|e| format!("reading {}: {e}", built.display()))?;
    let shipped_path = root.join(SHIPPED_OBJECT);
    let shipped = fs::read(&shipped_path).ok();
    let digest = fnv1a64(&fresh);

    if check {
        return match shipped {
            Some(bytes) if bytes == fresh => {
                eprintln!(
                    "xtask: {SHIPPED_OBJECT} is up to date ({} bytes, fnv1a64 {digest:016x})",
                    fresh.len()
                );
                Ok(())
            }
            Some(bytes) => Err(format!(
                "{SHIPPED_OBJECT} is stale: shipped {} bytes (fnv1a64 {:016x}), fresh build {} \
                 bytes (fnv1a64 {digest:016x}). Run `cargo xtask build-ebpf` and commit the object.",
                bytes.len(),
                fnv1a64(&bytes),
                fresh.len()
            )),
            None => Err(format!(
                "{SHIPPED_OBJECT} is missing. Run `cargo xtask build-ebpf` and commit it."
            )),
        };
    }

    if shipped.as_deref() == Some(fresh.as_slice()) {
        eprintln!("xtask: {SHIPPED_OBJECT} unchanged (fnv1a64 {digest:016x})");
    } else {
        fs::write(&shipped_path, &fresh)
            .map_err(|e| format!("writing {}: {e}", shipped_path.display()))?;
        eprintln!(
            "xtask: wrote {SHIPPED_OBJECT} ({} bytes, fnv1a64 {digest:016x})",
            fresh.len()
        );
    }
    Ok(())
}

/// Makes `to` an exact copy of `from` (a file or a directory tree, `target/` directories skipped),
/// writing only files whose bytes changed so cargo's fingerprints stay valid between builds.
fn sync_tree(from: &Path, to: &Path) -> Result<(), String> {
    let meta = fs::metadata(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
    if meta.is_file() {
        let bytes = fs::read(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
        if fs::read(to).ok().as_deref() != Some(bytes.as_slice()) {
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            fs::write(to, &bytes).map_err(|e| format!("writing {}: {e}", to.display()))?;
        }
        return Ok(());
    }
    fs::create_dir_all(to).map_err(|e| format!("creating {}: {e}", to.display()))?;
    let names = |dir: &Path| -> Result<Vec<OsString>, String> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
            let name = entry.map_err(|e| e.to_string())?.file_name();
            if name != "target" {
                names.push(name);
            }
        }
        Ok(names)
    };
    let wanted = names(from)?;
    for name in names(to)? {
        if !wanted.contains(&name) {
            let stale = to.join(&name);
            let removed = if stale.is_dir() {
                fs::remove_dir_all(&stale)
            } else {
                fs::remove_file(&stale)
            };
            removed.map_err(|e| format!("removing {}: {e}", stale.display()))?;
        }
    }
    for name in wanted {
        sync_tree(&from.join(&name), &to.join(&name))?;
    }
    Ok(())
}

/// A small non-cryptographic digest, only to make stale-object messages comparable by eye.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
