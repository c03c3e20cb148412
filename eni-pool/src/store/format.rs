//! The on-disk format of [`super::FileStore`]: encoding, decoding and recovery.
//!
//! Version 3 (written by this build):
//! - `state.json`: the snapshot, `{"format":"cnikit-eni-pool/state","version":3,
//!   "generation":G,"seq":S,"bindings":[…],"cooling":[…],"meta":{…}}`: every commit up to
//!   sequence number `S`; replaced atomically (temp file, `fsync`, `rename`, `fsync` of the
//!   directory).
//! - `journal.0` … `journal.2N-1`: two sets of journal files, N per set (one per writer
//!   thread): writer `w` owns `journal.2w` (set 0) and `journal.2w+1` (set 1). Lines of
//!   generation `G` go to set `G mod 2`. The files have a fixed size, are filled with zeroes
//!   when created and then only ever overwritten in place (so an `fdatasync` flushes data,
//!   never file-size or block-allocation metadata). A header line
//!   `{"format":"cnikit-eni-pool/journal","version":3}`, then one line per commit,
//!   `<crc32> <generation> <seq> <acked> <JSON array of changes>` (CRC in 8 hex digits over
//!   everything after it up to the newline; generation and sequence numbers in hex; `acked`:
//!   every commit up to that sequence number had been acknowledged when the line was
//!   written). Each writer writes its commit groups to its file of the current set in
//!   sequence order; groups of different writers are written and synced concurrently, but
//!   acknowledged in sequence order, so what is durable and acknowledged is always a prefix
//!   of the sequence. After the last line of a generation come zeroes or stale lines of an
//!   older generation (a set that is reused starts every file over from its header).
//!
//! Compaction never pauses commits. While the snapshot's generation `Gs` is the writers'
//! generation, only set `Gs mod 2` is written. At a compaction point (the set is full, or
//! `compact_after` commits were written) after commit `S`, the writers switch at once to the
//! other set with generation `Gs+1` and go on committing, while a snapshot thread writes the
//! snapshot of generation `Gs+1` from a copy of the in-memory image (every acknowledged
//! commit up to some `S' >= S`; the image may already hold a few commits of `Gs+1`). Until
//! that snapshot is durable a crash needs both sets: the old snapshot, the lines of `Gs` in
//! one set and those of `Gs+1` in the other. Once it is durable, every line of `Gs` is
//! stale and its set is free for generation `Gs+2`. A writer that reaches the next
//! compaction point before the snapshot is durable waits for it (back-pressure; counted).
//! Why two sets and not, say, a new file per generation: creating and zero-filling a file
//! costs file-system journal commits, which is what the preallocated files avoid; two sets
//! are the fewest that let the writers go on while the older set is still needed.
//!
//! Recovery: the snapshot `(Gs, Ss)`, then from every journal file the run of lines of
//! generation `Gs` or `Gs+1` from its header up to the first line that is not one of them
//! (torn, stale, zeroes; a file holds one generation's run, as the two have different sets),
//! merged by sequence number; lines up to `Ss` are in the snapshot already; replay stops at
//! the first missing number after `Ss`. What is missing was never acknowledged (a write cut
//! by a crash: acknowledgements wait for every earlier commit), and what follows a gap was
//! not either, so it is dropped, unless some line says that the missing commit had been
//! acknowledged: that is corruption, a [`StoreError::Corrupt`]. A line of a generation
//! above `Gs+1` is corruption too (the writers never go two generations past a durable
//! snapshot). Every open writes a snapshot of generation `Gs+2` (above every line that can
//! exist), so lines a crash left behind are stale from then on.
//!
//! Older versions are read, then converted at open (the open's snapshot is version 3):
//! - Version 2: the same lines, but one set (`journal.0` … `journal.N-1`, one per writer):
//!   only the snapshot's generation `Gs` is current, no line may be newer.
//! - Version 1: `state.json` without `seq`, and one append-only `journal` with a header
//!   `{"format":…,"version":1,"generation":G}` and lines `<crc32> <JSON array of changes>`.
//!
//! An older build refuses a version 3 directory with [`StoreError::UnsupportedVersion`]: it
//! checks the snapshot's version before reading any journal, and version 2 builds check every
//! journal header's version as well.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Write},
    ops::RangeInclusive,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{BindingRecord, Change, CoolingRecord, PoolMeta, Records, StoreError};

