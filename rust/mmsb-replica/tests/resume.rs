//! A primary that wrote while the stream had no quorum, checkpointed and compacted its local
//! log, and was restarted: the records the stream never acknowledged are still in its log as
//! logged (compaction keeps everything past the acknowledged LSN), so it publishes them at open.
//! Its own binary, so its own cluster: it kills two of the three nodes.

mod common;

use std::time::Duration;

use mmsb::{Config, Durability, Location, PageMeta};
use mmsb_replica::{FollowOptions, Follower, Primary, Target};

#[test]
fn a_primary_resumes_publishing_records_it_compacted_locally() {
    let Some(c) = common::cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let t = Target::new(&c.urls, common::stream_name("resume"));
    let cfg = Config { dir: Some(dir.path().join("p")), durability: Durability::GroupCommit, ..Config::default() };
    let p = Primary::open(t.clone(), cfg.clone()).unwrap();
    let s = p.state().clone();
    let a = s.create_page(4096, Location::Cpu, PageMeta::default()).unwrap();
    for i in 0..10u8 {
        s.update_page_at(a, u64::from(i) * 8, &[i + 1; 8], None).unwrap();
    }
    p.sync().unwrap();
    // No quorum: what follows is logged (and fsynced) locally, never acknowledged.
    c.kill("n2");
    c.kill("n3");
    for i in 0..50u8 {
        s.update_page_at(a, 100 + u64::from(i), &[i | 0x80], None).unwrap();
    }
    let lsn = s.lsn();
    assert!(p.stats().acked_lsn < lsn, "{:?}", p.stats());
    for _ in 0..3 {
        s.checkpoint().unwrap();
        s.compact_log().unwrap();
    }
    let expected = s.read_page(a).unwrap();
    drop(s);
    // Waits for the acknowledgements in vain (30 s), then gives up.
    assert!(p.close().is_err());
    drop(p);
    c.restart("n2");
    c.restart("n3");

    let p = Primary::open(t.clone(), cfg).unwrap();
    assert_eq!(p.state().lsn(), lsn);
    assert_eq!(p.stats().acked_lsn, lsn, "the records the stream lacked were published at open");
    let f = Follower::follow(t, FollowOptions::default()).unwrap();
    assert!(f.wait_for(lsn, Duration::from_secs(30)).unwrap());
    assert_eq!(f.state().read_page(a).unwrap(), expected);
}
