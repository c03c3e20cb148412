//! A record store in a directory: a snapshot plus journals overwritten in place, with group
//! commit and compaction that does not pause commits.
//!
//! The format is described in the `format` module: `state.json` (the snapshot, replaced
//! atomically), two sets of journal files `journal.0` … `journal.2N-1` (preallocated,
//! zero-filled files overwritten in place; each of the N writer threads owns one file per
//! set; one writer by default) and `LOCK` (held with `flock` while a process has the store
//! open). Version 1 and 2 directories are read and converted at open.
//!
//! A writer thread takes every commit queued since it last looked, gives them the next
//! sequence numbers, writes them to its file of the current set with one `pwrite` and makes
//! them durable with one `fdatasync` (group commit), answers them, applies them to the
//! in-memory image (for loads and snapshots; the changes are moved in, not copied) while their
//! callers run, and goes back to the queue. What it is done with (the commits, records the
//! image let go of) goes back to the callers to free, so that the writer never waits for
//! another thread's malloc arena. There is no other thread on the commit path: a separate
//! applier thread, tried before, cost more CPU than the writer itself and, starved at a low
//! priority, applied thousands of commits at once and held a CPU for milliseconds
//! (`docs/benchmarks.md`). The writers ask for short time slices, the snapshot thread runs
//! at a lower priority: on a busy machine a finished sync should not wait for a CPU. Groups
//! are acknowledged in sequence order,
//! each once it and every earlier group are durable, so what is durable and acknowledged is
//! always a prefix of the sequence.
//!
//! Overwriting blocks that already hold data (the zeroes written when a journal file is
//! created) changes no file size and no block map, so `fdatasync` flushes the data alone
//! instead of also committing the file system's metadata journal (on ext4 about half the
//! cost of an append's; `docs/benchmarks.md`).
//!
//! With [`FileStoreOptions::journals`] above 1, that many writers each own a file per set and
//! their groups are written and synced concurrently (a group starts while the previous one is
//! still syncing). On the virtio disk we measured, concurrent syncs were slower than one
//! sync at a time, so the default is one.
//!
//! Compaction: when the current set is full (or `compact_after` commits were written) the
//! writers switch at once to the other set with the next generation and go on committing,
//! while a snapshot thread writes the snapshot of that generation from a copy of the image.
//! Once it is durable the older set is stale and free for the generation after. A writer
//! that reaches the next compaction point first waits for the snapshot (back-pressure,
//! [`FileStoreStats::snapshot_waits`]). Only after a failed journal write do the writers
//! pause for a snapshot, so that no line whose caller got an error can be replayed later.
//!
//! Recovery on open: the snapshot, then the journals' lines of its generation and the next
//! in sequence order up to the first missing number. A commit cut by a crash was never
//! acknowledged and is dropped with whatever follows it; a line that says a missing commit
//! had been acknowledged, and any other malformed content, is [`StoreError::Corrupt`] and the
//! files are left as they are. Every open then writes a snapshot of a generation above every
//! line, so lines a crash left behind can never be mistaken for later ones.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions, TryLockError},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::metrics::{LatencyCounters, LatencyHistogram};

use super::{
    Change, Leftover, RecordStore, Records, StoreError,
    format::{
        LEGACY_JOURNAL_FILE, LINE_OVERHEAD, MAX_WRITERS, STATE_FILE, create_journal,
        encode_changes, encode_line, io_err, journal_header, journal_index, journal_name, recover,
        replace_file, rewrite_header, state_bytes, sync_dir,
    },
};

const LOCK_FILE: &str = "LOCK";
/// Commits written with one sync, at most.
const MAX_BATCH: usize = 4096;
/// Journal files are at least this large.
const MIN_JOURNAL_BYTES: u64 = 64 * 1024;
/// A sync (or commit) slower than this is counted in [`FileStoreStats::slow_syncs`] (or
/// [`FileStoreStats::slow_commits`]).
const SLOW_SYNC: Duration = Duration::from_millis(1);

/// Options of a [`FileStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStoreOptions {
    /// Journal commits after which the records are folded into a new snapshot and the
    /// writers switch to the other set of journal files. Default 65536.
    pub compact_after: usize,
    /// Writer threads (each owns one journal file per set): how many commit groups may be
    /// written and synced at once. Default 1 (concurrent syncs measured slower on a virtio
    /// disk); clamped to 1..=16.
    pub journals: usize,
    /// The size of each journal file (there are two per writer), written with zeroes when it
    /// is created; the records are folded into a new snapshot when one is full. Default
    /// 16 MiB (about 40,000 commits of one binding); at least 64 KiB.
    pub journal_bytes: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        Self {
            compact_after: 65_536,
            journals: 1,
            journal_bytes: 16 << 20,
        }
    }
}

/// Counters of a [`FileStore`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStoreStats {
    /// Commits made durable.
    pub commits: u64,
    /// `fdatasync` calls that made them durable (fewer than commits under concurrency: group
    /// commit).
    pub syncs: u64,
    /// Snapshots written (the one every open writes included).
    pub compactions: u64,
    /// Syncs that started while another writer's sync was in flight (pipelining).
    pub overlapped_syncs: u64,
    /// Times a writer reached a compaction point while the previous snapshot was still being
    /// written, and waited for it (back-pressure; commits queue meanwhile).
    pub snapshot_waits: u64,
    /// Snapshots written while the writers paused: at open, and after a failed journal
    /// write.
    pub blocking_compactions: u64,
    /// Journal `fdatasync` calls that took over 1 ms.
    pub slow_syncs: u64,
    /// Commits answered over 1 ms after they were queued (queue, write, sync, answer: the
    /// store's share of a caller's latency).
    pub slow_commits: u64,
    /// The most commits written with one sync.
    pub max_group: u64,
    /// The longest snapshot, from the switch to the other set until the snapshot was
    /// durable, in microseconds.
    pub max_snapshot_us: u64,
    /// How long each journal `fdatasync` took: the disk's share of a commit's latency (a
    /// commit waits for the sync in flight, then for its own).
    pub sync_latency: LatencyHistogram,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    syncs: AtomicU64,
    compactions: AtomicU64,
    overlapped: AtomicU64,
    snapshot_waits: AtomicU64,
    blocking_compactions: AtomicU64,
    slow_syncs: AtomicU64,
    slow_commits: AtomicU64,
    max_group: AtomicU64,
    max_snapshot_us: AtomicU64,
    sync_latency: LatencyCounters,
}

type Answer = oneshot::Sender<Result<(), StoreError>>;

/// A commit waiting for a writer: its changes, their JSON, and where to answer.
struct Pending {
    changes: Vec<Change>,
    json: Vec<u8>,
    /// Taken when answered.
    tx: Option<Answer>,
    /// When it was queued.
    queued: Instant,
}

/// A group of commits handed to one writer.
struct Group {
    /// Its last sequence number.
    last: u64,
    /// Its commits, once written.
    commits: Vec<Pending>,
    /// `None` while in flight.
    outcome: Option<Result<(), String>>,
}

/// What the writers share, under one lock.
struct Core {
    queue: VecDeque<Pending>,
    /// The next sequence number to hand out.
    next_seq: u64,
    /// Every commit up to this one is acknowledged.
    acked: u64,
    /// Groups not yet acknowledged, in sequence order.
    inflight: VecDeque<Group>,
    /// The writers' generation: their lines go to set `generation % 2`.
    generation: u64,
    /// The generation of the last durable snapshot: `generation`, or one less while the
    /// snapshot thread writes (or failed to write) the snapshot of `generation`.
    durable: u64,
    /// Where each writer writes next in its file of the current set.
    offsets: Vec<u64>,
    /// Commits written in the current generation (or since a failed snapshot).
    since_snapshot: usize,
    /// A snapshot for the snapshot thread to write.
    snapshot_job: Option<SnapshotJob>,
    /// The snapshot thread has a job (queued or being written).
    snapshotting: bool,
    /// The last snapshot failed: the current set may grow past its size, and the next try
    /// comes after `compact_after` more commits.
    snapshot_failed: bool,
    /// The writers stop the snapshot thread once they have stopped.
    stop_snapshots: bool,
    /// A writer is writing a snapshot while the others pause (after a failed write).
    compacting: bool,
    /// A group failed: nothing more is written until a snapshot of a new generation makes
    /// every unacknowledged line stale.
    failed: bool,
    /// A group that failed was answered: later groups are answered with errors too.
    broken: Option<String>,
    closing: bool,
    poisoned: Option<String>,
}

