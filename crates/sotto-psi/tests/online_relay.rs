//! A compromised relay between the parties alters, drops, duplicates,
//! reorders and replays frames. Every attack must be detected and named (in
//! a NACK); a one-time attack is repaired by retransmission and gives the
//! right result; a persistent one aborts the session with no output.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use sotto_crypto::group::GroupId;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_core::OsRng;
use sotto_net::ca::ConsortiumCa;
use sotto_node::files::{write_atomic, Visibility};
use sotto_node::NodeHome;
use sotto_psi::aligned::Duplicates;
use sotto_psi::codec::{Reader, Writer};
use sotto_psi::engine::AcceptPolicy;
use sotto_psi::online::{
    self, Direction, FrameHook, Limits, OnlineError, ProviderConfig, RelayConfig, RequesterConfig,
};
use sotto_psi::steps::Silent;
use sotto_psi::table::{read_keys, KeySpec, OutputKind};
use sotto_psi::wire::{Batch, Reveal, SigningMode, StreamKind};
use sotto_wire::psi::frame::Body;
use sotto_wire::psi::{Frame, Nack};
use time::{Duration as Days, OffsetDateTime};

struct World {
    dir: tempfile::TempDir,
}

fn spec() -> KeySpec {
    KeySpec {
        columns: vec!["id".into()],
        trim: true,
        casefold: false,
        nfkc: false,
        shard: None,
    }
}

impl World {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn new() -> Self {
        let w = World {
            dir: tempfile::tempdir().unwrap(),
        };
        let now = OffsetDateTime::now_utc();
        let ca = ConsortiumCa::init(&w.p("ca"), "test CA", now, 30).unwrap();
        for name in ["bank-a", "bank-b", "relay"] {
            let home = NodeHome::init(&w.p(name), name.parse().unwrap(), 2, &mut OsRng).unwrap();
            ca.enroll(&home, now, now + Days::days(1)).unwrap();
            write_atomic(
                &w.p(&format!("{name}.json")),
                home.profile().to_json().as_bytes(),
                Visibility::Public,
            )
            .unwrap();
        }
        NodeHome::open(&w.p("bank-a"))
            .unwrap()
            .pin_peer(&w.p("bank-b.json"))
            .unwrap();
        NodeHome::open(&w.p("bank-b"))
            .unwrap()
            .pin_peer(&w.p("bank-a.json"))
            .unwrap();
        let a: String = std::iter::once("id\n".to_owned())
            .chain((0..300).map(|i| format!("u{i}\n")))
            .collect();
        let b: String = std::iter::once("id\n".to_owned())
            .chain((150..450).map(|i| format!("u{i}\n")))
            .collect();
        std::fs::write(w.p("a.csv"), a).unwrap();
        std::fs::write(w.p("b.csv"), b).unwrap();
        w
    }

