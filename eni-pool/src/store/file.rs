//! A record store in a directory: an append-only journal plus a snapshot, with group commit.
//!
//! Layout of the directory:
//! - `state.json`: the snapshot, `{"format":"cnikit-eni-pool/state","version":1,"generation":G,
//!   "bindings":[…],"cooling":[…],"meta":{…}}`, replaced atomically (temp file, `fsync`,
//!   `rename`, `fsync` of the directory);
//! - `journal`: a header line `{"format":"cnikit-eni-pool/journal","version":1,"generation":G}`
//!   then one line per commit, `<crc32 of the JSON, 8 hex digits> <JSON array of changes>`;
//!   appended and `fdatasync`ed; one commit is one line, so a commit is all or nothing;
//! - `LOCK`: held (`flock`) while a process has the store open.
//!
//! One writer thread takes every commit queued while the previous sync ran, writes them with one
//! `write` and one `fdatasync`, then answers them all (group commit). Once the journal holds
//! `compact_after` commits, the writer folds it into a new snapshot and starts an empty journal
//! of the next generation.
//!
//! Recovery on open: the snapshot, then the journal if it has the same generation (an older one
//! was already folded in). A last line that is incomplete or fails its checksum, with nothing
//! valid after it, is a write cut by a crash and was never acknowledged: it is dropped. Any
//! other malformed content is [`StoreError::Corrupt`] and the files are left as they are.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    thread::JoinHandle,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{BindingRecord, Change, CoolingRecord, PoolMeta, RecordStore, Records, StoreError};

const STATE_FORMAT: &str = "cnikit-eni-pool/state";
const JOURNAL_FORMAT: &str = "cnikit-eni-pool/journal";
/// The format version this build reads and writes.
const VERSION: u32 = 1;
const STATE_FILE: &str = "state.json";
const JOURNAL_FILE: &str = "journal";
const LOCK_FILE: &str = "LOCK";
/// Commits written with one sync, at most.
const MAX_BATCH: usize = 4096;

/// Options of a [`FileStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStoreOptions {
    /// Journal commits after which the journal is folded into a new snapshot (a journal of
    /// about 25 MiB, replayed in well under a second at start). Default 65536.
    pub compact_after: usize,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        Self {
            compact_after: 65_536,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Head {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    format: String,
    version: u32,
    generation: u64,
    bindings: Vec<BindingRecord>,
    cooling: Vec<CoolingRecord>,
    meta: PoolMeta,
}

#[derive(Serialize, Deserialize)]
struct JournalHeader {
    format: String,
    version: u32,
    generation: u64,
}

enum Request {
    /// The changes, their journal line (encoded by the caller, off the writer's path), and
    /// where to answer.
    Commit(
        Vec<Change>,
        Vec<u8>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Load(oneshot::Sender<Result<Records, StoreError>>),
}

/// Counters of a [`FileStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStoreStats {
    /// Commits made durable.
    pub commits: u64,
    /// `fdatasync` calls that made them durable (fewer than commits under concurrency: group
    /// commit).
    pub syncs: u64,
    /// Snapshots written.
    pub compactions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    syncs: AtomicU64,
    compactions: AtomicU64,
}

/// Records in a directory (see the module documentation for the format).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    counters: Arc<Counters>,
    tx: Mutex<Option<Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, line: Option<usize>, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        line,
        detail: detail.into(),
    }
}

/// Checks the `format` and `version` fields of a file's JSON head.
fn check_head(path: &Path, bytes: &[u8], format: &str) -> Result<(), StoreError> {
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, None, format!("unreadable header: {e}")))?;
    if head.format != format {
        return Err(corrupt(
            path,
            None,
            format!("format {:?}, expected {format:?}", head.format),
        ));
    }
    if head.version != VERSION {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_owned(),
            found: head.version,
            supported: VERSION,
        });
    }
    Ok(())
}

