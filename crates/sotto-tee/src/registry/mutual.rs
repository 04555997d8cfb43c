//! Mutual authentication between two members, on top of mutual TLS: each
//! proves possession of the identity key that the center's signed
//! membership lists for its name, by signing both names and both parties'
//! fresh nonces under a domain and a role. A revoked member is no longer in
//! the membership, so it can no longer authenticate.
//!
//! Flow: `Initiator::start` → [`Hello`] → `Responder::on_hello` → [`Reply`]
//! → `Initiator::on_reply` → [`Confirm`] → `Responder::on_confirm`.

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::identity::{IdentityKey, IdentityPublic};

use super::Membership;

const DOMAIN: &str = "sotto/tee/mutual-auth/v1";

/// The initiator's first message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The initiator's name.
    pub from: String,
    /// Its fresh nonce.
    pub nonce: [u8; 32],
}

/// The responder's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The responder's name.
    pub from: String,
    /// Its fresh nonce.
    pub nonce: [u8; 32],
    /// Its signature over the transcript, role "responder".
    pub signature: [u8; 64],
}

/// The initiator's proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// Its signature over the transcript, role "initiator".
    pub signature: [u8; 64],
}

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The peer is not an active member.
    #[error("{peer} is not an active member in the center's membership")]
    NotMember {
        /// The claimed name.
        peer: String,
    },
    /// The peer's signature does not verify under its listed key.
    #[error("{peer} did not prove possession of its listed identity key")]
    BadProof {
        /// The claimed name.
        peer: String,
    },
}