/// A snapshot of `generation` to write: every acknowledged commit up to at least `after`.
#[derive(Clone, Copy, Debug)]
struct SnapshotJob {
    generation: u64,
    after: u64,
    /// When the writers switched sets.
    since: Instant,
}

/// Answered groups on their way to the image.
#[derive(Default)]
struct Done {
    /// In sequence order: the last sequence number, whether it was acknowledged, and the
    /// commits (their changes to apply; their encoded lines to free). Failed groups come
    /// with no changes.
    groups: VecDeque<(u64, bool, Vec<Pending>)>,
    /// A holder of the image waits for more answers (see [`ImageGuard::wait_for_answers`]).
    waiting: bool,
}

/// Memory a writer is done with that came from the callers' threads (their commits, and the
/// records those displaced from the image), handed back for a caller to free: glibc's `free`
/// of a chunk from another thread's arena takes that arena's lock, and a writer that sleeps
/// on it holds up the next group.
struct Returned {
    /// Answered and applied (their changes moved into the image).
    #[allow(dead_code, reason = "held to be dropped")]
    commits: Vec<Pending>,
    #[allow(dead_code, reason = "held to be dropped")]
    leftovers: Vec<Leftover>,
}

/// The records as of the last applied commit.
struct Image {
    records: Records,
    /// Every answered commit up to this sequence number is applied (or was a failure).
    applied: u64,
    /// `records` holds exactly the commits up to this one (acknowledged commits are a prefix
    /// of the sequence: after a failed group every later one fails until a snapshot).
    acked: u64,
}

struct Shared {
    dir: PathBuf,
    options: FileStoreOptions,
    header_len: u64,
    core: Mutex<Core>,
    /// Signalled when work is queued, a group completes or a snapshot ends.
    work: Condvar,
    /// Signalled (under `core`) when the snapshot thread has a job or must stop.
    snapshot_ready: Condvar,
    /// Answered groups not yet applied to the image (whoever holds the image applies them).
    done: Mutex<Done>,
    /// Signalled (under `done`) when a group is answered while somebody waits for one.
    answered: Condvar,
    /// Every acknowledged commit applied (for loads and snapshots). Taken through
    /// [`Shared::image`], whose guard applies the answered groups before it lets go.
    image: Mutex<Image>,
    /// Freed by the next caller whose commit is answered.
    returned: Mutex<Vec<Returned>>,
    counters: Counters,
    /// Tests: the snapshot thread waits while this is set.
    #[cfg(test)]
    hold_snapshots: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn image(&self) -> ImageGuard<'_> {
        ImageGuard::new(
            self,
            self.image.lock().unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn done(&self) -> MutexGuard<'_, Done> {
        self.done.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn returned(&self) -> MutexGuard<'_, Vec<Returned>> {
        self.returned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the answered groups to the image, unless somebody else holds it (then they
    /// do, before they let go).
    fn apply_answered(&self) {
        if let Some(image) = self.try_image() {
            drop(ImageGuard::new(self, image));
        }
    }

    /// The image's lock, unless somebody holds it.
    fn try_image(&self) -> Option<MutexGuard<'_, Image>> {
        match self.image.try_lock() {
            Ok(image) => Some(image),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The image once every commit up to `seq` is answered and applied.
    fn image_at_least(&self, seq: u64) -> ImageGuard<'_> {
        let mut image = self.image();
        image.catch_up();
        while image.applied < seq {
            image.wait_for_answers();
        }
        image
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Core>) -> MutexGuard<'a, Core> {
        self.work
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The image, locked. Whoever holds it applies the groups answered meanwhile before letting
/// go, and looks again afterwards: a writer that answered a group while the image was held
/// left it in [`Shared::done`], so nothing stays unapplied once every holder is gone.
struct ImageGuard<'a> {
    shared: &'a Shared,
    /// `None` only in `drop`.
    guard: Option<MutexGuard<'a, Image>>,
}

impl<'a> ImageGuard<'a> {
    fn new(shared: &'a Shared, guard: MutexGuard<'a, Image>) -> Self {
        Self {
            shared,
            guard: Some(guard),
        }
    }

    /// Applies every answered group, in sequence order, moving the changes into the image;
    /// hands the commits and what they displaced back to the callers to free.
    fn catch_up(&mut self) {
        let Some(image) = self.guard.as_mut() else {
            return;
        };
        loop {
            let groups = std::mem::take(&mut self.shared.done().groups);
            if groups.is_empty() {
                break;
            }
            let mut returned = Vec::with_capacity(groups.len());
            for (last, acked, mut commits) in groups {
                let mut leftovers = Vec::new();
                for p in &mut commits {
                    for change in p.changes.drain(..) {
                        image.records.apply_owned(change, &mut leftovers);
                    }
                }
                returned.push(Returned { commits, leftovers });
                // Groups come in sequence order (numbers start over after a failure's
                // snapshot, which resets `applied` with nothing in flight).
                image.applied = last;
                if acked {
                    image.acked = last;
                }
            }
            self.shared.returned().append(&mut returned);
        }
    }

    /// Waits until a writer answers another group, and applies it. The image stays locked
    /// meanwhile: the writers leave their groups to this holder.
    fn wait_for_answers(&mut self) {
        let mut done = self.shared.done();
        if done.groups.is_empty() {
            done.waiting = true;
            done = self
                .shared
                .answered
                .wait(done)
                .unwrap_or_else(PoisonError::into_inner);
            done.waiting = false;
        }
        drop(done);
        self.catch_up();
    }
}

impl std::ops::Deref for ImageGuard<'_> {
    type Target = Image;

    fn deref(&self) -> &Image {
        self.guard.as_deref().expect("held until drop")
    }
}

impl std::ops::DerefMut for ImageGuard<'_> {
    fn deref_mut(&mut self) -> &mut Image {
        self.guard.as_deref_mut().expect("held until drop")
    }
}

impl Drop for ImageGuard<'_> {
    fn drop(&mut self) {
        loop {
            self.catch_up();
            drop(self.guard.take());
            if self.shared.done().groups.is_empty() {
                return;
            }
            // Answered while we held the image: apply them, unless a new holder will.
            self.guard = self.shared.try_image();
            if self.guard.is_none() {
                return;
            }
        }
    }
}

/// Records in a directory (see the module documentation for the format).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    snapshotter: Mutex<Option<JoinHandle<()>>>,
    /// Held (`flock`) until the store is dropped.
    _lock: File,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// One writer thread: owns one journal file of each set.
struct Writer {
    shared: Arc<Shared>,
    index: usize,
    /// Its file of set 0 and of set 1.
    paths: [PathBuf; 2],
    files: [File; 2],
}

