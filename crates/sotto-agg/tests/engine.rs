//! The aggregation engines in process: the result equals the plaintext sum,
//! what the coordinator sees does not depend on any single client's values,
//! and every altered, repeated, misdirected or misshapen message is refused.

#![allow(clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;
use sotto_agg::error::ProtocolError;
use sotto_agg::message::{Envelope, Step};
use sotto_node::NodeName;
use support::{name, no_hook, run, Harness, Rows};

/// The plaintext computation: per query id, the sums and the count.
fn plaintext(tables: &[Rows], query: &[String]) -> Vec<(i64, i64, u64)> {
    query
        .iter()
        .map(|id| {
            let mut total = (0i64, 0i64, 0u64);
            for rows in tables {
                if let Some((_, d, l)) = rows.iter().find(|(i, _, _)| i == id) {
                    total.0 += d;
                    total.1 += l;
                    total.2 += 1;
                }
            }
            total
        })
        .collect()
}

fn decoded(totals: &[u64]) -> Vec<(i64, i64, u64)> {
    totals
        .chunks_exact(3)
        .map(|c| (c[0] as i64, c[1] as i64, c[2]))
        .collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("cust-{i}")).collect()
}

fn tables_strategy() -> impl Strategy<Value = (Vec<Rows>, usize)> {
    (2usize..=8, 1usize..=12).prop_flat_map(|(n, m)| {
        let table =
            proptest::collection::vec((any::<bool>(), -100_000_000i64..=100_000_000, 0i64..=50), m)
                .prop_map(|cells| {
                    cells
                        .into_iter()
                        .enumerate()
                        .filter(|(_, (present, _, _))| *present)
                        .map(|(i, (_, d, l))| (format!("cust-{i}"), d, l))
                        .collect::<Rows>()
                });
        (proptest::collection::vec(table, n), Just(m))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn result_equals_the_plaintext_sum((tables, m) in tables_strategy(), seed in any::<u64>()) {
        let dir = tempfile::tempdir().expect("tmp");
        // The query also asks about an id nobody has.
        let mut query = ids(m);
        query.push("nobody".into());
        let h = Harness::new(dir.path(), &tables, &query);
        let seeds: Vec<u64> = (0..tables.len() as u64).map(|i| seed ^ i).collect();
        let out = run(&h, [7; 16], &seeds, seed, &mut no_hook()).expect("run");
        prop_assert_eq!(decoded(&out.result.totals), plaintext(&tables, &query));
        for r in &out.client_results {
            prop_assert_eq!(&r.totals, out.result.totals.as_ref());
            prop_assert_eq!(r.transcript, out.result.transcript);
        }
    }
}

fn sample_tables() -> Vec<Rows> {
    vec![
        vec![("a".into(), 1000, 1), ("b".into(), -250, 2)],
        vec![("a".into(), 500, 3), ("c".into(), 99, 1)],
        vec![
            ("b".into(), 7000, 4),
            ("c".into(), 1, 1),
            ("d".into(), 5, 5),
        ],
    ]
}

fn sample_query() -> Vec<String> {
    ["a", "b", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// What the coordinator saw, keyed by (step, sender, recipient).
fn view_map(out: &support::Run) -> HashMap<(Step, String, String), Envelope> {
    out.coordinator_view
        .iter()
        .map(|(_, e)| {
            let s = &e.statement;
            ((s.step, s.sender.clone(), s.recipient.clone()), e.clone())
        })
        .collect()
}

fn differing(a: &support::Run, b: &support::Run) -> Vec<(Step, String)> {
    let (a, b) = (view_map(a), view_map(b));
    assert_eq!(a.len(), b.len());
    let mut diff: Vec<(Step, String)> = a
        .iter()
        .filter(|(k, e)| {
            let other = &b[*k];
            other.statement != e.statement || other.payload != e.payload
        })
        .map(|(k, _)| (k.0, k.1.clone()))
        .collect();
    diff.sort();
    diff
}

#[test]
fn coordinator_view_changes_only_in_the_changed_clients_vector() {
    let dir = tempfile::tempdir().expect("tmp");
    let seeds = [11, 12, 13];
    let base = run(
        &Harness::new(dir.path(), &sample_tables(), &sample_query()),
        [1; 16],
        &seeds,
        99,
        &mut no_hook(),
    )
    .expect("base");
    // A follower changes its values: only its f_j changes.
    let mut tables = sample_tables();
    tables[2][0].1 = 123_456;
    let changed = run(
        &Harness::new(dir.path(), &tables, &sample_query()),
        [1; 16],
        &seeds,
        99,
        &mut no_hook(),
    )
    .expect("changed");
    assert_eq!(
        differing(&base, &changed),
        vec![(Step::Masked, "bank-3".to_owned())]
    );
    // The lead changes its values: only e_1 changes.
    let mut tables = sample_tables();
    tables[0][1].1 = -9_999;
    let changed = run(
        &Harness::new(dir.path(), &tables, &sample_query()),
        [1; 16],
        &seeds,
        99,
        &mut no_hook(),
    )
    .expect("changed");
    assert_eq!(
        differing(&base, &changed),
        vec![(Step::LeadShare, "bank-1".to_owned())]
    );
}

/// Chi-square statistic of the top 4 bits of `values` against uniform.
fn chi_square_top_nibble(values: &[u64]) -> f64 {
    let mut bins = [0f64; 16];
    for v in values {
        bins[(v >> 60) as usize] += 1.0;
    }
    let expected = values.len() as f64 / 16.0;
    bins.iter().map(|b| (b - expected).powi(2) / expected).sum()
}

#[test]
fn coordinator_view_is_uniform_for_inputs_with_the_same_total() {
    // Two input sets with the same per-customer total: 3 clients, 1 customer.
    let inputs: [[i64; 3]; 2] = [[100, 200, 300], [600, 0, 0]];
    let dir = tempfile::tempdir().expect("tmp");
    let runs = 1200;
    for (k, values) in inputs.iter().enumerate() {
        let tables: Vec<Rows> = values
            .iter()
            .map(|v| vec![("x".to_owned(), *v, 1)])
            .collect();
        let h = Harness::new(dir.path(), &tables, &["x".to_owned()]);
        let mut seen: HashMap<(Step, String), Vec<u64>> = HashMap::new();
        for r in 0..runs {
            let base = (k as u64) << 40 | r << 8;
            let out = run(
                &h,
                [2; 16],
                &[base + 1, base + 2, base + 3],
                base + 4,
                &mut no_hook(),
            )
            .expect("run");
            for (_, e) in &out.coordinator_view {
                if matches!(e.statement.step, Step::LeadShare | Step::Masked) {
                    let first = u64::from_le_bytes(e.payload[..8].try_into().expect("8 bytes"));
                    seen.entry((e.statement.step, e.statement.sender.clone()))
                        .or_default()
                        .push(first);
                }
            }
            assert_eq!(out.result.totals[0], 600);
        }
        assert_eq!(seen.len(), 3);
        for (who, values) in &seen {
            let chi = chi_square_top_nibble(values);
            // 15 degrees of freedom: P(chi2 > 60) is about 1e-7.
            assert!(
                chi < 60.0,
                "input set {k}: {who:?} is not uniform (chi2 = {chi})"
            );
        }
    }
}

#[test]
fn no_partial_sum_before_every_share_is_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let honest = run(&h, [3; 16], &[1, 2, 3], 4, &mut no_hook()).expect("run");
    // The same messages again, without bank-3's masked vector.
    let mut coordinator = h.coordinator(h.attempt([3; 16]));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let _ = coordinator.offers();
    for (who, e) in &honest.coordinator_view {
        if who.as_str() == "bank-3" && e.statement.step == Step::Masked {
            continue;
        }
        coordinator
            .handle(who, e.clone(), &mut rng)
            .expect("honest message");
    }
    assert!(
        coordinator.result().is_none(),
        "a result was released with a masked vector missing"
    );
    assert_eq!(
        coordinator.waiting_on(),
        vec![(name("bank-3"), "masked vector")]
    );
}

/// Runs with `hook` and returns the refusal.
fn refused(hook: support::Hook<'_>) -> ProtocolError {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    match run(&h, [4; 16], &[1, 2, 3], 4, hook) {
        Ok(_) => panic!("the run completed despite the hook"),
        Err(e) => e,
    }
}

fn alter_payload(e: Envelope) -> Envelope {
    let mut payload = e.payload.as_ref().clone();
    if let Some(b) = payload.last_mut() {
        *b ^= 1;
    }
    Envelope {
        statement: e.statement,
        payload: Arc::new(payload),
    }
}

#[test]
fn altered_payloads_are_refused_in_both_directions() {
    for step in [
        Step::Dealing,
        Step::Query,
        Step::SealedShare,
        Step::Masked,
        Step::LeadShare,
        Step::Result,
    ] {
        let err = refused(&mut |_, _, e: Envelope| {
            Some(if e.statement.step == step {
                alter_payload(e)
            } else {
                e
            })
        });
        assert!(
            matches!(err, ProtocolError::DigestMismatch { .. }),
            "{step}: {err}"
        );
    }
}

#[test]
fn altered_statements_fail_their_signature_at_the_first_party_that_reads_them() {
    // Who reads each step first: the coordinator (from clients) or a
    // client (from the coordinator, or from the lead through it).
    for (step, first_reader_sees) in [
        (Step::Offer, "bureau"),
        (Step::Accept, "bank-1"),
        (Step::Dealing, "bureau"),
        (Step::SealedShare, "bank-1"),
        (Step::Masked, "bank-2"),
        (Step::Result, "bureau"),
    ] {
        let err = refused(&mut |_, _, mut e: Envelope| {
            if e.statement.step == step {
                e.statement.digest[3] ^= 1;
            }
            Some(e)
        });
        assert_eq!(
            err,
            ProtocolError::BadSignature {
                peer: first_reader_sees.into(),
                what: step.name(),
            },
            "{step}"
        );
    }
}

/// A hook for the coordinator as the attacker: it changes what it forwards
/// to clients (it cannot sign as a client), nothing on its way in.
fn coordinator_attack(
    step: Step,
    mut change: impl FnMut(&mut Envelope),
) -> impl FnMut(bool, &NodeName, Envelope) -> Option<Envelope> {
    move |to_coordinator, _, mut e: Envelope| {
        if !to_coordinator && e.statement.step == step {
            change(&mut e);
        }
        Some(e)
    }
}

#[test]
fn a_coordinator_swapping_a_followers_ephemeral_key_is_refused_by_the_lead() {
    let err = refused(&mut coordinator_attack(Step::Accept, |e| {
        e.statement.extra = vec![7; 32];
    }));
    assert_eq!(
        err,
        ProtocolError::BadSignature {
            peer: "bank-2".into(),
            what: "accept",
        }
    );
}

#[test]
fn a_coordinator_signing_a_forwarded_accept_itself_is_refused_by_the_lead() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let key = h.coordinator.key();
    let bureau = h.coordinator.name.clone();
    let err = refused(&mut coordinator_attack(Step::Accept, move |e| {
        let s = &e.statement;
        e.statement = sotto_agg::message::Draft {
            job: s.job,
            attempt: s.attempt,
            step: s.step,
            recipient: &s.recipient.clone(),
            rows: s.rows,
            cols: s.cols,
            digest: s.digest,
            extra: vec![7; 32],
        }
        .sign(&bureau, &key);
    }));
    assert_eq!(
        err,
        ProtocolError::WrongSender {
            peer: "bureau".into(),
            what: "accept",
            reason: "it is not a follower of this attempt".into(),
        }
    );
}

#[test]
fn a_coordinator_altering_a_forwarded_sealed_share_is_refused_by_the_follower() {
    let err = refused(&mut coordinator_attack(Step::SealedShare, |e| {
        *e = alter_payload(e.clone());
    }));
    assert_eq!(
        err,
        ProtocolError::DigestMismatch {
            peer: "bank-1".into(),
            what: "sealed share",
        }
    );
}

#[test]
fn a_coordinator_altering_its_offer_to_one_client_is_refused_by_that_client() {
    let err = refused(&mut coordinator_attack(Step::Offer, |e| {
        e.statement.rows += 1;
    }));
    assert_eq!(
        err,
        ProtocolError::BadSignature {
            peer: "bureau".into(),
            what: "offer",
        }
    );
}

#[test]
fn a_sealed_share_that_does_not_decrypt_is_refused_by_the_follower() {
    // The lead itself (buggy or malicious) seals garbage, correctly signed:
    // the coordinator forwards what it cannot open, the follower refuses.
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let key = h.clients[0].key();
    let err = refused(&mut |to_coordinator, who: &NodeName, e: Envelope| {
        if to_coordinator && who.as_str() == "bank-1" && e.statement.step == Step::SealedShare {
            let payload: Vec<u8> = e.payload.iter().map(|b| b ^ 0x5a).collect();
            let s = &e.statement;
            let statement = sotto_agg::message::Draft {
                job: s.job,
                attempt: s.attempt,
                step: s.step,
                recipient: &s.recipient,
                rows: s.rows,
                cols: s.cols,
                digest: sotto_crypto::hash::sha256(&payload),
                extra: s.extra.clone(),
            }
            .sign(who, &key);
            return Some(Envelope {
                statement,
                payload: Arc::new(payload),
            });
        }
        Some(e)
    });
    assert!(
        matches!(&err, ProtocolError::Sealed { peer, reason } if peer == "bank-1" && reason.contains("does not decrypt under the agreed key")),
        "{err}"
    );
}

#[test]
fn repeated_steps_are_refused() {
    for step in [Step::Masked, Step::LeadShare, Step::Accept] {
        let dir = tempfile::tempdir().expect("tmp");
        let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
        let mut coordinator = h.coordinator(h.attempt([5; 16]));
        let mut captured = None;
        let _ = run(
            &h,
            [5; 16],
            &[1, 2, 3],
            4,
            &mut |to_c, who: &NodeName, e: Envelope| {
                if to_c && e.statement.step == step && captured.is_none() {
                    captured = Some((who.clone(), e.clone()));
                }
                Some(e)
            },
        )
        .expect("run");
        // Feed a fresh coordinator the whole honest run, then the copy.
        let out = run(&h, [5; 16], &[1, 2, 3], 4, &mut no_hook()).expect("run");
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let _ = coordinator.offers();
        let mut last = Ok(Vec::new());
        for (who, e) in out
            .coordinator_view
            .iter()
            .filter(|(_, e)| e.statement.step <= step)
        {
            last = coordinator.handle(who, e.clone(), &mut rng);
        }
        let (who, e) = captured.expect("captured");
        let again = coordinator.handle(&who, e, &mut rng);
        assert!(last.is_ok(), "{step}: {last:?}");
        assert!(
            matches!(again, Err(ProtocolError::Repeated { .. })),
            "{step}: {again:?}"
        );
    }
}

use rand_chacha::rand_core::SeedableRng;

#[test]
fn a_statement_from_another_job_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    // Capture bank-2's masked vector from job A, replay it into job B.
    let a = run(&h, [6; 16], &[1, 2, 3], 4, &mut no_hook()).expect("job A");
    let (_, replay) = a
        .coordinator_view
        .iter()
        .find(|(_, e)| e.statement.step == Step::Masked)
        .cloned()
        .expect("masked");
    let err = refused(&mut |to_c, who: &NodeName, e: Envelope| {
        Some(
            if to_c && who.as_str() == "bank-2" && e.statement.step == Step::Masked {
                replay.clone()
            } else {
                e
            },
        )
    });
    assert!(
        matches!(&err, ProtocolError::WrongJob { peer, what: "masked vector", found, .. } if peer == "bank-2" && found.starts_with(&sotto_crypto::ids::JobId::from_bytes([6; 16]).to_string())),
        "{err}"
    );
}

