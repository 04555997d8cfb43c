//! Online PSI with the real binary: a provider process and requester
//! processes on loopback, over mutual TLS.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{ok, sotto};

/// A provider process, killed when dropped.
struct Provider {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the provider's log contains `needle`.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("provider never logged {needle:?}: {}", self.log_text());
    }
}

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A CA, two certified homes that pin each other, a.csv (u0..u299) and
    /// b.csv (u150..u499).
    fn new(rows: usize) -> Self {
        let w = World {
            dir: tempfile::tempdir().unwrap(),
        };
        ok(&[&"ca", &"init", &"--dir", &w.p("ca")]);
        for name in ["bank-a", "bank-b"] {
            ok(&[&"init", &"--home", &w.p(name), &"--name", &name]);
            ok(&[&"ca", &"issue", &"--dir", &w.p("ca"), &"--home", &w.p(name)]);
            ok(&[
                &"identity",
                &"export",
                &"--home",
                &w.p(name),
                &"--out",
                &w.p(&format!("{name}.json")),
            ]);
        }
        ok(&[
            &"peer",
            &"add",
            &"--home",
            &w.p("bank-a"),
            &w.p("bank-b.json"),
        ]);
        ok(&[
            &"peer",
            &"add",
            &"--home",
            &w.p("bank-b"),
            &w.p("bank-a.json"),
        ]);
        let mut a = String::from("id,v\n");
        let mut b = String::from("id\n");
        for i in 0..rows {
            a.push_str(&format!("u{i},{i}\n"));
            b.push_str(&format!("u{}\n", i + rows / 2));
        }
        std::fs::write(w.p("a.csv"), a).unwrap();
        std::fs::write(w.p("b.csv"), b).unwrap();
        w
    }

    fn serve(&self, extra: &[&str]) -> Provider {
        let mut args = vec![
            "psi".to_owned(),
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--id".into(),
            "id".into(),
        ];
        args.extend([
            "--home".into(),
            self.p("bank-b").display().to_string(),
            "--input".into(),
            self.p("b.csv").display().to_string(),
        ]);
        args.extend(extra.iter().map(|e| e.to_string()));
        self.spawn(&args, "provider.log")
    }

    fn spawn(&self, args: &[String], log_name: &str) -> Provider {
        let log = self.p(log_name);
        let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
        c.args(args)
            .env_remove("SOTTO_HOME")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = c.spawn().expect("spawn provider");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("bad first line {line:?}"))
            .to_owned();
        Provider {
            child,
            address,
            log,
        }
    }

    /// Starts a relay process routing bank-b to `provider`.
    fn relay_to(&self, provider: &Provider, log: &str) -> Provider {
        let args = ["relay", "serve", "--listen", "127.0.0.1:0", "--home"].map(String::from);
        let mut args = args.to_vec();
        args.push(self.p("relay").display().to_string());
        args.push("--route".into());
        args.push(format!("bank-b={}", provider.address));
        self.spawn(&args, log)
    }

    /// Runs bank-a's session with bank-b through `relay`.
    fn run_via_relay(&self, relay: &Provider, out: &str) -> Output {
        sotto(&[
            &"psi",
            &"run",
            &"--home",
            &self.p("bank-a"),
            &"--peer",
            &"bank-b",
            &"--connect",
            &relay.address,
            &"--via",
            &"relay",
            &"--input",
            &self.p("a.csv"),
            &"--id",
            &"id",
            &"--output",
            &self.p(out),
        ])
    }

    fn run(&self, provider: &Provider, out: &str, extra: &[&str]) -> Output {
        let (home, input, output) = (self.p("bank-a"), self.p("a.csv"), self.p(out));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"psi",
            &"run",
            &"--home",
            &home,
            &"--peer",
            &"bank-b",
            &"--connect",
            &provider.address,
            &"--input",
            &input,
            &"--id",
            &"id",
            &"--batch-size",
            &"64",
            &"--output",
            &output,
            &"--verify-timeout",
            &"5",
        ];
        for e in extra {
            args.push(e);
        }
        sotto(&args)
    }
}

fn rows(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count() - 1
}