impl Writer {
    fn run(self) {
        short_slices();
        let shared = &*self.shared;
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut core = shared.core();
        // Waiting for a snapshot (counted once per wait).
        let mut held_back = false;
        loop {
            if let Some(why) = &core.poisoned
                && !core.queue.is_empty()
            {
                let why = why.clone();
                let queued: Vec<Pending> = core.queue.drain(..).collect();
                drop(core);
                for tx in queued.into_iter().filter_map(|p| p.tx) {
                    tx.send(Err(StoreError::Poisoned(why.clone()))).ok();
                }
                core = shared.core();
                continue;
            }
            if core.compacting {
                core = shared.wait(core);
                continue;
            }
            if core.failed && core.poisoned.is_none() {
                // Every line not acknowledged must become stale before anything else is
                // written: a snapshot of a new generation, with the writers paused.
                core.compacting = true;
                while !core.inflight.is_empty() || core.snapshotting {
                    core = shared.wait(core);
                }
                core = compact(shared, core);
                core.compacting = false;
                shared.work.notify_all();
                continue;
            }
            let cap = shared.options.journal_bytes;
            let offset = core.offsets[self.index];
            let first_len = core
                .queue
                .front()
                .map(|p| (p.json.len() + LINE_OVERHEAD) as u64);
            let full = first_len.is_some_and(|n| {
                offset + n > cap && offset > shared.header_len && !core.snapshot_failed
            });
            let due = core.since_snapshot >= shared.options.compact_after;
            if core.poisoned.is_none() && (full || due) && first_len.is_some() {
                if core.snapshotting {
                    // The other set still holds lines the durable snapshot needs.
                    if !held_back {
                        held_back = true;
                        shared
                            .counters
                            .snapshot_waits
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    core = shared.wait(core);
                    continue;
                }
                if core.durable == core.generation {
                    // Switch to the other set at once; the snapshot follows.
                    core.generation += 1;
                    let start = shared.header_len;
                    core.offsets.iter_mut().for_each(|o| *o = start);
                }
                // (Otherwise the snapshot of this generation failed: try again.)
                core.snapshot_job = Some(SnapshotJob {
                    generation: core.generation,
                    after: core.next_seq - 1,
                    since: Instant::now(),
                });
                core.snapshotting = true;
                core.since_snapshot = 0;
                shared.snapshot_ready.notify_one();
                continue;
            }
            held_back = false;
            let startable = first_len.is_some()
                && core.poisoned.is_none()
                && core.inflight.len() < shared.options.journals;
            if !startable {
                if core.closing && core.queue.is_empty() {
                    return;
                }
                core = shared.wait(core);
                continue;
            }
            core = self.write_group(core, &mut buf);
        }
    }

    /// Takes a group from the queue, writes and syncs it (without the lock), then
    /// acknowledges whatever groups are complete in order.
    fn write_group<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        buf: &mut Vec<u8>,
    ) -> MutexGuard<'a, Core> {
        let shared = &*self.shared;
        let offset = core.offsets[self.index];
        let cap = shared.options.journal_bytes;
        let mut n = 0;
        let mut bytes = 0u64;
        for p in &core.queue {
            let len = (p.json.len() + LINE_OVERHEAD) as u64;
            if n == MAX_BATCH || (n > 0 && offset + bytes + len > cap) {
                break;
            }
            bytes += len;
            n += 1;
        }
        let batch: Vec<Pending> = core.queue.drain(..n).collect();
        let first = core.next_seq;
        let last = first + n as u64 - 1;
        core.next_seq = last + 1;
        let (generation, acked) = (core.generation, core.acked);
        if !core.inflight.is_empty() {
            shared.counters.overlapped.fetch_add(1, Ordering::Relaxed);
        }
        core.inflight.push_back(Group {
            last,
            commits: Vec::new(),
            outcome: None,
        });
        drop(core);

        buf.clear();
        for (seq, p) in (first..).zip(&batch) {
            encode_line(generation, seq, acked, &p.json, buf);
        }
        let set = usize::from(generation % 2 == 1);
        let (file, path) = (&self.files[set], &self.paths[set]);
        let mut synced = None;
        let written = file
            .write_all_at(buf, offset)
            .and_then(|()| {
                let t = Instant::now();
                let r = file.sync_data();
                synced = Some(t.elapsed());
                r
            })
            .map_err(|e| format!("journal write to {}: {e}", path.display()));

        let mut core = shared.core();
        match &written {
            Ok(()) => {
                // (After a switch to the other set, its offsets are already fresh.)
                if core.generation == generation {
                    core.offsets[self.index] = offset + buf.len() as u64;
                    core.since_snapshot += n;
                }
                let c = &shared.counters;
                c.syncs.fetch_add(1, Ordering::Relaxed);
                c.max_group.fetch_max(n as u64, Ordering::Relaxed);
                if let Some(d) = synced {
                    c.sync_latency.record(d);
                    if d > SLOW_SYNC {
                        c.slow_syncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(why) => {
                tracing::error!(error = %why, "writing the record journal failed");
                core.failed = true;
            }
        }
        if let Some(g) = core.inflight.iter_mut().find(|g| g.last == last) {
            g.commits = batch;
            g.outcome = Some(written);
        }
        // Answer the complete groups at the front, in order, then apply them to the image
        // (while their callers run) and go back to the queue.
        let mut answers = Vec::new();
        let mut applied = Vec::new();
        while core.inflight.front().is_some_and(|g| g.outcome.is_some()) {
            let Some(mut g) = core.inflight.pop_front() else {
                break;
            };
            let outcome = match (&core.broken, g.outcome.take()) {
                (Some(why), _) => Err(format!("an earlier group failed: {why}")),
                (None, Some(Err(why))) => {
                    core.broken = Some(why.clone());
                    Err(why)
                }
                (None, _) => {
                    core.acked = g.last;
                    Ok(())
                }
            };
            let mut commits = g.commits;
            answers.extend(
                commits
                    .iter_mut()
                    .filter_map(|p| p.tx.take().map(|tx| (tx, p.queued, outcome.clone()))),
            );
            if outcome.is_err() {
                commits.iter_mut().for_each(|p| p.changes.clear());
            }
            applied.push((g.last, outcome.is_ok(), commits));
        }
        if applied.is_empty() {
            return core;
        }
        // Queued under the core lock, so that groups reach the image in order.
        {
            let mut done = shared.done();
            done.groups.extend(applied);
            if done.waiting {
                shared.answered.notify_all();
            }
        }
        shared.work.notify_all();
        drop(core);
        let count = answers.iter().filter(|(_, _, o)| o.is_ok()).count();
        shared
            .counters
            .commits
            .fetch_add(count as u64, Ordering::Relaxed);
        let now = Instant::now();
        let slow = answers
            .iter()
            .filter(|(_, queued, _)| now.duration_since(*queued) > SLOW_SYNC)
            .count();
        shared
            .counters
            .slow_commits
            .fetch_add(slow as u64, Ordering::Relaxed);
        for (tx, _, outcome) in answers {
            let answer = outcome.map_err(|why| StoreError::Io {
                op: "write journal",
                path: path.clone(),
                source: std::io::Error::other(why),
            });
            // A dropped receiver (caller gave up) is fine: the commit stands.
            tx.send(answer).ok();
        }
        // The callers run meanwhile; the image catches up before the next group.
        shared.apply_answered();
        shared.core()
    }
}

/// Lowers the calling thread's priority (nice +10): the snapshot thread is background work,
/// and on a busy machine the writers and the callers should go first.
fn background_priority() {
    // SAFETY: `setpriority` only reads its integer arguments; on Linux, `who` 0 with
    // `PRIO_PROCESS` is the calling thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower a record store thread's priority");
    }
}

/// Asks for short time slices for the calling thread (a writer): when its sync returns, the
/// scheduler lets it run before a busy thread's slice ends (Linux 6.12+ EEVDF custom slices,
/// `sched_runtime` with `SCHED_OTHER`; unprivileged; best effort).
fn short_slices() {
    /// `struct sched_attr` (`SCHED_ATTR_SIZE_VER0`).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    let attr = SchedAttr {
        size: u32::try_from(size_of::<SchedAttr>()).unwrap_or(48),
        policy: u32::try_from(libc::SCHED_OTHER).unwrap_or(0),
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: 100_000,
        deadline: 0,
        period: 0,
    };
    // SAFETY: the kernel reads `attr.size` bytes from a live, `repr(C)` `sched_attr`; pid 0 is
    // the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, std::ptr::from_ref(&attr), 0) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not ask for short time slices for a record store writer");
    }
}

