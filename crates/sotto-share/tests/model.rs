//! Linear models on shares: the providers' partial results add up to the
//! model's linear part computed in clear from the tables, exactly at the
//! fixed point; each bad model field is named.

#![allow(clippy::expect_used)]

mod common;

use std::path::Path;

use common::{declaration, tables, Providers, MODEL};
use sotto_share::model::{LinearModel, Link, ModelError};

fn parse(text: &str) -> Result<LinearModel, ModelError> {
    LinearModel::parse(Path::new("model.json"), text, &declaration())
}

/// The score in floating point, from the tables' decimal values.
fn clear_score(id: &str) -> f64 {
    let mut z = -1.25;
    for (p, rows) in tables().iter().enumerate() {
        let Some((_, values)) = rows.iter().find(|(i, _)| i == id) else {
            continue;
        };
        z += match p {
            0 => 0.00002 * values[0] as f64 / 100.0 - 0.3 * values[1] as f64,
            1 => 0.01 * values[0] as f64,
            _ => 0.0004 * values[1] as f64 / 100.0 + 0.5,
        };
    }
    1.0 / (1.0 + (-z).exp())
}

#[test]
fn partial_results_on_shares_add_up_to_the_score() {
    let providers = Providers::new(declaration());
    let shares = providers.share(&tables(), 50);
    let model = parse(MODEL).expect("valid model");
    assert_eq!(model.link, Link::Logistic);
    for id in ["c-1", "c-2", "c-3", "c-4"] {
        let tag = providers.tagger.tag(&providers.declaration.dataset, id);
        let sum = shares
            .iter()
            .map(|s| model.partial(s, &tag).expect("known customer"))
            .fold(0u64, u64::wrapping_add);
        let score = model.score(sum);
        assert!(
            (score - clear_score(id)).abs() < 1e-12,
            "{id}: {score} on shares, {} in clear",
            clear_score(id)
        );
    }
    let unknown = providers.tagger.tag(&providers.declaration.dataset, "c-99");
    assert_eq!(model.partial(&shares[0], &unknown), None);
}

#[test]
fn the_digest_binds_every_weight_and_the_declaration() {
    let base = parse(MODEL).expect("valid").digest;
    for (from, to) in [
        ("\"0.01\"", "\"0.011\""),
        ("\"-1.25\"", "\"-1.26\""),
        ("\"logistic\"", "\"linear\""),
        ("\"version\": 3", "\"version\": 4"),
    ] {
        let other = parse(&MODEL.replace(from, to)).expect("valid").digest;
        assert_ne!(other, base, "{from} -> {to}");
    }
}

#[test]
fn every_bad_field_is_named() {
    let cases = [
        (
            MODEL.replace("\"format\": 1", "\"format\": 2"),
            "format: format 2 is not 1",
        ),
        (
            MODEL.replace("\"logistic\"", "\"tree\""),
            "kind: \"tree\" is not \"linear\" or \"logistic\"",
        ),
        (
            MODEL.replace("\"dataset\": \"credit-features\"", "\"dataset\": \"other\""),
            "dataset: the model is for other",
        ),
        (
            MODEL.replace("telecom.tenure_months", "telecom.age"),
            "features[2] (telecom.age): no such column",
        ),
        (
            MODEL.replace("insurer.present", "lender.debt"),
            "features[4] (lender.debt): the column is named twice",
        ),
        (
            MODEL.replace("\"0.01\"", "\"0.0000001\""),
            "features[2] (telecom.tenure_months): weight",
        ),
        (
            MODEL.replace("\"0.00002\"", "\"900000000000\""),
            "the weights times the declared ranges could overflow",
        ),
        (
            MODEL.replace("\"version\": 3", "\"version\": 0"),
            "version: versions start at 1",
        ),
    ];
    for (text, expected) in cases {
        let err = parse(&text).expect_err("refused").to_string();
        assert!(err.starts_with("model.json: "), "{err}");
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    let syntax = parse("{\"format\": 1,\n \"name\": }")
        .expect_err("refused")
        .to_string();
    assert!(syntax.contains("line 2 column 10"), "{syntax}");
}
