//! An in-process harness: a job with n clients, their tables, keys and
//! seedable randomness, and a router that delivers envelopes until quiet.

#![allow(dead_code, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_agg::engine::{Attempt, Client, ClientResult, Coordinator, JobResult};
use sotto_agg::error::ProtocolError;
use sotto_agg::job::JobSpec;
use sotto_agg::message::Envelope;
use sotto_agg::table::{ClientTable, ColumnMap, Query};
use sotto_crypto::identity::IdentityKey;
use sotto_crypto::ids::JobId;
use sotto_node::NodeName;

pub fn name(s: &str) -> NodeName {
    s.parse().expect("node name")
}

pub fn job_text(n: usize) -> String {
    let clients: Vec<String> = (1..=n).map(|i| format!("\"bank-{i}\"")).collect();
    format!(
        r#"name = "test"
coordinator = "bureau"
clients = [{}]
min_clients = 2
[[column]]
name = "debt"
scale = 100
min = "-1000000"
max = "1000000"
[[column]]
name = "loans"
scale = 1
min = "0"
max = "50"
"#,
        clients.join(", ")
    )
}

/// One client's rows: id -> (debt in cents, loans).
pub type Rows = Vec<(String, i64, i64)>;

pub fn write_table(dir: &Path, file: &str, rows: &Rows) -> std::path::PathBuf {
    let path = dir.join(file);
    let mut text = String::from("id,debt,loans\n");
    for (id, debt, loans) in rows {
        text.push_str(&format!(
            "{id},{},{loans}\n",
            sotto_agg::fixed::format(*debt, 100)
        ));
    }
    std::fs::write(&path, text).expect("write table");
    path
}

pub struct Party {
    pub name: NodeName,
    pub seed: [u8; 32],
}

impl Party {
    pub fn key(&self) -> IdentityKey {
        IdentityKey::from_seed(&self.seed).expect("seed")
    }
}

pub struct Harness {
    pub spec: Arc<JobSpec>,
    pub coordinator: Party,
    pub clients: Vec<Party>,
    pub tables: Vec<Arc<ClientTable>>,
    pub query: Arc<Query>,
}

impl Harness {
    pub fn new(dir: &Path, tables: &[Rows], query: &[String]) -> Self {
        let spec =
            Arc::new(JobSpec::parse(Path::new("job.toml"), &job_text(tables.len())).expect("job"));
        let map = ColumnMap::new("id", &spec.columns, &[]);
        let tables = tables
            .iter()
            .enumerate()
            .map(|(i, rows)| {
                let path = write_table(dir, &format!("bank-{}.csv", i + 1), rows);
                Arc::new(ClientTable::read(&path, &map, &spec.columns).expect("table"))
            })
            .collect();
        let clients = spec
            .clients
            .iter()
            .enumerate()
            .map(|(i, n)| Party {
                name: n.clone(),
                seed: [i as u8 + 10; 32],
            })
            .collect();
        Self {
            spec,
            coordinator: Party {
                name: name("bureau"),
                seed: [1; 32],
            },
            clients,
            tables,
            query: Arc::new(Query {
                ids: query.to_vec(),
            }),
        }
    }

    pub fn attempt(&self, job: [u8; 16]) -> Attempt {
        Attempt {
            job: JobId::from_bytes(job),
            number: 1,
            clients: self.spec.clients.clone(),
            lead: self.spec.lead.clone(),
        }
    }

    pub fn coordinator(&self, attempt: Attempt) -> Coordinator {
        let keys = self
            .clients
            .iter()
            .map(|c| (c.name.clone(), c.key().public()))
            .collect();
        Coordinator::new(
            Arc::clone(&self.spec),
            attempt,
            self.coordinator.name.clone(),
            self.coordinator.key(),
            keys,
            Arc::clone(&self.query),
        )
    }

    pub fn client(&self, i: usize, rng_seed: u64) -> Client<ChaCha20Rng> {
        let peers: HashMap<_, _> = self
            .clients
            .iter()
            .map(|c| (c.name.clone(), c.key().public()))
            .collect();
        Client::new(
            Arc::clone(&self.spec),
            self.clients[i].name.clone(),
            self.clients[i].key(),
            self.coordinator.key().public(),
            peers,
            Arc::clone(&self.tables[i]),
            ChaCha20Rng::seed_from_u64(rng_seed),
        )
    }
}

/// Everything one run produced.
pub struct Run {
    pub result: JobResult,
    pub client_results: Vec<ClientResult>,
    /// Every envelope the coordinator received, with its sender, in order.
    pub coordinator_view: Vec<(NodeName, Envelope)>,
}

/// A hook that may alter or drop an envelope on its way (`to_coordinator`
/// tells the direction).
pub type Hook<'a> = &'a mut dyn FnMut(bool, &NodeName, Envelope) -> Option<Envelope>;

/// Runs one attempt to the end, delivering in FIFO order.
pub fn run(
    h: &Harness,
    job: [u8; 16],
    seeds: &[u64],
    coordinator_seed: u64,
    hook: Hook<'_>,
) -> Result<Run, ProtocolError> {
    let mut coordinator = h.coordinator(h.attempt(job));
    let mut clients: Vec<_> = (0..h.clients.len())
        .map(|i| h.client(i, seeds[i]))
        .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(coordinator_seed);
    let index: HashMap<NodeName, usize> = h
        .clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();
    let mut to_clients: VecDeque<(NodeName, Envelope)> = coordinator
        .offers()
        .into_iter()
        .map(|o| (o.to, o.envelope))
        .collect();
    let mut view = Vec::new();
    while let Some((to, envelope)) = to_clients.pop_front() {
        let Some(envelope) = hook(false, &to, envelope) else {
            continue;
        };
        let i = index[&to];
        for reply in clients[i].handle(envelope)? {
            let Some(reply) = hook(true, &to, reply) else {
                continue;
            };
            view.push((to.clone(), reply.clone()));
            for out in coordinator.handle(&to, reply, &mut rng)? {
                to_clients.push_back((out.to, out.envelope));
            }
        }
    }
    let result = coordinator
        .result()
        .cloned()
        .ok_or(ProtocolError::Unexpected {
            peer: "harness".into(),
            what: "end",
            now: "before the coordinator had a result",
        })?;
    let client_results = clients
        .iter()
        .map(|c| c.result().cloned().expect("client result"))
        .collect();
    Ok(Run {
        result,
        client_results,
        coordinator_view: view,
    })
}

pub fn no_hook() -> impl FnMut(bool, &NodeName, Envelope) -> Option<Envelope> {
    |_, _, e| Some(e)
}
