//! The hierarchical KMS through real processes: a `sotto kms serve` child
//! over mutual TLS on loopback, `sotto secrets` children as the participant,
//! object stores on disk and behind a real S3 protocol server (s3s-fs,
//! running in the test). Drills, refusals (tampered, truncated, swapped,
//! foreign, another participant's), rotation and retirement, the rate
//! limit, wrong passwords, and a scan of every written file for plaintext.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::ok;

const PASSWORD: &str = "kms test operator password";

/// `sotto --quiet ARGS` with extra environment and optional standard input.
fn run(
    env: &[(&str, String)],
    args: &[&dyn AsRef<std::ffi::OsStr>],
    stdin: Option<&[u8]>,
) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
    c.arg("--quiet").env_remove("SOTTO_HOME");
    for a in args {
        c.arg(a);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn sotto");
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).expect("stdin");
    }
    child.wait_with_output().expect("wait")
}

fn succeeded(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "sotto failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `sotto kms serve` child, killed on drop.
struct Kms {
    child: Child,
    address: String,
}

impl Drop for Kms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A consortium with a KMS and two participants.
struct Site {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
}

impl Site {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// CA, node homes, password file, `kms init` with `backup`.
    fn new(env: Vec<(&'static str, String)>, backup: Option<&str>) -> Self {
        let site = Site {
            dir: tempfile::tempdir().unwrap(),
            env,
        };
        ok(&[&"ca", &"init", &"--dir", &site.p("ca")]);
        for name in ["kms", "bank-a", "bank-b"] {
            site.node(name);
        }
        std::fs::write(site.p("pw"), PASSWORD).unwrap();
        let backup = backup
            .map(str::to_owned)
            .unwrap_or_else(|| site.p("third").display().to_string());
        site.ok(&[
            &"kms",
            &"init",
            &"--home",
            &site.p("kms"),
            &"--backup",
            &backup,
            &"--password-file",
            &site.p("pw"),
        ]);
        site
    }

    fn node(&self, name: &str) {
        ok(&[&"init", &"--home", &self.p(name), &"--name", &name]);
        ok(&[
            &"ca",
            &"issue",
            &"--dir",
            &self.p("ca"),
            &"--home",
            &self.p(name),
        ]);
    }

    fn ok(&self, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
        String::from_utf8_lossy(&succeeded(run(&self.env, args, None))).into_owned()
    }

    fn fails(&self, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
        failed(run(&self.env, args, None))
    }

    fn serve(&self, extra: &[&str]) -> Kms {
        self.serve_home("kms", extra)
    }

    /// `kms serve` of the KMS in the home `home`.
    fn serve_home(&self, home: &str, extra: &[&str]) -> Kms {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
        c.args([
            "--quiet",
            "kms",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--home",
        ])
        .arg(self.p(home))
        .arg("--password-file")
        .arg(self.p("pw"))
        .args(extra)
        .envs(self.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().strip_prefix("listening on ").map(str::to_owned);
        let Some(address) = address else {
            let out = child.wait_with_output().unwrap();
            panic!(
                "kms serve did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        Kms { child, address }
    }

    fn keygen(&self, kms: &Kms, owner: &str, purpose: &str) {
        self.ok(&[
            &"kms",
            &"keygen",
            &"--home",
            &self.p("kms"),
            &"--connect",
            &kms.address,
            &"--owner",
            &owner,
            &"--purpose",
            &purpose,
        ]);
    }

    fn agent(&self, kms: &Kms, who: &str, store: &str) {
        let mirror = self.p("mirror-site");
        self.ok(&[
            &"secrets",
            &"init",
            &"--home",
            &self.p(who),
            &"--connect",
            &kms.address,
            &"--store",
            &store,
            &"--mirror-store",
            &mirror,
        ]);
    }

    fn put(&self, who: &str, id: &str, kind: &str, secret: &[u8], extra: &[&str]) {
        let home = self.p(who);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"secrets", &"put", &"--home", &home, &"--id", &id, &"--kind", &kind,
        ];
        for e in extra {
            args.push(e);
        }
        succeeded(run(&self.env, &args, Some(secret)));
    }

    fn recover(&self, who: &str, id: &str, extra: &[&str]) -> Output {
        let home = self.p(who);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"secrets", &"recover", &"--home", &home, &"--id", &id];
        for e in extra {
            args.push(e);
        }
        run(&self.env, &args, None)
    }

    fn audit(&self, kms: &Kms) -> String {
        self.ok(&[
            &"kms",
            &"audit",
            &"verify",
            &"--home",
            &self.p("kms"),
            &"--connect",
            &kms.address,
            &"--show",
        ])
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Asserts that none of the (at least `min_files`) files under `dir` holds
/// any of `secrets`, raw or in hex.
fn assert_no_plaintext(dir: &Path, min_files: usize, secrets: &[&[u8]]) {
    let all = files(dir);
    assert!(
        all.len() >= min_files,
        "expected at least {min_files} written files under {}",
        dir.display()
    );
    for file in all {
        let bytes = std::fs::read(&file).unwrap();
        for secret in secrets {
            if let Some(encoding) = sotto_node::leaks::leaked_encoding(&bytes, secret) {
                panic!(
                    "{} holds an escrowed plaintext ({encoding})",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn demo_kms_runs_both_drills_through_processes() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out = ok(&[&"demo", &"kms", &"--dir", &work]);
    for needle in [
        "escrowed 9 secrets of 9 kinds",
        "drill 1: the participant loses its memory and its whole home",
        "drill 2: the KMS host is lost and rebuilt from the third environment",
        "a wrong password is refused and writes nothing",
        "audit log intact",
        "demo kms: OK",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert_eq!(
        out.matches("all 9 secrets recovered byte for byte").count(),
        2,
        "{out}"
    );
    assert_no_plaintext(
        &work,
        20,
        &[
            b"correct-horse-7781!".as_slice(),
            b"w=[0.113,-0.402,0.977] round=3",
            b"bank-b:5f2a9c",
        ],
    );
}

#[test]
fn refusals_are_specific_audited_and_leave_no_plaintext() {
    let site = Site::new(Vec::new(), None);
    let kms = site.serve(&[]);
    for (owner, purpose) in [
        ("bank-a", "escrow"),
        ("bank-a", "layer2"),
        ("bank-a", "mirror"),
        ("bank-b", "escrow"),
    ] {
        site.keygen(&kms, owner, purpose);
    }
    let store = site.p("second").display().to_string();
    site.agent(&kms, "bank-a", &store);
    site.agent(&kms, "bank-b", &store);
    let (s1, s2, s3): (&[u8], &[u8], &[u8]) = (
        b"alpha PLAINTEXT one",
        b"beta PLAINTEXT two",
        b"gamma PLAINTEXT three",
    );
    site.put("bank-a", "s1", "password", s1, &[]);
    site.put(
        "bank-a",
        "s2",
        "final-result",
        s2,
        &[
            "--key",
            "bank-a/escrow",
            "--key",
            "bank-a/layer2",
            "--mirror",
        ],
    );
    assert_eq!(succeeded(site.recover("bank-a", "s2", &[])), s2, "layered");
    assert_eq!(
        succeeded(site.recover("bank-a", "s2", &["--mirror"])),
        s2,
        "mirror copy"
    );
    assert_eq!(
        site.ok(&[&"secrets", &"list", &"--home", &site.p("bank-a")]),
        "s1\ns2\n"
    );

    // Tampered and truncated ciphertexts.
    let object = site.p("second/escrow/bank-a/s1.json");
    let original = std::fs::read_to_string(&object).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&original).unwrap();
    let ct = json["envelope"]["ciphertext"].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        &ct[..80],
        if &ct[80..81] == "0" { "1" } else { "0" }
    ) + &ct[81..];
    json["envelope"]["ciphertext"] = flipped.into();
    std::fs::write(&object, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = failed(site.recover("bank-a", "s1", &[]));
    assert!(err.contains("does not open: altered, truncated"), "{err}");
    json["envelope"]["ciphertext"] = ct[..20].to_owned().into();
    std::fs::write(&object, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = failed(site.recover("bank-a", "s1", &[]));
    assert!(err.contains("does not open"), "{err}");
    std::fs::write(&object, "{\"format\": \"sotto-escrow/1\", \"created\": 1,").unwrap();
    let err = failed(site.recover("bank-a", "s1", &[]));
    assert!(err.contains("s1.json") && err.contains("line 1"), "{err}");
    // Swapped objects in the untrusted store.
    std::fs::copy(site.p("second/escrow/bank-a/s2.json"), &object).unwrap();
    let err = failed(site.recover("bank-a", "s1", &[]));
    assert!(err.contains("the store's objects were swapped"), "{err}");
    std::fs::write(&object, &original).unwrap();
    assert_eq!(succeeded(site.recover("bank-a", "s1", &[])), s1);

    // Sealed to another participant's key: the KMS refuses to open it for bank-a.
    site.put("bank-a", "s3", "other", s3, &["--key", "bank-b/escrow"]);
    let err = failed(site.recover("bank-a", "s3", &[]));
    assert!(
        err.contains("bank-a may not use key bank-b/escrow: it belongs to bank-b"),
        "{err}"
    );

    // Another participant presents bank-a's envelope (its own client, its own certificate).
    let stolen: serde_json::Value = serde_json::from_str(&original).unwrap();
    let envelope: sotto_kms::escrow::Envelope =
        serde_json::from_value(stolen["envelope"].clone()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime.block_on(async {
        let home = sotto_node::NodeHome::open(&site.p("bank-b")).unwrap();
        let config = sotto_kms::agent::Agent::config(&home).unwrap();
        let signer = sotto_crypto::identity::IdentityPublic::from_bytes(
            &hex::decode(config.signing_key).unwrap(),
        )
        .unwrap();
        let mut client = sotto_kms::client::KmsClient::connect(&home, "kms", &kms.address)
            .await
            .unwrap();
        client
            .recover(&signer, &envelope)
            .await
            .expect_err("bank-b recovered bank-a's secret")
    });
    assert!(
        err.to_string()
            .contains("bank-b may not use secret s1: it belongs to bank-a"),
        "{err}"
    );

    let audit = site.audit(&kms);
    assert!(audit.contains("audit log intact"), "{audit}");
    let refused: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\"recovery-refused\""))
        .collect();
    assert!(
        refused
            .iter()
            .any(|l| l.contains("\"requester\":\"bank-b\"") && l.contains("\"owner\":\"bank-a\"")),
        "{audit}"
    );
    assert!(
        refused.len() >= 4,
        "tampered, truncated, foreign key and other participant: {audit}"
    );
    assert!(
        audit.contains("\"recovery-granted\"")
            && audit.contains("\"public-key-handed-out\"")
            && audit.contains("\"key-created\"")
            && audit.contains("\"sealed\"")
    );
    // Non-operators may not read the audit log or create keys.
    let err = site.fails(&[
        &"kms",
        &"keygen",
        &"--home",
        &site.p("bank-a"),
        &"--connect",
        &kms.address,
        &"--owner",
        &"bank-a",
        &"--purpose",
        &"extra",
    ]);
    assert!(err.contains("bank-a is not the KMS operator"), "{err}");
    drop(kms);
    assert_no_plaintext(site.dir.path(), 20, &[s1, s2, s3]);
    // With the KMS stopped its database verifies offline too.
    assert!(site
        .ok(&[&"kms", &"audit", &"verify", &"--home", &site.p("kms")])
        .contains("audit log intact"));
}

#[test]
fn rotation_rewrap_and_retired_versions() {
    let site = Site::new(Vec::new(), None);
    let kms = site.serve(&[]);
    site.keygen(&kms, "bank-a", "escrow");
    site.agent(&kms, "bank-a", &site.p("second").display().to_string());
    site.put("bank-a", "moved", "session", b"session one", &[]);
    site.put("bank-a", "left", "session", b"session two", &[]);
    let again = run(
        &[],
        &[
            &"secrets",
            &"put",
            &"--home",
            &site.p("bank-a"),
            &"--id",
            &"left",
            &"--kind",
            &"session",
        ],
        Some(b"session two, again"),
    );
    assert!(
        failed(again).contains("already escrowed"),
        "a second put must not overwrite"
    );
    site.put("bank-a", "left", "session", b"session two", &["--replace"]);
    let home = site.p("kms");
    let out = site.ok(&[
        &"kms",
        &"rotate",
        &"--home",
        &home,
        &"--connect",
        &kms.address,
        &"--key",
        &"bank-a/escrow",
    ]);
    assert!(out.starts_with("bank-a/escrow v2 Active"), "{out}");
    let out = site.ok(&[
        &"kms",
        &"rewrap",
        &"--home",
        &site.p("bank-a"),
        &"--id",
        &"moved",
    ]);
    assert!(
        out.contains("moved: rewrapped to bank-a/escrow@v2"),
        "{out}"
    );
    site.ok(&[
        &"kms",
        &"retire",
        &"--home",
        &home,
        &"--connect",
        &kms.address,
        &"--key",
        &"bank-a/escrow",
        &"--key-version",
        &"1",
    ]);
    assert_eq!(
        succeeded(site.recover("bank-a", "moved", &[])),
        b"session one"
    );
    let err = failed(site.recover("bank-a", "left", &[]));
    assert!(err.contains("key bank-a/escrow v1 is retired"), "{err}");
    let keys = site.ok(&[
        &"kms",
        &"keys",
        &"--home",
        &home,
        &"--connect",
        &kms.address,
    ]);
    assert!(
        keys.contains("bank-a/escrow v1 Retired") && keys.contains("bank-a/escrow v2 Active"),
        "{keys}"
    );
    let out = site.ok(&[
        &"kms",
        &"pubkey",
        &"--home",
        &site.p("bank-a"),
        &"--connect",
        &kms.address,
        &"--key",
        &"bank-a/escrow",
        &"--via-channel",
    ]);
    assert!(
        out.contains("bank-a/escrow v2 Active")
            && out.contains("ephemeral X25519 + AES-GCM channel"),
        "{out}"
    );
    let audit = site.audit(&kms);
    for event in [
        "\"rotated\"",
        "\"rewrapped\"",
        "\"retired\"",
        "\"channel\":true",
    ] {
        assert!(audit.contains(event), "missing {event} in {audit}");
    }
}

#[test]
fn recovery_is_rate_limited_per_participant() {
    let site = Site::new(Vec::new(), None);
    let kms = site.serve(&["--recover-rate", "1", "--recover-burst", "2"]);
    let store = site.p("second").display().to_string();
    for who in ["bank-a", "bank-b"] {
        site.keygen(&kms, who, "escrow");
        site.agent(&kms, who, &store);
        site.put(who, "k", "other", b"x", &[]);
    }
    succeeded(site.recover("bank-a", "k", &[]));
    succeeded(site.recover("bank-a", "k", &[]));
    let err = failed(site.recover("bank-a", "k", &[]));
    assert!(
        err.contains("bank-a exceeded its recovery rate (1/s, burst 2)"),
        "{err}"
    );
    succeeded(site.recover("bank-b", "k", &[]));
}

#[test]
fn wrong_passwords_are_refused_and_change_nothing() {
    let site = Site::new(Vec::new(), None);
    std::fs::write(site.p("bad"), "guess").unwrap();
    let err = site.fails(&[
        &"kms",
        &"serve",
        &"--home",
        &site.p("kms"),
        &"--listen",
        &"127.0.0.1:0",
        &"--password-file",
        &site.p("bad"),
    ]);
    assert!(err.contains("wrong password"), "{err}");
    site.node("kms-2");
    let err = site.fails(&[
        &"kms",
        &"restore",
        &"--home",
        &site.p("kms-2"),
        &"--from",
        &site.p("third"),
        &"--password-file",
        &site.p("bad"),
    ]);
    assert!(err.contains("wrong password"), "{err}");
    assert!(!site.p("kms-2/kms.redb").exists());
    let err = site.fails(&[
        &"kms",
        &"restore",
        &"--home",
        &site.p("kms"),
        &"--from",
        &site.p("third"),
        &"--password-file",
        &site.p("pw"),
    ]);
    assert!(err.contains("already holds a KMS"), "{err}");
    let err = site.fails(&[
        &"kms",
        &"init",
        &"--home",
        &site.p("kms-2"),
        &"--backup",
        &site.p("third-2"),
    ]);
    assert!(err.contains("--password-file"), "{err}");
    let out = site.ok(&[
        &"kms",
        &"restore",
        &"--home",
        &site.p("kms-2"),
        &"--from",
        &site.p("third"),
        &"--password-file",
        &site.p("pw"),
    ]);
    assert!(
        out.contains("0 key pair versions, bundle generation 1"),
        "{out}"
    );
}

/// An S3 protocol server (s3s-fs over a directory) on a loopback port.
fn start_s3(root: &Path, runtime: &tokio::runtime::Runtime) -> String {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        "test-access",
        "test-secret",
    ));
    let service = builder.build();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    runtime.spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                break;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    format!("http://{address}")
}

#[test]
fn s3_compatible_stores_for_escrow_and_the_sealed_bundle() {
    let s3_root = tempfile::tempdir().unwrap();
    for bucket in ["escrow", "kms-backup"] {
        std::fs::create_dir_all(s3_root.path().join(bucket)).unwrap();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let endpoint = start_s3(s3_root.path(), &runtime);
    let env = vec![
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ACCESS_KEY_ID", "test-access".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test-secret".to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ];
    let site = Site::new(env, Some("s3://kms-backup/site-3"));
    let kms = site.serve(&[]);
    site.keygen(&kms, "bank-a", "escrow");
    site.agent(&kms, "bank-a", "s3://escrow/second-env");
    let secret = b"S3 escrowed PLAINTEXT secret";
    site.put("bank-a", "s3-secret", "authorization-file", secret, &[]);
    assert_eq!(
        site.ok(&[&"secrets", &"list", &"--home", &site.p("bank-a")]),
        "s3-secret\n"
    );
    assert_eq!(succeeded(site.recover("bank-a", "s3-secret", &[])), secret);
    assert!(s3_root
        .path()
        .join("escrow/second-env/escrow/bank-a/s3-secret.json")
        .exists());
    assert!(s3_root
        .path()
        .join("kms-backup/site-3/kms-bundle.sealed")
        .exists());
    // Lose the KMS host; rebuild it from the bundle in the S3 bucket.
    drop(kms);
    // Listing needs only the store; recovery names the unreachable KMS.
    assert_eq!(
        site.ok(&[&"secrets", &"list", &"--home", &site.p("bank-a")]),
        "s3-secret\n"
    );
    let err = failed(site.recover("bank-a", "s3-secret", &[]));
    assert!(
        err.contains("KMS kms at") && err.contains("transport"),
        "{err}"
    );
    std::fs::remove_dir_all(site.p("kms")).unwrap();
    site.node("kms");
    site.ok(&[
        &"kms",
        &"restore",
        &"--home",
        &site.p("kms"),
        &"--from",
        &"s3://kms-backup/site-3",
        &"--password-file",
        &site.p("pw"),
    ]);
    let kms = site.serve(&[]);
    site.agent(&kms, "bank-a", "s3://escrow/second-env");
    assert_eq!(succeeded(site.recover("bank-a", "s3-secret", &[])), secret);
    assert_no_plaintext(site.dir.path(), 20, &[secret]);
    assert_no_plaintext(s3_root.path(), 2, &[secret]);
}

/// The generation written in a stored bundle's signed header.
fn bundle_generation(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"SOTTOKMB", "a format-2 bundle");
    u64::from_be_bytes(bytes[41..49].try_into().unwrap())
}

#[test]
fn a_backup_location_holding_a_bundle_is_never_overwritten() {
    let site = Site::new(Vec::new(), None);
    let bundle = site.p("third/kms-bundle.sealed");
    let original = std::fs::read(&bundle).unwrap();
    // A second `kms init` at the same location is refused; nothing written.
    site.node("kms-2");
    let err = site.fails(&[
        &"kms",
        &"init",
        &"--home",
        &site.p("kms-2"),
        &"--backup",
        &site.p("third"),
        &"--password-file",
        &site.p("pw"),
    ]);
    assert!(
        err.contains("already holds the bundle of a KMS") && err.contains("generation 1"),
        "{err}"
    );
    assert_eq!(std::fs::read(&bundle).unwrap(), original);
    assert!(!site.p("kms-2/kms.redb").exists());
    // Another KMS's bundle in this KMS's location: serve refuses to start.
    site.ok(&[
        &"kms",
        &"init",
        &"--home",
        &site.p("kms-2"),
        &"--backup",
        &site.p("third-2"),
        &"--password-file",
        &site.p("pw"),
    ]);
    let foreign = std::fs::read(site.p("third-2/kms-bundle.sealed")).unwrap();
    std::fs::write(&bundle, &foreign).unwrap();
    let err = site.fails(&[
        &"kms",
        &"serve",
        &"--home",
        &site.p("kms"),
        &"--listen",
        &"127.0.0.1:0",
        &"--password-file",
        &site.p("pw"),
    ]);
    assert!(err.contains("the bundle of another KMS"), "{err}");
    assert_eq!(std::fs::read(&bundle).unwrap(), foreign);
    std::fs::write(&bundle, &original).unwrap();
    // A second instance of this KMS (restored from the same bundle) moves
    // the bundle ahead; the first may then no longer replace it.
    site.node("kms-3");
    site.ok(&[
        &"kms",
        &"restore",
        &"--home",
        &site.p("kms-3"),
        &"--from",
        &site.p("third"),
        &"--password-file",
        &site.p("pw"),
    ]);
    let first = site.serve(&[]);
    let second = site.serve_home("kms-3", &[]);
    site.ok(&[
        &"kms",
        &"keygen",
        &"--home",
        &site.p("kms-3"),
        &"--connect",
        &second.address,
        &"--kms",
        &"kms-3",
        &"--owner",
        &"bank-a",
    ]);
    assert_eq!(bundle_generation(&bundle), 2);
    let err = site.fails(&[
        &"kms",
        &"keygen",
        &"--home",
        &site.p("kms"),
        &"--connect",
        &first.address,
        &"--owner",
        &"bank-b",
    ]);
    assert!(
        err.contains("generation 2, newer than this KMS's state (generation 1)"),
        "{err}"
    );
    assert_eq!(bundle_generation(&bundle), 2);
}

#[test]
fn escrow_size_limit_and_rewrap_past_failures() {
    let site = Site::new(Vec::new(), None);
    let kms = site.serve(&[]);
    for purpose in ["escrow", "inner", "mirror"] {
        site.keygen(&kms, "bank-a", purpose);
    }
    let store = site.p("second");
    site.agent(&kms, "bank-a", &store.display().to_string());
    let limit = 1 << 20;
    let over = vec![7u8; limit + 1];
    let err = failed(run(
        &[],
        &[
            &"secrets",
            &"put",
            &"--home",
            &site.p("bank-a"),
            &"--id",
            &"big",
            &"--kind",
            &"final-result",
        ],
        Some(&over),
    ));
    assert!(err.contains("1048576-byte limit"), "{err}");
    assert!(!store.join("escrow/bank-a/big.json").exists());
    // The largest allowed secret, layered and mirrored, comes back whole.
    let largest: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    site.put(
        "bank-a",
        "big",
        "final-result",
        &largest,
        &[
            "--key",
            "bank-a/inner",
            "--key",
            "bank-a/escrow",
            "--mirror",
        ],
    );
    assert_eq!(succeeded(site.recover("bank-a", "big", &[])), largest);
    assert_eq!(
        succeeded(site.recover("bank-a", "big", &["--mirror"])),
        largest
    );
    // Rewrap goes on past a secret it cannot move and names it.
    for id in ["s1", "s2", "s3"] {
        site.put("bank-a", id, "session", id.as_bytes(), &[]);
    }
    let s2 = store.join("escrow/bank-a/s2.json");
    let text = std::fs::read_to_string(&s2).unwrap();
    let at = text.find("\"ciphertext\": \"").unwrap() + 20;
    let mut tampered = text.into_bytes();
    tampered[at] = if tampered[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&s2, tampered).unwrap();
    site.ok(&[
        &"kms",
        &"rotate",
        &"--home",
        &site.p("kms"),
        &"--connect",
        &kms.address,
        &"--key",
        &"bank-a/escrow",
    ]);
    let out = run(
        &[],
        &[
            &"kms",
            &"rewrap",
            &"--home",
            &site.p("bank-a"),
            &"--id",
            &"s1",
            &"--id",
            &"s2",
            &"--id",
            &"s3",
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = failed(out);
    assert!(
        stdout.contains("s1: rewrapped to bank-a/escrow@v2")
            && stdout.contains("s3: rewrapped to bank-a/escrow@v2"),
        "{stdout}"
    );
    assert!(
        err.contains("s2: NOT rewrapped") && err.contains("1 of 3 secrets could not be rewrapped"),
        "{err}"
    );
}

#[test]
fn replacing_a_secret_replaces_its_mirror_copy() {
    let site = Site::new(Vec::new(), None);
    let kms = site.serve(&[]);
    site.keygen(&kms, "bank-a", "escrow");
    site.keygen(&kms, "bank-a", "mirror");
    site.agent(&kms, "bank-a", &site.p("second").display().to_string());
    site.put("bank-a", "token", "password", b"old value", &["--mirror"]);
    site.put("bank-a", "token", "password", b"new value", &["--replace"]);
    assert_eq!(
        succeeded(site.recover("bank-a", "token", &[])),
        b"new value"
    );
    assert_eq!(
        succeeded(site.recover("bank-a", "token", &["--mirror"])),
        b"new value"
    );
}

#[test]
fn restore_never_creates_its_source_and_caps_the_unsealing_cost() {
    let site = Site::new(Vec::new(), None);
    site.node("kms-2");
    let restore = |from: &Path, extra: &[&str]| {
        let home = site.p("kms-2");
        let pw = site.p("pw");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"kms",
            &"restore",
            &"--home",
            &home,
            &"--from",
            &from,
            &"--password-file",
            &pw,
        ];
        for e in extra {
            args.push(e);
        }
        failed(run(&[], &args, None))
    };
    let missing = site.p("thrid");
    let err = restore(&missing, &[]);
    assert!(err.contains("no such directory"), "{err}");
    assert!(!missing.exists(), "restore must not create its source");
    // A bundle (its signed header stripped) asking Argon2id for five times
    // the sealing memory is refused before any derivation.
    let bytes = std::fs::read(site.p("third/kms-bundle.sealed")).unwrap();
    let mut legacy = bytes[121..].to_vec();
    legacy[9..13].copy_from_slice(&(5 * 65536u32).to_be_bytes());
    std::fs::create_dir(site.p("forged")).unwrap();
    std::fs::write(site.p("forged/kms-bundle.sealed"), &legacy).unwrap();
    let err = restore(&site.p("forged"), &[]);
    assert!(
        err.contains("m=327680 KiB") && err.contains("above the ceiling"),
        "{err}"
    );
    let err = restore(&site.p("forged"), &["--max-unseal-memory-mib", "1024"]);
    assert!(
        err.contains("wrong password, or the sealed bundle was altered"),
        "{err}"
    );
    assert!(!site.p("kms-2/kms.redb").exists());
}
