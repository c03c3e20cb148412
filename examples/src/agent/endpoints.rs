//! Pods wired on this node, kept in `endpoints/` (one file each) so that a
//! restarted agent re-attaches the dataplane and republishes them; and the liveness oracle
//! the pool asks, fed by those reports and by GC's list of valid attachments.

use std::{
    collections::{BTreeMap, HashSet},
    fs, io,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
};

use async_trait::async_trait;
use cnikit_eni_pool::{Liveness, LivenessError, PodKey, PodLiveness};
use serde::{Deserialize, Serialize};

use crate::protocol::{AttachmentKey, Datapath};

/// A pod the plugin reported wired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EndpointRecord {
    /// The pool's key of the pod.
    pub pod: PodKey,
    /// The CNI network name.
    pub network: String,
    /// The pod's address.
    pub ipv4: Ipv4Addr,
    /// How it is wired.
    pub datapath: Datapath,
    /// The node-side interface, if any.
    #[serde(default)]
    pub host_interface: Option<String>,
    /// The pod's namespace path.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The ENI's interface on the node when the pod was wired.
    #[serde(default)]
    pub eni_interface: Option<String>,
}

/// One record's file (versioned).
#[derive(Debug, Serialize, Deserialize)]
struct RecordFile {
    version: u32,
    attachment: AttachmentKey,
    record: EndpointRecord,
}

/// Version 1's single file, `endpoints.json` (read, then converted).
#[derive(Debug, Serialize, Deserialize)]
struct LegacyFile {
    version: u32,
    endpoints: Vec<(AttachmentKey, EndpointRecord)>,
}

/// Just the version of a record or of the version-1 file.
#[derive(Debug, Deserialize)]
struct Versioned {
    version: u32,
}

const FORMAT_VERSION: u32 = 1;

/// The registry of wired pods: one file per endpoint in a directory, written on every change.
///
/// One file per endpoint keeps an `ADD` or `DEL` at one small write whatever the number of
/// pods, and a new record is renamed to a name that does not exist yet, which ext4 does not
/// flush (replacing a file by rename does). Files are written to a temporary name and renamed
/// (atomic), not `fsync`ed, on purpose: the records must survive the agent (a crash or
/// `kill -9` leaves the page cache intact), but not the node: after a reboot no pod namespace
/// is left, and the runtime's `GC` and re-`ADD`s rebuild the state. The pool's address
/// records, which must survive reboots, are synced by the pool.
#[derive(Debug)]
pub struct Endpoints {
    dir: PathBuf,
    map: BTreeMap<AttachmentKey, EndpointRecord>,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

fn check_version(path: &Path, version: u32) -> io::Result<()> {
    if version == FORMAT_VERSION {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("format version {version} (this agent reads {FORMAT_VERSION})"),
        ))
    }
}

