//! A private bpf filesystem for tests that pin BPF objects.
//!
//! Every mount of bpffs is a new instance (holding at most the kernel's preloaded `*.debug`
//! iterators), so pinning under a [`TestBpffs`] never touches
//! the host's `/sys/fs/bpf`. The mount point (`/run/cnikit-bpffs-<pid>-<n>`) is unmounted and
//! removed on drop; [`sweep`] removes those of dead processes.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);
const PARENT: &str = "/run";
const PREFIX: &str = "cnikit-bpffs-";

/// A freshly mounted bpffs instance, unmounted and removed on drop.
#[derive(Debug)]
pub struct TestBpffs {
    path: PathBuf,
}

impl TestBpffs {
    /// Mounts a new bpffs instance at a unique path.
    ///
    /// # Errors
    /// When not privileged enough to mount, or the kernel lacks bpffs.
    pub fn mount() -> io::Result<Self> {
        if let Err(e) = sweep() {
            eprintln!("cnikit-test-support: sweeping leftover bpffs mounts failed: {e}");
        }
        let path = Path::new(PARENT).join(format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)?;
        let this = Self { path };
        mount(
            Some("bpf"),
            &this.path,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .map_err(|e| io::Error::other(format!("mounting bpffs at {}: {e}", this.path.display())))?;
        Ok(this)
    }

    /// The mount point.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn remove(path: &Path) -> io::Result<()> {
    // Lazy unmount: pinned objects are released once nothing uses them.
    let unmounted = umount2(path, MntFlags::MNT_DETACH);
    match (unmounted, fs::remove_dir(path)) {
        (_, Ok(())) => Ok(()),
        (Err(e), Err(r)) => Err(io::Error::other(format!(
            "removing {}: umount: {e}; rmdir: {r}",
            path.display()
        ))),
        (Ok(()), Err(r)) => Err(r),
    }
}

impl Drop for TestBpffs {
    fn drop(&mut self) {
        if let Err(e) = remove(&self.path) {
            eprintln!("cnikit-test-support: {e}");
        }
    }
}

/// Unmounts and removes the bpffs mounts of dead test processes; returns their paths.
///
/// # Errors
/// When the parent directory cannot be read or a leftover cannot be removed.
pub fn sweep() -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(PARENT) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        remove(&entry.path())?;
        removed.push(entry.path());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::require_root;

    #[test]
    fn private_bpffs_is_mounted_and_removed() {
        require_root!("private_bpffs_is_mounted_and_removed");
        let fs = TestBpffs::mount().unwrap();
        let path = fs.path().to_owned();
        let magic = nix::sys::statfs::statfs(&path).unwrap().filesystem_type();
        assert_eq!(magic.0, 0xcafe_4a11, "bpffs magic");
        // A new instance holds at most the kernel's preloaded iterators (maps.debug, ...).
        fs::write(path.join("not-allowed"), b"x").unwrap_err();
        drop(fs);
        assert!(!path.exists());
    }
}
