//! The dataplane in the kernel: the object's programs and maps, loaded through aya.

mod maps;
mod observe;
mod policy;
mod services;

use std::{
    collections::HashMap,
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use aya::{EbpfLoader, programs::SchedClassifier};
use cnikit_ebpf_common::config as globals;

use self::maps::Maps;
use crate::{
    AttachMode, AttachedVia, Capacity, Direction, EndpointPolicy, Error, Hook, Result, Service,
    Timeouts,
    attach::{self, Attachment, Persist},
    config::nanos,
    error::Source,
    ids::IdAllocator,
    object::OBJECT,
};

/// Name of the program on the path of packets leaving an endpoint.
pub const FROM_ENDPOINT_PROGRAM: &str = "cnikit_from_ep";
/// Name of the program on the path of packets entering an endpoint.
pub const TO_ENDPOINT_PROGRAM: &str = "cnikit_to_ep";
/// Priority of persistent clsact filters (lower runs first).
const CLSACT_PRIORITY: u16 = 100;
/// bpffs magic number (`statfs(2)`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Self::FromEndpoint => FROM_ENDPOINT_PROGRAM,
            Self::ToEndpoint => TO_ENDPOINT_PROGRAM,
        }
    }

    fn pin_suffix(self) -> &'static str {
        match self {
            Self::FromEndpoint => "from",
            Self::ToEndpoint => "to",
        }
    }

    fn clsact_handle(self) -> u16 {
        match self {
            Self::FromEndpoint => 0xc1,
            Self::ToEndpoint => 0xc2,
        }
    }
}

/// Where the two programs of an endpoint go on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// The node-side end of the pod's veth: packets leaving the pod are the interface's ingress,
    /// packets entering it its egress.
    NodeSide,
    /// An interface inside the endpoint's namespace (an exclusive ENI, the pod's `eth0`):
    /// packets leaving the pod are its egress, packets entering it its ingress.
    InsideEndpoint,
}

impl Placement {
    /// The interface direction that carries `hook`'s packets.
    #[must_use]
    pub const fn direction(self, hook: Hook) -> Direction {
        match (self, hook) {
            (Self::NodeSide, Hook::FromEndpoint) | (Self::InsideEndpoint, Hook::ToEndpoint) => {
                Direction::Ingress
            }
            (Self::NodeSide, Hook::ToEndpoint) | (Self::InsideEndpoint, Hook::FromEndpoint) => {
                Direction::Egress
            }
        }
    }
}

/// A service as installed: its settings and its backends' slots.
#[derive(Clone, Debug)]
struct Installed {
    service: Service,
    id: u32,
    generation: u32,
    slots: Vec<Option<SocketAddrV4>>,
}

/// Keys written for one policy slot (direction and generation) of an endpoint.
#[derive(Clone, Debug, Default)]
struct SlotKeys {
    peers: Vec<(u32, cnikit_ebpf_common::policy::PeerPrefix)>,
    ports: Vec<(u32, cnikit_ebpf_common::policy::PortPrefix)>,
}

/// An endpoint as installed.
#[derive(Clone, Debug)]
struct InstalledEndpoint {
    id: u32,
    flags: u32,
    /// The policy as last set; `None` after a restart (the kernel keeps enforcing it).
    policy: Option<EndpointPolicy>,
    /// Keys per `slot_index(egress, generation)`.
    slots: [SlotKeys; 4],
}

const fn slot_index(egress: bool, generation: bool) -> usize {
    (egress as usize) << 1 | generation as usize
}

/// Builds a [`Dataplane`]: capacities, timeouts, and where to pin maps and links.
#[derive(Clone, Debug)]
pub struct DataplaneBuilder {
    capacity: Capacity,
    timeouts: Timeouts,
    pin_dir: Option<PathBuf>,
    object: &'static [u8],
}

impl DataplaneBuilder {
    /// Map capacities (default: [`Capacity::default`]).
    #[must_use]
    pub fn capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    /// Connection-tracking timeouts (default: [`Timeouts::default`]).
    #[must_use]
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Pins maps (`<dir>/maps/`) and TCX links (`<dir>/links/`) in this bpffs directory, and
    /// reuses what an earlier run pinned there: services, endpoints, policies, connection
    /// tracking and counters survive a restart, and programs stay attached while no agent runs.
    /// The directory is created if needed; it must be on a bpffs.
    #[must_use]
    pub fn pin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pin_dir = Some(dir.into());
        self
    }

    /// Loads another build of the object (for development; default: the embedded one).
    #[must_use]
    pub fn object(mut self, object: &'static [u8]) -> Self {
        self.object = object;
        self
    }

    /// Creates (or reopens) the maps, loads both programs through the verifier, and restores
    /// the tables from pinned maps.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::Pin`] / [`Error::PinnedMapMismatch`] for an unusable
    /// pin directory, [`Error::Object`] when maps cannot be created (no `CAP_BPF`, memlock),
    /// [`Error::Verifier`] when the kernel rejects a program.
    pub fn load(self) -> Result<Dataplane> {
        Dataplane::load_with(self)
    }
}