pub(super) const STATE_FORMAT: &str = "cnikit-eni-pool/state";
pub(super) const JOURNAL_FORMAT: &str = "cnikit-eni-pool/journal";
/// The format version this build writes.
pub(super) const VERSION: u32 = 3;
/// Version 2: one set of journal files (read, then converted at open).
const VERSION_2: u32 = 2;
/// Version 1: one append-only journal (read, then converted at open).
const VERSION_1: u32 = 1;
pub(super) const STATE_FILE: &str = "state.json";
/// Version 1's single append-only journal.
pub(super) const LEGACY_JOURNAL_FILE: &str = "journal";
/// Writer threads (journal files per set), at most.
pub(super) const MAX_WRITERS: usize = 16;
/// Journal files beyond this index are not looked for: two sets of [`MAX_WRITERS`].
pub(super) const MAX_JOURNALS: usize = 2 * MAX_WRITERS;
/// Bytes a line adds to its JSON, at most: CRC, three hex numbers, spaces, newline.
pub(super) const LINE_OVERHEAD: usize = 8 + 1 + 3 * (16 + 1) + 1;

/// The name of journal file `i`.
pub(super) fn journal_name(i: usize) -> String {
    format!("journal.{i}")
}

/// The index of writer `writer`'s journal file for generation `generation` (its set is the
/// generation's parity).
pub(super) fn journal_index(writer: usize, generation: u64) -> usize {
    2 * writer + usize::from(generation % 2 == 1)
}

#[derive(Deserialize)]
struct Head {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StateFile {
    pub(super) format: String,
    pub(super) version: u32,
    pub(super) generation: u64,
    /// The last commit folded in (versions 2 and 3; version 1 has none).
    #[serde(default)]
    pub(super) seq: u64,
    pub(super) bindings: Vec<BindingRecord>,
    pub(super) cooling: Vec<CoolingRecord>,
    pub(super) meta: PoolMeta,
}

#[derive(Serialize, Deserialize)]
struct LegacyJournalHeader {
    generation: u64,
}

#[derive(Serialize)]
struct JournalHeader<'a> {
    format: &'a str,
    version: u32,
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

pub(super) fn corrupt(path: &Path, line: Option<usize>, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        line,
        detail: detail.into(),
    }
}

/// Checks the `format` and `version` fields of a file's JSON head; returns the version.
fn check_head(
    path: &Path,
    bytes: &[u8],
    format: &str,
    versions: &[u32],
) -> Result<u32, StoreError> {
    let head: Head = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, None, format!("unreadable header: {e}")))?;
    if head.format != format {
        return Err(corrupt(
            path,
            None,
            format!("format {:?}, expected {format:?}", head.format),
        ));
    }
    if !versions.contains(&head.version) {
        return Err(StoreError::UnsupportedVersion {
            path: path.to_owned(),
            found: head.version,
            supported: VERSION,
        });
    }
    Ok(head.version)
}

/// The header line of a journal file of the version this build writes.
pub(super) fn journal_header() -> Vec<u8> {
    let mut header = serde_json::to_vec(&JournalHeader {
        format: JOURNAL_FORMAT,
        version: VERSION,
    })
    .expect("headers always serialize");
    header.push(b'\n');
    header
}

/// The JSON of a commit's changes (made by the caller, off the writers' path).
pub(super) fn encode_changes(changes: &[Change]) -> Vec<u8> {
    serde_json::to_vec(changes).expect("records always serialize")
}

