//! One transaction through every engine in process: the client seals a
//! proposal, an enclave runs the contract on state loaded from a business
//! node, endorsers endorse, the orderer cuts a block, both business nodes
//! validate it, and the client reads the response. Then every refusal of
//! the compute and endorsement engines, each asserting its own error.

#![allow(clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::{World, MEASUREMENT, START_MS};
use prost::Message;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};
use sotto_crypto::secret::SecretBytes;
use sotto_ledger::compute::{ComputeError, Enclave, Held, Loaded, Opened, Outcome};
use sotto_ledger::contracts::{builtin, Contract};
use sotto_ledger::endorse::{Endorser, Refusal};
use sotto_ledger::group::ComputeGroup;
use sotto_ledger::keys::LedgerKeys;
use sotto_ledger::memory::MemoryLedger;
use sotto_ledger::packet::{Endorsement, Packet};
use sotto_ledger::request::{Proposal, Request, RequestError, TxKey};
use sotto_ledger::tx::{Body, Invoke, Transaction};
use sotto_ledger::ValidationCode::{self, *};

struct Flow {
    world: World,
    keys: LedgerKeys,
    contracts: Vec<Box<dyn Contract>>,
    group: ComputeGroup,
    b1: MemoryLedger,
    b2: MemoryLedger,
    rng: ChaCha20Rng,
    next_tx: u8,
    /// The business nodes proposals name; the first is the one loaded from.
    targets: Vec<String>,
}

/// What one executed call produced.
struct Executed {
    packet: Vec<u8>,
    tee_signature: Vec<u8>,
    response: Value,
}

fn group_of(tx: &[u8], config: &sotto_ledger::LedgerConfig, before: &ComputeGroup) -> ComputeGroup {
    let Some(Body::Membership(update)) = Transaction::decode(tx).expect("tx").body else {
        panic!("not a membership update");
    };
    before.updated(config, &update).expect("center-signed")
}

impl Flow {
    fn new() -> Self {
        let mut world = World::new();
        let mut b1 = world.node("b1");
        let mut b2 = world.node("b2");
        let update = world.membership(1, &[0, 1], &MEASUREMENT);
        let group = group_of(&update, &world.config, &ComputeGroup::default());
        let block = world.cut(vec![update]);
        b1.append(&block).expect("b1");
        b2.append(&block).expect("b2");
        let keys = LedgerKeys::from_group_keys(&[(1, SecretBytes::new([9; 32]))]).expect("keys");
        Self {
            world,
            keys,
            contracts: builtin(),
            group,
            b1,
            b2,
            rng: ChaCha20Rng::seed_from_u64(5),
            next_tx: 1,
            targets: vec!["b1".into()],
        }
    }

