//! A throwaway node for the demo, the tests and the benchmarks: a "node" namespace standing in
//! for the host (the agent and the plugin run inside it), a "vpc" namespace playing the cloud's
//! router (each simulated ENI is a veth between the two), the agent on the embedded simulator,
//! and the real `cnikit` binary invoked over the CNI exec protocol. Nothing here touches the
//! namespace it is called from; every namespace and file is removed on drop.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use cnikit_test_support::{
    netns::{Role, TestNetns},
    process::ExternalProcess,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::protocol::{AgentClient, Reply, Request, StatsReply};

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `cnikit`.
    pub plugin: PathBuf,
    /// `cnikit-agent`.
    pub agent: PathBuf,
}

/// The environment variable naming a `cnikit` plugin binary for tests to run instead of the one
/// cargo built beside them (CI points it at the statically linked build nodes run:
/// `scripts/static-plugin.sh`).
pub const PLUGIN_ENV: &str = "CNIKIT_PLUGIN";

impl Binaries {
    /// `self` with the plugin [`PLUGIN_ENV`] names, when it is set.
    #[must_use]
    pub fn with_plugin_from_env(mut self) -> Self {
        if let Some(plugin) = std::env::var_os(PLUGIN_ENV) {
            self.plugin = plugin.into();
        }
        self
    }

    /// The binaries beside the running executable (the demo, built in the same target dir).
    ///
    /// # Errors
    /// When the running executable's path is unknown.
    pub fn beside_current_exe() -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut dir = exe
            .parent()
            .ok_or_else(|| io::Error::other("executable without a directory"))?
            .to_path_buf();
        // Test and bench executables live in `deps/`.
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(Self {
            plugin: dir.join("cnikit"),
            agent: dir.join("cnikit-agent"),
        })
    }
}

impl Binaries {
    /// Symlinks named `cnikit` and `cnikit-agent` in `dir` pointing at the running executable,
    /// which must call [`dispatch_self_exec`] first thing in `main` (benchmarks do: they cannot
    /// depend on another package's binaries).
    ///
    /// # Errors
    /// When the links cannot be made.
    pub fn self_exec(dir: &Path) -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        let bins = Self {
            plugin: dir.join("cnikit"),
            agent: dir.join("cnikit-agent"),
        };
        for link in [&bins.plugin, &bins.agent] {
            match std::fs::remove_file(link) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            std::os::unix::fs::symlink(&exe, link)?;
        }
        Ok(bins)
    }
}

/// When the running executable was started as `cnikit` or `cnikit-agent` (through the links of
/// [`Binaries::self_exec`]), runs that program and returns its exit code.
#[must_use]
pub fn dispatch_self_exec() -> Option<std::process::ExitCode> {
    let mut args = std::env::args();
    let argv0 = args.next()?;
    match Path::new(&argv0).file_name()?.to_str()? {
        "cnikit" => Some(crate::plugin::cli::cli_main()),
        "cnikit-agent" => Some(crate::agent::cli::cli_main(&args.collect::<Vec<_>>())),
        _ => None,
    }
}

/// The outcome of one plugin invocation.
#[derive(Clone, Debug)]
pub struct CniOutcome {
    /// Exit status 0.
    pub success: bool,
    /// Standard output as JSON (`Null` when empty or not JSON).
    pub output: Value,
    /// Standard output as text.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time of the invocation.
    pub elapsed: Duration,
}

impl CniOutcome {
    /// The error code of a failed invocation.
    #[must_use]
    pub fn code(&self) -> Option<u64> {
        self.output.get("code").and_then(Value::as_u64)
    }

    /// The pod address of an `ADD` result (first IP, without its prefix).
    #[must_use]
    pub fn ip(&self) -> Option<std::net::Ipv4Addr> {
        self.output
            .get("ips")?
            .get(0)?
            .get("address")?
            .as_str()?
            .split('/')
            .next()?
            .parse()
            .ok()
    }
}

