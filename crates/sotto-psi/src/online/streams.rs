//! Go-back-N over the engine's streams: [`Inbound`] checks arriving batches
//! and answers failures with a NACK; [`Outbound`] keeps what was sent so a
//! stream can be resent from a refused batch.

use sotto_wire::psi::frame::Body;
use sotto_wire::psi::{Nack, StreamEnd};

use super::link::Link;
use super::{Limits, OnlineError};
use crate::codec::{Reader, Writer};
use crate::engine::{PeerKeys, Session, StreamReceiver, MAX_BATCH_SIZE};
use crate::error::{EngineError, Rejection};
use crate::steps;
use crate::wire::{Batch, StreamKind};

/// Code of the end frame that closes a whole session.
pub(crate) const SESSION_COMPLETE: u32 = 0;

/// Encodes a batch for a frame.
pub(crate) fn batch_body(batch: &Batch) -> Body {
    let mut w = Writer::with_capacity(64 + batch.elements.len() * 80);
    batch.encode(&mut w);
    Body::Batch(w.finish())
}

/// Receives one stream, refusing bad batches with NACKs.
pub(crate) struct Inbound {
    receiver: StreamReceiver,
    batches: Vec<Batch>,
    awaiting_resend: bool,
    failures_of_batch: u32,
    /// Batches refused so far.
    pub(crate) refused: u64,
    /// Copies of batches already accepted (retransmissions crossing a NACK,
    /// or duplicates injected on the way), ignored unread.
    pub(crate) duplicates: u64,
}

/// What became of an offered batch.
pub(crate) enum Offer {
    /// Checked and kept.
    Accepted,
    /// A batch still in flight after a NACK; dropped unread.
    Ignored,
    /// Refused; the NACK to send.
    Refused(Nack),
}

impl Inbound {
    pub(crate) fn new(receiver: StreamReceiver) -> Self {
        Self {
            receiver,
            batches: Vec::new(),
            awaiting_resend: false,
            failures_of_batch: 0,
            refused: 0,
            duplicates: 0,
        }
    }

    pub(crate) fn kind(&self) -> StreamKind {
        self.receiver.kind()
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.receiver.is_complete()
    }

    /// Elements accepted so far.
    pub(crate) fn received(&self) -> u64 {
        self.receiver.received()
    }

    /// Whether a NACK is outstanding (the next wait uses the verify timeout).
    pub(crate) fn awaiting_resend(&self) -> bool {
        self.awaiting_resend
    }

    /// Checks a batch that arrived for this stream.
    pub(crate) fn offer(
        &mut self,
        batch: Batch,
        peer: &PeerKeys,
        link: &Link,
        limits: &Limits,
    ) -> Result<Offer, OnlineError> {
        let next = self.receiver.next_batch();
        if batch.header.stream == self.kind() && batch.header.batch_index < next {
            self.duplicates += 1;
            tracing::warn!(
                peer = %link.peer,
                "batch {} of {} arrived again after it was accepted; the copy is ignored",
                batch.header.batch_index,
                self.kind()
            );
            return Ok(Offer::Ignored);
        }
        if self.awaiting_resend
            && (batch.header.stream != self.kind() || batch.header.batch_index != next)
        {
            return Ok(Offer::Ignored);
        }
        match self.receiver.check(&batch, peer) {
            Ok(()) => {
                self.awaiting_resend = false;
                self.failures_of_batch = 0;
                self.batches.push(batch);
                Ok(Offer::Accepted)
            }
            Err(err) => self.refuse(next, err, link, limits),
        }
    }

    /// Refuses the next batch for a reason found before checking (for
    /// example, it could not be decoded).
    pub(crate) fn refuse(
        &mut self,
        batch: u32,
        err: EngineError,
        link: &Link,
        limits: &Limits,
    ) -> Result<Offer, OnlineError> {
        self.refused += 1;
        self.failures_of_batch += 1;
        tracing::warn!(peer = %link.peer, "{err}");
        if self.failures_of_batch > limits.max_retries {
            return Err(OnlineError::TooManyRetries {
                peer: link.peer.clone(),
                attempts: self.failures_of_batch,
                last: err,
            });
        }
        self.awaiting_resend = true;
        let positions = match &err {
            EngineError::BatchRejected {
                reason: Rejection::TamperedElements { positions },
                ..
            } => positions.clone(),
            _ => Vec::new(),
        };
        Ok(Offer::Refused(Nack {
            stream: u32::from(self.kind().code()),
            batch,
            positions,
            reason: err.to_string(),
        }))
    }

    /// Ends the stream into the session's transcript and returns its batches.
    pub(crate) fn finish(self, session: &mut Session) -> Result<Vec<Batch>, EngineError> {
        steps::close_stream(session, self.receiver)?;
        Ok(self.batches)
    }

    /// The next batch index this stream expects.
    pub(crate) fn next_batch(&self) -> u32 {
        self.receiver.next_batch()
    }
}