    fn enclave(&self, member: usize) -> Enclave<'_> {
        Enclave {
            config: &self.world.config,
            ledger: self.world.tip.ledger,
            member: ["c1", "c2"][member],
            identity: &self.world.enclaves[member],
            measurement: &MEASUREMENT,
            keys: &self.keys,
            contracts: &self.contracts,
        }
    }

    fn proposal(&mut self, client: &str, contract: &str, function: &str, args: Value) -> Proposal {
        self.next_tx += 1;
        Proposal {
            format: 1,
            ledger: self.world.tip.ledger.to_vec(),
            tx_id: vec![self.next_tx; 16],
            client: client.into(),
            contract: contract.into(),
            contract_version: 1,
            function: function.into(),
            args: args.to_string().into_bytes(),
            targets: self.targets.clone(),
            time_ms: START_MS,
            expires_ms: START_MS + 3_600_000,
        }
    }

    fn seal(&mut self, proposal: &Proposal, signer: usize) -> (Request, TxKey) {
        let envelope = self.keys.envelope_public(1).expect("version 1");
        proposal
            .seal(
                &self.world.consortium.clients[signer],
                &envelope,
                1,
                &mut self.rng,
            )
            .expect("seal")
    }

    /// Runs an opened request to the end, loading keys from the first
    /// target.
    fn run(&mut self, opened: &Opened, member: usize) -> Result<Outcome, ComputeError> {
        let mut loaded: HashMap<[u8; 32], Loaded> = HashMap::new();
        let mut rng = self.rng.clone();
        let source = if self.targets[0] == "b2" {
            &self.b2
        } else {
            &self.b1
        };
        for _ in 0..8 {
            match self.enclave(member).run(opened, &loaded, &mut rng)? {
                Outcome::Fetch(ids) => {
                    for id in ids {
                        loaded.insert(id, source.load(&id));
                    }
                }
                done => return Ok(done),
            }
        }
        panic!("the contract kept asking for keys");
    }

    fn execute(&mut self, client: usize, contract: &str, function: &str, args: Value) -> Executed {
        let name = format!("bank-{}", ["a", "b"][client]);
        let proposal = self.proposal(&name, contract, function, args);
        let (request, tx_key) = self.seal(&proposal, client);
        let opened = self.enclave(0).open(&request).expect("opened");
        match self.run(&opened, 0).expect("ran") {
            Outcome::Executed {
                packet,
                tee_signature,
                response,
            } => Executed {
                packet,
                tee_signature,
                response: serde_json::from_slice(
                    &tx_key
                        .open_response(&proposal.tx_id, &response)
                        .expect("response"),
                )
                .expect("json"),
            },
            Outcome::Refused { response } => {
                panic!(
                    "refused: {}",
                    String::from_utf8_lossy(
                        &tx_key
                            .open_response(&proposal.tx_id, &response)
                            .expect("response")
                    )
                )
            }
            Outcome::Fetch(_) => unreachable!("run loops until done"),
        }
    }

    fn endorse(&self, endorser: usize, executed: &Executed) -> Result<Endorsement, Refusal> {
        Endorser {
            config: &self.world.config,
            ledger: self.world.tip.ledger,
            name: ["e1", "e2", "e3"][endorser],
            key: &self.world.consortium.endorsers[endorser],
        }
        .endorse(
            &self.group,
            &executed.packet,
            &executed.tee_signature,
            START_MS,
        )
    }

    /// Endorses by e1 and e2, submits, and returns the codes at b1 and b2.
    fn commit(&mut self, client: usize, executed: &Executed) -> (ValidationCode, ValidationCode) {
        let endorsements = vec![
            self.endorse(0, executed).expect("e1"),
            self.endorse(1, executed).expect("e2"),
        ];
        let tx = self.submit(client, executed, endorsements);
        self.order(vec![tx])
    }

    fn submit(
        &self,
        client: usize,
        executed: &Executed,
        endorsements: Vec<Endorsement>,
    ) -> Vec<u8> {
        let invoke = Invoke::sign(
            &self.world.consortium.clients[client],
            executed.packet.clone(),
            executed.tee_signature.clone(),
            endorsements,
        );
        Transaction {
            body: Some(Body::Invoke(invoke)),
        }
        .encode_to_vec()
    }

    fn order(&mut self, txs: Vec<Vec<u8>>) -> (ValidationCode, ValidationCode) {
        let block = self.world.cut(txs);
        let at_b1 = *self.b1.append(&block).expect("b1").last().expect("one");
        let at_b2 = *self.b2.append(&block).expect("b2").last().expect("one");
        (at_b1, at_b2)
    }
}

#[test]
fn credit_records_across_banks_give_the_true_total_exposure() {
    let mut flow = Flow::new();
    let calls = [
        (
            0,
            "loan",
            json!({"customer": "cust-1", "loan": "a-1", "amount": 100_000}),
        ),
        (
            1,
            "loan",
            json!({"customer": "cust-1", "loan": "b-1", "amount": 50_000}),
        ),
        (
            0,
            "repay",
            json!({"customer": "cust-1", "loan": "a-1", "amount": 30_000}),
        ),
        (
            1,
            "loan",
            json!({"customer": "cust-2", "loan": "b-2", "amount": 7}),
        ),
    ];
    for (client, function, args) in calls {
        let executed = flow.execute(client, "credit", function, args);
        assert_eq!(flow.commit(client, &executed), (Valid, NotAddressed));
    }
    let query = flow.execute(1, "credit", "exposure", json!({"customer": "cust-1"}));
    assert_eq!(
        query.response,
        json!({"customer": "cust-1", "total": 120_000, "lenders": 2})
    );
    let packet = Packet::decode(query.packet.as_slice()).expect("packet");
    assert!(packet.writes.is_empty(), "a query writes nothing");
    assert_eq!(packet.reads.len(), 3, "the lender list and two exposures");
    let other = flow.execute(0, "credit", "exposure", json!({"customer": "cust-2"}));
    assert_eq!(
        other.response,
        json!({"customer": "cust-2", "total": 7, "lenders": 1})
    );
}

