//! A 3-node NATS JetStream cluster on loopback for the tests (`scripts/nats-cluster.sh`), one
//! per test binary, stopped when the binary's last test drops it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

pub struct Cluster {
    pub urls: String,
    state_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nats-cluster.sh")
}

impl Cluster {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("bash").arg(script()).args(args).env("MMSB_NATS_STATE", &self.state_file).output().unwrap()
    }

    /// kill -9 one node (n1, n2, n3).
    pub fn kill(&self, node: &str) {
        let o = self.run(&["kill", node]);
        assert!(o.status.success(), "kill {node}: {}", String::from_utf8_lossy(&o.stderr));
    }

    pub fn restart(&self, node: &str) {
        let o = self.run(&["restart", node]);
        assert!(o.status.success(), "restart {node}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
    }
}

/// The shared cluster, or `None` (with a message) when nats-server cannot be installed.
pub fn cluster() -> Option<Arc<Cluster>> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut g = SHARED.lock().unwrap();
    if let Some(c) = g.upgrade() {
        return Some(c);
    }
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("cluster.state");
    let o = Command::new("bash").arg(script()).arg("start").env("MMSB_NATS_STATE", &state_file).output().unwrap();
    if o.status.code() == Some(2) {
        eprintln!(
            "SKIPPED: nats-server is not installed and could not be installed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    assert!(o.status.success(), "nats-cluster.sh start failed: {}", String::from_utf8_lossy(&o.stderr));
    let urls = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let c = Arc::new(Cluster { urls, state_file, _dir: dir });
    *g = Arc::downgrade(&c);
    Some(c)
}

/// A stream name no other test uses.
pub fn stream_name(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{test}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}
