//! Snapshots of a namespace's network state, read with iproute2 (an oracle independent of the
//! code under test): links, addresses, routes (every table), rules and neighbours, both
//! families. Two snapshots compare equal exactly when nothing was added, removed or changed.

use std::{fmt, io};

use crate::netns::TestNetns;

/// The network state of one namespace, normalised so that equal state compares equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetState {
    /// `ip -o link` lines (statistics excluded).
    pub links: Vec<String>,
    /// `ip -o addr` lines, both families (without the transient `tentative` flag).
    pub addresses: Vec<String>,
    /// `ip route show table all`, both families.
    pub routes: Vec<String>,
    /// `ip rule`, both families.
    pub rules: Vec<String>,
    /// Unicast neighbours as `<ip> dev <link> lladdr <mac> [PERMANENT]`, any state, both
    /// families (the transient reachability state is left out, and so are the kernel's NOARP
    /// entries for multicast groups, which come and go with its own router solicitations).
    pub neighbours: Vec<String>,
}

fn normalise(line: &str) -> String {
    line.split_whitespace()
        // Duplicate address detection in progress: transient, not a difference.
        .filter(|w| *w != "tentative")
        .collect::<Vec<_>>()
        .join(" ")
}

fn lines(ns: &TestNetns, args: &[&str]) -> io::Result<Vec<String>> {
    let mut out: Vec<String> = ns
        .ip(args)?
        .lines()
        .map(normalise)
        .filter(|l| !l.is_empty())
        .collect();
    out.sort();
    Ok(out)
}

/// Runs `commands` (none of which lists links) through one `ip -o <family> -batch -` and
/// returns each command's lines.
///
/// One process per family instead of one per command: under the VM's software emulation a
/// process start costs tens of milliseconds. Sections are told apart by a `link show dev lo`
/// between them (loopback is always link 1, and its line is unmistakable).
fn batch(ns: &TestNetns, family: &str, commands: &[&str]) -> io::Result<Vec<Vec<String>>> {
    use std::io::Write as _;
    const SEPARATOR: &str = "link show dev lo";
    let args = ["-o", family, "-batch", "-"];
    let mut child = ns
        .command("ip")?
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::other(format!("running `ip` (install iproute2): {e}")))?;
    let script: String = commands
        .iter()
        .flat_map(|c| [*c, SEPARATOR])
        .map(|c| format!("{c}\n"))
        .collect();
    child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin"))?
        .write_all(script.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let mut sections = vec![Vec::new()];
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if line.starts_with("1: lo:") && line.contains("link/loopback") {
            sections.push(Vec::new());
        } else if !line.trim().is_empty()
            && let Some(section) = sections.last_mut()
        {
            section.push(normalise(line));
        }
    }
    sections.truncate(commands.len());
    if sections.len() != commands.len() {
        return Err(io::Error::other(
            "ip -batch printed fewer sections than commands",
        ));
    }
    for section in &mut sections {
        section.sort();
    }
    Ok(sections)
}

/// Keeps the identity of a neighbour entry and whether it is permanent.
fn neighbour_identity(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "dev" | "lladdr" if i + 1 < words.len() => {
                kept.push(words[i]);
                kept.push(words[i + 1]);
                i += 2;
            }
            "PERMANENT" => {
                kept.push("PERMANENT");
                i += 1;
            }
            w if i == 0 => {
                kept.push(w);
                i += 1;
            }
            _ => i += 1,
        }
    }
    kept.join(" ")
}

/// Whether a neighbour line is for a multicast group (`ff00::/8`, `224.0.0.0/4`).
fn is_multicast(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_multicast())
}