/// A node.
#[derive(Debug)]
pub struct TestNode {
    /// The node's namespace.
    pub node: TestNetns,
    /// The VPC's namespace.
    pub vpc: TestNetns,
    /// State, configs, socket.
    pub dir: PathBuf,
    /// The binaries.
    pub bins: Binaries,
    /// The agent's configuration (edit before [`TestNode::start_agent`]).
    pub agent_config: Value,
    /// Extra environment of the agent.
    pub agent_env: Vec<(String, String)>,
    agent: Option<ExternalProcess>,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop(Duration::from_secs(5)).ok();
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

impl TestNode {
    /// Node and VPC namespaces and the default agent configuration with everything pointed
    /// inside them (socket and state in a fresh directory, metrics on the node's loopback).
    ///
    /// # Errors
    /// When the namespaces or the directory cannot be made.
    pub fn new(bins: Binaries) -> io::Result<Self> {
        let node = TestNetns::create(Role::Node)?;
        let vpc = TestNetns::create(Role::Vpc)?;
        let dir = std::env::temp_dir().join(format!("cnikit-node-{}", node.name()));
        std::fs::create_dir_all(&dir)?;
        let mut agent_config: Value =
            serde_json::from_str(crate::agent::AgentConfig::DEFAULT).map_err(io::Error::other)?;
        agent_config["socket"] = json!(dir.join("agent.sock"));
        agent_config["state_dir"] = json!(dir.join("state"));
        agent_config["node"]["eni_links"]["vpc_netns"] = json!(vpc.path());
        agent_config["node"]["node_ips"] = json!(["198.18.3.1"]);
        agent_config["catalog"] = json!({ "path": dir.join("catalog.json") });
        agent_config["pool"]["cooldown"] = json!("1s");
        Ok(Self {
            node,
            vpc,
            dir,
            bins,
            agent_config,
            agent_env: Vec::new(),
            agent: None,
        })
    }

    /// The agent's socket.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// The catalog file the agent reads.
    #[must_use]
    pub fn catalog_path(&self) -> PathBuf {
        self.dir.join("catalog.json")
    }

    /// Starts the agent in the node namespace and waits until it serves (at most 30 s).
    ///
    /// # Errors
    /// When it cannot start or exits; the error carries its output.
    pub fn start_agent(&mut self) -> io::Result<()> {
        let config = self.dir.join("agent.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&self.agent_config)?)?;
        let mut cmd = self.node.command(&self.bins.agent.to_string_lossy())?;
        cmd.arg("--config").arg(&config);
        cmd.envs(self.agent_env.iter().map(|(k, v)| (k, v)));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut agent = ExternalProcess::spawn("cnikit-agent", cmd)?;
        agent
            .wait_for_output("cnikit-agent ready", Duration::from_secs(30))
            .map_err(|e| io::Error::other(format!("{e}\n{}", agent.output())))?;
        self.agent = Some(agent);
        Ok(())
    }

    /// Stops the agent with SIGTERM (records stay).
    ///
    /// # Errors
    /// When it does not stop.
    pub fn stop_agent(&mut self) -> io::Result<()> {
        match self.agent.take() {
            Some(a) => a.stop(Duration::from_secs(15)).map(drop),
            None => Ok(()),
        }
    }

    /// Kills the agent with SIGKILL (a crash).
    pub fn kill_agent(&mut self) {
        if let Some(a) = self.agent.take() {
            a.signal(Signal::SIGKILL);
            a.stop(Duration::from_secs(5)).ok();
        }
    }

    /// Sends `signal` to the agent (e.g. SIGKILL from another thread while plugins run); call
    /// [`TestNode::kill_agent`] afterwards to reap it.
    pub fn signal_agent(&self, signal: Signal) {
        if let Some(a) = &self.agent {
            a.signal(signal);
        }
    }

    /// The agent's log so far.
    #[must_use]
    pub fn agent_output(&self) -> String {
        self.agent
            .as_ref()
            .map_or_else(String::new, ExternalProcess::output)
    }

    /// A network configuration for the plugin.
    #[must_use]
    pub fn netconf(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "name": "cnikit-test",
            "type": "cnikit",
            "agentSocket": self.socket(),
            "mode": "veth",
            "timeoutSeconds": 30,
        })
    }

