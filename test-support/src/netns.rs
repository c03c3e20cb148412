//! Throwaway network namespaces for privileged tests.
//!
//! Each [`TestNetns`] is a named namespace (`/run/netns/cnkt-<pid>-<seq>-<role>`) created for one
//! test and deleted when the value drops, also while a panic unwinds. Names carry the creating
//! process id so that [`sweep`] can remove what killed runs left behind without touching the
//! namespaces of runs still alive. The root network namespace is never changed: code runs inside a
//! namespace on a dedicated thread ([`TestNetns::run`]) or in a child process
//! ([`TestNetns::command`]).

use std::{
    fs::{self, File, OpenOptions},
    future::Future,
    io,
    os::unix::{fs::OpenOptionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

/// Directory where named namespaces are bind-mounted (the same one `ip netns` uses).
pub const NETNS_DIR: &str = "/run/netns";
/// Prefix of every namespace this harness creates.
pub const PREFIX: &str = "cnkt-";

static SEQUENCE: AtomicU32 = AtomicU32::new(0);
static SWEPT: OnceLock<()> = OnceLock::new();

/// What a namespace stands in for in a test topology.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The node (host) side: where the agent, ENIs and node ends of pod links live.
    Node,
    /// A pod.
    Pod,
    /// The cloud router / VPC gateway.
    Vpc,
    /// A client or server with no particular role.
    Peer,
}

impl Role {
    /// Short name used in the namespace name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Pod => "pod",
            Self::Vpc => "vpc",
            Self::Peer => "peer",
        }
    }
}

/// A uniquely named network namespace, deleted on drop.
#[derive(Debug)]
pub struct TestNetns {
    name: String,
    path: PathBuf,
    role: Role,
}

fn io_err(context: impl std::fmt::Display, err: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{context}: {err}"))
}

impl TestNetns {
    /// Creates a namespace for `role` with loopback up.
    ///
    /// The first call in a process also runs [`sweep`].
    ///
    /// # Errors
    /// When not privileged enough to create and bind-mount a namespace, or when `ip` fails to set
    /// loopback up.
    pub fn create(role: Role) -> io::Result<Self> {
        SWEPT.get_or_init(|| {
            if let Err(e) = sweep() {
                eprintln!("cnikit-test-support: sweeping leftover namespaces failed: {e}");
            }
        });
        fs::create_dir_all(NETNS_DIR)?;
        let name = format!(
            "{PREFIX}{}-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
            role.as_str()
        );
        let path = Path::new(NETNS_DIR).join(&name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| io_err(format_args!("creating {}", path.display()), e))?;
        // From here on, `Drop` removes the file even if binding fails.
        let netns = Self { name, path, role };
        let target = netns.path.clone();
        std::thread::spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| io_err("unshare(CLONE_NEWNET)", e))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| io_err(format_args!("bind-mounting {}", target.display()), e))
        })
        .join()
        .map_err(|_| io::Error::other("namespace creation thread panicked"))??;
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name (as `ip netns` lists it).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace file, usable as a CNI `CNI_NETNS`.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The role given at creation.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// Opens the namespace file (for `setns` or to hand a namespace fd to netlink).
    ///
    /// # Errors
    /// When the namespace file cannot be opened.
    pub fn open(&self) -> io::Result<File> {
        File::open(&self.path)
            .map_err(|e| io_err(format_args!("opening {}", self.path.display()), e))
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    ///
    /// A panic in `f` is resumed on the calling thread.
    ///
    /// # Panics
    /// When the namespace cannot be entered, or when `f` panics.
    pub fn run<T, F>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let file = match self.open() {
            Ok(file) => file,
            Err(e) => panic!("entering {}: {e}", self.name),
        };
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                if let Err(e) = setns(&file, CloneFlags::CLONE_NEWNET) {
                    panic!("setns into {}: {e}", self.name);
                }
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a new, detached thread that lives inside this namespace (for servers that
    /// outlive the call). The thread keeps the namespace alive while it runs.
    ///
    /// # Errors
    /// When the namespace file cannot be opened or the thread cannot be spawned. A failure to
    /// enter the namespace makes the thread panic before `f` runs (seen on `join`).
    pub fn spawn<T, F>(&self, f: F) -> io::Result<std::thread::JoinHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let file = self.open()?;
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("in-{name}"))
            .spawn(move || {
                if let Err(e) = setns(&file, CloneFlags::CLONE_NEWNET) {
                    panic!("setns into {name}: {e}");
                }
                f()
            })
    }

    /// Sets a per-namespace sysctl under `/proc/sys/net/` (`key` like `ipv4.ip_forward`).
    ///
    /// # Errors
    /// When the key does not exist or cannot be written.
    pub fn sysctl_net(&self, key: &str, value: &str) -> io::Result<()> {
        let path = format!("/proc/sys/net/{}", key.replace('.', "/"));
        self.run(|| fs::write(&path, value))
            .map_err(|e| io_err(format_args!("writing {path} in {}", self.name), e))
    }

    /// Runs an async block inside this namespace on its own single-threaded tokio runtime.
    ///
    /// # Panics
    /// As [`run`](Self::run), and when the runtime cannot be built.
    pub fn run_async<T, F, Fut>(&self, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
    {
        self.run(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => panic!("building a tokio runtime: {e}"),
            };
            runtime.block_on(f())
        })
    }

    /// A [`Command`] whose child process runs inside this namespace.
    ///
    /// # Errors
    /// When the namespace file cannot be opened.
    pub fn command(&self, program: &str) -> io::Result<Command> {
        let file = self.open()?;
        let mut cmd = Command::new(program);
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2), which
        // is async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
        }
        Ok(cmd)
    }

    /// Runs `ip -n <name> <args>` and returns its standard output.
    ///
    /// # Errors
    /// When `ip` cannot run or exits unsuccessfully; the error carries its stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let output = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map_err(|e| io_err("running `ip` (install iproute2)", e))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(io::Error::other(format!(
                "ip -n {} {}: {}",
                self.name,
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Creates a veth pair with `local` in this namespace and `remote` in `peer`, both up.
    ///
    /// # Errors
    /// When `ip` fails (name clash, veth unsupported).
    pub fn veth_to(&self, peer: &Self, local: &str, remote: &str) -> io::Result<()> {
        self.ip(&[
            "link", "add", local, "type", "veth", "peer", "name", remote, "netns", &peer.name,
        ])?;
        self.ip(&["link", "set", local, "up"])?;
        peer.ip(&["link", "set", remote, "up"])?;
        Ok(())
    }

    fn remove(path: &Path) -> io::Result<()> {
        let unmounted = umount2(path, MntFlags::MNT_DETACH);
        let removed = fs::remove_file(path);
        match (unmounted, removed) {
            (_, Ok(())) => Ok(()),
            (Err(e), Err(r)) => Err(io_err(
                format_args!("removing {}", path.display()),
                format_args!("umount: {e}; unlink: {r}"),
            )),
            (Ok(()), Err(r)) => Err(io_err(format_args!("removing {}", path.display()), r)),
        }
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        if let Err(e) = Self::remove(&self.path) {
            eprintln!("cnikit-test-support: {e}");
        }
    }
}

