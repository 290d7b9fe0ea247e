//! What a replica (a follower of a replicated stream, issue 22) needs from the core: an empty
//! read-only state, applying one replicated record through the replay path, checkpoint images
//! (a checkpoint file's bytes, for the object store) and opening a writable state from one
//! (promotion). The empty replica state itself is built by the composition root
//! (`MMSBState::replica`, `compose.rs`); the transport lives in the `mmsb-replica` crate.

use std::sync::Arc;

use crate::runtime::replica_hook::RawRecord;
use crate::runtime::state::{Config, Lsn, MMSBState};
use crate::runtime::tlog::checkpoint;
use crate::runtime::tlog::format::{checkpoint_name, RecordHeader};
use crate::runtime::tlog::record::{Record, RecordType};
use crate::runtime::tlog::replay::{apply_decoded, load_checkpoint};
use crate::runtime::tlog::storage::{MemStorage, Storage};
use crate::types::error::{Error, LogError, Result, StateError};

fn refused(lsn: Lsn, reason: String) -> Error {
    LogError::Corrupt { file: "replicated record".into(), offset: lsn, reason }.into()
}

/// The configuration a replica runs with: in memory, no log, no replication hook.
pub(crate) fn replica_config(config: Config) -> Config {
    Config { dir: None, logging: false, record_observer: None, log_size_cap: 0, ..config }
}

impl MMSBState {
    /// A read-only replica state holding the checkpoint image `image` (see
    /// [`MMSBState::checkpoint_image`]); corrupt images are `LogError::Corrupt`.
    pub fn replica_from_image(config: Config, image: &[u8]) -> Result<MMSBState> {
        let state = MMSBState::replica(config)?;
        let mem = MemStorage::new();
        let name = checkpoint_name(0);
        mem.create(&name)
            .and_then(|f| f.write_vectored_at(0, &[image]))
            .map_err(|e| LogError::io("stage a checkpoint image", e))?;
        let c = checkpoint::read(&mem, &name)?.ok_or_else(|| LogError::Corrupt {
            file: "checkpoint image".into(),
            offset: 0,
            reason: "not a valid checkpoint (bad magic, length or checksum)".into(),
        })?;
        {
            let mut core = state.core.write();
            load_checkpoint(&state, &mut core, &c)?;
        }
        Ok(state)
    }

    /// The state as one checkpoint file's bytes (the format of `docs/log-format.md`), and the
    /// LSN it holds. Taken under the shared lock, so it is one consistent LSN.
    pub fn checkpoint_image(&self) -> Result<(Lsn, Vec<u8>)> {
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        let mem = MemStorage::new();
        let core = self.core.read();
        let ext = self.checkpoint_extension(&core);
        let (name, _) = checkpoint::write(&mem, &core, &ext)?;
        let lsn = core.lsn;
        drop(core);
        let bytes = mem.read(&name).map_err(|e| LogError::io("read a checkpoint image", e))?;
        Ok((lsn, bytes))
    }

    /// Opens a writable state that starts from the checkpoint image `image` (a promoted
    /// replica): its log begins at the image's LSN. With `config.dir`, the directory must hold
    /// no log yet; without one the log is in memory.
    pub fn open_from_image(config: Config, image: &[u8]) -> Result<MMSBState> {
        config.validate()?;
        let probe = MMSBState::replica_from_image(Config::default(), image)?;
        let lsn = probe.lsn();
        drop(probe);
        let name = checkpoint_name(lsn);
        let io = |e| LogError::io("write the promoted checkpoint", e);
        match &config.dir {
            Some(dir) => {
                // Straight to the directory (before the state takes its lock), then a normal
                // open recovers from it.
                std::fs::create_dir_all(dir).map_err(io)?;
                if std::fs::read_dir(dir).map_err(io)?.next().is_some() {
                    return Err(StateError::InvalidConfig(format!(
                        "{} already holds files; open from an image into an empty directory",
                        dir.display()
                    ))
                    .into());
                }
                let mut f = std::fs::File::create(dir.join(&name)).map_err(io)?;
                std::io::Write::write_all(&mut f, image).and_then(|_| f.sync_all()).map_err(io)?;
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
                MMSBState::open(config)
            }
            None => {
                let storage = Arc::new(MemStorage::new());
                storage.create(&name).and_then(|f| f.write_vectored_at(0, &[image])).map_err(io)?;
                MMSBState::open_with_storage(config, storage)
            }
        }
    }