#[test]
fn business_rules_refuse_inside_the_enclave_and_only_the_client_reads_why() {
    let mut flow = Flow::new();
    let executed = flow.execute(
        0,
        "credit",
        "loan",
        json!({"customer": "c", "loan": "l", "amount": 5}),
    );
    flow.commit(0, &executed);
    let proposal = flow.proposal(
        "bank-a",
        "credit",
        "repay",
        json!({"customer": "c", "loan": "l", "amount": 6}),
    );
    let (request, tx_key) = flow.seal(&proposal, 0);
    let opened = flow.enclave(0).open(&request).expect("opened");
    let Outcome::Refused { response } = flow.run(&opened, 0).expect("ran") else {
        panic!("an over-repayment must be refused");
    };
    let why: Value = serde_json::from_slice(
        &tx_key
            .open_response(&proposal.tx_id, &response)
            .expect("opens"),
    )
    .expect("json");
    assert_eq!(
        why,
        json!({"error": "refused: repayment 6 exceeds the outstanding 5"})
    );
    let query = flow.proposal("bank-a", "credit", "exposure", json!({"customer": "c"}));
    let other = flow.seal(&query, 0).1;
    assert_eq!(
        other.open_response(&proposal.tx_id, &response),
        Err(RequestError::Response)
    );
}

#[test]
fn two_packets_from_the_same_state_conflict_and_the_second_is_refused_everywhere() {
    let mut flow = Flow::new();
    let first = flow.execute(
        0,
        "credit",
        "loan",
        json!({"customer": "c", "loan": "l1", "amount": 5}),
    );
    let second = flow.execute(
        0,
        "credit",
        "loan",
        json!({"customer": "c", "loan": "l2", "amount": 6}),
    );
    let endorse = |flow: &Flow, e: &Executed| {
        vec![
            flow.endorse(0, e).expect("e1"),
            flow.endorse(2, e).expect("e3"),
        ]
    };
    let txs = vec![
        flow.submit(0, &first, endorse(&flow, &first)),
        flow.submit(0, &second, endorse(&flow, &second)),
    ];
    let block = flow.world.cut(txs);
    assert_eq!(
        flow.b1.append(&block).expect("b1"),
        [Valid, MvccReadConflict]
    );
    assert_eq!(
        flow.b2.append(&block).expect("b2"),
        [NotAddressed, MvccReadConflict]
    );
    let total = flow.execute(1, "credit", "exposure", json!({"customer": "c"}));
    assert_eq!(total.response["total"], 5);
}

fn open_error(flow: &mut Flow, proposal: &Proposal, signer: usize) -> ComputeError {
    let (request, _) = flow.seal(proposal, signer);
    flow.enclave(0).open(&request).expect_err("refused")
}

#[test]
fn the_enclave_refuses_requests_it_must_not_run() {
    let mut flow = Flow::new();
    let good = flow.proposal("bank-a", "kv", "put", json!({"key": "k", "value": "v"}));
    assert!(
        matches!(open_error(&mut flow, &good, 1), ComputeError::BadClientSignature(c) if c == "bank-a")
    );
    let mut stranger = good.clone();
    stranger.client = "bank-z".into();
    assert!(
        matches!(open_error(&mut flow, &stranger, 0), ComputeError::UnknownClient(c) if c == "bank-z")
    );
    let mut b_on_kv = good.clone();
    b_on_kv.client = "bank-b".into();
    assert!(
        matches!(open_error(&mut flow, &b_on_kv, 1), ComputeError::CallerNotAllowed { client, .. } if client == "bank-b")
    );
    let mut newer = good.clone();
    newer.contract_version = 2;
    assert!(matches!(
        open_error(&mut flow, &newer, 0),
        ComputeError::UnknownContract { version: 2, .. }
    ));
    let mut elsewhere = good.clone();
    elsewhere.ledger = vec![1; 32];
    assert!(matches!(
        open_error(&mut flow, &elsewhere, 0),
        ComputeError::WrongLedger
    ));
    for targets in [
        vec![],
        vec!["b9".to_owned()],
        vec!["b1".to_owned(), "b1".to_owned()],
    ] {
        let mut bad = good.clone();
        bad.targets = targets;
        assert!(matches!(
            open_error(&mut flow, &bad, 0),
            ComputeError::BadTargets(_)
        ));
    }
    let mut short_id = good.clone();
    short_id.tx_id = vec![1; 15];
    assert!(matches!(
        open_error(&mut flow, &short_id, 0),
        ComputeError::BadTxId
    ));
}

