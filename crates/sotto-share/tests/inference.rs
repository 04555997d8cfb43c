//! Inference on shares: every provider's sealed partial results, opened and
//! combined, give the model's score; an id nobody holds has a defined
//! answer; and each refusal (tampered or replayed answer, another model,
//! dataset, format or column count, a missing or inconsistent provider)
//! is its own error.

#![allow(clippy::expect_used)]

mod common;

use std::path::Path;

use common::{declaration, tables, Providers, MODEL};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::secret::SecretBytes;
use sotto_share::inference::{
    answer_partials, combine, open_partials, partials_key, InferenceError, PartialQuery, Partials,
    QueryKind, INFERENCE_FORMAT,
};
use sotto_share::model::{LinearModel, Model};
use sotto_share::{Declaration, FusedShare};

const NAMES: [&str; 3] = ["lender", "telecom", "insurer"];

struct Fixture {
    providers: Providers,
    shares: Vec<FusedShare>,
    model: Model,
    linear: LinearModel,
    key: SecretBytes<32>,
}

fn fixture() -> Fixture {
    let providers = Providers::new(declaration());
    let shares = providers.share(&tables(), 7);
    let linear = LinearModel::parse(Path::new("m.json"), MODEL, &declaration()).expect("model");
    Fixture {
        providers,
        shares,
        model: Model::Linear(linear.clone()),
        linear,
        key: partials_key(b"group key v2"),
    }
}

impl Fixture {
    fn query(&self, ids: &[&str]) -> PartialQuery {
        let d = &self.providers.declaration;
        PartialQuery {
            format: INFERENCE_FORMAT,
            kind: QueryKind::Partials,
            request: [9; 16],
            gateway: "gateway".into(),
            dataset: d.dataset.to_string(),
            version: d.version,
            model: self.linear.name.clone(),
            model_version: self.linear.version,
            digest: self.linear.digest,
            key_version: 2,
            tags: ids
                .iter()
                .map(|id| self.providers.tagger.tag(&d.dataset, id))
                .collect(),
        }
    }

    fn answer(&self, query: &PartialQuery, p: usize) -> Result<Vec<u8>, InferenceError> {
        answer_partials(
            query,
            NAMES[p],
            &self.providers.declaration,
            &self.model,
            &self.shares[p],
            &self.key,
            &mut ChaCha20Rng::seed_from_u64(p as u64),
        )
    }

    fn all(&self, query: &PartialQuery) -> Vec<(String, Option<Partials>)> {
        (0..3)
            .map(|p| {
                let sealed = self.answer(query, p).expect("answer");
                let opened = open_partials(query, NAMES[p], &self.key, &sealed, 1).expect("opens");
                (NAMES[p].to_owned(), Some(opened))
            })
            .collect()
    }
}

#[test]
fn sealed_partials_combine_into_the_scores_and_an_unknown_id_is_none() {
    let f = fixture();
    let query = f.query(&["c-1", "c-99", "c-3"]);
    let scores = combine(&f.linear, &f.all(&query)).expect("combined");
    assert_eq!(scores.len(), 3);
    assert_eq!(scores[1], None, "nobody holds c-99");
    for (i, id) in [(0, "c-1"), (2, "c-3")] {
        let tag = query.tags[i];
        let sum = f
            .shares
            .iter()
            .map(|s| f.linear.partial(s, &tag).expect("held"))
            .fold(0u64, u64::wrapping_add);
        assert_eq!(scores[i], Some(f.linear.score(sum)), "{id}");
    }
}

