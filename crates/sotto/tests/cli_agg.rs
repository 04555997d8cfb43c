//! Secure aggregation with the real binary: a coordinator process and client
//! processes over mutual TLS on loopback.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

mod common;

use common::{fails, ok};

struct World {
    dir: tempfile::TempDir,
}

/// A running `sotto agg serve`, killed when dropped.
struct Coordinator {
    child: Option<Child>,
    address: String,
}

impl Coordinator {
    fn wait(mut self) -> Output {
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const TABLES: [&str; 3] = [
    "customer,debt,loans\na,100.50,1\nb,-20.25,2\nc,7,1\n",
    "customer,debt,loans\na,1000,3\nd,0.01,1\n",
    "customer,debt,loans\nb,50,1\nc,3.5,2\nd,1,1\n",
];

/// id -> (debt_total, loans_total, institutions) for all three tables.
const EXPECTED_ALL: &str = "id,debt_total,loans_total,institutions\na,1100.50,4,2\nb,29.75,3,2\nc,10.50,3,2\nd,1.01,2,2\ne,0.00,0,0\n";
/// The same without lender-3.
const EXPECTED_WITHOUT_3: &str = "id,debt_total,loans_total,institutions\na,1100.50,4,2\nb,-20.25,2,1\nc,7.00,1,1\nd,0.01,1,1\ne,0.00,0,0\n";

impl World {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn new(clients: usize, join_seconds: u32, step_seconds: u32) -> Self {
        let w = World {
            dir: tempfile::tempdir().unwrap(),
        };
        ok(&[&"ca", &"init", &"--dir", &w.p("ca")]);
        let mut names = vec!["bureau".to_owned()];
        names.extend((1..=clients).map(|i| format!("lender-{i}")));
        for name in &names {
            ok(&[&"init", &"--home", &w.p(name), &"--name", name]);
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
        for name in &names {
            for other in names.iter().filter(|o| *o != name) {
                ok(&[
                    &"peer",
                    &"add",
                    &"--home",
                    &w.p(name),
                    &w.p(&format!("{other}.json")),
                ]);
            }
        }
        let quoted: Vec<String> = (1..=clients).map(|i| format!("\"lender-{i}\"")).collect();
        std::fs::write(
            w.p("job.toml"),
            format!(
                "name = \"test-job\"\ncoordinator = \"bureau\"\nclients = [{}]\nmin_clients = 2\n\n[deadlines]\njoin_seconds = {join_seconds}\nstep_seconds = {step_seconds}\n\n[[column]]\nname = \"debt\"\nscale = 100\nmin = \"-1000\"\nmax = \"100000\"\n\n[[column]]\nname = \"loans\"\nscale = 1\nmin = \"0\"\nmax = \"10\"\n",
                quoted.join(", ")
            ),
        )
        .unwrap();
        std::fs::write(w.p("query.csv"), "id\na\nb\nc\nd\ne\n").unwrap();
        for (i, table) in TABLES.iter().enumerate().take(clients) {
            std::fs::write(w.p(&format!("lender-{}.csv", i + 1)), table).unwrap();
        }
        w
    }

    fn serve(&self, extra: &[&str]) -> Coordinator {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .args(["--quiet", "agg", "serve", "--listen", "127.0.0.1:0"])
            .arg("--home")
            .arg(self.p("bureau"))
            .arg("--job")
            .arg(self.p("job.toml"))
            .arg("--query")
            .arg(self.p("query.csv"))
            .arg("--output")
            .arg(self.p("result.csv"))
            .arg("--report")
            .arg(self.p("report.json"))
            .args(extra)
            .env_remove("SOTTO_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("coordinator did not start: {line:?}"))
            .to_owned();
        Coordinator {
            child: Some(child),
            address,
        }
    }

    fn join_command(&self, home: &str, table: &str, address: &str) -> Command {
        self.join_command_with_job(home, table, address, "job.toml")
    }

    fn join_command_with_job(&self, home: &str, table: &str, address: &str, job: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sotto"));
        c.args([
            "--quiet",
            "agg",
            "join",
            "--connect",
            address,
            "--id-column",
            "customer",
        ])
        .arg("--home")
        .arg(self.p(home))
        .arg("--job")
        .arg(self.p(job))
        .arg("--table")
        .arg(self.p(table))
        .arg("--output")
        .arg(self.p(&format!("{home}-result.csv")))
        .env_remove("SOTTO_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    }

    fn join(&self, i: usize, address: &str) -> Child {
        let name = format!("lender-{i}");
        self.join_command(&name, &format!("{name}.csv"), address)
            .spawn()
            .unwrap()
    }
}

fn text(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn job_of_three_lenders_matches_the_plaintext_sums_everywhere() {
    let w = World::new(3, 60, 60);
    let c = w.serve(&[]);
    let clients: Vec<Child> = (1..=3).map(|i| w.join(i, &c.address)).collect();
    for client in clients {
        let out = client.wait_with_output().unwrap();
        assert!(out.status.success(), "client: {}", stderr(&out));
    }
    let out = c.wait();
    assert!(out.status.success(), "coordinator: {}", stderr(&out));
    assert_eq!(text(&w.p("result.csv")), EXPECTED_ALL);
    for i in 1..=3 {
        assert_eq!(text(&w.p(&format!("lender-{i}-result.csv"))), EXPECTED_ALL);
    }
    let report: serde_json::Value = serde_json::from_str(&text(&w.p("report.json"))).unwrap();
    assert_eq!(report["customers_found"], 4);
    assert_eq!(report["attempt"], 1);
    // A new process reads the job log the coordinator left.
    let log = ok(&[&"agg", &"log", &"--home", &w.p("bureau")]);
    assert!(log.contains("Completed"), "{log}");
    assert!(
        log.contains(report["transcript"].as_str().unwrap()),
        "{log}"
    );
}

#[test]
fn a_client_that_never_joins_aborts_the_job_naming_it() {
    let w = World::new(3, 3, 30);
    let c = w.serve(&[]);
    let clients: Vec<Child> = (1..=2).map(|i| w.join(i, &c.address)).collect();
    let out = c.wait();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("client lender-3 missed the deadline for its join"),
        "{err}"
    );
    assert!(err.contains("no result was released"), "{err}");
    for client in clients {
        let out = client.wait_with_output().unwrap();
        assert!(!out.status.success());
        assert!(stderr(&out).contains("lender-3"), "{}", stderr(&out));
    }
    for file in ["result.csv", "lender-1-result.csv", "lender-2-result.csv"] {
        assert!(!w.p(file).exists(), "{file}");
    }
}

#[test]
fn rerun_without_missing_completes_on_the_remaining_clients() {
    let w = World::new(3, 3, 30);
    let c = w.serve(&["--rerun-without-missing"]);
    let clients: Vec<Child> = (1..=2).map(|i| w.join(i, &c.address)).collect();
    for client in clients {
        let out = client.wait_with_output().unwrap();
        assert!(out.status.success(), "client: {}", stderr(&out));
    }
    let out = c.wait();
    assert!(out.status.success(), "coordinator: {}", stderr(&out));
    assert_eq!(text(&w.p("result.csv")), EXPECTED_WITHOUT_3);
    let report: serde_json::Value = serde_json::from_str(&text(&w.p("report.json"))).unwrap();
    assert_eq!(report["left_out"], serde_json::json!(["lender-3"]));
}

#[test]
fn bad_tables_are_refused_with_file_line_and_column_before_connecting() {
    let w = World::new(2, 60, 60);
    let cases = [
        (
            "customer,debt,loans\na,12x,1\n",
            ":2:2:",
            "not a decimal number",
        ),
        (
            "customer,debt,loans\na,1,1\nb,100001,1\n",
            ":3:2:",
            "outside the declared range",
        ),
        (
            "customer,debt,loans\na,1,1\nb,2,2\na,3,3\n",
            ":4:1:",
            "already appears on line 2",
        ),
        (
            "customer,debt,loans\na,1.001,1\n",
            ":2:2:",
            "decimal places",
        ),
        (
            "customer,amount,loans\na,1,1\n",
            ":1:",
            "no column named \"debt\"",
        ),
        ("customer,debt,loans\n,1,1\n", ":2:1:", "empty id"),
    ];
    for (i, (table, place, reason)) in cases.iter().enumerate() {
        let name = format!("bad-{i}.csv");
        std::fs::write(w.p(&name), table).unwrap();
        // Port 9 on loopback: nothing listens, so reaching the network
        // would fail differently.
        let out = w
            .join_command("lender-1", &name, "127.0.0.1:9")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(&format!("{name}{place}")), "case {i}: {err}");
        assert!(err.contains(reason), "case {i}: {err}");
        assert!(!err.contains("transport"), "case {i}: {err}");
    }
    let err = fails(&[
        &"agg",
        &"join",
        &"--home",
        &w.p("lender-1"),
        &"--connect",
        &"127.0.0.1:9",
        &"--job",
        &w.p("job.toml"),
        &"--table",
        &w.p("lender-1.csv"),
        &"--id-column",
        &"customer",
        &"--column",
        &"limit=x",
    ]);
    assert!(err.contains("the job has no column \"limit\""), "{err}");
}

#[test]
fn an_impostor_with_a_valid_certificate_is_refused() {
    let w = World::new(2, 60, 60);
    // Same name as a real client, certified by the same CA, different key.
    ok(&[&"init", &"--home", &w.p("impostor"), &"--name", &"lender-2"]);
    ok(&[
        &"ca",
        &"issue",
        &"--dir",
        &w.p("ca"),
        &"--home",
        &w.p("impostor"),
    ]);
    ok(&[
        &"peer",
        &"add",
        &"--home",
        &w.p("impostor"),
        &w.p("bureau.json"),
    ]);
    let c = w.serve(&[]);
    let out = w
        .join_command("impostor", "lender-2.csv", &c.address)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is not a pinned client of this job"), "{err}");
    // The real clients still complete the job.
    let clients: Vec<Child> = (1..=2).map(|i| w.join(i, &c.address)).collect();
    for client in clients {
        assert!(client.wait_with_output().unwrap().status.success());
    }
    assert!(c.wait().status.success());
    assert!(text(&w.p("result.csv")).starts_with("id,debt_total"));
}

#[test]
fn a_job_file_that_differs_from_the_coordinators_is_refused_by_the_client() {
    let w = World::new(2, 5, 30);
    let c = w.serve(&[]);
    let changed = text(&w.p("job.toml")).replace("max = \"10\"", "max = \"11\"");
    std::fs::write(w.p("job-2.toml"), changed).unwrap();
    let mut cmd = w.join_command_with_job("lender-1", "lender-1.csv", &c.address, "job-2.toml");
    let lender_2 = w.join(2, &c.address);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("job digest differs"), "{err}");
    let coordinator = c.wait();
    assert!(!coordinator.status.success());
    let _ = lender_2.wait_with_output();
    assert!(!w.p("result.csv").exists());
}

#[test]
fn a_rerun_never_falls_below_min_clients() {
    let w = World::new(3, 3, 30);
    let job = text(&w.p("job.toml")).replace("min_clients = 2\n", "");
    std::fs::write(w.p("job.toml"), job).unwrap();
    let c = w.serve(&["--rerun-without-missing"]);
    let clients: Vec<Child> = (1..=2).map(|i| w.join(i, &c.address)).collect();
    for client in clients {
        let out = client.wait_with_output().unwrap();
        assert!(!out.status.success(), "no client may get a 2-client result");
    }
    let out = c.wait();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("lender-3"), "{err}");
    assert!(!w.p("result.csv").exists());
    assert!(!w.p("lender-1-result.csv").exists() && !w.p("lender-2-result.csv").exists());
    // A job file naming 2 clients without min_clients says what each learns.
    let two = World::new(2, 3, 30);
    let job = text(&two.p("job.toml")).replace("min_clients = 2\n", "");
    std::fs::write(two.p("job.toml"), job).unwrap();
    let out = two
        .join_command("lender-1", "lender-1.csv", "127.0.0.1:9")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("min_clients") && err.contains("each learns the other's exact figures"),
        "{err}"
    );
}

#[test]
fn a_second_join_under_a_connected_name_does_not_drop_the_first() {
    let w = World::new(3, 20, 30);
    let log = w.p("coordinator.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["agg", "serve", "--listen", "127.0.0.1:0"])
        .arg("--home")
        .arg(w.p("bureau"))
        .arg("--job")
        .arg(w.p("job.toml"))
        .arg("--query")
        .arg(w.p("query.csv"))
        .arg("--output")
        .arg(w.p("result.csv"))
        .env_remove("SOTTO_HOME")
        .env_remove("SOTTO_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let c = Coordinator {
        child: Some(child),
        address: line.trim().trim_start_matches("listening on ").to_owned(),
    };
    let first = w.join(1, &c.address);
    // Once the first connection is admitted, join again as lender-1.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("joined")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "lender-1 never joined"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = w
        .join_command("lender-1", "lender-1.csv", &c.address)
        .arg("--force")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("already connected to this job"),
        "{err}"
    );
    let others: Vec<Child> = (2..=3).map(|i| w.join(i, &c.address)).collect();
    for client in std::iter::once(first).chain(others) {
        let out = client.wait_with_output().unwrap();
        assert!(out.status.success(), "client: {}", stderr(&out));
    }
    let out = c.wait();
    assert!(out.status.success(), "coordinator failed");
    assert_eq!(text(&w.p("result.csv")), EXPECTED_ALL);
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("a second connection under this name was refused"));
}

#[test]
fn outputs_of_a_job_never_replace_its_inputs_or_existing_files() {
    let w = World::new(2, 60, 60);
    let table_before = text(&w.p("lender-1.csv"));
    let out = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["--quiet", "agg", "join", "--connect", "127.0.0.1:9"])
        .arg("--home")
        .arg(w.p("lender-1"))
        .arg("--job")
        .arg(w.p("job.toml"))
        .arg("--table")
        .arg(w.p("lender-1.csv"))
        .arg("--output")
        .arg(w.p("lender-1.csv"))
        .arg("--force")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("is also an input of this command"),
        "{}",
        stderr(&out)
    );
    assert_eq!(text(&w.p("lender-1.csv")), table_before);
    std::fs::write(w.p("result.csv"), "precious").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(["--quiet", "agg", "serve", "--listen", "127.0.0.1:0"])
        .arg("--home")
        .arg(w.p("bureau"))
        .arg("--job")
        .arg(w.p("job.toml"))
        .arg("--query")
        .arg(w.p("query.csv"))
        .arg("--output")
        .arg(w.p("result.csv"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "no 'listening on'"
    );
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(text(&w.p("result.csv")), "precious");
}
