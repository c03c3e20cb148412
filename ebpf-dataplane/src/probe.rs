//! The probe classifier: counters and an IPv4 source blocklist.

use std::net::Ipv4Addr;

use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, PerCpuArray},
    programs::SchedClassifier,
};
use cnikit_ebpf_common::probe::{
    BLOCK_ACTION_DROP, BLOCKLIST_CAPACITY, BLOCKLIST_MAP, BlockAction, COUNTERS_MAP, Ipv4SourceKey,
    PROGRAM, ProbeCounter,
};

use crate::{
    Result,
    attach::{self, AttachMode, AttachedVia, Attachment, Direction},
    error::Error,
    object::OBJECT,
};

/// Totals of the probe's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    /// Packets seen on every attachment.
    pub packets: u64,
    /// Bytes (L2 length) seen.
    pub bytes: u64,
    /// Packets dropped because their IPv4 source is blocklisted.
    pub dropped: u64,
}

/// The probe classifier, loaded into the kernel.
///
/// Counts every packet it sees and drops IPv4 packets whose source address is in its blocklist.
/// Dropping the value detaches it everywhere and frees its maps.
#[derive(Debug)]
pub struct ProbeProgram {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
}

impl ProbeProgram {
    /// Loads the embedded object and runs the probe through the verifier.
    ///
    /// # Errors
    /// When the object cannot be loaded (no `CAP_BPF`, memlock limits) or the verifier rejects
    /// the program.
    pub fn load() -> Result<Self> {
        Self::load_from(OBJECT)
    }

    /// Like [`load`](Self::load), from another build of the object (for example one produced by
    /// `cargo xtask build-ebpf` during development).
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn load_from(object: &[u8]) -> Result<Self> {
        let mut ebpf = Ebpf::load(object).map_err(|e| Error::Object { source: e.into() })?;
        let program = classifier(&mut ebpf)?;
        program.load().map_err(|e| Error::Verifier {
            program: PROGRAM,
            source: e.into(),
        })?;
        tracing::debug!(program = PROGRAM, "verifier accepted");
        Ok(Self {
            ebpf,
            attachments: Vec::new(),
        })
    }

    /// Attaches the probe to `interface` (resolved in the calling thread's network namespace).
    ///
    /// # Errors
    /// When the interface does not exist, TCX is forced on an old kernel, or the kernel refuses
    /// the attachment.
    pub fn attach(
        &mut self,
        interface: &str,
        direction: Direction,
        mode: AttachMode,
    ) -> Result<AttachedVia> {
        let program = classifier(&mut self.ebpf)?;
        let attachment = attach::attach(program, PROGRAM, interface, direction, mode, None, false)?;
        let via = attachment.via;
        self.attachments.push(attachment);
        Ok(via)
    }

    /// Detaches from every interface, continuing past failures and reporting all of them.
    ///
    /// # Errors
    /// [`Error::Multiple`] (or the single error) listing every attachment that failed to detach.
    pub fn detach_all(&mut self) -> Result<()> {
        attach::detach_every(std::mem::take(&mut self.attachments))
    }

    /// Drops IPv4 packets from `addr` from now on.
    ///
    /// # Errors
    /// [`Error::BlocklistFull`] at capacity, [`Error::Map`] on other map failures.
    pub fn block_source(&mut self, addr: Ipv4Addr) -> Result<()> {
        let mut map = self.blocklist()?;
        match map.insert(Ipv4SourceKey::from_octets(addr.octets()), BLOCK_ACTION_DROP, 0) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e))
                // The kernel answers E2BIG when a hash map has no free entry.
                if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
            {
                Err(Error::BlocklistFull {
                    addr,
                    capacity: BLOCKLIST_CAPACITY,
                })
            }
            Err(e) => Err(Error::Map {
                map: BLOCKLIST_MAP,
                op: "insert",
                source: e.into(),
            }),
        }
    }

    /// Stops dropping packets from `addr`; returns whether it was blocked.
    ///
    /// # Errors
    /// [`Error::Map`] when the map operation fails.
    pub fn unblock_source(&mut self, addr: Ipv4Addr) -> Result<bool> {
        let mut map = self.blocklist()?;
        match map.remove(&Ipv4SourceKey::from_octets(addr.octets())) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(e) => Err(Error::Map {
                map: BLOCKLIST_MAP,
                op: "remove",
                source: e.into(),
            }),
        }
    }

    /// The counters summed over all CPUs.
    ///
    /// # Errors
    /// [`Error::Map`] when the counters cannot be read.
    pub fn counters(&self) -> Result<ProbeCounters> {
        let map = self.ebpf.map(COUNTERS_MAP).ok_or(Error::Missing {
            kind: "map",
            name: COUNTERS_MAP,
        })?;
        let array = PerCpuArray::<&MapData, u64>::try_from(map).map_err(|e| Error::Map {
            map: COUNTERS_MAP,
            op: "open",
            source: e.into(),
        })?;
        let read = |counter: ProbeCounter| -> Result<u64> {
            let values = array.get(&counter.slot(), 0).map_err(|e| Error::Map {
                map: COUNTERS_MAP,
                op: "read",
                source: e.into(),
            })?;
            Ok(values.iter().sum())
        };
        Ok(ProbeCounters {
            packets: read(ProbeCounter::Packets)?,
            bytes: read(ProbeCounter::Bytes)?,
            dropped: read(ProbeCounter::Dropped)?,
        })
    }

    /// The attachments currently in place, as `(interface, direction, mechanism)`.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, Direction, AttachedVia)> {
        self.attachments
            .iter()
            .map(|a| (a.interface.as_str(), a.direction, a.via))
    }

    fn blocklist(&mut self) -> Result<HashMap<&mut MapData, Ipv4SourceKey, BlockAction>> {
        let map = self.ebpf.map_mut(BLOCKLIST_MAP).ok_or(Error::Missing {
            kind: "map",
            name: BLOCKLIST_MAP,
        })?;
        HashMap::try_from(map).map_err(|e| Error::Map {
            map: BLOCKLIST_MAP,
            op: "open",
            source: e.into(),
        })
    }
}

impl Drop for ProbeProgram {
    /// Detaches in the namespaces the attachments were made in (never in the dropping thread's
    /// namespace, where the same interface index may name another device).
    fn drop(&mut self) {
        if let Err(e) = self.detach_all() {
            tracing::warn!(error = %e, "detaching the probe on drop");
        }
    }
}

fn classifier(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    ebpf.program_mut(PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(Error::Missing {
            kind: "program",
            name: PROGRAM,
        })
}