/// The snapshot thread: writes the snapshots the writers ask for, while they go on.
fn write_snapshots(shared: &Shared) {
    background_priority();
    let mut core = shared.core();
    loop {
        let Some(job) = core.snapshot_job.take() else {
            if core.stop_snapshots {
                return;
            }
            core = shared
                .snapshot_ready
                .wait(core)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        drop(core);
        #[cfg(test)]
        while shared.hold_snapshots.load(Ordering::Relaxed) {
            if shared.core().stop_snapshots {
                // Closed while held: the job is dropped, as a crash would.
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // A copy of the image once every commit up to the switch is answered (it may hold
        // a few commits of the new generation too: recovery skips their lines).
        let (records, seq) = {
            let image = shared.image_at_least(job.after);
            (image.records.clone(), image.acked)
        };
        let bytes = state_bytes(&records, job.generation, seq);
        drop(records);
        let written = replace_file(&shared.dir, STATE_FILE, &[&bytes]);
        core = shared.core();
        core.snapshotting = false;
        match written {
            Ok(()) => {
                core.durable = job.generation;
                core.snapshot_failed = false;
                let c = &shared.counters;
                c.compactions.fetch_add(1, Ordering::Relaxed);
                let took = u64::try_from(job.since.elapsed().as_micros()).unwrap_or(u64::MAX);
                c.max_snapshot_us.fetch_max(took, Ordering::Relaxed);
            }
            Err(e) => {
                // The current set grows past its size meanwhile; try again later.
                tracing::error!(error = %e, "writing a snapshot of the records failed");
                core.snapshot_failed = true;
                core.since_snapshot = 0;
            }
        }
        shared.work.notify_all();
    }
}

/// Writes a snapshot of the image as a new generation while the writers pause, after a
/// failed journal write: every line not acknowledged becomes stale. Called with `compacting`
/// set, no group in flight and no snapshot being written.
fn compact<'a>(shared: &'a Shared, core: MutexGuard<'a, Core>) -> MutexGuard<'a, Core> {
    let generation = core.generation + 1;
    let seq = core.acked;
    let mut image = shared.image_at_least(core.next_seq - 1);
    // Sequence numbers after `seq` are handed out again.
    image.applied = seq;
    let bytes = state_bytes(&image.records, generation, seq);
    drop(image);
    drop(core);
    let written = replace_file(&shared.dir, STATE_FILE, &[&bytes]);
    let mut core = shared.core();
    match written {
        Ok(()) => {
            core.generation = generation;
            core.durable = generation;
            core.next_seq = seq + 1;
            let start = shared.header_len;
            core.offsets.iter_mut().for_each(|o| *o = start);
            core.since_snapshot = 0;
            core.snapshot_failed = false;
            core.failed = false;
            core.broken = None;
            let c = &shared.counters;
            c.compactions.fetch_add(1, Ordering::Relaxed);
            c.blocking_compactions.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::error!(error = %e, "the record store is unusable: a journal write failed and so did the snapshot after it");
            core.poisoned = Some(format!(
                "{}; the snapshot after it failed too: {e}",
                core.broken.clone().unwrap_or_default()
            ));
            core.failed = false;
        }
    }
    core
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
        let mut options = options;
        options.journals = options.journals.clamp(1, MAX_WRITERS);
        options.journal_bytes = options.journal_bytes.max(MIN_JOURNAL_BYTES);
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
        let recovered = recover(&dir)?;
        let files = 2 * options.journals;
        for i in 0..files {
            if !recovered.journals.contains(&i) {
                create_journal(&dir, i, options.journal_bytes)?;
            }
        }
        // A snapshot of a new generation above every line there can be (the snapshot's
        // generation and the next): every line written so far (torn ones, and the
        // unacknowledged ones after a hole) is stale from now on.
        let generation = recovered.generation + 2;
        let seq = recovered.seq;
        replace_file(
            &dir,
            STATE_FILE,
            &[&state_bytes(&recovered.records, generation, seq)],
        )?;
        let header = journal_header();
        for i in recovered.journals.iter().filter(|i| **i < files) {
            // Files of an older version get this version's header (same length; their
            // lines are all stale now).
            rewrite_header(&dir.join(journal_name(*i)), &header)?;
        }
        let mut removed = false;
        if recovered.legacy_journal {
            let path = dir.join(LEGACY_JOURNAL_FILE);
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            removed = true;
        }
        for i in recovered.journals.iter().filter(|i| **i >= files) {
            let path = dir.join(journal_name(*i));
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
            removed = true;
        }
        if removed {
            sync_dir(&dir)?;
        }
        let header_len = header.len() as u64;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            options,
            header_len,
            core: Mutex::new(Core {
                queue: VecDeque::new(),
                next_seq: seq + 1,
                acked: seq,
                inflight: VecDeque::new(),
                generation,
                durable: generation,
                offsets: vec![header_len; options.journals],
                since_snapshot: 0,
                snapshot_job: None,
                snapshotting: false,
                snapshot_failed: false,
                stop_snapshots: false,
                compacting: false,
                failed: false,
                broken: None,
                closing: false,
                poisoned: None,
            }),
            work: Condvar::new(),
            snapshot_ready: Condvar::new(),
            done: Mutex::new(Done::default()),
            answered: Condvar::new(),
            image: Mutex::new(Image {
                records: recovered.records,
                applied: seq,
                acked: seq,
            }),
            returned: Mutex::new(Vec::new()),
            counters: Counters::default(),
            #[cfg(test)]
            hold_snapshots: std::sync::atomic::AtomicBool::new(false),
        });
        shared.counters.compactions.fetch_add(1, Ordering::Relaxed);
        shared
            .counters
            .blocking_compactions
            .fetch_add(1, Ordering::Relaxed);
        let mut writers = Vec::new();
        for index in 0..options.journals {
            let paths = [0, 1].map(|set| dir.join(journal_name(journal_index(index, set))));
            let open = |path: &PathBuf| {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err("open", path))
            };
            let files = [open(&paths[0])?, open(&paths[1])?];
            writers.push(Writer {
                shared: shared.clone(),
                index,
                paths,
                files,
            });
        }
        let store = Self {
            dir: dir.clone(),
            shared,
            threads: Mutex::new(Vec::new()),
            snapshotter: Mutex::new(None),
            _lock: lock,
        };
        let snapshotter = store.shared.clone();
        let thread = std::thread::Builder::new()
            .name("cnikit-pool-store-snapshot".into())
            .spawn(move || write_snapshots(&snapshotter))
            .map_err(io_err("spawn snapshot thread", &dir))?;
        *store
            .snapshotter
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(thread);
        for w in writers {
            let index = w.index;
            let thread = std::thread::Builder::new()
                .name(format!("cnikit-pool-store-{index}"))
                .spawn(move || w.run())
                .map_err(io_err("spawn writer thread", &dir))?;
            store
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(thread);
        }
        Ok(store)
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counters since the store was opened.
    #[must_use]
    pub fn stats(&self) -> FileStoreStats {
        let c = &self.shared.counters;
        FileStoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            overlapped_syncs: c.overlapped.load(Ordering::Relaxed),
            snapshot_waits: c.snapshot_waits.load(Ordering::Relaxed),
            blocking_compactions: c.blocking_compactions.load(Ordering::Relaxed),
            slow_syncs: c.slow_syncs.load(Ordering::Relaxed),
            slow_commits: c.slow_commits.load(Ordering::Relaxed),
            max_group: c.max_group.load(Ordering::Relaxed),
            max_snapshot_us: c.max_snapshot_us.load(Ordering::Relaxed),
            sync_latency: c.sync_latency.snapshot(),
        }
    }

    /// Tests: holds snapshots back (the writers go on until they need one).
    #[cfg(test)]
    fn hold_snapshots(&self, hold: bool) {
        self.shared.hold_snapshots.store(hold, Ordering::Relaxed);
    }

    /// Finishes queued commits, stops the writers and releases the lock.
    pub fn close(&self) {
        self.shared.core().closing = true;
        self.shared.work.notify_all();
        let threads: Vec<JoinHandle<()>> = self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a record store writer thread panicked");
            }
        }
        // A snapshot under way is finished (not needed for safety: the journals hold
        // everything it would).
        self.shared.core().stop_snapshots = true;
        self.shared.snapshot_ready.notify_all();
        let snapshotter = self
            .snapshotter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = snapshotter
            && t.join().is_err()
        {
            tracing::error!("the record store's snapshot thread panicked");
        }
        // Whatever was answered last is applied (and freed) by now; make sure.
        drop(self.shared.image());
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
        let acked = {
            let core = self.shared.core();
            if let Some(why) = &core.poisoned {
                return Err(StoreError::Poisoned(why.clone()));
            }
            if core.closing {
                return Err(StoreError::Closed);
            }
            core.acked
        };
        // Every commit answered before this call is applied (or about to be: the writer
        // that answered it applies it next, or whoever holds the image). Loads are rare (at
        // start); waiting here is fine.
        let image = self.shared.image_at_least(acked);
        Ok(image.records.clone())
    }

    async fn commit(&self, changes: Vec<Change>) -> Result<(), StoreError> {
        let json = encode_changes(&changes);
        let (tx, rx) = oneshot::channel();
        {
            let mut core = self.shared.core();
            if core.closing {
                return Err(StoreError::Closed);
            }
            if let Some(why) = &core.poisoned {
                return Err(StoreError::Poisoned(why.clone()));
            }
            let was_empty = core.queue.is_empty();
            core.queue.push_back(Pending {
                changes,
                json,
                tx: Some(tx),
                queued: Instant::now(),
            });
            if was_empty {
                self.shared.work.notify_one();
            }
        }
        let answer = rx.await.map_err(|_| StoreError::Closed)?;
        // Free what the writers handed back, here rather than on a writer (see `Returned`);
        // taken under the lock, freed after it is released.
        let returned = std::mem::take(&mut *self.shared.returned());
        drop(returned);
        answer
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        allocation::{Allocation, GatewayRule, ResourceId},
        pod::{PodKey, ResourceKind},
        store::{
            BindingRecord, CoolingRecord,
            format::{VERSION, decode_line},
        },
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

    fn put(i: u8) -> Vec<Change> {
        vec![Change::PutBinding(binding(&format!("p{i}"), i + 1))]
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn options(journals: usize) -> FileStoreOptions {
        FileStoreOptions {
            journals,
            journal_bytes: MIN_JOURNAL_BYTES,
            ..FileStoreOptions::default()
        }
    }

    /// Commits `changes` one after the other (each acknowledged before the next).
    fn commit_all(s: &FileStore, rt: &tokio::runtime::Runtime, all: Vec<Vec<Change>>) {
        rt.block_on(async {
            for changes in all {
                s.commit(changes).await.unwrap();
            }
        });
    }

    #[test]
    fn applying_moves_records_in_and_hands_back_what_they_displace() {
        let mut records = Records::default();
        let mut leftovers = Vec::new();
        records.apply_owned(Change::PutBinding(binding("a", 1)), &mut leftovers);
        assert!(leftovers.is_empty());
        // The same pod again: the old record comes back.
        records.apply_owned(Change::PutBinding(binding("a", 2)), &mut leftovers);
        assert!(matches!(&leftovers[..], [Leftover::Binding(b)] if b == &binding("a", 1)));
        let key = binding("a", 2).allocation.pod;
        assert_eq!(records.bindings[&key], binding("a", 2));
        leftovers.clear();
        records.apply_owned(Change::RemoveBinding(key.clone()), &mut leftovers);
        assert!(records.bindings.is_empty());
        assert!(matches!(
            &leftovers[..],
            [Leftover::Binding(b), Leftover::Change(Change::RemoveBinding(k))]
                if b == &binding("a", 2) && k == &key
        ));
        // Removing what is not there displaces nothing but the change.
        leftovers.clear();
        records.apply_owned(Change::RemoveBinding(key), &mut leftovers);
        assert!(matches!(&leftovers[..], [Leftover::Change(_)]));
    }

    #[test]
    fn loads_and_snapshots_during_commits_see_every_answered_commit() {
        use std::sync::atomic::AtomicUsize;
        const TASKS: usize = 16;
        const EACH: usize = 60;
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let mut opts = options(1);
        // A snapshot (which waits for the image) every 40 commits.
        opts.compact_after = 40;
        let s = Arc::new(FileStore::open_with(dir.path(), opts).unwrap());
        let name = |t: usize, k: usize| format!("t{t}-{k}");
        // How many commits of each task were answered.
        let answered: Arc<Vec<AtomicUsize>> =
            Arc::new((0..TASKS).map(|_| AtomicUsize::new(0)).collect());
        rt.block_on(async {
            let mut tasks = Vec::new();
            for t in 0..TASKS {
                let (s, answered) = (s.clone(), answered.clone());
                tasks.push(tokio::spawn(async move {
                    for k in 0..EACH {
                        let b = binding(&name(t, k), u8::try_from(k % 250).unwrap() + 1);
                        s.commit(vec![Change::PutBinding(b)]).await.unwrap();
                        answered[t].store(k + 1, Ordering::SeqCst);
                    }
                }));
            }
            let mut loads = 0;
            while tasks.iter().any(|t| !t.is_finished()) {
                let before: Vec<usize> =
                    answered.iter().map(|a| a.load(Ordering::SeqCst)).collect();
                let records = s.load().await.unwrap();
                for (t, &n) in before.iter().enumerate() {
                    for k in 0..n {
                        let key = PodKey::new("ns", name(t, k), "c0ffee", "eth0");
                        assert!(
                            records.bindings.contains_key(&key),
                            "{} answered before the load, missing from it",
                            name(t, k)
                        );
                    }
                }
                loads += 1;
                tokio::task::yield_now().await;
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert!(loads > 1, "the loads ran while commits did ({loads})");
        });
        let stats = s.stats();
        assert!(
            stats.compactions > 5,
            "snapshots ran: {}",
            stats.compactions
        );
        // Closing does not wait forever for a snapshot or for answered groups.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(s);
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the store closed");
        let s = FileStore::open_with(dir.path(), options(1)).unwrap();
        assert_eq!(rt.block_on(s.load()).unwrap().bindings.len(), TASKS * EACH);
    }

    /// The byte offset just after the last line of the current generation in a journal.
    fn end_of_lines(path: &Path) -> usize {
        let data = fs::read(path).unwrap();
        let mut end = data.iter().position(|b| *b == b'\n').unwrap() + 1;
        let generation = fs::read(path.with_file_name(STATE_FILE)).unwrap();
        let state: serde_json::Value = serde_json::from_slice(&generation).unwrap();
        let generation = format!(" {:x} ", state["generation"].as_u64().unwrap());
        while let Some(n) = data[end..].iter().position(|b| *b == b'\n') {
            let line = &data[end..=end + n];
            if line.len() < 10 || !line[8..].starts_with(generation.as_bytes()) {
                break;
            }
            end += n + 1;
        }
        end
    }

    #[test]
    fn commits_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let opts = FileStoreOptions {
            compact_after: 3,
            ..options(2)
        };
        {
            let s = FileStore::open_with(dir.path(), opts).unwrap();
            commit_all(&s, &rt, (0..10).map(put).collect());
            commit_all(
                &s,
                &rt,
                vec![vec![
                    Change::RemoveBinding(PodKey::new("ns", "p3", "c0ffee", "eth0")),
                    Change::PutCooling(CoolingRecord::new(
                        ResourceId::Eni {
                            eni_id: "eni-9".into(),
                        },
                        99,
                    )),
                ]],
            );
            // Open, then a switch every 3 commits (the last snapshot may be under way).
            assert!(s.stats().compactions >= 3, "{:?}", s.stats());
        }
        let s = FileStore::open_with(dir.path(), options(2)).unwrap();
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
    fn full_journals_start_over_and_stale_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(2)).unwrap();
            // About 400 bytes a line: 600 lines fill a set of two 64 KiB journals, and the
            // writers switch to the other set.
            commit_all(
                &s,
                &rt,
                (0..600u32)
                    .map(|i| put(u8::try_from(i % 250).unwrap()))
                    .collect(),
            );
            wait_until("a snapshot after the open's", || s.stats().compactions >= 2);
            let stats = s.stats();
            assert_eq!(stats.commits, 600);
            let size = fs::metadata(dir.path().join(journal_name(0)))
                .unwrap()
                .len();
            assert_eq!(size, MIN_JOURNAL_BYTES, "overwritten in place, never grown");
        }
        let s = FileStore::open_with(dir.path(), options(2)).unwrap();
        assert_eq!(rt.block_on(s.load()).unwrap().bindings.len(), 250);
    }

    #[test]
    fn torn_tail_is_dropped_but_corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            commit_all(&s, &rt, (0..3).map(put).collect());
        }
        let journal = dir.path().join(journal_name(0));
        let mut torn = fs::read(&journal).unwrap();
        // A commit cut in the middle of its line.
        let end = end_of_lines(&journal);
        let cut = b"1234abcd 2 4 3 [{\"put_bind";
        torn[end..end + cut.len()].copy_from_slice(cut);
        fs::write(&journal, &torn).unwrap();
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            assert_eq!(rt.block_on(s.load()).unwrap().bindings.len(), 3);
        }
        // Reopening started a new generation with the three bindings in the snapshot. Now
        // damage a commit that later lines say was acknowledged.
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            commit_all(&s, &rt, (3..6).map(put).collect());
        }
        let mut bytes = fs::read(&journal).unwrap();
        let first_nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        bytes[first_nl + 40] ^= 0x20;
        fs::write(&journal, &bytes).unwrap();
        let before = fs::read(&journal).unwrap();
        let state_before = fs::read(dir.path().join(STATE_FILE)).unwrap();
        let err = FileStore::open_with(dir.path(), options(1)).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { line: Some(2), .. }),
            "{err}"
        );
        assert_eq!(fs::read(&journal).unwrap(), before, "files left untouched");
        assert_eq!(
            fs::read(dir.path().join(STATE_FILE)).unwrap(),
            state_before,
            "files left untouched"
        );
    }

    /// Writes lines of the snapshot's generation at the end of writer `w`'s journal for it.
    fn append_lines(dir: &Path, w: usize, lines: &[(u64, u64, Vec<Change>)]) {
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
        let generation = state["generation"].as_u64().unwrap();
        let path = dir.join(journal_name(journal_index(w, generation)));
        let mut data = fs::read(&path).unwrap();
        let mut end = end_of_lines(&path);
        for (seq, acked, changes) in lines {
            let mut line = Vec::new();
            encode_line(
                generation,
                *seq,
                *acked,
                &encode_changes(changes),
                &mut line,
            );
            data[end..end + line.len()].copy_from_slice(&line);
            end += line.len();
        }
        fs::write(&path, &data).unwrap();
    }

    fn snapshot_seq(dir: &Path) -> u64 {
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
        state["seq"].as_u64().unwrap()
    }

    #[test]
    fn a_hole_between_journals_drops_what_follows_unless_it_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(2)).unwrap();
            commit_all(&s, &rt, (0..2).map(put).collect());
        }
        // Reopening folds those two into the snapshot.
        drop(FileStore::open_with(dir.path(), options(2)).unwrap());
        let s0 = snapshot_seq(dir.path());
        assert_eq!(s0, 2);
        // A crash while two groups were in flight: the group of commit 4 (journal 1) reached
        // the disk, the group of commit 3 (journal 0) did not. Commit 4 was never
        // acknowledged (it waited for 3): dropped.
        append_lines(dir.path(), 1, &[(s0 + 2, s0, put(7))]);
        {
            let s = FileStore::open_with(dir.path(), options(2)).unwrap();
            let r = rt.block_on(s.load()).unwrap();
            assert_eq!(r.bindings.len(), 2, "the commit after the hole is dropped");
        }
        // Now a line that says commit 3 had been acknowledged, while 3 is nowhere.
        let s0 = snapshot_seq(dir.path());
        append_lines(dir.path(), 0, &[(s0 + 1, s0, put(8))]);
        append_lines(dir.path(), 1, &[(s0 + 4, s0 + 3, put(9))]);
        let err = FileStore::open_with(dir.path(), options(2)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        // Lines from both journals replay in sequence order.
        let dir = tempfile::tempdir().unwrap();
        drop(FileStore::open_with(dir.path(), options(2)).unwrap());
        let s0 = snapshot_seq(dir.path());
        let gone = || {
            vec![Change::RemoveBinding(PodKey::new(
                "ns", "p1", "c0ffee", "eth0",
            ))]
        };
        append_lines(
            dir.path(),
            0,
            &[(s0 + 1, s0, put(1)), (s0 + 3, s0 + 2, put(3))],
        );
        append_lines(dir.path(), 1, &[(s0 + 2, s0 + 1, gone())]);
        let s = FileStore::open_with(dir.path(), options(2)).unwrap();
        let r = rt.block_on(s.load()).unwrap();
        assert_eq!(r.bindings.len(), 1, "p1 put, removed, then p3 put");
        assert_eq!(snapshot_seq(dir.path()), s0 + 3);
    }

    #[test]
    fn version_1_directories_are_read_and_converted() {
        let dir = tempfile::tempdir().unwrap();
        let state = serde_json::json!({
            "format": "cnikit-eni-pool/state",
            "version": 1,
            "generation": 4,
            "bindings": [binding("p0", 1)],
            "cooling": [],
            "meta": {"shared_warm_up_done": true},
        });
        fs::write(
            dir.path().join(STATE_FILE),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let mut journal =
            br#"{"format":"cnikit-eni-pool/journal","version":1,"generation":4}"#.to_vec();
        journal.push(b'\n');
        for i in 1..4 {
            let json = encode_changes(&put(i));
            journal.extend_from_slice(format!("{:08x} ", crc32fast::hash(&json)).as_bytes());
            journal.extend_from_slice(&json);
            journal.push(b'\n');
        }
        journal.extend_from_slice(b"0badc0de [{\"put_bin");
        fs::write(dir.path().join(LEGACY_JOURNAL_FILE), &journal).unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(2)).unwrap();
            let r = rt.block_on(s.load()).unwrap();
            assert_eq!(r.bindings.len(), 4);
            assert!(r.meta.shared_warm_up_done);
            commit_all(&s, &rt, vec![put(9)]);
        }
        assert!(!dir.path().join(LEGACY_JOURNAL_FILE).exists());
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(state["version"], VERSION);
        let s = FileStore::open_with(dir.path(), options(1)).unwrap();
        assert_eq!(rt.block_on(s.load()).unwrap().bindings.len(), 5);
        assert!(
            dir.path().join(journal_name(1)).exists() && !dir.path().join(journal_name(2)).exists(),
            "two sets of one writer's files; journals beyond the configured number are removed"
        );
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
        let s = Arc::new(FileStore::open_with(dir.path(), options(2)).unwrap());
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
        assert_eq!(stats.sync_latency.total(), stats.syncs, "every sync timed");
        drop(s);
        let s = FileStore::open_with(dir.path(), options(2)).unwrap();
        assert_eq!(rt.block_on(s.load()).unwrap().bindings.len(), 200);
    }

    /// The end offset of every line of the current generation in a journal, in order.
    fn line_ends(path: &Path) -> Vec<usize> {
        let data = fs::read(path).unwrap();
        let end = end_of_lines(path);
        let header = data.iter().position(|b| *b == b'\n').unwrap() + 1;
        (header..end)
            .filter(|i| data[*i] == b'\n')
            .map(|i| i + 1)
            .collect()
    }

    fn generation(dir: &Path) -> u64 {
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
        state["generation"].as_u64().unwrap()
    }

    #[test]
    fn zeroes_and_lines_of_older_generations_end_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            commit_all(&s, &rt, (0..4).map(put).collect());
        }
        let journal = dir.path().join(journal_name(0));
        let end = end_of_lines(&journal);
        let data = fs::read(&journal).unwrap();
        assert!(
            data[end..].iter().all(|b| *b == 0),
            "the preallocated tail is zeroes"
        );
        // A valid line of an older generation right after the current ones (what a journal
        // that started over holds): it ends the journal, it is not corruption, even with a
        // sequence number that would follow and an `acked` that looks later.
        let current = generation(dir.path());
        let mut stale = Vec::new();
        encode_line(current - 1, 5, 5, &encode_changes(&put(9)), &mut stale);
        let mut bytes = data.clone();
        bytes[end..end + stale.len()].copy_from_slice(&stale);
        fs::write(&journal, &bytes).unwrap();
        let s = FileStore::open_with(dir.path(), options(1)).unwrap();
        let r = rt.block_on(s.load()).unwrap();
        assert_eq!(r.bindings.len(), 4);
        assert!(
            !r.bindings
                .contains_key(&PodKey::new("ns", "p9", "c0ffee", "eth0"))
        );
        drop(s);
        // Reopening started a new generation: the journal is overwritten from its start,
        // and what it held before is stale (its bindings are in the snapshot).
        let s = FileStore::open_with(dir.path(), options(1)).unwrap();
        commit_all(&s, &rt, vec![put(5)]);
        drop(s);
        assert_eq!(line_ends(&journal).len(), 1, "one current line");
        let s = FileStore::open_with(dir.path(), options(1)).unwrap();
        assert_eq!(rt.block_on(s.load()).unwrap().bindings.len(), 5);
    }

    #[test]
    fn a_line_half_written_over_stale_lines_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            commit_all(&s, &rt, (0..6).map(put).collect());
        }
        // Reopen (new generation) and commit two: they overwrite the first two old lines.
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            commit_all(
                &s,
                &rt,
                vec![
                    vec![Change::RemoveBinding(PodKey::new(
                        "ns", "p0", "c0ffee", "eth0",
                    ))],
                    put(7),
                ],
            );
        }
        let journal = dir.path().join(journal_name(0));
        let ends = line_ends(&journal);
        assert_eq!(ends.len(), 2);
        // A third commit's write was cut after 100 bytes (the rest is what the older
        // generation had there), and a sector of the second one's line never reached the
        // disk (zeroes in its middle): neither was acknowledged.
        let mut data = fs::read(&journal).unwrap();
        let mut cut = Vec::new();
        encode_line(
            generation(dir.path()),
            99,
            98,
            &encode_changes(&put(8)),
            &mut cut,
        );
        data[ends[1]..ends[1] + 100].copy_from_slice(&cut[..100]);
        data[ends[0] + 20..ends[0] + 60].fill(0);
        fs::write(&journal, &data).unwrap();
        let s = FileStore::open_with(dir.path(), options(1)).unwrap();
        let r = rt.block_on(s.load()).unwrap();
        // p0 removed (the first line), p7's commit torn: p1..p5.
        assert_eq!(r.bindings.len(), 5, "{:?}", r.bindings.keys());
        assert!(
            !r.bindings
                .contains_key(&PodKey::new("ns", "p0", "c0ffee", "eth0"))
        );
    }

    /// Copies a store's files (what a crash at this moment would leave: every acknowledged
    /// commit was synced; the page cache holds at most more) to `to`.
    fn copy_store(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_name() != LOCK_FILE {
                fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    /// Flips a byte in the first line of journal file `i` (a damaged acknowledged commit).
    fn damage_first_line(dir: &Path, i: usize) {
        let path = dir.join(journal_name(i));
        let mut bytes = fs::read(&path).unwrap();
        let first_nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        bytes[first_nl + 40] ^= 0x20;
        fs::write(&path, &bytes).unwrap();
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn names(r: &Records) -> Vec<String> {
        r.bindings.keys().map(|k| k.name.clone()).collect()
    }

    fn pods(range: std::ops::Range<u8>) -> Vec<String> {
        let mut v: Vec<String> = range.map(|i| format!("p{i}")).collect();
        v.sort();
        v
    }

    #[test]
    fn compaction_switches_sets_and_a_crash_on_either_side_of_the_snapshot_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let opts = FileStoreOptions {
            compact_after: 4,
            ..options(1)
        };
        let s = FileStore::open_with(dir.path(), opts).unwrap();
        let g0 = generation(dir.path());
        s.hold_snapshots(true);
        // Four commits in generation g0, then the switch: two more in g0 + 1 (other set).
        commit_all(&s, &rt, (0..6).map(put).collect());
        assert_eq!(s.stats().commits, 6);
        assert_eq!(generation(dir.path()), g0, "the snapshot is held back");
        let (old_set, new_set) = (journal_index(0, g0), journal_index(0, g0 + 1));
        assert_ne!(old_set, new_set);

        // A crash now: the durable snapshot is g0's; both sets are needed.
        let crash = tempfile::tempdir().unwrap();
        copy_store(dir.path(), crash.path());
        {
            let c = FileStore::open_with(crash.path(), opts).unwrap();
            assert_eq!(names(&rt.block_on(c.load()).unwrap()), pods(0..6));
        }
        let crash = tempfile::tempdir().unwrap();
        copy_store(dir.path(), crash.path());
        damage_first_line(crash.path(), old_set);
        let err = FileStore::open_with(crash.path(), opts).unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "the old set is still needed: {err}"
        );

        // The snapshot becomes durable: the old set is stale from then on.
        s.hold_snapshots(false);
        wait_until("the snapshot", || generation(dir.path()) == g0 + 1);
        let crash = tempfile::tempdir().unwrap();
        copy_store(dir.path(), crash.path());
        damage_first_line(crash.path(), old_set);
        {
            let c = FileStore::open_with(crash.path(), opts).unwrap();
            assert_eq!(names(&rt.block_on(c.load()).unwrap()), pods(0..6));
        }
        // The writer goes on, and the next switch reuses the first set.
        commit_all(&s, &rt, (6..12).map(put).collect());
        wait_until("the second snapshot", || s.stats().compactions == 3);
        assert_eq!(generation(dir.path()), g0 + 2);
        let stats = s.stats();
        assert_eq!(stats.blocking_compactions, 1, "only at open: {stats:?}");
        assert_eq!(stats.compactions, 3, "{stats:?}");
        drop(s);
        let s = FileStore::open_with(dir.path(), opts).unwrap();
        assert_eq!(names(&rt.block_on(s.load()).unwrap()), pods(0..12));
    }

    #[test]
    fn a_crash_while_the_writer_waits_for_a_snapshot_keeps_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let opts = FileStoreOptions {
            compact_after: 4,
            ..options(1)
        };
        let s = Arc::new(FileStore::open_with(dir.path(), opts).unwrap());
        s.hold_snapshots(true);
        // Four in g0, four in g0 + 1: the next commit finds the set due and the previous
        // snapshot not durable, so it waits.
        commit_all(&s, &rt, (0..8).map(put).collect());
        let waiting: Vec<_> = (8..12)
            .map(|i| {
                let s = s.clone();
                rt.spawn(async move { s.commit(put(i)).await })
            })
            .collect();
        wait_until("back-pressure", || s.stats().snapshot_waits == 1);
        assert_eq!(s.stats().commits, 8, "nothing is written while waiting");
        let crash = tempfile::tempdir().unwrap();
        copy_store(dir.path(), crash.path());
        {
            let c = FileStore::open_with(crash.path(), opts).unwrap();
            assert_eq!(
                names(&rt.block_on(c.load()).unwrap()),
                pods(0..8),
                "what was acknowledged, nothing else"
            );
        }
        s.hold_snapshots(false);
        for t in waiting {
            rt.block_on(t).unwrap().unwrap();
        }
        let stats = s.stats();
        assert_eq!(stats.commits, 12);
        assert!(stats.snapshot_waits >= 1, "{stats:?}");
        drop(s);
        let s = FileStore::open_with(dir.path(), opts).unwrap();
        assert_eq!(names(&rt.block_on(s.load()).unwrap()), pods(0..12));
    }

    #[test]
    fn a_snapshot_copied_after_the_switch_skips_the_lines_it_holds() {
        // The snapshot thread copies the image once every commit before the switch is
        // answered; by then it may hold commits of the new generation too.
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let opts = FileStoreOptions {
            compact_after: 3,
            ..options(1)
        };
        let (g0, s0) = {
            let s = FileStore::open_with(dir.path(), opts).unwrap();
            let g0 = generation(dir.path());
            let s0 = snapshot_seq(dir.path());
            s.hold_snapshots(true);
            commit_all(&s, &rt, (0..5).map(put).collect());
            (g0, s0)
        };
        assert_eq!(generation(dir.path()), g0);
        // Each possible copy: commits up to the switch (3) or one or two more.
        for extra in 0..=2u8 {
            let crash = tempfile::tempdir().unwrap();
            copy_store(dir.path(), crash.path());
            let mut copied = Records::default();
            for c in (0..3 + extra).flat_map(put) {
                copied.apply(&c);
            }
            fs::write(
                crash.path().join(STATE_FILE),
                state_bytes(&copied, g0 + 1, s0 + 3 + u64::from(extra)),
            )
            .unwrap();
            let c = FileStore::open_with(crash.path(), opts).unwrap();
            assert_eq!(names(&rt.block_on(c.load()).unwrap()), pods(0..5));
        }
    }

    #[test]
    fn a_line_two_generations_ahead_of_the_snapshot_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            commit_all(&s, &rt, (0..2).map(put).collect());
        }
        let g = generation(dir.path());
        let path = dir.path().join(journal_name(journal_index(0, g + 2)));
        let mut data = fs::read(&path).unwrap();
        let end = end_of_lines(&path);
        let mut line = Vec::new();
        encode_line(
            g + 2,
            snapshot_seq(dir.path()) + 3,
            0,
            &encode_changes(&put(5)),
            &mut line,
        );
        data[end..end + line.len()].copy_from_slice(&line);
        fs::write(&path, &data).unwrap();
        let err = FileStore::open_with(dir.path(), options(1)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn version_2_directories_are_read_and_converted() {
        let dir = tempfile::tempdir().unwrap();
        let state = serde_json::json!({
            "format": "cnikit-eni-pool/state",
            "version": 2,
            "generation": 4,
            "seq": 2,
            "bindings": [binding("p0", 1)],
            "cooling": [],
            "meta": {"exclusive_warm_up_done": true},
        });
        fs::write(
            dir.path().join(STATE_FILE),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        // Two writers' journals: commits 3 and 4 in the first (then a torn line), 5 in the
        // second, then a stale line of generation 3.
        let v2_journal = |lines: &[(u64, u64, u64, Vec<Change>)], tail: &[u8]| {
            let mut data = br#"{"format":"cnikit-eni-pool/journal","version":2}"#.to_vec();
            data.push(b'\n');
            for (generation, seq, acked, changes) in lines {
                encode_line(
                    *generation,
                    *seq,
                    *acked,
                    &encode_changes(changes),
                    &mut data,
                );
            }
            data.extend_from_slice(tail);
            data.resize(usize::try_from(MIN_JOURNAL_BYTES).unwrap(), 0);
            data
        };
        fs::write(
            dir.path().join(journal_name(0)),
            v2_journal(
                &[(4, 3, 2, put(1)), (4, 4, 3, put(2))],
                b"0badc0de 4 6 5 [{",
            ),
        )
        .unwrap();
        fs::write(
            dir.path().join(journal_name(1)),
            v2_journal(&[(4, 5, 3, put(3)), (3, 6, 5, put(7))], b""),
        )
        .unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            let r = rt.block_on(s.load()).unwrap();
            assert_eq!(names(&r), pods(0..4));
            assert!(r.meta.exclusive_warm_up_done);
            commit_all(&s, &rt, vec![put(9)]);
        }
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(state["version"], VERSION);
        for i in 0..2 {
            let data = fs::read(dir.path().join(journal_name(i))).unwrap();
            assert!(
                data.starts_with(&journal_header()),
                "journal.{i} has a version 3 header"
            );
        }
        let s = FileStore::open_with(dir.path(), options(1)).unwrap();
        let mut expected = pods(0..4);
        expected.push("p9".into());
        assert_eq!(names(&rt.block_on(s.load()).unwrap()), expected);
        drop(s);
        // In a version 2 directory no line may be newer than the snapshot.
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(STATE_FILE),
            serde_json::to_vec(&state_v2()).unwrap(),
        )
        .unwrap();
        fs::write(
            dir.path().join(journal_name(0)),
            v2_journal(&[(5, 3, 2, put(1))], b""),
        )
        .unwrap();
        let err = FileStore::open_with(dir.path(), options(1)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    fn state_v2() -> serde_json::Value {
        serde_json::json!({
            "format": "cnikit-eni-pool/state",
            "version": 2,
            "generation": 4,
            "seq": 2,
            "bindings": [],
            "cooling": [],
            "meta": {},
        })
    }

    #[test]
    fn a_snapshot_newer_than_the_journal_wins() {
        // A crash right after a snapshot was made durable: every journal line is older.
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        {
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            commit_all(&s, &rt, (0..3).map(put).collect());
        }
        let next = generation(dir.path()) + 1;
        let only = Records {
            bindings: [(PodKey::new("ns", "p2", "c0ffee", "eth0"), binding("p2", 3))].into(),
            ..Records::default()
        };
        fs::write(dir.path().join(STATE_FILE), state_bytes(&only, next, 3)).unwrap();
        let s = FileStore::open_with(dir.path(), options(1)).unwrap();
        assert_eq!(rt.block_on(s.load()).unwrap(), only);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 24,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The same across a switch of sets: a crash before or after the new snapshot is
        /// durable, the last commit cut anywhere in whichever set holds it.
        #[test]
        fn recovery_across_a_switch_is_the_prefix_of_whole_lines(
            ops in proptest::collection::vec(0u8..8, 1..12),
            compact_after in 1usize..8,
            durable in proptest::bool::ANY,
            cut in 0.0f64..1.0,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let rt = rt();
            let opts = FileStoreOptions { compact_after, ..options(1) };
            // At most one switch while snapshots are held (a second would wait for it).
            let commits: Vec<Vec<Change>> =
                ops.iter().take(2 * compact_after).map(|i| put(*i)).collect();
            let crash = tempfile::tempdir().unwrap();
            let base = {
                let s = FileStore::open_with(dir.path(), opts).unwrap();
                let base = rt.block_on(s.load()).unwrap();
                s.hold_snapshots(true);
                commit_all(&s, &rt, commits.clone());
                if durable {
                    s.hold_snapshots(false);
                    wait_until("the snapshot", || s.stats().compactions > 1 || commits.len() <= compact_after);
                }
                copy_store(dir.path(), crash.path());
                base
            };
            // The line of the last commit, wherever it is.
            let g = generation(crash.path());
            let mut last: Option<(u64, PathBuf, usize, usize)> = None;
            for e in fs::read_dir(crash.path()).unwrap() {
                let path = e.unwrap().path();
                if !path.file_name().unwrap().to_string_lossy().starts_with("journal.") {
                    continue;
                }
                let data = fs::read(&path).unwrap();
                let mut at = data.iter().position(|b| *b == b'\n').unwrap() + 1;
                for segment in data[at..].split_inclusive(|b| *b == b'\n') {
                    let Some(l) = decode_line(segment).filter(|l| l.generation == g || l.generation == g + 1) else {
                        break;
                    };
                    if last.as_ref().is_none_or(|(seq, ..)| l.seq > *seq) {
                        last = Some((l.seq, path.clone(), at, at + segment.len()));
                    }
                    at += segment.len();
                }
            }
            let in_snapshot = snapshot_seq(crash.path());
            let mut whole = commits.len();
            if let Some((seq, path, start, end)) = last
                && seq > in_snapshot
            {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss, reason = "a fraction of a small length")]
                let at = start + ((end - start) as f64 * cut) as usize;
                let mut data = fs::read(&path).unwrap();
                data[at..end].fill(0);
                fs::write(&path, &data).unwrap();
                whole -= 1;
            }
            let mut expected = base;
            for c in commits.iter().take(whole).flatten() {
                expected.apply(c);
            }
            let s = FileStore::open_with(crash.path(), opts).unwrap();
            proptest::prop_assert_eq!(rt.block_on(s.load()).unwrap(), expected.clone());
            drop(s);
            let s = FileStore::open_with(crash.path(), opts).unwrap();
            proptest::prop_assert_eq!(rt.block_on(s.load()).unwrap(), expected);
        }

        /// A crash cuts the journal anywhere after what was acknowledged: the lines wholly
        /// before the cut are recovered, exactly, and nothing else.
        #[test]
        fn recovery_after_a_cut_is_the_prefix_of_whole_lines(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u8..6), 1..12),
            cut in 0.0f64..1.0,
            stale_after in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let rt = rt();
            let commits: Vec<Vec<Change>> = ops
                .iter()
                .map(|(remove, i)| {
                    if *remove {
                        vec![Change::RemoveBinding(PodKey::new("ns", format!("p{i}"), "c0ffee", "eth0"))]
                    } else {
                        put(*i)
                    }
                })
                .collect();
            if stale_after {
                // Older lines behind the current ones (a journal that started over).
                let s = FileStore::open_with(dir.path(), options(1)).unwrap();
                commit_all(&s, &rt, (0..12).map(|i| put(i + 20)).collect());
                drop(s);
                let s = FileStore::open_with(dir.path(), options(1)).unwrap();
                commit_all(&s, &rt, (0..12).map(|i| vec![Change::RemoveBinding(PodKey::new("ns", format!("p{}", i + 20), "c0ffee", "eth0"))]).collect());
            }
            let base = {
                let s = FileStore::open_with(dir.path(), options(1)).unwrap();
                let base = rt.block_on(s.load()).unwrap();
                commit_all(&s, &rt, commits.clone());
                base
            };
            let journal = dir.path().join(journal_name(0));
            let ends = line_ends(&journal);
            proptest::prop_assert_eq!(ends.len(), commits.len());
            let start = fs::read(&journal).unwrap().iter().position(|b| *b == b'\n').unwrap() + 1;
            let last = *ends.last().unwrap();
            // The cut falls in the last line's bytes or later (a crash only cuts what was not
            // acknowledged yet): zeroes or older bytes from there to the end of that line.
            let first = if ends.len() > 1 { ends[ends.len() - 2] } else { start };
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss, reason = "a fraction of a small length")]
            let at = first + ((last - first) as f64 * cut) as usize;
            let mut data = fs::read(&journal).unwrap();
            data[at..last].fill(0);
            fs::write(&journal, &data).unwrap();
            let whole = if at == last { commits.len() } else { commits.len() - 1 };
            let mut expected = base;
            for c in commits.iter().take(whole).flatten() {
                expected.apply(c);
            }
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            proptest::prop_assert_eq!(rt.block_on(s.load()).unwrap(), expected.clone());
            drop(s);
            // And again: recovery is stable across reopenings.
            let s = FileStore::open_with(dir.path(), options(1)).unwrap();
            proptest::prop_assert_eq!(rt.block_on(s.load()).unwrap(), expected);
        }
    }
}