#[test]
fn a_vector_sent_by_the_wrong_client_or_to_the_wrong_one_is_refused() {
    // bank-2's masked vector delivered as if from bank-3 (the statement
    // still names bank-2 as sender).
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let out = run(&h, [8; 16], &[1, 2, 3], 4, &mut no_hook()).expect("run");
    let mut coordinator = h.coordinator(h.attempt([8; 16]));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let _ = coordinator.offers();
    for (who, e) in out
        .coordinator_view
        .iter()
        .filter(|(_, e)| e.statement.step < Step::LeadShare)
    {
        coordinator
            .handle(who, e.clone(), &mut rng)
            .expect("honest");
    }
    let (_, masked) = out
        .coordinator_view
        .iter()
        .find(|(w, e)| w.as_str() == "bank-2" && e.statement.step == Step::Masked)
        .cloned()
        .expect("masked");
    let err = coordinator
        .handle(&name("bank-3"), masked.clone(), &mut rng)
        .expect_err("wrong sender");
    assert!(matches!(err, ProtocolError::WrongSender { .. }), "{err}");
    let err = coordinator
        .handle(&name("mallory"), masked, &mut rng)
        .expect_err("stranger");
    assert!(matches!(err, ProtocolError::WrongSender { .. }), "{err}");
    // A follower cannot send a lead share.
    let (_, lead_share) = out
        .coordinator_view
        .iter()
        .find(|(_, e)| e.statement.step == Step::LeadShare)
        .cloned()
        .expect("lead share");
    let err = coordinator
        .handle(&name("bank-2"), lead_share, &mut rng)
        .expect_err("follower lead share");
    assert!(matches!(err, ProtocolError::WrongSender { .. }), "{err}");
}

