//! Monitoring sees every layer: log appends and fsyncs, checkpoints, replay, propagation, and
//! budget violations arrive as events.

use mmsb::graph::{Command, CommandList, EdgeKind, Event, EventKind, OverflowPolicy};
use mmsb::monitoring::{Budget, Counter, Metric};
use mmsb::{Config, Durability, Location, MMSBState, PageMeta};

#[test]
fn every_layer_reports_to_the_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let s = MMSBState::open(Config {
        dir: Some(dir.path().to_path_buf()),
        durability: Durability::GroupCommit,
        ..Config::default()
    })
    .unwrap();
    let events = s.subscribe(64, OverflowPolicy::DropOldest, EventKind::MASK_ALL).unwrap();
    // Fires once, when the log first grows past 100 bytes.
    s.set_budget(Budget::LogBytes(Some(100)));
    let a = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    let b = s.create_page(64, Location::Cpu, PageMeta::default()).unwrap();
    s.add_dependency(a, b, EdgeKind::Data, CommandList::new().with(Command::Copy { src_off: 0, dst_off: 0, len: 64 }))
        .unwrap();
    s.update_page(a, b"payload").unwrap();
    s.propagate(&[a]).unwrap();
    let lsn = s.checkpoint().unwrap();
    s.replay_to(lsn).unwrap();

    let st = s.get_stats();
    assert!(st.histogram(Metric::LogAppend).count >= 5, "create×2, edge, update, propagated delta");
    assert!(st.histogram(Metric::Fsync).count >= 1, "group commit syncs");
    assert_eq!(st.histogram(Metric::Checkpoint).count, 1);
    assert_eq!(st.histogram(Metric::Replay).count, 1);
    assert_eq!(st.histogram(Metric::PropagationRound).count, 1);
    assert_eq!(st.counter(Counter::Checkpoints), 1);
    assert_eq!(st.counter(Counter::PropagationRounds), 1);
    assert!(st.counter(Counter::LogBytes) > 0);
    assert!(st.counter(Counter::BudgetViolations) >= 1);

    let got = events.drain();
    assert!(got.iter().any(|e| matches!(e, Event::Budget { .. })), "{got:?}");
    assert!(got.iter().any(|e| matches!(e, Event::Checkpoint { lsn: l } if *l == lsn)), "{got:?}");
    assert!(got.iter().any(|e| matches!(e, Event::PropagationDone { .. })), "{got:?}");
}
