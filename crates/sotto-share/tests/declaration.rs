//! The dataset declaration: a good one reads, every bad field is named,
//! syntax errors give line and column, and the digest moves with every
//! field the fragments depend on.

#![allow(clippy::expect_used)]

mod common;

use std::path::Path;

use common::DECLARATION;
use sotto_share::dataset::DeclarationError;
use sotto_share::Declaration;

fn parse(text: &str) -> Result<Declaration, DeclarationError> {
    Declaration::parse(Path::new("dataset.toml"), text)
}

fn refusal(text: &str) -> String {
    parse(text).expect_err("refused").to_string()
}

#[test]
fn a_good_declaration_reads_with_its_joint_layout() {
    let d = parse(DECLARATION).expect("valid");
    assert_eq!(d.dataset.as_str(), "credit-features");
    assert_eq!(d.version, 2);
    assert_eq!(d.width(), 8);
    assert_eq!(d.slot(1), Some((3, 2)));
    assert_eq!(d.slot(3), None);
    assert_eq!(d.index_of("insurer"), Some(2));
    assert_eq!(
        d.column_names(),
        [
            "lender.debt",
            "lender.loans",
            "lender.present",
            "telecom.tenure_months",
            "telecom.present",
            "insurer.claims",
            "insurer.premium",
            "insurer.present"
        ]
    );
    assert_eq!(d.providers[0].columns[0].min, -100_000_000);
}

#[test]
fn every_bad_field_is_named() {
    let cases = [
        (
            DECLARATION.replace("format = 1", "format = 2"),
            "format: format 2 is not 1",
        ),
        (
            DECLARATION.replace("\"credit-features\"", "\"Credit Features\""),
            "dataset: dataset name",
        ),
        (
            DECLARATION.replace("version = 2", "version = 0"),
            "version: versions start at 1",
        ),
        (
            DECLARATION.replace("name = \"telecom\"", "name = \"lender\""),
            "provider[1] (lender): the provider is declared twice",
        ),
        (
            DECLARATION.replace("name = \"telecom\"", "name = \"Tele Com\""),
            "provider[1] (Tele Com)",
        ),
        (
            DECLARATION.replace(
                "scale = 100\nmin = \"-1000000\"",
                "scale = 7\nmin = \"-1000000\"",
            ),
            "provider[0] (lender).column[0] (debt): scale 7 must be a power of ten",
        ),
        (
            DECLARATION.replace("min = \"0\"\nmax = \"600\"", "min = \"700\"\nmax = \"600\""),
            "provider[1] (telecom).column[0] (tenure_months): min 700 is above max 600",
        ),
        (
            DECLARATION.replace("name = \"premium\"", "name = \"claims\""),
            "provider[2] (insurer).column[1] (claims): the column is declared twice",
        ),
    ];
    for (text, expected) in cases {
        let err = refusal(&text);
        assert!(err.starts_with("dataset.toml: "), "{err}");
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    let one = DECLARATION
        .split("[[provider]]")
        .take(2)
        .collect::<Vec<_>>()
        .join("[[provider]]");
    assert!(refusal(&one).contains("1 providers declared: sharing needs 2"));
    let bare = "format = 1\ndataset = \"d\"\nversion = 1\n[[provider]]\nname = \"a\"\n[[provider]]\nname = \"b\"\n";
    assert!(refusal(bare).contains("provider[0] (a): declare at least one [[provider.column]]"));
}

#[test]
fn syntax_errors_name_line_and_column() {
    let err = refusal("format = 1\ndataset = \"d\"\nversion = \n");
    assert!(err.contains("line 3, column 11"), "{err}");
    let unknown = refusal(&DECLARATION.replace("version = 2", "version = 2\ncolour = 1"));
    assert!(unknown.contains("unknown field `colour`"), "{unknown}");
}

#[test]
fn the_digest_moves_with_every_field_fragments_depend_on() {
    let base = parse(DECLARATION).expect("valid").digest();
    for (from, to) in [
        ("version = 2", "version = 3"),
        ("credit-features", "credit-features2"),
        ("name = \"loans\"", "name = \"loan_count\""),
        ("max = \"600\"", "max = \"601\""),
        ("scale = 100\nmin = \"0\"", "scale = 1000\nmin = \"0\""),
    ] {
        let other = parse(&DECLARATION.replacen(from, to, 1))
            .expect("valid")
            .digest();
        assert_ne!(other, base, "{from} -> {to}");
    }
}