#[test]
fn a_misshapen_vector_is_refused_even_when_validly_signed() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let key = h.clients[1].key();
    let err = refused(&mut |to_c, who: &NodeName, e: Envelope| {
        if to_c && e.statement.step == Step::Masked && who.as_str() == "bank-2" {
            // bank-2 itself (buggy or malicious) sends one row too few.
            let payload = e.payload[..e.payload.len() - 24].to_vec();
            let s = &e.statement;
            let statement = sotto_agg::message::Draft {
                job: s.job,
                attempt: s.attempt,
                step: s.step,
                recipient: &s.recipient,
                rows: s.rows - 1,
                cols: s.cols,
                digest: sotto_crypto::hash::sha256(&payload),
                extra: Vec::new(),
            }
            .sign(who, &key);
            return Some(Envelope {
                statement,
                payload: Arc::new(payload),
            });
        }
        Some(e)
    });
    assert!(matches!(err, ProtocolError::WrongShape { .. }), "{err}");
}

#[test]
fn a_client_refuses_an_offer_for_another_job() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let mut other_spec = (*h.spec).clone();
    other_spec.columns[0].max += 1;
    let mut coordinator = sotto_agg::engine::Coordinator::new(
        Arc::new(other_spec),
        h.attempt([9; 16]),
        h.coordinator.name.clone(),
        h.coordinator.key(),
        HashMap::new(),
        Arc::clone(&h.query),
    );
    let offer = coordinator.offers().remove(0);
    let err = h.client(0, 1).handle(offer.envelope).expect_err("mismatch");
    assert!(matches!(err, ProtocolError::OfferMismatch { .. }), "{err}");
    assert!(err.to_string().contains("job digest"), "{err}");
}

