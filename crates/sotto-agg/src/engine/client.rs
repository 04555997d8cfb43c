//! A client's engine. It accepts only the offer of the job in its own job
//! file, expands or receives its mask, builds its vector for the query, and
//! then either (as lead) splits `v_1 + r_1` into `e_1..e_n` and seals each
//! `e_j` to client j, or (as follower) opens `e_j` and returns
//! `f_j = e_j + v_j + r_j`. Finally it checks the coordinator's signed
//! result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::aead;
use sotto_crypto::hash::sha256;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::kdf::EphemeralKey;
use sotto_crypto::ring;
use sotto_crypto::secret::SecretBytes;
use sotto_node::NodeName;

use super::{
    check_frame, check_recipient, expand_dealing, share_context, unexpected, vector_payload,
    Attempt,
};
use crate::error::ProtocolError;
use crate::job::JobSpec;
use crate::message::{decode_participants, Draft, Envelope, Statement, Step, EVERY_CLIENT};
use crate::table::{ClientTable, Query};

/// What a client learns from a completed attempt.
#[derive(Clone, Debug)]
pub struct ClientResult {
    /// The attempt.
    pub attempt: Attempt,
    /// The query ids.
    pub query: Arc<Query>,
    /// Totals, row-major (`width` per id; last column: institutions).
    pub totals: Vec<u64>,
    /// The coordinator's transcript hash.
    pub transcript: [u8; 32],
    /// How many query ids this client has.
    pub own_matches: usize,
}

struct Joined {
    attempt: Attempt,
    eph: EphemeralKey,
    rows: u64,
    mask: Option<Vec<u64>>,
    query: Option<Arc<Query>>,
    own: Option<Vec<u64>>,
    own_matches: usize,
    peer_keys: BTreeMap<NodeName, [u8; 32]>,
    share: Option<Vec<u64>>,
    sent: bool,
}

enum State {
    AwaitingOffer,
    Joined(Box<Joined>),
    Done(Box<ClientResult>),
}

/// A client's state for one attempt.
pub struct Client<R> {
    spec: Arc<JobSpec>,
    me: NodeName,
    key: IdentityKey,
    coordinator: IdentityPublic,
    peers: HashMap<NodeName, IdentityPublic>,
    table: Arc<ClientTable>,
    rng: R,
    state: State,
}

impl<R: RngCore + CryptoRng> Client<R> {
    /// A client waiting for the coordinator's offer. `peers` holds the pinned
    /// identity keys of the other clients (the lead needs every follower's;
    /// a follower needs the lead's).
    pub fn new(
        spec: Arc<JobSpec>,
        me: NodeName,
        key: IdentityKey,
        coordinator: IdentityPublic,
        peers: HashMap<NodeName, IdentityPublic>,
        table: Arc<ClientTable>,
        rng: R,
    ) -> Self {
        Self {
            spec,
            me,
            key,
            coordinator,
            peers,
            table,
            rng,
            state: State::AwaitingOffer,
        }
    }

    /// Forgets the current attempt (the coordinator announced a re-run).
    pub fn reset(&mut self) {
        self.state = State::AwaitingOffer;
    }

    /// The result, once the coordinator's signed result arrived.
    pub fn result(&self) -> Option<&ClientResult> {
        match &self.state {
            State::Done(result) => Some(result),
            _ => None,
        }
    }

    /// The attempt joined, if any.
    pub fn attempt(&self) -> Option<&Attempt> {
        match &self.state {
            State::Joined(j) => Some(&j.attempt),
            State::Done(r) => Some(&r.attempt),
            State::AwaitingOffer => None,
        }
    }

    /// Handles an envelope from the coordinator (which may carry a statement
    /// signed by another client); returns what to send to the coordinator.
    pub fn handle(&mut self, envelope: Envelope) -> Result<Vec<Envelope>, ProtocolError> {
        let step = envelope.statement.step;
        let coordinator = self.spec.coordinator.to_string();
        match (step, &self.state) {
            (Step::Offer, State::AwaitingOffer) => self.on_offer(&envelope).map(|e| vec![e]),
            (Step::Offer, _) => Err(ProtocolError::Repeated {
                peer: coordinator,
                what: "offer",
            }),
            (_, State::AwaitingOffer) => Err(unexpected(step, &coordinator, "before the offer")),
            (_, State::Done(_)) => Err(unexpected(step, &coordinator, "after the result")),
            (Step::Dealing, _) => self.on_dealing(&envelope),
            (Step::Query, _) => self.on_query(&envelope),
            (Step::Accept, _) => self.on_peer_key(&envelope),
            (Step::SealedShare, _) => self.on_sealed(&envelope),
            (Step::Result, _) => self.on_result(&envelope).map(|()| Vec::new()),
            (step, _) => Err(unexpected(step, &coordinator, "by a client")),
        }
    }

