//! Untrusted sharing inputs — a dataset declaration's text, a sealed chunk
//! from the ledger at its recipient, and the chunks fused together; a
//! gateway's users file; an inference query as a provider receives it and
//! a provider's sealed answer as the gateway opens it — are decoded,
//! checked or refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_share::inference::{open_partials, partials_key};
use sotto_share::online::users::Users;
use sotto_share::online::wire::query_from_wire;
use sotto_share::{open_chunk, Declaration, Fuser, SealedChunk};

const DECLARATION: &str = "format = 1\ndataset = \"d\"\nversion = 1\n\
[[provider]]\nname = \"a\"\n[[provider.column]]\nname = \"x\"\nscale = 1\nmin = \"0\"\nmax = \"9\"\n\
[[provider]]\nname = \"b\"\n[[provider.column]]\nname = \"y\"\nscale = 1\nmin = \"0\"\nmax = \"9\"\n";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Declaration::parse(std::path::Path::new("fuzz.toml"), text);
        let _ = Users::parse(std::path::Path::new("users.toml"), text);
    }
    if let Ok(request) = sotto_wire::share::PartialRequest::decode(data) {
        if let Ok(query) = query_from_wire(request) {
            let key = partials_key(b"group key");
            for width in [1, 3] {
                let _ = open_partials(&query, "a", &key, data, width);
            }
        }
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
