//! Shared set-up for the demos and the benchmarks: running `sotto` steps as
//! child processes, certified nodes that pin each other, and server
//! processes (a PSI provider, a registration center, ...).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Runs `sotto` steps as child processes and times them.
pub struct Runner {
    /// The `sotto` binary.
    pub exe: PathBuf,
    /// Show nothing of the steps' output.
    pub quiet: bool,
    /// Label and seconds of every step run.
    pub steps: Vec<(String, f64)>,
}

impl Runner {
    /// A runner for this very binary.
    pub fn new(quiet: bool) -> Result<Self> {
        Ok(Self {
            exe: std::env::current_exe().context("locating the sotto binary")?,
            quiet,
            steps: Vec::new(),
        })
    }

    /// Runs one step; fails with its output if it fails.
    pub fn sotto(&mut self, label: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Result<String> {
        let stdout = String::from_utf8_lossy(&self.sotto_bytes(label, args, None)?).into_owned();
        if !self.quiet {
            for line in stdout.lines() {
                println!("  [{label}] {line}");
            }
        }
        Ok(stdout)
    }

    /// Runs one step with `stdin` as its standard input (none if `None`)
    /// and returns its standard output unchanged and unshown.
    pub fn sotto_bytes(
        &mut self,
        label: &str,
        args: &[&dyn AsRef<std::ffi::OsStr>],
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        let start = Instant::now();
        let mut command = Command::new(&self.exe);
        command.arg("--quiet");
        for a in args {
            command.arg(a);
        }
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            std::io::Write::write_all(&mut pipe, bytes)
                .with_context(|| format!("step `{label}`: writing its input"))?;
        }
        let out = child.wait_with_output()?;
        self.steps
            .push((label.to_owned(), start.elapsed().as_secs_f64()));
        if !out.status.success() {
            bail!(
                "step `{label}` failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    }
}

/// Creates a consortium CA and two certified homes, bank-a and bank-b, in
/// `dir`, each pinning the other's profile.
pub fn two_certified_banks(r: &mut Runner, dir: &Path) -> Result<()> {
    certified_nodes(r, dir, &["bank-a", "bank-b"])
}

/// Creates a consortium CA and one certified home per name in `dir`; every
/// node pins every other node's profile.
pub fn certified_nodes(r: &mut Runner, dir: &Path, names: &[&str]) -> Result<()> {
    let p = |name: &str| dir.join(name);
    r.sotto("ca init", &[&"ca", &"init", &"--dir", &p("consortium-ca")])?;
    for name in names {
        let home = p(name);
        r.sotto(
            &format!("{name} init"),
            &[&"init", &"--home", &home, &"--name", name],
        )?;
        r.sotto(
            &format!("{name} cert"),
            &[
                &"ca",
                &"issue",
                &"--dir",
                &p("consortium-ca"),
                &"--home",
                &home,
            ],
        )?;
        let profile = p(&format!("{name}.profile.json"));
        r.sotto(
            &format!("{name} export"),
            &[&"identity", &"export", &"--home", &home, &"--out", &profile],
        )?;
    }
    for name in names {
        for other in names.iter().filter(|o| *o != name) {
            r.sotto(
                &format!("{name} pins {other}"),
                &[
                    &"peer",
                    &"add",
                    &"--home",
                    &p(name),
                    &p(&format!("{other}.profile.json")),
                ],
            )?;
        }
    }
    Ok(())
}

/// A long-running `sotto` server child (started with `--listen
/// 127.0.0.1:0`), killed when dropped. Its standard error goes to a log
/// file, so its warnings stay out of the caller's output but are kept.
pub struct ServerProcess(Child);

impl ServerProcess {
    /// Starts `exe --quiet ARGS`, waits for its `listening on ADDRESS` line
    /// and returns it with that address; `what` names it in errors.
    pub fn start(
        exe: &Path,
        args: &[std::ffi::OsString],
        log: &Path,
        what: &str,
    ) -> Result<(Self, String)> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(exe)
            .arg("--quiet")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting the {what}"))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let server = ServerProcess(child);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        match line.trim().strip_prefix("listening on ") {
            Some(address) => Ok((server, address.to_owned())),
            None => bail!(
                "the {what} did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default().trim()
            ),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Peak resident memory of the server so far (Linux), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        sotto_node::process::peak_rss_bytes(Some(self.0.id()))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a `sotto psi serve` provider on a free loopback port (log in
/// `provider.log` beside its home). `extra` holds key and mode options.
pub fn start_provider(
    exe: &Path,
    extra: &[&str],
    home: &Path,
    input: &Path,
    output_dir: Option<&Path>,
) -> Result<(ServerProcess, String)> {
    let mut args: Vec<std::ffi::OsString> = ["psi", "serve", "--listen", "127.0.0.1:0"]
        .iter()
        .chain(extra)
        .map(Into::into)
        .collect();
    args.extend(["--home".into(), home.into(), "--input".into(), input.into()]);
    if let Some(dir) = output_dir {
        args.extend(["--output-dir".into(), dir.into()]);
    }
    let log = home.with_extension("provider.log");
    ServerProcess::start(exe, &args, &log, "provider")
}

/// The operator password file of a KMS site made by [`kms_site`].
pub const KMS_PASSWORD_FILE: &str = "operator.password";
/// The third environment of a KMS site made by [`kms_site`].
pub const KMS_THIRD_ENV: &str = "third-env";

/// Creates, in `dir`, a consortium CA, certified homes `kms` and `bank-a`,
/// the operator password file (generated data for demos and benchmarks;
/// an operator types it at a TTY prompt) and the root KMS in `kms`,
/// sealing to `third-env`.
pub fn kms_site(r: &mut Runner, dir: &Path, password: &str) -> Result<()> {
    certified_nodes(r, dir, &["kms", "bank-a"])?;
    std::fs::write(dir.join(KMS_PASSWORD_FILE), password)?;
    r.sotto(
        "kms init",
        &[
            &"kms",
            &"init",
            &"--home",
            &dir.join("kms"),
            &"--backup",
            &dir.join(KMS_THIRD_ENV),
            &"--password-file",
            &dir.join(KMS_PASSWORD_FILE),
        ],
    )?;
    Ok(())
}

/// Starts `sotto kms serve` for the site's `kms` home with `extra`
/// arguments (log in `kms.log`).
pub fn start_kms(exe: &Path, dir: &Path, extra: &[&str]) -> Result<(ServerProcess, String)> {
    let mut args: Vec<std::ffi::OsString> = ["kms", "serve", "--listen", "127.0.0.1:0"]
        .iter()
        .chain(extra)
        .map(Into::into)
        .collect();
    args.extend([
        "--home".into(),
        dir.join("kms").into(),
        "--password-file".into(),
        dir.join(KMS_PASSWORD_FILE).into(),
    ]);
    ServerProcess::start(exe, &args, &dir.join("kms.log"), "root KMS")
}

/// Configures the site's `bank-a` agent against the KMS at `address`,
/// escrowing to `second-env` (and mirror copies to `mirror-site` if
/// `mirror`).
pub fn init_agent(r: &mut Runner, dir: &Path, address: &str, mirror: bool) -> Result<()> {
    let (home, store, mirror_store) = (
        dir.join("bank-a"),
        dir.join("second-env"),
        dir.join("mirror-site"),
    );
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"secrets",
        &"init",
        &"--home",
        &home,
        &"--connect",
        &address,
        &"--store",
        &store,
    ];
    if mirror {
        args.extend([
            &"--mirror-store" as &dyn AsRef<std::ffi::OsStr>,
            &mirror_store,
        ]);
    }
    r.sotto("agent init", &args)?;
    Ok(())
}
