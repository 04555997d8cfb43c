//! The synchronous end of a session's frame stream, used by the blocking
//! protocol thread: receive with a timeout, send with backpressure.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use sotto_wire::psi::frame::Body;
use sotto_wire::psi::{Abort, Frame};
use tonic::Status;

use super::OnlineError;
use crate::codec::Reader;
use crate::error::DecodeError;

/// One side's view of the frame stream.
pub(crate) struct Link {
    pub(crate) inbound: Receiver<Result<Frame, Status>>,
    pub(crate) outbound: tokio::sync::mpsc::Sender<Result<Frame, Status>>,
    pub(crate) peer: String,
}

/// A short name for a frame body, for errors.
pub(crate) fn body_name(body: &Body) -> &'static str {
    match body {
        Body::Hello(_) => "hello",
        Body::Batch(_) => "batch",
        Body::Receipt(_) => "receipt",
        Body::Nack(_) => "NACK",
        Body::End(_) => "end of stream",
        Body::Abort(_) => "abort",
    }
}

/// What a frame is, with its round for a batch, for errors.
fn sending_what(body: &Body) -> String {
    match body {
        Body::Batch(bytes) => match batch_round(bytes) {
            Some(round) => format!("round {round} (a batch)"),
            None => "a batch".into(),
        },
        other => format!("its {}", body_name(other)),
    }
}

/// The round named in an encoded batch header (version, session id, round).
fn batch_round(bytes: &[u8]) -> Option<u8> {
    bytes.get(2 + 16).copied()
}

impl Link {
    /// Waits up to `timeout` for the next frame. An abort from the peer, a
    /// transport error, a timeout or a closed stream is an error.
    pub(crate) fn recv(&self, timeout: Duration, waiting_for: &str) -> Result<Body, OnlineError> {
        match self.inbound.recv_timeout(timeout) {
            Ok(Ok(Frame {
                body: Some(Body::Abort(a)),
            })) => Err(OnlineError::PeerAborted {
                peer: self.peer.clone(),
                reason: a.reason,
            }),
            Ok(Ok(Frame { body: Some(body) })) => Ok(body),
            Ok(Ok(Frame { body: None })) => Err(OnlineError::Unexpected {
                peer: self.peer.clone(),
                found: "empty frame",
                waiting_for: waiting_for.to_owned(),
            }),
            Ok(Err(status)) => Err(OnlineError::Transport {
                peer: self.peer.clone(),
                reason: format!(
                    "while waiting for {waiting_for}: {}",
                    sotto_net::tls::describe_status(&status)
                ),
            }),
            Err(RecvTimeoutError::Timeout) => Err(OnlineError::Timeout {
                peer: self.peer.clone(),
                waiting_for: waiting_for.to_owned(),
                seconds: timeout.as_secs(),
            }),
            Err(RecvTimeoutError::Disconnected) => Err(OnlineError::Disconnected {
                peer: self.peer.clone(),
                waiting_for: waiting_for.to_owned(),
            }),
        }
    }

    /// Sends a frame, waiting while the peer is slow to read.
    pub(crate) fn send(&self, body: Body) -> Result<(), OnlineError> {
        let sending = sending_what(&body);
        self.outbound
            .blocking_send(Ok(Frame { body: Some(body) }))
            .map_err(|_| OnlineError::ClosedWhileSending {
                peer: self.peer.clone(),
                sending,
            })
    }

    /// Tells the peer the session failed (best effort).
    pub(crate) fn abort(&self, reason: &str) {
        let _ = self.send(Body::Abort(Abort {
            reason: reason.to_owned(),
        }));
    }

    /// Decodes a whole message received from the peer.
    pub(crate) fn decode<T>(
        &self,
        what: &'static str,
        bytes: &[u8],
        parse: fn(&mut Reader<'_>) -> Result<T, DecodeError>,
    ) -> Result<T, OnlineError> {
        let mut r = Reader::new(bytes);
        let value = parse(&mut r).and_then(|v| r.expect_end().map(|()| v));
        value.map_err(|source| OnlineError::Decode {
            peer: self.peer.clone(),
            what,
            source,
        })
    }

    /// An error for a frame that does not belong here.
    pub(crate) fn unexpected(&self, body: &Body, waiting_for: &str) -> OnlineError {
        OnlineError::Unexpected {
            peer: self.peer.clone(),
            found: body_name(body),
            waiting_for: waiting_for.to_owned(),
        }
    }
}
