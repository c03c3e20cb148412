//! Choosing and performing a tc attachment (TCX or clsact).

use std::{
    fmt,
    fs::{self, File},
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, Link as _, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    },
    util::KernelVersion,
};
use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Source};

/// Which side of an interface a program sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Packets the interface receives.
    Ingress,
    /// Packets the interface transmits.
    Egress,
}

impl Direction {
    fn tc(self) -> TcAttachType {
        match self {
            Self::Ingress => TcAttachType::Ingress,
            Self::Egress => TcAttachType::Egress,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// How to attach a tc program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX when the kernel has it (>= 6.6), otherwise clsact.
    #[default]
    Auto,
    /// TCX links (kernel >= 6.6); an error on older kernels.
    Tcx,
    /// A `cls_bpf` filter on a `clsact` qdisc (added if missing), on any kernel.
    Clsact,
}

/// The mechanism an attachment used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachedVia {
    /// A TCX link.
    Tcx,
    /// A `cls_bpf` filter on the `clsact` qdisc.
    Clsact,
}

impl fmt::Display for AttachedVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        })
    }
}

/// Whether the running kernel supports TCX links (Linux >= 6.6).
#[must_use]
pub fn tcx_supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Adds a `clsact` qdisc to `interface` (resolved in the calling thread's network namespace)
/// unless it has one.
fn ensure_clsact(interface: &str) -> Result<(), TcError> {
    match tc::qdisc_add_clsact(interface) {
        // Another program (or an earlier run) already added it.
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Keeps the kernel's tc hooks enabled while endpoints come and go, by leaving a `clsact`
/// qdisc (without filters) on `interface` (resolved in the calling thread's network namespace;
/// one it already has is kept as it is).
///
/// The kernel runs its tc ingress and egress hooks only while some interface in the system has
/// a `clsact` qdisc or a TCX program: the first one switches them on and the last one to go
/// switches them off, each time patching the packet path's code on every CPU. A node whose only
/// attachments are its pods' would pay that whenever its pod count crosses zero, in the first
/// pod's attach and the last pod's deletion (0.2-0.5 ms per pair on the test machine). Hold
/// them on an interface that outlives the pods, such as the node's ENI; the qdisc costs a
/// packet on that interface one pointer check per direction.
///
/// # Errors
/// [`Error::Qdisc`] when the interface does not exist or the kernel refuses the qdisc.
pub fn hold_tc_hooks(interface: &str) -> Result<(), Error> {
    ensure_clsact(interface).map_err(|e| Error::Qdisc {
        interface: interface.to_owned(),
        source: e.into(),
    })
}

/// How an attachment survives its owner (a restarting agent).
#[derive(Debug)]
pub(crate) struct Persist {
    /// Where a TCX link is pinned (in bpffs).
    pub(crate) link_pin: PathBuf,
    /// Fixed clsact filter priority and handle, so a restarted agent finds its filter again.
    pub(crate) nl_priority: u16,
    pub(crate) nl_handle: u16,
}

/// One attachment of a program, with what is needed to undo it from any thread.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub(crate) program: &'static str,
    pub(crate) interface: String,
    pub(crate) direction: Direction,
    pub(crate) via: AttachedVia,
    /// Whether an attachment left by an earlier owner was taken over (its program replaced).
    pub(crate) replaced: bool,
    link: Option<SchedClassifierLink>,
    /// The network namespace the attachment was made in. Netlink (clsact) detachment addresses
    /// the interface by index, so it must run there and nowhere else.
    netns: File,
    /// The bpffs pin of a TCX link.
    pin: Option<PathBuf>,
}

fn choose(mode: AttachMode) -> Result<AttachedVia, Error> {
    match mode {
        AttachMode::Auto if tcx_supported() => Ok(AttachedVia::Tcx),
        AttachMode::Auto | AttachMode::Clsact => Ok(AttachedVia::Clsact),
        AttachMode::Tcx if tcx_supported() => Ok(AttachedVia::Tcx),
        AttachMode::Tcx => Err(Error::TcxUnsupported),
    }
}

/// Attaches `program` to `interface` (resolved in the calling thread's network namespace).
///
/// With `persist`, an attachment an earlier owner left in place is taken over: the pinned TCX
/// link gets the new program atomically (`bpf_link_update`), or the clsact filter with the same
/// priority and handle is replaced; otherwise a new one is made (and a TCX link pinned).
/// `has_clsact`: the caller just made sure the interface has a `clsact` qdisc (the second
/// program of an endpoint), so a clsact attachment does not ask again.
pub(crate) fn attach(
    program: &mut SchedClassifier,
    name: &'static str,
    interface: &str,
    direction: Direction,
    mode: AttachMode,
    persist: Option<&Persist>,
    has_clsact: bool,
) -> Result<Attachment, Error> {
    let via = choose(mode)?;
    let fail = |source: Source| Error::Attach {
        program: name,
        interface: interface.to_owned(),
        direction,
        via,
        source,
    };
    let netns = File::open("/proc/thread-self/ns/net").map_err(|e| fail(e.into()))?;
    let mut replaced = false;
    let link = match via {
        AttachedVia::Tcx => {
            let pin = persist.map(|p| p.link_pin.as_path());
            let mut link = None;
            if let Some(pin) = pin.filter(|p| p.exists()) {
                match take_over_tcx(program, pin) {
                    Ok(taken) => {
                        replaced = true;
                        link = Some(taken);
                    }
                    Err(e) => {
                        // The interface it was attached to is gone (or the pin is not a link):
                        // start over.
                        tracing::debug!(pin = %pin.display(), error = %e, "stale TCX link pin");
                        fs::remove_file(pin).map_err(|e| fail(e.into()))?;
                    }
                }
            }
            match link {
                Some(link) => link,
                None => {
                    let id = program
                        .attach_with_options(
                            interface,
                            direction.tc(),
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )
                        .map_err(|e| fail(e.into()))?;
                    let link = program.take_link(id).map_err(|e| fail(e.into()))?;
                    match pin {
                        Some(pin) => pin_tcx(link, pin).map_err(fail)?,
                        None => link,
                    }
                }
            }
        }
        AttachedVia::Clsact => {
            if !has_clsact {
                ensure_clsact(interface).map_err(|e| fail(e.into()))?;
            }
            let options = persist.map_or_else(NlOptions::default, |p| NlOptions {
                priority: p.nl_priority,
                handle: TcHandle::new(0, p.nl_handle),
                classid: None,
            });
            let existing = persist.and_then(|p| {
                SchedClassifierLink::attached(
                    interface,
                    direction.tc(),
                    p.nl_priority,
                    TcHandle::new(0, p.nl_handle),
                    None,
                )
                .ok()
            });
            // Replacing fails when no such filter exists; then create it.
            let id = match existing.map(|link| program.attach_to_link(link)) {
                Some(Ok(id)) => {
                    replaced = true;
                    id
                }
                _ => program
                    .attach_with_options(
                        interface,
                        direction.tc(),
                        TcAttachOptions::Netlink(options),
                    )
                    .map_err(|e| fail(e.into()))?,
            };
            program.take_link(id).map_err(|e| fail(e.into()))?
        }
    };
    tracing::debug!(program = name, interface, %direction, %via, replaced, "attached");
    Ok(Attachment {
        program: name,
        interface: interface.to_owned(),
        direction,
        via,
        replaced,
        link: Some(link),
        netns,
        pin: persist
            .filter(|_| via == AttachedVia::Tcx)
            .map(|p| p.link_pin.clone()),
    })
}

fn take_over_tcx(program: &mut SchedClassifier, pin: &Path) -> Result<SchedClassifierLink, Source> {
    let pinned = PinnedLink::from_pin(pin)?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))?;
    let id = program.attach_to_link(link)?;
    Ok(program.take_link(id)?)
}

