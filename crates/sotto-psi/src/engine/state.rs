//! Saving a session between offline steps. The encoding holds secrets (salt,
//! scalar, shuffle seed, ephemeral key); callers write it with mode 0600.

use sotto_crypto::group::{EcdhScalar, GroupId};
use sotto_crypto::ids::SessionId;
use sotto_crypto::kdf::EphemeralKey;
use sotto_crypto::secret::SecretBytes;
use zeroize::Zeroizing;

use super::{Session, SessionParams, SignatureCounts, Transcript};
use crate::codec::{Reader, Writer};
use crate::error::DecodeError;
use crate::wire::{decode_enum, decode_identity, KeyParams, Reveal, Role, SigningMode};

const STATE_VERSION: u16 = 2;

fn put_opt(w: &mut Writer, value: Option<&[u8; 32]>) {
    match value {
        Some(v) => w.u8(1).raw(v),
        None => w.u8(0),
    };
}

fn get_opt(r: &mut Reader<'_>, field: &'static str) -> Result<Option<[u8; 32]>, DecodeError> {
    match r.u8(field)? {
        0 => Ok(None),
        1 => Ok(Some(r.array(field)?)),
        other => Err(r.invalid(field, format!("flag {other}"))),
    }
}

impl Session {
    /// Encodes the whole session, secrets included.
    pub fn encode_state(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::with_capacity(512);
        let p = &self.params;
        w.u16(STATE_VERSION)
            .raw(p.sid.as_bytes())
            .u8(p.group.code())
            .u8(p.mode.code())
            .u8(p.reveal.code())
            .u32(p.batch_size)
            .u64(p.created);
        p.keys.encode(&mut w);
        w.u8(u8::from(p.align))
            .u8(self.role.code())
            .raw(&self.local.to_bytes())
            .raw(&self.peer.to_bytes())
            .u64(self.requester_size)
            .u64(self.provider_size);
        put_opt(
            &mut w,
            self.ephemeral
                .as_ref()
                .map(|e| *e.to_bytes().expose())
                .as_ref(),
        );
        put_opt(&mut w, self.salt.as_ref().map(SecretBytes::expose));
        w.raw(self.scalar.to_bytes().expose())
            .raw(self.shuffle_seed.expose());
        put_opt(&mut w, self.transcript.requester_hello.as_ref());
        put_opt(&mut w, self.transcript.provider_hello.as_ref());
        for stream in &self.transcript.streams {
            put_opt(&mut w, stream.as_ref());
        }
        w.u64(self.counts.made).u64(self.counts.verified);
        Zeroizing::new(w.finish())
    }

    /// Decodes a session saved with [`Session::encode_state`].
    pub fn decode_state(bytes: &[u8]) -> Result<Session, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u16("state.version")?;
        if version != STATE_VERSION {
            return Err(r.invalid(
                "state.version",
                format!("state version {version}; this build reads {STATE_VERSION}"),
            ));
        }
        let params = SessionParams {
            sid: SessionId::from_bytes(r.array("state.sid")?),
            group: decode_enum(&mut r, "state.group", GroupId::from_code)?,
            mode: decode_enum(&mut r, "state.mode", SigningMode::from_code)?,
            reveal: decode_enum(&mut r, "state.reveal", Reveal::from_code)?,
            batch_size: r.u32("state.batch_size")?,
            created: r.u64("state.created")?,
            keys: KeyParams::decode(&mut r)?,
            align: match r.u8("state.align")? {
                0 => false,
                1 => true,
                other => return Err(r.invalid("state.align", format!("flag {other}"))),
            },
        };
        let role = decode_enum(&mut r, "state.role", Role::from_code)?;
        let local = decode_identity(&mut r, "state.local")?;
        let peer = decode_identity(&mut r, "state.peer")?;
        let requester_size = r.u64("state.requester_size")?;
        let provider_size = r.u64("state.provider_size")?;
        let ephemeral = get_opt(&mut r, "state.ephemeral")?
            .map(|b| EphemeralKey::from_bytes(&SecretBytes::new(b)));
        let salt = get_opt(&mut r, "state.salt")?.map(SecretBytes::new);
        let scalar =
            EcdhScalar::from_bytes(params.group, &SecretBytes::new(r.array("state.scalar")?))
                .map_err(|e| r.invalid("state.scalar", e.to_string()))?;
        let shuffle_seed = SecretBytes::new(r.array("state.shuffle_seed")?);
        let transcript = Transcript {
            requester_hello: get_opt(&mut r, "state.transcript")?,
            provider_hello: get_opt(&mut r, "state.transcript")?,
            streams: [
                get_opt(&mut r, "state.transcript")?,
                get_opt(&mut r, "state.transcript")?,
                get_opt(&mut r, "state.transcript")?,
            ],
        };
        let counts = SignatureCounts {
            made: r.u64("state.signatures_made")?,
            verified: r.u64("state.signatures_verified")?,
        };
        r.expect_end()?;
        Ok(Session {
            params,
            role,
            local,
            peer,
            requester_size,
            provider_size,
            ephemeral,
            salt,
            scalar,
            shuffle_seed,
            transcript,
            counts,
            alignment: None,
        })
    }
}
