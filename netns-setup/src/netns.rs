//! Network namespace handles: by path, by pid, the caller's own, anonymous scratch ones, and named
//! ones created and deleted the way `ip netns add/del` does (a bind mount under `/run/netns`).
//!
//! A [`Netns`] holds an open file descriptor, so the namespace stays alive while the handle does,
//! even if its bind mount is removed. Code never switches the calling thread's namespace: work
//! inside a namespace runs on a short-lived dedicated thread ([`Netns::run`]).

use std::{
    fmt,
    fs::{self, File, OpenOptions},
    io,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
    sys::{
        stat::fstat,
        statfs::{NSFS_MAGIC, fstatfs},
    },
};

use crate::{Error, Result};

/// Where named namespaces live (the directory `ip netns` uses).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Identity of a network namespace (device and inode of its nsfs file): two handles refer to the
/// same namespace exactly when their ids are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    /// `st_dev` of the namespace file.
    pub dev: u64,
    /// `st_ino` of the namespace file.
    pub ino: u64,
}

/// A handle to a network namespace.
///
/// Cheap to clone (the descriptor is shared). Equality compares namespace identity.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` only for namespaces of the in-memory fake kernel.
    fd: Option<OwnedFd>,
    id: NetnsId,
    describe: String,
    path: Option<PathBuf>,
}