impl NetState {
    /// Reads the state of `ns`.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn capture(ns: &TestNetns) -> io::Result<Self> {
        const PER_FAMILY: [&str; 3] = ["route show table all", "rule show", "neigh show nud all"];
        let links = lines(ns, &["-o", "link", "show"])?;
        let addresses = lines(ns, &["-o", "addr", "show"])?;
        let mut routes = Vec::new();
        let mut rules = Vec::new();
        let mut neighbours = Vec::new();
        for family in ["-4", "-6"] {
            let [r, u, n]: [Vec<String>; 3] = batch(ns, family, &PER_FAMILY)?
                .try_into()
                .map_err(|_| io::Error::other("expected three sections"))?;
            routes.extend(r);
            rules.extend(u);
            neighbours.extend(
                n.iter()
                    .map(|l| neighbour_identity(l))
                    .filter(|l| !is_multicast(l)),
            );
        }
        neighbours.sort();
        Ok(Self {
            links,
            addresses,
            routes,
            rules,
            neighbours,
        })
    }

    /// What differs from `before`, one line per object: `+ routes: ...` for objects only in
    /// `self`, `- routes: ...` for objects only in `before`.
    #[must_use]
    pub fn diff(&self, before: &Self) -> Vec<String> {
        let mut out = Vec::new();
        let pairs = [
            ("links", &before.links, &self.links),
            ("addresses", &before.addresses, &self.addresses),
            ("routes", &before.routes, &self.routes),
            ("rules", &before.rules, &self.rules),
            ("neighbours", &before.neighbours, &self.neighbours),
        ];
        for (what, old, new) in pairs {
            for line in old.iter().filter(|l| !new.contains(l)) {
                out.push(format!("- {what}: {line}"));
            }
            for line in new.iter().filter(|l| !old.contains(l)) {
                out.push(format!("+ {what}: {line}"));
            }
        }
        out
    }
}

impl fmt::Display for NetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (what, lines) in [
            ("links", &self.links),
            ("addresses", &self.addresses),
            ("routes", &self.routes),
            ("rules", &self.rules),
            ("neighbours", &self.neighbours),
        ] {
            writeln!(f, "{what}:")?;
            for line in lines {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{netns::Role, require_root};

    #[test]
    fn neighbour_identity_drops_state() {
        assert_eq!(
            neighbour_identity("198.18.0.1 dev eth1 lladdr 02:00:00:00:00:01 STALE"),
            "198.18.0.1 dev eth1 lladdr 02:00:00:00:00:01"
        );
        assert_eq!(
            neighbour_identity("169.254.1.1 dev eth0 lladdr ee:cb:00:00:00:01 PERMANENT"),
            "169.254.1.1 dev eth0 lladdr ee:cb:00:00:00:01 PERMANENT"
        );
        assert_eq!(
            neighbour_identity("198.18.0.9 dev eth1 FAILED"),
            "198.18.0.9 dev eth1"
        );
    }

    #[test]
    fn snapshot_sees_every_kind_of_change() {
        require_root!("snapshot_sees_every_kind_of_change");
        let ns = TestNetns::create(Role::Node).unwrap();
        let peer = TestNetns::create(Role::Peer).unwrap();
        let before = NetState::capture(&ns).unwrap();
        assert_eq!(NetState::capture(&ns).unwrap(), before);
        ns.veth_to(&peer, "v0", "v1").unwrap();
        ns.ip(&["addr", "add", "198.18.7.1/24", "dev", "v0"])
            .unwrap();
        ns.ip(&[
            "route",
            "add",
            "198.18.8.0/24",
            "via",
            "198.18.7.2",
            "table",
            "1007",
        ])
        .unwrap();
        ns.ip(&[
            "rule",
            "add",
            "from",
            "198.18.7.9",
            "lookup",
            "1007",
            "prio",
            "2048",
        ])
        .unwrap();
        ns.ip(&[
            "neigh",
            "add",
            "198.18.7.2",
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "v0",
        ])
        .unwrap();
        let after = NetState::capture(&ns).unwrap();
        let diff = after.diff(&before);
        for what in ["links", "addresses", "routes", "rules", "neighbours"] {
            assert!(
                diff.iter().any(|l| l.starts_with(&format!("+ {what}:"))),
                "{what} not in {diff:#?}"
            );
        }
        assert!(before.diff(&after).iter().all(|l| l.starts_with("- ")));
    }
}