    fn joined(&mut self) -> Result<&mut Joined, ProtocolError> {
        match &mut self.state {
            State::Joined(j) => Ok(j),
            _ => Err(unexpected(
                Step::Dealing,
                self.spec.coordinator.as_str(),
                "now",
            )),
        }
    }

    /// Checks a statement signed by the coordinator for this attempt.
    fn check_from_coordinator(
        &self,
        s: &Statement,
        attempt: &Attempt,
    ) -> Result<(), ProtocolError> {
        let peer = self.spec.coordinator.as_str();
        if s.sender != peer {
            return Err(ProtocolError::WrongSender {
                peer: peer.to_owned(),
                what: s.step.name(),
                reason: format!("it is signed as from {}, not the coordinator", s.sender),
            });
        }
        check_frame(s, attempt, peer)?;
        s.verify(&self.coordinator, peer)
    }

    fn on_offer(&mut self, envelope: &Envelope) -> Result<Envelope, ProtocolError> {
        let s = &envelope.statement;
        let peer = self.spec.coordinator.to_string();
        let mismatch = |reason: String| ProtocolError::OfferMismatch {
            peer: peer.clone(),
            reason,
        };
        if s.sender != peer {
            return Err(mismatch(format!("it is signed as from {}", s.sender)));
        }
        s.verify(&self.coordinator, &peer)?;
        check_recipient(s, self.me.as_str(), &peer)?;
        if s.digest != self.spec.digest() {
            return Err(mismatch(
                "its job digest differs from this client's job file; compare the job files".into(),
            ));
        }
        let (lead, clients) = decode_participants(&s.extra)
            .ok_or_else(|| mismatch("its participant list cannot be decoded".into()))?;
        if let Some(c) = clients.iter().find(|c| !self.spec.clients.contains(c)) {
            return Err(mismatch(format!("{c} is not a client in the job file")));
        }
        if !clients.contains(&self.me) || !clients.contains(&lead) || clients.len() < 2 {
            return Err(mismatch(format!(
                "the participants ({}) must include this client and the lead {lead}, at least 2 in all",
                clients.iter().map(NodeName::as_str).collect::<Vec<_>>().join(", ")
            )));
        }
        if clients.len() < self.spec.min_clients {
            return Err(ProtocolError::TooFewClients {
                peer: peer.clone(),
                attempt: s.attempt,
                clients: clients.len(),
                min: self.spec.min_clients,
            });
        }
        if s.cols as usize != self.spec.width() || s.rows == 0 {
            return Err(mismatch(format!(
                "it announces {} rows x {} columns; this job has {} columns and needs at least one id",
                s.rows,
                s.cols,
                self.spec.width()
            )));
        }
        let attempt = Attempt {
            job: s.job,
            number: s.attempt,
            clients,
            lead,
        };
        let eph = EphemeralKey::generate(&mut self.rng);
        let accept = Draft {
            job: attempt.job,
            attempt: attempt.number,
            step: Step::Accept,
            recipient: &peer,
            rows: s.rows,
            cols: s.cols,
            digest: self.spec.digest(),
            extra: eph.public().to_vec(),
        }
        .sign(&self.me, &self.key);
        self.state = State::Joined(Box::new(Joined {
            attempt,
            eph,
            rows: s.rows,
            mask: None,
            query: None,
            own: None,
            own_matches: 0,
            peer_keys: BTreeMap::new(),
            share: None,
            sent: false,
        }));
        Ok(Envelope::bare(accept))
    }

    fn cols(&self) -> u32 {
        self.spec.width() as u32
    }

