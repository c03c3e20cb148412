//! Pods wired on this node (what the plugin reported), kept in `endpoints.json` so that a
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

/// The file format (versioned).
#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    endpoints: Vec<(AttachmentKey, EndpointRecord)>,
}

const FORMAT_VERSION: u32 = 1;

/// The registry of wired pods, persisted on every change (write, fsync, rename).
#[derive(Debug)]
pub struct Endpoints {
    path: PathBuf,
    map: BTreeMap<AttachmentKey, EndpointRecord>,
}

impl Endpoints {
    /// Loads `path` (an absent file is an empty registry).
    ///
    /// # Errors
    /// I/O errors, or `InvalidData` for a corrupt file or another format version (the file is
    /// left as it is).
    pub fn load(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let map = match fs::read(&path) {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                if file.version != FORMAT_VERSION {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: format version {} (this agent reads {FORMAT_VERSION})",
                            path.display(),
                            file.version
                        ),
                    ));
                }
                file.endpoints.into_iter().collect()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self { path, map })
    }

    fn save(&self) -> io::Result<()> {
        let file = File {
            version: FORMAT_VERSION,
            endpoints: self
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Records (or replaces) an endpoint, durably.
    ///
    /// # Errors
    /// When the file cannot be written (the registry is unchanged then).
    pub fn insert(&mut self, key: &AttachmentKey, record: EndpointRecord) -> io::Result<()> {
        let previous = self.map.insert(key.clone(), record);
        self.save().inspect_err(|_| {
            match previous {
                Some(p) => self.map.insert(key.clone(), p),
                None => self.map.remove(key),
            };
        })
    }

    /// Forgets an endpoint, durably; returns it.
    ///
    /// # Errors
    /// When the file cannot be written (the registry is unchanged then).
    pub fn remove(&mut self, key: &AttachmentKey) -> io::Result<Option<EndpointRecord>> {
        let Some(record) = self.map.remove(key) else {
            return Ok(None);
        };
        match self.save() {
            Ok(()) => Ok(Some(record)),
            Err(e) => {
                self.map.insert(key.clone(), record);
                Err(e)
            }
        }
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

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
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
        let path = dir.path().join("endpoints.json");
        let mut e = Endpoints::load(&path).unwrap();
        assert!(e.is_empty());
        let k = AttachmentKey::new("c-a", "eth0");
        e.insert(&k, record("a", 5)).unwrap();
        e.insert(&AttachmentKey::new("c-b", "eth0"), record("b", 6))
            .unwrap();
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

        let back = Endpoints::load(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back.get(&k), Some(&record("a", 5)));
        assert_eq!(
            back.pod_addresses()[&("prod".to_owned(), "a".to_owned())],
            Ipv4Addr::new(198, 18, 0, 5)
        );

        fs::write(&path, b"{torn").unwrap();
        assert_eq!(
            Endpoints::load(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        fs::write(&path, br#"{"version":9,"endpoints":[]}"#).unwrap();
        assert!(
            Endpoints::load(&path)
                .unwrap_err()
                .to_string()
                .contains("version 9")
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