/// The file name of `key`'s record: the container id and interface, with every byte outside
/// `[A-Za-z0-9_.-]` as `%XX`; a hash where that would be too long for a file name.
fn file_name(key: &AttachmentKey) -> String {
    let mut name = String::new();
    for (i, part) in [&key.container_id, &key.ifname].into_iter().enumerate() {
        if i > 0 {
            name.push('@');
        }
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                name.push(char::from(b));
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if name.len() > 200 || name.starts_with('.') {
        // FNV-1a over both parts: stable across builds, unlike the std hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key
            .container_id
            .bytes()
            .chain([0])
            .chain(key.ifname.bytes())
        {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        name = format!("h{hash:016x}");
    }
    name.push_str(".json");
    name
}

impl Endpoints {
    /// Loads the directory `dir` (absent: an empty registry), converting a version-1
    /// `<dir>.json` file (`endpoints.json`) if there is one.
    ///
    /// # Errors
    /// I/O errors, or `InvalidData` for a corrupt record or another format version (the files
    /// are left as they are).
    pub fn load(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        let mut map = BTreeMap::new();
        let legacy = dir.with_extension("json");
        let legacy_found = match fs::read(&legacy) {
            Ok(bytes) => {
                let versioned: Versioned =
                    serde_json::from_slice(&bytes).map_err(|e| invalid(&legacy, e))?;
                check_version(&legacy, versioned.version)?;
                let file: LegacyFile =
                    serde_json::from_slice(&bytes).map_err(|e| invalid(&legacy, e))?;
                map.extend(file.endpoints);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                // A write the agent did not finish: its rename never happened.
                fs::remove_file(&path)?;
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            let bytes = fs::read(&path)?;
            // The version first: another version's record may have another shape.
            let versioned: Versioned =
                serde_json::from_slice(&bytes).map_err(|e| invalid(&path, e))?;
            check_version(&path, versioned.version)?;
            let file: RecordFile = serde_json::from_slice(&bytes).map_err(|e| invalid(&path, e))?;
            map.insert(file.attachment, file.record);
        }
        let endpoints = Self { dir, map };
        if legacy_found {
            for (key, record) in &endpoints.map {
                endpoints.write(key, record)?;
            }
            fs::remove_file(&legacy)?;
        }
        Ok(endpoints)
    }

    /// Writes `key`'s record (temporary file, rename).
    fn write(&self, key: &AttachmentKey, record: &EndpointRecord) -> io::Result<()> {
        let file = RecordFile {
            version: FORMAT_VERSION,
            attachment: key.clone(),
            record: record.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
        let name = file_name(key);
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
        }
        fs::rename(&tmp, self.dir.join(name))
    }

    /// Records (or replaces) an endpoint (see [`Endpoints`] for what survives what).
    ///
    /// # Errors
    /// When the file cannot be written (the registry is unchanged then).
    pub fn insert(&mut self, key: &AttachmentKey, record: EndpointRecord) -> io::Result<()> {
        self.write(key, &record)?;
        self.map.insert(key.clone(), record);
        Ok(())
    }

    /// Forgets an endpoint; returns it.
    ///
    /// # Errors
    /// When the file cannot be removed (the registry is unchanged then).
    pub fn remove(&mut self, key: &AttachmentKey) -> io::Result<Option<EndpointRecord>> {
        if !self.map.contains_key(key) {
            return Ok(None);
        }
        match fs::remove_file(self.dir.join(file_name(key))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(self.map.remove(key))
    }

    /// The endpoint of an attachment.
    #[must_use]
    pub fn get(&self, key: &AttachmentKey) -> Option<&EndpointRecord> {
        self.map.get(key)
    }

    /// Every endpoint.
    pub fn iter(&self) -> impl Iterator<Item = (&AttachmentKey, &EndpointRecord)> {
        self.map.iter()
    }

    /// How many.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `(namespace, name)` → address of every endpoint (what the catalog resolves against).
    #[must_use]
    pub fn pod_addresses(&self) -> BTreeMap<(String, String), Ipv4Addr> {
        self.map
            .values()
            .map(|r| ((r.pod.namespace.clone(), r.pod.name.clone()), r.ipv4))
            .collect()
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// What the agent knows about which pods exist: pods being added or wired are alive; pods a
/// GC's valid-attachments list left out are gone; the rest is unknown (kept).
#[derive(Clone, Debug, Default)]
pub struct AgentLiveness {
    state: Arc<RwLock<LiveState>>,
}

#[derive(Debug, Default)]
struct LiveState {
    alive: HashSet<PodKey>,
    gone: HashSet<PodKey>,
}

impl AgentLiveness {
    /// `pod` exists (being added, or wired).
    pub fn alive(&self, pod: &PodKey) {
        let mut s = self.state.write().unwrap_or_else(PoisonError::into_inner);
        s.gone.remove(pod);
        s.alive.insert(pod.clone());
    }

    /// `pod` was deleted, or the runtime's GC says it no longer exists.
    pub fn gone(&self, pod: &PodKey) {
        let mut s = self.state.write().unwrap_or_else(PoisonError::into_inner);
        s.alive.remove(pod);
        s.gone.insert(pod.clone());
    }

    /// Forgets `pod` (an `ADD` failed before anything was recorded).
    pub fn forget(&self, pod: &PodKey) {
        let mut s = self.state.write().unwrap_or_else(PoisonError::into_inner);
        s.alive.remove(pod);
    }
}

#[async_trait]
impl Liveness for AgentLiveness {
    async fn check(&self, pods: &[PodKey]) -> Result<Vec<PodLiveness>, LivenessError> {
        let s = self.state.read().unwrap_or_else(PoisonError::into_inner);
        Ok(pods
            .iter()
            .map(|p| {
                if s.alive.contains(p) {
                    PodLiveness::Alive
                } else if s.gone.contains(p) {
                    PodLiveness::Gone
                } else {
                    PodLiveness::Unknown
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, ip: u8) -> EndpointRecord {
        EndpointRecord {
            pod: PodKey::new("prod", name, format!("c-{name}"), "eth0"),
            network: "pods".into(),
            ipv4: Ipv4Addr::new(198, 18, 0, ip),
            datapath: Datapath::Veth,
            host_interface: Some("cnk0".into()),
            netns: None,
            eni_interface: Some("eth1".into()),
        }
    }

    #[test]
    fn registry_survives_a_reload_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints");
        let mut e = Endpoints::load(&path).unwrap();
        assert!(e.is_empty());
        let k = AttachmentKey::new("c-a", "eth0");
        e.insert(&k, record("a", 5)).unwrap();
        e.insert(&AttachmentKey::new("c-b", "eth0"), record("b", 6))
            .unwrap();
        // A name that needs escaping, and one too long for a file name.
        let odd = AttachmentKey::new("c/../x y", "eth0");
        e.insert(&odd, record("odd", 7)).unwrap();
        let long = AttachmentKey::new("c".repeat(300), "eth0");
        e.insert(&long, record("long", 8)).unwrap();
        assert_eq!(
            e.remove(&AttachmentKey::new("c-b", "eth0"))
                .unwrap()
                .unwrap()
                .ipv4,
            Ipv4Addr::new(198, 18, 0, 6)
        );
        assert!(
            e.remove(&AttachmentKey::new("nope", "eth0"))
                .unwrap()
                .is_none()
        );
        // An unfinished write is ignored (and cleaned up).
        fs::write(path.join("c-z@eth0.json.tmp"), b"{torn").unwrap();

        let back = Endpoints::load(&path).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.get(&k), Some(&record("a", 5)));
        assert_eq!(back.get(&odd), Some(&record("odd", 7)));
        assert_eq!(back.get(&long), Some(&record("long", 8)));
        assert_eq!(
            back.pod_addresses()[&("prod".to_owned(), "a".to_owned())],
            Ipv4Addr::new(198, 18, 0, 5)
        );
        let mut files: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files.len(), 3, "{files:?}");
        assert!(
            files.contains(&"c%2F..%2Fx%20y@eth0.json".to_owned()),
            "{files:?}"
        );
        assert!(files.iter().all(|f| f.len() < 210), "{files:?}");

        fs::write(path.join("c-t@eth0.json"), b"{torn").unwrap();
        assert_eq!(
            Endpoints::load(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        fs::write(
            path.join("c-t@eth0.json"),
            br#"{"version":9,"attachment":{"container_id":"c-t","ifname":"eth0"},"record":{}}"#,
        )
        .unwrap();
        assert!(
            Endpoints::load(&path)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
    }

    #[test]
    fn a_version_1_file_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("endpoints.json");
        let a = AttachmentKey::new("c-a", "eth0");
        let b = AttachmentKey::new("c-b", "eth1");
        let file = LegacyFile {
            version: 1,
            endpoints: vec![(a.clone(), record("a", 5)), (b.clone(), record("b", 6))],
        };
        fs::write(&legacy, serde_json::to_vec(&file).unwrap()).unwrap();
        let e = Endpoints::load(dir.path().join("endpoints")).unwrap();
        assert_eq!(e.len(), 2);
        assert!(!legacy.exists(), "converted, then removed");
        let back = Endpoints::load(dir.path().join("endpoints")).unwrap();
        assert_eq!(back.get(&a), Some(&record("a", 5)));
        assert_eq!(back.get(&b), Some(&record("b", 6)));

        fs::write(&legacy, br#"{"version":3,"endpoints":[]}"#).unwrap();
        assert!(
            Endpoints::load(dir.path().join("endpoints"))
                .unwrap_err()
                .to_string()
                .contains("version 3")
        );
    }

    #[tokio::test]
    async fn liveness_follows_reports() {
        let l = AgentLiveness::default();
        let a = PodKey::new("ns", "a", "1", "eth0");
        let b = PodKey::new("ns", "b", "2", "eth0");
        let c = PodKey::new("ns", "c", "3", "eth0");
        l.alive(&a);
        l.alive(&b);
        l.gone(&b);
        assert_eq!(
            l.check(&[a.clone(), b.clone(), c]).await.unwrap(),
            vec![PodLiveness::Alive, PodLiveness::Gone, PodLiveness::Unknown]
        );
        l.alive(&b);
        l.forget(&a);
        assert_eq!(
            l.check(&[a, b]).await.unwrap(),
            vec![PodLiveness::Unknown, PodLiveness::Alive]
        );
    }
}
