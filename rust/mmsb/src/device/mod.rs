//! Layer 03: GPU mirrors of pages and device synchronisation.
//!
//! A page created with [`Location::Gpu`] or [`Location::Unified`] keeps its canonical bytes on
//! the CPU (every delta is routed and logged there, as for any page) and, when a GPU is present,
//! gets a device mirror under the same [`PageId`]: plain device memory for `Gpu`, managed memory
//! for `Unified`. Without a GPU (no driver, no device, the `cuda` feature off, or `Config::gpu`
//! false) such pages stay CPU-only and the reason is recorded; nothing else changes.
//!
//! Coherence:
//! - The router marks the bytes of each delta applied to a non-CPU page in the page's
//!   [`DirtySet`] (the CPU is ahead of the mirror there).
//! - [`MMSBState::sync_device`](crate::MMSBState::sync_device) host→device plans copies for the
//!   dirty ranges ([`plan`]), stages them in pinned memory, runs them on a CUDA stream, and once
//!   the doorbell rings records a [`DeviceSyncRecord`] for the transaction log.
//! - Device→host brings mirror bytes back and routes the bytes that differ as an ordinary delta,
//!   so the CPU still changes only through deltas and the log sees every change.
//! - [`MMSBState::apply_on_device`](crate::MMSBState::apply_on_device) routes a delta on the CPU
//!   *and* applies it to the mirror with a kernel ([`kernels`]), so the mirror needs no copy.
//!
//! Bytes a foreign kernel writes into a mirror must be pulled (device→host) before the next
//! host→device sync of the page: its coalesced copies may cover them with the CPU's bytes.
//!
//! Integration points (marked `Device layer hook` in the code):
//! - `Page::dirty` and one call in `router::apply`; the [`DeviceManager`], a state extension
//!   (`runtime::extension::StateExtension`) registered with every state by `compose.rs`, which
//!   hears of `create_page` / `free_page` / `close`; [`DeviceSyncRecords`], the log extension
//!   that replays `DEVICE_SYNC` records;
//! - the transaction log: `log_device_sync` (api.rs) is called once per page and direction
//!   after the doorbell rang, with a [`DeviceSyncRecord`] whose body
//!   [`encode_sync_record`] / [`decode_sync_record`] serialize: the sync takes one LSN (through
//!   the commit entry point `MMSBState::commit`, with or without a log, as every change does), a state with a
//!   log writes it as an extension record of kind `tlog::ext_kind::DEVICE_SYNC`, and every state keeps the last
//!   ones in a bounded journal (`MMSBState::take_device_sync_records`). Device→host syncs and
//!   `apply_on_device` route their deltas through the commit entry point's `Txn::route`, as
//!   `update_page_at` does, so they are logged and observed wherever that path is;
//! - recovery: pages materialized without `create_page` need `device_adopt_page`.
//!
//! [`Location::Gpu`]: crate::types::page::Location::Gpu
//! [`Location::Unified`]: crate::types::page::Location::Unified
//! [`PageId`]: crate::types::page::PageId

pub use crate::types::dirty;
pub mod api;
pub mod kernels;
pub mod plan;
pub mod record;

#[cfg(feature = "cuda")]
pub mod cuda;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;

pub use api::{PageDeviceStatus, SyncReport};
pub use dirty::DirtySet;
pub use plan::{CommandBuffer, CopyOp, Plan, PlannerConfig, SyncCommand, SyncDirection};
pub use record::{decode_sync_record, encode_sync_record, DeviceSyncRecord, DeviceSyncRecords};

use crate::types::page::{Location, PageId};
use crate::types::IdHasher;

/// Whether this process can use a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Device 0 is open.
    Available {
        /// The device name the driver reports.
        name: String,
        /// Compute capability (major, minor).
        compute_capability: (i32, i32),
        /// Device memory in bytes.
        total_mem: u64,
        /// Whether the device supports managed (unified) memory.
        managed_memory: bool,
    },
    /// No usable GPU; a normal state, not an error.
    Unavailable {
        /// Why (no driver, no device, GPU use off, ...).
        reason: String,
    },
}

impl DeviceStatus {
    /// The C ABI code: 0 available, 1 unavailable.
    pub fn code(&self) -> u32 {
        match self {
            DeviceStatus::Available { .. } => 0,
            DeviceStatus::Unavailable { .. } => 1,
        }
    }

    /// True when a GPU is usable.
    pub fn is_available(&self) -> bool {
        matches!(self, DeviceStatus::Available { .. })
    }

