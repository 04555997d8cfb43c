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

/// A `sotto registry serve` child with its standard error captured.
struct Center {
    child: std::process::Child,
    address: String,
}

impl Center {
    fn start(dir: &std::path::Path, policy: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args([
                "--quiet",
                "registry",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--dev",
            ])
            .arg("--home")
            .arg(dir.join("center"))
            .arg("--policy")
            .arg(policy)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().trim_start_matches("listening on ").to_owned();
        Center { child, address }
    }

    /// Stops the center and returns what it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let out = self.child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn a_center_restarted_with_a_stricter_policy_suspends_members_it_no_longer_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    ok(&[&"ca", &"init", &"--dir", &p("ca")]);
    for name in ["center", "node-1"] {
        ok(&[&"init", &"--home", &p(name), &"--name", &name]);
        ok(&[&"ca", &"issue", &"--dir", &p("ca"), &"--home", &p(name)]);
        ok(&[
            &"identity",
            &"export",
            &"--home",
            &p(name),
            &"--out",
            &p(&format!("{name}.json")),
        ]);
    }
    ok(&[&"peer", &"add", &"--home", &p("node-1"), &p("center.json")]);
    let out = ok(&[&"tee", &"platform-key", &"--out", &p("platform.key")]);
    let platform = out.trim().rsplit(' ').next().unwrap().to_owned();
    let ours = ok(&[&"tee", &"measure"]).trim().to_owned();
    let policy = |measurement: &str| {
        format!("platforms = [\"sgx\"]\nmeasurements = [\"{measurement}\"]\nallow_software = true\nsoftware_platform_keys = [\"{platform}\"]\n")
    };
    std::fs::write(p("lenient.toml"), policy(&ours)).unwrap();
    std::fs::write(p("strict.toml"), policy(&"00".repeat(32))).unwrap();
    let node = |center: &Center, args: &[&str]| {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"node"];
        for a in args {
            all.push(a);
        }
        let home = p("node-1");
        all.extend([
            &"--home" as &dyn AsRef<std::ffi::OsStr>,
            &home,
            &"--connect",
            &center.address,
            &"--center",
            &"center",
        ]);
        common::sotto(&all)
    };
    let center = Center::start(dir.path(), &p("lenient.toml"));
    let key = p("platform.key");
    let out = node(
        &center,
        &["register", "--platform-key", key.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = node(&center, &["group-key"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("group key v1"));
    center.stop();
    let center = Center::start(dir.path(), &p("strict.toml"));
    let out = node(&center, &["group-key"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("node-1 is suspended"),
        "{err}"
    );
    let out = node(&center, &["members"]);
    let members = String::from_utf8_lossy(&out.stdout);
    assert!(members.contains("(0 members, group key v2"), "{members}");
    let log = center.stop();
    assert!(
        log.contains("suspended: the policy no longer accepts its evidence")
            && log.contains("is not on the policy's allowlist")
            && log.contains("group key rotated to v2"),
        "{log}"
    );
}
