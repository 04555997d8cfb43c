//! Building signed batches and checking received ones.

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use sotto_crypto::bls::{find_invalid, hash_message, SignedItem};
use sotto_crypto::group::Element;
use sotto_crypto::hash::FieldHasher;

use super::{PeerKeys, Session, Signer};
use crate::error::{EngineError, Rejection};
use crate::wire::{Batch, BatchHeader, SigningMode, StreamKind, HEADER_DOMAIN, PROTOCOL_VERSION};

fn elements_digest(elements: &[Element]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for e in elements {
        hasher.update(e);
    }
    hasher.finalize().into()
}

fn header_chain() -> FieldHasher {
    FieldHasher::new("sotto/psi/header-chain/v1")
}

impl Session {
    /// Encrypts a batch of this party's own identifiers (`k · H(salt || id)`)
    /// and signs it as batch `batch_index` of `kind`, starting at stream
    /// position `first_position`.
    pub fn encrypt_batch<I: AsRef<[u8]> + Sync>(
        &mut self,
        kind: StreamKind,
        batch_index: u32,
        first_position: u64,
        ids: &[I],
        signer: &Signer<'_>,
    ) -> Result<Batch, EngineError> {
        self.expect_role(kind.sender(), &format!("send stream {kind}"))?;
        let elements = self.scalar.hash_and_multiply(self.salt()?, ids);
        Ok(self.seal(kind, batch_index, first_position, elements, signer))
    }

    /// Multiplies a verified batch of peer elements by this party's scalar
    /// and signs the result as batch `batch_index` of `kind` (w from u, z
    /// from v).
    pub fn reencrypt_batch(
        &mut self,
        kind: StreamKind,
        batch_index: u32,
        first_position: u64,
        incoming: &Batch,
        signer: &Signer<'_>,
    ) -> Result<Batch, EngineError> {
        self.expect_role(kind.sender(), &format!("send stream {kind}"))?;
        let elements = self.multiply(incoming)?;
        Ok(self.seal(kind, batch_index, first_position, elements, signer))
    }

    /// Multiplies a verified batch of peer elements by this party's scalar.
    pub fn multiply(&self, incoming: &Batch) -> Result<Vec<Element>, EngineError> {
        self.salt()?;
        self.scalar
            .multiply_encoded(&incoming.elements)
            .map_err(|bad| EngineError::BatchRejected {
                round: incoming.header.stream.round(),
                stream: incoming.header.stream,
                batch: incoming.header.batch_index,
                reason: Rejection::InvalidElement {
                    position: incoming.header.first_position + bad.index as u64,
                    fault: bad.fault,
                },
            })
    }

    /// Signs `elements` as a batch according to the session's signing mode.
    pub fn seal(
        &mut self,
        kind: StreamKind,
        batch_index: u32,
        first_position: u64,
        elements: Vec<Element>,
        signer: &Signer<'_>,
    ) -> Batch {
        let header = BatchHeader {
            version: PROTOCOL_VERSION,
            sid: self.params.sid,
            stream: kind,
            sender: self.local,
            batch_index,
            first_position,
            count: elements.len() as u32,
            digest: elements_digest(&elements),
        };
        let mode = self.params.mode;
        let header_signature = (mode != SigningMode::None)
            .then(|| signer.identity.sign(HEADER_DOMAIN, &header.to_bytes()));
        let digest_signature = (mode == SigningMode::Digest).then(|| {
            signer.bls[batch_index as usize % signer.bls.len()].sign(&header.digest_message())
        });
        let signatures: Vec<[u8; 48]> = if mode == SigningMode::Element {
            elements
                .par_iter()
                .enumerate()
                .map(|(i, element)| {
                    let position = first_position + i as u64;
                    let key = &signer.bls[(position % signer.bls.len() as u64) as usize];
                    key.sign(&header.element_message(position, element))
                })
                .collect()
        } else {
            Vec::new()
        };
        self.counts.made += u64::from(header_signature.is_some())
            + u64::from(digest_signature.is_some())
            + signatures.len() as u64;
        Batch {
            header,
            header_signature,
            digest_signature,
            elements,
            signatures,
        }
    }

    /// Starts checking an incoming stream of `total` elements from the peer.
    pub fn receiver(&self, kind: StreamKind, total: u64) -> StreamReceiver {
        StreamReceiver {
            kind,
            total,
            sid: self.params.sid,
            mode: self.params.mode,
            batch_size: self.params.batch_size,
            next_batch: 0,
            received: 0,
            chain: header_chain(),
            verified: 0,
        }
    }

    /// Starts the header chain of an outgoing stream; feed it every sent
    /// header with [`OutgoingChain::push`].
    pub fn sender_chain(&self) -> OutgoingChain {
        OutgoingChain(header_chain())
    }

    /// Adds the signature checks done by a finished receiver to the counters.
    pub fn add_verified(&mut self, count: u64) {
        self.counts.verified += count;
    }
}

/// The running hash of the headers of a stream being sent.
pub struct OutgoingChain(FieldHasher);

impl OutgoingChain {
    /// Adds one sent header.
    pub fn push(&mut self, header: &BatchHeader) {
        self.0.field(&header.to_bytes());
    }

    /// The chain digest for the transcript.
    pub fn finish(self) -> [u8; 32] {
        self.0.finish()
    }
}

