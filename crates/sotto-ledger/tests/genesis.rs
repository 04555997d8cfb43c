//! The genesis file: a valid consortium parses into the configuration it
//! describes, and every mistake is reported at its file, line and column.

#![allow(clippy::expect_used)]

mod common;

use common::Consortium;
use sotto_ledger::config::StorageMode;
use sotto_ledger::LedgerConfig;

fn refused(text: &str) -> sotto_ledger::GenesisError {
    LedgerConfig::parse("genesis.toml", text).expect_err("a refused genesis")
}

/// The 1-based line and column of the first occurrence of `needle`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).expect("needle in text");
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = at - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

fn assert_refused_at(text: &str, needle: &str, offset: usize, reason: &str) {
    let err = refused(text);
    let (line, column) = position(text, needle);
    assert_eq!((err.line, err.column), (line, column + offset), "{err}");
    assert!(err.reason.contains(reason), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("genesis.toml:{line}:")),
        "{err}"
    );
}

#[test]
fn a_consortium_parses_into_its_configuration() {
    let consortium = Consortium::new();
    let config = LedgerConfig::parse("genesis.toml", &consortium.genesis()).expect("valid");
    assert_eq!(config.name, "credit-ledger");
    assert_eq!(config.center.identity, consortium.center.public());
    assert_eq!(config.orderers.len(), 3);
    assert_eq!(
        config.endorsers[1].identity,
        consortium.endorsers[1].public()
    );
    assert_eq!(config.business[0].mode, StorageMode::Ciphertext);
    assert_eq!(config.business[1].mode, StorageMode::Plaintext);
    assert_eq!(config.blocks.max_transactions, 100);
    assert_eq!(config.blocks.timeout_ms, 20, "the default");
    let credit = config.contract("credit").expect("credit");
    assert_eq!(credit.policy.to_string(), "OutOf(2, 'e1', 'e2', 'e3')");
    assert_eq!(credit.callers.len(), 2);
    assert_eq!(config.endorsers_of("audit"), 0b010);
    assert_eq!(config.endorsers_of("e1"), 0b001);
    let kv = config.contract("kv").expect("kv");
    assert!(!kv.policy.satisfied_by(&|p| config.endorsers_of(p), 0b001));
    assert!(!kv.policy.satisfied_by(&|p| config.endorsers_of(p), 0b101));
    assert!(kv.policy.satisfied_by(&|p| config.endorsers_of(p), 0b011));
}

#[test]
fn syntax_errors_name_line_and_column() {
    let text = Consortium::new()
        .genesis()
        .replace("max_transactions = 100", "max_transactions = ");
    let err = refused(&text);
    assert_eq!(err.line, position(&text, "max_transactions").0, "{err}");
    let text = Consortium::new()
        .genesis()
        .replace("[center]", "[center]\ncolour = \"red\"");
    assert_refused_at(&text, "colour", 0, "unknown field `colour`");
}

#[test]
fn every_field_check_points_at_its_value() {
    let good = Consortium::new().genesis();
    let cases: Vec<(String, &str, usize, &str)> = vec![
        (
            good.replace("format = 1", "format = 2"),
            "2\nname",
            0,
            "genesis format 2",
        ),
        (
            good.replace("name = \"o2\"", "name = \"O2\""),
            "\"O2\"",
            0,
            "lowercase",
        ),
        (
            good.replacen("ca_sha256 = \"abab", "ca_sha256 = \"zzab", 1),
            "\"zzab",
            0,
            "ca_sha256 must be",
        ),
        (
            good.replace("address = \"127.0.0.1:7051\"", "address = \"localhost\""),
            "\"localhost\"",
            0,
            "not host:port",
        ),
        (
            good.replace("mode = \"plaintext\"", "mode = \"clear\""),
            "\"clear\"",
            0,
            "neither \"ciphertext\"",
        ),
        (
            good.replace("max_transactions = 100", "max_transactions = 0"),
            "max_transactions = 0",
            19,
            "outside 1..=100000",
        ),
        (
            good.replace("name = \"kv\"\nversion = 1", "name = \"kv\"\nversion = 0"),
            "0\npolicy",
            0,
            "start at 1",
        ),
        (
            good.replace("'e2', 'e3'", "'e2', 'e9'"),
            "'e9'",
            0,
            "'e9' is neither an endorser",
        ),
        (
            good.replace("OutOf(2, 'e1'", "OutOf(2; 'e1'"),
            ";",
            0,
            "policy: expected ','",
        ),
        (
            good.replace("[\"bank-a\"]", "[\"bank-z\"]"),
            "[\"bank-z\"]",
            0,
            "bank-z is not a [[client]]",
        ),
    ];
    for (text, needle, offset, reason) in cases {
        assert_refused_at(&text, needle, offset, reason);
    }
}

#[test]
fn a_name_used_twice_is_refused_at_its_second_use() {
    let text = Consortium::new()
        .genesis()
        .replace("name = \"o2\"", "name = \"o1\"");
    let err = refused(&text);
    assert!(err.reason.contains("o1 names two nodes"), "{err}");
    let second = text.match_indices("name = \"o1\"").nth(1).expect("two").0;
    assert_eq!(err.line, text[..second].matches('\n').count() + 1, "{err}");
    assert_eq!(err.column, 8, "{err}");
}

#[test]
fn identity_keys_must_be_ed25519_public_keys() {
    let consortium = Consortium::new();
    let good = consortium.genesis();
    let key = hex::encode(consortium.endorsers[0].public().to_bytes());
    let short = good.replace(&key, &key[..60]);
    assert_refused_at(
        &short,
        &format!("\"{}\"", &key[..60]),
        0,
        "not an Ed25519 identity public key",
    );
    let weak = good.replace(&key, &"00".repeat(32));
    assert_refused_at(&weak, &format!("\"{}\"", "00".repeat(32)), 0, "weak point");
}

#[test]
fn an_endorser_named_like_an_organisation_is_refused() {
    let text = Consortium::new()
        .genesis()
        .replace("name = \"e1\"", "name = \"audit\"");
    let err = refused(&text);
    assert!(
        err.reason
            .contains("named like the organisation of endorser e2"),
        "{err}"
    );
}

#[test]
fn a_role_left_empty_or_a_contract_declared_twice_is_refused() {
    let good = Consortium::new().genesis();
    let no_business: String = good
        .split("\n[[")
        .filter(|section| !section.starts_with("business]]"))
        .collect::<Vec<_>>()
        .join("\n[[");
    assert!(refused(&no_business)
        .reason
        .contains("at least one [[business]]"));
    let twice = good.replace("name = \"kv\"", "name = \"credit\"");
    let err = refused(&twice);
    assert!(
        err.reason.contains("contract credit is declared twice"),
        "{err}"
    );
}