#[test]
fn an_answer_is_bound_to_its_request_provider_and_key() {
    let f = fixture();
    let query = f.query(&["c-1", "c-2"]);
    let sealed = f.answer(&query, 0).expect("answer");
    let sealed_error = Err(InferenceError::Sealed {
        provider: "lender".into(),
    });
    let mut other = query.clone();
    other.request = [1; 16];
    assert_eq!(
        open_partials(&other, "lender", &f.key, &sealed, 1),
        sealed_error,
        "replayed into another request"
    );
    let mut reordered = query.clone();
    reordered.tags.reverse();
    assert_eq!(
        open_partials(&reordered, "lender", &f.key, &sealed, 1),
        sealed_error,
        "another list of customers"
    );
    let mut rekeyed = query.clone();
    rekeyed.key_version = 3;
    assert_eq!(
        open_partials(&rekeyed, "lender", &f.key, &sealed, 1),
        sealed_error,
        "another key version"
    );
    assert_eq!(
        open_partials(&query, "telecom", &f.key, &sealed, 1),
        Err(InferenceError::Sealed {
            provider: "telecom".into()
        }),
        "passed off as another provider's"
    );
    assert_eq!(
        open_partials(&query, "lender", &partials_key(b"group key v1"), &sealed, 1),
        sealed_error,
        "another group key"
    );
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        open_partials(&query, "lender", &f.key, &tampered, 1),
        sealed_error,
        "tampered"
    );
    assert!(open_partials(&query, "lender", &f.key, &sealed, 1).is_ok());
}

#[test]
fn a_provider_refuses_a_request_it_cannot_answer() {
    let f = fixture();
    let good = f.query(&["c-1"]);
    let mut format = good.clone();
    format.format = 2;
    assert_eq!(f.answer(&format, 0), Err(InferenceError::Format { got: 2 }));
    assert_eq!(
        f.answer(&f.query(&[]), 0),
        Err(InferenceError::IdCount { got: 0 })
    );
    let mut version = good.clone();
    version.version = 5;
    assert!(matches!(
        f.answer(&version, 0),
        Err(InferenceError::Dataset { asked, .. }) if asked == "credit-features version 5"
    ));
    let mut digest = good.clone();
    digest.digest[0] ^= 1;
    assert!(matches!(
        f.answer(&digest, 0),
        Err(InferenceError::Model { reason, .. }) if reason.contains("is not the registered one")
    ));
    let mut name = good.clone();
    name.model = "other".into();
    assert!(matches!(
        f.answer(&name, 0),
        Err(InferenceError::Model { reason, .. }) if reason == "not held here"
    ));
    assert!(f.answer(&good, 0).is_ok());
}

#[test]
fn a_model_for_another_column_count_is_refused() {
    let f = fixture();
    let text = format!(
        "{}\n[[provider.column]]\nname = \"extra\"\nscale = 1\nmin = \"0\"\nmax = \"9\"\n",
        common::DECLARATION
    );
    let wider = Declaration::parse(Path::new("wider.toml"), &text).expect("wider declaration");
    let model =
        Model::Linear(LinearModel::parse(Path::new("m.json"), MODEL, &wider).expect("model"));
    let mut query = f.query(&["c-1"]);
    query.digest = model.digest();
    let answered = answer_partials(
        &query,
        "lender",
        &wider,
        &model,
        &f.shares[0],
        &f.key,
        &mut ChaCha20Rng::seed_from_u64(0),
    );
    assert_eq!(
        answered,
        Err(InferenceError::ColumnCount {
            model: wider.width(),
            share: f.providers.declaration.width()
        })
    );
}

#[test]
fn a_missing_or_inconsistent_provider_fails_the_whole_request() {
    let f = fixture();
    let query = f.query(&["c-1", "c-2"]);
    let mut answers = f.all(&query);
    answers[1].1 = None;
    assert_eq!(
        combine(&f.linear, &answers),
        Err(InferenceError::Missing {
            provider: "telecom".into()
        })
    );
    let mut answers = f.all(&query);
    if let Some(p) = answers[2].1.as_mut() {
        p[1] = None;
    }
    assert_eq!(
        combine(&f.linear, &answers),
        Err(InferenceError::Inconsistent {
            provider: "insurer".into(),
            first: "lender".into(),
            position: 1
        })
    );
}

/// An ONNX descriptor over three joint columns, its file beside it.
fn onnx_model(dir: &Path) -> Model {
    std::fs::write(dir.join("tree.onnx"), b"onnx bytes").expect("write");
    let text = r#"{"format": 1, "name": "tree", "version": 1, "kind": "onnx",
        "dataset": "credit-features", "file": "tree.onnx",
        "features": ["insurer.premium", "lender.debt", "telecom.present"]}"#;
    let path = dir.join("tree.json");
    std::fs::write(&path, text).expect("write");
    Model::read(&path, &declaration()).expect("descriptor")
}