fn pin_tcx(link: SchedClassifierLink, pin: &Path) -> Result<SchedClassifierLink, Source> {
    let fd_link = FdLink::try_from(link)?;
    let pinned = fd_link.pin(pin)?;
    Ok(SchedClassifierLink::try_from(FdLink::from(pinned))?)
}

impl Attachment {
    /// Undoes the attachment. TCX links are unpinned and released; clsact filters are removed
    /// from a short-lived thread inside the namespace the attachment was made in.
    pub(crate) fn detach(mut self) -> Result<(), Error> {
        let result = self.detach_inner();
        result.map_err(|source| Error::Detach {
            program: self.program,
            interface: self.interface.clone(),
            direction: self.direction,
            source,
        })
    }

    fn detach_inner(&mut self) -> Result<(), Source> {
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        match self.via {
            AttachedVia::Tcx => {
                if let Some(pin) = &self.pin {
                    match fs::remove_file(pin) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                link.detach().map_err(Source::from)
            }
            AttachedVia::Clsact => {
                let netns = &self.netns;
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || -> Result<(), Source> {
                            setns(netns, CloneFlags::CLONE_NEWNET)?;
                            link.detach()?;
                            Ok(())
                        })
                        .join()
                        .unwrap_or_else(|_| Err("detach thread panicked".into()))
                })
            }
        }
    }

    /// Leaves the program attached after its owner goes away: a pinned TCX link stays in place
    /// through its pin, a clsact filter stays until someone removes it. An unpinned TCX link
    /// cannot outlive its file descriptor and is detached.
    pub(crate) fn keep(mut self) {
        if let Some(link) = self.link.take() {
            match (self.via, &self.pin) {
                // Closing our descriptor leaves the pinned link attached.
                (AttachedVia::Tcx, Some(_)) => drop(FdLink::try_from(link)),
                (AttachedVia::Tcx, None) => {
                    if let Err(e) = link.detach() {
                        tracing::warn!(interface = %self.interface, error = %e, "detaching");
                    }
                }
                // An aya netlink link holds no resources; forgetting it skips its detaching Drop.
                (AttachedVia::Clsact, _) => std::mem::forget(link),
            }
        }
    }
}

