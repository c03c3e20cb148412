//! `cargo xtask vmtest`: run selected integration tests inside qemu VMs booting Debian kernels.
//!
//! The host kernel of our CI machines lacks ipvlan and dummy and cannot load modules, and the
//! dataplane must also pass the verifier of older kernels. So tests that need another kernel are
//! ordinary integration-test targets whose tests are marked
//! `#[ignore = "runs in the qemu VM: cargo xtask vmtest"]` and are registered in [`VM_TESTS`].
//!
//! For each kernel this task:
//! 1. downloads the Debian kernel package with `apt-get download` (cached under
//!    `target/vm/kernels/`), with the current 6.1 (bookworm's default) and 6.12 versions;
//! 2. builds the registered test binaries (`cargo test --no-run`), strips their debug info;
//! 3. writes an initramfs holding them, the shared libraries they and iproute2's `ip` / `tc` need,
//!    busybox, and the kernel modules veth, ipvlan, dummy, macvlan, `sch_ingress`, `cls_bpf` with their
//!    dependencies;
//! 4. boots it with `qemu-system-x86_64 -accel tcg` (KVM does not boot guests on these machines)
//!    and runs each binary as root with `--include-ignored --test-threads=1`, env
//!    `CI=true CNIKIT_VM=1`, with /proc, /sys, /dev, /run (and /run/netns), /tmp and /sys/fs/bpf
//!    mounted;
//! 5. fails unless the guest prints `VMTEST RESULT: PASS` (qemu's own exit status says nothing).
//!    A guest kernel that traps on an `int3` while patching its own code (`Oops: int3`, seen
//!    once in `flow_hash_from_keys` under TCG) is booted once more; any other crash fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::cpio::Cpio;

/// Test targets run inside the VM: `(package, integration test target)`.
pub(crate) const VM_TESTS: &[(&str, &str)] = &[
    ("cnikit-test-support", "vm_smoke"),
    // ---- netns-setup ----
    ("cnikit-netns-setup", "vm_ipvlan"),
    ("cnikit-netns-setup", "probe"),
    // ---- end netns-setup ----
    // ---- ebpf-dataplane ----
    ("cnikit-ebpf-dataplane", "vm_verifier"),
    // ---- end ebpf-dataplane ----
];

/// Kernel modules loaded in the guest (with their dependencies), and their arguments.
const MODULES: &[(&str, &str)] = &[
    ("veth", ""),
    // The default numdummies=1 would create dummy0 and make tests' own `dummy0` clash.
    ("dummy", "numdummies=0"),
    ("ipvlan", ""),
    ("macvlan", ""),
    ("sch_ingress", ""),
    ("cls_bpf", ""),
];

/// Host programs copied into the guest with their libraries.
const HOST_PROGRAMS: &[&str] = &["/usr/sbin/ip", "/usr/sbin/tc"];
const BUSYBOX: &str = "/bin/busybox";
const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "poweroff", "uname", "cat", "echo", "mkdir", "sleep", "ls", "env",
];
/// Wall-clock limit per kernel (boot + every test under software emulation).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Which Debian kernels to boot.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kernel {
    /// bookworm's default kernel (linux-image-amd64).
    V6_1,
    /// The newest 6.12 kernel bookworm carries.
    V6_12,
}

impl Kernel {
    pub(crate) fn parse(s: &str) -> Result<Vec<Self>, String> {
        match s {
            "6.1" => Ok(vec![Self::V6_1]),
            "6.12" => Ok(vec![Self::V6_12]),
            "all" => Ok(vec![Self::V6_1, Self::V6_12]),
            other => Err(format!("unknown kernel {other:?}: use 6.1, 6.12 or all")),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// The Debian binary package name of this kernel today.
    fn package(self) -> Result<String, String> {
        match self {
            Self::V6_1 => {
                let out = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
                out.lines()
                    .filter_map(|l| l.trim().strip_prefix("Depends: "))
                    .find(|p| p.starts_with("linux-image-6.1"))
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        format!("no 6.1 kernel in `apt-cache depends linux-image-amd64`:\n{out}")
                    })
            }
            Self::V6_12 => {
                let out = output(Command::new("apt-cache").args([
                    "search",
                    "--names-only",
                    "^linux-image-6\\.12\\.",
                ]))?;
                let mut names: Vec<&str> = out
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    // The generic flavour only (not -rt-, -cloud-, -unsigned, -dbg).
                    .filter(|n| {
                        n.strip_suffix("+deb12-amd64")
                            .and_then(|v| v.strip_prefix("linux-image-6.12."))
                            .is_some_and(|patch| patch.chars().all(|c| c.is_ascii_digit()))
                    })
                    .collect();
                names.sort_by_key(|n| version_key(n));
                names
                    .last()
                    .map(|s| (*s).to_owned())
                    .ok_or_else(|| "no linux-image-6.12.*-amd64 package known to apt".to_owned())
            }
        }
    }
}