    /// A one-line description (the device name, or why there is none).
    pub fn describe(&self) -> String {
        match self {
            DeviceStatus::Available { name, compute_capability: (ma, mi), total_mem, .. } => {
                format!("{name} (sm_{ma}{mi}, {} MiB)", total_mem >> 20)
            }
            DeviceStatus::Unavailable { reason } => reason.clone(),
        }
    }
}

#[cfg(feature = "cuda")]
fn gpu() -> Result<&'static std::sync::Arc<cuda::Gpu>, &'static str> {
    static GPU: OnceLock<Result<std::sync::Arc<cuda::Gpu>, String>> = OnceLock::new();
    GPU.get_or_init(cuda::probe).as_ref().map_err(String::as_str)
}

/// The process's GPU backend, when one was found (for benchmarks and low-level tools).
#[cfg(feature = "cuda")]
pub fn gpu_handle() -> Option<&'static std::sync::Arc<cuda::Gpu>> {
    gpu().ok()
}

/// Detects the GPU once per process (later calls return the cached answer). Never panics.
pub fn device_status() -> &'static DeviceStatus {
    static STATUS: OnceLock<DeviceStatus> = OnceLock::new();
    STATUS.get_or_init(|| {
        #[cfg(feature = "cuda")]
        {
            match gpu() {
                Ok(g) => DeviceStatus::Available {
                    name: g.info.name.clone(),
                    compute_capability: g.info.compute_capability,
                    total_mem: g.info.total_mem,
                    managed_memory: g.info.managed_memory,
                },
                Err(reason) => DeviceStatus::Unavailable { reason: reason.to_string() },
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            DeviceStatus::Unavailable { reason: "built without the `cuda` feature".into() }
        }
    })
}

/// Counters of the device layer (per state).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Completed syncs (one per page and direction).
    pub syncs: u64,
    /// Bytes copied host to device.
    pub bytes_h2d: u64,
    /// Bytes copied device to host.
    pub bytes_d2h: u64,
    /// Delta kernels launched on the device.
    pub kernels_launched: u64,
    /// Bytes currently marked dirty on pages that have a mirror.
    pub dirty_bytes_pending: u64,
    /// Pages with a device mirror.
    pub mirrors: u64,
    /// Non-CPU pages that stayed CPU-only (see [`MMSBState::device_page_status`](crate::MMSBState::device_page_status)).
    pub cpu_only_pages: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) syncs: AtomicU64,
    pub(crate) bytes_h2d: AtomicU64,
    pub(crate) bytes_d2h: AtomicU64,
    pub(crate) kernels: AtomicU64,
}

#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
impl Counters {
    pub(crate) fn add(c: &AtomicU64, v: u64) {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

/// Where a non-CPU page's device side stands.
#[derive(Debug)]
pub(crate) enum Slot {
    #[cfg(feature = "cuda")]
    Mirror(cuda::Mirror),
    CpuOnly {
        reason: String,
    },
}

/// Mutable device-side state, behind one lock (lock order: this lock, then the state's core).
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) slots: HashMap<PageId, Slot, IdHasher>,
    #[cfg(feature = "cuda")]
    pub(crate) upload: Option<cuda::Staging>,
    #[cfg(feature = "cuda")]
    pub(crate) readback: Option<cuda::Staging>,
}

/// How many encoded sync records the manager keeps until the transaction log takes them.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) const JOURNAL_CAP: usize = 1024;

/// The device side of one `MMSBState` (the `device` field).
#[derive(Debug)]
pub struct DeviceManager {
    /// Why GPU work is off for this state (`None`: a GPU is in use).
    pub(crate) disabled: Option<String>,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) planner: PlannerConfig,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) counters: Counters,
    /// Encoded DeviceSync records not yet handed to a transaction log.
    pub(crate) journal: Mutex<VecDeque<Vec<u8>>>,
    last_log_failure: Mutex<Option<String>>,
}

impl DeviceManager {
    /// A manager that uses the GPU when `gpu` is requested and one is present. Detection runs
    /// only when requested.
    pub fn new(gpu: bool) -> DeviceManager {
        let disabled = if !gpu {
            Some("GPU use is off in the configuration (Config::gpu = false)".to_string())
        } else {
            match device_status() {
                DeviceStatus::Available { .. } => None,
                DeviceStatus::Unavailable { reason } => Some(reason.clone()),
            }
        };
        DeviceManager {
            disabled,
            planner: PlannerConfig::default(),
            inner: Mutex::new(Inner::default()),
            counters: Counters::default(),
            journal: Mutex::new(VecDeque::new()),
            last_log_failure: Mutex::new(None),
        }
    }

