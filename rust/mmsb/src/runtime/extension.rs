//! Extension points: how the layers above the runtime (graph, device; later file-backed pages
//! and replication) plug into a state without the runtime naming them.
//!
//! - A [`LogExtension`] keeps its data inside the state's `Core`, under the state's lock (the
//!   graph's `ShadowPageGraph`). It owns extension record kinds of the log
//!   (`runtime::tlog::ext_kind`), replays them on recovery and `replay_to`, may block a page
//!   free, and may write the checkpoint's extension section.
//! - A [`StateExtension`] keeps its data beside the state, outside that lock (the device
//!   layer's `DeviceManager`), and hears about pages created and freed and about `close`.
//!
//! Both are registered when the state is built, by the crate's composition root
//! (`crate::compose`, the one module allowed to name every layer); a read-only snapshot made by
//! `replay_to` gets [`fresh`](LogExtension::fresh) instances of the same set. Upper layers find
//! their own instance again by type (`Core::extension`, `MMSBState::state_extension`); the
//! runtime itself only calls the traits.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use crate::runtime::state::Config;
use crate::types::error::Result;
use crate::types::page::{Location, PageId};

/// The size of a page of the state being built or replayed (`None`: no such page), for
/// extensions that check their records against pages.
pub type PageSizes<'a> = &'a dyn Fn(PageId) -> Option<u64>;

/// State an upper layer keeps under the state's lock, with its own log records.
///
/// Every method runs under the state's exclusive lock, in LSN order. An extension that appends
/// records does so through the state's commit entry point (`MMSBState::commit`, with
/// `Txn::log_extension`), so they get LSNs like every other change; this trait is the way back
/// in, on recovery and replay.
pub trait LogExtension: Any + Send + Sync + Debug {
    /// The extension record kinds (`runtime::tlog::ext_kind`) this extension writes and
    /// replays. No two registered extensions share a kind.
    fn record_kinds(&self) -> &'static [u8];

    /// Applies one of its records (`kind` is one of [`record_kinds`](Self::record_kinds)) during
    /// recovery or replay. An error is a corrupt record: it fails the open or the replay.
    fn replay(&mut self, kind: u8, body: &[u8], page_size: PageSizes<'_>) -> Result<()>;

    /// The checkpoint's extension section (docs/log-format.md). The format has one such
    /// section, so at most one registered extension returns `Some` (the graph's snapshot).
    fn checkpoint_section(&self) -> Option<Vec<u8>> {
        None
    }

    /// Reads a non-empty checkpoint extension section back. Returns `Ok(false)` when the
    /// section is not this extension's (the default), `Ok(true)` once restored.
    fn restore_section(&mut self, _bytes: &[u8], _page_size: PageSizes<'_>) -> Result<bool> {
        Ok(false)
    }

    /// Why `page` cannot be freed now (`None`: it can), e.g. "it has dependency edges".
    fn blocks_free(&self, _page: PageId) -> Option<String> {
        None
    }

    /// An empty instance of the same extension, for a state rebuilt from the log.
    fn fresh(&self) -> Box<dyn LogExtension>;

    /// `self` as [`Any`], so the layer that registered it can find it again by type.
    fn as_any(&self) -> &dyn Any;

    /// `self` as mutable [`Any`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// State an upper layer keeps beside the state, outside its lock, kept in step with the pages.
///
/// The hooks run outside the state's lock, after the change they report is committed (slow
/// work such as allocating a device mirror must not hold writers up).
pub trait StateExtension: Any + Send + Sync + Debug {
    /// A page was created.
    fn on_page_created(&self, _id: PageId, _location: Location, _size: u64) {}

    /// A page was freed.
    fn on_page_freed(&self, _id: PageId) {}

    /// The state was closed: release what the extension holds for it.
    fn on_close(&self) {}

    /// An instance for another state opened with `config` (a `replay_to` snapshot).
    fn fresh(&self, config: &Config) -> Arc<dyn StateExtension>;

    /// `self` as [`Any`], so the layer that registered it can find it again by type.
    fn as_any(&self) -> &dyn Any;
}

/// The extensions a state is built with (see the module documentation).
#[derive(Debug, Default)]
pub struct Extensions {
    /// Kept in the state's `Core`, under its lock.
    pub log: Vec<Box<dyn LogExtension>>,
    /// Kept beside the state.
    pub state: Vec<Arc<dyn StateExtension>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::MMSBState;
    use crate::types::error::ErrorCode;
    use crate::types::page::PageMeta;

    /// A log extension of its own record kind (200) that counts what it replays and holds
    /// every page it has seen a record for.
    #[derive(Debug, Default)]
    struct Tally {
        replayed: Vec<Vec<u8>>,
    }

    impl LogExtension for Tally {
        fn record_kinds(&self) -> &'static [u8] {
            &[200]
        }
        fn replay(&mut self, _kind: u8, body: &[u8], _page_size: PageSizes<'_>) -> Result<()> {
            self.replayed.push(body.to_vec());
            Ok(())
        }
        fn blocks_free(&self, page: PageId) -> Option<String> {
            self.replayed.iter().any(|b| b == &page.0.to_le_bytes()).then(|| "the tally holds it".into())
        }
        fn fresh(&self) -> Box<dyn LogExtension> {
            Box::new(Tally::default())
        }
        fn as_any(&self) -> &dyn Any {
            self
        }
        fn as_any_mut(&mut self) -> &mut dyn Any {
            self
        }
    }

    /// The runtime reaches a registered extension only through the trait: its records are
    /// replayed into the snapshot `replay_to` builds (a fresh instance), it may refuse a page
    /// free, and a record kind nobody registered is a corrupt record.
    #[test]
    fn a_registered_log_extension_replays_its_records_and_guards_frees() {
        let config = Config { logging: true, ..Config::default() };
        // It holds page 1 from the start (the first page id).
        let tally = Tally { replayed: vec![1u64.to_le_bytes().to_vec()] };
        let ext = Extensions { log: vec![Box::new(tally)], state: Vec::new() };
        let s = MMSBState::open_with_extensions(config, ext).unwrap();
        let held = s.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
        let free = s.create_page(8, Location::Cpu, PageMeta::default()).unwrap();
        let err = s.free_page(held).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PageInUse);
        assert!(err.to_string().contains("the tally holds it"), "{err}");
        s.free_page(free).unwrap();
        let body = 7u64.to_le_bytes();
        let lsn = s.commit(|txn| txn.log_extension(200, &body)).unwrap();
        assert_eq!(lsn, 4);
        let snap = s.replay_to(4).unwrap();
        let replayed = snap.core.read().extension::<Tally>().map(|t| t.replayed.clone());
        assert_eq!(replayed, Some(vec![body.to_vec()]), "a fresh instance, fed the log's record");
        let mut core = s.core.write();
        let err = s.apply_log_extension(&mut core, 201, b"").unwrap_err();
        assert_eq!(err.code(), ErrorCode::Corrupt);
    }
}