fn encode_line(changes: &[Change], out: &mut Vec<u8>) {
    let json = serde_json::to_vec(changes).expect("records always serialize");
    let crc = crc32fast::hash(&json);
    out.extend_from_slice(format!("{crc:08x} ").as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
}

fn decode_line(line: &[u8]) -> Result<Vec<Change>, String> {
    let Some(body) = line.strip_suffix(b"\n") else {
        return Err("incomplete line".into());
    };
    if body.len() < 10 || body[8] != b' ' {
        return Err("no checksum".into());
    }
    let crc = std::str::from_utf8(&body[..8])
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or("malformed checksum")?;
    let json = &body[9..];
    if crc32fast::hash(json) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(json).map_err(|e| format!("unreadable record: {e}"))
}

/// Reads the snapshot and the journal; returns the records and the snapshot's generation.
fn recover(dir: &Path) -> Result<(Records, u64), StoreError> {
    let mut records = Records::default();
    let state_path = dir.join(STATE_FILE);
    let mut generation = 0;
    match fs::read(&state_path) {
        Ok(bytes) => {
            check_head(&state_path, &bytes, STATE_FORMAT)?;
            let state: StateFile = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(&state_path, None, e.to_string()))?;
            generation = state.generation;
            for b in state.bindings {
                records.apply(&Change::PutBinding(b));
            }
            for c in state.cooling {
                records.apply(&Change::PutCooling(c));
            }
            records.meta = state.meta;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("read", &state_path)(e)),
    }
    let journal_path = dir.join(JOURNAL_FILE);
    let data = match fs::read(&journal_path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((records, generation)),
        Err(e) => return Err(io_err("read", &journal_path)(e)),
    };
    let mut segments = data.split_inclusive(|b| *b == b'\n');
    let header = segments.next().unwrap_or_default();
    let header = header
        .strip_suffix(b"\n")
        .ok_or_else(|| corrupt(&journal_path, Some(1), "incomplete header"))?;
    check_head(&journal_path, header, JOURNAL_FORMAT)?;
    let header: JournalHeader = serde_json::from_slice(header)
        .map_err(|e| corrupt(&journal_path, Some(1), e.to_string()))?;
    if header.generation < generation {
        // Folded into the snapshot already (a crash between the two replacements).
        return Ok((records, generation));
    }
    if header.generation > generation {
        return Err(corrupt(
            &journal_path,
            Some(1),
            format!(
                "journal generation {} is newer than the snapshot's {generation}",
                header.generation
            ),
        ));
    }
    let decoded: Vec<Result<Vec<Change>, String>> = segments.map(decode_line).collect();
    if let Some(first_bad) = decoded.iter().position(Result::is_err) {
        if decoded[first_bad..].iter().any(Result::is_ok) {
            let detail = decoded[first_bad]
                .as_ref()
                .err()
                .cloned()
                .unwrap_or_default();
            return Err(corrupt(&journal_path, Some(first_bad + 2), detail));
        }
        tracing::warn!(
            path = %journal_path.display(),
            line = first_bad + 2,
            "dropping a torn journal tail (a commit cut by a crash, never acknowledged)"
        );
    }
    for changes in decoded.into_iter().map_while(Result::ok) {
        for c in &changes {
            records.apply(c);
        }
    }
    Ok((records, generation))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Writes `bytes` to `dir/name` atomically and durably.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    sync_dir(dir)
}

struct Writer {
    dir: PathBuf,
    journal_path: PathBuf,
    journal: File,
    journal_len: u64,
    journal_commits: usize,
    generation: u64,
    image: Records,
    poisoned: Option<String>,
    options: FileStoreOptions,
    counters: Arc<Counters>,
    _lock: File,
}

