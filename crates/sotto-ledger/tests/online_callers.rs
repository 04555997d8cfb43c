//! The processes' access rules, in process over real mutual TLS: a node
//! starts only as the node block 0 names under the consortium CA block 0
//! names, and each role answers only the roles that need it — a caller
//! whose certificate names a node of another role, or carries another key
//! under a known name, is refused.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use sotto_ledger::block::Block;
use sotto_ledger::online::{business, endorser, orderer, OnlineError};
use sotto_ledger::LedgerConfig;
use sotto_net::ca::ConsortiumCa;
use sotto_net::tls::TlsMaterial;
use sotto_node::{NodeHome, NodeName};
use sotto_wire::ledger::business_client::BusinessClient;
use sotto_wire::ledger::endorser_client::EndorserClient;
use sotto_wire::ledger::orderer_client::OrdererClient;
use sotto_wire::ledger::orderer_raft_client::OrdererRaftClient;
use sotto_wire::ledger::{
    BroadcastRequest, DeliverRequest, EndorseRequest, EventsRequest, LoadRequest,
    OrdererStatusRequest, RaftMessage, StatusRequest,
};
use time::{Duration, OffsetDateTime};

fn home(dir: &Path, ca: &ConsortiumCa, name: &str, seed: u64) -> NodeHome {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let home = NodeHome::init(
        &dir.join(format!("{name}-{seed}")),
        name.parse::<NodeName>().unwrap(),
        2,
        &mut rng,
    )
    .unwrap();
    let now = OffsetDateTime::now_utc();
    ca.enroll(&home, now - Duration::hours(1), now + Duration::days(1))
        .unwrap();
    home
}

/// A consortium: o1, e1, b1, bank-a (each home enrolled), block 0 naming
/// them at the addresses given.
struct Consortium {
    dir: tempfile::TempDir,
    ca: ConsortiumCa,
    genesis: Block,
}

fn consortium(o1: &str, b1: &str) -> (Consortium, Vec<NodeHome>) {
    let dir = tempfile::tempdir().unwrap();
    let ca = ConsortiumCa::init(
        &dir.path().join("ca"),
        "test-ca",
        OffsetDateTime::now_utc() - Duration::hours(1),
        30,
    )
    .unwrap();
    let homes: Vec<NodeHome> = ["center", "o1", "e1", "b1", "bank-a"]
        .iter()
        .enumerate()
        .map(|(i, n)| home(dir.path(), &ca, n, i as u64))
        .collect();
    let key = |i: usize| hex::encode(homes[i].identity().public().to_bytes());
    let tls = TlsMaterial::load(&homes[1]).unwrap();
    let text = format!(
        "format = 1\nname = \"t\"\ncreated = 1\nca_sha256 = \"{}\"\n[center]\nname = \"center\"\nidentity = \"{}\"\n\
         [[orderer]]\nname = \"o1\"\norg = \"ops\"\nidentity = \"{}\"\naddress = \"{o1}\"\n\
         [[endorser]]\nname = \"e1\"\norg = \"ops\"\nidentity = \"{}\"\naddress = \"127.0.0.1:1\"\n\
         [[business]]\nname = \"b1\"\norg = \"bank\"\nidentity = \"{}\"\naddress = \"{b1}\"\nmode = \"ciphertext\"\n\
         [[client]]\nname = \"bank-a\"\norg = \"bank\"\nidentity = \"{}\"\n\
         [[contract]]\nname = \"kv\"\nversion = 1\npolicy = \"'e1'\"\ncallers = [\"bank-a\"]\n",
        hex::encode(tls.ca_sha256().unwrap()),
        key(0),
        key(1),
        key(2),
        key(3),
        key(4)
    );
    let config = LedgerConfig::parse("genesis.toml", &text).unwrap();
    let genesis = Block::genesis(&config, &text);
    (Consortium { dir, ca, genesis }, homes)
}

/// A home named `name` with a key block 0 does not give that name.
fn impostor_of(c: &Consortium, name: &str) -> NodeHome {
    home(c.dir.path(), &c.ca, name, 98)
}

fn client_tls(home: &NodeHome) -> TlsMaterial {
    TlsMaterial::load(home).unwrap()
}

