//! Any bytes given as a peer profile are parsed and verified or refused,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_node::Profile;

fuzz_target!(|data: &[u8]| {
    let _ = Profile::from_json(std::path::Path::new("fuzz.json"), data);
});