    fn limits() -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(20),
            verify_timeout: Duration::from_secs(5),
            max_retries: 2,
        }
    }

    /// Short limits for the timeout tests.
    fn short_limits() -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(3),
            verify_timeout: Duration::from_secs(1),
            max_retries: 2,
        }
    }

    /// Starts a provider and a relay with `hook`, runs one session through
    /// them, and returns its outcome.
    async fn session(&self, hook: FrameHook, out: &Path) -> Result<u64, OnlineError> {
        self.session_with(hook, out, None, Self::limits()).await
    }

    async fn session_with_report(
        &self,
        hook: FrameHook,
        out: &Path,
        report: Option<&Path>,
    ) -> Result<u64, OnlineError> {
        self.session_with(hook, out, report, Self::limits()).await
    }

    /// Starts a provider and a relay with `hook`, runs one session through
    /// them with `limits`, and returns the intersection size.
    async fn session_with(
        &self,
        hook: FrameHook,
        out: &Path,
        report: Option<&Path>,
        limits: Limits,
    ) -> Result<u64, OnlineError> {
        let provider_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let provider_address = provider_listener.local_addr().unwrap().to_string();
        let provider = ProviderConfig {
            home: NodeHome::open(&self.p("bank-b")).unwrap(),
            table: read_keys(&self.p("b.csv"), &spec()).unwrap(),
            spec: spec(),
            policy: AcceptPolicy::default(),
            allow: None,
            relays: vec!["relay".parse().unwrap()],
            output_dir: None,
            duplicates: Duplicates::Refuse,
            id_column: None,
            limits,
        };
        tokio::spawn(online::serve(
            provider_listener,
            provider,
            std::future::pending(),
        ));
        let relay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_address = relay_listener.local_addr().unwrap().to_string();
        let relay = RelayConfig {
            home: NodeHome::open(&self.p("relay")).unwrap(),
            routes: vec![("bank-b".parse().unwrap(), provider_address)],
            hook: Some(hook),
            connect_timeout: Duration::from_secs(5),
        };
        tokio::spawn(online::serve_relay(
            relay_listener,
            relay,
            std::future::pending(),
        ));
        let requester = RequesterConfig {
            home: NodeHome::open(&self.p("bank-a")).unwrap(),
            peer: "bank-b".parse().unwrap(),
            address: relay_address,
            via: Some("relay".parse().unwrap()),
            input: self.p("a.csv"),
            spec: spec(),
            group: GroupId::X25519,
            mode: SigningMode::Element,
            reveal: Reveal::Requester,
            batch_size: 32,
            align: false,
            duplicates: Duplicates::Refuse,
            id_column: None,
            output: Some((out.to_owned(), OutputKind::Rows)),
            report: report.map(Path::to_owned),
            rules: sotto_node::OutputRules::new(true),
            limits,
            progress: Arc::new(Silent),
        };
        online::run(requester)
            .await
            .map(|summary| summary.intersection.unwrap_or_default())
    }
}

fn batch_of(frame: &Frame) -> Option<Batch> {
    match &frame.body {
        Some(Body::Batch(bytes)) => Batch::decode(&mut Reader::new(bytes), u32::MAX).ok(),
        _ => None,
    }
}

fn batch_frame(batch: &Batch) -> Frame {
    let mut w = Writer::new();
    batch.encode(&mut w);
    Frame {
        body: Some(Body::Batch(w.finish())),
    }
}

fn is_batch(frame: &Frame, stream: StreamKind, index: u32) -> bool {
    batch_of(frame).is_some_and(|b| b.header.stream == stream && b.header.batch_index == index)
}

/// A hook that records every NACK and applies `attack` to other frames.
fn hook(
    nacks: &Arc<Mutex<Vec<Nack>>>,
    attack: impl Fn(Direction, Frame) -> Vec<Frame> + Send + Sync + 'static,
) -> FrameHook {
    let nacks = Arc::clone(nacks);
    Arc::new(move |direction, frame| {
        if let Some(Body::Nack(nack)) = &frame.body {
            nacks.lock().unwrap().push(nack.clone());
            return vec![frame];
        }
        attack(direction, frame)
    })
}

/// Applies `attack` only to the first frame for which `target` holds.
fn once(
    target: impl Fn(Direction, &Frame) -> bool + Send + Sync + 'static,
    attack: impl Fn(Frame) -> Vec<Frame> + Send + Sync + 'static,
) -> impl Fn(Direction, Frame) -> Vec<Frame> + Send + Sync + 'static {
    let done = Mutex::new(false);
    move |direction, frame| {
        let mut done = done.lock().unwrap();
        if !*done && target(direction, &frame) {
            *done = true;
            return attack(frame);
        }
        vec![frame]
    }
}

fn u_batch(index: u32) -> impl Fn(Direction, &Frame) -> bool + Send + Sync + 'static {
    move |direction, frame| {
        direction == Direction::ToProvider && is_batch(frame, StreamKind::RequesterEncrypted, index)
    }
}

fn flip_element(frame: Frame, element: usize) -> Vec<Frame> {
    let mut batch = batch_of(&frame).unwrap();
    batch.elements[element][9] ^= 0x20;
    vec![batch_frame(&batch)]
}