async fn orderer_client(
    home: &NodeHome,
    address: &str,
) -> OrdererClient<tonic::transport::Channel> {
    OrdererClient::new(sotto_ledger::online::channel(&client_tls(home), "o1", address).unwrap())
}

async fn business_client(
    home: &NodeHome,
    address: &str,
) -> BusinessClient<tonic::transport::Channel> {
    BusinessClient::new(sotto_ledger::online::channel(&client_tls(home), "b1", address).unwrap())
}

fn denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>, who: &str) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "{who} is not a node this ledger lets make this call"
        )),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_answers_only_the_roles_that_need_it() {
    let o1_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b1_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (o1_addr, b1_addr) = (
        o1_listener.local_addr().unwrap().to_string(),
        b1_listener.local_addr().unwrap().to_string(),
    );
    let (c, homes) = consortium(&o1_addr, &b1_addr);
    let (o1, e1, b1, bank) = (&homes[1], &homes[2], &homes[3], &homes[4]);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    tokio::spawn(orderer::serve(
        o1_listener,
        NodeHome::open(o1.dir()).unwrap(),
        c.genesis.clone(),
        shutdown(stopped.clone()),
    ));
    let prepared = business::prepare(NodeHome::open(b1.dir()).unwrap(), &c.genesis).unwrap();
    tokio::spawn(prepared.serve(b1_listener, shutdown(stopped.clone())));

    // The orderer takes broadcasts from clients, endorsers and the center only.
    let garbage = BroadcastRequest {
        transactions: vec![vec![1]],
    };
    denied(
        orderer_client(b1, &o1_addr)
            .await
            .broadcast(garbage.clone())
            .await,
        "b1",
    );
    let from_client = orderer_client(bank, &o1_addr)
        .await
        .broadcast(garbage)
        .await;
    assert_eq!(
        from_client.expect_err("not a transaction").code(),
        tonic::Code::InvalidArgument,
        "a client passes the caller check"
    );
    // ... and delivers blocks to business nodes, orderers and clients only.
    denied(
        orderer_client(e1, &o1_addr)
            .await
            .deliver(DeliverRequest { from: 0 })
            .await,
        "e1",
    );
    // Raft messages come from orderers only, each speaking for itself.
    let raft = |home: &NodeHome| {
        OrdererRaftClient::new(
            sotto_ledger::online::channel(&client_tls(home), "o1", &o1_addr).unwrap(),
        )
    };
    let ledger = c.genesis.open_genesis("block 0").unwrap().1.ledger.to_vec();
    let vote_for = |node: u64| RaftMessage {
        body: sotto_ledger::online::raft::to_cbor(&openraft::raft::VoteRequest::new(
            openraft::Vote::new(9, node),
            None,
        ))
        .unwrap(),
        ledger: ledger.clone(),
    };
    denied(raft(bank).vote(vote_for(1)).await, "bank-a");
    let for_another = raft(o1).vote(vote_for(2)).await.expect_err("not o1's vote");
    assert_eq!(for_another.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        for_another.message(),
        "Raft node 1 sent a message for node 2; an orderer speaks only for itself"
    );
    // A message of another ledger's group, even from a known orderer.
    let other_ledger = raft(o1)
        .vote(RaftMessage {
            ledger: vec![7; 32],
            ..vote_for(1)
        })
        .await
        .expect_err("another ledger");
    assert_eq!(other_ledger.code(), tonic::Code::FailedPrecondition);
    assert!(
        other_ledger.message().starts_with(&format!(
            "o1 sent a Raft message for ledger {}; this orderer orders ledger",
            "07".repeat(32)
        )),
        "{other_ledger:?}"
    );
    let garbage = raft(o1)
        .append_entries(RaftMessage {
            body: b"{}".to_vec(),
            ledger: ledger.clone(),
        })
        .await
        .expect_err("not a Raft message");
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    assert!(
        garbage.message().starts_with("not a Raft message"),
        "{garbage:?}"
    );
    // Any consortium node may ask an orderer's status; another key under a
    // known name may not.
    denied(
        orderer_client(&impostor_of(&c, "bank-a"), &o1_addr)
            .await
            .status(OrdererStatusRequest {})
            .await,
        "bank-a",
    );
    let o1_status = orderer_client(e1, &o1_addr)
        .await
        .status(OrdererStatusRequest {})
        .await
        .expect("an endorser may ask")
        .into_inner();
    assert_eq!(o1_status.height, 0);
    // A business node serves Load to compute group members only (none yet),
    // commit events to clients, status to clients and business nodes.
    denied(
        business_client(bank, &b1_addr)
            .await
            .load(LoadRequest {
                keys: vec![vec![0; 32]],
                ..LoadRequest::default()
            })
            .await,
        "bank-a",
    );
    denied(
        business_client(b1, &b1_addr)
            .await
            .events(EventsRequest { from: 1 })
            .await,
        "b1",
    );
    denied(
        business_client(e1, &b1_addr)
            .await
            .status(StatusRequest {})
            .await,
        "e1",
    );
    let status = business_client(bank, &b1_addr)
        .await
        .status(StatusRequest {})
        .await
        .expect("a client may ask");
    assert_eq!(status.into_inner().mode, "ciphertext");
    // A certificate of the right name but another key: refused as well.
    let impostor = home(c.dir.path(), &c.ca, "bank-a", 99);
    denied(
        business_client(&impostor, &b1_addr)
            .await
            .status(StatusRequest {})
            .await,
        "bank-a",
    );
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endorser_endorses_for_clients_only() {
    let (c, homes) = consortium("127.0.0.1:1", "127.0.0.1:2");
    let (center, e1, b1, bank) = (&homes[0], &homes[2], &homes[3], &homes[4]);
    let profile = c.dir.path().join("center.profile.json");
    std::fs::write(&profile, center.profile().to_json()).unwrap();
    e1.pin_peer(&profile).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // No center answers at this address: the endorser serves and keeps
    // trying to follow it.
    tokio::spawn(endorser::serve(
        listener,
        NodeHome::open(e1.dir()).unwrap(),
        c.genesis.clone(),
        "127.0.0.1:1".into(),
        async move {
            let mut stopped = stopped;
            let _ = stopped.changed().await;
        },
    ));
    let endorse = |home: &NodeHome| {
        EndorserClient::new(
            sotto_ledger::online::channel(&client_tls(home), "e1", &address).unwrap(),
        )
    };
    let garbage = EndorseRequest {
        packet: vec![0xff; 8],
        tee_signature: vec![0; 64],
    };
    denied(endorse(b1).endorse(garbage.clone()).await, "b1");
    denied(
        endorse(&impostor_of(&c, "bank-a"))
            .endorse(garbage.clone())
            .await,
        "bank-a",
    );
    let reply = endorse(bank)
        .endorse(garbage)
        .await
        .expect("a client passes the caller check")
        .into_inner();
    assert!(reply.endorsement.is_empty());
    assert!(
        reply.refusal.starts_with("malformed packet"),
        "{}",
        reply.refusal
    );
    let _ = stop.send(true);
}

#[test]
fn a_node_starts_only_as_the_node_block_0_names_under_its_ca() {
    let (c, homes) = consortium("127.0.0.1:1", "127.0.0.1:2");
    let err = business::prepare(NodeHome::open(homes[4].dir()).unwrap(), &c.genesis)
        .err()
        .expect("a client is no business node");
    assert!(
        matches!(&err, OnlineError::Misconfigured(m) if m == "bank-a is not a business node in block 0"),
        "{err}"
    );
    let other_key = home(c.dir.path(), &c.ca, "b1", 77);
    let err = business::prepare(other_key, &c.genesis)
        .err()
        .expect("another key");
    assert!(
        matches!(&err, OnlineError::Misconfigured(m) if m.contains("with another identity key")),
        "{err}"
    );
    let other_ca = ConsortiumCa::init(
        &c.dir.path().join("ca2"),
        "other-ca",
        OffsetDateTime::now_utc() - Duration::hours(1),
        30,
    )
    .unwrap();
    let b1_elsewhere = NodeHome::open(homes[3].dir()).unwrap();
    let now = OffsetDateTime::now_utc();
    other_ca
        .enroll(
            &b1_elsewhere,
            now - Duration::hours(1),
            now + Duration::days(1),
        )
        .unwrap();
    let err = business::prepare(NodeHome::open(homes[3].dir()).unwrap(), &c.genesis)
        .err()
        .expect("another CA");
    assert!(
        matches!(&err, OnlineError::Misconfigured(m) if m.contains("is not the consortium CA block 0 names")),
        "{err}"
    );
}
