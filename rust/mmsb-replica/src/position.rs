//! A follower's durable position in its directory, kept cheap: a base image
//! (`follower.position`: a checkpoint header and the state's checkpoint image, written when the
//! follower starts without one and when the log below has grown past the image's size) and an
//! append-only log of the stream messages applied since (`follower.log`), appended after every
//! applied batch and fsynced about once a second and at close. A restarted follower loads the
//! base, applies the logged messages after it, and continues from the sequence after the last.
//!
//! A log entry is `seq u64 LE, len u32 LE, message` (the stream message's bytes, which carry
//! their own CRC). The log is read up to its first torn or invalid entry (a crash mid-append)
//! and cut there; entries below the base's sequence (a crash between a new base and the log's
//! truncation) are skipped.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use mmsb::runtime::replica_hook::RawRecord;
use mmsb::types::error::LogError;
use mmsb::{Config, Lsn, MMSBState};

use crate::checkpoint::{self, CheckpointHeader};
use crate::wire;

const POSITION_FILE: &str = "follower.position";
const LOG_FILE: &str = "follower.log";
const ENTRY_HEADER: usize = 12;
/// The log is folded into a new base once it is larger than the base and than this.
const MIN_FOLD_BYTES: u64 = 64 << 20;

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> mmsb::Error {
    let ctx = format!("{what} {}", path.display());
    move |e| LogError::io(ctx, e).into()
}

/// A follower state rebuilt from its directory.
pub(crate) struct Resumed {
    pub state: MMSBState,
    /// `None` while the follower had not seen a message yet.
    pub state_id: Option<u128>,
    pub term: u64,
    /// The stream sequence to read next.
    pub next_seq: u64,
}

/// The appending side, owned by the follower's task.
pub(crate) struct PositionLog {
    dir: PathBuf,
    log: File,
    log_len: u64,
    base_len: u64,
    /// Entries written since the last fsync.
    dirty: bool,
    buf: Vec<u8>,
}

/// Loads the base and the log of `dir` (`None`: no base there yet).
pub(crate) fn resume(dir: &Path, config: &Config) -> mmsb::Result<Option<Resumed>> {
    let path = dir.join(POSITION_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path)(e)),
    };
    let h = CheckpointHeader::decode(&data).ok_or_else(|| LogError::Corrupt {
        file: path.display().to_string(),
        offset: 0,
        reason: "not a follower position file".into(),
    })?;
    let image = &data[checkpoint::HEADER_LEN..];
    let state = if image.is_empty() {
        MMSBState::replica(config.clone())?
    } else {
        MMSBState::replica_from_image(config.clone(), image)?
    };
    let mut r =
        Resumed { state, state_id: (h.state_id != 0).then_some(h.state_id), term: h.term, next_seq: h.start_seq };
    let log_path = dir.join(LOG_FILE);
    let log = match std::fs::read(&log_path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("read", &log_path)(e)),
    };
    let good = replay_log(&log, &mut r);
    if good < log.len() {
        // A torn or unusable tail: cut it so new entries follow the good ones.
        let f = std::fs::OpenOptions::new().write(true).open(&log_path).map_err(io("open", &log_path))?;
        f.set_len(good as u64).and_then(|()| f.sync_all()).map_err(io("truncate", &log_path))?;
    }
    Ok(Some(r))
}

/// Applies the log's entries past the base to `r`; returns the length of the usable prefix.
fn replay_log(log: &[u8], r: &mut Resumed) -> usize {
    let mut at = 0usize;
    while let Some(h) = log.get(at..at + ENTRY_HEADER) {
        let seq = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes")) as usize;
        let Some(msg) = log.get(at + ENTRY_HEADER..at + ENTRY_HEADER + len) else { break };
        let Ok(e) = wire::decode(msg) else { break };
        if seq >= r.next_seq {
            if r.state_id.is_some_and(|s| s != e.state_id) {
                break;
            }
            let Ok(subs) = e.records() else { break };
            let mut ok = true;
            for s in subs {
                let lsn: Lsn = r.state.lsn();
                if s.last_lsn() <= lsn {
                    continue;
                }
                let rec = RawRecord { lsn: s.lsn, count: s.count, kind: s.kind, body: s.body };
                if s.lsn != lsn + 1 || r.state.apply_replicated(rec).is_err() {
                    ok = false;
                    break;
                }
            }
            if !ok {
                break;
            }
            r.state_id = Some(e.state_id);
            r.term = r.term.max(e.term);
            r.next_seq = seq + 1;
        }
        at += ENTRY_HEADER + len;
    }
    at
}

