//! `sotto demo tee`: a registration center and three nodes as processes.
//! Two nodes running this binary are admitted and get the same group key;
//! a node running a different binary is refused, naming both measurements;
//! one node is revoked, the key rotates, a watching member is notified, and
//! the revoked node's request is refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

use super::setup::{certified_nodes, Runner, ServerProcess};

fn fingerprint(output: &str) -> Result<(String, String)> {
    let line = output
        .lines()
        .find(|l| l.starts_with("group key v"))
        .context("no group key line")?;
    let mut words = line.split_whitespace();
    let version = words
        .nth(2)
        .unwrap_or_default()
        .trim_end_matches(',')
        .to_owned();
    let fp = words.last().unwrap_or_default().to_owned();
    Ok((version, fp))
}

/// Runs the demo in `dir`.
pub fn run(dir: &Path, quiet: bool) -> Result<()> {
    println!("sotto demo tee: a registration center and three nodes, each a separate process (software enclaves: NOT hardware-protected)");
    let p = |name: &str| dir.join(name);
    let mut r = Runner::new(quiet)?;
    certified_nodes(&mut r, dir, &["center", "node-1", "node-2", "node-3"])?;
    let key_out = r.sotto(
        "platform key",
        &[&"tee", &"platform-key", &"--out", &p("platform.key")],
    )?;
    let platform = key_out
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let ours = r.sotto("measure", &[&"tee", &"measure"])?.trim().to_owned();
    // A different binary: this one with one byte appended.
    let mut other_bytes = std::fs::read(&r.exe)?;
    other_bytes.push(0);
    let other_exe = p("sotto-other");
    std::fs::write(&other_exe, other_bytes)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other_exe, std::fs::Permissions::from_mode(0o755))?;
    }
    let theirs = r
        .sotto("measure other", &[&"tee", &"measure", &"--exe", &other_exe])?
        .trim()
        .to_owned();
    std::fs::write(
        p("policy.toml"),
        format!(
            "platforms = [\"sgx\", \"tdx\", \"sev-snp\"]\nmeasurements = [\"{ours}\", \"{theirs}\"]\nallow_software = true\nsoftware_platform_keys = [\"{platform}\"]\n"
        ),
    )?;
    println!(
        "  policy admits measurements {}… and {}… (software evidence in --dev only)",
        &ours[..16],
        &theirs[..16]
    );

    let serve_args: Vec<std::ffi::OsString> = [
        "registry",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dev",
        "--home",
    ]
    .iter()
    .map(Into::into)
    .chain([
        p("center").into(),
        "--policy".into(),
        p("policy.toml").into(),
    ])
    .collect();
    let (_center, address) =
        ServerProcess::start(&r.exe, &serve_args, &p("center.log"), "registration center")?;
    let center = |home: &str| -> Vec<std::ffi::OsString> {
        vec![
            "--home".into(),
            p(home).into(),
            "--connect".into(),
            address.clone().into(),
            "--center".into(),
            "center".into(),
        ]
    };
    let node = |r: &mut Runner, label: &str, home: &str, args: &[&str]| -> Result<String> {
        let mut all: Vec<std::ffi::OsString> = vec!["node".into()];
        all.extend(args.iter().map(Into::into));
        all.extend(center(home));
        let refs: Vec<&dyn AsRef<std::ffi::OsStr>> = all
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        r.sotto(label, &refs)
    };
    let key = p("platform.key");
    let key_str = key.to_string_lossy().into_owned();
    for n in ["node-1", "node-2"] {
        node(
            &mut r,
            &format!("{n} register"),
            n,
            &["register", "--platform-key", &key_str],
        )?;
    }
    println!("  node-1 and node-2 (this binary) admitted");
    let mut other = Runner::new(quiet)?;
    other.exe = other_exe;
    match node(
        &mut other,
        "node-3 register",
        "node-3",
        &["register", "--platform-key", &key_str],
    ) {
        Ok(_) => bail!("the center admitted a node running a different binary"),
        Err(e) => {
            let text = e.to_string();
            ensure!(
                text.contains("runs different code"),
                "node-3 was refused for another reason: {text}"
            );
            println!(
                "  node-3 (a different binary) refused: runs different code ({}… vs {}…)",
                &theirs[..16],
                &ours[..16]
            );
        }
    }
    let k1 = fingerprint(&node(&mut r, "node-1 key", "node-1", &["group-key"])?)?;
    let k2 = fingerprint(&node(&mut r, "node-2 key", "node-2", &["group-key"])?)?;
    ensure!(
        k1 == k2,
        "members got different group keys: {k1:?} vs {k2:?}"
    );
    println!(
        "  both members hold group key {} (fingerprint {})",
        k1.0, k1.1
    );

    let mut auth_serve: Vec<std::ffi::OsString> = ["node", "auth-serve", "--listen", "127.0.0.1:0"]
        .iter()
        .map(Into::into)
        .collect();
    auth_serve.extend(center("node-1"));
    let (_auth_server, auth_address) = ServerProcess::start(
        &r.exe,
        &auth_serve,
        &p("node-1-auth.log"),
        "node-1 authentication service",
    )?;
    let auth_args = [
        "auth",
        "--peer",
        "node-1",
        "--peer-connect",
        auth_address.as_str(),
    ];
    let authed = node(&mut r, "node-2 auth", "node-2", &auth_args)?;
    ensure!(
        authed.contains("mutually authenticated with node-1"),
        "{authed}"
    );
    println!("  node-2 and node-1 mutually authenticated against the signed membership");

    let mut watch_args: Vec<std::ffi::OsString> = vec![
        "--quiet".into(),
        "node".into(),
        "members".into(),
        "--watch".into(),
        "2".into(),
    ];
    watch_args.extend(center("node-1"));
    let mut watcher = Command::new(&r.exe)
        .args(&watch_args)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut watched = BufReader::new(watcher.stdout.take().context("watcher stdout")?);
    // The first update is the membership now: the watcher is subscribed.
    let mut first = String::new();
    watched.read_line(&mut first)?;
    ensure!(
        first.starts_with("membership v"),
        "the watcher printed {first:?}"
    );
    let mut revoke: Vec<std::ffi::OsString> = vec![
        "registry".into(),
        "revoke".into(),
        "--node".into(),
        "node-2".into(),
    ];
    revoke.extend(center("center"));
    let refs: Vec<&dyn AsRef<std::ffi::OsStr>> = revoke
        .iter()
        .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
        .collect();
    r.sotto("revoke node-2", &refs)?;
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut watched, &mut rest)?;
    watcher.wait()?;
    let after = rest.rsplit("membership v").next().unwrap_or_default();
    ensure!(
        rest.contains("membership v") && !after.contains("node-2"),
        "the watcher saw after the revocation: {rest}"
    );
    println!("  node-1's watch was notified: node-2 revoked");
    let k3 = fingerprint(&node(&mut r, "node-1 key", "node-1", &["group-key"])?)?;
    ensure!(
        k3.0 != k1.0 && k3.1 != k1.1,
        "the key did not rotate on revocation"
    );
    println!("  group key rotated to {} (fingerprint {})", k3.0, k3.1);
    match node(&mut r, "node-2 key", "node-2", &["group-key"]) {
        Ok(_) => bail!("a revoked member got the group key"),
        Err(e) => {
            ensure!(
                e.to_string().contains("revoked"),
                "node-2 refused for another reason: {e}"
            );
            println!("  node-2's request refused: revoked");
        }
    }
    match node(&mut r, "node-2 auth", "node-2", &auth_args) {
        Ok(_) => bail!("a revoked member authenticated to a member"),
        Err(e) => {
            ensure!(
                e.to_string().contains("not an active member"),
                "node-2 auth refused for another reason: {e}"
            );
            println!("  node-2 can no longer authenticate to node-1: not an active member");
        }
    }
    println!("  checked: identical code admitted, different code refused, keys synced, members authenticated, revocation enforced");
    Ok(())
}
