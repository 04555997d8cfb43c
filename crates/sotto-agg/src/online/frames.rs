//! Statements and payloads on the wire: an envelope travels as payload
//! chunks followed by its statement; the receiver reassembles it, bounding
//! the payload it is willing to buffer.

use std::sync::Arc;

use sotto_crypto::ids::JobId;
use sotto_wire::agg::frame::Body;
use sotto_wire::agg::{Abort, Frame, Statement as WireStatement};

use crate::message::{Envelope, Statement, Step};

/// Payload bytes per chunk frame.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The frames that carry `envelope`.
pub fn envelope_frames(envelope: &Envelope) -> impl Iterator<Item = Frame> + '_ {
    let chunks = envelope.payload.chunks(CHUNK_BYTES).map(|c| Frame {
        body: Some(Body::Chunk(c.to_vec())),
    });
    chunks.chain(std::iter::once(Frame {
        body: Some(Body::Statement(to_wire(&envelope.statement))),
    }))
}

/// An abort frame.
pub fn abort_frame(reason: &str, rerun: bool) -> Frame {
    Frame {
        body: Some(Body::Abort(Abort {
            reason: reason.to_owned(),
            rerun,
        })),
    }
}

fn to_wire(s: &Statement) -> WireStatement {
    WireStatement {
        version: s.version,
        job_id: s.job.as_bytes().to_vec(),
        attempt: s.attempt,
        step: s.step as u32,
        sender: s.sender.clone(),
        recipient: s.recipient.clone(),
        rows: s.rows,
        cols: s.cols,
        digest: s.digest.to_vec(),
        extra: s.extra.clone(),
        signature: s.signature.clone(),
    }
}

/// Decodes a wire statement; the error names the bad field.
pub fn from_wire(w: WireStatement) -> Result<Statement, String> {
    let job: [u8; 16] = w
        .job_id
        .as_slice()
        .try_into()
        .map_err(|_| format!("job_id: {} bytes, expected 16", w.job_id.len()))?;
    let digest: [u8; 32] = w
        .digest
        .as_slice()
        .try_into()
        .map_err(|_| format!("digest: {} bytes, expected 32", w.digest.len()))?;
    let step = Step::from_number(w.step).ok_or_else(|| format!("step: unknown step {}", w.step))?;
    if w.version != crate::message::VERSION {
        return Err(format!(
            "version: {} (this node speaks version {})",
            w.version,
            crate::message::VERSION
        ));
    }
    Ok(Statement {
        version: w.version,
        job: JobId::from_bytes(job),
        attempt: w.attempt,
        step,
        sender: w.sender,
        recipient: w.recipient,
        rows: w.rows,
        cols: w.cols,
        digest,
        extra: w.extra,
        signature: w.signature,
    })
}

/// What one frame completed.
pub enum Assembled {
    /// A chunk was buffered; nothing complete yet.
    Pending,
    /// A whole envelope.
    Envelope(Envelope),
    /// The peer aborted.
    Abort(Abort),
}

/// Reassembles envelopes from frames.
pub struct Assembler {
    buffer: Vec<u8>,
    max_payload: usize,
}

impl Assembler {
    /// An assembler that refuses payloads over `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max_payload,
        }
    }

    /// Takes one frame; a malformed frame is an error naming what is wrong.
    pub fn push(&mut self, frame: Frame) -> Result<Assembled, String> {
        match frame.body {
            Some(Body::Chunk(bytes)) => {
                if self.buffer.len() + bytes.len() > self.max_payload {
                    return Err(format!(
                        "a payload over the {} byte limit",
                        self.max_payload
                    ));
                }
                self.buffer.extend_from_slice(&bytes);
                Ok(Assembled::Pending)
            }
            Some(Body::Statement(w)) => {
                let statement = from_wire(w).map_err(|e| format!("malformed statement: {e}"))?;
                Ok(Assembled::Envelope(Envelope {
                    statement,
                    payload: Arc::new(std::mem::take(&mut self.buffer)),
                }))
            }
            Some(Body::Abort(abort)) => Ok(Assembled::Abort(abort)),
            None => Err("an empty frame".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Draft;
    use sotto_crypto::identity::IdentityKey;

    fn envelope(payload_len: usize) -> Envelope {
        let key = IdentityKey::generate(&mut rand_core::OsRng);
        let statement = Draft {
            job: JobId::from_bytes([1; 16]),
            attempt: 1,
            step: Step::Masked,
            recipient: "c",
            rows: 1,
            cols: 1,
            digest: [0; 32],
            extra: vec![1, 2],
        }
        .sign(&"a".parse().expect("name"), &key);
        Envelope {
            statement,
            payload: Arc::new((0..payload_len).map(|i| i as u8).collect()),
        }
    }

    #[test]
    fn envelopes_survive_chunking() {
        let sent = envelope(CHUNK_BYTES * 2 + 5);
        let frames: Vec<Frame> = envelope_frames(&sent).collect();
        assert_eq!(frames.len(), 4);
        let mut a = Assembler::new(usize::MAX);
        let mut got = None;
        for f in frames {
            if let Ok(Assembled::Envelope(e)) = a.push(f) {
                got = Some(e);
            }
        }
        let got = got.expect("envelope");
        assert_eq!(got.statement, sent.statement);
        assert_eq!(got.payload, sent.payload);
    }

    #[test]
    fn oversized_and_malformed_frames_are_refused() {
        let mut a = Assembler::new(10);
        assert!(a
            .push(Frame {
                body: Some(Body::Chunk(vec![0; 11]))
            })
            .is_err());
        assert!(a.push(Frame { body: None }).is_err());
        let mut w = to_wire(&envelope(0).statement);
        w.job_id.pop();
        let err = a
            .push(Frame {
                body: Some(Body::Statement(w)),
            })
            .err()
            .expect("refused");
        assert!(err.contains("job_id"), "{err}");
        let mut w = to_wire(&envelope(0).statement);
        w.step = 99;
        assert!(from_wire(w).is_err());
    }
}
