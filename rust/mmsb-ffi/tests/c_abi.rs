//! Compiles tests/c/abi_hostile.c against the committed header and the cdylib, runs it, and
//! requires every hostile call to come back as the expected status code.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cdylib() -> PathBuf {
    // Integration test binaries live in target/<profile>/deps; the cdylib one level up.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target profile dir");
    dir.join("libmmsb.so")
}

#[test]
fn hostile_c_caller_gets_status_codes_not_crashes() {
    let lib = cdylib();
    // `cargo test` links tests against the rlib only; build the cdylib the C program needs, every
    // time (a no-op when it is fresh): a cdylib left from older sources failed this test.
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "-p", "mmsb-cdylib", "--lib"]);
    if lib.parent().is_some_and(|d| d.ends_with("release")) {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo to build the cdylib");
    assert!(status.success(), "cargo build of the cdylib failed");
    assert!(lib.exists(), "{} not built", lib.display());
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("abi_hostile");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-pthread", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(crate_dir.join("tests/c/abi_hostile.c"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.parent().unwrap().display()))
        .status()
        .unwrap_or_else(|e| panic!("could not run the C compiler {cc:?}: {e}"));
    assert!(status.success(), "the C program (and so the header) must compile cleanly");
    // The reader checks need an empty directory for a state with file-backed pages.
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = Command::new(&out).arg(dir.path()).output().expect("run the C program");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(run.status.success(), "hostile C checks failed (exit {:?}):\n{stdout}", run.status);
    assert!(stdout.contains(" 0 failures"), "{stdout}");
    assert!(stdout.contains("reader checks done"), "the reader checks did not run:\n{stdout}");
}
