//! The composition root: the one place that names every layer and builds a state with them.
//!
//! The runtime knows the layers above it only through the traits of `runtime::extension`; this
//! module registers the graph's and the device layer's implementations, so `MMSBState::open`
//! (and `open_with_storage`) give every caller the whole system. A later layer (file-backed
//! pages, replication) is added here.

use std::sync::Arc;

use crate::device::{DeviceManager, DeviceSyncRecords};
use crate::graph::shadow_graph::ShadowPageGraph;
use crate::runtime::extension::Extensions;
use crate::runtime::state::Lsn;
use crate::runtime::state::{Config, MMSBState};
use crate::runtime::tlog::inspect::{read_dir, replay_config, DirLog, Verification};
use crate::runtime::tlog::storage::Storage;
use crate::types::error::Result;

/// The extensions every state gets: the dependency graph (under the lock, with its records and
/// the checkpoint section), the device layer's sync records, and its `DeviceManager` (which
/// detects a GPU only when `config.gpu` asks for one).
fn extensions(config: &Config) -> Extensions {
    Extensions {
        log: vec![Box::new(ShadowPageGraph::default()), Box::new(DeviceSyncRecords)],
        state: vec![Arc::new(DeviceManager::new(config.gpu))],
    }
}

impl MMSBState {
    /// Starts a state (`mmsb_start`). With `config.dir`, recovers what the directory holds.
    pub fn open(config: Config) -> Result<MMSBState> {
        config.validate()?;
        let ext = extensions(&config);
        let state = MMSBState::open_with_extensions(config, ext)?;
        // Recovered GPU/unified pages get their mirrors (whole page dirty).
        state.device_adopt_recovered()?;
        Ok(state)
    }

    /// An empty read-only state (LSN 0) that [`MMSBState::apply_replicated`] fills (a follower
    /// of a replicated stream, issue 22), with the same layers as any state (the graph replays
    /// its records). Writes fail with `StateError::ReadOnly`; reads, views and statistics work.
    pub fn replica(config: Config) -> Result<MMSBState> {
        config.validate()?;
        let config = crate::runtime::tlog::replica::replica_config(config);
        let ext = extensions(&config);
        let core = crate::runtime::state::Core { next_page_id: 1, ext: ext.log, ..Default::default() };
        Ok(MMSBState::from_core(core, config, true, ext.state))
    }

    /// Opens a state whose log and checkpoints live in `storage` instead of `config.dir` (an
    /// in-memory storage shared between opens, or a fault-injecting wrapper in crash tests).
    /// Logging is on whatever `config.logging` says; pages stay in memory.
    pub fn open_with_storage(config: Config, storage: Arc<dyn Storage>) -> Result<MMSBState> {
        config.validate()?;
        let ext = extensions(&config);
        MMSBState::open_with_storage_and(config, storage, ext)
    }
}

/// A state directory read without its writer (`runtime::tlog::inspect`): the rebuilt states get
/// the same extensions as an open state, so extension records (graph edges, device syncs) replay.
impl DirLog {
    /// Rebuilds the state right after LSN `lsn` as a new in-memory, read-only state (writes
    /// fail with `StateError::ReadOnly`: it has no log to keep them in), with the default
    /// limits of [`Config`] (a page larger than `max_page_size` fails the replay). `lsn`
    /// outside [`DirLog::replayable`] is `LogError::LsnOutsideRange` (status
    /// `lsn_out_of_range`), one strictly inside a compacted run `LogError::LsnCompacted`.
    pub fn replay_to(&self, lsn: Lsn) -> Result<MMSBState> {
        let config = replay_config();
        self.replay_with(lsn, extensions(&config))
    }

    /// Checks the directory as an open would, changing nothing: every checkpoint verifies;
    /// every record of the chain verifies (checksum, LSN sequence, segment chain) and decodes,
    /// and those after the newest checkpoint apply to it; only the newest segment may end early
    /// (the rule of `docs/log-format.md`, "Recovery"). Damage is reported in
    /// [`Verification::problems`]; an `Err` is an I/O failure.
    pub fn verify(&self) -> Result<Verification> {
        self.verify_with(extensions(&replay_config()))
    }
}

impl MMSBState {
    /// The state of the directory `dir` right after LSN `lsn`, rebuilt from its checkpoints and
    /// log into a new in-memory, read-only state (writes fail with `StateError::ReadOnly`),
    /// without its writer: no lock is taken, no file is created or changed, and a writer may
    /// keep writing meanwhile (the record it is appending is not an error: the readable log
    /// ends before it). `lsn` outside the replayable range (`DirInfo::replayable`, through
    /// [`read_dir`] and [`DirLog::info`]) is `LogError::LsnOutsideRange` with the range in the
    /// message; `lsn` strictly inside a compacted run `LogError::LsnCompacted`. The newest LSN
    /// is [`DirLog::last_lsn`].
    pub fn open_at(dir: impl AsRef<std::path::Path>, lsn: Lsn) -> Result<MMSBState> {
        read_dir(dir.as_ref(), |d| d.replay_to(lsn))
    }
}
