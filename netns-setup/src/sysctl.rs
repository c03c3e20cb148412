//! Network sysctls of a namespace, written in-process (`/proc/sys/net/...` as seen from a thread
//! inside the namespace); no `sysctl` binary.
//!
//! The drivers change no sysctl. Node preparation usually needs forwarding on, which
//! [`enable_forwarding`] does for one namespace.

use std::{fs, io};

use crate::{Error, Result, netns::Netns};

/// Reads `key` (slash-separated under `/proc/sys`, e.g. `net/ipv4/ip_forward`) in `netns`.
///
/// # Errors
/// [`Error::Netns`] when the namespace cannot be entered or the key read.
pub fn get(netns: &Netns, key: &str) -> Result<String> {
    let path = path(key)?;
    netns
        .run(|| fs::read_to_string(&path))?
        .map(|v| v.trim().to_owned())
        .map_err(|e| Error::netns(format!("{netns}: reading {path}"), e))
}

/// Writes `value` to `key` in `netns`.
///
/// # Errors
/// [`Error::Netns`] when the namespace cannot be entered or the key written.
pub fn set(netns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = path(key)?;
    netns
        .run(|| fs::write(&path, value))?
        .map_err(|e| Error::netns(format!("{netns}: writing {path}"), e))
}

/// Turns on IPv4 and IPv6 forwarding in `netns`.
///
/// # Errors
/// As [`set`].
pub fn enable_forwarding(netns: &Netns) -> Result<()> {
    set(netns, "net/ipv4/ip_forward", "1")?;
    set(netns, "net/ipv6/conf/all/forwarding", "1")
}

fn path(key: &str) -> Result<String> {
    let valid = key.starts_with("net/")
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if valid {
        Ok(format!("/proc/sys/{key}"))
    } else {
        Err(Error::netns(
            format!("sysctl {key:?}"),
            io::Error::new(io::ErrorKind::InvalidInput, "not a net/... sysctl key"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_the_namespace_only() {
        cnikit_test_support::require_root!("writes_land_in_the_namespace_only");
        let ns = Netns::scratch().unwrap();
        let ours = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        enable_forwarding(&ns).unwrap();
        assert_eq!(get(&ns, "net/ipv4/ip_forward").unwrap(), "1");
        assert_eq!(get(&ns, "net/ipv6/conf/all/forwarding").unwrap(), "1");
        assert_eq!(
            fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            ours
        );
        assert!(set(&ns, "net/ipv4/no_such_key", "1").is_err());
    }

    #[test]
    fn rejects_keys_outside_net() {
        for bad in ["kernel/hostname", "net/../kernel/x", "net//x", ""] {
            assert!(path(bad).is_err(), "{bad}");
        }
        assert_eq!(
            path("net/ipv4/ip_forward").unwrap(),
            "/proc/sys/net/ipv4/ip_forward"
        );
    }
}
