//! The replication functions of the C ABI (issue 22). Without the cargo feature `replication`
//! they fail with UNSUPPORTED; with it (`cargo test -p mmsb-ffi --features replication --test
//! replication_abi`, run by scripts/test.sh), a primary, a follower, the lag, promotion and
//! the fenced old primary through the C functions, on a 3-node loopback cluster.

// Helpers and imports the feature's test uses are idle in the build without it.
#![cfg_attr(not(feature = "replication"), allow(unused_imports, dead_code))]

use std::ptr;

use mmsb_ffi::page::{mmsb_page_create, mmsb_page_read, mmsb_page_update};
use mmsb_ffi::replica::{mmsb_config_set_replication, mmsb_follow, mmsb_promote, mmsb_replica_lag, MmsbReplicaLag};
use mmsb_ffi::state::{
    mmsb_config_free, mmsb_config_new, mmsb_config_set_durability, mmsb_state_free, mmsb_state_lsn, mmsb_state_open,
    MmsbConfig, MmsbState,
};
use mmsb_ffi::MmsbStatusCode as S;

fn new_config() -> *mut MmsbConfig {
    let mut cfg = ptr::null_mut();
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { mmsb_config_new(&mut cfg) }, 0);
    cfg
}

fn open(cfg: *const MmsbConfig) -> Result<*mut MmsbState, u32> {
    let mut st = ptr::null_mut();
    // SAFETY: a live config (or NULL) and a valid out pointer.
    match unsafe { mmsb_state_open(cfg, &mut st) } {
        0 => Ok(st),
        e => Err(e),
    }
}

fn lsn(st: *const MmsbState) -> u64 {
    let mut l = 0;
    // SAFETY: a live handle and a valid out pointer.
    assert_eq!(unsafe { mmsb_state_lsn(st, &mut l) }, 0);
    l
}

#[cfg(not(feature = "replication"))]
#[test]
fn without_the_feature_every_replication_call_is_unsupported() {
    let cfg = new_config();
    let (url, stream) = ("nats://127.0.0.1:1", "s");
    // SAFETY: live config, strings valid for their lengths.
    let r = unsafe { mmsb_config_set_replication(cfg, url.as_ptr().cast(), url.len(), stream.as_ptr().cast(), 1) };
    assert_eq!(r, 0, "the target is only recorded");
    assert_eq!(open(cfg).unwrap_err(), S::Unsupported as u32);
    // SAFETY: frees the live config once.
    unsafe { mmsb_config_free(cfg) };
    let mut out = ptr::null_mut();
    // SAFETY: strings valid for their lengths, NULL dir with length 0, valid out pointer.
    let r = unsafe { mmsb_follow(url.as_ptr().cast(), url.len(), stream.as_ptr().cast(), 1, ptr::null(), 0, &mut out) };
    assert_eq!(r, S::Unsupported as u32);
    assert!(out.is_null());
    let plain = open(ptr::null()).unwrap();
    let mut lag = MmsbReplicaLag::default();
    // SAFETY: a live handle and a valid out pointer.
    assert_eq!(unsafe { mmsb_replica_lag(plain, &mut lag) }, S::Unsupported as u32);
    // SAFETY: as above; NULL config is the default.
    assert_eq!(unsafe { mmsb_promote(plain, ptr::null(), &mut out) }, S::Unsupported as u32);
    // SAFETY: frees the live handle once.
    unsafe { mmsb_state_free(plain) };
}

#[cfg(feature = "replication")]
#[path = "../../mmsb-replica/tests/common/mod.rs"]
mod common;

#[cfg(feature = "replication")]
#[test]
fn primary_follower_promotion_and_fencing_through_the_c_abi() {
    let Some(c) = common::cluster() else { return };
    let stream = common::stream_name("capi");
    let url = c.urls.clone();
    let cfg = new_config();
    // SAFETY: live config; strings valid for their lengths; durability 3 is Replicated.
    unsafe {
        assert_eq!(
            mmsb_config_set_replication(cfg, url.as_ptr().cast(), url.len(), stream.as_ptr().cast(), stream.len()),
            0
        );
        assert_eq!(mmsb_config_set_durability(cfg, 3), 0);
    }
    let primary = open(cfg).unwrap();
    // SAFETY: frees the live config once.
    unsafe { mmsb_config_free(cfg) };
    let mut page = 0;
    // SAFETY: live handle, no name, valid out pointer.
    assert_eq!(unsafe { mmsb_page_create(primary, 64, 0, ptr::null(), 0, &mut page) }, 0);
    for i in 0..10u8 {
        let mut l = 0;
        let bytes = [i + 1; 4];
        // SAFETY: live handle, bytes valid for their length, no expected epoch.
        let r = unsafe { mmsb_page_update(primary, page, u64::from(i), bytes.as_ptr(), 4, u64::MAX, &mut l) };
        assert_eq!(r, 0);
    }
    let mut lag = MmsbReplicaLag::default();
    // SAFETY: live handle, valid out pointer.
    assert_eq!(unsafe { mmsb_replica_lag(primary, &mut lag) }, 0);
    assert_eq!((lag.applied_lsn, lag.term), (lsn(primary), 1), "every Replicated write is acknowledged");

    let mut follower = ptr::null_mut();
    // SAFETY: strings valid for their lengths, no dir, valid out pointer.
    let r = unsafe {
        mmsb_follow(url.as_ptr().cast(), url.len(), stream.as_ptr().cast(), stream.len(), ptr::null(), 0, &mut follower)
    };
    assert_eq!(r, 0);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lsn(follower) < lsn(primary) && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let read = |st: *const MmsbState| {
        let mut b = [0u8; 64];
        // SAFETY: live handle, buffer valid for its length.
        assert_eq!(unsafe { mmsb_page_read(st, page, 0, b.as_mut_ptr(), 64) }, 0);
        b
    };
    assert_eq!(lsn(follower), lsn(primary));
    assert_eq!(read(follower), read(primary));
    // SAFETY: live handle, valid out pointer.
    assert_eq!(unsafe { mmsb_replica_lag(follower, &mut lag) }, 0);
    assert_eq!((lag.applied_lsn, lag.lsn_behind), (lsn(primary), 0));
    let mut l = 0;
    // SAFETY: as above.
    let r = unsafe { mmsb_page_update(follower, page, 0, [9u8].as_ptr(), 1, u64::MAX, &mut l) };
    assert_eq!(r, S::ReadOnly as u32);

    let mut promoted = ptr::null_mut();
    // SAFETY: live follower handle, NULL config (in memory, Replicated), valid out pointer.
    assert_eq!(unsafe { mmsb_promote(follower, ptr::null(), &mut promoted) }, 0);
    // SAFETY: the follower was promoted: a second promotion is refused, not a crash.
    assert_eq!(unsafe { mmsb_promote(follower, ptr::null(), &mut promoted) }, S::InvalidArgument as u32);
    // SAFETY: live handles and valid out pointers.
    unsafe {
        assert_eq!(mmsb_page_update(promoted, page, 0, [7u8].as_ptr(), 1, u64::MAX, &mut l), 0);
        assert_eq!(mmsb_page_update(primary, page, 0, [8u8].as_ptr(), 1, u64::MAX, &mut l), S::Fenced as u32);
        assert_eq!(mmsb_replica_lag(promoted, &mut lag), 0);
    }
    assert_eq!(lag.term, 2);
    // SAFETY: each live handle freed once.
    unsafe {
        mmsb_state_free(primary);
        mmsb_state_free(follower);
        mmsb_state_free(promoted);
    }
}