/// Checks the batches of one incoming stream, in order, before anything is
/// computed from them.
pub struct StreamReceiver {
    kind: StreamKind,
    total: u64,
    sid: sotto_crypto::ids::SessionId,
    mode: SigningMode,
    batch_size: u32,
    next_batch: u32,
    received: u64,
    chain: FieldHasher,
    verified: u64,
}

impl StreamReceiver {
    /// Elements accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Signatures verified so far.
    pub fn verified(&self) -> u64 {
        self.verified
    }

    /// The stream being received.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// Index of the next batch expected.
    pub fn next_batch(&self) -> u32 {
        self.next_batch
    }

    /// Whether every announced element has arrived.
    pub fn is_complete(&self) -> bool {
        self.received == self.total
    }

    /// Checks the next batch: session, stream, sender, order, size, header
    /// signature, and the elements against their signatures or the digest.
    pub fn check(&mut self, batch: &Batch, peer: &PeerKeys) -> Result<(), EngineError> {
        let h = &batch.header;
        let reject = |reason| EngineError::BatchRejected {
            round: self.kind.round(),
            stream: self.kind,
            batch: h.batch_index,
            reason,
        };
        self.check_header(batch, peer).map_err(reject)?;
        let verified = self.check_elements(batch, peer).map_err(reject)?;
        self.verified += verified;
        self.next_batch += 1;
        self.received += u64::from(h.count);
        self.chain.field(&h.to_bytes());
        Ok(())
    }

    fn check_header(&self, batch: &Batch, peer: &PeerKeys) -> Result<(), Rejection> {
        let h = &batch.header;
        if h.sid != self.sid {
            return Err(Rejection::ForeignSession {
                expected: self.sid,
                found: h.sid,
            });
        }
        if h.stream != self.kind {
            return Err(Rejection::WrongStream {
                expected: self.kind,
                found: h.stream,
            });
        }
        if h.sender != peer.identity {
            return Err(Rejection::WrongSender {
                found: h.sender.to_string(),
            });
        }
        if self.mode != SigningMode::None {
            let signature = batch
                .header_signature
                .ok_or(Rejection::BadHeaderSignature)?;
            peer.identity
                .verify(HEADER_DOMAIN, &h.to_bytes(), &signature, "batch header")
                .map_err(|_| Rejection::BadHeaderSignature)?;
        }
        if h.batch_index != self.next_batch {
            return Err(Rejection::OutOfOrder {
                expected: self.next_batch,
                found: h.batch_index,
            });
        }
        if h.first_position != self.received {
            return Err(Rejection::PositionMismatch {
                expected: self.received,
                found: h.first_position,
            });
        }
        if h.count == 0
            || h.count > self.batch_size
            || self.received + u64::from(h.count) > self.total
        {
            return Err(Rejection::BadSize {
                count: h.count,
                first: h.first_position,
                total: self.total,
                limit: self.batch_size,
            });
        }
        let expected_signatures = if self.mode == SigningMode::Element {
            h.count as usize
        } else {
            0
        };
        if batch.elements.len() != h.count as usize || batch.signatures.len() != expected_signatures
        {
            return Err(Rejection::CountMismatch {
                announced: h.count,
                elements: batch.elements.len(),
                signatures: batch.signatures.len(),
            });
        }
        Ok(())
    }

    /// Returns the number of signatures verified.
    fn check_elements(&self, batch: &Batch, peer: &PeerKeys) -> Result<u64, Rejection> {
        let h = &batch.header;
        let mut verified = u64::from(self.mode != SigningMode::None);
        match self.mode {
            SigningMode::Element => {
                let k = peer.bls.len() as u64;
                let items: Vec<SignedItem<'_>> = batch
                    .elements
                    .par_iter()
                    .zip(batch.signatures.par_iter())
                    .enumerate()
                    .map(|(i, (element, signature))| {
                        let position = h.first_position + i as u64;
                        SignedItem {
                            key: (position % k) as usize,
                            hash: hash_message(&h.element_message(position, element)),
                            signature,
                        }
                    })
                    .collect();
                let bad = find_invalid(&peer.bls, &items);
                if !bad.is_empty() {
                    return Err(Rejection::TamperedElements {
                        positions: bad
                            .into_iter()
                            .map(|i| h.first_position + i as u64)
                            .collect(),
                    });
                }
                verified += items.len() as u64;
            }
            SigningMode::Digest => {
                let key = &peer.bls[h.batch_index as usize % peer.bls.len()];
                let signature = batch
                    .digest_signature
                    .ok_or(Rejection::BadDigestSignature)?;
                if !key.verify(&h.digest_message(), &signature) {
                    return Err(Rejection::BadDigestSignature);
                }
                verified += 1;
            }
            SigningMode::None => {}
        }
        if elements_digest(&batch.elements) != h.digest {
            return Err(Rejection::DigestMismatch);
        }
        Ok(verified)
    }

    /// Ends the stream: every announced element must have arrived. Returns the
    /// header chain digest for the transcript.
    pub fn finish(self) -> Result<[u8; 32], EngineError> {
        if self.received != self.total {
            return Err(EngineError::StreamIncomplete {
                round: self.kind.round(),
                stream: self.kind,
                expected: self.total,
                received: self.received,
            });
        }
        Ok(self.chain.finish())
    }
}