    fn on_dealing(&mut self, envelope: &Envelope) -> Result<Vec<Envelope>, ProtocolError> {
        let s = &envelope.statement;
        let peer = self.spec.coordinator.to_string();
        let cols = self.cols();
        let me = self.me.clone();
        let (attempt, rows) = {
            let j = self.joined()?;
            (j.attempt.clone(), j.rows)
        };
        self.check_from_coordinator(s, &attempt)?;
        check_recipient(s, me.as_str(), &peer)?;
        if self.joined()?.mask.is_some() {
            return Err(ProtocolError::Repeated {
                peer,
                what: "dealing",
            });
        }
        let mask = if me == attempt.lead {
            vector_payload(envelope, rows, cols, &peer)?
        } else {
            envelope.check_digest(&peer)?;
            let seed =
                SecretBytes::<32>::from_slice("dealt seed", &envelope.payload).map_err(|e| {
                    ProtocolError::Malformed {
                        peer: peer.clone(),
                        what: "dealing",
                        field: "payload",
                        reason: e.to_string(),
                    }
                })?;
            let len = rows.saturating_mul(u64::from(cols)) as usize;
            expand_dealing(&seed, &attempt, &me, len)
        };
        self.joined()?.mask = Some(mask);
        self.progress()
    }

    fn on_query(&mut self, envelope: &Envelope) -> Result<Vec<Envelope>, ProtocolError> {
        let s = &envelope.statement;
        let peer = self.spec.coordinator.to_string();
        let (attempt, rows) = {
            let j = self.joined()?;
            (j.attempt.clone(), j.rows)
        };
        self.check_from_coordinator(s, &attempt)?;
        check_recipient(s, EVERY_CLIENT, &peer)?;
        if self.joined()?.query.is_some() {
            return Err(ProtocolError::Repeated {
                peer,
                what: "query",
            });
        }
        let query = Query::decode(&envelope.payload).ok_or_else(|| ProtocolError::Malformed {
            peer: peer.clone(),
            what: "query",
            field: "payload",
            reason: "not a list of length-prefixed UTF-8 ids".into(),
        })?;
        if query.digest() != s.digest {
            return Err(ProtocolError::DigestMismatch {
                peer,
                what: "query",
            });
        }
        if query.ids.len() as u64 != rows {
            return Err(ProtocolError::WrongShape {
                peer,
                what: "query",
                expected: format!("{rows} ids (as offered)"),
                found: format!("{} ids", query.ids.len()),
            });
        }
        let (own, matches) = self.table.vector_for(&query.ids);
        let j = self.joined()?;
        j.own = Some(own);
        j.own_matches = matches;
        j.query = Some(Arc::new(query));
        self.progress()
    }

    /// The lead receives each follower's signed accept (forwarded by the
    /// coordinator) to learn its ephemeral key.
    fn on_peer_key(&mut self, envelope: &Envelope) -> Result<Vec<Envelope>, ProtocolError> {
        let s = &envelope.statement;
        let attempt = self.joined()?.attempt.clone();
        let peer = s.sender.clone();
        if self.me != attempt.lead {
            return Err(unexpected(Step::Accept, &peer, "by a follower"));
        }
        let name = attempt
            .followers()
            .find(|c| c.as_str() == peer)
            .cloned()
            .ok_or_else(|| ProtocolError::WrongSender {
                peer: peer.clone(),
                what: "accept",
                reason: "it is not a follower of this attempt".into(),
            })?;
        let key = self
            .peers
            .get(&name)
            .ok_or_else(|| ProtocolError::WrongSender {
                peer: peer.clone(),
                what: "accept",
                reason: format!(
                    "{peer} is not a pinned peer of this client; pin it with `sotto peer add`"
                ),
            })?;
        check_frame(s, &attempt, &peer)?;
        s.verify(key, &peer)?;
        let eph: [u8; 32] =
            s.extra
                .as_slice()
                .try_into()
                .map_err(|_| ProtocolError::Malformed {
                    peer: peer.clone(),
                    what: "accept",
                    field: "extra",
                    reason: "not a 32-byte ephemeral key".into(),
                })?;
        let j = self.joined()?;
        if j.peer_keys.insert(name, eph).is_some() {
            return Err(ProtocolError::Repeated {
                peer,
                what: "accept",
            });
        }
        self.progress()
    }

