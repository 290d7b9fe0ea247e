//! Primary, followers, checkpoints, promotion and bad streams against a 3-node loopback
//! cluster, in one process (the kill -9 tests with processes are in `processes.rs`).

mod common;

use std::time::Duration;

use mmsb::{Config, Durability, ErrorCode, Location, MMSBState, PageMeta};
use mmsb_replica::{FollowOptions, Follower, Primary, Target};

fn assert_same(a: &MMSBState, b: &MMSBState) {
    assert_eq!(a.lsn(), b.lsn());
    assert_eq!(a.page_ids().unwrap(), b.page_ids().unwrap());
    for id in a.page_ids().unwrap() {
        assert_eq!(a.read_page(id).unwrap(), b.read_page(id).unwrap(), "page {id}");
    }
}

fn replicated() -> Config {
    Config { durability: Durability::Replicated, ..Config::default() }
}

#[test]
fn a_follower_applies_what_the_primary_writes() {
    let Some(c) = common::cluster() else { return };
    let t = Target::new(&c.urls, common::stream_name("basic"));
    let p = Primary::open(t.clone(), replicated()).unwrap();
    let s = p.state();
    let a = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..50u8 {
        s.update_page_at(a, i as u64 * 7, &[i; 9], None).unwrap();
    }
    assert_eq!(p.stats().acked_lsn, s.lsn());
    let f = Follower::follow(t, FollowOptions::default()).unwrap();
    assert!(f.wait_for(s.lsn(), Duration::from_secs(20)).unwrap());
    assert_same(s, f.state());
    assert_eq!(f.state().update_page(a, b"x").unwrap_err().code(), ErrorCode::ReadOnly);
    f.check().unwrap();
}