#[test]
fn a_request_that_was_altered_or_sealed_to_another_key_version_does_not_open() {
    let mut flow = Flow::new();
    let proposal = flow.proposal("bank-a", "kv", "get", json!({"key": "k"}));
    let (request, _) = flow.seal(&proposal, 0);
    let enclave = flow.enclave(0);
    let mut stale = request.clone();
    stale.envelope_version = 2;
    assert!(matches!(
        enclave.open(&stale),
        Err(ComputeError::Request(RequestError::EnvelopeVersion {
            got: 2,
            current: 1
        }))
    ));
    for field in 0..3 {
        let mut altered = request.clone();
        match field {
            0 => altered.ciphertext[20] ^= 1,
            1 => altered.sealed_key[40] ^= 1,
            _ => altered.tx_id[0] ^= 1,
        }
        assert!(
            matches!(
                enclave.open(&altered),
                Err(ComputeError::Request(RequestError::Decrypt(_)))
            ),
            "field {field}"
        );
    }
}

#[test]
fn a_plaintext_node_keeps_its_records_in_clear_and_the_enclave_reads_them() {
    let mut flow = Flow::new();
    flow.targets = vec!["b2".into()];
    let loans = [
        (0, "cust-1", "a-1", 100_000u64),
        (1, "cust-1", "b-1", 50_000),
    ];
    for (client, customer, loan, amount) in loans {
        let args = json!({"customer": customer, "loan": loan, "amount": amount});
        let executed = flow.execute(client, "credit", "loan", args);
        assert_eq!(flow.commit(client, &executed), (NotAddressed, Valid));
    }
    let id = flow.keys.key_id("credit", "loan/bank-a/a-1");
    assert_eq!(
        flow.b2.value(&id),
        Some(&b"cust-1/100000"[..]),
        "b2 keeps the record in clear"
    );
    assert_eq!(flow.b1.value(&id), None, "b1 was not a target");
    assert_eq!(flow.b1.versions(), flow.b2.versions());
    assert_eq!(flow.b1.commit_hash(), flow.b2.commit_hash());
    let query = flow.execute(0, "credit", "exposure", json!({"customer": "cust-1"}));
    assert_eq!(
        query.response,
        json!({"customer": "cust-1", "total": 150_000, "lenders": 2}),
        "the enclave computed on b2's clear values"
    );
    let packet = Packet::decode(query.packet.as_slice()).expect("packet");
    assert_eq!(packet.clear_copies.len(), 1, "one copy, for b2");
    assert_eq!(packet.clear_copies[0].target, "b2");
}

#[test]
fn state_the_node_cannot_vouch_for_stops_the_run() {
    let mut flow = Flow::new();
    let executed = flow.execute(0, "kv", "put", json!({"key": "k", "value": "v"}));
    flow.commit(0, &executed);
    let proposal = flow.proposal("bank-a", "kv", "get", json!({"key": "k"}));
    let (request, _) = flow.seal(&proposal, 0);
    let opened = flow.enclave(0).open(&request).expect("opened");
    let id = flow.keys.key_id("kv", "entry/k");
    let mut loaded = HashMap::new();
    let mut tampered = flow.b1.load(&id);
    if let Held::Sealed(sealed) = &mut tampered.held {
        sealed[12] ^= 1;
    }
    loaded.insert(id, tampered);
    let err = flow
        .enclave(0)
        .run(&opened, &loaded, &mut flow.rng.clone())
        .expect_err("tampered");
    assert!(
        matches!(&err, ComputeError::StoredValue(r) if r.contains("does not open")),
        "{err}"
    );
    loaded.insert(id, flow.b2.load(&id));
    let err = flow
        .enclave(0)
        .run(&opened, &loaded, &mut flow.rng.clone())
        .expect_err("not kept");
    assert!(
        matches!(&err, ComputeError::StoredValue(r) if r.contains("not a target")),
        "{err}"
    );
}

