//! The real `sotto` binary through every offline step, as two parties would
//! run it, including tampered, truncated, foreign and out-of-order files and
//! bad inputs.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

mod common;

use common::{fails, ok};

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Two pinned homes and two CSVs: a has ids 0..40 (id 25 twice, one empty
    /// key), b has ids 20..50 written in upper case.
    fn new() -> Self {
        let w = World {
            dir: tempfile::tempdir().expect("tmp"),
        };
        for name in ["a", "b"] {
            ok(&[&"init", &"--home", &w.p(name), &"--name", &name]);
            ok(&[
                &"identity",
                &"export",
                &"--home",
                &w.p(name),
                &"--out",
                &w.p(&format!("{name}.json")),
            ]);
        }
        ok(&[&"peer", &"add", &"--home", &w.p("a"), &w.p("b.json")]);
        ok(&[&"peer", &"add", &"--home", &w.p("b"), &w.p("a.json")]);
        let mut a = String::from("id,score\n");
        for i in 0..40 {
            a.push_str(&format!("user{i},{i}\n"));
        }
        a.push_str("user25,again\n,empty\n");
        let mut b = String::from("customer,flag\n");
        for i in 20..50 {
            b.push_str(&format!("USER{i},x\n"));
        }
        std::fs::write(w.p("a.csv"), a).unwrap();
        std::fs::write(w.p("b.csv"), b).unwrap();
        w
    }

    fn start(&self, extra: &[&str]) {
        let (home, input, out) = (self.p("a"), self.p("a.csv"), self.p("hello.psi"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"psi",
            &"offline",
            &"start",
            &"--home",
            &home,
            &"--peer",
            &"b",
            &"--input",
            &input,
            &"--id",
            &"id",
            &"--casefold",
            &"--batch-size",
            &"8",
            &"--out",
            &out,
            &"--force",
        ];
        for e in extra {
            args.push(e);
        }
        ok(&args);
    }

    fn accept(&self, extra: &[&str]) {
        let out = self.accept_command("hello.psi", "accept.psi", extra);
        assert!(
            out.status.success(),
            "accept failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// b's `accept` of `hello` (ids in `customer`, case folded), writing `out`.
    fn accept_command(&self, hello: &str, out: &str, extra: &[&str]) -> std::process::Output {
        let (home, hello, input, out) = (self.p("b"), self.p(hello), self.p("b.csv"), self.p(out));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"psi",
            &"offline",
            &"accept",
            &"--home",
            &home,
            &"--in",
            &hello,
            &"--input",
            &input,
            &"--id",
            &"customer",
            &"--casefold",
            &"--out",
            &out,
            &"--force",
        ];
        for e in extra {
            args.push(e);
        }
        common::sotto(&args)
    }

    fn send(&self) {
        ok(&[
            &"psi",
            &"offline",
            &"send",
            &"--home",
            &self.p("a"),
            &"--in",
            &self.p("accept.psi"),
            &"--out",
            &self.p("r1.psi"),
            &"--force",
        ]);
    }

    fn respond(&self) {
        ok(&[
            &"psi",
            &"offline",
            &"respond",
            &"--home",
            &self.p("b"),
            &"--in",
            &self.p("r1.psi"),
            &"--out",
            &self.p("r2.psi"),
            &"--force",
        ]);
    }

    /// Runs the provider's `respond` on `file`, expecting it to be refused;
    /// returns the error text.
    fn respond_fails(&self, file: &str) -> String {
        fails(&[
            &"psi",
            &"offline",
            &"respond",
            &"--home",
            &self.p("b"),
            &"--in",
            &self.p(file),
            &"--out",
            &self.p("r2.psi"),
            &"--force",
        ])
    }

    /// Session state files left in a home (the directory of accepted
    /// session ids is kept on purpose).
    fn session_files(&self, home: &str) -> usize {
        std::fs::read_dir(self.p(home).join("sessions"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_file())
            .count()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn full_offline_session_reveal_both_with_every_output() {
    let w = World::new();
    w.start(&["--reveal", "both"]);
    w.accept(&[]);
    w.send();
    w.respond();
    let out = ok(&[
        &"psi",
        &"offline",
        &"finish",
        &"--home",
        &w.p("a"),
        &"--in",
        &w.p("r2.psi"),
        &"--output",
        &w.p("a-out.csv"),
        &"--report",
        &w.p("a-report.json"),
        &"--close",
        &w.p("close.psi"),
    ]);
    assert!(
        out.contains("20 shared keys, 21 of your rows matched"),
        "{out}"
    );
    let rows = lines(&w.p("a-out.csv"));
    assert_eq!(rows[0], "id,score");
    assert_eq!(rows.len(), 22);
    assert_eq!(rows[1], "user20,20");
    assert_eq!(rows[21], "user25,again");
    ok(&[
        &"psi",
        &"offline",
        &"finish",
        &"--home",
        &w.p("b"),
        &"--in",
        &w.p("close.psi"),
        &"--output",
        &w.p("b-out.csv"),
        &"--flag-column",
        &"shared",
        &"--report",
        &w.p("b-report.json"),
    ]);
    let flagged = lines(&w.p("b-out.csv"));
    assert_eq!(flagged.len(), 31);
    assert_eq!(flagged.iter().filter(|l| l.ends_with(",true")).count(), 20);
    assert_eq!(flagged[1], "USER20,x,true");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.p("a-report.json")).unwrap()).unwrap();
    assert_eq!(report["intersection"]["distinct_keys"], 20);
    assert_eq!(report["input"]["duplicate_rows"], 1);
    assert_eq!(report["input"]["empty_key_rows"], 1);
    assert_eq!(report["peer_distinct_keys"], 30);
    assert!(report["signatures"]["verified"].as_u64().unwrap() >= 60);
    assert!(
        report["receipts"]["provider"].is_string() && report["receipts"]["requester"].is_string()
    );
    let b_report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.p("b-report.json")).unwrap()).unwrap();
    assert_eq!(report["transcript_hash"], b_report["transcript_hash"]);
    assert_eq!(
        w.session_files("a"),
        0,
        "requester state removed after finish"
    );
    assert_eq!(
        w.session_files("b"),
        0,
        "provider state removed after finish"
    );
}

#[test]
fn keys_only_and_size_only_and_unsigned_modes_in_both_groups() {
    let w = World::new();
    w.start(&["--mode", "digest", "--group", "ristretto255"]);
    w.accept(&[]);
    w.send();
    w.respond();
    ok(&[
        &"psi",
        &"offline",
        &"finish",
        &"--home",
        &w.p("a"),
        &"--in",
        &w.p("r2.psi"),
        &"--output",
        &w.p("keys.csv"),
        &"--keys-only",
    ]);
    let keys = lines(&w.p("keys.csv"));
    assert_eq!(keys.len(), 21);
    assert_eq!(keys[1], "user20");

    let w = World::new();
    w.start(&["--size-only", "--mode", "none", "--group", "x25519"]);
    let refused = fails(&[
        &"psi",
        &"offline",
        &"accept",
        &"--home",
        &w.p("b"),
        &"--in",
        &w.p("hello.psi"),
        &"--input",
        &w.p("b.csv"),
        &"--id",
        &"customer",
        &"--casefold",
        &"--out",
        &w.p("accept.psi"),
    ]);
    assert!(
        refused.contains("signing mode none is not allowed"),
        "{refused}"
    );
    w.accept(&["--allow-mode", "none"]);
    w.send();
    w.respond();
    let out = ok(&[
        &"psi",
        &"offline",
        &"finish",
        &"--home",
        &w.p("a"),
        &"--in",
        &w.p("r2.psi"),
    ]);
    assert!(out.contains("20 shared keys (size only)"), "{out}");
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

/// Offset of element `i` of the first batch of a round-1 file in element mode:
/// 59-byte file header, batch count, 100-byte batch header, identity signature
/// with its flag, digest-signature flag, element count.
fn first_batch_element(i: usize) -> usize {
    59 + 4 + 100 + 65 + 1 + 4 + 32 * i
}

#[test]
fn tampered_element_in_round1_is_named_and_nothing_is_written() {
    let w = World::new();
    w.start(&[]);
    w.accept(&[]);
    w.send();
    flip(&w.p("r1.psi"), first_batch_element(3) + 5);
    let err = w.respond_fails("r1.psi");
    assert!(
        err.contains("r1.psi") && err.contains("round 1") && err.contains("batch 0"),
        "{err}"
    );
    assert!(
        err.contains("element signatures fail at positions 3"),
        "{err}"
    );
    assert!(
        !w.p("r2.psi").exists(),
        "no output after a failed verification"
    );
    assert!(!std::fs::read_dir(w.dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".tmp")));
}

#[test]
fn truncated_and_foreign_and_out_of_order_files_are_refused() {
    let w = World::new();
    w.start(&[]);
    w.accept(&[]);
    let err = fails(&[
        &"psi",
        &"offline",
        &"send",
        &"--home",
        &w.p("a"),
        &"--in",
        &w.p("hello.psi"),
        &"--out",
        &w.p("r1.psi"),
    ]);
    assert!(
        err.contains("is a hello file") && err.contains("needs an accept file"),
        "{err}"
    );
    w.send();
    let bytes = std::fs::read(w.p("r1.psi")).unwrap();
    std::fs::write(w.p("short.psi"), &bytes[..bytes.len() - 10]).unwrap();
    let err = w.respond_fails("short.psi");
    assert!(
        err.contains("short.psi") && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(w.p("junk.psi"), b"hello, world").unwrap();
    let err = w.respond_fails("junk.psi");
    assert!(
        err.contains("not a sotto PSI file") || err.contains("truncated"),
        "{err}"
    );

    // A second session between the same parties; its round 1 relabelled as
    // the first session's is refused as a replay from another session.
    w.start(&[]);
    w.accept(&[]);
    w.send();
    let second = std::fs::read(w.p("r1.psi")).unwrap();
    let first_sid = &bytes[11..27];
    let mut relabelled = second.clone();
    relabelled[11..27].copy_from_slice(first_sid);
    std::fs::write(w.p("replay.psi"), relabelled).unwrap();
    let err = w.respond_fails("replay.psi");
    assert!(
        err.contains("belongs to session") && err.contains("replayed from another session"),
        "{err}"
    );
}

#[test]
fn hello_from_an_unknown_peer_is_refused() {
    let w = World::new();
    ok(&[&"init", &"--home", &w.p("mallory"), &"--name", &"a"]);
    ok(&[
        &"identity",
        &"export",
        &"--home",
        &w.p("mallory"),
        &"--out",
        &w.p("m.json"),
    ]);
    ok(&[&"peer", &"add", &"--home", &w.p("mallory"), &w.p("b.json")]);
    ok(&[
        &"psi",
        &"offline",
        &"start",
        &"--home",
        &w.p("mallory"),
        &"--peer",
        &"b",
        &"--input",
        &w.p("a.csv"),
        &"--id",
        &"id",
        &"--out",
        &w.p("hello.psi"),
    ]);
    let err = fails(&[
        &"psi",
        &"offline",
        &"accept",
        &"--home",
        &w.p("b"),
        &"--in",
        &w.p("hello.psi"),
        &"--input",
        &w.p("b.csv"),
        &"--id",
        &"customer",
        &"--out",
        &w.p("accept.psi"),
    ]);
    assert!(err.contains("not a pinned peer"), "{err}");
    let err = fails(&[&"peer", &"add", &"--home", &w.p("b"), &w.p("m.json")]);
    assert!(
        err.contains("different profile is already pinned as \"a\""),
        "{err}"
    );
}

#[test]
fn bad_inputs_name_the_place_and_write_nothing() {
    let w = World::new();
    std::fs::write(w.p("ragged.csv"), "id,v\nx,1\ny\n").unwrap();
    std::fs::write(w.p("utf8.csv"), b"id,v\nx,1\n\xc3\x28,2\n").unwrap();
    let start = |input: &Path, id: &str| {
        fails(&[
            &"psi",
            &"offline",
            &"start",
            &"--home",
            &w.p("a"),
            &"--peer",
            &"b",
            &"--input",
            &input,
            &"--id",
            &id,
            &"--out",
            &w.p("h.psi"),
        ])
    };
    let err = start(&w.p("ragged.csv"), "id");
    assert!(
        err.contains("ragged.csv:3") && err.contains("1 fields but the header has 2"),
        "{err}"
    );
    let err = start(&w.p("utf8.csv"), "id");
    assert!(
        err.contains("utf8.csv:3:1") && err.contains("invalid UTF-8"),
        "{err}"
    );
    let err = start(&w.p("a.csv"), "email");
    assert!(
        err.contains("a.csv:1: no column named \"email\"") && err.contains("id, score"),
        "{err}"
    );
    let err = start(&w.p("missing.csv"), "id");
    assert!(err.contains("missing.csv"), "{err}");
    assert!(!w.p("h.psi").exists());
    assert_eq!(w.session_files("a"), 0);
}

#[test]
fn changed_input_between_steps_is_refused() {
    let w = World::new();
    w.start(&[]);
    w.accept(&[]);
    std::fs::write(w.p("a.csv"), "id,score\nsomeone,1\n").unwrap();
    let err = fails(&[
        &"psi",
        &"offline",
        &"send",
        &"--home",
        &w.p("a"),
        &"--in",
        &w.p("accept.psi"),
        &"--out",
        &w.p("r1.psi"),
    ]);
    assert!(
        err.contains("a.csv changed since this session read it"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn init_writes_private_keys_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new();
    for file in ["identity.key", "bls.keys"] {
        let mode = std::fs::metadata(w.p("a").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let err = fails(&[&"init", &"--home", &w.p("a"), &"--name", &"a"]);
    assert!(err.contains("already holds a node home"), "{err}");
    let listed = ok(&[&"peer", &"list", &"--home", &w.p("a")]);
    assert!(listed.starts_with("b\t"), "{listed}");
    let mut profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.p("b.json")).unwrap()).unwrap();
    profile["name"] = "c".into();
    std::fs::write(w.p("c.json"), serde_json::to_vec(&profile).unwrap()).unwrap();
    let err = fails(&[&"peer", &"add", &"--home", &w.p("a"), &w.p("c.json")]);
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn demo_passes_its_own_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&[
        &"demo",
        &"psi",
        &"--rows",
        &"400",
        &"--dir",
        &dir.path().join("demo"),
    ]);
    assert!(out.contains("CHECK PASSED"), "{out}");
}

/// `accept` of `hello` by b, expected to be refused; its standard error.
fn accept_fails(w: &World, hello: &str, out: &str, extra: &[&str]) -> String {
    let result = w.accept_command(hello, out, extra);
    assert!(!result.status.success(), "accept should have been refused");
    String::from_utf8_lossy(&result.stderr).into_owned()
}

/// The requester's `finish` with `extra` outputs; the command's output.
fn finish_a(w: &World, extra: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    let (home, input) = (w.p("a"), w.p("r2.psi"));
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"psi", &"offline", &"finish", &"--home", &home, &"--in", &input,
    ];
    args.extend_from_slice(extra);
    common::sotto(&args)
}

#[test]
fn key_parameters_that_differ_are_refused_before_any_element() {
    let w = World::new();
    w.start(&["--shard", "1/4", "--shard-salt", "s"]);
    let err = accept_fails(&w, "hello.psi", "accept.psi", &[]);
    assert!(
        err.contains("the peer's shard (--shard) is 1/4 but ours is none (not sharded)"),
        "{err}"
    );
    let err = accept_fails(&w, "hello.psi", "accept.psi", &["--shard", "1/4"]);
    assert!(
        err.contains("the peer's shard salt (--shard-salt)"),
        "{err}"
    );
    assert!(!w.p("accept.psi").exists());
    w.start(&["--nfkc"]);
    let err = accept_fails(&w, "hello.psi", "accept.psi", &[]);
    assert!(
        err.contains("the peer's NFKC normalization (--nfkc) is on but ours is off"),
        "{err}"
    );
    let hello = w.p("hello.psi");
    ok(&[
        &"psi",
        &"offline",
        &"start",
        &"--home",
        &w.p("a"),
        &"--peer",
        &"b",
        &"--input",
        &w.p("a.csv"),
        &"--id",
        &"id,score",
        &"--casefold",
        &"--out",
        &hello,
        &"--force",
    ]);
    let err = accept_fails(&w, "hello.psi", "accept.psi", &[]);
    assert!(
        err.contains("the peer's number of key columns is 2 but ours is 1"),
        "{err}"
    );
    assert!(!w.p("accept.psi").exists());
}

#[test]
fn a_replayed_or_repeated_hello_is_refused() {
    let w = World::new();
    w.start(&[]);
    std::fs::copy(w.p("hello.psi"), w.p("old-hello.psi")).unwrap();
    w.accept(&[]);
    let err = accept_fails(&w, "hello.psi", "accept-2.psi", &[]);
    assert!(
        err.contains("was already accepted by this node") && err.contains("replay"),
        "{err}"
    );
    assert!(!w.p("accept-2.psi").exists());
    w.send();
    w.respond();
    let out = finish_a(&w, &[&"--output", &w.p("out.csv")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Last week's hello, replayed after the session finished.
    let err = accept_fails(&w, "old-hello.psi", "accept-3.psi", &[]);
    assert!(err.contains("was already accepted by this node"), "{err}");
    assert!(!w.p("accept-3.psi").exists());
}

#[test]
fn outputs_never_replace_inputs_keys_or_existing_files() {
    let w = World::new();
    w.start(&[]);
    w.accept(&[]);
    w.send();
    w.respond();
    let input_before = std::fs::read(w.p("a.csv")).unwrap();
    let (csv, received, in_home, existing) = (
        w.p("a.csv"),
        w.p("r2.psi"),
        w.p("a").join("out.csv"),
        w.p("hello.psi"),
    );
    let cases: [(Vec<&dyn AsRef<std::ffi::OsStr>>, &str); 4] = [
        (
            vec![&"--output", &csv, &"--force"],
            "is also an input of this command",
        ),
        (
            vec![&"--output", &received, &"--force"],
            "is also an input of this command",
        ),
        (vec![&"--output", &in_home, &"--force"], "lies inside"),
        (vec![&"--report", &existing], "already exists"),
    ];
    for (extra, expected) in &cases {
        let out = finish_a(&w, extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(expected), "{err}");
    }
    assert_eq!(std::fs::read(w.p("a.csv")).unwrap(), input_before);
    assert_eq!(w.session_files("a"), 1, "the session can still finish");
    // The profile export cannot replace the node's identity key, even forced.
    let key_before = std::fs::read(w.p("a/identity.key")).unwrap();
    let err = fails(&[
        &"identity",
        &"export",
        &"--home",
        &w.p("a"),
        &"--out",
        &w.p("a/identity.key"),
        &"--force",
    ]);
    assert!(err.contains("lies inside"), "{err}");
    assert_eq!(std::fs::read(w.p("a/identity.key")).unwrap(), key_before);
    let err = fails(&[
        &"identity",
        &"export",
        &"--home",
        &w.p("a"),
        &"--out",
        &w.p("a.json"),
    ]);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    ok(&[
        &"identity",
        &"export",
        &"--home",
        &w.p("a"),
        &"--out",
        &w.p("a.json"),
        &"--force",
    ]);
}

#[test]
fn a_failing_finish_leaves_no_file_and_can_be_run_again() {
    let w = World::new();
    w.start(&["--reveal", "both"]);
    w.accept(&[]);
    w.send();
    w.respond();
    let before = std::fs::read_dir(w.dir.path()).unwrap().count();
    let out = finish_a(
        &w,
        &[
            &"--output",
            &w.p("out.csv"),
            &"--close",
            &w.p("close.psi"),
            &"--report",
            &w.p("no-such-dir").join("report.json"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("does not exist"),
        "{err}"
    );
    let after = std::fs::read_dir(w.dir.path()).unwrap().count();
    assert_eq!(before, after, "no output, close file or temporary file");
    assert!(!w.p("no-such-dir").exists());
    let out = finish_a(
        &w,
        &[
            &"--output",
            &w.p("out.csv"),
            &"--close",
            &w.p("close.psi"),
            &"--report",
            &w.p("report.json"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.p("out.csv").exists() && w.p("close.psi").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.p("out.csv"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "matched customers are private");
    }
}

#[test]
fn what_cannot_work_is_refused_up_front() {
    let w = World::new();
    w.start(&["--reveal", "size"]);
    w.accept(&[]);
    w.send();
    w.respond();
    let out = finish_a(&w, &[&"--output", &w.p("rows.csv")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reveal is `size`") && err.contains("no rows for --output"),
        "{err}"
    );
    assert_eq!(
        w.session_files("a"),
        1,
        "refused before anything was verified"
    );
    std::fs::write(w.p("dup.csv"), "id,name,id\nx,y,z\n").unwrap();
    let err = fails(&[
        &"psi",
        &"offline",
        &"start",
        &"--home",
        &w.p("a"),
        &"--peer",
        &"b",
        &"--input",
        &w.p("dup.csv"),
        &"--id",
        &"id",
        &"--out",
        &w.p("dup-hello.psi"),
    ]);
    assert!(
        err.contains("dup.csv:1:3: column name \"id\" appears again (first at column 1)"),
        "{err}"
    );
    let err = fails(&[&"peer", &"add", &"--home", &w.p("a"), &w.p("a.json")]);
    assert!(err.contains("is the profile of this node"), "{err}");
}

/// Two inputs for alignment: ids in mixed case and padded, some repeated.
fn alignment_inputs(w: &World) {
    let variant = |i: usize| match i % 3 {
        0 => format!("user{i}"),
        1 => format!(" USER{i} "),
        _ => format!("User{i}"),
    };
    let mut a = String::from("id,score\n");
    for i in 0..200 {
        a.push_str(&format!("{},{i}\n", variant(i)));
        if i % 17 == 0 {
            a.push_str(&format!("{},again\n", variant(i + 1)));
        }
    }
    let mut b = String::from("customer,flag\n");
    for i in (100..300).rev() {
        b.push_str(&format!("{},{}\n", variant(i + 2), i % 2));
        if i % 23 == 0 {
            b.push_str(&format!("{},dup\n", variant(i)));
        }
    }
    std::fs::write(w.p("a.csv"), a).unwrap();
    std::fs::write(w.p("b.csv"), b).unwrap();
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    lines(path)
        .iter()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn aligned_outputs_line_up_row_for_row_and_the_digests_prove_it() {
    let w = World::new();
    alignment_inputs(&w);
    let start = |extra: &[&str]| {
        let (home, input, out) = (w.p("a"), w.p("a.csv"), w.p("hello.psi"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"psi",
            &"offline",
            &"start",
            &"--home",
            &home,
            &"--peer",
            &"b",
            &"--input",
            &input,
            &"--id",
            &"id",
            &"--casefold",
            &"--align",
            &"--out",
            &out,
            &"--force",
        ];
        for e in extra {
            args.push(e);
        }
        common::sotto(&args)
    };
    let refused = start(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("row(s) repeat the key of an earlier row (line 4 repeats line 3")
            && err.contains("--duplicates first"),
        "{err}"
    );
    assert!(start(&["--duplicates", "first"]).status.success());
    let err = accept_fails(&w, "hello.psi", "accept.psi", &[]);
    assert!(err.contains("does not agree to it"), "{err}");
    let err = accept_fails(&w, "hello.psi", "accept.psi", &["--allow-align"]);
    assert!(
        err.contains("b.csv") && err.contains("repeat the key"),
        "{err}"
    );
    w.accept(&["--allow-align", "--duplicates", "first"]);
    w.send();
    w.respond();
    let out = finish_a(
        &w,
        &[
            &"--output",
            &w.p("a-out.csv"),
            &"--report",
            &w.p("a-report.json"),
            &"--close",
            &w.p("close.psi"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&[
        &"psi",
        &"offline",
        &"finish",
        &"--home",
        &w.p("b"),
        &"--in",
        &w.p("close.psi"),
        &"--output",
        &w.p("b-out.csv"),
        &"--report",
        &w.p("b-report.json"),
    ]);
    let (a, b) = (csv_rows(&w.p("a-out.csv")), csv_rows(&w.p("b-out.csv")));
    let shared: Vec<String> = {
        let mut ids: Vec<String> = (102..200).map(|i| format!("user{i}")).collect();
        ids.sort();
        ids
    };
    let key = |row: &Vec<String>| row[0].trim().to_lowercase();
    assert_eq!(a.iter().map(key).collect::<Vec<_>>(), shared);
    assert_eq!(b.iter().map(key).collect::<Vec<_>>(), shared);
    let verified = ok(&[
        &"psi",
        &"verify-alignment",
        &"--report",
        &w.p("a-report.json"),
        &"--peer-report",
        &w.p("b-report.json"),
    ]);
    assert!(
        verified.contains(&format!("{} rows in each output", shared.len())),
        "{verified}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.p("a-report.json")).unwrap()).unwrap();
    assert!(report["alignment"]["dropped_duplicates"].as_u64().unwrap() > 0);
    // A peer report whose digest was edited no longer verifies.
    let digest = report["alignment"]["digest"].as_str().unwrap().to_owned();
    let forged = std::fs::read_to_string(w.p("b-report.json"))
        .unwrap()
        .replace(&digest, &"0".repeat(64));
    std::fs::write(w.p("forged.json"), forged).unwrap();
    let err = fails(&[
        &"psi",
        &"verify-alignment",
        &"--report",
        &w.p("a-report.json"),
        &"--peer-report",
        &w.p("forged.json"),
    ]);
    assert!(err.contains("the report was edited"), "{err}");
}

/// Rewrites the receipt inside a round-2 or closing file with `change`,
/// signed again by `signer_home`'s identity key when given.
fn rewrite_receipt(
    path: &Path,
    out: &Path,
    signer_home: Option<&Path>,
    change: impl Fn(&mut sotto_psi::wire::Receipt),
) {
    use sotto_psi::files::{FileBody, PsiFile};
    let mut file = PsiFile::decode(&std::fs::read(path).unwrap(), 1 << 20).unwrap();
    let receipt = match &mut file.body {
        FileBody::Round2 { receipt, .. } | FileBody::Close { receipt, .. } => receipt,
        _ => panic!("no receipt in {}", path.display()),
    };
    change(receipt);
    if let Some(home) = signer_home {
        let home = sotto_node::NodeHome::open(home).unwrap();
        receipt.signature = home
            .identity()
            .sign(sotto_psi::wire::RECEIPT_DOMAIN, &receipt.signed_bytes());
    }
    std::fs::write(out, file.encode()).unwrap();
}

#[test]
fn receipts_are_checked_field_by_field_offline() {
    let w = World::new();
    w.start(&["--reveal", "both"]);
    w.accept(&[]);
    w.send();
    w.respond();
    let finish = |input: &str| {
        fails(&[
            &"psi",
            &"offline",
            &"finish",
            &"--home",
            &w.p("a"),
            &"--in",
            &w.p(input),
            &"--close",
            &w.p("close.psi"),
        ])
    };
    rewrite_receipt(&w.p("r2.psi"), &w.p("r2-flipped.psi"), None, |r| {
        r.provider_size += 1
    });
    let err = finish("r2-flipped.psi");
    assert!(err.contains("receipt signature does not verify"), "{err}");
    rewrite_receipt(&w.p("r2.psi"), &w.p("r2-sizes.psi"), Some(&w.p("b")), |r| {
        r.provider_size += 1
    });
    let err = finish("r2-sizes.psi");
    assert!(
        err.contains("receipt disagrees with this session: input sizes"),
        "{err}"
    );
    rewrite_receipt(
        &w.p("r2.psi"),
        &w.p("r2-transcript.psi"),
        Some(&w.p("b")),
        |r| r.transcript[5] ^= 1,
    );
    let err = finish("r2-transcript.psi");
    assert!(
        err.contains("transcript hash (the two sides saw different messages)"),
        "{err}"
    );
    assert!(!w.p("close.psi").exists());
    // The provider checks the requester's closing receipt the same way.
    let out = finish_a(&w, &[&"--close", &w.p("close.psi")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rewrite_receipt(
        &w.p("close.psi"),
        &w.p("close-size.psi"),
        Some(&w.p("a")),
        |r| r.intersection_size = r.intersection_size.map(|n| n + 1),
    );
    let err = fails(&[
        &"psi",
        &"offline",
        &"finish",
        &"--home",
        &w.p("b"),
        &"--in",
        &w.p("close-size.psi"),
    ]);
    assert!(
        err.contains("receipt disagrees with this session: intersection size"),
        "{err}"
    );
}