    fn on_sealed(&mut self, envelope: &Envelope) -> Result<Vec<Envelope>, ProtocolError> {
        let s = &envelope.statement;
        let (attempt, rows) = {
            let j = self.joined()?;
            (j.attempt.clone(), j.rows)
        };
        let peer = attempt.lead.to_string();
        if self.me == attempt.lead || s.sender != peer {
            return Err(ProtocolError::WrongSender {
                peer: s.sender.clone(),
                what: "sealed share",
                reason: format!(
                    "only the lead {} sends sealed shares, to followers",
                    attempt.lead
                ),
            });
        }
        let key = self.peers.get(&attempt.lead).ok_or_else(|| ProtocolError::WrongSender {
            peer: peer.clone(),
            what: "sealed share",
            reason: format!("the lead {peer} is not a pinned peer of this client; pin it with `sotto peer add`"),
        })?;
        check_frame(s, &attempt, &peer)?;
        s.verify(key, &peer)?;
        check_recipient(s, self.me.as_str(), &peer)?;
        envelope.check_digest(&peer)?;
        let cols = self.cols();
        if s.rows != rows || s.cols != cols {
            return Err(ProtocolError::WrongShape {
                peer,
                what: "sealed share",
                expected: format!("{rows} rows x {cols} columns"),
                found: format!("{} rows x {} columns", s.rows, s.cols),
            });
        }
        let me = self.me.clone();
        let j = self.joined()?;
        if j.share.is_some() {
            return Err(ProtocolError::Repeated {
                peer,
                what: "sealed share",
            });
        }
        let sealed_error = |reason: String| ProtocolError::Sealed {
            peer: peer.clone(),
            reason,
        };
        let lead_eph: [u8; 32] = s
            .extra
            .as_slice()
            .try_into()
            .map_err(|_| sealed_error("no 32-byte ephemeral key".into()))?;
        let context = share_context(&attempt, &peer, me.as_str(), rows, cols);
        let key = j
            .eph
            .derive_key(&lead_eph, &context)
            .map_err(|e| sealed_error(e.to_string()))?;
        let plain = aead::open(&key, &context, &envelope.payload)
            .map_err(|_| sealed_error("it does not decrypt under the agreed key (altered, or sealed for another client or job)".into()))?;
        let expected = rows.saturating_mul(u64::from(cols)).saturating_mul(8);
        let share = ring::from_le_bytes(&plain)
            .filter(|_| plain.len() as u64 == expected)
            .ok_or_else(|| {
                sealed_error(format!(
                    "{} plaintext bytes, expected {expected}",
                    plain.len()
                ))
            })?;
        j.share = Some(share);
        self.progress()
    }

    fn on_result(&mut self, envelope: &Envelope) -> Result<(), ProtocolError> {
        let s = &envelope.statement;
        let peer = self.spec.coordinator.to_string();
        let cols = self.cols();
        let (attempt, rows, sent) = {
            let j = self.joined()?;
            (j.attempt.clone(), j.rows, j.sent)
        };
        if !sent {
            return Err(unexpected(
                Step::Result,
                &peer,
                "before this client sent its share",
            ));
        }
        self.check_from_coordinator(s, &attempt)?;
        check_recipient(s, EVERY_CLIENT, &peer)?;
        let totals = vector_payload(envelope, rows, cols, &peer)?;
        let transcript: [u8; 32] =
            s.extra
                .as_slice()
                .try_into()
                .map_err(|_| ProtocolError::Malformed {
                    peer: peer.clone(),
                    what: "result",
                    field: "extra",
                    reason: "not a 32-byte transcript hash".into(),
                })?;
        let j = self.joined()?;
        let query = j
            .query
            .clone()
            .ok_or_else(|| unexpected(Step::Result, &peer, "before the query"))?;
        let own_matches = j.own_matches;
        self.state = State::Done(Box::new(ClientResult {
            attempt,
            query,
            totals,
            transcript,
            own_matches,
        }));
        Ok(())
    }

