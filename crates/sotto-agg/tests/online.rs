//! The online driver in process, over real mutual-TLS gRPC on loopback: a
//! client that joins but then stalls misses the step deadline; the
//! coordinator aborts that attempt naming it, re-runs without it, and its
//! job log records both attempts.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::OsRng;
use sotto_agg::engine::Client;
use sotto_agg::job::JobSpec;
use sotto_agg::joblog::{JobLog, Outcome, LOG_FILE};
use sotto_agg::message::Step;
use sotto_agg::online::client::{join, ClientConfig};
use sotto_agg::online::coordinator::{serve, CoordinatorConfig};
use sotto_agg::online::frames::{envelope_frames, Assembled, Assembler};
use sotto_agg::online::OnlineError;
use sotto_agg::table::{ClientTable, ColumnMap, Query};
use sotto_net::ca::ConsortiumCa;
use sotto_net::tls::TlsMaterial;
use sotto_node::NodeHome;
use sotto_wire::agg::aggregation_client::AggregationClient;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

const JOB: &str = r#"name = "stall"
coordinator = "bureau"
clients = ["lender-1", "lender-2", "lender-3"]
min_clients = 2
[deadlines]
join_seconds = 30
step_seconds = 2
[[column]]
name = "debt"
scale = 1
min = "0"
max = "1000"
"#;

fn homes(dir: &Path) -> Vec<NodeHome> {
    let now = time::OffsetDateTime::now_utc();
    let ca = ConsortiumCa::init(&dir.join("ca"), "test", now, 30).unwrap();
    let names = ["bureau", "lender-1", "lender-2", "lender-3"];
    let homes: Vec<NodeHome> = names
        .iter()
        .map(|n| {
            let home = NodeHome::init(&dir.join(n), n.parse().unwrap(), 2, &mut OsRng).unwrap();
            ca.enroll(&home, now, now + time::Duration::days(1))
                .unwrap();
            let profile = dir.join(format!("{n}.json"));
            std::fs::write(&profile, home.profile().to_json()).unwrap();
            home
        })
        .collect();
    for home in &homes {
        for other in names.iter().filter(|o| **o != home.name().as_str()) {
            home.pin_peer(&dir.join(format!("{other}.json"))).unwrap();
        }
    }
    homes
}

fn table(dir: &Path, name: &str, spec: &JobSpec, rows: &str) -> Arc<ClientTable> {
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, format!("id,debt\n{rows}")).unwrap();
    let map = ColumnMap::new("id", &spec.columns, &[]);
    Arc::new(ClientTable::read(&path, &map, &spec.columns).unwrap())
}