/// The pid encoded in a harness namespace name, if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes harness namespaces whose creating process no longer exists, and returns their names.
///
/// Only names with [`PREFIX`] are considered; namespaces of live processes (including this one)
/// are left alone.
///
/// # Errors
/// When the namespace directory cannot be read or a leftover cannot be removed.
pub fn sweep() -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        match TestNetns::remove(&entry.path()) {
            Ok(()) => removed.push(name),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        Ok(removed)
    } else {
        Err(io::Error::other(failures.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require_root;

    #[test]
    fn owner_pid_parses_only_harness_names() {
        assert_eq!(owner_pid("cnkt-123-4-pod"), Some(123));
        assert_eq!(owner_pid("cnkt-x-4-pod"), None);
        assert_eq!(owner_pid("other-123-4-pod"), None);
    }

    #[test]
    fn namespace_is_isolated_and_removed_on_drop() {
        require_root!("namespace_is_isolated_and_removed_on_drop");
        let root_links = fs::read_dir("/sys/class/net").unwrap().count();
        let ns = TestNetns::create(Role::Pod).unwrap();
        let path = ns.path().to_path_buf();
        assert!(path.exists());
        // Inside: only loopback, and it is up.
        let links = ns.ip(&["-o", "link", "show"]).unwrap();
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:") && links.contains("UP"), "{links}");
        // The namespace really differs from ours.
        let inner = ns.run(|| fs::read_link("/proc/thread-self/ns/net").unwrap());
        assert_ne!(inner, fs::read_link("/proc/self/ns/net").unwrap());
        drop(ns);
        assert!(!path.exists());
        assert_eq!(fs::read_dir("/sys/class/net").unwrap().count(), root_links);
    }

    #[test]
    fn namespace_is_removed_when_a_test_panics() {
        require_root!("namespace_is_removed_when_a_test_panics");
        let (tx, rx) = std::sync::mpsc::channel();
        let outcome = std::panic::catch_unwind(move || {
            let ns = TestNetns::create(Role::Node).unwrap();
            tx.send(ns.path().to_path_buf()).unwrap();
            panic!("deliberate");
        });
        assert!(outcome.is_err());
        assert!(!rx.recv().unwrap().exists());
    }

    #[test]
    fn veth_pair_carries_traffic_between_namespaces() {
        require_root!("veth_pair_carries_traffic_between_namespaces");
        let node = TestNetns::create(Role::Node).unwrap();
        let pod = TestNetns::create(Role::Pod).unwrap();
        node.veth_to(&pod, "veth0", "eth0").unwrap();
        node.ip(&["addr", "add", "198.18.0.1/24", "dev", "veth0"])
            .unwrap();
        pod.ip(&["addr", "add", "198.18.0.2/24", "dev", "eth0"])
            .unwrap();
        let server = node.run(|| std::net::UdpSocket::bind("198.18.0.1:7777").unwrap());
        pod.run(|| {
            let client = std::net::UdpSocket::bind("198.18.0.2:0").unwrap();
            client.send_to(b"hello", "198.18.0.1:7777").unwrap();
        });
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(from.ip().to_string(), "198.18.0.2");
    }

    #[test]
    fn sweep_removes_leftovers_of_dead_runs_only() {
        require_root!("sweep_removes_leftovers_of_dead_runs_only");
        // A pid that cannot be alive: above the kernel's pid_max ceiling (4194304).
        let dead = format!("{PREFIX}4194399-0-pod");
        let dead_path = Path::new(NETNS_DIR).join(&dead);
        fs::create_dir_all(NETNS_DIR).unwrap();
        fs::write(&dead_path, b"").unwrap();
        let alive = TestNetns::create(Role::Vpc).unwrap();
        let removed = sweep().unwrap();
        assert!(removed.contains(&dead), "{removed:?}");
        assert!(!dead_path.exists());
        assert!(alive.path().exists());
    }
}
