//! External helper processes (simulators, DNS servers, ...) with bounded waits.
//!
//! An [`ExternalProcess`] captures stdout and stderr to files (so failures can show them), runs in
//! its own process group, and is killed with its whole group on drop. Every wait takes a timeout
//! and returns early, with the captured output, if the process exits first.

use std::{
    fs::{self, File},
    io,
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);
const POLL: Duration = Duration::from_millis(20);

/// `Ok` when `program` is an executable file in a `PATH` directory; otherwise why not (for
/// `require!` gates on external tools).
///
/// # Errors
/// A message naming the program when it is not found.
pub fn on_path(program: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    if found {
        Ok(())
    } else {
        Err(format!(
            "{program} not found on PATH (scripts/setup.sh installs the tools tests use)"
        ))
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// A child process owned by a test.
#[derive(Debug)]
pub struct ExternalProcess {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ExternalProcess {
    /// Starts `cmd` in a new process group with stdin closed and output captured.
    ///
    /// # Errors
    /// When the log files cannot be created or the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command) -> io::Result<Self> {
        let stem = format!(
            "cnikit-{}-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        let dir = std::env::temp_dir();
        let stdout = dir.join(format!("{stem}.out"));
        let stderr = dir.join(format!("{stem}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::other(format!("starting {name} ({cmd:?}): {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        })
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far, stdout then stderr.
    #[must_use]
    pub fn output(&self) -> String {
        let out = fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = fs::read_to_string(&self.stderr).unwrap_or_default();
        format!(
            "--- {} stdout ---\n{out}--- {} stderr ---\n{err}",
            self.name, self.name
        )
    }

    /// `Some(status)` once the process has exited.
    ///
    /// # Errors
    /// When waiting on the child fails.
    pub fn try_status(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    fn wait_for_impl(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Self) -> bool,
    ) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited ({status}) before {what}\n{}",
                    self.name,
                    self.output()
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} not {what} after {timeout:?}\n{}",
                        self.name,
                        self.output()
                    ),
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until a TCP connection to `addr` succeeds.
    ///
    /// # Errors
    /// On timeout or when the process exits first; the error includes its output.
    pub fn wait_for_tcp(&mut self, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
        self.wait_for_impl(&format!("accepting on {addr}"), timeout, |_| {
            TcpStream::connect_timeout(&addr, POLL).is_ok()
        })
    }

    /// Waits until the process's output contains `needle`.
    ///
    /// # Errors
    /// On timeout or when the process exits first; the error includes its output.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> io::Result<()> {
        self.wait_for_impl(&format!("printing {needle:?}"), timeout, |p| {
            p.output().contains(needle)
        })
    }

    /// Waits until `condition` holds.
    ///
    /// # Errors
    /// On timeout or when the process exits first; the error includes its output.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut() -> bool,
    ) -> io::Result<()> {
        self.wait_for_impl(what, timeout, |_| condition())
    }

    /// Sends SIGTERM to the process group, waits up to `grace`, then SIGKILLs it.
    ///
    /// # Errors
    /// When waiting on the child fails.
    pub fn stop(mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(POLL);
        }
        self.signal(Signal::SIGKILL);
        self.child.wait()
    }

    /// Sends `signal` to the process's group.
    pub fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // The group may already be gone; nothing to do then.
            let _ = killpg(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for ExternalProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGKILL);
            // Reap it; the exit status of a killed helper tells nothing.
            self.child.wait().ok();
        }
        fs::remove_file(&self.stdout).ok();
        fs::remove_file(&self.stderr).ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn finds_programs_on_path() {
        assert_eq!(on_path("sh"), Ok(()));
        let err = on_path("no-such-program-cnikit").unwrap_err();
        assert!(err.contains("no-such-program-cnikit"), "{err}");
    }

    #[test]
    fn waits_for_output_and_stops() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo starting; sleep 0.2; echo ready; exec sleep 30"]);
        let mut p = ExternalProcess::spawn("sleeper", cmd).unwrap();
        p.wait_for_output("ready", Duration::from_secs(5)).unwrap();
        let status = p.stop(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
    }

    #[test]
    fn reports_early_exit_with_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        let mut p = ExternalProcess::spawn("crasher", cmd).unwrap();
        let err = p
            .wait_for_output("never", Duration::from_secs(5))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exited") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn times_out_boundedly() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = ExternalProcess::spawn("idle", cmd).unwrap();
        let start = Instant::now();
        let err = p
            .wait_for_output("never", Duration::from_millis(200))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn waits_for_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let mut p = ExternalProcess::spawn("holder", cmd).unwrap();
        p.wait_for_tcp(addr, Duration::from_secs(5)).unwrap();
    }
}