impl Netns {
    /// Opens the namespace file at `path` (`/proc/<pid>/ns/net`, `/run/netns/<name>`, or a CNI
    /// `CNI_NETNS` path).
    ///
    /// # Errors
    /// [`Error::Netns`] when the file cannot be opened or is not a network namespace.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let what = || format!("{}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::netns(format!("opening {}", what()), e))?;
        let mut netns = Self::from_fd_described(OwnedFd::from(file), what())?;
        if let Some(inner) = Arc::get_mut(&mut netns.inner) {
            inner.path = Some(path.to_path_buf());
        }
        Ok(netns)
    }

    /// The network namespace of process `pid`.
    ///
    /// # Errors
    /// As [`from_path`](Self::from_path), e.g. when the process does not exist.
    pub fn from_pid(pid: u32) -> Result<Self> {
        Self::from_path(format!("/proc/{pid}/ns/net"))
    }

    /// The calling thread's network namespace.
    ///
    /// # Errors
    /// As [`from_path`](Self::from_path).
    pub fn current() -> Result<Self> {
        Self::from_path("/proc/thread-self/ns/net")
    }

    /// The named namespace `/run/netns/<name>`.
    ///
    /// # Errors
    /// As [`from_path`](Self::from_path); the name is validated first.
    pub fn named(name: &str) -> Result<Self> {
        Self::from_path(named_path(name)?)
    }

    /// Takes ownership of an open namespace descriptor.
    ///
    /// # Errors
    /// [`Error::Netns`] when `fd` is not a namespace file.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        Self::from_fd_described(fd, "from descriptor".to_owned())
    }

    fn from_fd_described(fd: OwnedFd, describe: String) -> Result<Self> {
        let fs = fstatfs(&fd).map_err(|e| Error::netns(format!("statfs {describe}"), e))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(Error::netns(
                describe,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a namespace file (no namespace is mounted there)",
                ),
            ));
        }
        let st = fstat(&fd).map_err(|e| Error::netns(format!("stat {describe}"), e))?;
        #[expect(
            clippy::useless_conversion,
            reason = "st_dev and st_ino are u64 here but not on every libc target"
        )]
        let id = NetnsId {
            dev: u64::from(st.st_dev),
            ino: u64::from(st.st_ino),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                fd: Some(fd),
                id,
                describe,
                path: None,
            }),
        })
    }

    /// Creates a new, anonymous network namespace (loopback down, nothing else), alive as long as
    /// the handle or a link/socket in it is. Used for capability probes.
    ///
    /// # Errors
    /// [`Error::Netns`] without `CAP_SYS_ADMIN`.
    pub fn scratch() -> Result<Self> {
        let fd = std::thread::spawn(|| -> io::Result<OwnedFd> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(OwnedFd::from(File::open("/proc/thread-self/ns/net")?))
        })
        .join()
        .map_err(|_| Error::netns("scratch", io::Error::other("thread panicked")))?
        .map_err(|e| Error::netns("creating a scratch namespace", e))?;
        Self::from_fd_described(fd, "scratch".to_owned())
    }

    /// Creates the named namespace `/run/netns/<name>` (as `ip netns add` does) and opens it.
    ///
    /// # Errors
    /// [`Error::Netns`] when the name is invalid or taken, or without privileges. Nothing is left
    /// behind on failure.
    pub fn create_named(name: &str) -> Result<Self> {
        let path = named_path(name)?;
        fs::create_dir_all(NETNS_RUN_DIR)
            .map_err(|e| Error::netns(format!("creating {NETNS_RUN_DIR}"), e))?;
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| Error::netns(format!("creating {}", path.display()), e))?;
        let target = path.clone();
        let bound = std::thread::spawn(move || -> io::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(io::Error::from)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("thread panicked")));
        if let Err(e) = bound {
            // Best effort: the file is ours, created above.
            let _ignored = fs::remove_file(&path);
            return Err(Error::netns(format!("binding {}", path.display()), e));
        }
        Self::from_path(&path)
    }

    /// Deletes the named namespace `/run/netns/<name>` (as `ip netns del` does). The namespace
    /// itself goes away once nothing else holds it. Deleting a name that does not exist succeeds.
    ///
    /// # Errors
    /// [`Error::Netns`] when the name is invalid or the mount cannot be removed.
    pub fn delete_named(name: &str) -> Result<()> {
        let path = named_path(name)?;
        if !path.exists() {
            return Ok(());
        }
        // EINVAL: not a mount point (a half-created entry); the file is still removed.
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(Error::netns(format!("unmounting {}", path.display()), e)),
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::netns(format!("removing {}", path.display()), e)),
        }
    }

    /// A namespace of the in-memory fake kernel (no descriptor).
    pub(crate) fn fake(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            inner: Arc::new(Inner {
                fd: None,
                id: NetnsId {
                    dev: 0,
                    ino: NEXT.fetch_add(1, Ordering::Relaxed),
                },
                describe: format!("fake:{label}"),
                path: None,
            }),
        }
    }

    /// The namespace's identity.
    #[must_use]
    pub fn id(&self) -> NetnsId {
        self.inner.id
    }

    /// The path it was opened from, if any.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The namespace descriptor (`None` for namespaces of the fake kernel).
    #[must_use]
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.fd.as_ref().map(AsFd::as_fd)
    }

    /// Whether this is a real kernel namespace (not one of the fake kernel's).
    #[must_use]
    pub fn is_kernel(&self) -> bool {
        self.inner.fd.is_some()
    }

    /// Runs `f` on a fresh thread that has entered this namespace and returns its result. The
    /// calling thread never changes namespace.
    ///
    /// # Errors
    /// [`Error::Netns`] when the namespace cannot be entered (or is a fake one).
    ///
    /// # Panics
    /// Resumes a panic of `f` on the calling thread.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let fd = self.fd().ok_or_else(|| {
            Error::netns(
                self.to_string(),
                io::Error::new(io::ErrorKind::Unsupported, "not a kernel namespace"),
            )
        })?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<T> {
                setns(fd, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::netns(format!("entering {self}"), e))?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

fn named_path(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::netns(
            format!("name {name:?}"),
            io::Error::new(io::ErrorKind::InvalidInput, "not a valid namespace name"),
        ));
    }
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Netns {}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.describe)
    }
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netns")
            .field("describe", &self.inner.describe)
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_and_non_namespace_files() {
        for bad in ["", ".", "..", "a/b"] {
            assert!(
                matches!(Netns::named(bad), Err(Error::Netns { .. })),
                "{bad}"
            );
        }
        let err = Netns::from_path("/proc/self/status").unwrap_err();
        assert!(err.to_string().contains("not a namespace file"), "{err}");
        assert!(matches!(
            Netns::from_path("/nonexistent/ns"),
            Err(Error::Netns { .. })
        ));
    }

    #[test]
    fn named_namespaces_are_created_entered_and_deleted() {
        cnikit_test_support::require_root!("named_namespaces_are_created_entered_and_deleted");
        // The harness's prefix and our pid: a sweep removes it if this test is killed.
        let name = format!("cnkt-{}-named", std::process::id());
        let created = Netns::create_named(&name).unwrap();
        assert!(created.is_kernel());
        assert!(matches!(
            Netns::create_named(&name),
            Err(Error::Netns { .. })
        ));
        let opened = Netns::named(&name).unwrap();
        assert_eq!(opened, created);
        assert_ne!(opened, Netns::current().unwrap());
        let inner = created
            .run(|| fs::read_link("/proc/thread-self/ns/net").unwrap())
            .unwrap();
        assert_ne!(inner, fs::read_link("/proc/self/ns/net").unwrap());
        Netns::delete_named(&name).unwrap();
        assert!(!Path::new(NETNS_RUN_DIR).join(&name).exists());
        Netns::delete_named(&name).unwrap();
        // The open handle keeps the namespace usable after its name is gone.
        assert!(created.run(|| ()).is_ok());
        let scratch = Netns::scratch().unwrap();
        assert_ne!(scratch, created);
        assert_eq!(scratch.path(), None);
    }

    #[test]
    fn current_equals_itself_and_fakes_differ() {
        let a = Netns::current().unwrap();
        let b = Netns::from_pid(std::process::id()).unwrap();
        assert_eq!(a, b);
        assert!(a.is_kernel());
        let f1 = Netns::fake("x");
        let f2 = Netns::fake("x");
        assert_ne!(f1, f2);
        assert!(!f1.is_kernel());
        assert!(f1.run(|| ()).is_err());
    }
}