#[test]
fn an_attempt_with_fewer_clients_than_min_clients_is_refused_by_each_client() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    h.spec = Arc::new(sotto_agg::job::JobSpec {
        min_clients: 3,
        ..(*h.spec).clone()
    });
    let mut attempt = h.attempt([9; 16]);
    attempt.number = 2;
    attempt.clients.retain(|c| c.as_str() != "bank-3");
    let mut coordinator = h.coordinator(attempt);
    let offers = coordinator.offers();
    assert_eq!(offers.len(), 2);
    for (i, offer) in offers.into_iter().enumerate() {
        let err = h
            .client(i, 1)
            .handle(offer.envelope)
            .expect_err("downgraded attempt");
        assert_eq!(
            err,
            ProtocolError::TooFewClients {
                peer: "bureau".into(),
                attempt: 2,
                clients: 2,
                min: 3
            }
        );
    }
}

/// A client forgets its attempt only when told of a re-run: another offer
/// while it is joined is refused; after `reset` the re-run's offer is
/// joined, and the client says which attempt it is in.
#[test]
fn a_client_joins_a_rerun_only_after_reset() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let first = h.attempt([9; 16]);
    let mut rerun = h.attempt([10; 16]);
    rerun.number = 2;
    let offer_to_bank_1 = |attempt: sotto_agg::engine::Attempt| {
        h.coordinator(attempt)
            .offers()
            .into_iter()
            .find(|o| o.to == h.clients[0].name)
            .expect("an offer for bank-1")
            .envelope
    };
    let mut client = h.client(0, 1);
    assert_eq!(client.attempt(), None);
    client.handle(offer_to_bank_1(first.clone())).unwrap();
    assert_eq!(client.attempt(), Some(&first));
    let err = client
        .handle(offer_to_bank_1(rerun.clone()))
        .expect_err("already joined");
    assert_eq!(
        err,
        ProtocolError::Repeated {
            peer: "bureau".into(),
            what: "offer"
        }
    );
    client.reset();
    assert_eq!(client.attempt(), None);
    client.handle(offer_to_bank_1(rerun.clone())).unwrap();
    assert_eq!(client.attempt(), Some(&rerun));
}

