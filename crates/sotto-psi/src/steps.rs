//! Whole-stream steps built on the engine, shared by the in-process driver
//! and the offline driver: send a party's own set, check an incoming stream
//! completely before anything is computed from it, re-encrypt, and match.

use sotto_crypto::group::Element;

use crate::engine::{
    shuffle_order, Matcher, OutgoingChain, PeerKeys, Session, Signer, StreamReceiver, TRUNCATED_LEN,
};
use crate::error::EngineError;
use crate::keystore::KeyStore;
use crate::wire::{Batch, Reveal, Role, StreamKind};

/// Called with the number of elements just processed.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Reports progress of long phases: called with a phase name and its total,
/// returns the per-increment callback.
pub trait ProgressSink: Sync {
    /// Starts a phase of `total` elements.
    fn phase(&self, name: &'static str, total: u64) -> Box<dyn Fn(u64) + Sync + '_>;
}

/// A sink that shows nothing.
pub struct Silent;

impl ProgressSink for Silent {
    fn phase(&self, _name: &'static str, _total: u64) -> Box<dyn Fn(u64) + Sync + '_> {
        Box::new(|_| {})
    }
}

/// Encrypts and signs this party's distinct keys in its secret shuffled
/// order, as stream `kind`.
pub fn send_own(
    session: &mut Session,
    kind: StreamKind,
    keys: &KeyStore,
    signer: &Signer<'_>,
    progress: Progress<'_>,
) -> Result<Vec<Batch>, EngineError> {
    let mut batches = Vec::new();
    send_own_each(session, kind, keys, signer, progress, |batch| {
        batches.push(batch);
        Ok::<(), EngineError>(())
    })?;
    Ok(batches)
}

/// [`send_own`], handing each batch to `emit` as soon as it is signed, so a
/// driver can send it and keep nothing.
pub fn send_own_each<E: From<EngineError>>(
    session: &mut Session,
    kind: StreamKind,
    keys: &KeyStore,
    signer: &Signer<'_>,
    progress: Progress<'_>,
    mut emit: impl FnMut(Batch) -> Result<(), E>,
) -> Result<(), E> {
    let order = shuffle_order(session.shuffle_seed(), keys.len());
    let batch_size = session.params().batch_size as usize;
    let mut chain = session.sender_chain();
    for (index, chunk) in order.chunks(batch_size).enumerate() {
        let ids: Vec<&[u8]> = chunk.iter().map(|&k| keys.get(k as usize)).collect();
        let batch = session.encrypt_batch(
            kind,
            index as u32,
            (index * batch_size) as u64,
            &ids,
            signer,
        )?;
        chain.push(&batch.header);
        progress(chunk.len() as u64);
        emit(batch)?;
    }
    session.record_stream(kind, chain.finish());
    Ok(())
}

/// Checks every batch of an incoming stream of `total` elements; fails on the
/// first refused batch or if elements are missing at the end.
pub fn check_stream(
    session: &mut Session,
    kind: StreamKind,
    total: u64,
    batches: &[Batch],
    peer: &PeerKeys,
    progress: Progress<'_>,
) -> Result<(), EngineError> {
    let mut receiver = session.receiver(kind, total);
    for batch in batches {
        receiver.check(batch, peer)?;
        progress(batch.elements.len() as u64);
    }
    close_stream(session, receiver)
}

/// Ends a checked stream: every element must have arrived; its header chain
/// goes into the transcript and its verifications into the counters.
pub fn close_stream(session: &mut Session, receiver: StreamReceiver) -> Result<(), EngineError> {
    let kind = receiver.kind();
    let verified = receiver.verified();
    let chain = receiver.finish()?;
    session.add_verified(verified);
    session.record_stream(kind, chain);
    Ok(())
}

/// Re-encrypts a checked stream with this party's scalar and signs it as
/// stream `kind`. For stream w under reveal `size`, the elements are sorted
/// first so the requester cannot tell which of its ids matched.
pub fn reencrypt_stream(
    session: &mut Session,
    kind: StreamKind,
    incoming: &[Batch],
    signer: &Signer<'_>,
    progress: Progress<'_>,
) -> Result<Vec<Batch>, EngineError> {
    let mut out = Vec::with_capacity(incoming.len());
    reencrypt_each(session, kind, incoming, signer, progress, |batch| {
        out.push(batch);
        Ok::<(), EngineError>(())
    })?;
    Ok(out)
}

/// [`reencrypt_stream`], handing each signed batch to `emit` at once.
pub fn reencrypt_each<E: From<EngineError>>(
    session: &mut Session,
    kind: StreamKind,
    incoming: &[Batch],
    signer: &Signer<'_>,
    progress: Progress<'_>,
    mut emit: impl FnMut(Batch) -> Result<(), E>,
) -> Result<(), E> {
    let batch_size = session.params().batch_size as usize;
    let mut chain = session.sender_chain();
    if kind == StreamKind::Reencrypted && session.params().reveal == Reveal::Size {
        let mut all: Vec<Element> = Vec::new();
        for batch in incoming {
            all.extend(session.multiply(batch)?);
            progress(batch.elements.len() as u64);
        }
        all.sort_unstable();
        for (index, chunk) in all.chunks(batch_size).enumerate() {
            let batch = session.seal(
                kind,
                index as u32,
                (index * batch_size) as u64,
                chunk.to_vec(),
                signer,
            );
            chain.push(&batch.header);
            emit(batch)?;
        }
    } else {
        for batch in incoming {
            let sealed = session.reencrypt_batch(
                kind,
                batch.header.batch_index,
                batch.header.first_position,
                batch,
                signer,
            )?;
            chain.push(&sealed.header);
            progress(batch.elements.len() as u64);
            emit(sealed)?;
        }
    }
    session.record_stream(kind, chain.finish());
    Ok(())
}

/// What the requester learns.
pub struct RequesterResult {
    /// Indices (into the requester's distinct keys) in the intersection,
    /// ascending; empty under reveal `size`.
    pub matched: Vec<u32>,
    /// Size of the intersection.
    pub size: u64,
    /// Stream z for the provider (reveal `both` only).
    pub reveal_back: Vec<Batch>,
}

/// Requester: from checked streams w and v, computes z = a·v and the
/// intersection; under reveal `both` also signs z for the provider.
pub fn requester_finish(
    session: &mut Session,
    w: &[Batch],
    v: &[Batch],
    signer: &Signer<'_>,
    progress: Progress<'_>,
) -> Result<RequesterResult, EngineError> {
    let mut matching = RequesterMatching::new(session);
    for batch in w {
        matching.on_w(batch);
    }
    let mut reveal_back = Vec::new();
    for batch in v {
        if let Some(z) = matching.on_v(session, batch, signer)? {
            reveal_back.push(z);
        }
        progress(batch.elements.len() as u64);
    }
    let mut result = matching.finish(session);
    result.reveal_back = reveal_back;
    Ok(result)
}

/// Re-encrypts a stream one batch at a time, for drivers that keep nothing
/// of it.
pub struct Reencryptor {
    kind: StreamKind,
    chain: OutgoingChain,
}

impl Reencryptor {
    /// Starts re-encrypting into stream `kind`.
    pub fn new(session: &Session, kind: StreamKind) -> Self {
        Self {
            kind,
            chain: session.sender_chain(),
        }
    }