/// The eBPF dataplane: Service load balancing and NetworkPolicy at tc.
///
/// Loading it runs both programs through the verifier and creates (or, with a pin directory,
/// reopens) the maps. Attach it to each endpoint's interface with
/// [`attach_endpoint`](Self::attach_endpoint), then drive it through [`crate::ServiceTable`] and
/// [`crate::PolicyTable`]. Without a pin directory, dropping it detaches everything and frees
/// the maps; with one, programs stay attached and state stays pinned for the next run.
#[derive(Debug)]
pub struct Dataplane {
    ebpf: aya::Ebpf,
    maps: Maps,
    capacity: Capacity,
    timeouts: Timeouts,
    pin_dir: Option<PathBuf>,
    services: HashMap<crate::ServiceKey, Installed>,
    service_ids: IdAllocator,
    /// The next service revision.
    rev: u32,
    endpoints: HashMap<Ipv4Addr, InstalledEndpoint>,
    endpoint_ids: IdAllocator,
    node_addrs: std::collections::BTreeSet<Ipv4Addr>,
    peer_entries: usize,
    port_entries: usize,
    attachments: Vec<(Hook, Attachment)>,
    restored: bool,
    scratch: Box<cnikit_ebpf_common::service::ServiceValue>,
}

impl Dataplane {
    /// A builder with default capacities and timeouts, no pinning.
    #[must_use]
    pub fn builder() -> DataplaneBuilder {
        DataplaneBuilder {
            capacity: Capacity::default(),
            timeouts: Timeouts::default(),
            pin_dir: None,
            object: OBJECT,
        }
    }

    /// Loads with defaults (see [`DataplaneBuilder::load`]).
    ///
    /// # Errors
    /// As [`DataplaneBuilder::load`].
    pub fn load() -> Result<Self> {
        Self::builder().load()
    }