#[test]
fn rows_for_a_general_model_reconstruct_the_joint_columns_only_for_it() {
    let f = fixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = onnx_model(dir.path());
    let Model::Onnx(spec) = &tree else {
        panic!("an ONNX model")
    };
    let mut query = f.query(&["c-3", "c-99"]);
    query.kind = QueryKind::Rows;
    query.model = "tree".into();
    query.model_version = 1;
    query.digest = tree.digest();
    let answers: Vec<(String, Option<Partials>)> = (0..3)
        .map(|p| {
            let sealed = answer_partials(
                &query,
                NAMES[p],
                &f.providers.declaration,
                &tree,
                &f.shares[p],
                &f.key,
                &mut ChaCha20Rng::seed_from_u64(3),
            )
            .expect("rows");
            let opened = open_partials(&query, NAMES[p], &f.key, &sealed, 3).expect("opens");
            (NAMES[p].to_owned(), Some(opened))
        })
        .collect();
    let rows = sotto_share::inference::reconstruct(&answers).expect("rows add up");
    let joint = f.providers.joint(&tables());
    let expected: Vec<u64> = spec
        .columns
        .iter()
        .map(|(c, _)| joint[&query.tags[0]][*c])
        .collect();
    assert_eq!(rows[0].as_deref(), Some(expected.as_slice()));
    assert_eq!(rows[1], None, "nobody holds c-99");
    assert_eq!(spec.decode(&expected), vec![99.99, 0.0, 1.0]);

    let mut partials_for_tree = query.clone();
    partials_for_tree.kind = QueryKind::Partials;
    assert!(matches!(
        answer_partials(&partials_for_tree, "lender", &f.providers.declaration, &tree, &f.shares[0], &f.key, &mut ChaCha20Rng::seed_from_u64(0)),
        Err(InferenceError::Model { reason, .. }) if reason.contains("reconstructed rows")
    ));
    let mut rows_for_linear = f.query(&["c-3"]);
    rows_for_linear.kind = QueryKind::Rows;
    assert!(matches!(
        f.answer(&rows_for_linear, 0),
        Err(InferenceError::Model { reason, .. }) if reason.contains("rows are never sent")
    ));
    let sealed = answer_partials(
        &query,
        "lender",
        &f.providers.declaration,
        &tree,
        &f.shares[0],
        &f.key,
        &mut ChaCha20Rng::seed_from_u64(0),
    )
    .expect("rows");
    assert_eq!(
        open_partials(&partials_for_tree, "lender", &f.key, &sealed, 3),
        Err(InferenceError::Sealed {
            provider: "lender".into()
        }),
        "rows passed off as partial results"
    );
}

#[test]
fn an_onnx_descriptor_with_a_bad_field_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tree.json");
    let read = |text: &str| {
        std::fs::write(&path, text).expect("write");
        match Model::read(&path, &declaration()) {
            Err(sotto_share::model::ModelError::Invalid { field, .. }) => field,
            other => panic!("{text}: {other:?}"),
        }
    };
    let base = r#"{"format": 1, "name": "tree", "version": 1, "kind": "onnx",
        "dataset": "credit-features", "file": "FILE", "features": [FEATURES]}"#;
    std::fs::write(dir.path().join("t.onnx"), b"x").expect("write");
    assert_eq!(
        read(
            &base
                .replace("FILE", "missing.onnx")
                .replace("FEATURES", "\"lender.debt\"")
        ),
        "file"
    );
    assert_eq!(
        read(
            &base
                .replace("FILE", "t.onnx")
                .replace("FEATURES", "\"lender.nothing\"")
        ),
        "features[0] (lender.nothing)"
    );
    assert_eq!(
        read(
            &base
                .replace("FILE", "t.onnx")
                .replace("FEATURES", "\"lender.debt\", \"lender.debt\"")
        ),
        "features[1] (lender.debt)"
    );
    assert_eq!(
        read(&base.replace("FILE", "t.onnx").replace("FEATURES", "")),
        "features"
    );
}