/// Appends a journal line (versions 2 and 3) to `out`.
pub(super) fn encode_line(generation: u64, seq: u64, acked: u64, json: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    // The CRC goes first; write a placeholder, then the covered part, then fill it in.
    out.extend_from_slice(b"00000000 ");
    let covered = out.len();
    // Writing to a Vec cannot fail.
    write!(out, "{generation:x} {seq:x} {acked:x} ").ok();
    out.extend_from_slice(json);
    let crc = crc32fast::hash(&out[covered..]);
    let mut hex = [0u8; 8];
    for (i, b) in hex.iter_mut().enumerate() {
        let nibble = (crc >> (28 - 4 * i)) & 0xf;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    out[start..start + 8].copy_from_slice(&hex);
    out.push(b'\n');
}

/// A journal line (versions 2 and 3) whose checksum holds: its numbers and its (still encoded) changes.
pub(super) struct Line<'a> {
    pub(super) generation: u64,
    pub(super) seq: u64,
    pub(super) acked: u64,
    pub(super) json: &'a [u8],
}

fn parse_hex(field: Option<&[u8]>) -> Option<u64> {
    let s = std::str::from_utf8(field?).ok()?;
    u64::from_str_radix(s, 16).ok()
}

/// Checks a line's checksum and splits it; `None` for anything that is not a whole valid line.
pub(super) fn decode_line(line: &[u8]) -> Option<Line<'_>> {
    let body = line.strip_suffix(b"\n")?;
    if body.len() < 10 || body[8] != b' ' {
        return None;
    }
    let crc = u32::try_from(parse_hex(Some(&body[..8]))?).ok()?;
    let covered = &body[9..];
    if crc32fast::hash(covered) != crc {
        return None;
    }
    let mut fields = covered.splitn(4, |b| *b == b' ');
    let generation = parse_hex(fields.next())?;
    let seq = parse_hex(fields.next())?;
    let acked = parse_hex(fields.next())?;
    let json = fields.next()?;
    Some(Line {
        generation,
        seq,
        acked,
        json,
    })
}

/// Decodes a version 1 line: `<crc32> <JSON>`.
fn decode_legacy_line(line: &[u8]) -> Result<Vec<Change>, String> {
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

/// What recovery found.
#[derive(Debug)]
pub(super) struct Recovered {
    /// The records.
    pub(super) records: Records,
    /// The snapshot's generation.
    pub(super) generation: u64,
    /// The last commit replayed.
    pub(super) seq: u64,
    /// A version 1 journal is present (to be removed once a version 3 snapshot is durable).
    pub(super) legacy_journal: bool,
    /// The journal files present, by index.
    pub(super) journals: Vec<usize>,
}

/// Reads the snapshot and the journals.
pub(super) fn recover(dir: &Path) -> Result<Recovered, StoreError> {
    let mut records = Records::default();
    // What applying displaces (replaced records), freed as it goes.
    let mut leftovers = Vec::new();
    let state_path = dir.join(STATE_FILE);
    let mut generation = 0;
    let mut seq = 0;
    let mut version = VERSION;
    match fs::read(&state_path) {
        Ok(bytes) => {
            version = check_head(
                &state_path,
                &bytes,
                STATE_FORMAT,
                &[VERSION_1, VERSION_2, VERSION],
            )?;
            let state: StateFile = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(&state_path, None, e.to_string()))?;
            generation = state.generation;
            seq = state.seq;
            for b in state.bindings {
                records.apply_owned(Change::PutBinding(b), &mut leftovers);
            }
            for c in state.cooling {
                records.apply_owned(Change::PutCooling(c), &mut leftovers);
            }
            leftovers.clear();
            records.meta = state.meta;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("read", &state_path)(e)),
    }
    let legacy_journal = replay_legacy(dir, generation, &mut records)?;
    let journals: Vec<usize> = (0..MAX_JOURNALS)
        .filter(|i| dir.join(journal_name(*i)).exists())
        .collect();
    // Version 3 writers run one generation ahead of the snapshot while it is being written.
    let newest = if version >= VERSION {
        generation + 1
    } else {
        generation
    };
    let seq = replay(dir, &journals, generation..=newest, seq, &mut records)?;
    Ok(Recovered {
        records,
        generation,
        seq,
        legacy_journal,
        journals,
    })
}