#[test]
fn sessions_in_every_mode_both_groups_and_reveal_both() {
    let w = World::new(300);
    std::fs::create_dir_all(w.p("b-out")).unwrap();
    let provider = w.serve(&[
        "--allow-mode",
        "element,digest,none",
        "--output-dir",
        w.p("b-out").to_str().unwrap(),
    ]);
    let sessions = [
        ("element", "x25519"),
        ("element", "ristretto255"),
        ("digest", "x25519"),
        ("none", "ristretto255"),
    ];
    for (mode, group) in sessions {
        let name = format!("{mode}-{group}");
        let out = w.run(
            &provider,
            &format!("{name}.csv"),
            &[
                "--mode",
                mode,
                "--group",
                group,
                "--report",
                w.p(&format!("{name}.json")).to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout)
            .contains("150 shared keys, 150 of your rows matched"));
        assert_eq!(rows(&w.p(&format!("{name}.csv"))), 150);
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.p(&format!("{name}.json"))).unwrap()).unwrap();
        assert_eq!(report["intersection"]["distinct_keys"], 150);
        assert_eq!(report["group"], group);
        assert_eq!(report["failed_batches"], 0);
    }
    let out = w.run(&provider, "both.csv", &["--reveal", "both"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    provider.wait_for_log("150 shared keys, 150 rows");
    let written: Vec<_> = std::fs::read_dir(w.p("b-out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let csv = written
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "csv"))
        .expect("provider output");
    assert_eq!(rows(csv), 150);
}

#[test]
fn concurrent_sessions_stay_isolated() {
    let w = World::new(200);
    let provider = w.serve(&[]);
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let (home, input, out, address) = (
                w.p("bank-a"),
                w.p("a.csv"),
                w.p(&format!("c{i}.csv")),
                provider.address.clone(),
            );
            std::thread::spawn(move || {
                Command::new(env!("CARGO_BIN_EXE_sotto"))
                    .args([
                        "--quiet",
                        "psi",
                        "run",
                        "--peer",
                        "bank-b",
                        "--id",
                        "id",
                        "--batch-size",
                        "32",
                    ])
                    .arg("--home")
                    .arg(home)
                    .arg("--connect")
                    .arg(address)
                    .arg("--input")
                    .arg(input)
                    .arg("--output")
                    .arg(&out)
                    .output()
                    .map(|o| (o, out))
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        let (out, path) = h.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(rows(&path), 100);
    }
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let w = World::new(20);
    let provider = w.serve(&[]);
    ok(&[&"ca", &"init", &"--dir", &w.p("rogue-ca")]);
    ok(&[
        &"ca",
        &"issue",
        &"--dir",
        &w.p("rogue-ca"),
        &"--home",
        &w.p("bank-a"),
    ]);
    let out = w.run(&provider, "x.csv", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("peer bank-b") && err.contains("not issued by this node's consortium CA"),
        "{err}"
    );
    assert!(!w.p("x.csv").exists());
}

#[test]
fn expired_certificate_is_refused() {
    let w = World::new(20);
    let provider = w.serve(&[]);
    ok(&[
        &"ca",
        &"issue",
        &"--dir",
        &w.p("ca"),
        &"--home",
        &w.p("bank-a"),
        &"--valid-days",
        &"0",
    ]);
    let out = w.run(&provider, "x.csv", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("this node's TLS certificate") && err.contains("ask the consortium CA"),
        "{err}"
    );
    assert!(!w.p("x.csv").exists());
}

#[test]
fn unpinned_or_disallowed_requester_is_refused() {
    let w = World::new(20);
    ok(&[&"init", &"--home", &w.p("bank-c"), &"--name", &"bank-c"]);
    ok(&[
        &"ca",
        &"issue",
        &"--dir",
        &w.p("ca"),
        &"--home",
        &w.p("bank-c"),
    ]);
    ok(&[
        &"peer",
        &"add",
        &"--home",
        &w.p("bank-c"),
        &w.p("bank-b.json"),
    ]);
    let provider = w.serve(&[]);
    let out = sotto(&[
        &"psi",
        &"run",
        &"--home",
        &w.p("bank-c"),
        &"--peer",
        &"bank-b",
        &"--connect",
        &provider.address,
        &"--input",
        &w.p("a.csv"),
        &"--id",
        &"id",
        &"--output",
        &w.p("c.csv"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the session") && err.contains("not a pinned peer"),
        "{err}"
    );
    drop(provider);
    ok(&[
        &"identity",
        &"export",
        &"--home",
        &w.p("bank-c"),
        &"--out",
        &w.p("bank-c.json"),
    ]);
    ok(&[
        &"peer",
        &"add",
        &"--home",
        &w.p("bank-b"),
        &w.p("bank-c.json"),
    ]);
    let provider = w.serve(&["--allow", "bank-c"]);
    let out = w.run(&provider, "a-out.csv", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not on this provider's allow list"), "{err}");
    assert!(!w.p("a-out.csv").exists() && !w.p("c.csv").exists());
}

#[test]
fn provider_killed_mid_session_leaves_no_output() {
    let w = World::new(20_000);
    let mut provider = w.serve(&[]);
    let (home, input, out_path, address) = (
        w.p("bank-a"),
        w.p("a.csv"),
        w.p("killed.csv"),
        provider.address.clone(),
    );
    let requester = std::thread::spawn(move || {
        Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args([
                "--quiet",
                "psi",
                "run",
                "--peer",
                "bank-b",
                "--id",
                "id",
                "--idle-timeout",
                "30",
            ])
            .arg("--home")
            .arg(home)
            .arg("--connect")
            .arg(address)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(out_path)
            .output()
            .unwrap()
    });
    provider.wait_for_log("session started");
    provider.child.kill().unwrap();
    let out = requester.join().unwrap();
    assert!(
        !out.status.success(),
        "the requester must fail when its provider dies"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bank-b"), "{err}");
    assert!(!w.p("killed.csv").exists());
    let leftovers: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp")
        })
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn session_through_a_relay_process() {
    let w = World::new(300);
    ok(&[&"init", &"--home", &w.p("relay"), &"--name", &"relay"]);
    ok(&[
        &"ca",
        &"issue",
        &"--dir",
        &w.p("ca"),
        &"--home",
        &w.p("relay"),
    ]);
    let provider = w.serve(&["--relay", "relay"]);
    let relay = w.relay_to(&provider, "relay.log");
    let out = w.run_via_relay(&relay, "relayed.csv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows(&w.p("relayed.csv")), 150);
    // Without --relay, the provider refuses the relay's connection.
    let strict = w.serve(&[]);
    let relay2 = w.relay_to(&strict, "relay2.log");
    let out = w.run_via_relay(&relay2, "refused.csv");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nor a trusted relay"), "{err}");
    assert!(!w.p("refused.csv").exists());
}

#[test]
fn shards_together_give_the_whole_intersection() {
    let w = World::new(400);
    let mut total = 0;
    for shard in ["0/3", "1/3", "2/3"] {
        let provider = w.serve(&["--shard", shard, "--shard-salt", "test"]);
        let out = format!("shard-{}.csv", &shard[..1]);
        let run = w.run(&provider, &out, &["--shard", shard, "--shard-salt", "test"]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let n = rows(&w.p(&out));
        assert!(n > 0 && n < 200, "each shard holds a part: {n}");
        total += n;
    }
    assert_eq!(total, 200, "the shards' results add up to the intersection");
}

#[test]
fn provider_frees_the_session_when_the_requester_dies() {
    let w = World::new(20_000);
    let provider = w.serve(&[]);
    let mut requester = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["--quiet", "psi", "run", "--peer", "bank-b", "--id", "id"])
        .arg("--home")
        .arg(w.p("bank-a"))
        .arg("--connect")
        .arg(&provider.address)
        .arg("--input")
        .arg(w.p("a.csv"))
        .arg("--output")
        .arg(w.p("gone.csv"))
        .spawn()
        .unwrap();
    provider.wait_for_log("session started");
    requester.kill().unwrap();
    requester.wait().unwrap();
    provider.wait_for_log("session failed");
    assert!(
        provider.log_text().contains("peer bank-a"),
        "{}",
        provider.log_text()
    );
    // The provider still serves new sessions.
    let out = w.run(&provider, "after.csv", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shard_parameters_that_differ_are_refused_before_any_element() {
    let w = World::new(40);
    let provider = w.serve(&["--shard", "0/2", "--shard-salt", "ours"]);
    for (extra, ours, theirs) in [
        (vec![], "0/2", "none (not sharded)"),
        (vec!["--shard", "1/2", "--shard-salt", "ours"], "0/2", "1/2"),
    ] {
        let out = w.run(&provider, "sharded.csv", &extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!("shard (--shard) is {theirs} but ours is {ours}")),
            "{err}"
        );
        assert!(!w.p("sharded.csv").exists());
    }
    let out = w.run(
        &provider,
        "sharded.csv",
        &["--shard", "0/2", "--shard-salt", "theirs"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shard salt (--shard-salt)"), "{err}");
    provider.wait_for_log("handshake refused: the peer's shard salt");
}

#[test]
fn a_provider_refuses_to_start_with_settings_that_cannot_work() {
    let w = World::new(10);
    let start = |extra: &[&str]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"psi",
            &"serve",
            &"--listen",
            &"127.0.0.1:0",
            &"--id",
            &"id",
        ];
        let (home, input) = (w.p("bank-b"), w.p("b.csv"));
        args.extend([
            &"--home" as &dyn AsRef<std::ffi::OsStr>,
            &home,
            &"--input",
            &input,
        ]);
        for e in extra {
            args.push(e);
        }
        sotto(&args)
    };
    let out = start(&["--allow", "bank-c"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "no 'listening on'"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--allow names bank-c, which is not a pinned peer"),
        "{err}"
    );
    let missing = w.p("no-such-dir");
    let out = start(&["--output-dir", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "no 'listening on'"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists(), "an output directory is never created");
}

#[test]
fn a_provider_notices_its_input_changed_and_size_only_has_no_rows() {
    let w = World::new(20);
    let provider = w.serve(&[]);
    let out = w.run(&provider, "size.csv", &["--reveal", "size"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reveal is `size`") && err.contains("no rows for --output"),
        "{err}"
    );
    assert!(
        !provider.log_text().contains("session started"),
        "refused before connecting"
    );
    std::fs::write(w.p("b.csv"), "id\nsomeone-else\n").unwrap();
    let out = w.run(&provider, "changed.csv", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was changed after the provider read it at start-up"),
        "{err}"
    );
    assert!(!w.p("changed.csv").exists());
    std::fs::remove_file(w.p("b.csv")).unwrap();
    let out = w.run(&provider, "deleted.csv", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("was deleted after the provider read it"),
        "{err}"
    );
}

#[test]
fn transport_failures_are_described_in_words() {
    let w = World::new(10);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let out = sotto(&[
        &"psi",
        &"run",
        &"--home",
        &w.p("bank-a"),
        &"--peer",
        &"bank-b",
        &"--connect",
        &address,
        &"--input",
        &w.p("a.csv"),
        &"--id",
        &"id",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "peer bank-b at {address}: nothing listens at that address"
        )),
        "{err}"
    );
}

#[test]
fn aligned_online_outputs_share_pseudonyms_row_for_row() {
    let w = World::new(60);
    std::fs::create_dir(w.p("b-out")).unwrap();
    let refusing = w.serve(&[]);
    let out = w.run(&refusing, "refused.csv", &["--align"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not agree to it"), "{err}");
    assert!(!w.p("refused.csv").exists());
    drop(refusing);
    let provider = w.serve(&[
        "--allow-align",
        "--output-dir",
        w.p("b-out").to_str().unwrap(),
        "--output-id-column",
        "pid",
    ]);
    let out = w.run(
        &provider,
        "a-out.csv",
        &[
            "--align",
            "--output-id-column",
            "pid",
            "--report",
            w.p("a-report.json").to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.p("a-report.json")).unwrap()).unwrap();
    let sid = report["session"].as_str().unwrap().to_owned();
    let provider_out = w.p("b-out").join(format!("{sid}.csv"));
    let first_column = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| l.split(',').next().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (first_column(&w.p("a-out.csv")), first_column(&provider_out));
    assert_eq!(a[0], "pid");
    assert_eq!(a.len(), 31, "30 shared customers");
    assert_eq!(a, b, "the same pseudonym on the same row on both sides");
    let verified = ok(&[
        &"psi",
        &"verify-alignment",
        &"--report",
        &w.p("a-report.json"),
        &"--peer-report",
        &w.p("b-out").join(format!("{sid}.report.json")),
    ]);
    assert!(verified.contains("30 rows in each output"), "{verified}");
}