/// Whether a batch frame belongs to a stream this side has already received
/// completely: a retransmission that crossed a NACK, ignored unread.
pub(crate) fn is_late_copy(bytes: &[u8], completed: &[StreamKind]) -> bool {
    decode_batch(bytes, MAX_BATCH_SIZE).is_ok_and(|b| completed.contains(&b.header.stream))
}

/// Decodes a batch frame; an undecodable batch is refused like a bad one.
pub(crate) fn decode_batch(
    bytes: &[u8],
    max_batch: u32,
) -> Result<Batch, crate::error::DecodeError> {
    let mut r = Reader::new(bytes);
    let batch = Batch::decode(&mut r, max_batch)?;
    r.expect_end()?;
    Ok(batch)
}

/// The streams this side sent, kept until the session ends.
#[derive(Default)]
pub(crate) struct Outbound {
    streams: Vec<(StreamKind, Vec<Batch>)>,
    /// NACKs received.
    pub(crate) nacks: u64,
}

impl Outbound {
    /// Sends a whole stream and remembers it.
    pub(crate) fn send_stream(
        &mut self,
        link: &Link,
        kind: StreamKind,
        batches: Vec<Batch>,
    ) -> Result<(), OnlineError> {
        send_batches(link, kind, &batches)?;
        self.streams.push((kind, batches));
        Ok(())
    }

    /// Answers a NACK: resends its stream from the refused batch, then every
    /// stream sent after it.
    pub(crate) fn resend(
        &mut self,
        link: &Link,
        nack: &Nack,
        limits: &Limits,
    ) -> Result<(), OnlineError> {
        self.nacks += 1;
        tracing::warn!(peer = %link.peer, stream = nack.stream, batch = nack.batch, "peer refused a batch: {}", nack.reason);
        let sent: usize = self.streams.iter().map(|(_, b)| b.len()).sum();
        if self.nacks > u64::from(limits.max_retries) * (sent as u64 + 1) {
            return Err(OnlineError::PeerAborted {
                peer: link.peer.clone(),
                reason: format!(
                    "it refused batches {} times; last: {}",
                    self.nacks, nack.reason
                ),
            });
        }
        let Some(start) = self
            .streams
            .iter()
            .position(|(k, _)| u32::from(k.code()) == nack.stream)
        else {
            return Err(OnlineError::Unexpected {
                peer: link.peer.clone(),
                found: "NACK for a stream this side did not send",
                waiting_for: "the session to continue".into(),
            });
        };
        for (i, (kind, batches)) in self.streams.iter().enumerate().skip(start) {
            let from = if i == start { nack.batch as usize } else { 0 };
            send_batches(link, *kind, batches.get(from..).unwrap_or_default())?;
        }
        Ok(())
    }
}

fn send_batches(link: &Link, kind: StreamKind, batches: &[Batch]) -> Result<(), OnlineError> {
    for batch in batches {
        link.send(batch_body(batch))?;
    }
    link.send(Body::End(StreamEnd {
        stream: u32::from(kind.code()),
    }))
}

/// Receives every batch of one stream, answering failures with NACKs.
pub(crate) fn receive_stream(
    inbound: &mut Inbound,
    peer: &PeerKeys,
    link: &Link,
    limits: &Limits,
    batch_size: u32,
) -> Result<(), OnlineError> {
    while !inbound.is_complete() {
        let wait = if inbound.awaiting_resend() {
            limits.verify_timeout
        } else {
            limits.idle_timeout
        };
        let waiting_for = format!("batch {} of {}", inbound.next_batch(), inbound.kind());
        match link.recv(wait, &waiting_for)? {
            Body::Batch(bytes) => offer_bytes(inbound, &bytes, peer, link, limits, batch_size)?,
            Body::End(_) => {}
            other => return Err(link.unexpected(&other, &waiting_for)),
        }
    }
    Ok(())
}

/// Decodes and offers one batch; sends the NACK if it is refused.
pub(crate) fn offer_bytes(
    inbound: &mut Inbound,
    bytes: &[u8],
    peer: &PeerKeys,
    link: &Link,
    limits: &Limits,
    batch_size: u32,
) -> Result<(), OnlineError> {
    let offer = match decode_batch(bytes, batch_size.min(MAX_BATCH_SIZE)) {
        Ok(batch) => inbound.offer(batch, peer, link, limits)?,
        Err(e) => {
            let next = inbound.next_batch();
            let kind = inbound.kind();
            let err = EngineError::BatchRejected {
                round: kind.round(),
                stream: kind,
                batch: next,
                reason: Rejection::Undecodable {
                    reason: e.to_string(),
                },
            };
            inbound.refuse(next, err, link, limits)?
        }
    };
    if let Offer::Refused(nack) = offer {
        link.send(Body::Nack(nack))?;
    }
    Ok(())
}