impl Writer {
    /// Writes a new snapshot of the image and an empty journal, one generation on.
    fn compact(&mut self) -> Result<(), StoreError> {
        let generation = self.generation + 1;
        let state = StateFile {
            format: STATE_FORMAT.to_owned(),
            version: VERSION,
            generation,
            bindings: self.image.bindings.values().cloned().collect(),
            cooling: self.image.cooling.values().cloned().collect(),
            meta: self.image.meta,
        };
        let bytes = serde_json::to_vec(&state).expect("records always serialize");
        replace_file(&self.dir, STATE_FILE, &bytes)?;
        let mut header = serde_json::to_vec(&JournalHeader {
            format: JOURNAL_FORMAT.to_owned(),
            version: VERSION,
            generation,
        })
        .expect("headers always serialize");
        header.push(b'\n');
        replace_file(&self.dir, JOURNAL_FILE, &header)?;
        self.journal = OpenOptions::new()
            .append(true)
            .open(&self.journal_path)
            .map_err(io_err("open", &self.journal_path))?;
        self.journal_len = header.len() as u64;
        self.journal_commits = 0;
        self.generation = generation;
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the lines of a batch and syncs them; the image is updated by the caller once
    /// the batch is answered.
    fn append(&mut self, lines: &[&[u8]], buf: &mut Vec<u8>) -> Result<(), String> {
        if let Some(why) = &self.poisoned {
            return Err(why.clone());
        }
        buf.clear();
        for line in lines {
            buf.extend_from_slice(line);
        }
        let written = self
            .journal
            .write_all(buf)
            .and_then(|()| self.journal.sync_data());
        if let Err(e) = written {
            let why = format!("journal write: {e}");
            // Cut a partial write so the next commit does not follow garbage.
            if let Err(e2) = self
                .journal
                .set_len(self.journal_len)
                .and_then(|()| self.journal.sync_data())
            {
                self.poisoned = Some(format!("{why}; truncating it back failed: {e2}"));
            }
            return Err(why);
        }
        self.journal_len += buf.len() as u64;
        self.journal_commits += lines.len();
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .commits
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn run(mut self, rx: &Receiver<Request>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Ok(first) = rx.recv() {
            let mut commits = Vec::new();
            let mut loads = Vec::new();
            let mut next = Some(first);
            while let Some(r) = next.take() {
                match r {
                    Request::Commit(c, line, tx) => commits.push((c, line, tx)),
                    Request::Load(tx) => loads.push(tx),
                }
                if commits.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !commits.is_empty() {
                let lines: Vec<&[u8]> = commits.iter().map(|(_, l, _)| l.as_slice()).collect();
                let result = self.append(&lines, &mut buf);
                let mut durable = Vec::with_capacity(commits.len());
                for (changes, _, tx) in commits {
                    let answer = match &result {
                        Ok(()) => Ok(()),
                        Err(why) => Err(StoreError::Io {
                            op: "append",
                            path: self.journal_path.clone(),
                            source: io::Error::other(why.clone()),
                        }),
                    };
                    // A dropped receiver (caller gave up) is fine: the commit stands.
                    tx.send(answer).ok();
                    durable.push(changes);
                }
                // After answering: the image only serves loads and compaction.
                if result.is_ok() {
                    for c in durable.iter().flatten() {
                        self.image.apply(c);
                    }
                }
            }
            for tx in loads {
                tx.send(match &self.poisoned {
                    Some(why) => Err(StoreError::Poisoned(why.clone())),
                    None => Ok(self.image.clone()),
                })
                .ok();
            }
            if self.poisoned.is_none()
                && self.journal_commits >= self.options.compact_after
                && let Err(e) = self.compact()
            {
                tracing::error!(error = %e, "compacting the record journal failed");
                self.poisoned = Some(format!("compaction: {e}"));
            }
        }
    }
}

impl FileStore {
    /// Opens (or creates) the store in `dir` with default options.
    ///
    /// # Errors
    /// [`StoreError::Locked`] when another process has it open; [`StoreError::Corrupt`] or
    /// [`StoreError::UnsupportedVersion`] when its files cannot be read safely (they are left
    /// untouched); [`StoreError::Io`] on file errors.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, FileStoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`.
    ///
    /// # Errors
    /// As [`FileStore::open`].
    pub fn open_with(dir: impl AsRef<Path>, options: FileStoreOptions) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        let (image, generation) = recover(&dir)?;
        let journal_path = dir.join(JOURNAL_FILE);
        // A placeholder handle; `compact` opens the fresh journal.
        let placeholder = File::open(&lock_path).map_err(io_err("open", &lock_path))?;
        let counters = Arc::new(Counters::default());
        let mut writer = Writer {
            dir: dir.clone(),
            journal_path,
            journal: placeholder,
            journal_len: 0,
            journal_commits: 0,
            generation,
            image,
            poisoned: None,
            options,
            counters: counters.clone(),
            _lock: lock,
        };
        writer.compact()?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cnikit-pool-store".into())
            .spawn(move || writer.run(&rx))
            .map_err(io_err("spawn writer thread", &dir))?;
        Ok(Self {
            dir,
            counters,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since the store was opened.
    #[must_use]
    pub fn stats(&self) -> FileStoreStats {
        FileStoreStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            compactions: self.counters.compactions.load(Ordering::Relaxed),
        }
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        let guard = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        guard
            .as_ref()
            .ok_or(StoreError::Closed)?
            .send(request)
            .map_err(|_| StoreError::Closed)
    }

    /// Finishes queued commits, stops the writer and releases the lock.
    pub fn close(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the record store's writer thread panicked");
        }
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait]
impl RecordStore for FileStore {
    async fn load(&self) -> Result<Records, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Request::Load(tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let mut line = Vec::with_capacity(512);
        encode_line(&changes, &mut line);
        self.send(Request::Commit(changes, line, tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        allocation::{Allocation, GatewayRule, ResourceId},
        pod::{PodKey, ResourceKind},
    };

    fn binding(name: &str, last: u8) -> BindingRecord {
        BindingRecord::new(
            Allocation {
                pod: PodKey::new("ns", name, "c0ffee", "eth0"),
                kind: ResourceKind::SharedIp,
                ipv4: Ipv4Addr::new(198, 18, 0, last),
                ipv6: None,
                eni_id: "eni-1".into(),
                mac: "00:16:3e:00:00:01".into(),
                device_index: Some(1),
                vswitch_id: "vsw-1".into(),
                vswitch_cidr: "198.18.0.0/24".parse().unwrap(),
                vswitch_ipv6_cidr: None,
                gateway: GatewayRule::default().gateway("198.18.0.0/24".parse().unwrap()),
                route_table_id: 1001,
            },
            1,
        )
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn commits_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let opts = FileStoreOptions { compact_after: 3 };
        {
            let s = FileStore::open_with(dir.path(), opts).unwrap();
            rt.block_on(async {
                for i in 0..10u8 {
                    s.commit(vec![Change::PutBinding(binding(&format!("p{i}"), i + 1))])
                        .await
                        .unwrap();
                }
                s.commit(vec![
                    Change::RemoveBinding(PodKey::new("ns", "p3", "c0ffee", "eth0")),
                    Change::PutCooling(CoolingRecord::new(
                        ResourceId::Eni {
                            eni_id: "eni-9".into(),
                        },
                        99,
                    )),
                ])
                .await
                .unwrap();
            });
        }
        let s = FileStore::open(dir.path()).unwrap();
        let r = rt.block_on(s.load()).unwrap();
        assert_eq!(r.bindings.len(), 9);
        assert_eq!(s.stats().compactions, 1, "one compaction at open");
        assert_eq!(r.cooling.len(), 1);
        // A second store on the same directory is refused while the first is open.
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StoreError::Locked { .. })
        ));
    }

    #[test]
    fn torn_tail_is_dropped_but_corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let s = FileStore::open(dir.path()).unwrap();
            rt.block_on(async {
                for i in 0..3u8 {
                    s.commit(vec![Change::PutBinding(binding(&format!("p{i}"), i + 1))])
                        .await
                        .unwrap();
                }
            });
        }
        let journal = dir.path().join(JOURNAL_FILE);
        let good = fs::read(&journal).unwrap();
        // A commit cut in the middle of its line.
        let mut torn = good.clone();
        torn.extend_from_slice(b"1234abcd [{\"put_bind");
        fs::write(&journal, &torn).unwrap();
        {
            let s = FileStore::open(dir.path()).unwrap();
            assert_eq!(rt.block_on(s.load()).unwrap().bindings.len(), 3);
        }
        // Reopening compacted: the journal is fresh, the snapshot has the three bindings.
        // Now corrupt a record that has a valid one after it.
        {
            let s = FileStore::open(dir.path()).unwrap();
            rt.block_on(async {
                for i in 3..5u8 {
                    s.commit(vec![Change::PutBinding(binding(&format!("p{i}"), i + 1))])
                        .await
                        .unwrap();
                }
            });
        }
        let mut bytes = fs::read(&journal).unwrap();
        let first_nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        bytes[first_nl + 20] ^= 0x20;
        fs::write(&journal, &bytes).unwrap();
        let before = fs::read(&journal).unwrap();
        let err = FileStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { line: Some(2), .. }),
            "{err}"
        );
        assert_eq!(fs::read(&journal).unwrap(), before, "files left untouched");
    }

    #[test]
    fn unknown_version_and_garbage_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(STATE_FILE),
            br#"{"format":"cnikit-eni-pool/state","version":7}"#,
        )
        .unwrap();
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StoreError::UnsupportedVersion { found: 7, .. })
        ));
        fs::write(dir.path().join(STATE_FILE), b"<html>").unwrap();
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
        fs::write(
            dir.path().join(STATE_FILE),
            br#"{"format":"something-else","version":1}"#,
        )
        .unwrap();
        assert!(matches!(
            FileStore::open(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn concurrent_commits_share_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let s = Arc::new(FileStore::open(dir.path()).unwrap());
        rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..200u32 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    s.commit(vec![Change::PutBinding(binding(
                        &format!("p{i}"),
                        u8::try_from(i % 250).unwrap() + 1,
                    ))])
                    .await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
        });
        assert_eq!(rt.block_on(s.load()).unwrap().bindings.len(), 200);
        let stats = s.stats();
        assert_eq!(stats.commits, 200);
        assert!(
            stats.syncs < stats.commits,
            "group commit: {} syncs for {} commits",
            stats.syncs,
            stats.commits
        );
    }
}