/// Replays a version 1 journal of the snapshot's generation; tells whether one exists.
fn replay_legacy(dir: &Path, generation: u64, records: &mut Records) -> Result<bool, StoreError> {
    let journal_path = dir.join(LEGACY_JOURNAL_FILE);
    let data = match fs::read(&journal_path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("read", &journal_path)(e)),
    };
    let mut segments = data.split_inclusive(|b| *b == b'\n');
    let header = segments.next().unwrap_or_default();
    let header = header
        .strip_suffix(b"\n")
        .ok_or_else(|| corrupt(&journal_path, Some(1), "incomplete header"))?;
    check_head(&journal_path, header, JOURNAL_FORMAT, &[VERSION_1])?;
    let header: LegacyJournalHeader = serde_json::from_slice(header)
        .map_err(|e| corrupt(&journal_path, Some(1), e.to_string()))?;
    if header.generation < generation {
        // Folded into the snapshot already (a crash between the two replacements, or
        // before the conversion to version 2 removed it).
        return Ok(true);
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
    let decoded: Vec<Result<Vec<Change>, String>> = segments.map(decode_legacy_line).collect();
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
    let mut leftovers = Vec::new();
    for changes in decoded.into_iter().map_while(Result::ok) {
        for c in changes {
            records.apply_owned(c, &mut leftovers);
        }
        leftovers.clear();
    }
    Ok(true)
}

/// Where a journal file stopped being a sequence of current lines.
struct Stop {
    path: PathBuf,
    /// 1-based line number of the first line that is not a current one.
    line: usize,
    /// The last sequence number before it in that file.
    after_seq: u64,
}

/// Replays the journal lines of the `current` generations after `seq`; returns the last
/// replayed.
fn replay(
    dir: &Path,
    journals: &[usize],
    current: RangeInclusive<u64>,
    seq: u64,
    records: &mut Records,
) -> Result<u64, StoreError> {
    // Every current line after the snapshot, by sequence number: its file, line number and
    // changes (still JSON).
    let mut lines: BTreeMap<u64, (PathBuf, usize, Vec<u8>)> = BTreeMap::new();
    let mut stops = Vec::new();
    // The highest "acknowledged up to" any current line carries.
    let mut acked_max = 0;
    for i in journals {
        let path = dir.join(journal_name(*i));
        let data = fs::read(&path).map_err(io_err("read", &path))?;
        let mut segments = data.split_inclusive(|b| *b == b'\n');
        let header = segments.next().unwrap_or_default();
        let header = header
            .strip_suffix(b"\n")
            .ok_or_else(|| corrupt(&path, Some(1), "incomplete header"))?;
        // Version 2 files may be left from before a conversion: their lines are all stale.
        check_head(&path, header, JOURNAL_FORMAT, &[VERSION_2, VERSION])?;
        let mut last = 0;
        // The generation of this file's current lines (one per file: the two current
        // generations write to different sets).
        let mut file_generation = None;
        let mut stopped = false;
        for (n, segment) in segments.enumerate() {
            let line_no = n + 2;
            let line = decode_line(segment);
            if let Some(l) = &line
                && l.generation > *current.end()
            {
                return Err(corrupt(
                    &path,
                    Some(line_no),
                    format!(
                        "line of generation {} is newer than the snapshot's {} allows",
                        l.generation,
                        current.start()
                    ),
                ));
            }
            let Some(l) = line.filter(|l| current.contains(&l.generation)) else {
                if !stopped {
                    stopped = true;
                    stops.push(Stop {
                        path: path.clone(),
                        line: line_no,
                        after_seq: last.max(seq),
                    });
                }
                continue;
            };
            if *file_generation.get_or_insert(l.generation) != l.generation {
                return Err(corrupt(
                    &path,
                    Some(line_no),
                    format!(
                        "lines of generations {} and {} in one file",
                        file_generation.unwrap_or_default(),
                        l.generation
                    ),
                ));
            }
            acked_max = acked_max.max(l.acked);
            if stopped {
                // A current line after a hole: part of a group whose write a crash cut (its
                // pages reached the disk out of order). Never replayed; checked below.
                continue;
            }
            if l.seq <= last {
                return Err(corrupt(
                    &path,
                    Some(line_no),
                    format!("sequence number {} after {last}", l.seq),
                ));
            }
            last = l.seq;
            if l.seq <= seq {
                // Folded into the snapshot already (it was copied after this line).
                continue;
            }
            if let Some((other, _, _)) =
                lines.insert(l.seq, (path.clone(), line_no, l.json.to_vec()))
            {
                return Err(corrupt(
                    &path,
                    Some(line_no),
                    format!("sequence number {} also in {}", l.seq, other.display()),
                ));
            }
        }
    }
    // Replay the unbroken run after the snapshot.
    let mut leftovers = Vec::new();
    let mut replayed = seq;
    while let Some((path, line_no, json)) = lines.remove(&(replayed + 1)) {
        let changes: Vec<Change> = serde_json::from_slice(&json)
            .map_err(|e| corrupt(&path, Some(line_no), format!("unreadable record: {e}")))?;
        for c in changes {
            records.apply_owned(c, &mut leftovers);
        }
        leftovers.clear();
        replayed += 1;
    }
    if acked_max > replayed {
        // An acknowledged commit is missing: not a torn write.
        let missing = replayed + 1;
        let stop = stops.iter().find(|s| s.after_seq < missing);
        let (path, line) = stop.map_or_else(
            || (dir.join(journal_name(0)), None),
            |s| (s.path.clone(), Some(s.line)),
        );
        return Err(corrupt(
            &path,
            line,
            format!("commit {missing} is missing but a later line says it was acknowledged"),
        ));
    }
    if !lines.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            after = replayed,
            dropped = lines.len(),
            "dropping journal lines after a hole (commits cut by a crash, never acknowledged)"
        );
    }
    Ok(replayed)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Writes `parts` to `dir/name` atomically and durably.