/// Orders `linux-image-6.12.117+deb12-amd64` by its numeric parts.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// An extracted kernel package: the image, its release string and its module tree.
struct KernelTree {
    vmlinuz: PathBuf,
    release: String,
    modules: PathBuf,
}

/// Downloads and extracts `package` under `cache` unless already there.
fn fetch_kernel(cache: &Path, package: &str) -> Result<KernelTree, String> {
    let root = cache.join(package);
    let done = root.join(".extracted");
    if !done.exists() {
        fs::create_dir_all(cache).map_err(|e| format!("creating {}: {e}", cache.display()))?;
        let download = || {
            output(
                Command::new("apt-get")
                    .current_dir(cache)
                    .args(["download", package]),
            )
        };
        if download().is_err() {
            eprintln!("xtask: apt-get download {package} failed; refreshing package lists");
            output(Command::new("apt-get").args(["update", "-qq"]))?;
            download()?;
        }
        let deb = fs::read_dir(cache)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .ok_or_else(|| {
                format!(
                    "downloaded .deb for {package} not found in {}",
                    cache.display()
                )
            })?;
        fs::remove_dir_all(&root).ok();
        output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        fs::remove_file(&deb).map_err(|e| e.to_string())?;
        fs::write(&done, b"").map_err(|e| e.to_string())?;
    }
    let modules_dir = root.join("lib/modules");
    let release = fs::read_dir(&modules_dir)
        .map_err(|e| format!("reading {}: {e}", modules_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| format!("no module tree in {}", modules_dir.display()))?;
    Ok(KernelTree {
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        modules: modules_dir.join(&release),
        release,
    })
}

/// Reads a module file, decompressing `.ko.xz`.
fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|e| format!("running xz: {e}"))?;
        if !out.status.success() {
            return Err(format!("xz -dc {} failed", path.display()));
        }
        Ok(out.stdout)
    } else {
        fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
    }
}

/// Canonical module name: file stem without `.ko[.xz]`, dashes as underscores.
fn module_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.trim_end_matches(".xz")
        .trim_end_matches(".ko")
        .replace('-', "_")
}