/// Joins, answers the offer, then reads and ignores everything.
async fn stalled_client(
    home: NodeHome,
    spec: Arc<JobSpec>,
    address: String,
    table: Arc<ClientTable>,
) {
    let tls = TlsMaterial::load(&home).unwrap();
    let channel = tonic::transport::Channel::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls.client_config("bureau"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let mut inbound = AggregationClient::new(channel)
        .join(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let coordinator = home.peer(&"bureau".parse().unwrap()).unwrap().identity;
    let key = home.identity().duplicate();
    let mut engine = Client::new(
        spec,
        home.name().clone(),
        key,
        coordinator,
        Default::default(),
        table,
        OsRng,
    );
    let mut assembler = Assembler::new(1 << 30);
    while let Some(Ok(frame)) = inbound.next().await {
        match assembler.push(frame) {
            Ok(Assembled::Envelope(e)) if e.statement.step == Step::Offer => {
                for reply in engine.handle(e).unwrap() {
                    for f in envelope_frames(&reply) {
                        tx.send(f).await.unwrap();
                    }
                }
            }
            Ok(Assembled::Abort(_)) => break,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_client_is_named_and_the_rerun_completes_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut homes = homes(dir.path()).into_iter();
    let bureau = homes.next().unwrap();
    let log_path = bureau.dir().join(LOG_FILE);
    let spec = Arc::new(JobSpec::parse(Path::new("job.toml"), JOB).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let config = CoordinatorConfig {
        home: bureau,
        spec: Arc::clone(&spec),
        query: Arc::new(Query {
            ids: vec!["a".into(), "b".into()],
        }),
        rerun_without_missing: true,
        output: dir.path().join("result.csv"),
        report: None,
    };
    let coordinator = tokio::spawn(serve(listener, config, std::future::pending()));
    let rows = ["a,10\n", "a,5\nb,7\n", "b,1000\n"];
    let mut clients = Vec::new();
    for (i, home) in homes.enumerate() {
        let t = table(dir.path(), home.name().as_str(), &spec, rows[i]);
        if i == 2 {
            tokio::spawn(stalled_client(home, Arc::clone(&spec), address.clone(), t));
            continue;
        }
        clients.push(tokio::spawn(join(ClientConfig {
            home,
            spec: Arc::clone(&spec),
            address: address.clone(),
            table: t,
            output: None,
            report: None,
            timeout: Duration::from_secs(60),
        })));
    }
    let report = tokio::time::timeout(Duration::from_secs(60), coordinator)
        .await
        .expect("the coordinator ends by itself")
        .unwrap()
        .expect("the re-run completes");
    assert_eq!(report.attempt, 2);
    assert_eq!(report.left_out, vec!["lender-3".to_owned()]);
    for c in clients {
        let r = c.await.unwrap().expect("client");
        assert_eq!(r.attempt, 2);
    }
    let result = std::fs::read_to_string(dir.path().join("result.csv")).unwrap();
    assert_eq!(result, "id,debt_total,institutions\na,15,2\nb,7,1\n");
    let log = JobLog::open(&log_path).unwrap().list().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].outcome, Outcome::Aborted);
    let error = log[0].error.clone().unwrap();
    assert!(
        error.contains("client lender-3 missed the deadline for its masked vector"),
        "{error}"
    );
    assert_eq!(log[1].outcome, Outcome::Completed);
    assert_eq!(
        log[1].clients,
        vec!["lender-1".to_owned(), "lender-2".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_rerun_a_stalled_client_fails_the_job_and_no_result_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut homes = homes(dir.path()).into_iter();
    let bureau = homes.next().unwrap();
    let spec = Arc::new(JobSpec::parse(Path::new("job.toml"), JOB).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let config = CoordinatorConfig {
        home: bureau,
        spec: Arc::clone(&spec),
        query: Arc::new(Query {
            ids: vec!["a".into()],
        }),
        rerun_without_missing: false,
        output: dir.path().join("result.csv"),
        report: None,
    };
    let coordinator = tokio::spawn(serve(listener, config, std::future::pending()));
    let mut clients = Vec::new();
    for (i, home) in homes.enumerate() {
        let t = table(dir.path(), home.name().as_str(), &spec, "a,1\n");
        if i == 0 {
            // The lead stalls: the followers wait for their sealed shares.
            tokio::spawn(stalled_client(home, Arc::clone(&spec), address.clone(), t));
            continue;
        }
        clients.push(tokio::spawn(join(ClientConfig {
            home,
            spec: Arc::clone(&spec),
            address: address.clone(),
            table: t,
            output: Some(dir.path().join(format!("out-{i}.csv"))),
            report: None,
            timeout: Duration::from_secs(60),
        })));
    }
    let err = tokio::time::timeout(Duration::from_secs(60), coordinator)
        .await
        .expect("the coordinator ends by itself")
        .unwrap()
        .expect_err("aborted");
    assert!(matches!(err, OnlineError::Missing { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("client lender-1 missed the deadline for its lead shares"),
        "{text}"
    );
    assert!(
        !text.contains("lender-2") && !text.contains("lender-3"),
        "{text}"
    );
    for c in clients {
        let e = c.await.unwrap().expect_err("client aborted");
        assert!(e.to_string().contains("lender-1"), "{e}");
    }
    assert!(!dir.path().join("result.csv").exists());
    for i in 1..=3 {
        let out = dir.path().join(format!("out-{i}.csv"));
        assert!(!out.exists(), "{}", out.display());
    }
}
