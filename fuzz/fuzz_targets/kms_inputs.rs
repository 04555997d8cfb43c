//! Any bytes given to the KMS or the agent as an envelope, a recovery
//! answer or a public key statement are parsed and checked or refused,
//! never a panic. (Password-sealed bundles are left out: a valid header
//! makes each input cost an Argon2id evaluation; their header checks have
//! unit tests.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::identity::IdentityKey;
use sotto_kms::engine::parse_envelope;
use sotto_kms::reply;

fuzz_target!(|data: &[u8]| {
    let signer = IdentityKey::from_seed(&[3u8; 32]).map(|k| k.public());
    let reply_key = HpkeSecretKey::from_bytes(&[5u8; 32]);
    if let (Ok(signer), Ok(reply_key)) = (signer, reply_key) {
        if let Ok(envelope) = parse_envelope(data) {
            let _ = reply::open_recovered(&signer, &envelope, &reply_key, data);
        }
        let _ = reply::verify_statement(&signer, data, data);
        let _ = reply::open_channel(&reply_key, data);
    }
});
