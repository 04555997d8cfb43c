//! The gateway's OpenAPI file (docs/gateway-openapi.json) describes the
//! API the gateway serves: the same paths and methods, the same error
//! codes.

#![allow(clippy::expect_used)]

use sotto_share::online::http::{ERROR_CODES, PATHS};

#[test]
fn the_openapi_file_matches_the_served_api() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/gateway-openapi.json"
    );
    let text = std::fs::read_to_string(path).expect("the OpenAPI file");
    let spec: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let paths = spec["paths"].as_object().expect("paths");
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |m| (p.clone(), m.clone()))
        })
        .collect();
    documented.sort();
    let mut served: Vec<(String, String)> = PATHS
        .iter()
        .map(|(p, m)| ((*p).to_owned(), (*m).to_owned()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    let codes: Vec<&str> = spec["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("error codes")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert_eq!(codes, ERROR_CODES);
}