pub(super) fn replace_file(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    for part in parts {
        f.write_all(part).map_err(io_err("write", &tmp))?;
    }
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
    sync_dir(dir)
}

/// Writes `header` over the start of the journal file at `path` (and syncs it) unless it is
/// there already.
pub(super) fn rewrite_header(path: &Path, header: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let mut present = vec![0u8; header.len()];
    file.read_exact_at(&mut present, 0)
        .map_err(io_err("read", path))?;
    if present != header {
        file.write_all_at(header, 0)
            .and_then(|()| file.sync_data())
            .map_err(io_err("write header", path))?;
    }
    Ok(())
}

/// Creates journal file `i` of `bytes` bytes: the header, then zeroes (written, so that
/// later overwrites change no block allocation).
pub(super) fn create_journal(dir: &Path, i: usize, bytes: u64) -> Result<(), StoreError> {
    let header = journal_header();
    let zeroes = vec![0u8; 1 << 20];
    let total = usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .max(header.len());
    let mut parts: Vec<&[u8]> = vec![&header];
    let mut left = total - header.len();
    while left > 0 {
        let n = left.min(zeroes.len());
        parts.push(&zeroes[..n]);
        left -= n;
    }
    replace_file(dir, &journal_name(i), &parts)
}

/// Serializes a snapshot of `records`.
pub(super) fn state_bytes(records: &Records, generation: u64, seq: u64) -> Vec<u8> {
    let state = StateFile {
        format: STATE_FORMAT.to_owned(),
        version: VERSION,
        generation,
        seq,
        bindings: records.bindings.values().cloned().collect(),
        cooling: records.cooling.values().cloned().collect(),
        meta: records.meta,
    };
    serde_json::to_vec(&state).expect("records always serialize")
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use super::*;

    #[test]
    fn lines_round_trip_and_reject_damage() {
        let mut out = Vec::new();
        encode_line(7, 0x1234, 0x1200, br#"[{"put_meta":{}}]"#, &mut out);
        assert!(out.len() <= 17 + LINE_OVERHEAD);
        let l = decode_line(&out).unwrap();
        assert_eq!((l.generation, l.seq, l.acked), (7, 0x1234, 0x1200));
        assert_eq!(l.json, br#"[{"put_meta":{}}]"#);
        for i in 0..out.len() - 1 {
            let mut bad = out.clone();
            bad[i] ^= 0x04;
            assert!(decode_line(&bad).is_none(), "flip at {i} accepted");
        }
        assert!(decode_line(&out[..out.len() - 1]).is_none());
        assert!(decode_line(&[0u8; 64]).is_none());
    }
}