#[test]
fn endorsers_refuse_each_kind_of_bad_packet() {
    let mut flow = Flow::new();
    let executed = flow.execute(
        0,
        "credit",
        "loan",
        json!({"customer": "c", "loan": "l", "amount": 5}),
    );
    let kv = flow.execute(0, "kv", "put", json!({"key": "k", "value": "v"}));
    let endorser = |flow: &Flow, i: usize| {
        Endorser {
            config: &flow.world.config,
            ledger: flow.world.tip.ledger,
            name: ["e1", "e2", "e3"][i],
            key: &flow.world.consortium.endorsers[i],
        }
        .endorse(
            &flow.group,
            &executed.packet,
            &executed.tee_signature,
            START_MS,
        )
    };
    assert!(endorser(&flow, 2).is_ok());
    let mut forged = executed.tee_signature.clone();
    forged[0] ^= 1;
    let e1 = Endorser {
        config: &flow.world.config,
        ledger: flow.world.tip.ledger,
        name: "e1",
        key: &flow.world.consortium.endorsers[0],
    };
    assert_eq!(
        e1.endorse(&flow.group, &executed.packet, &forged, START_MS),
        Err(Refusal::BadTeeSignature("c1".into()))
    );
    assert_eq!(
        e1.endorse(
            &flow.group,
            &executed.packet,
            &executed.tee_signature,
            START_MS + 3_600_001
        ),
        Err(Refusal::Expired)
    );
    assert!(
        e1.endorse(
            &flow.group,
            &executed.packet,
            &executed.tee_signature,
            START_MS + 3_600_000
        )
        .is_ok(),
        "good up to and including its expiry"
    );
    let revoked = group_of(
        &flow.world.membership(2, &[1], &MEASUREMENT),
        &flow.world.config,
        &flow.group,
    );
    assert_eq!(
        e1.endorse(
            &revoked,
            &executed.packet,
            &executed.tee_signature,
            START_MS
        ),
        Err(Refusal::NotMember("c1".into()))
    );
    let other_code = group_of(
        &flow.world.membership(2, &[0, 1], &[0x77; 32]),
        &flow.world.config,
        &flow.group,
    );
    assert_eq!(
        e1.endorse(
            &other_code,
            &executed.packet,
            &executed.tee_signature,
            START_MS
        ),
        Err(Refusal::NotMember("c1".into()))
    );
    let elsewhere = Endorser {
        ledger: [3; 32],
        ..e1
    };
    assert_eq!(
        elsewhere.endorse(
            &flow.group,
            &executed.packet,
            &executed.tee_signature,
            START_MS
        ),
        Err(Refusal::WrongLedger)
    );
    assert!(matches!(
        e1.endorse(&flow.group, b"junk", &executed.tee_signature, START_MS),
        Err(Refusal::Malformed(_))
    ));
    let e3 = Endorser {
        name: "e3",
        key: &flow.world.consortium.endorsers[2],
        ..e1
    };
    assert_eq!(
        e3.endorse(&flow.group, &kv.packet, &kv.tee_signature, START_MS),
        Err(Refusal::NotInPolicy("kv".into())),
        "kv's policy is AND('e1', 'audit'); e3 is of org risk"
    );
    let e2 = Endorser {
        name: "e2",
        key: &flow.world.consortium.endorsers[1],
        ..e1
    };
    assert!(
        e2.endorse(&flow.group, &kv.packet, &kv.tee_signature, START_MS)
            .is_ok(),
        "e2 is of org audit"
    );
}

#[test]
fn a_revoked_compute_nodes_packets_are_refused_by_endorsers_and_business_nodes() {
    let mut flow = Flow::new();
    let before = flow.execute(
        0,
        "credit",
        "loan",
        json!({"customer": "c", "loan": "l", "amount": 5}),
    );
    let endorsements = vec![
        flow.endorse(0, &before).expect("e1"),
        flow.endorse(1, &before).expect("e2"),
    ];
    let revoke = flow.world.membership(2, &[1], &MEASUREMENT);
    flow.group = group_of(&revoke, &flow.world.config, &flow.group);
    assert_eq!(
        flow.endorse(0, &before),
        Err(Refusal::NotMember("c1".into()))
    );
    let late = flow.submit(0, &before, endorsements);
    assert_eq!(
        flow.order(vec![revoke, late]),
        (EnclaveNotMember, EnclaveNotMember)
    );
    let proposal = flow.proposal(
        "bank-a",
        "credit",
        "loan",
        json!({"customer": "c", "loan": "l", "amount": 5}),
    );
    let (request, tx_key) = flow.seal(&proposal, 0);
    let opened = flow
        .enclave(1)
        .open(&request)
        .expect("c2 is still a member");
    let Outcome::Executed {
        packet,
        tee_signature,
        response,
    } = flow.run(&opened, 1).expect("ran")
    else {
        panic!("c2 runs it");
    };
    let executed = Executed {
        packet,
        tee_signature,
        response: serde_json::from_slice(
            &tx_key
                .open_response(&proposal.tx_id, &response)
                .expect("opens"),
        )
        .expect("json"),
    };
    assert_eq!(flow.commit(0, &executed), (Valid, NotAddressed));
}
