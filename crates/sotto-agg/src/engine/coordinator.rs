//! The coordinator's engine: offers the attempt, deals zero-sum masks once
//! every client accepted, sends the query, forwards the lead's sealed shares,
//! adds `e_1` and every `f_j`, and signs the result for every client. It
//! never releases a partial sum: the result exists only once every share is
//! in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::hash::{sha256, FieldHasher};
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::ring;
use sotto_crypto::secret::SecretBytes;
use sotto_node::NodeName;

use super::{check_frame, check_recipient, expand_dealing, unexpected, vector_payload, Attempt};
use crate::error::ProtocolError;
use crate::job::JobSpec;
use crate::message::{encode_participants, Draft, Envelope, Statement, Step, EVERY_CLIENT};
use crate::table::Query;

/// An envelope and the client it goes to.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The recipient.
    pub to: NodeName,
    /// What to send.
    pub envelope: Envelope,
}

/// The outcome of a completed attempt.
#[derive(Clone, Debug)]
pub struct JobResult {
    /// Totals, row-major (`width` per query id; last column: institutions).
    pub totals: Arc<Vec<u64>>,
    /// Hash over every statement of the attempt.
    pub transcript: [u8; 32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Accepting,
    Collecting,
    Done,
}

/// The coordinator's state for one attempt.
pub struct Coordinator {
    spec: Arc<JobSpec>,
    attempt: Attempt,
    me: NodeName,
    key: IdentityKey,
    clients: HashMap<NodeName, IdentityPublic>,
    query: Arc<Query>,
    query_payload: Arc<Vec<u8>>,
    phase: Phase,
    accepts: BTreeMap<NodeName, Statement>,
    lead_share_in: bool,
    forwarded: BTreeSet<String>,
    masked_in: BTreeSet<NodeName>,
    sum: Vec<u64>,
    transcript: BTreeMap<(Step, String, String), [u8; 32]>,
    result: Option<JobResult>,
}

impl Coordinator {
    /// Prepares an attempt. `clients` maps every participant to its pinned
    /// identity key.
    pub fn new(
        spec: Arc<JobSpec>,
        attempt: Attempt,
        me: NodeName,
        key: IdentityKey,
        clients: HashMap<NodeName, IdentityPublic>,
        query: Arc<Query>,
    ) -> Self {
        let query_payload = Arc::new(query.encode());
        Self {
            spec,
            attempt,
            me,
            key,
            clients,
            query,
            query_payload,
            phase: Phase::Accepting,
            accepts: BTreeMap::new(),
            lead_share_in: false,
            forwarded: BTreeSet::new(),
            masked_in: BTreeSet::new(),
            sum: Vec::new(),
            transcript: BTreeMap::new(),
            result: None,
        }
    }

    /// The attempt this engine runs.
    pub fn attempt(&self) -> &Attempt {
        &self.attempt
    }

    fn rows(&self) -> u64 {
        self.query.ids.len() as u64
    }

    fn cols(&self) -> u32 {
        self.spec.width() as u32
    }

    /// Signs a statement of this attempt and enters it in the transcript.
    fn sign(&mut self, step: Step, recipient: &str, digest: [u8; 32], extra: Vec<u8>) -> Statement {
        let statement = Draft {
            job: self.attempt.job,
            attempt: self.attempt.number,
            step,
            recipient,
            rows: self.rows(),
            cols: self.cols(),
            digest,
            extra,
        }
        .sign(&self.me, &self.key);
        self.record(&statement);
        statement
    }

    fn record(&mut self, s: &Statement) {
        self.transcript.insert(
            (s.step, s.sender.clone(), s.recipient.clone()),
            s.transcript_hash(),
        );
    }

    /// The signed offers, one per participant.
    pub fn offers(&mut self) -> Vec<Outbound> {
        let extra = encode_participants(&self.attempt.lead, &self.attempt.clients);
        let digest = self.spec.digest();
        self.attempt
            .clients
            .clone()
            .into_iter()
            .map(|to| {
                let statement = self.sign(Step::Offer, to.as_str(), digest, extra.clone());
                Outbound {
                    to,
                    envelope: Envelope::bare(statement),
                }
            })
            .collect()
    }

    /// Who the attempt is waiting for, and for what (while the lead's shares
    /// are missing, only the lead: the others depend on it).
    pub fn waiting_on(&self) -> Vec<(NodeName, &'static str)> {
        match self.phase {
            Phase::Accepting => self
                .attempt
                .clients
                .iter()
                .filter(|c| !self.accepts.contains_key(*c))
                .map(|c| (c.clone(), "accept"))
                .collect(),
            Phase::Collecting => {
                let lead_done =
                    self.lead_share_in && self.forwarded.len() + 1 == self.attempt.clients.len();
                if !lead_done {
                    // The followers cannot answer before the lead's shares.
                    return vec![(self.attempt.lead.clone(), "lead shares")];
                }
                self.attempt
                    .followers()
                    .filter(|c| !self.masked_in.contains(*c))
                    .map(|c| (c.clone(), "masked vector"))
                    .collect()
            }
            Phase::Done => Vec::new(),
        }
    }