fn transcript(role: &str, a: &str, b: &str, na: &[u8; 32], nb: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::new();
    for field in [role.as_bytes(), a.as_bytes(), b.as_bytes(), na, nb] {
        out.extend_from_slice(&(field.len() as u32).to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

fn listed_key(membership: &Membership, name: &str) -> Result<IdentityPublic, AuthError> {
    membership
        .members
        .iter()
        .find(|(n, _, _)| n == name)
        .and_then(|(_, id, _)| hex::decode(id).ok())
        .and_then(|b| IdentityPublic::from_bytes(&b).ok())
        .ok_or_else(|| AuthError::NotMember {
            peer: name.to_owned(),
        })
}

/// The initiating member's state.
pub struct Initiator {
    me: String,
    nonce: [u8; 32],
}

impl Initiator {
    /// Starts authentication as `me`.
    pub fn start<R: RngCore + CryptoRng>(me: &str, rng: &mut R) -> (Self, Hello) {
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        (
            Self {
                me: me.to_owned(),
                nonce,
            },
            Hello {
                from: me.to_owned(),
                nonce,
            },
        )
    }

    /// Checks the responder's proof; returns this side's proof and the
    /// authenticated peer's name.
    pub fn on_reply(
        self,
        reply: &Reply,
        membership: &Membership,
        key: &IdentityKey,
    ) -> Result<(Confirm, String), AuthError> {
        let peer_key = listed_key(membership, &reply.from)?;
        let signed = transcript(
            "responder",
            &self.me,
            &reply.from,
            &self.nonce,
            &reply.nonce,
        );
        peer_key
            .verify(DOMAIN, &signed, &reply.signature, "mutual authentication")
            .map_err(|_| AuthError::BadProof {
                peer: reply.from.clone(),
            })?;
        let mine = transcript(
            "initiator",
            &self.me,
            &reply.from,
            &self.nonce,
            &reply.nonce,
        );
        Ok((
            Confirm {
                signature: key.sign(DOMAIN, &mine),
            },
            reply.from.clone(),
        ))
    }
}

/// The responding member's state.
pub struct Responder {
    me: String,
    peer: String,
    peer_nonce: [u8; 32],
    nonce: [u8; 32],
}

impl Responder {
    /// Answers a hello from a listed member.
    pub fn on_hello<R: RngCore + CryptoRng>(
        hello: &Hello,
        me: &str,
        key: &IdentityKey,
        membership: &Membership,
        rng: &mut R,
    ) -> Result<(Self, Reply), AuthError> {
        listed_key(membership, &hello.from)?;
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let signed = transcript("responder", &hello.from, me, &hello.nonce, &nonce);
        Ok((
            Self {
                me: me.to_owned(),
                peer: hello.from.clone(),
                peer_nonce: hello.nonce,
                nonce,
            },
            Reply {
                from: me.to_owned(),
                nonce,
                signature: key.sign(DOMAIN, &signed),
            },
        ))
    }

    /// Checks the initiator's proof; returns the authenticated peer's name.
    pub fn on_confirm(
        self,
        confirm: &Confirm,
        membership: &Membership,
    ) -> Result<String, AuthError> {
        let peer_key = listed_key(membership, &self.peer)?;
        let signed = transcript(
            "initiator",
            &self.peer,
            &self.me,
            &self.peer_nonce,
            &self.nonce,
        );
        peer_key
            .verify(DOMAIN, &signed, &confirm.signature, "mutual authentication")
            .map_err(|_| AuthError::BadProof {
                peer: self.peer.clone(),
            })?;
        Ok(self.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn membership(members: &[(&str, &IdentityKey)]) -> Membership {
        Membership {
            version: 1,
            measurement: None,
            members: members
                .iter()
                .map(|(n, k)| (n.to_string(), k.public().to_string(), String::new()))
                .collect(),
            group_key_version: 1,
        }
    }

    #[test]
    fn members_authenticate_each_other() {
        let (a, b) = (
            IdentityKey::generate(&mut OsRng),
            IdentityKey::generate(&mut OsRng),
        );
        let m = membership(&[("a", &a), ("b", &b)]);
        let (init, hello) = Initiator::start("a", &mut OsRng);
        let (resp, reply) = Responder::on_hello(&hello, "b", &b, &m, &mut OsRng).expect("hello");
        let (confirm, peer) = init.on_reply(&reply, &m, &a).expect("reply");
        assert_eq!(peer, "b");
        assert_eq!(resp.on_confirm(&confirm, &m).expect("confirm"), "a");
    }

    #[test]
    fn impersonation_replay_and_revocation_fail() {
        let (a, b, mallory) = (
            IdentityKey::generate(&mut OsRng),
            IdentityKey::generate(&mut OsRng),
            IdentityKey::generate(&mut OsRng),
        );
        let m = membership(&[("a", &a), ("b", &b)]);
        // Mallory answers as b with her own key.
        let (init, hello) = Initiator::start("a", &mut OsRng);
        let (_, forged) =
            Responder::on_hello(&hello, "b", &mallory, &m, &mut OsRng).expect("hello");
        assert!(matches!(
            init.on_reply(&forged, &m, &a),
            Err(AuthError::BadProof { .. })
        ));
        // A reply recorded for another hello does not verify for a new one.
        let (_, old_hello) = Initiator::start("a", &mut OsRng);
        let (_, old_reply) =
            Responder::on_hello(&old_hello, "b", &b, &m, &mut OsRng).expect("hello");
        let (init, _) = Initiator::start("a", &mut OsRng);
        assert!(matches!(
            init.on_reply(&old_reply, &m, &a),
            Err(AuthError::BadProof { .. })
        ));
        // Mallory initiates as a: b answers, but her confirmation fails.
        let (init, hello) = Initiator::start("a", &mut OsRng);
        let (resp, reply) = Responder::on_hello(&hello, "b", &b, &m, &mut OsRng).expect("hello");
        let (confirm, _) = init
            .on_reply(&reply, &m, &mallory)
            .expect("b's proof is fine");
        assert!(matches!(
            resp.on_confirm(&confirm, &m),
            Err(AuthError::BadProof { .. })
        ));
        // After b is revoked (no longer listed), it cannot take part.
        let revoked = membership(&[("a", &a)]);
        let (_, hello) = Initiator::start("b", &mut OsRng);
        assert!(matches!(
            Responder::on_hello(&hello, "a", &a, &revoked, &mut OsRng),
            Err(AuthError::NotMember { .. })
        ));
    }
}