async fn expect_repaired(
    w: &World,
    attack: impl Fn(Direction, Frame) -> Vec<Frame> + Send + Sync + 'static,
    reason: &str,
) -> Vec<Nack> {
    let nacks = Arc::new(Mutex::new(Vec::new()));
    let out = w.p("out.csv");
    let size = w
        .session(hook(&nacks, attack), &out)
        .await
        .expect("a one-time attack is repaired");
    assert_eq!(size, 150);
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 151);
    let nacks = nacks.lock().unwrap().clone();
    assert!(!nacks.is_empty(), "the attack must be detected");
    assert!(
        nacks.iter().any(|n| n.reason.contains(reason)),
        "no NACK says {reason:?}: {nacks:?}"
    );
    nacks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn honest_relay_forwards_a_session() {
    let w = World::new();
    let nacks = Arc::new(Mutex::new(Vec::new()));
    let size = w
        .session(hook(&nacks, |_, f| vec![f]), &w.p("out.csv"))
        .await
        .unwrap();
    assert_eq!(size, 150);
    assert!(nacks.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn altered_element_is_named_and_retransmitted() {
    let w = World::new();
    let nacks = expect_repaired(
        &w,
        once(u_batch(1), |f| flip_element(f, 3)),
        "element signatures fail",
    )
    .await;
    let nack = nacks
        .iter()
        .find(|n| n.stream == u32::from(StreamKind::RequesterEncrypted.code()))
        .unwrap();
    assert_eq!((nack.batch, nack.positions.clone()), (1, vec![35]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_and_reordered_batches_are_detected() {
    let w = World::new();
    expect_repaired(&w, once(u_batch(2), |_| Vec::new()), "comes next").await;
    let held: Arc<Mutex<Option<Frame>>> = Arc::new(Mutex::new(None));
    let reorder = {
        let held = Arc::clone(&held);
        once(
            move |d, f| {
                d == Direction::ToProvider && (is_batch(f, StreamKind::RequesterEncrypted, 1))
            },
            move |f| {
                *held.lock().unwrap() = Some(f);
                Vec::new()
            },
        )
    };
    let swap = move |d: Direction, f: Frame| {
        if d == Direction::ToProvider && is_batch(&f, StreamKind::RequesterEncrypted, 2) {
            if let Some(earlier) = held.lock().unwrap().take() {
                return vec![f, earlier];
            }
        }
        reorder(d, f)
    };
    expect_repaired(&w, swap, "comes next").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicated_batch_is_detected_and_never_used() {
    let w = World::new();
    let target = |d: Direction, f: &Frame| {
        d == Direction::ToRequester && is_batch(f, StreamKind::Reencrypted, 1)
    };
    let nacks = Arc::new(Mutex::new(Vec::new()));
    let report = w.p("dup.json");
    let size = w
        .session_with_report(
            hook(&nacks, once(target, |f| vec![f.clone(), f])),
            &w.p("out.csv"),
            Some(&report),
        )
        .await
        .expect("a duplicate is harmless");
    assert_eq!(size, 150);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        report["duplicate_batches"], 1,
        "the copy is detected and counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_replayed_from_another_session_is_refused() {
    let w = World::new();
    let recorded: Arc<Mutex<Option<Frame>>> = Arc::new(Mutex::new(None));
    let recorder = {
        let recorded = Arc::clone(&recorded);
        move |d: Direction, f: Frame| {
            if d == Direction::ToProvider && is_batch(&f, StreamKind::RequesterEncrypted, 1) {
                recorded.lock().unwrap().get_or_insert_with(|| f.clone());
            }
            vec![f]
        }
    };
    let nacks = Arc::new(Mutex::new(Vec::new()));
    w.session(hook(&nacks, recorder), &w.p("first.csv"))
        .await
        .unwrap();
    let old = recorded.lock().unwrap().clone().unwrap();
    expect_repaired(
        &w,
        once(u_batch(1), move |_| vec![old.clone()]),
        "belongs to session",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampering_towards_the_requester_is_detected_too() {
    let w = World::new();
    let target = |d: Direction, f: &Frame| {
        d == Direction::ToRequester && is_batch(f, StreamKind::Reencrypted, 0)
    };
    let nacks = expect_repaired(
        &w,
        once(target, |f| flip_element(f, 0)),
        "element signatures fail",
    )
    .await;
    assert!(nacks
        .iter()
        .any(|n| n.stream == u32::from(StreamKind::Reencrypted.code()) && n.positions == vec![0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn persistent_tampering_aborts_without_output() {
    let w = World::new();
    let nacks = Arc::new(Mutex::new(Vec::new()));
    let always = |d: Direction, f: Frame| {
        if d == Direction::ToProvider && is_batch(&f, StreamKind::RequesterEncrypted, 1) {
            return flip_element(f, 0);
        }
        vec![f]
    };
    let out = w.p("never.csv");
    let err = w
        .session(hook(&nacks, always), &out)
        .await
        .expect_err("must abort");
    let text = err.to_string();
    assert!(
        text.contains("aborted") && text.contains("failed verification"),
        "{text}"
    );
    assert!(!out.exists(), "no output after an aborted session");
    assert_eq!(
        nacks.lock().unwrap().len(),
        2,
        "one NACK per tolerated retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_batch_frame_is_refused_and_resent() {
    let w = World::new();
    let garbage = |_| {
        vec![Frame {
            body: Some(Body::Batch(b"not a batch at all".to_vec())),
        }]
    };
    let nacks = expect_repaired(&w, once(u_batch(1), garbage), "could not be decoded").await;
    assert!(nacks.iter().any(|n| n.batch == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silence_after_a_nack_ends_in_the_verify_timeout() {
    let w = World::new();
    let tampered = Mutex::new(false);
    // Alter batch 1 once, then swallow every copy of it: the NACK is never answered.
    let swallow = move |d: Direction, f: Frame| {
        if d == Direction::ToProvider && is_batch(&f, StreamKind::RequesterEncrypted, 1) {
            let mut done = tampered.lock().unwrap();
            if !*done {
                *done = true;
                return flip_element(f, 0);
            }
            return Vec::new();
        }
        vec![f]
    };
    let nacks = Arc::new(Mutex::new(Vec::new()));
    let out = w.p("never.csv");
    let err = w
        .session_with(hook(&nacks, swallow), &out, None, World::short_limits())
        .await
        .expect_err("must time out");
    let text = err.to_string();
    assert!(text.contains("within 1 s"), "{text}");
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_that_stops_forwarding_ends_in_the_idle_timeout() {
    let w = World::new();
    let stall = |d: Direction, f: Frame| {
        if d == Direction::ToProvider && batch_of(&f).is_some_and(|b| b.header.batch_index >= 2) {
            return Vec::new();
        }
        vec![f]
    };
    let nacks = Arc::new(Mutex::new(Vec::new()));
    let out = w.p("never.csv");
    let err = w
        .session_with(hook(&nacks, stall), &out, None, World::short_limits())
        .await
        .expect_err("must time out");
    let text = err.to_string();
    assert!(
        text.contains("within 3 s") && text.contains("session aborted"),
        "{text}"
    );
    assert!(!out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_replayed_from_a_finished_session_is_refused() {
    let w = World::new();
    let recorded: Arc<Mutex<Option<Frame>>> = Arc::default();
    let keep = Arc::clone(&recorded);
    let record: FrameHook = Arc::new(move |direction, frame: Frame| {
        if matches!(
            (direction, &frame.body),
            (Direction::ToProvider, Some(Body::Hello(_)))
        ) {
            *keep.lock().unwrap() = Some(frame.clone());
        }
        vec![frame]
    });
    let size = w.session(record, &w.p("first.csv")).await.unwrap();
    assert_eq!(size, 150);
    let old = recorded.lock().unwrap().clone().unwrap();
    let replay: FrameHook =
        Arc::new(
            move |direction, frame: Frame| match (direction, &frame.body) {
                (Direction::ToProvider, Some(Body::Hello(_))) => vec![old.clone()],
                _ => vec![frame],
            },
        );
    let err = w.session(replay, &w.p("second.csv")).await.unwrap_err();
    assert!(
        matches!(&err, OnlineError::PeerAborted { reason, .. } if reason.contains("was already accepted by this node")),
        "{err}"
    );
    assert!(!w.p("second.csv").exists());
}

/// A relay that flips one bit of the signature (the last 64 bytes) of every
/// receipt going `towards`, so that every field still decodes and only the
/// signature check can refuse it.
fn flip_receipt_signature(towards: Direction) -> FrameHook {
    Arc::new(move |direction, mut frame: Frame| {
        if is_receipt(direction, &frame, towards) {
            if let Some(Body::Receipt(bytes)) = &mut frame.body {
                let at = bytes.len() - 64;
                bytes[at] ^= 1;
            }
        }
        vec![frame]
    })
}

fn is_receipt(direction: Direction, frame: &Frame, towards: Direction) -> bool {
    direction == towards && matches!(frame.body, Some(Body::Receipt(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_swapped_from_another_session_or_altered_is_refused() {
    let w = World::new();
    let recorded: Arc<Mutex<Option<Frame>>> = Arc::default();
    let keep = Arc::clone(&recorded);
    let record: FrameHook = Arc::new(move |direction, frame: Frame| {
        if is_receipt(direction, &frame, Direction::ToRequester) {
            *keep.lock().unwrap() = Some(frame.clone());
        }
        vec![frame]
    });
    w.session(record, &w.p("first.csv")).await.unwrap();
    let old = recorded.lock().unwrap().clone().unwrap();
    let swap: FrameHook = Arc::new(move |direction, frame: Frame| {
        if is_receipt(direction, &frame, Direction::ToRequester) {
            return vec![old.clone()];
        }
        vec![frame]
    });
    let err = w.session(swap, &w.p("swapped.csv")).await.unwrap_err();
    assert!(
        matches!(&err, OnlineError::Protocol { source: sotto_psi::EngineError::ReceiptMismatch(what), .. } if what == "session id"),
        "{err}"
    );
    let flip = flip_receipt_signature(Direction::ToRequester);
    let err = w.session(flip, &w.p("flipped.csv")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            OnlineError::Protocol {
                source: sotto_psi::EngineError::BadSignature { what: "receipt" },
                ..
            }
        ),
        "{err}"
    );
    // The requester's receipt, altered on its way: the provider refuses it
    // and tells the requester.
    let flip_back = flip_receipt_signature(Direction::ToProvider);
    let err = w.session(flip_back, &w.p("back.csv")).await.unwrap_err();
    assert!(
        matches!(&err, OnlineError::PeerAborted { reason, .. } if reason.contains("receipt signature does not verify")),
        "{err}"
    );
    for out in ["swapped.csv", "flipped.csv", "back.csv"] {
        assert!(!w.p(out).exists(), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_signed_batch_of_the_other_stream_in_place_is_refused_as_such() {
    let w = World::new();
    // Hold back the last batch of w; put the first batch of v (correctly
    // signed, same session and sender) in its place.
    let last_w = 300u32.div_ceil(32) - 1;
    let held = Mutex::new(false);
    let attack = move |direction: Direction, frame: Frame| {
        let mut held = held.lock().unwrap();
        if direction == Direction::ToRequester && !*held {
            if is_batch(&frame, StreamKind::Reencrypted, last_w) {
                return Vec::new();
            }
            if is_batch(&frame, StreamKind::ProviderEncrypted, 0) {
                *held = true;
                return vec![frame];
            }
        }
        vec![frame]
    };
    expect_repaired(
        &w,
        attack,
        "is a v (provider's encrypted ids) batch where a w (re-encrypted requester ids) batch was expected",
    )
    .await;
}