impl Attachment {
    /// Lets go of an attachment whose interface was deleted (its programs went with it):
    /// removes the link pin and closes the handle without detaching. For TCX this skips the
    /// RCU grace period a detach waits for; the kernel already let go of the device.
    pub(crate) fn forget(mut self) -> Result<(), Error> {
        if let Some(pin) = self.pin.take() {
            match fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let source: Source = e.into();
                    let error = Error::Detach {
                        program: self.program,
                        interface: self.interface.clone(),
                        direction: self.direction,
                        source,
                    };
                    self.keep();
                    return Err(error);
                }
            }
        }
        self.keep();
        Ok(())
    }
}

/// Forgets every attachment (see [`Attachment::forget`]), continuing past failures.
pub(crate) fn forget_every(attachments: impl IntoIterator<Item = Attachment>) -> Result<(), Error> {
    collect_errors(attachments.into_iter().filter_map(|a| a.forget().err()))
}

fn collect_errors(errors: impl Iterator<Item = Error>) -> Result<(), Error> {
    let mut errors: Vec<Error> = errors.collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Multiple(errors)),
    }
}

/// Detaches every attachment, continuing past failures and reporting all of them.
pub(crate) fn detach_every(attachments: impl IntoIterator<Item = Attachment>) -> Result<(), Error> {
    collect_errors(attachments.into_iter().filter_map(|a| a.detach().err()))
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.link.is_some()
            && let Err(e) = self.detach_inner()
        {
            tracing::warn!(interface = %self.interface, error = %e, "detaching on drop");
        }
    }
}
