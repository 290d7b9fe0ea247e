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
use crate::runtime::state::{Config, MMSBState};
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

    /// Opens a state whose log and checkpoints live in `storage` instead of `config.dir` (an
    /// in-memory storage shared between opens, or a fault-injecting wrapper in crash tests).
    /// Logging is on whatever `config.logging` says; pages stay in memory.
    pub fn open_with_storage(config: Config, storage: Arc<dyn Storage>) -> Result<MMSBState> {
        config.validate()?;
        let ext = extensions(&config);
        MMSBState::open_with_storage_and(config, storage, ext)
    }
}