/// The coordinator as the attacker re-signs its offer with `change` applied
/// (it signs offers, so a client has only its own checks to go on).
fn resigned_offer_refusal(change: impl Fn(&mut Envelope) + 'static) -> ProtocolError {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let key = h.coordinator.key();
    let bureau = h.coordinator.name.clone();
    refused(&mut coordinator_attack(Step::Offer, move |e| {
        change(e);
        let s = &e.statement;
        e.statement = sotto_agg::message::Draft {
            job: s.job,
            attempt: s.attempt,
            step: s.step,
            recipient: &s.recipient.clone(),
            rows: s.rows,
            cols: s.cols,
            digest: s.digest,
            extra: s.extra.clone(),
        }
        .sign(&bureau, &key);
    }))
}

fn participants(lead: &str, clients: &[&str]) -> Vec<u8> {
    let clients: Vec<NodeName> = clients.iter().map(|c| name(c)).collect();
    sotto_agg::message::encode_participants(&name(lead), &clients)
}

#[test]
fn an_offer_leaving_out_its_recipient_or_its_lead_is_refused() {
    let err = resigned_offer_refusal(|e| {
        let me = e.statement.recipient.clone();
        let others: Vec<&str> = ["bank-1", "bank-2", "bank-3"]
            .into_iter()
            .filter(|c| *c != me)
            .collect();
        e.statement.extra = participants(others[0], &others);
    });
    assert!(
        matches!(&err, ProtocolError::OfferMismatch { peer, reason } if peer == "bureau" && reason.contains("must include this client")),
        "{err}"
    );
    let err = resigned_offer_refusal(|e| {
        e.statement.extra = participants("bank-9", &["bank-1", "bank-2", "bank-3"]);
    });
    assert!(
        matches!(&err, ProtocolError::OfferMismatch { reason, .. } if reason.contains("must include this client and the lead bank-9")),
        "{err}"
    );
}

