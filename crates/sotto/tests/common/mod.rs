//! Helpers shared by the tests that drive the real `sotto` binary.

#![allow(dead_code, clippy::expect_used)]

use std::process::{Command, Output};

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
