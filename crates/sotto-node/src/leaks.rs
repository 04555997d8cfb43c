//! Finding a secret in bytes that should not hold it, in any encoding a
//! careless write would use: raw, hex (either case) or base64 (standard or
//! URL-safe, at any alignment inside a longer encoded run). The tests scan
//! every file a capability writes with it; an audit could too.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

/// How `secret` appears in `haystack`, if it does: `"raw"`, `"hex"` or
/// `"base64"`. Secrets shorter than 8 bytes are not searched (they would
/// match by chance).
pub fn leaked_encoding(haystack: &[u8], secret: &[u8]) -> Option<&'static str> {
    if secret.len() < 8 {
        return None;
    }
    if contains(haystack, secret) {
        return Some("raw");
    }
    let hex = hex::encode(secret);
    if contains(haystack, hex.as_bytes()) || contains(haystack, hex.to_uppercase().as_bytes()) {
        return Some("hex");
    }
    base64_forms(secret)
        .iter()
        .any(|form| contains(haystack, form.as_bytes()))
        .then_some("base64")
}

/// The base64 text `secret` turns into wherever it sits in a longer encoded
/// run: for each of the three alignments, the characters that depend on
/// the secret's bytes alone.
fn base64_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = Vec::new();
    for offset in 0..3 {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(secret);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let text = engine.encode(&padded);
            // Skip the characters shared with the bytes before, and the
            // last (partial) group, which depends on the bytes after.
            let skip = (offset * 8).div_ceil(6);
            let keep = (padded.len() * 8) / 6;
            if keep > skip + 4 {
                forms.push(text[skip..keep].to_owned());
            }
        }
    }
    forms
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_secret_in_every_encoding_and_alignment() {
        let secret: Vec<u8> = (0..32u8).map(|b| b.wrapping_mul(37) ^ 0xa5).collect();
        assert_eq!(leaked_encoding(&secret, &secret), Some("raw"));
        let text = format!("key = \"{}\"", hex::encode_upper(&secret));
        assert_eq!(leaked_encoding(text.as_bytes(), &secret), Some("hex"));
        for before in 0..5 {
            let mut framed = vec![0x11; before];
            framed.extend_from_slice(&secret);
            framed.extend_from_slice(b"tail");
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let encoded = format!("{{\"v\":\"{}\"}}", engine.encode(&framed));
                assert_eq!(
                    leaked_encoding(encoded.as_bytes(), &secret),
                    Some("base64"),
                    "{before} bytes before"
                );
            }
        }
        assert_eq!(leaked_encoding(b"nothing here at all", &secret), None);
    }
}