#[test]
fn an_offer_of_no_rows_is_refused() {
    let err = resigned_offer_refusal(|e| e.statement.rows = 0);
    assert!(
        matches!(&err, ProtocolError::OfferMismatch { reason, .. } if reason.contains("announces 0 rows")),
        "{err}"
    );
}

#[test]
fn a_sealed_share_signed_by_the_coordinator_is_refused_by_its_sender() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let key = h.coordinator.key();
    let bureau = h.coordinator.name.clone();
    let err = refused(&mut coordinator_attack(Step::SealedShare, move |e| {
        let s = &e.statement;
        e.statement = sotto_agg::message::Draft {
            job: s.job,
            attempt: s.attempt,
            step: s.step,
            recipient: &s.recipient.clone(),
            rows: s.rows,
            cols: s.cols,
            digest: s.digest,
            extra: s.extra.clone(),
        }
        .sign(&bureau, &key);
    }));
    assert_eq!(
        err,
        ProtocolError::WrongSender {
            peer: "bureau".into(),
            what: "sealed share",
            reason: "only the lead bank-1 sends sealed shares, to followers".into(),
        }
    );
}

#[test]
fn a_sealed_share_of_the_wrong_shape_is_refused_even_when_the_lead_signed_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let lead_key = h.clients[0].key();
    let lead = h.clients[0].name.clone();
    let err = refused(&mut coordinator_attack(Step::SealedShare, move |e| {
        let s = &e.statement;
        e.statement = sotto_agg::message::Draft {
            job: s.job,
            attempt: s.attempt,
            step: s.step,
            recipient: &s.recipient.clone(),
            rows: s.rows + 1,
            cols: s.cols,
            digest: s.digest,
            extra: s.extra.clone(),
        }
        .sign(&lead, &lead_key);
    }));
    assert!(
        matches!(&err, ProtocolError::WrongShape { peer, what: "sealed share", .. } if peer == "bank-1"),
        "{err}"
    );
}

