//! Helpers shared by the tests that drive the real `sotto` binary.

#![allow(dead_code, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `sotto --quiet ARGS` with no `SOTTO_HOME`.
pub fn sotto(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.arg("--quiet");
    for a in args {
        c.arg(a);
    }
    c.env_remove("SOTTO_HOME").output().expect("run sotto")
}

/// Runs `sotto` and asserts success; returns standard output.
pub fn ok(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = sotto(args);
    assert!(
        out.status.success(),
        "sotto failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sotto` and asserts failure; returns standard error.
pub fn fails(args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = sotto(args);
    assert!(
        !out.status.success(),
        "sotto should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `sotto ARGS` that must exit by itself, and unsuccessfully, within
/// `limit` (a server refusing to start); returns standard error. A process
/// still running after `limit` is killed and the test fails.
pub fn fails_within(args: &[&dyn AsRef<std::ffi::OsStr>], limit: Duration) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.arg("--quiet");
    for a in args {
        c.arg(a);
    }
    let mut child = c
        .env_remove("SOTTO_HOME")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sotto");
    let mut stderr = child.stderr.take().expect("piped");
    let (done, exited) = std::sync::mpsc::channel();
    // Standard error ends when the process exits.
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        let _ = done.send(text);
    });
    let Ok(text) = exited.recv_timeout(limit) else {
        let _ = child.kill();
        panic!("sotto was still running after {} s", limit.as_secs());
    };
    let status = child.wait().expect("wait for sotto");
    assert!(!status.success(), "sotto should have failed: {text}");
    text
}
