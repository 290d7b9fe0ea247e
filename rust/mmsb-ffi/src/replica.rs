//! C ABI of replication (issue 22; `docs/replication.md`), built with the cargo feature
//! `replication` (`cargo build --release -p mmsb-cdylib --features replication`). Without it
//! the functions exist and fail with `MMSB_STATUS_CODE_UNSUPPORTED`, so the header is one.

use std::ffi::c_char;
#[cfg(feature = "replication")]
use std::sync::Arc;

use crate::state::{MmsbConfig, MmsbState};
use crate::{arg_ref, arg_str, boundary, check_out, write_out, FfiError, FfiResult, MmsbStatus};
use mmsb::runtime::state::Config;

/// What a state handle of a replicated state keeps alive besides the state.
pub(crate) enum Replica {
    #[cfg(feature = "replication")]
    Primary(Arc<mmsb_replica::Primary>),
    #[cfg(feature = "replication")]
    Follower(parking_lot::Mutex<Option<Box<mmsb_replica::Follower>>>),
}

/// A follower's lag (`mmsb_replica_lag`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MmsbReplicaLag {
    /// The follower's LSN.
    pub applied_lsn: u64,
    /// The stream's last LSN when last looked at.
    pub stream_lsn: u64,
    /// `stream_lsn - applied_lsn`.
    pub lsn_behind: u64,
    /// Seconds since the last applied message was published, when messages are pending.
    pub seconds_behind: f64,
    /// The stream's current term.
    pub term: u64,
}

#[cfg(not(feature = "replication"))]
fn unsupported<T>() -> FfiResult<T> {
    Err(FfiError::with_code(
        mmsb::ErrorCode::Unsupported,
        "replication: this library was built without the `replication` feature",
    ))
}

/// Opens the state of `cfg` as a primary replicating to `cfg`'s target (the state handle
/// keeps the primary).
pub(crate) fn open_primary(config: Config, url: &str, stream: &str) -> FfiResult<MmsbState> {
    #[cfg(feature = "replication")]
    {
        let p = mmsb_replica::Primary::open(mmsb_replica::Target::new(url, stream), config)?;
        Ok(MmsbState { state: p.state().clone(), replica: Some(Replica::Primary(Arc::new(p))) })
    }
    #[cfg(not(feature = "replication"))]
    {
        let _ = (config, url, stream);
        unsupported()
    }
}

/// Sets the replication target: `mmsb_state_open` then opens the state as the primary of
/// the JetStream stream `stream` (created if missing, 3 replicas) at the NATS servers `url`
/// (comma-separated). Both are UTF-8 given as pointer + length. Use durability 3
/// (replicated) for writes that return once JetStream acknowledged them.
///
/// # Safety
/// `cfg` a live config; `url`/`stream` valid for their lengths.
#[no_mangle]
pub unsafe extern "C" fn mmsb_config_set_replication(
    cfg: *mut MmsbConfig,
    url: *const c_char,
    url_len: usize,
    stream: *const c_char,
    stream_len: usize,
) -> MmsbStatus {
    boundary(|| {
        // SAFETY: forwarded contract.
        let (url, stream) = unsafe { (arg_str(url, url_len, "url")?, arg_str(stream, stream_len, "stream")?) };
        // SAFETY: live per contract; the caller does not share a config between threads.
        let cfg = unsafe { cfg.as_mut() }.ok_or_else(|| FfiError::null("config"))?;
        cfg.replicate = Some((url.to_string(), stream.to_string()));
        Ok(())
    })
}