/// Re-signs `e` as `signer` with `change` applied to its statement.
fn resigned(
    e: &Envelope,
    signer: &support::Party,
    change: impl Fn(&mut sotto_agg::message::Statement),
) -> Envelope {
    let mut s = e.statement.clone();
    change(&mut s);
    let statement = sotto_agg::message::Draft {
        job: s.job,
        attempt: s.attempt,
        step: s.step,
        recipient: &s.recipient,
        rows: s.rows,
        cols: s.cols,
        digest: s.digest,
        extra: s.extra.clone(),
    }
    .sign(&signer.name, &signer.key());
    Envelope {
        statement,
        payload: Arc::clone(&e.payload),
    }
}

/// The run's error when client `who` alters and re-signs its own `step`
/// message on the way to the coordinator.
fn client_lies(
    who: usize,
    step: Step,
    change: impl Fn(&mut sotto_agg::message::Statement),
) -> ProtocolError {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let party = &h.clients[who];
    match run(
        &h,
        [4; 16],
        &[1, 2, 3],
        4,
        &mut |to_c, from: &NodeName, e: Envelope| {
            if to_c && *from == party.name && e.statement.step == step {
                return Some(resigned(&e, party, &change));
            }
            Some(e)
        },
    ) {
        Ok(_) => panic!("the run completed despite the lie"),
        Err(e) => e,
    }
}

#[test]
fn an_accept_without_a_32_byte_key_or_for_another_job_is_malformed() {
    for change in [
        Box::new(|s: &mut sotto_agg::message::Statement| s.extra.truncate(31))
            as Box<dyn Fn(&mut _)>,
        Box::new(|s: &mut sotto_agg::message::Statement| s.digest[0] ^= 1),
    ] {
        let err = client_lies(1, Step::Accept, change);
        assert!(
            matches!(&err, ProtocolError::Malformed { peer, what: "accept", field: "digest/extra", .. } if peer == "bank-2"),
            "{err}"
        );
    }
}