    /// Runs the plugin in the node namespace.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn cni(
        &self,
        command: &str,
        conf: &Value,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
        args: &str,
    ) -> io::Result<CniOutcome> {
        let mut cmd = self.node.command(&self.bins.plugin.to_string_lossy())?;
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = netns {
            cmd.env("CNI_NETNS", ns);
        }
        if !args.is_empty() {
            cmd.env("CNI_ARGS", args);
        }
        run_with_stdin(cmd, &serde_json::to_vec(conf)?)
    }

    /// `ADD` of pod `namespace/name` (sandbox `container_id`) in `pod`'s namespace.
    ///
    /// # Errors
    /// When the plugin cannot be started.
    pub fn add(
        &self,
        conf: &Value,
        container_id: &str,
        pod: &TestNetns,
        namespace: &str,
        name: &str,
    ) -> io::Result<CniOutcome> {
        self.cni(
            "ADD",
            conf,
            container_id,
            Some(pod.path()),
            "eth0",
            &format!("K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"),
        )
    }

    /// A client of the agent's socket.
    #[must_use]
    pub fn client(&self) -> AgentClient {
        AgentClient::new(self.socket())
    }

    /// The agent's counters.
    ///
    /// # Errors
    /// When the agent cannot be reached.
    pub async fn stats(&self) -> io::Result<StatsReply> {
        match self
            .client()
            .call(Request::Stats, Duration::from_secs(10))
            .await
            .map_err(io::Error::other)?
        {
            Reply::Stats(s) => Ok(s),
            other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
        }
    }

    /// Waits (asking every millisecond, at most `limit`) until the agent has deleted the veth
    /// pairs of the pods whose `DEL` answered (`stats.retiring == 0`); true when it has, or
    /// when the agent cannot be reached (an agent that is down deletes nothing).
    #[must_use]
    pub fn wait_retired(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let retiring = self
                .node
                .run_async(|| async { self.stats().await })
                .map_or(0, |s| s.retiring);
            if retiring == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Runs `cmd` with `stdin` and collects its output.
///
/// # Errors
/// When it cannot be started or waited for.
pub fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> io::Result<CniOutcome> {
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin)?;
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(CniOutcome {
        success: out.status.success(),
        output: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// A UDP echo server in a namespace: answers every datagram with a fixed text (e.g. the pod's
/// name, so that load balancing is visible). Stops on drop.
#[derive(Debug)]
pub struct Echo {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

impl Echo {
    /// Binds `addr` in `netns` and answers with `reply`.
    ///
    /// # Errors
    /// When the address cannot be bound there.
    pub fn start(netns: &TestNetns, addr: std::net::SocketAddr, reply: &str) -> io::Result<Self> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = std::sync::Arc::clone(&stop);
        let reply = reply.to_owned();
        let thread = netns.spawn(move || {
            let socket = match std::net::UdpSocket::bind(addr) {
                Ok(s) => s,
                Err(e) => {
                    tx.send(Err(e)).ok();
                    return;
                }
            };
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .ok();
            tx.send(Ok(())).ok();
            let mut buf = [0_u8; 1500];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    socket.send_to(reply.as_bytes(), from).ok();
                }
            }
        })?;
        rx.recv()
            .map_err(|_| io::Error::other("echo thread ended"))??;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

/// Sends one datagram from `netns` to `to` and returns the answer (`None` when nothing came
/// back within `wait`), with the address it came from.
///
/// # Errors
/// When the socket cannot be made or the send fails.
pub fn ask(
    netns: &TestNetns,
    to: std::net::SocketAddr,
    wait: Duration,
) -> io::Result<Option<(String, std::net::SocketAddr)>> {
    netns.run(|| {
        let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
        socket.set_read_timeout(Some(wait))?;
        socket.send_to(b"hello", to)?;
        let mut buf = [0_u8; 1500];
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => Ok(Some((
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                from,
            ))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            // A rejected service or an unreachable port.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
            Err(e) => Err(e),
        }
    })
}

/// The ECS simulator over HTTP on the node's loopback, outliving agent restarts (the cloud a
/// real agent restarts against). Stops on drop.
#[derive(Debug)]
pub struct HttpCloud {
    /// The simulated region (for its call counters).
    pub cloud: cnikit_cloud_api::sim::SimCloud,
    /// The ECS API's base URL.
    pub url: String,
    /// The metadata service's base URL.
    pub metadata_url: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for HttpCloud {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

/// The access key the HTTP simulator accepts.
pub const SIM_KEY: (&str, &str) = ("cnikit-test", "cnikit-test-secret");

impl HttpCloud {
    /// Starts the simulator in `netns` on `127.0.0.1` (a port the kernel picks).
    ///
    /// # Errors
    /// When it cannot start.
    pub fn start(netns: &TestNetns, config: cnikit_cloud_api::sim::SimConfig) -> io::Result<Self> {
        use cnikit_cloud_api::sim::{AccessKey, HttpSim, HttpSimConfig, SimCloud};
        let cloud = SimCloud::new(config).map_err(io::Error::other)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let served = cloud.clone();
        let thread = netns.spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    ready_tx.send(Err(e.to_string())).ok();
                    return;
                }
            };
            runtime.block_on(async move {
                let cfg = HttpSimConfig::new(AccessKey::new(SIM_KEY.0, SIM_KEY.1));
                let sim = match HttpSim::start(served, cfg, ([127, 0, 0, 1], 0).into()).await {
                    Ok(s) => s,
                    Err(e) => {
                        ready_tx.send(Err(e.to_string())).ok();
                        return;
                    }
                };
                ready_tx.send(Ok((sim.url(), sim.metadata_url()))).ok();
                // Serve until the owner drops its end.
                tokio::task::spawn_blocking(move || stop_rx.recv().ok())
                    .await
                    .ok();
                sim.stop().await;
            });
        })?;
        let (url, metadata_url) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("simulator thread ended"))?
            .map_err(io::Error::other)?;
        Ok(Self {
            cloud,
            url,
            metadata_url,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl TestNode {
    /// Points the agent at `cloud` through the ECS client (provider `alibaba`).
    pub fn use_http_cloud(&mut self, cloud: &HttpCloud) {
        self.agent_config["cloud"] = json!({
            "provider": "alibaba",
            "region": "cn-hangzhou",
            "endpoint": cloud.url,
            "metadata_url": cloud.metadata_url,
            "credentials": { "source": "static", "access_key_id": SIM_KEY.0, "access_key_secret": SIM_KEY.1 },
        });
        self.agent_config["pool"]["security_groups"] =
            json!([cnikit_cloud_api::sim::DEFAULT_SECURITY_GROUP]);
    }
}

/// A TCP relay from `127.0.0.1` in a test namespace to a server on the loopback of the
/// namespace the test runs in (e.g. `moto_server`), so that an agent inside the node namespace
/// reaches it without any change to either namespace's addresses or routes: the listening
/// socket is made inside the namespace, the outgoing connections from the caller's thread.
/// Stops on drop (connections in flight end when either side closes).
#[derive(Debug)]
pub struct TcpRelay {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().ok();
        }
    }
}

impl TcpRelay {
    /// Listens on `127.0.0.1` (a free port) in `netns` and forwards each connection to
    /// `target`, connecting from the calling thread's namespace.
    ///
    /// # Errors
    /// When the listener cannot be made.
    pub fn start(netns: &TestNetns, target: std::net::SocketAddr) -> io::Result<Self> {
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = netns.run(|| TcpListener::bind(("127.0.0.1", 0)))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        // Plain threads: they stay in the caller's namespace, where `target` listens.
        let thread = std::thread::spawn(move || {
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    io::copy(&mut from, &mut to).ok();
                    to.shutdown(Shutdown::Write).ok();
                });
            };
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let Ok(outside) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        let (Ok(inside2), Ok(outside2)) = (inside.try_clone(), outside.try_clone())
                        else {
                            continue;
                        };
                        inside.set_nonblocking(false).ok();
                        pipe(inside, outside);
                        pipe(outside2, inside2);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/` (valid inside the namespace).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}