    /// The result, once every share is in.
    pub fn result(&self) -> Option<&JobResult> {
        self.result.as_ref()
    }

    /// Handles an envelope from participant `from` (its mutual-TLS name).
    pub fn handle<R: RngCore + CryptoRng>(
        &mut self,
        from: &NodeName,
        envelope: Envelope,
        rng: &mut R,
    ) -> Result<Vec<Outbound>, ProtocolError> {
        let peer = from.as_str();
        let s = &envelope.statement;
        let key = self
            .clients
            .get(from)
            .ok_or_else(|| ProtocolError::WrongSender {
                peer: peer.to_owned(),
                what: s.step.name(),
                reason: "it is not a participant of this attempt".into(),
            })?;
        if s.sender != peer {
            return Err(ProtocolError::WrongSender {
                peer: peer.to_owned(),
                what: s.step.name(),
                reason: format!("the statement is signed as from {}", s.sender),
            });
        }
        check_frame(s, &self.attempt, peer)?;
        s.verify(key, peer)?;
        let out = match (s.step, self.phase) {
            (Step::Accept, Phase::Accepting) => self.on_accept(from, envelope, rng)?,
            (Step::LeadShare, Phase::Collecting) => self.on_lead_share(from, &envelope)?,
            (Step::SealedShare, Phase::Collecting) => self.on_sealed(from, envelope)?,
            (Step::Masked, Phase::Collecting) => self.on_masked(from, &envelope)?,
            // Once collecting, every accept is in; once done, every share.
            (Step::Accept, _)
            | (Step::LeadShare | Step::SealedShare | Step::Masked, Phase::Done) => {
                return Err(ProtocolError::Repeated {
                    peer: peer.to_owned(),
                    what: s.step.name(),
                })
            }
            (step, Phase::Accepting) => {
                return Err(unexpected(step, peer, "before every client accepted"))
            }
            (step, _) => return Err(unexpected(step, peer, "from a client at this point")),
        };
        self.maybe_finish(out)
    }

    fn on_accept<R: RngCore + CryptoRng>(
        &mut self,
        from: &NodeName,
        envelope: Envelope,
        rng: &mut R,
    ) -> Result<Vec<Outbound>, ProtocolError> {
        let s = envelope.statement;
        let peer = from.as_str();
        check_recipient(&s, self.me.as_str(), peer)?;
        if self.accepts.contains_key(from) {
            return Err(ProtocolError::Repeated {
                peer: peer.to_owned(),
                what: "accept",
            });
        }
        if s.digest != self.spec.digest() || s.extra.len() != 32 {
            return Err(ProtocolError::Malformed {
                peer: peer.to_owned(),
                what: "accept",
                field: "digest/extra",
                reason: "an accept carries the job digest and a 32-byte ephemeral key".into(),
            });
        }
        self.record(&s);
        self.accepts.insert(from.clone(), s);
        if self.accepts.len() < self.attempt.clients.len() {
            return Ok(Vec::new());
        }
        self.phase = Phase::Collecting;
        self.sum = vec![0u64; self.query.ids.len() * self.spec.width()];
        let mut out = self.dealings(rng);
        out.extend(self.queries());
        let lead = self.attempt.lead.clone();
        for (name, accept) in &self.accepts {
            if *name != lead {
                out.push(Outbound {
                    to: lead.clone(),
                    envelope: Envelope::bare(accept.clone()),
                });
            }
        }
        Ok(out)
    }

    /// Zero-sum dealing: every follower gets a 32-byte seed; the lead gets
    /// the explicit vector `r_lead = -(sum of the followers' masks)`.
    fn dealings<R: RngCore + CryptoRng>(&mut self, rng: &mut R) -> Vec<Outbound> {
        let len = self.sum.len();
        let mut lead_mask = vec![0u64; len];
        let mut out = Vec::new();
        for to in self.attempt.followers().cloned().collect::<Vec<_>>() {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            let seed = SecretBytes::new(seed);
            ring::sub_assign(
                &mut lead_mask,
                &expand_dealing(&seed, &self.attempt, &to, len),
            );
            let payload = seed.expose().to_vec();
            let statement = self.sign(Step::Dealing, to.as_str(), sha256(&payload), Vec::new());
            out.push(Outbound {
                to,
                envelope: Envelope {
                    statement,
                    payload: Arc::new(payload),
                },
            });
        }
        let payload = ring::to_le_bytes(&lead_mask);
        let lead = self.attempt.lead.clone();
        let statement = self.sign(Step::Dealing, lead.as_str(), sha256(&payload), Vec::new());
        out.push(Outbound {
            to: lead,
            envelope: Envelope {
                statement,
                payload: Arc::new(payload),
            },
        });
        out
    }

