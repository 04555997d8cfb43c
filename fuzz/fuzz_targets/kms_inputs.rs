//! Any bytes given to the KMS or the agent as an envelope, a reply channel
//! id, a channel grant, a recovery answer, a public key statement or a
//! stored bundle's signed header are parsed and checked or refused, never a
//! panic. (Opening the password-sealed part is left out: a valid header
//! makes each input cost an Argon2id evaluation; its header checks have
//! unit tests.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::identity::{IdentityKey, SIGNATURE_LEN};
use sotto_kms::bundle::StoredBundle;
use sotto_kms::engine::{parse_channel, parse_envelope};
use sotto_kms::reply;
use sotto_kms::reply_channel::{ChannelGrant, ChannelRequest, ReplyChannels, DEFAULT_TTL};

/// Reads a channel grant from the front of `data`, if it is long enough.
fn grant(data: &[u8]) -> Option<ChannelGrant> {
    let (channel, rest) = data.split_at_checked(16)?;
    let (kms_key, rest) = rest.split_at_checked(32)?;
    let (ttl, rest) = rest.split_at_checked(8)?;
    let signature = rest.get(..SIGNATURE_LEN)?;
    Some(ChannelGrant {
        channel: parse_channel(channel).ok()?,
        kms_key: kms_key.try_into().ok()?,
        ttl_secs: u64::from_be_bytes(ttl.try_into().ok()?),
        signature: signature.try_into().ok()?,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(kms) = IdentityKey::from_seed(&[3u8; 32]) else {
        return;
    };
    let signer = kms.public();
    let mut rng = StdRng::seed_from_u64(7);
    let request = ChannelRequest::new(&mut rng);
    let Ok((_, channel)) =
        ReplyChannels::grant(DEFAULT_TTL, &kms, "bank-a", &request.public(), &mut rng)
    else {
        return;
    };
    if let Ok(envelope) = parse_envelope(data) {
        let (salt, sealed) = data.split_at(data.len().min(32));
        let _ = reply::open_recovered(&signer, &envelope, &channel, salt, sealed);
    }
    if let Some(grant) = grant(data) {
        let _ = request.accept(&signer, "bank-a", &grant);
    }
    let _ = ReplyChannels::grant(DEFAULT_TTL, &kms, "bank-a", data, &mut rng);
    let _ = reply::verify_statement(&signer, data, data);
    let _ = StoredBundle::parse(data);
    if let Ok(pubkey_channel) = HpkeSecretKey::from_bytes(&[5u8; 32]) {
        let _ = reply::open_channel(&pubkey_channel, data);
    }
});