    /// Sends this client's contribution once everything it needs is in.
    fn progress(&mut self) -> Result<Vec<Envelope>, ProtocolError> {
        let me = self.me.clone();
        let cols = self.cols();
        let coordinator = self.spec.coordinator.to_string();
        let State::Joined(j) = &mut self.state else {
            return Ok(Vec::new());
        };
        let is_lead = me == j.attempt.lead;
        let ready = if is_lead {
            j.peer_keys.len() + 1 == j.attempt.clients.len()
        } else {
            j.share.is_some()
        };
        if j.sent || !ready {
            return Ok(Vec::new());
        }
        let (Some(mask), Some(own)) = (j.mask.take(), j.own.take()) else {
            return Ok(Vec::new());
        };
        j.sent = true;
        let sender = Sender {
            me: &me,
            key: &self.key,
            coordinator: &coordinator,
            cols,
        };
        if is_lead {
            sender.lead_shares(j, mask, own, &mut self.rng)
        } else {
            let mut f = j.share.take().unwrap_or_default();
            ring::add_assign(&mut f, &own);
            ring::add_assign(&mut f, &mask);
            Ok(vec![sender.vector(j, Step::Masked, &coordinator, &f)])
        }
    }
}

/// Signs this client's outgoing statements.
struct Sender<'a> {
    me: &'a NodeName,
    key: &'a IdentityKey,
    coordinator: &'a str,
    cols: u32,
}

impl Sender<'_> {
    fn statement(
        &self,
        j: &Joined,
        step: Step,
        recipient: &str,
        digest: [u8; 32],
        extra: Vec<u8>,
    ) -> Statement {
        Draft {
            job: j.attempt.job,
            attempt: j.attempt.number,
            step,
            recipient,
            rows: j.rows,
            cols: self.cols,
            digest,
            extra,
        }
        .sign(self.me, self.key)
    }

    fn vector(&self, j: &Joined, step: Step, recipient: &str, values: &[u64]) -> Envelope {
        let payload = ring::to_le_bytes(values);
        Envelope {
            statement: self.statement(j, step, recipient, sha256(&payload), Vec::new()),
            payload: Arc::new(payload),
        }
    }

    /// The lead's split: keys `k_j` summing to `r_1`, shares `s_j` summing to
    /// `v_1`, `e_j = s_j + k_j`; `e_1` goes to the coordinator, every other
    /// `e_j` sealed to client j.
    fn lead_shares<R: RngCore + CryptoRng>(
        &self,
        j: &Joined,
        mask: Vec<u64>,
        own: Vec<u64>,
        rng: &mut R,
    ) -> Result<Vec<Envelope>, ProtocolError> {
        let len = mask.len();
        let mut lead_key = mask;
        let mut lead_share = own;
        let mut out = Vec::with_capacity(j.attempt.clients.len());
        for follower in j.attempt.followers() {
            let key_j = ring::random_vector(rng, len);
            let mut e_j = ring::random_vector(rng, len);
            ring::sub_assign(&mut lead_key, &key_j);
            ring::sub_assign(&mut lead_share, &e_j);
            ring::add_assign(&mut e_j, &key_j);
            out.push(self.sealed(j, follower, &e_j, rng)?);
        }
        ring::add_assign(&mut lead_share, &lead_key);
        out.push(self.vector(j, Step::LeadShare, self.coordinator, &lead_share));
        Ok(out)
    }

    fn sealed<R: RngCore + CryptoRng>(
        &self,
        j: &Joined,
        to: &NodeName,
        share: &[u64],
        rng: &mut R,
    ) -> Result<Envelope, ProtocolError> {
        let sealed_error = |reason: String| ProtocolError::Sealed {
            peer: to.to_string(),
            reason,
        };
        let peer_eph = j
            .peer_keys
            .get(to)
            .ok_or_else(|| sealed_error("no ephemeral key received".into()))?;
        let context = share_context(&j.attempt, self.me.as_str(), to.as_str(), j.rows, self.cols);
        let key = j
            .eph
            .derive_key(peer_eph, &context)
            .map_err(|e| sealed_error(e.to_string()))?;
        let payload = aead::seal(&key, &context, &ring::to_le_bytes(share), rng)
            .map_err(|e| sealed_error(e.to_string()))?;
        Ok(Envelope {
            statement: self.statement(
                j,
                Step::SealedShare,
                to.as_str(),
                sha256(&payload),
                j.eph.public().to_vec(),
            ),
            payload: Arc::new(payload),
        })
    }
}
