//! `sotto demo kms`: a root KMS and a participant as separate processes.
//! The participant escrows one secret of every kind (a business root key
//! with a mirror copy, a sub-key derived from it, a layered final result,
//! ...), loses its memory and its whole home, and recovers every secret
//! byte for byte; then the KMS host is lost, rebuilt from the sealed bundle
//! in the third environment with the operator password (a wrong one is
//! refused first), and every secret is recovered again.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use rand::RngCore;
use sotto_kms::hierarchy::BusinessRootKey;

use super::setup::{init_agent, kms_site, start_kms, Runner, KMS_PASSWORD_FILE, KMS_THIRD_ENV};

const FLOW: &str = "credit-scoring-2026";
const SUB_KEY_LABEL: &str = "task-7/step-2";
const PASSWORD: &str = "demo operator password (use a TTY prompt in production)";

/// One secret the participant holds in memory.
struct Held {
    id: &'static str,
    kind: &'static str,
    bytes: Vec<u8>,
    extra: &'static [&'static str],
}

fn secrets() -> Vec<Held> {
    let root = BusinessRootKey::generate(&mut rand::rngs::OsRng);
    let sub_key = root.sub_key(FLOW, SUB_KEY_LABEL).expose().to_vec();
    let mut session = vec![0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut session);
    let text = |s: &str| s.as_bytes().to_vec();
    vec![
        Held {
            id: "flow-root",
            kind: "business-root-key",
            bytes: root.expose().to_vec(),
            extra: &["--mirror"],
        },
        Held {
            id: "flow-sub-key",
            kind: "business-sub-key",
            bytes: sub_key,
            extra: &[],
        },
        Held {
            id: "gradients-round-3",
            kind: "intermediate-result",
            bytes: text("w=[0.113,-0.402,0.977] round=3"),
            extra: &[],
        },
        Held {
            id: "model-final",
            kind: "final-result",
            bytes: text("AUC=0.8123 model-sha256=5be1..."),
            extra: &["--key", "bank-a/escrow", "--key", "bank-a/layer2"],
        },
        Held {
            id: "psi-session",
            kind: "session",
            bytes: session,
            extra: &[],
        },
        Held {
            id: "db-password",
            kind: "password",
            bytes: text("correct-horse-7781!"),
            extra: &[],
        },
        Held {
            id: "regulator-grant",
            kind: "authorization-file",
            bytes: text("{\"grant\":\"credit-bureau-2026\",\"scope\":\"scoring\"}"),
            extra: &[],
        },
        Held {
            id: "peer-bank-b",
            kind: "interaction-id",
            bytes: text("bank-b:5f2a9c"),
            extra: &[],
        },
        Held {
            id: "notes",
            kind: "other",
            bytes: text("rotate partner tokens monthly"),
            extra: &[],
        },
    ]
}

fn fresh_participant(r: &mut Runner, dir: &Path, address: &str) -> Result<()> {
    let home = dir.join("bank-a");
    r.sotto(
        "bank-a init",
        &[&"init", &"--home", &home, &"--name", &"bank-a"],
    )?;
    r.sotto(
        "bank-a cert",
        &[
            &"ca",
            &"issue",
            &"--dir",
            &dir.join("consortium-ca"),
            &"--home",
            &home,
        ],
    )?;
    init_agent(r, dir, address, true)
}

fn recover_all(r: &mut Runner, dir: &Path, held: &[Held]) -> Result<()> {
    let home = dir.join("bank-a");
    for secret in held {
        let got = r.sotto_bytes(
            &format!("recover {}", secret.id),
            &[
                &"secrets", &"recover", &"--home", &home, &"--id", &secret.id,
            ],
            None,
        )?;
        ensure!(
            got == secret.bytes,
            "{}: the recovered bytes differ from the escrowed ones",
            secret.id
        );
    }
    let mirror = r.sotto_bytes(
        "recover flow-root from the mirror",
        &[
            &"secrets",
            &"recover",
            &"--home",
            &home,
            &"--id",
            &"flow-root",
            &"--mirror",
        ],
        None,
    )?;
    ensure!(
        mirror == held[0].bytes,
        "the mirror copy of flow-root differs"
    );
    let root: [u8; 32] = mirror
        .as_slice()
        .try_into()
        .context("flow-root is not 32 bytes")?;
    let derived = BusinessRootKey::from_bytes(sotto_crypto::secret::SecretBytes::new(root))
        .sub_key(FLOW, SUB_KEY_LABEL);
    ensure!(
        derived.expose().as_slice() == held[1].bytes,
        "the sub-key derived from the recovered root key differs"
    );
    println!(
        "  all {} secrets recovered byte for byte (flow-root also from its mirror copy; model-final through two layers; the sub-key re-derives from the recovered root key)",
        held.len()
    );
    Ok(())
}

