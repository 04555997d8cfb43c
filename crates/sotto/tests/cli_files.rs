//! Files holding private keys, through the real binary: created 0600 inside
//! 0700 directories, and a warning naming the file and the fix when one has
//! become readable by others.

#![allow(clippy::expect_used, clippy::unwrap_used)]
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

mod common;

use common::{ok, sotto};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn private_keys_are_0600_in_0700_directories_and_exposure_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    ok(&[&"ca", &"init", &"--dir", &p("ca")]);
    ok(&[&"init", &"--home", &p("kms"), &"--name", &"kms"]);
    ok(&[&"ca", &"issue", &"--dir", &p("ca"), &"--home", &p("kms")]);
    std::fs::write(p("pw"), "operator password").unwrap();
    std::fs::set_permissions(p("pw"), std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&[
        &"kms",
        &"init",
        &"--home",
        &p("kms"),
        &"--backup",
        &p("third"),
        &"--password-file",
        &p("pw"),
    ]);
    ok(&[&"tee", &"platform-key", &"--out", &p("platform.key")]);
    for (path, expected) in [
        (p("ca"), 0o700),
        (p("ca/ca.key"), 0o600),
        (p("kms"), 0o700),
        (p("kms/sessions"), 0o700),
        (p("kms/peers"), 0o700),
        (p("kms/identity.key"), 0o600),
        (p("kms/bls.keys"), 0o600),
        (p("kms/kms.redb"), 0o600),
        (p("platform.key"), 0o600),
    ] {
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
    let identity = p("kms/identity.key");
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(p("pw"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = sotto(&[&"identity", &"export", &"--home", &p("kms")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert!(
        err.contains(&format!(
            "{} holds private keys but is readable by others (mode 644)",
            identity.display()
        )) && err.contains(&format!("chmod 600 {}", identity.display())),
        "{err}"
    );
    let out = sotto(&[
        &"kms",
        &"restore",
        &"--home",
        &p("kms"),
        &"--from",
        &p("third"),
        &"--password-file",
        &p("pw"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already holds a KMS"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{} holds private keys but is readable by others (mode 640)",
            p("pw").display()
        )),
        "{err}"
    );
    std::fs::write(p("empty-pw"), "").unwrap();
    let out = sotto(&[
        &"kms",
        &"serve",
        &"--home",
        &p("kms"),
        &"--listen",
        &"127.0.0.1:0",
        &"--password-file",
        &p("empty-pw"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the operator password is empty"), "{err}");
    assert!(!err.contains("not a sealed key bundle"), "{err}");
}