    /// Re-encrypts and signs the next checked batch.
    pub fn next(
        &mut self,
        session: &mut Session,
        batch: &Batch,
        signer: &Signer<'_>,
    ) -> Result<Batch, EngineError> {
        let sealed = session.reencrypt_batch(
            self.kind,
            batch.header.batch_index,
            batch.header.first_position,
            batch,
            signer,
        )?;
        self.chain.push(&sealed.header);
        Ok(sealed)
    }

    /// Records the finished stream in the transcript.
    pub fn finish(self, session: &mut Session) {
        session.record_stream(self.kind, self.chain.finish());
    }
}

/// The requester's matching, fed one checked batch at a time: it keeps only
/// the truncated elements of w and of z = a·v.
pub struct RequesterMatching {
    matcher: Matcher,
    reveal_back: Option<Reencryptor>,
}

impl RequesterMatching {
    /// Starts matching for `session` (under reveal `both`, z is also signed
    /// for the provider).
    pub fn new(session: &Session) -> Self {
        let reveal_back = (session.params().reveal == Reveal::Both)
            .then(|| Reencryptor::new(session, StreamKind::RevealBack));
        Self {
            matcher: Matcher::new(),
            reveal_back,
        }
    }

    /// Takes the next checked batch of w.
    pub fn on_w(&mut self, batch: &Batch) {
        self.matcher.add_probe(&batch.elements);
    }

    /// Takes the next checked batch of v; under reveal `both` returns the
    /// signed batch of z for the provider.
    pub fn on_v(
        &mut self,
        session: &mut Session,
        batch: &Batch,
        signer: &Signer<'_>,
    ) -> Result<Option<Batch>, EngineError> {
        match &mut self.reveal_back {
            Some(reencryptor) => {
                let z = reencryptor.next(session, batch, signer)?;
                self.matcher.add_reference(&z.elements);
                Ok(Some(z))
            }
            None => {
                self.matcher.add_reference(&session.multiply(batch)?);
                Ok(None)
            }
        }
    }

    /// The intersection (the z batches, if any, were returned by `on_v`).
    pub fn finish(self, session: &mut Session) -> RequesterResult {
        if let Some(reencryptor) = self.reveal_back {
            reencryptor.finish(session);
        }
        let positions = self.matcher.matched_positions();
        let size = positions.len() as u64;
        let matched = if session.params().reveal == Reveal::Size {
            Vec::new()
        } else {
            positions_to_keys(session, &positions)
        };
        RequesterResult {
            matched,
            size,
            reveal_back: Vec::new(),
        }
    }
}

/// Provider (reveal `both`): the truncated w elements to keep until z comes.
pub fn truncated_elements(batches: &[Batch]) -> Vec<[u8; TRUNCATED_LEN]> {
    let mut matcher = Matcher::new();
    for batch in batches {
        matcher.add_probe(&batch.elements);
    }
    matcher.probe().to_vec()
}

/// Provider (reveal `both`): from its kept w and the checked stream z, the
/// indices of its distinct keys in the intersection, ascending.
pub fn provider_finish(
    session: &Session,
    w: &[[u8; TRUNCATED_LEN]],
    z: &[Batch],
) -> Result<Vec<u32>, EngineError> {
    if session.role() != Role::Provider || session.params().reveal != Reveal::Both {
        return Err(EngineError::Phase(
            "only the provider of a reveal-both session finishes with stream z".into(),
        ));
    }
    let mut matcher = Matcher::new();
    for batch in z {
        matcher.add_probe(&batch.elements);
    }
    matcher.add_reference_truncated(w);
    Ok(positions_to_keys(session, &matcher.matched_positions()))
}

fn positions_to_keys(session: &Session, positions: &[u64]) -> Vec<u32> {
    let order = shuffle_order(session.shuffle_seed(), session.local_size() as usize);
    let mut keys: Vec<u32> = positions
        .iter()
        .filter_map(|&p| order.get(p as usize).copied())
        .collect();
    keys.sort_unstable();
    keys
}
