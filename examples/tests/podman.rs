//! A real container runtime on a cnikit network: podman (Debian's 4.3, CNI backend, runc) runs
//! busybox containers (an image made with `podman import`, no registry) whose network is the
//! `cnikit` plugin talking to `cnikit-agent`.
//!
//! Safety: podman itself runs inside the test's node namespace, so the plugin it executes wires
//! only that namespace and the container namespaces podman creates; podman's storage, run
//! directory, configuration and network configuration live in the test's directory. Nothing is
//! added to the root network namespace.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use cnikit_examples::harness::{Binaries, TestNode};
use cnikit_test_support::{process::on_path, require, require_root};
use serde_json::json;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 253);
const IMAGE: &str = "localhost/cnikit-busybox:latest";

struct Podman<'a> {
    node: &'a TestNode,
    dir: PathBuf,
}

impl Podman<'_> {
    fn cmd(&self) -> Command {
        let mut cmd = self.node.node.command("podman").unwrap();
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env(
                "CONTAINERS_REGISTRIES_CONF",
                self.dir.join("registries.conf"),
            )
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // Containers go (their DEL runs), then podman's own mounts under the directory.
        self.cmd().args(["rm", "-a", "-f", "-t", "0"]).output().ok();
        self.cmd().args(["system", "reset", "-f"]).output().ok();
    }
}

/// A busybox root filesystem as a tarball (`podman import` makes it an image).
fn rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for d in ["etc", "proc", "sys", "dev", "tmp", "www", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "ip", "cat", "sleep", "nc", "printf", "httpd", "nslookup", "echo",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), "hello from a\n").unwrap();
    let tar = dir.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    tar
}

/// A one-answer-per-connection HTTP server in the VPC namespace (the VPC stand-in).
fn vpc_http(node: &TestNode, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let listener = node.vpc.run(|| TcpListener::bind((GATEWAY, 8080))).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).ok();
                    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                    // The request line is enough; the answer does not depend on it.
                    let mut buf = [0_u8; 1024];
                    if s.read(&mut buf).unwrap_or(0) == 0 {
                        continue;
                    }
                    s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom vpc\n")
                        .ok();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

