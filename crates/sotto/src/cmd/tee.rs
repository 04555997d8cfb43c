//! `sotto tee`: measure this binary, make software evidence (development
//! only), and verify evidence of any supported platform against a policy.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use super::node::ForceArg;
use sotto_node::OutputRules;
use sotto_tee::dcap::{parse_collateral, verify_quote};
use sotto_tee::enclave::Enclave;
use sotto_tee::evidence::Verified;
use sotto_tee::policy::Policy;
use sotto_tee::snp::{parse_ca_chain, verify_report};
use sotto_tee::software::{measure_file, verify_evidence, PlatformKey, SoftwareEnclave};

/// Trusted-execution commands.
#[derive(Subcommand)]
pub enum TeeCommand {
    /// Print the software backend's measurement (SHA-256) of an executable
    /// (default: this sotto binary), for a policy's allowlist.
    Measure(MeasureArgs),
    /// Create a software platform key (development only: evidence signed
    /// with it is NOT hardware-protected).
    PlatformKey(PlatformKeyArgs),
    /// Produce software evidence binding 64 bytes of report data to this
    /// binary's measurement (development only; NOT hardware-protected).
    Evidence(EvidenceArgs),
    /// Verify evidence (SGX or TDX quote, SEV-SNP report, or software
    /// evidence) and decide on it with a policy. Prints the typed result and
    /// the decision as JSON; exits with an error if it is refused.
    Verify(VerifyArgs),
}

/// Arguments of `tee measure`.
#[derive(Args)]
pub struct MeasureArgs {
    /// The executable to measure (default: this binary).
    #[arg(long, value_name = "FILE")]
    exe: Option<PathBuf>,
}

/// Arguments of `tee platform-key`.
#[derive(Args)]
pub struct PlatformKeyArgs {
    /// Where to write the key (mode 0600; refused if it exists: a key is
    /// never overwritten).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Arguments of `tee evidence`.
#[derive(Args)]
pub struct EvidenceArgs {
    /// The software platform key.
    #[arg(long, value_name = "FILE")]
    platform_key: PathBuf,
    /// The 64 bytes to bind, as 128 hex digits.
    #[arg(long, value_name = "HEX")]
    report_data: String,
    /// Where to write the evidence.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    force: ForceArg,
}

/// Which kind of evidence a file holds.
#[derive(Clone, Copy, ValueEnum)]
pub enum EvidenceKind {
    /// An Intel SGX or TDX DCAP quote (needs --collateral).
    Dcap,
    /// An AMD SEV-SNP attestation report (needs --vcek and --ark-ask).
    SevSnp,
    /// sotto software evidence (needs --software-key, or keys in the policy).
    Software,
}

/// Arguments of `tee verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// The evidence file.
    evidence: PathBuf,
    /// What the evidence is.
    #[arg(long, value_enum)]
    kind: EvidenceKind,
    /// The policy (TOML: platforms, measurements, min_tcb, allow_software, ...).
    #[arg(long, value_name = "TOML")]
    policy: PathBuf,
    /// DCAP collateral (JSON: PCK CRL, root CA CRL, TCB info, QE identity and issuer chains).
    #[arg(long, value_name = "JSON")]
    collateral: Option<PathBuf>,
    /// SEV-SNP: the VCEK certificate (DER).
    #[arg(long, value_name = "DER")]
    vcek: Option<PathBuf>,
    /// SEV-SNP: the ARK and ASK certificates (PEM).
    #[arg(long, value_name = "PEM")]
    ark_ask: Option<PathBuf>,
    /// Verify as of this time (Unix seconds; default: now). Collateral
    /// outside its validity at that time is refused.
    #[arg(long, value_name = "UNIX")]
    now: Option<u64>,
    /// The report data the evidence must carry (128 hex digits), e.g. the
    /// hash of a nonce and a key.
    #[arg(long, value_name = "HEX")]
    expect_report_data: Option<String>,
    /// Development mode: the only mode in which a policy may accept
    /// software evidence.
    #[arg(long)]
    dev: bool,
}

/// Runs a `tee` command.
pub fn run(command: TeeCommand) -> Result<()> {
    match command {
        TeeCommand::Measure(a) => {
            let exe = match a.exe {
                Some(exe) => exe,
                None => std::env::current_exe()?,
            };
            println!("{}", hex::encode(measure_file(&exe)?));
            Ok(())
        }
        TeeCommand::PlatformKey(a) => {
            OutputRules::new(false).check(&a.out)?;
            let key = PlatformKey::generate(&mut rand::rngs::OsRng);
            sotto_node::files::write_atomic(
                &a.out,
                key.to_bytes().as_slice(),
                sotto_node::files::Visibility::Private,
            )?;
            println!(
                "software platform key written to {} (NOT hardware-protected); its public key for policies: {}",
                a.out.display(),
                key.public()
            );
            Ok(())
        }
        TeeCommand::Evidence(a) => {
            a.force.rules().with_input(&a.platform_key).check(&a.out)?;
            let enclave = SoftwareEnclave::current(PlatformKey::read(&a.platform_key)?)?;
            let evidence = enclave.evidence(&report_data(&a.report_data)?)?;
            sotto_node::files::write_atomic(
                &a.out,
                &evidence,
                sotto_node::files::Visibility::Public,
            )?;
            println!(
                "software evidence (NOT hardware-protected) for measurement {} written to {}",
                hex::encode(enclave.measurement()),
                a.out.display()
            );
            Ok(())
        }
        TeeCommand::Verify(a) => verify(&a),
    }
}

fn report_data(text: &str) -> Result<[u8; 64]> {
    let bytes = hex::decode(text.trim()).context("--report-data: not hexadecimal")?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!(
            "report data must be 64 bytes (128 hex digits), got {}",
            b.len()
        )
    })
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

fn verify(a: &VerifyArgs) -> Result<()> {
    let policy = Policy::read(&a.policy)?;
    let evidence = read(&a.evidence, "evidence")?;
    let now = match a.now {
        Some(now) => now,
        None => time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
    };
    let verified: Verified = match a.kind {
        EvidenceKind::Dcap => {
            let path = a
                .collateral
                .as_ref()
                .context("--kind dcap needs --collateral FILE")?;
            verify_quote(
                &evidence,
                &parse_collateral(&read(path, "collateral")?)?,
                now,
            )?
        }
        EvidenceKind::SevSnp => {
            let vcek = a
                .vcek
                .as_ref()
                .context("--kind sev-snp needs --vcek FILE")?;
            let chain = a
                .ark_ask
                .as_ref()
                .context("--kind sev-snp needs --ark-ask FILE")?;
            verify_report(
                &evidence,
                &read(vcek, "VCEK")?,
                parse_ca_chain(&read(chain, "ARK/ASK chain")?)?,
            )?
        }
        EvidenceKind::Software => verify_evidence(&evidence, &policy.software_platform_keys)?,
    };
    let mut decision = policy.decide(&verified, a.dev);
    if let Some(expected) = &a.expect_report_data {
        if verified.report_data != report_data(expected)? {
            decision.accepted = false;
            decision.reasons.push(
                "the report data differs from --expect-report-data (stale or replayed evidence?)"
                    .into(),
            );
        }
    }
    let out = serde_json::json!({ "evidence": verified, "decision": decision });
    println!("{}", serde_json::to_string_pretty(&out)?);
    if !verified.hardware_protected {
        eprintln!("warning: software evidence is NOT hardware-protected");
    }
    if !decision.accepted {
        bail!(
            "evidence refused by policy {}: {}",
            a.policy.display(),
            decision.reasons.join("; ")
        );
    }
    Ok(())
}