    fn load_with(builder: DataplaneBuilder) -> Result<Self> {
        let DataplaneBuilder {
            capacity,
            timeouts,
            pin_dir,
            object,
        } = builder;
        capacity.check().map_err(Error::InvalidConfig)?;
        if timeouts.tcp.is_zero() || timeouts.tcp_closing.is_zero() || timeouts.other.is_zero() {
            return Err(Error::InvalidConfig("timeouts must be positive".into()));
        }
        let specs = maps::specs(&capacity);
        let mut any_pinned = false;
        if let Some(dir) = &pin_dir {
            prepare_pin_dir(dir)?;
            for spec in &specs {
                any_pinned |= maps::check_pinned(&maps::pin_path(dir, spec.name), spec)?;
            }
        }

        let mut loader = EbpfLoader::new();
        for spec in &specs {
            loader.map_max_entries(spec.name, spec.max_entries);
        }
        let pin_paths: Vec<(&'static str, PathBuf)> = pin_dir
            .iter()
            .flat_map(|dir| specs.iter().map(|s| (s.name, maps::pin_path(dir, s.name))))
            .collect();
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let (tcp, closing, other) = (
            nanos(timeouts.tcp),
            nanos(timeouts.tcp_closing),
            nanos(timeouts.other),
        );
        loader
            .override_global(globals::TCP_TIMEOUT_GLOBAL, &tcp, true)
            .override_global(globals::TCP_CLOSING_TIMEOUT_GLOBAL, &closing, true)
            .override_global(globals::OTHER_TIMEOUT_GLOBAL, &other, true);
        let mut ebpf = loader
            .load(object)
            .map_err(|e| Error::Object { source: e.into() })?;
        for name in [FROM_ENDPOINT_PROGRAM, TO_ENDPOINT_PROGRAM] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| Error::Verifier {
                    program: name,
                    source: e.into(),
                })?;
            tracing::debug!(program = name, "verifier accepted");
        }
        let maps = Maps::take(&mut ebpf)?;
        let mut dataplane = Self {
            ebpf,
            maps,
            service_ids: IdAllocator::new(capacity.services),
            endpoint_ids: IdAllocator::new(capacity.endpoints),
            capacity,
            timeouts,
            pin_dir,
            services: HashMap::new(),
            rev: 1,
            endpoints: HashMap::new(),
            node_addrs: std::collections::BTreeSet::new(),
            peer_entries: 0,
            port_entries: 0,
            attachments: Vec::new(),
            restored: false,
            scratch: Box::new(cnikit_ebpf_common::service::ServiceValue::EMPTY),
        };
        if any_pinned {
            dataplane.restore()?;
        }
        Ok(dataplane)
    }

    /// Rebuilds the userspace view of the tables from pinned maps.
    fn restore(&mut self) -> Result<()> {
        self.restore_services()?;
        self.restore_endpoints()?;
        self.restore_node_addresses()?;
        self.restored = true;
        tracing::info!(
            services = self.services.len(),
            endpoints = self.endpoints.len(),
            "restored dataplane state from pinned maps"
        );
        Ok(())
    }

    /// Whether this instance picked up state pinned by an earlier run.
    #[must_use]
    pub fn restored(&self) -> bool {
        self.restored
    }

    /// The capacities in force.
    #[must_use]
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// The pin directory, if any.
    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Attaches `hook`'s program to `interface` in `direction` (resolved in the calling thread's
    /// network namespace). With a pin directory, an attachment left by an earlier run is taken
    /// over in place (the program is replaced atomically, no packet goes unprocessed).
    ///
    /// # Errors
    /// As [`crate::ProbeProgram::attach`], plus pin-directory failures.
    pub fn attach(
        &mut self,
        interface: &str,
        hook: Hook,
        direction: Direction,
        mode: AttachMode,
    ) -> Result<AttachedVia> {
        self.attach_program(interface, hook, direction, mode, false)
    }

    /// [`attach`](Self::attach); `has_clsact`: the interface was just given its `clsact` qdisc.
    fn attach_program(
        &mut self,
        interface: &str,
        hook: Hook,
        direction: Direction,
        mode: AttachMode,
        has_clsact: bool,
    ) -> Result<AttachedVia> {
        // bpffs refuses names with dots, which interface names may have (VLANs); interface
        // names cannot contain ':'.
        let persist = self.pin_dir.as_ref().map(|dir| Persist {
            link_pin: dir.join("links").join(format!(
                "{}@{}",
                interface.replace('.', ":"),
                hook.pin_suffix()
            )),
            nl_priority: CLSACT_PRIORITY,
            nl_handle: hook.clsact_handle(),
        });
        let name = hook.program();
        let program = classifier(&mut self.ebpf, name)?;
        let attachment = attach::attach(
            program,
            name,
            interface,
            direction,
            mode,
            persist.as_ref(),
            has_clsact,
        )?;
        let via = attachment.via;
        self.attachments.push((hook, attachment));
        Ok(via)
    }

    /// Attaches both programs to an endpoint's interface (see [`Placement`]).
    ///
    /// # Errors
    /// As [`attach`](Self::attach); when the second attachment fails the first is undone.
    pub fn attach_endpoint(
        &mut self,
        interface: &str,
        placement: Placement,
        mode: AttachMode,
    ) -> Result<AttachedVia> {
        let from = Hook::FromEndpoint;
        let via = self.attach(interface, from, placement.direction(from), mode)?;
        let to = Hook::ToEndpoint;
        // The first attachment gave the interface its qdisc when it went through clsact.
        let has_clsact = via == AttachedVia::Clsact;
        if let Err(e) =
            self.attach_program(interface, to, placement.direction(to), mode, has_clsact)
        {
            if let Some((_, first)) = self.attachments.pop()
                && let Err(undo) = first.detach()
            {
                return Err(Error::Multiple(vec![e, undo]));
            }
            return Err(e);
        }
        Ok(via)
    }

    /// Detaches every attachment (and removes their link pins), continuing past failures.
    ///
    /// # Errors
    /// [`Error::Multiple`] (or the single error) listing every attachment that failed.
    pub fn detach_all(&mut self) -> Result<()> {
        attach::detach_every(self.attachments.drain(..).map(|(_, a)| a))
    }

    /// Detaches the attachments on `interface` (both programs of an endpoint, and their link
    /// pins), keeping every other one; continues past failures. Returns how many were removed
    /// (0 when none was there). An agent calls it when a pod goes away, before its interface is
    /// deleted, so that attachments do not pile up over pod churn.
    ///
    /// # Errors
    /// [`Error::Multiple`] (or the single error) listing every attachment that failed; those
    /// are forgotten all the same.
    pub fn detach_interface(&mut self, interface: &str) -> Result<usize> {
        let gone = self.take_interface(interface);
        let count = gone.len();
        attach::detach_every(gone)?;
        Ok(count)
    }

    /// Removes the attachments on `interface` from this dataplane's list and returns them.
    fn take_interface(&mut self, interface: &str) -> Vec<Attachment> {
        let (gone, kept): (Vec<_>, Vec<_>) = self
            .attachments
            .drain(..)
            .partition(|(_, a)| a.interface == interface);
        self.attachments = kept;
        gone.into_iter().map(|(_, a)| a).collect()
    }

    /// Lets go of the attachments on `interface` after the interface itself was deleted (with
    /// a pod's veth): the kernel removed its programs with it, so this only removes the link
    /// pins and closes the handles. Unlike [`detach_interface`](Self::detach_interface) it
    /// never waits: detaching a TCX link waits for an RCU grace period (milliseconds), which
    /// deleting the device already paid. Returns how many attachments there were.
    ///
    /// Call it only once the interface is gone; on a live interface a clsact filter would
    /// stay in place (a pinned TCX link would still go with its pin).
    ///
    /// # Errors
    /// [`Error::Multiple`] (or the single error) naming every link pin that could not be
    /// removed; those attachments are forgotten all the same.
    pub fn forget_interface(&mut self, interface: &str) -> Result<usize> {
        let gone = self.take_interface(interface);
        let count = gone.len();
        attach::forget_every(gone)?;
        Ok(count)
    }

    /// The attachments in place: `(interface, hook, direction, mechanism, taken over from an
    /// earlier run)`.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, Hook, Direction, AttachedVia, bool)> {
        self.attachments
            .iter()
            .map(|(hook, a)| (a.interface.as_str(), *hook, a.direction, a.via, a.replaced))
    }

    /// Removes everything pinned under `dir` (maps and TCX links, which detaches them) and the
    /// directories this crate created there. Call it when the dataplane is retired for good,
    /// after detaching (clsact filters are not pinned and are removed by
    /// [`detach_all`](Self::detach_all)).
    ///
    /// # Errors
    /// [`Error::Pin`] naming the first entry that could not be removed.
    pub fn remove_pins(dir: &Path) -> Result<()> {
        for sub in ["links", "maps"] {
            let path = dir.join(sub);
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(pin_error(&path, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| pin_error(&path, e))?;
                fs::remove_file(entry.path()).map_err(|e| pin_error(&entry.path(), e))?;
            }
            fs::remove_dir(&path).map_err(|e| pin_error(&path, e))?;
        }
        Ok(())
    }

    /// How many instructions the verifier processed for each program (`None` where the kernel
    /// does not report it): a measure of how close the programs are to the verifier's limits.
    ///
    /// # Errors
    /// [`Error::Missing`] or a failed `BPF_OBJ_GET_INFO_BY_FD`.
    pub fn verified_instructions(&self) -> Result<Vec<(&'static str, Option<u32>)>> {
        [Hook::FromEndpoint, Hook::ToEndpoint]
            .into_iter()
            .map(|hook| {
                let info = self.program(hook)?.info().map_err(|e| Error::Verifier {
                    program: hook.program(),
                    source: e.into(),
                })?;
                Ok((hook.program(), info.verified_instruction_count()))
            })
            .collect()
    }

    fn program(&self, hook: Hook) -> Result<&SchedClassifier> {
        let name = hook.program();
        self.ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(Error::Missing {
                kind: "program",
                name,
            })
    }
}

impl Drop for Dataplane {
    /// Without a pin directory: detaches everything (in the namespaces the attachments were
    /// made in). With one: leaves the programs attached for the next run.
    fn drop(&mut self) {
        let attachments = self.attachments.drain(..).map(|(_, a)| a);
        if self.pin_dir.is_some() {
            attachments.for_each(Attachment::keep);
        } else if let Err(e) = attach::detach_every(attachments) {
            tracing::warn!(error = %e, "detaching the dataplane on drop");
        }
    }
}

fn classifier<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(Error::Missing {
            kind: "program",
            name,
        })
}

fn pin_error(path: &Path, e: impl Into<Source>) -> Error {
    Error::Pin {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// Creates `<dir>/maps` and `<dir>/links` and checks `dir` is on a bpffs.
fn prepare_pin_dir(dir: &Path) -> Result<()> {
    for sub in ["maps", "links"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(|e| pin_error(&path, e))?;
    }
    let fs_type = nix::sys::statfs::statfs(dir)
        .map_err(|e| pin_error(dir, e))?
        .filesystem_type();
    if fs_type.0 != BPF_FS_MAGIC {
        return Err(pin_error(dir, "not on a bpf filesystem (mount -t bpf)"));
    }
    Ok(())
}