#[test]
fn a_sealed_share_of_the_wrong_shape_is_refused_by_the_coordinator() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let out = run(&h, [8; 16], &[1, 2, 3], 4, &mut no_hook()).expect("run");
    let mut coordinator = h.coordinator(h.attempt([8; 16]));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let _ = coordinator.offers();
    for (who, e) in &out.coordinator_view {
        if e.statement.step == Step::SealedShare {
            let longer = resigned(e, &h.clients[0], |s| s.rows += 1);
            let err = coordinator
                .handle(who, longer, &mut rng)
                .expect_err("refused");
            assert!(
                matches!(&err, ProtocolError::WrongShape { peer, what: "sealed share", .. } if peer == "bank-1"),
                "{err}"
            );
            return;
        }
        coordinator
            .handle(who, e.clone(), &mut rng)
            .expect("honest");
    }
    panic!("no sealed share in the run");
}

#[test]
fn a_follower_signing_a_lead_share_is_refused_as_not_the_lead() {
    let err = client_lies(1, Step::Masked, |s| s.step = Step::LeadShare);
    assert_eq!(
        err,
        ProtocolError::WrongSender {
            peer: "bank-2".into(),
            what: "lead share",
            reason: "only the lead client bank-1 sends it".into(),
        }
    );
}

#[test]
fn the_transcript_differs_between_attempts_and_clients_report_the_coordinators() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let first = run(&h, [4; 16], &[1, 2, 3], 4, &mut no_hook()).expect("first");
    let second = run(&h, [5; 16], &[1, 2, 3], 4, &mut no_hook()).expect("second");
    assert_ne!(first.result.transcript, second.result.transcript);
    for client in &first.client_results {
        assert_eq!(client.transcript, first.result.transcript);
    }
}

#[test]
fn the_coordinator_says_who_it_waits_for_at_each_step() {
    let dir = tempfile::tempdir().expect("tmp");
    let h = Harness::new(dir.path(), &sample_tables(), &sample_query());
    let out = run(&h, [8; 16], &[1, 2, 3], 4, &mut no_hook()).expect("run");
    let mut coordinator = h.coordinator(h.attempt([8; 16]));
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
    let _ = coordinator.offers();
    let waiting = |c: &sotto_agg::engine::Coordinator| {
        c.waiting_on()
            .into_iter()
            .map(|(n, what)| format!("{n}:{what}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        waiting(&coordinator),
        ["bank-1:accept", "bank-2:accept", "bank-3:accept"]
    );
    let mut seen = Vec::new();
    for (who, e) in &out.coordinator_view {
        coordinator
            .handle(who, e.clone(), &mut rng)
            .expect("honest");
        seen.push((e.statement.step, who.to_string(), waiting(&coordinator)));
    }
    let after = |step: Step, who: &str| {
        seen.iter()
            .find(|(s, w, _)| *s == step && w == who)
            .map(|(_, _, waiting)| waiting.clone())
            .expect("that message")
    };
    assert_eq!(
        after(Step::Accept, "bank-1"),
        ["bank-2:accept", "bank-3:accept"]
    );
    let from_lead: Vec<_> = seen
        .iter()
        .filter(|(s, _, _)| matches!(s, Step::LeadShare | Step::SealedShare))
        .map(|(_, _, waiting)| waiting.clone())
        .collect();
    assert_eq!(from_lead.len(), 3, "a lead share and two sealed shares");
    assert_eq!(from_lead[0], ["bank-1:lead shares"]);
    assert_eq!(
        from_lead[1],
        ["bank-1:lead shares"],
        "until all three are in"
    );
    assert_eq!(
        from_lead[2],
        ["bank-2:masked vector", "bank-3:masked vector"]
    );
    let masked: Vec<_> = seen.iter().filter(|(s, _, _)| *s == Step::Masked).collect();
    assert_eq!(masked[0].2.len(), 1, "one follower left");
    assert!(masked[1].2.is_empty());
}