/// Runs the demo in `dir`.
pub fn run(dir: &Path, quiet: bool) -> Result<()> {
    println!(
        "sotto demo kms: a root KMS and a participant (bank-a) as separate processes; escrow in {}",
        dir.join("second-env").display()
    );
    let mut r = Runner::new(quiet)?;
    kms_site(&mut r, dir, PASSWORD)?;
    let kms_home = dir.join("kms");
    let third = dir.join(KMS_THIRD_ENV);
    let (server, address) = start_kms(&r.exe, dir, &[])?;
    for purpose in ["escrow", "mirror", "layer2"] {
        r.sotto(
            &format!("keygen {purpose}"),
            &[
                &"kms",
                &"keygen",
                &"--home",
                &kms_home,
                &"--connect",
                &address,
                &"--owner",
                &"bank-a",
                &"--purpose",
                &purpose,
            ],
        )?;
    }
    init_agent(&mut r, dir, &address, true)?;
    let held = secrets();
    for secret in &held {
        let home = dir.join("bank-a");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"secrets",
            &"put",
            &"--home",
            &home,
            &"--id",
            &secret.id,
            &"--kind",
            &secret.kind,
        ];
        for e in secret.extra {
            args.push(e);
        }
        r.sotto_bytes(&format!("escrow {}", secret.id), &args, Some(&secret.bytes))?;
    }
    println!("  escrowed {} secrets of {} kinds (HPKE to the KMS keys; kind, owner, id, key and version bound)", held.len(), held.len());

    println!("drill 1: the participant loses its memory and its whole home");
    std::fs::remove_dir_all(dir.join("bank-a"))?;
    fresh_participant(&mut r, dir, &address)?;
    recover_all(&mut r, dir, &held)?;

    println!("drill 2: the KMS host is lost and rebuilt from the third environment");
    drop(server);
    std::fs::remove_dir_all(&kms_home)?;
    r.sotto(
        "kms host init",
        &[&"init", &"--home", &kms_home, &"--name", &"kms"],
    )?;
    r.sotto(
        "kms host cert",
        &[
            &"ca",
            &"issue",
            &"--dir",
            &dir.join("consortium-ca"),
            &"--home",
            &kms_home,
        ],
    )?;
    std::fs::write(dir.join("wrong.password"), "not the operator password")?;
    let wrong = r.sotto(
        "restore with a wrong password",
        &[
            &"kms",
            &"restore",
            &"--home",
            &kms_home,
            &"--from",
            &third,
            &"--password-file",
            &dir.join("wrong.password"),
        ],
    );
    let refusal = wrong.err().context("a wrong password was accepted")?;
    ensure!(
        refusal.to_string().contains("wrong password"),
        "unexpected refusal: {refusal:#}"
    );
    ensure!(
        !kms_home.join(sotto_kms::db::DB_FILE).exists(),
        "a refused restore wrote a database"
    );
    println!("  a wrong password is refused and writes nothing");
    r.sotto(
        "kms restore",
        &[
            &"kms",
            &"restore",
            &"--home",
            &kms_home,
            &"--from",
            &third,
            &"--password-file",
            &dir.join(KMS_PASSWORD_FILE),
        ],
    )?;
    let (_server, address) = start_kms(&r.exe, dir, &[])?;
    init_agent(&mut r, dir, &address, true)?;
    recover_all(&mut r, dir, &held)?;
    let audit = r.sotto_bytes(
        "audit verify",
        &[
            &"kms",
            &"audit",
            &"verify",
            &"--home",
            &kms_home,
            &"--connect",
            &address,
        ],
        None,
    )?;
    println!("  {}", String::from_utf8_lossy(&audit).trim());
    println!("demo kms: OK");
    Ok(())
}
