//! The kill -9 harness of `crash_loop.rs` and `tlog_kill.rs`: the test binary re-executes itself
//! as a child writer, reads the child's acknowledgement lines on a thread, SIGKILLs it after a
//! random delay, and hands the parent what was acknowledged so it can reopen the directory and
//! compare with its reference model.
#![allow(clippy::cast_possible_truncation)] // test data and sizes: truncation is intended or impossible here

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use mmsb::{MMSBState, PageId};

/// The number of kill cycles: `MMSB_KILL_CYCLES`, or `default`.
pub fn cycles(default: u64) -> u64 {
    std::env::var("MMSB_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A xorshift generator for kill delays, seeded from the clock (tests print the seed).
pub struct Rng(pub u64);

impl Rng {
    pub fn from_clock() -> Rng {
        Rng(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A running child writer and the thread that folds its stdout into an `A`.
pub struct Child<A> {
    child: std::process::Child,
    reader: JoinHandle<A>,
}

/// Runs the `#[ignore]`d test `test` of this binary as a child with `env` set, calling
/// `on_line(&mut acks, fields)` with the whitespace-separated fields of each stdout line (libtest
/// may print "test NAME ... " in front of the first one).
pub fn spawn<A, F>(test: &str, env: &[(&str, &OsStr)], mut on_line: F) -> Child<A>
where
    A: Default + Send + 'static,
    F: FnMut(&mut A, &[&str]) + Send + 'static,
{
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--ignored", "--test-threads", "1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut acks = A::default();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let fields: Vec<&str> = line.split_whitespace().collect();
            on_line(&mut acks, &fields);
        }
        acks
    });
    Child { child, reader }
}

impl<A> Child<A> {
    /// Sleeps `delay`, SIGKILLs the child, and returns everything it acknowledged.
    pub fn kill_after(mut self, delay: Duration) -> A {
        std::thread::sleep(delay);
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.join().unwrap()
    }
}

/// Child side: the state directory the parent passed in `var` (panics when run directly).
pub fn child_dir(var: &str, parent_test: &str) -> PathBuf {
    let Some(dir) = std::env::var_os(var) else {
        panic!("run by {parent_test} only");
    };
    PathBuf::from(dir)
}

/// Child side: prints `line` with one write and a flush, so a kill never leaves half a line
/// behind a whole one.
pub fn ack(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes()).unwrap();
    out.flush().unwrap();
}

/// The page named `name`, if the state has one.
pub fn page_named(s: &MMSBState, name: &str) -> Option<PageId> {
    s.page_ids().unwrap().into_iter().find(|&id| s.page_info(id).unwrap().name == name)
}