/// Opens a read-only follower of the stream `stream` at `url` (see
/// `mmsb_config_set_replication`): it applies the stream in the background; writes fail with
/// `MMSB_STATUS_CODE_READ_ONLY`. `dir` (may be NULL with `dir_len` 0) keeps its durable position.
///
/// # Safety
/// Strings valid for their lengths; `out` valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn mmsb_follow(
    url: *const c_char,
    url_len: usize,
    stream: *const c_char,
    stream_len: usize,
    dir: *const c_char,
    dir_len: usize,
    out: *mut *mut MmsbState,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: forwarded contract.
        let (url, stream, dir) = unsafe {
            (arg_str(url, url_len, "url")?, arg_str(stream, stream_len, "stream")?, arg_str(dir, dir_len, "dir")?)
        };
        #[cfg(feature = "replication")]
        let h = {
            let opts = mmsb_replica::FollowOptions { dir: (!dir.is_empty()).then(|| dir.into()), ..Default::default() };
            let f = mmsb_replica::Follower::follow(mmsb_replica::Target::new(url, stream), opts)?;
            MmsbState {
                state: f.state().clone(),
                replica: Some(Replica::Follower(parking_lot::Mutex::new(Some(Box::new(f))))),
            }
        };
        #[cfg(not(feature = "replication"))]
        let h: MmsbState = {
            let _ = (url, stream, dir);
            unsupported()?
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, crate::new_handle(h), "out") }
    })
}

/// Promotes the follower `st` to primary (see `docs/replication.md`): fences the old primary,
/// then opens a writable state per `cfg` (NULL: in memory, durability replicated) that
/// publishes to the stream, returned in `out`. `st` stops following; free it.
///
/// # Safety
/// `st` a live state handle; `cfg` NULL or a live config; `out` valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn mmsb_promote(
    st: *const MmsbState,
    cfg: *const MmsbConfig,
    out: *mut *mut MmsbState,
) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: live per contract.
        let h = unsafe { arg_ref(st, "state") }?;
        let config = if cfg.is_null() {
            Config { durability: mmsb::Durability::Replicated, ..Config::default() }
        } else {
            // SAFETY: non-NULL, live per contract.
            unsafe { arg_ref(cfg, "config") }?.config.clone()
        };
        #[cfg(feature = "replication")]
        let p = {
            let Some(Replica::Follower(f)) = &h.replica else {
                return Err(FfiError::invalid("promote: the state is not a follower"));
            };
            let f = f.lock().take().ok_or_else(|| FfiError::invalid("promote: the follower was promoted already"))?;
            let p = (*f).promote(config)?;
            MmsbState { state: p.state().clone(), replica: Some(Replica::Primary(Arc::new(p))) }
        };
        #[cfg(not(feature = "replication"))]
        let p: MmsbState = {
            let _ = (h, config);
            unsupported()?
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, crate::new_handle(p), "out") }
    })
}

/// A follower's lag; for a primary, `applied_lsn` = `stream_lsn` = the acknowledged LSN.
/// `MMSB_STATUS_CODE_INVALID_ARGUMENT` for a state that does not replicate.
///
/// # Safety
/// `st` a live state handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn mmsb_replica_lag(st: *const MmsbState, out: *mut MmsbReplicaLag) -> MmsbStatus {
    boundary(|| {
        check_out(out, "out")?;
        // SAFETY: live per contract.
        let h = unsafe { arg_ref(st, "state") }?;
        #[cfg(feature = "replication")]
        let lag = match &h.replica {
            Some(Replica::Follower(f)) => {
                let g = f.lock();
                let f = g.as_ref().ok_or_else(|| FfiError::invalid("the follower was promoted"))?;
                f.check()?;
                let l = f.lag();
                MmsbReplicaLag {
                    applied_lsn: l.applied_lsn,
                    stream_lsn: l.stream_lsn,
                    lsn_behind: l.lsn_behind,
                    seconds_behind: l.seconds_behind,
                    term: l.term,
                }
            }
            Some(Replica::Primary(p)) => {
                let s = p.stats();
                MmsbReplicaLag {
                    applied_lsn: s.acked_lsn,
                    stream_lsn: s.acked_lsn,
                    lsn_behind: 0,
                    seconds_behind: 0.0,
                    term: s.term,
                }
            }
            None => return Err(FfiError::invalid("the state does not replicate")),
        };
        #[cfg(not(feature = "replication"))]
        let lag: MmsbReplicaLag = {
            let _ = h;
            unsupported()?
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, lag, "out") }
    })
}
