//! `moto_server` (the Python package `moto[server]`): a real EC2 Query API on loopback for the AWS tests.
//!
//! [`MotoServer::shared`] starts one server per test process on `127.0.0.1` and a free port;
//! every test of the binary uses it (tests create their own VPCs, so they do not collide). A
//! watchdog shell around it ends the server when the test process exits, since a `static`
//! is never dropped. [`MotoServer::start`] gives a private one, killed on drop.

use std::{
    io,
    net::{SocketAddr, TcpListener},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use crate::process::{ExternalProcess, on_path};

/// The program the tests run.
pub const PROGRAM: &str = "moto_server";

/// A running `moto_server`.
#[derive(Debug)]
pub struct MotoServer {
    process: ExternalProcess,
    addr: SocketAddr,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl MotoServer {
    /// Whether `moto_server` can be run (for `require!` gates).
    ///
    /// # Errors
    /// Why not.
    pub fn available() -> Result<(), String> {
        on_path(PROGRAM)
    }

    fn spawn(watch_pid: Option<u32>) -> io::Result<Self> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = Command::new("sh");
        // The server in the background; the shell ends it when the watched process is gone.
        let watch = watch_pid.map_or_else(
            || "wait $m".to_owned(),
            |pid| {
                format!(
                    "while kill -0 {pid} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done; kill $m 2>/dev/null; wait $m"
                )
            },
        );
        cmd.arg("-c").arg(format!(
            "{PROGRAM} -H 127.0.0.1 -p {port} & m=$!; trap 'kill $m 2>/dev/null' TERM INT; {watch}"
        ));
        let mut process = ExternalProcess::spawn("moto_server", cmd)?;
        process.wait_for_tcp(addr, Duration::from_secs(60))?;
        Ok(Self { process, addr })
    }

    /// A private server, killed when dropped.
    ///
    /// # Errors
    /// When it cannot be started or does not listen within 60 s.
    pub fn start() -> io::Result<Self> {
        Self::spawn(None)
    }

    /// The server shared by every test of this process (started on first use).
    ///
    /// # Errors
    /// Why it could not be started (the same message on every later call).
    pub fn shared() -> Result<&'static Self, String> {
        static SHARED: OnceLock<Result<MotoServer, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::spawn(Some(std::process::id())).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `http://127.0.0.1:PORT/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The listening address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the server printed (for failure messages).
    #[must_use]
    pub fn output(&self) -> String {
        self.process.output()
    }
}
