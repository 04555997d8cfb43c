//! The TEE registration flow with the real binary: `sotto demo tee` runs a
//! center and three node processes over mutual TLS on loopback and fails
//! unless identical code is admitted, a different binary is refused, keys
//! are synced and a revoked node is refused.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::ok;

#[test]
fn registration_flow_through_processes() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out = ok(&[&"demo", &"tee", &"--dir", &work]);
    for needle in [
        "node-1 and node-2 (this binary) admitted",
        "node-3 (a different binary) refused: runs different code",
        "both members hold group key v1",
        "node-1's watch was notified",
        "group key rotated to v2",
        "node-2's request refused: revoked",
        "node-2 and node-1 mutually authenticated",
        "node-2 can no longer authenticate to node-1",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // The center's state survives: its database is in its home.
    assert!(work.join("center/tee-registry.redb").exists());
}