impl PositionLog {
    /// Opens `dir`'s log for appending. With `write_base` (the follower did not resume from
    /// this directory) the base is written first from `state` and the log emptied.
    pub(crate) fn open(
        dir: &Path,
        write_base: Option<(&MMSBState, Option<u128>, u64, u64)>,
    ) -> mmsb::Result<PositionLog> {
        let log_path = dir.join(LOG_FILE);
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io("open", &log_path))?;
        let log_len = log.metadata().map_err(io("stat", &log_path))?.len();
        let base_len = std::fs::metadata(dir.join(POSITION_FILE)).map_or(0, |m| m.len());
        let mut p = PositionLog { dir: dir.to_path_buf(), log, log_len, base_len, dirty: false, buf: Vec::new() };
        if let Some((state, state_id, term, next_seq)) = write_base {
            p.write_base(state, state_id, term, next_seq)?;
        }
        Ok(p)
    }

    /// Appends the applied messages `(seq, bytes)` (not yet fsynced).
    pub(crate) fn append<'a>(&mut self, msgs: impl Iterator<Item = (u64, &'a [u8])>) -> mmsb::Result<()> {
        self.buf.clear();
        for (seq, m) in msgs {
            self.buf.extend_from_slice(&seq.to_le_bytes());
            let len = u32::try_from(m.len()).expect("stream messages are below 4 GiB");
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(m);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(LOG_FILE);
        self.log.write_all(&self.buf).map_err(io("append to", &path))?;
        self.log_len += self.buf.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// A position whose log file is open read-only, so every append fails (for tests of the
    /// follower's error reporting).
    #[cfg(test)]
    pub(crate) fn read_only_for_test(dir: &Path) -> PositionLog {
        let path = dir.join(LOG_FILE);
        std::fs::write(&path, b"").unwrap();
        let log = File::open(&path).unwrap();
        PositionLog { dir: dir.to_path_buf(), log, log_len: 0, base_len: 0, dirty: false, buf: Vec::new() }
    }

    /// True when the log should be folded into a new base.
    pub(crate) fn wants_fold(&self) -> bool {
        self.log_len > self.base_len.max(MIN_FOLD_BYTES)
    }

    /// Makes what was appended durable.
    pub(crate) fn sync(&mut self) -> mmsb::Result<()> {
        if self.dirty {
            self.log.sync_data().map_err(io("fsync", &self.dir.join(LOG_FILE)))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Writes a new base (the state's image, which must agree with `next_seq`: the caller is
    /// the only applier) and empties the log.
    pub(crate) fn write_base(
        &mut self,
        state: &MMSBState,
        state_id: Option<u128>,
        term: u64,
        next_seq: u64,
    ) -> mmsb::Result<()> {
        let (lsn, image) = state.checkpoint_image()?;
        let h = CheckpointHeader { state_id: state_id.unwrap_or(0), term, lsn, start_seq: next_seq };
        let path = self.dir.join(POSITION_FILE);
        let tmp = self.dir.join(format!("{POSITION_FILE}.tmp"));
        let mut data = h.encode().to_vec();
        data.extend_from_slice(&image);
        std::fs::write(&tmp, &data).map_err(io("write", &tmp))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io("fsync", &self.dir))?;
        // Entries below the new base's sequence are skipped at load, so a crash before this
        // truncation loses nothing.
        let log_path = self.dir.join(LOG_FILE);
        self.log.set_len(0).and_then(|()| self.log.sync_all()).map_err(io("truncate", &log_path))?;
        self.log_len = 0;
        self.base_len = data.len() as u64;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmsb::runtime::tlog::record::{encode_batch, encode_create, CreateBody, RecordType};
    use mmsb::{Delta, Location, PageId, PageMeta};

    fn msg(lsn: Lsn, kind: u8, body: &[u8]) -> Vec<u8> {
        let count = u64::from(kind != wire::KIND_TERM);
        wire::Envelope { state_id: 5, term: 1, lsn, count, kind, body }.encode()
    }

    /// The messages of a stream: term record, page create, three one-delta batches.
    fn stream() -> Vec<(u64, Vec<u8>)> {
        let mut out = vec![(1, msg(0, wire::KIND_TERM, b""))];
        let mut body = Vec::new();
        let c = CreateBody { id: PageId(1), size: 64, location: Location::Cpu, meta: PageMeta::default() };
        encode_create(&c, &mut body);
        out.push((2, msg(1, RecordType::PageCreate as u8, &body)));
        for i in 0..3u8 {
            let mut body = Vec::new();
            let d = Delta::write(u64::from(i) * 8, &[i + 1; 8]).unwrap();
            encode_batch([(PageId(1), &d)].into_iter(), 1, &mut body);
            out.push((3 + u64::from(i), msg(2 + u64::from(i), RecordType::Batch as u8, &body)));
        }
        out
    }

    #[test]
    fn resumes_from_base_and_log_cuts_a_torn_tail_and_folds() {
        let dir = tempfile::tempdir().unwrap();
        assert!(resume(dir.path(), &Config::default()).unwrap().is_none());
        let empty = MMSBState::replica(Config::default()).unwrap();
        let mut p = PositionLog::open(dir.path(), Some((&empty, None, 0, 1))).unwrap();
        let msgs = stream();
        p.append(msgs[..4].iter().map(|(s, m)| (*s, &m[..]))).unwrap();
        p.sync().unwrap();
        let good = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len();
        // A crash in the middle of the next entry.
        let (seq, last) = &msgs[4];
        let mut torn = seq.to_le_bytes().to_vec();
        torn.extend_from_slice(&u32::try_from(last.len()).unwrap().to_le_bytes());
        torn.extend_from_slice(&last[..last.len() / 2]);
        std::fs::OpenOptions::new().append(true).open(dir.path().join(LOG_FILE)).unwrap().write_all(&torn).unwrap();
        drop(p);

        let r = resume(dir.path(), &Config::default()).unwrap().unwrap();
        assert_eq!((r.state.lsn(), r.next_seq, r.state_id, r.term), (3, 5, Some(5), 1));
        let page = r.state.read_page(PageId(1)).unwrap();
        assert_eq!((&page[..8], &page[8..16], &page[16..24]), (&[1u8; 8][..], &[2u8; 8][..], &[0u8; 8][..]));
        assert_eq!(std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(), good, "the torn entry is cut");

        // Appending goes on after the good entries; a fold writes a base and empties the log,
        // and entries below the base's sequence are skipped.
        let mut p = PositionLog::open(dir.path(), None).unwrap();
        p.append(msgs[4..].iter().map(|(s, m)| (*s, &m[..]))).unwrap();
        let r = resume(dir.path(), &Config::default()).unwrap().unwrap();
        assert_eq!((r.state.lsn(), r.next_seq), (4, 6));
        p.write_base(&r.state, r.state_id, r.term, r.next_seq).unwrap();
        assert_eq!(std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(), 0);
        // (A crash before the truncation: the old entries are still there, and skipped.)
        p.append(msgs.iter().map(|(s, m)| (*s, &m[..]))).unwrap();
        let again = resume(dir.path(), &Config::default()).unwrap().unwrap();
        assert_eq!((again.state.lsn(), again.next_seq), (4, 6));
        assert_eq!(again.state.read_page(PageId(1)).unwrap(), r.state.read_page(PageId(1)).unwrap());
    }
}
