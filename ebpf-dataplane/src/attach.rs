//! Choosing and performing a tc attachment (TCX or clsact).

use std::{fmt, fs::File};

use aya::{
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError},
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

/// One attachment of a program, with what is needed to undo it from any thread.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub(crate) interface: String,
    pub(crate) direction: Direction,
    pub(crate) via: AttachedVia,
    link: SchedClassifierLinkId,
    /// The network namespace the attachment was made in. Netlink (clsact) detachment addresses
    /// the interface by index, so it must run there and nowhere else.
    netns: File,
}

/// Attaches `program` to `interface`; returns the mechanism used and aya's link id.
pub(crate) fn attach(
    program: &mut SchedClassifier,
    name: &'static str,
    interface: &str,
    direction: Direction,
    mode: AttachMode,
) -> Result<Attachment, Error> {
    let via = match mode {
        AttachMode::Auto if tcx_supported() => AttachedVia::Tcx,
        AttachMode::Auto | AttachMode::Clsact => AttachedVia::Clsact,
        AttachMode::Tcx if tcx_supported() => AttachedVia::Tcx,
        AttachMode::Tcx => return Err(Error::TcxUnsupported),
    };
    let fail = |source: Source| Error::Attach {
        program: name,
        interface: interface.to_owned(),
        direction,
        via,
        source,
    };
    let netns = File::open("/proc/thread-self/ns/net").map_err(|e| fail(e.into()))?;
    let options = match via {
        AttachedVia::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
        AttachedVia::Clsact => {
            match tc::qdisc_add_clsact(interface) {
                Ok(()) => {}
                // Another program (or an earlier run) already added it.
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(fail(e.into())),
            }
            TcAttachOptions::Netlink(NlOptions::default())
        }
    };
    let link = program
        .attach_with_options(interface, direction.tc(), options)
        .map_err(|e| fail(e.into()))?;
    tracing::debug!(program = name, interface, %direction, %via, "attached");
    Ok(Attachment {
        interface: interface.to_owned(),
        direction,
        via,
        link,
        netns,
    })
}

/// Undoes `attachment`. TCX links are detached through their fd; clsact filters from a
/// short-lived thread inside the namespace the attachment was made in.
pub(crate) fn detach(
    program: &mut SchedClassifier,
    name: &'static str,
    attachment: Attachment,
) -> Result<(), Error> {
    let Attachment {
        interface,
        direction,
        via,
        link,
        netns,
    } = attachment;
    let result = match via {
        AttachedVia::Tcx => program.detach(link).map_err(Source::from),
        AttachedVia::Clsact => std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<(), Source> {
                    setns(&netns, CloneFlags::CLONE_NEWNET)?;
                    program.detach(link)?;
                    Ok(())
                })
                .join()
                .unwrap_or_else(|_| Err("detach thread panicked".into()))
        }),
    };
    result.map_err(|source| Error::Detach {
        program: name,
        interface,
        direction,
        source,
    })
}