    fn queries(&mut self) -> Vec<Outbound> {
        let statement = self.sign(Step::Query, EVERY_CLIENT, self.query.digest(), Vec::new());
        self.attempt
            .clients
            .iter()
            .map(|to| Outbound {
                to: to.clone(),
                envelope: Envelope {
                    statement: statement.clone(),
                    payload: Arc::clone(&self.query_payload),
                },
            })
            .collect()
    }

    fn check_from_lead(&self, from: &NodeName, step: Step) -> Result<(), ProtocolError> {
        if *from != self.attempt.lead {
            return Err(ProtocolError::WrongSender {
                peer: from.to_string(),
                what: step.name(),
                reason: format!("only the lead client {} sends it", self.attempt.lead),
            });
        }
        Ok(())
    }

    fn on_lead_share(
        &mut self,
        from: &NodeName,
        envelope: &Envelope,
    ) -> Result<Vec<Outbound>, ProtocolError> {
        self.check_from_lead(from, Step::LeadShare)?;
        let s = &envelope.statement;
        check_recipient(s, self.me.as_str(), from.as_str())?;
        if self.lead_share_in {
            return Err(ProtocolError::Repeated {
                peer: from.to_string(),
                what: "lead share",
            });
        }
        let vector = vector_payload(envelope, self.rows(), self.cols(), from.as_str())?;
        ring::add_assign(&mut self.sum, &vector);
        self.lead_share_in = true;
        self.record(s);
        Ok(Vec::new())
    }

    fn on_sealed(
        &mut self,
        from: &NodeName,
        envelope: Envelope,
    ) -> Result<Vec<Outbound>, ProtocolError> {
        self.check_from_lead(from, Step::SealedShare)?;
        let s = &envelope.statement;
        let to = self
            .attempt
            .followers()
            .find(|c| c.as_str() == s.recipient)
            .cloned()
            .ok_or_else(|| ProtocolError::WrongSender {
                peer: from.to_string(),
                what: "sealed share",
                reason: format!(
                    "its recipient {} is not a follower of this attempt",
                    s.recipient
                ),
            })?;
        if s.rows != self.rows() || s.cols != self.cols() {
            return Err(ProtocolError::WrongShape {
                peer: from.to_string(),
                what: "sealed share",
                expected: format!("{} rows x {} columns", self.rows(), self.cols()),
                found: format!("{} rows x {} columns", s.rows, s.cols),
            });
        }
        envelope.check_digest(from.as_str())?;
        if !self.forwarded.insert(s.recipient.clone()) {
            return Err(ProtocolError::Repeated {
                peer: from.to_string(),
                what: "sealed share",
            });
        }
        self.record(s);
        Ok(vec![Outbound { to, envelope }])
    }

    fn on_masked(
        &mut self,
        from: &NodeName,
        envelope: &Envelope,
    ) -> Result<Vec<Outbound>, ProtocolError> {
        let s = &envelope.statement;
        if *from == self.attempt.lead {
            return Err(unexpected(
                Step::Masked,
                from.as_str(),
                "from the lead client",
            ));
        }
        check_recipient(s, self.me.as_str(), from.as_str())?;
        if self.masked_in.contains(from) {
            return Err(ProtocolError::Repeated {
                peer: from.to_string(),
                what: "masked vector",
            });
        }
        let vector = vector_payload(envelope, self.rows(), self.cols(), from.as_str())?;
        ring::add_assign(&mut self.sum, &vector);
        self.masked_in.insert(from.clone());
        self.record(s);
        Ok(Vec::new())
    }

    fn maybe_finish(&mut self, mut out: Vec<Outbound>) -> Result<Vec<Outbound>, ProtocolError> {
        let complete = self.phase == Phase::Collecting
            && self.lead_share_in
            && self.masked_in.len() + 1 == self.attempt.clients.len();
        if !complete {
            return Ok(out);
        }
        let transcript = self.transcript_hash();
        let totals = Arc::new(ring::to_le_bytes(&self.sum));
        let statement = self.sign(
            Step::Result,
            EVERY_CLIENT,
            sha256(&totals),
            transcript.to_vec(),
        );
        for to in &self.attempt.clients {
            out.push(Outbound {
                to: to.clone(),
                envelope: Envelope {
                    statement: statement.clone(),
                    payload: Arc::clone(&totals),
                },
            });
        }
        self.result = Some(JobResult {
            totals: Arc::new(std::mem::take(&mut self.sum)),
            transcript,
        });
        self.phase = Phase::Done;
        Ok(out)
    }

    fn transcript_hash(&self) -> [u8; 32] {
        let mut h = FieldHasher::new("sotto/agg/transcript/v1");
        for entry in self.transcript.values() {
            h.field(entry);
        }
        h.finish()
    }
}
