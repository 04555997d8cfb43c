//! Go-back-N over the engine's streams: [`Inbound`] checks arriving batches,
//! hands each accepted one to the caller (which keeps only what it needs),
//! and answers failures with a NACK; [`Outbound`] spills what was sent to an
//! anonymous temporary file, so a stream can be resent from a refused batch
//! without holding it in memory.

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
pub(crate) fn encode_batch(batch: &Batch) -> Vec<u8> {
    let mut w = Writer::with_capacity(64 + batch.elements.len() * 80);
    batch.encode(&mut w);
    w.finish()
}

/// Receives one stream, refusing bad batches with NACKs.
pub(crate) struct Inbound {
    receiver: StreamReceiver,
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
    /// Checked; the caller takes it from here.
    Accepted(Box<Batch>),
    /// A batch still in flight after a NACK; dropped unread.
    Ignored,
    /// Refused; the NACK to send.
    Refused(Nack),
}

impl Inbound {
    pub(crate) fn new(receiver: StreamReceiver) -> Self {
        Self {
            receiver,
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
                Ok(Offer::Accepted(Box::new(batch)))
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

    /// Ends the stream into the session's transcript.
    pub(crate) fn finish(self, session: &mut Session) -> Result<(), EngineError> {
        steps::close_stream(session, self.receiver)
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

/// One stream this side sent: its encoded batches in a spill file.
struct SentStream {
    kind: StreamKind,
    spill: std::fs::File,
    /// Where each batch starts in the spill file, then where the last ends.
    offsets: Vec<u64>,
    sent: bool,
}

impl SentStream {
    fn batch(&mut self, index: usize) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let (start, end) = (self.offsets[index], self.offsets[index + 1]);
        let mut bytes = vec![0u8; (end - start) as usize];
        self.spill.seek(SeekFrom::Start(start))?;
        self.spill.read_exact(&mut bytes)?;
        self.spill.seek(SeekFrom::End(0))?;
        Ok(bytes)
    }

    fn batches(&self) -> usize {
        self.offsets.len() - 1
    }
}

/// The streams this side sent (spilled to disk), until the session ends.
#[derive(Default)]
pub(crate) struct Outbound {
    streams: Vec<SentStream>,
    /// NACKs received.
    pub(crate) nacks: u64,
}

fn spill_error(link: &Link, e: &std::io::Error) -> OnlineError {
    OnlineError::Transport {
        peer: link.peer.clone(),
        reason: format!("cannot keep sent batches for retransmission in a temporary file: {e}"),
    }
}

impl Outbound {
    /// Starts stream `kind`; its batches follow with [`Outbound::send`] or
    /// [`Outbound::keep`].
    pub(crate) fn begin(&mut self, link: &Link, kind: StreamKind) -> Result<(), OnlineError> {
        let spill = tempfile::tempfile().map_err(|e| spill_error(link, &e))?;
        self.streams.push(SentStream {
            kind,
            spill,
            offsets: vec![0],
            sent: false,
        });
        Ok(())
    }

    /// Keeps a batch of the current stream without sending it yet.
    pub(crate) fn keep(&mut self, link: &Link, batch: &Batch) -> Result<Vec<u8>, OnlineError> {
        use std::io::Write;
        let bytes = encode_batch(batch);
        let stream = self
            .streams
            .last_mut()
            .ok_or_else(|| OnlineError::Unexpected {
                peer: link.peer.clone(),
                found: "a batch before its stream began",
                waiting_for: "the stream to begin".into(),
            })?;
        stream
            .spill
            .write_all(&bytes)
            .map_err(|e| spill_error(link, &e))?;
        let end = stream.offsets.last().copied().unwrap_or(0) + bytes.len() as u64;
        stream.offsets.push(end);
        Ok(bytes)
    }

    /// Keeps and sends a batch of the current stream.
    pub(crate) fn send(&mut self, link: &Link, batch: &Batch) -> Result<(), OnlineError> {
        let bytes = self.keep(link, batch)?;
        if let Some(stream) = self.streams.last_mut() {
            stream.sent = true;
        }
        link.send(Body::Batch(bytes))
    }

    /// Ends the current stream: sends whatever was only kept, then its end.
    pub(crate) fn end(&mut self, link: &Link) -> Result<(), OnlineError> {
        let index = self.streams.len().saturating_sub(1);
        self.send_from(link, index, 0, true)
    }

    /// Sends stream `index` from batch `from` (when `only_unsent`, only if
    /// its batches were kept but not sent), then its end frame.
    fn send_from(
        &mut self,
        link: &Link,
        index: usize,
        from: usize,
        only_unsent: bool,
    ) -> Result<(), OnlineError> {
        let Some(stream) = self.streams.get_mut(index) else {
            return Ok(());
        };
        if !(only_unsent && stream.sent) {
            for i in from..stream.batches() {
                let bytes = stream.batch(i).map_err(|e| spill_error(link, &e))?;
                link.send(Body::Batch(bytes))?;
            }
            stream.sent = true;
        }
        link.send(Body::End(StreamEnd {
            stream: u32::from(stream.kind.code()),
        }))
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
        let sent: usize = self.streams.iter().map(SentStream::batches).sum();
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
            .position(|s| s.sent && u32::from(s.kind.code()) == nack.stream)
        else {
            return Err(OnlineError::Unexpected {
                peer: link.peer.clone(),
                found: "NACK for a stream this side did not send",
                waiting_for: "the session to continue".into(),
            });
        };
        for i in start..self.streams.len() {
            if !self.streams[i].sent {
                break;
            }
            let from = if i == start { nack.batch as usize } else { 0 };
            self.send_from(link, i, from, false)?;
        }
        Ok(())
    }
}

/// Receives every batch of one stream, answering failures with NACKs;
/// `accepted` takes each checked batch.
pub(crate) fn receive_stream(
    inbound: &mut Inbound,
    peer: &PeerKeys,
    link: &Link,
    limits: &Limits,
    batch_size: u32,
    mut accepted: impl FnMut(Batch) -> Result<(), OnlineError>,
) -> Result<(), OnlineError> {
    while !inbound.is_complete() {
        let wait = if inbound.awaiting_resend() {
            limits.verify_timeout
        } else {
            limits.idle_timeout
        };
        let waiting_for = format!("batch {} of {}", inbound.next_batch(), inbound.kind());
        match link.recv(wait, &waiting_for)? {
            Body::Batch(bytes) => {
                if let Some(batch) = offer_bytes(inbound, &bytes, peer, link, limits, batch_size)? {
                    accepted(batch)?;
                }
            }
            Body::End(_) => {}
            other => return Err(link.unexpected(&other, &waiting_for)),
        }
    }
    Ok(())
}

/// Decodes and offers one batch; sends the NACK if it is refused. Returns
/// the batch if it was accepted.
pub(crate) fn offer_bytes(
    inbound: &mut Inbound,
    bytes: &[u8],
    peer: &PeerKeys,
    link: &Link,
    limits: &Limits,
    batch_size: u32,
) -> Result<Option<Batch>, OnlineError> {
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
    match offer {
        Offer::Accepted(batch) => Ok(Some(*batch)),
        Offer::Ignored => Ok(None),
        Offer::Refused(nack) => {
            link.send(Body::Nack(nack))?;
            Ok(None)
        }
    }
}