    /// Applies one replicated record to a replica state through the path recovery and replay
    /// use, so pages end byte-identical to the primary's. The record must follow the state's
    /// LSN (`record.lsn == lsn() + 1`) and is checked whole before anything changes: on error
    /// nothing was applied.
    pub fn apply_replicated(&self, record: RawRecord<'_>) -> Result<()> {
        self.apply_replicated_batch(std::slice::from_ref(&record))
    }

    /// Applies consecutive replicated records (each following the one before) under one
    /// exclusive lock, as [`MMSBState::apply_replicated`] does one by one: a follower applies
    /// a fetched batch with one lock round instead of one per record. Each record is checked
    /// whole before it changes anything; on error the records before it stay applied (the
    /// state is at the last good record's LSN) and nothing of the bad one is.
    pub fn apply_replicated_batch(&self, records: &[RawRecord<'_>]) -> Result<()> {
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        let mut core = self.core.write();
        for record in records {
            let (h, _, rec) = check_replicated(&core, record)?;
            let last = h.last_lsn();
            apply_decoded(self, &mut core, &h, rec, last, false).map_err(|r| refused(record.lsn, r))?;
        }
        Ok(())
    }

    /// Appends a record another copy of this state's log already holds (a replication
    /// stream's record past the local log's end: the primary crashed after publishing it and
    /// before its local fsync) to this writable state's log at its LSN, applies it as replay
    /// does, and waits until the log made it durable. The record must follow the state's LSN
    /// and is checked whole first: on error nothing was logged or applied. The state's record
    /// observer sees it as any appended record.
    pub fn append_replicated(&self, record: RawRecord<'_>) -> Result<()> {
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        let Some(log) = &self.tlog else {
            return Err(StateError::Unsupported("append_replicated on a state without a log".into()).into());
        };
        let mut core = self.core.write();
        let (h, kind, rec) = check_replicated(&core, &record)?;
        let ticket = log.append(kind, record.lsn, record.count, |out| out.extend_from_slice(record.body))?;
        let last = h.last_lsn();
        // Checked above (decode, page existence, delta bounds): this cannot fail halfway.
        apply_decoded(self, &mut core, &h, rec, last, false).map_err(|r| refused(record.lsn, r))?;
        drop(core);
        log.wait(ticket)
    }
}

/// Checks a replicated record against the state (it follows the state's LSN, decodes, and
/// every delta fits its page) and returns its header, type and decoded record.
fn check_replicated(
    core: &crate::runtime::state::Core,
    record: &RawRecord<'_>,
) -> Result<(RecordHeader, RecordType, Record)> {
    if record.lsn != core.lsn + 1 || record.count == 0 {
        return Err(refused(
            record.lsn,
            format!("record covers LSNs {}..+{} but the state is at LSN {}", record.lsn, record.count, core.lsn),
        ));
    }
    let kind = RecordType::from_u8(record.kind)
        .filter(|k| !matches!(k, RecordType::Compacted | RecordType::Pad))
        .ok_or_else(|| refused(record.lsn, format!("record type {} is not replicated", record.kind)))?;
    let rec = Record::decode(record.kind, record.count, record.body).map_err(|r| refused(record.lsn, r))?;
    // apply_record stops halfway on a bad delta (it is recovery's corruption check): check
    // every delta first so a refused record changes nothing. (A single delta needs no
    // pre-check: apply_delta checks it before it changes anything.)
    if let Record::Batch(ops) = &rec {
        for (page, d) in ops.iter().filter(|_| ops.len() > 1) {
            let p =
                core.pages.get(page).ok_or_else(|| refused(record.lsn, format!("delta for unknown page {page}")))?;
            d.check_bounds(p.size()).map_err(|e| refused(record.lsn, format!("delta for page {page}: {e}")))?;
        }
    }
    let len = u32::try_from(record.body.len())
        .map_err(|_| refused(record.lsn, format!("a body of {} bytes exceeds 4 GiB", record.body.len())))?;
    Ok((RecordHeader { len, lsn: record.lsn, count: record.count, kind: record.kind, flags: 0 }, kind, rec))
}
