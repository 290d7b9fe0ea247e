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
use crate::runtime::tlog::replay::{apply_record, load_checkpoint};
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
        if self.is_closed() {
            return Err(StateError::Closed.into());
        }
        let mut core = self.core.write();
        if record.lsn != core.lsn + 1 || record.count == 0 {
            return Err(refused(
                record.lsn,
                format!("record covers LSNs {}..+{} but the state is at LSN {}", record.lsn, record.count, core.lsn),
            ));
        }
        if record.kind == RecordType::Compacted as u8 || record.kind == RecordType::Pad as u8 {
            return Err(refused(record.lsn, "compacted and padding records are not replicated".into()));
        }
        let rec = Record::decode(record.kind, record.count, record.body).map_err(|r| refused(record.lsn, r))?;
        // apply_record stops halfway on a bad delta (it is recovery's corruption check): check
        // every delta first so a refused record changes nothing.
        if let Record::Batch(ops) = &rec {
            for (page, d) in ops {
                let p = core
                    .pages
                    .get(page)
                    .ok_or_else(|| refused(record.lsn, format!("delta for unknown page {page}")))?;
                d.check_bounds(p.size()).map_err(|e| refused(record.lsn, format!("delta for page {page}: {e}")))?;
            }
        }
        let len = u32::try_from(record.body.len())
            .map_err(|_| refused(record.lsn, format!("a body of {} bytes exceeds 4 GiB", record.body.len())))?;
        let h = RecordHeader { len, lsn: record.lsn, count: record.count, kind: record.kind, flags: 0 };
        let last = h.last_lsn();
        apply_record(self, &mut core, &h, record.body, last, false).map_err(|r| refused(record.lsn, r))?;
        Ok(())
    }
}