    /// True when this state mirrors pages on a GPU.
    pub fn is_active(&self) -> bool {
        self.disabled.is_none()
    }

    /// Hook: a page was created. Gives a non-CPU page a mirror, or records why it has none.
    pub(crate) fn on_page_created(&self, id: PageId, location: Location, size: u64) {
        if location == Location::Cpu {
            return;
        }
        let slot = match &self.disabled {
            Some(reason) => Slot::CpuOnly { reason: reason.clone() },
            None => self.new_mirror(location, size),
        };
        self.inner.lock().slots.insert(id, slot);
    }

    #[cfg(feature = "cuda")]
    fn new_mirror(&self, location: Location, size: u64) -> Slot {
        let made = gpu()
            .map_err(|e| e.to_string())
            .and_then(|g| g.alloc_mirror(size as usize, location == Location::Unified).map_err(|e| e.to_string()));
        match made {
            Ok(m) => Slot::Mirror(m),
            Err(reason) => Slot::CpuOnly { reason },
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn new_mirror(&self, _location: Location, _size: u64) -> Slot {
        Slot::CpuOnly { reason: "built without the `cuda` feature".into() }
    }

    /// Hook: a page was freed; its mirror goes with it.
    pub(crate) fn on_page_freed(&self, id: PageId) {
        self.inner.lock().slots.remove(&id);
    }

    /// Hook: the state closed; all mirrors and staging memory are released.
    pub(crate) fn on_close(&self) {
        let mut inner = self.inner.lock();
        *inner = Inner::default();
    }

    /// Remembers why a completed sync could not be logged (reported by `device_stats`).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn note_log_failure(&self, message: String) {
        *self.last_log_failure.lock() = Some(message);
    }

    /// The last failure to log a completed sync, if any.
    pub fn last_log_failure(&self) -> Option<String> {
        self.last_log_failure.lock().clone()
    }

    /// Appends an encoded record to the journal, dropping the oldest beyond [`JOURNAL_CAP`].
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn journal_push(&self, body: Vec<u8>) {
        let mut j = self.journal.lock();
        if j.len() == JOURNAL_CAP {
            j.pop_front();
        }
        j.push_back(body);
    }
}

/// The device layer plugs into the state as a state extension: it mirrors pages as they come
/// and go, and lets its mirrors go at `close`.
impl crate::runtime::extension::StateExtension for DeviceManager {
    fn on_page_created(&self, id: PageId, location: Location, size: u64) {
        DeviceManager::on_page_created(self, id, location, size);
    }

    fn on_page_freed(&self, id: PageId) {
        DeviceManager::on_page_freed(self, id);
    }

    fn on_close(&self) {
        DeviceManager::on_close(self);
    }

    fn fresh(
        &self,
        config: &crate::runtime::state::Config,
    ) -> std::sync::Arc<dyn crate::runtime::extension::StateExtension> {
        std::sync::Arc::new(DeviceManager::new(config.gpu))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_never_panics_and_is_cached() {
        let a = device_status();
        let b = device_status();
        assert!(std::ptr::eq(a, b), "detected once per process");
        match a {
            DeviceStatus::Available { .. } => assert_eq!(a.code(), 0),
            DeviceStatus::Unavailable { reason } => {
                assert_eq!(a.code(), 1);
                assert!(!reason.is_empty());
            }
        }
    }

    #[test]
    fn requesting_a_gpu_without_one_is_a_normal_state() {
        let m = DeviceManager::new(true);
        match device_status() {
            DeviceStatus::Unavailable { reason } => {
                assert!(!m.is_active());
                assert_eq!(m.disabled.as_deref(), Some(reason.as_str()));
                m.on_page_created(PageId(3), Location::Unified, 4096);
                assert!(matches!(&m.inner.lock().slots[&PageId(3)], Slot::CpuOnly { reason: r } if r == reason));
            }
            DeviceStatus::Available { .. } => assert!(m.is_active()),
        }
    }

    #[test]
    fn disabled_manager_records_why_pages_stay_on_the_cpu() {
        let m = DeviceManager::new(false);
        assert!(!m.is_active());
        m.on_page_created(PageId(1), Location::Cpu, 10);
        m.on_page_created(PageId(2), Location::Gpu, 10);
        let inner = m.inner.lock();
        assert!(!inner.slots.contains_key(&PageId(1)), "CPU pages cost nothing");
        assert!(matches!(&inner.slots[&PageId(2)], Slot::CpuOnly { reason } if reason.contains("Config::gpu")));
    }
}
