//! Untrusted sharing inputs — a dataset declaration's text, a sealed chunk
//! from the ledger at its recipient, and the chunks fused together — are
//! decoded, checked or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_share::{open_chunk, Declaration, Fuser, SealedChunk};

const DECLARATION: &str = "format = 1\ndataset = \"d\"\nversion = 1\n\
[[provider]]\nname = \"a\"\n[[provider.column]]\nname = \"x\"\nscale = 1\nmin = \"0\"\nmax = \"9\"\n\
[[provider]]\nname = \"b\"\n[[provider.column]]\nname = \"y\"\nscale = 1\nmin = \"0\"\nmax = \"9\"\n";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Declaration::parse(std::path::Path::new("fuzz.toml"), text);
    }
    let Ok(declaration) = Declaration::parse(std::path::Path::new("d.toml"), DECLARATION) else {
        return;
    };
    let Ok(key) = HpkeSecretKey::from_bytes(&[7; 32]) else {
        return;
    };
    if let Ok(chunk) = SealedChunk::decode(data) {
        if let Ok(opened) = open_chunk(&declaration, "b", &key, &chunk) {
            let mut fuser = Fuser::new(&declaration);
            let _ = fuser.add(opened);
            let _ = fuser.finish();
        }
    }
});