#[test]
fn podman_containers_on_a_cnikit_network() {
    require_root!("podman_containers_on_a_cnikit_network");
    require!(
        "podman_containers_on_a_cnikit_network",
        "podman, runc, busybox and tar",
        on_path("podman")
            .and_then(|()| on_path("runc"))
            .and_then(|()| on_path("tar"))
            .and_then(|()| if Path::new("/usr/bin/busybox").exists() {
                Ok(())
            } else {
                Err("no /usr/bin/busybox".into())
            })
    );
    let mut node = TestNode::new(
        Binaries {
            plugin: env!("CARGO_BIN_EXE_cnikit").into(),
            agent: env!("CARGO_BIN_EXE_cnikit-agent").into(),
        }
        .with_plugin_from_env(),
    )
    .unwrap();
    node.start_agent().unwrap();
    let dir = node.dir.join("podman");
    for d in ["storage", "run", "tmp", "net.d", "plugins"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(&node.bins.plugin, dir.join("plugins/cnikit")).unwrap();
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "cnikit",
        "plugins": [{ "type": "cnikit", "agentSocket": node.socket(), "mode": "veth" }]
    });
    std::fs::write(dir.join("net.d/cnikit.conflist"), conflist.to_string()).unwrap();
    std::fs::write(
        dir.join("containers.conf"),
        format!(
            "[network]\nnetwork_backend=\"cni\"\ncni_plugin_dirs=[\"{}\", \"/usr/lib/cni\"]\nnetwork_config_dir=\"{}\"\ndefault_network=\"cnikit\"\n\n[engine]\ncgroup_manager=\"cgroupfs\"\nevents_logger=\"file\"\nevents_logfile_path=\"{}\"\nruntime=\"runc\"\n",
            dir.join("plugins").display(),
            dir.join("net.d").display(),
            dir.join("events.log").display(),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("registries.conf"),
        "unqualified-search-registries = []\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("storage").display(),
            dir.join("run").display()
        ),
    )
    .unwrap();
    let podman = Podman {
        node: &node,
        dir: dir.clone(),
    };
    podman.run(&["import", &rootfs(&dir).to_string_lossy(), IMAGE]);

    let limits = [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    let mut run_a = vec!["run", "-d", "--name", "a", "--network", "cnikit"];
    run_a.extend(limits);
    run_a.extend([IMAGE, "httpd", "-f", "-p", "8080", "-h", "/www"]);
    podman.run(&run_a);
    let a_ip: Ipv4Addr = podman
        .run(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.cnikit.IPAddress}}",
            "a",
        ])
        .parse()
        .unwrap();
    assert_eq!(&a_ip.octets()[..2], &[198, 18]);

    // A Service in front of container a, published to the node's DNS.
    std::fs::write(
        node.catalog_path(),
        json!({ "services": [{ "namespace": "shop", "name": "web", "cluster_ip": "198.19.0.10",
            "ports": [{ "protocol": "TCP", "port": 80, "target_port": 8080 }],
            "backends": [{ "ip": a_ip }] }] })
        .to_string(),
    )
    .unwrap();
    node.node.run_async(|| async {
        node.client()
            .call(
                cnikit_examples::protocol::Request::Reload,
                Duration::from_secs(5),
            )
            .await
            .unwrap()
    });

    let stop = Arc::new(AtomicBool::new(false));
    let vpc = vpc_http(&node, Arc::clone(&stop));
    // busybox's wget crashes in Debian's static build; plain HTTP over nc does the job.
    let get = |host: &str, port: u16| {
        format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} 2>&1")
    };
    let script = format!(
        "ip -4 -o addr show eth0; echo ---; {}; echo ---; {}; echo ---; {}; echo ---; \
         cat /etc/resolv.conf; echo ---; nslookup web.shop.default.svc.cluster.local 169.254.20.10",
        get(&a_ip.to_string(), 8080),
        get(&GATEWAY.to_string(), 8080),
        get("198.19.0.10", 80),
    );
    let mut run_b = vec!["run", "--rm", "--name", "b", "--network", "cnikit"];
    run_b.extend(limits);
    run_b.extend([IMAGE, "sh", "-c", &script]);
    let out = podman.run(&run_b);
    stop.store(true, Ordering::Relaxed);
    vpc.join().unwrap();
    let sections: Vec<&str> = out.split("---").map(str::trim).collect();
    assert_eq!(sections.len(), 6, "{out}");
    assert!(sections[0].contains("inet 198.18."), "b's address: {out}");
    assert!(
        sections[1].ends_with("hello from a"),
        "container to container: {out}"
    );
    assert!(
        sections[2].ends_with("from vpc"),
        "container to the VPC: {out}"
    );
    assert!(
        sections[3].ends_with("hello from a"),
        "container to a ClusterIP Service: {out}"
    );
    assert!(sections[4].starts_with("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 169.254.20.10"), "resolv.conf: {out}");
    // AutoPath: the first step of a search walk is answered with the Service.
    assert!(
        sections[5].contains("canonical name = web.shop.svc.cluster.local")
            && sections[5].contains("198.19.0.10"),
        "DNS: {out}"
    );

    // Removing the containers leaves nothing behind on the node.
    podman.run(&["rm", "-f", "-t", "0", "a"]);
    let stats = node
        .node
        .run_async(|| async { node.stats().await.unwrap() });
    assert_eq!(stats.endpoints, 0, "{out}");
    assert_eq!(stats.pool.in_use, 0);
    // The agent deletes a pod's veth pair after its DEL answered.
    let deleted = node.wait_retired(Duration::from_secs(10));
    assert!(deleted, "veth deletions still running");
    let links = node.node.ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains(": cnk"), "{links}");
    let rules = node.node.ip(&["rule", "show"]).unwrap();
    assert!(!rules.contains("198.18."), "{rules}");
    drop(podman);
}