/// The `depends=` list of a module's `.modinfo` section.
fn module_depends(bytes: &[u8]) -> Vec<String> {
    let key = b"depends=";
    bytes
        .split(|&b| b == 0)
        .find_map(|field| field.strip_prefix(key))
        .map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

/// Resolves [`MODULES`] and their dependencies into load order: `(file name, bytes, args)`.
fn modules_in_order(tree: &KernelTree) -> Result<Vec<(String, Vec<u8>, String)>, String> {
    let mut index = BTreeMap::new();
    let mut stack = vec![tree.modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                index.insert(module_name(&path), path);
            }
        }
    }
    let builtin: BTreeSet<String> = fs::read_to_string(tree.modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(|l| module_name(Path::new(l)))
        .collect();

    let mut ordered: Vec<(String, Vec<u8>, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    fn visit(
        name: &str,
        args: &str,
        index: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        ordered: &mut Vec<(String, Vec<u8>, String)>,
    ) -> Result<(), String> {
        if !seen.insert(name.to_owned()) || builtin.contains(name) {
            return Ok(());
        }
        let path = index
            .get(name)
            .ok_or_else(|| format!("kernel module {name} is neither a module nor built in"))?;
        let bytes = read_module(path)?;
        for dep in module_depends(&bytes) {
            visit(&dep, "", index, builtin, seen, ordered)?;
        }
        ordered.push((format!("{name}.ko"), bytes, args.to_owned()));
        Ok(())
    }
    for (name, args) in MODULES {
        visit(name, args, &index, &builtin, &mut seen, &mut ordered)?;
    }
    Ok(ordered)
}

/// Builds the registered test binaries and returns `(name, path)` for each.
fn build_tests(root: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let mut binaries = Vec::new();
    for (package, target) in VM_TESTS {
        let out = output(
            Command::new("cargo")
                .current_dir(root)
                .args([
                    "test",
                    "--no-run",
                    "--locked",
                    "--message-format=json-render-diagnostics",
                ])
                .args(["-p", package, "--test", target])
                .stderr(Stdio::inherit()),
        )?;
        let executable = out
            .lines()
            .filter(|l| l.contains("\"compiler-artifact\""))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"]["name"] == *target)
            .find_map(|v| v["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| format!("cargo built no executable for {package} --test {target}"))?;
        binaries.push(((*target).to_owned(), executable));
    }
    Ok(binaries)
}

/// Shared libraries (and the dynamic loader) `binary` needs, from `ldd`.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| format!("running ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Adds `path`'s parent directories to the archive once each.
fn ensure_dirs(cpio: &mut Cpio, dirs: &mut BTreeSet<String>, path: &str) -> Result<(), String> {
    let mut prefix = String::new();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        if dirs.insert(prefix.clone()) {
            cpio.dir(&prefix).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn add_file(
    cpio: &mut Cpio,
    dirs: &mut BTreeSet<String>,
    name: &str,
    perm: u32,
    data: &[u8],
) -> Result<(), String> {
    ensure_dirs(cpio, dirs, name)?;
    cpio.file(name.trim_start_matches('/'), perm, data)
        .map_err(|e| e.to_string())
}

fn init_script(modules: &[(String, Vec<u8>, String)], tests: &[(String, PathBuf)]) -> String {
    let mut s = String::from(
        "#!/bin/sh\n\
         export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev 2>/dev/null\n\
         mount -t tmpfs run /run && mkdir -p /run/netns\n\
         mount -t tmpfs tmp /tmp\n\
         mount -t bpf bpf /sys/fs/bpf\n\
         echo \"VMTEST kernel $(uname -r)\"\n\
         fail=0\n",
    );
    for (file, _, args) in modules {
        s.push_str(&format!(
            "insmod /modules/{file} {args} || {{ echo \"VMTEST insmod {file} failed\"; fail=1; }}\n"
        ));
    }
    s.push_str("ip link set lo up\n");
    for (name, _) in tests {
        s.push_str(&format!(
            "echo \"VMTEST run {name}\"\n\
             if CI=true CNIKIT_VM=1 RUST_BACKTRACE=1 HOME=/tmp /tests/{name} --include-ignored --test-threads=1; \
             then echo \"VMTEST pass {name}\"; else echo \"VMTEST FAIL {name}\"; fail=1; fi\n"
        ));
    }
    s.push_str(
        "if [ $fail = 0 ]; then echo \"VMTEST RESULT: PASS\"; else echo \"VMTEST RESULT: FAIL\"; fi\n\
         poweroff -f\n",
    );
    s
}

fn build_initramfs(
    tree: &KernelTree,
    tests: &[(String, PathBuf)],
    work: &Path,
) -> Result<Vec<u8>, String> {
    let mut cpio = Cpio::default();
    let mut dirs = BTreeSet::new();
    for d in [
        "proc", "sys", "dev", "run", "tmp", "modules", "tests", "bin", "sbin", "usr", "usr/bin",
        "usr/sbin", "etc",
    ] {
        ensure_dirs(&mut cpio, &mut dirs, &format!("{d}/x"))?;
    }
    let busybox = fs::read(BUSYBOX)
        .map_err(|e| format!("reading {BUSYBOX} (install busybox-static): {e}"))?;
    add_file(&mut cpio, &mut dirs, "bin/busybox", 0o755, &busybox)?;
    for applet in BUSYBOX_APPLETS {
        cpio.symlink(&format!("bin/{applet}"), "busybox")
            .map_err(|e| e.to_string())?;
    }

    let mut libraries = BTreeSet::new();
    for program in HOST_PROGRAMS {
        let data = fs::read(program).map_err(|e| format!("reading {program}: {e}"))?;
        add_file(&mut cpio, &mut dirs, program, 0o755, &data)?;
        libraries.extend(shared_libraries(Path::new(program))?);
    }
    fs::create_dir_all(work).map_err(|e| e.to_string())?;
    for (name, binary) in tests {
        // Debug info makes test binaries many times larger; the guest does not need it.
        let stripped = work.join(name);
        output(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(binary)
                .arg(&stripped),
        )?;
        let data = fs::read(&stripped).map_err(|e| e.to_string())?;
        add_file(&mut cpio, &mut dirs, &format!("tests/{name}"), 0o755, &data)?;
        libraries.extend(shared_libraries(binary)?);
    }
    for library in &libraries {
        let data = fs::read(library).map_err(|e| format!("reading {}: {e}", library.display()))?;
        add_file(
            &mut cpio,
            &mut dirs,
            &library.to_string_lossy(),
            0o755,
            &data,
        )?;
    }
    let modules = modules_in_order(tree)?;
    for (file, bytes, _) in &modules {
        add_file(
            &mut cpio,
            &mut dirs,
            &format!("modules/{file}"),
            0o644,
            bytes,
        )?;
    }
    add_file(
        &mut cpio,
        &mut dirs,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/tmp:/bin/sh\n",
    )?;
    add_file(
        &mut cpio,
        &mut dirs,
        "init",
        0o755,
        init_script(&modules, tests).as_bytes(),
    )?;
    cpio.finish().map_err(|e| e.to_string())
}

/// How a VM run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    /// The guest kernel trapped on an `int3` (`Oops: int3`): it was patching its own code
    /// (static keys, `text_poke_bp`) and another vCPU ran into the breakpoint, a hazard of
    /// cross-modifying code under qemu's TCG emulation rather than of the code under test.
    PatchingTrap,
}

/// Boots `vmlinuz` with `initramfs`, streams the console, and returns how the guest ended.
fn boot(label: &str, vmlinuz: &Path, initramfs: &Path) -> Result<Outcome, String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args([
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-monitor",
            "none",
        ])
        .args(["-serial", "stdio", "-display", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("starting qemu-system-x86_64 (install qemu-system-x86): {e}"))?;
    let stdout = child.stdout.take().ok_or("qemu stdout not captured")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut passed = None;
    let mut trapped = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                // Drop the terminal control sequences SeaBIOS prints.
                let line: String = line.chars().filter(|c| !c.is_control()).collect();
                println!("[vm {label}] {line}");
                if line.contains("VMTEST RESULT: PASS") {
                    passed = Some(true);
                } else if line.contains("VMTEST RESULT: FAIL") {
                    passed = Some(false);
                } else if line.contains("Oops: int3") {
                    trapped = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                eprintln!("xtask: VM {label} timed out after {BOOT_TIMEOUT:?}; killing qemu");
                child.kill().ok();
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    child.wait().ok();
    Ok(match passed {
        Some(true) => Outcome::Passed,
        None if trapped => Outcome::PatchingTrap,
        _ => Outcome::Failed,
    })
}

/// Runs every registered VM test on each of `kernels`.
pub(crate) fn run(root: &Path, kernels: &[Kernel]) -> Result<(), String> {
    let vm_dir = root.join("target").join("vm");
    let tests = build_tests(root)?;
    let mut failures = Vec::new();
    for &kernel in kernels {
        let started = Instant::now();
        let package = kernel.package()?;
        let tree = fetch_kernel(&vm_dir.join("kernels"), &package)?;
        let initramfs = build_initramfs(&tree, &tests, &vm_dir.join("work"))?;
        let path = vm_dir.join(format!("initramfs-{}.cpio", kernel.label()));
        fs::write(&path, &initramfs).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!(
            "xtask: booting {package} ({}) with {} test binaries, initramfs {} MiB",
            tree.release,
            tests.len(),
            initramfs.len() / (1 << 20)
        );
        let mut outcome = boot(kernel.label(), &tree.vmlinuz, &path)?;
        if outcome == Outcome::PatchingTrap {
            // Once: a second trap, or any other crash, fails the run.
            eprintln!(
                "xtask: VM {}: the guest kernel trapped on an int3 while patching its own code \
                 (cross-modifying code under TCG emulation); booting it once more",
                kernel.label()
            );
            outcome = boot(kernel.label(), &tree.vmlinuz, &path)?;
        }
        let passed = outcome == Outcome::Passed;
        eprintln!(
            "xtask: VM {} {} in {:.1}s",
            kernel.label(),
            if passed { "PASSED" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        if !passed {
            failures.push(kernel.label());
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "VM tests failed on kernel(s) {}",
            failures.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modinfo_depends() {
        let bytes = b"\0license=GPL\0depends=macvlan,nf-conntrack\0vermagic=6.1\0";
        assert_eq!(module_depends(bytes), vec!["macvlan", "nf_conntrack"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn orders_kernel_packages_by_version() {
        let mut names = [
            "linux-image-6.12.9+deb12-amd64",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.48+deb12-amd64",
        ];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names[2], "linux-image-6.12.117+deb12-amd64");
    }

    #[test]
    fn cpio_entries_are_aligned() {
        let mut cpio = Cpio::default();
        cpio.dir("bin").unwrap();
        cpio.file("bin/x", 0o755, b"abc").unwrap();
        cpio.symlink("bin/y", "x").unwrap();
        let bytes = cpio.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        assert!(bytes.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
