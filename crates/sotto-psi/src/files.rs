//! The offline exchange files: a magic header, a format version, the kind of
//! step, the session id and the sender, then the step's messages.

use sotto_crypto::identity::IdentityPublic;
use sotto_crypto::ids::SessionId;

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;
use crate::wire::{Batch, Hello, Receipt};

/// First bytes of every offline PSI file.
pub const MAGIC: &[u8; 8] = b"SOTTOPSI";
/// Version of the file layout.
pub const FILE_VERSION: u16 = 1;

/// Which step produced a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// `start`: the requester's hello.
    Hello = 1,
    /// `accept`: the provider's hello.
    Accept = 2,
    /// `send`: round 1.
    Round1 = 3,
    /// `respond`: round 2 and the provider's receipt.
    Round2 = 4,
    /// `finish` (requester): its receipt, and round 3 under reveal `both`.
    Close = 5,
}

impl FileKind {
    /// How the file is described to a user.
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Hello => "a hello file (from `psi offline start`)",
            FileKind::Accept => "an accept file (from `psi offline accept`)",
            FileKind::Round1 => "a round-1 file (from `psi offline send`)",
            FileKind::Round2 => "a round-2 file (from `psi offline respond`)",
            FileKind::Close => "a closing file (from the requester's `psi offline finish`)",
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        [
            Self::Hello,
            Self::Accept,
            Self::Round1,
            Self::Round2,
            Self::Close,
        ]
        .into_iter()
        .find(|k| *k as u8 == code)
    }
}

/// The body of an offline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileBody {
    /// A hello or an accept.
    Hello(Hello),
    /// Round 1: stream u.
    Round1 {
        /// Batches of u.
        u: Vec<Batch>,
    },
    /// Round 2: streams w and v and the provider's receipt.
    Round2 {
        /// The provider's receipt.
        receipt: Receipt,
        /// Batches of w.
        w: Vec<Batch>,
        /// Batches of v.
        v: Vec<Batch>,
    },
    /// The requester's receipt and, under reveal `both`, stream z.
    Close {
        /// The requester's receipt.
        receipt: Receipt,
        /// Batches of z (empty unless reveal `both`).
        z: Vec<Batch>,
    },
}

/// A decoded offline file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PsiFile {
    /// Which step wrote it.
    pub kind: FileKind,
    /// The session.
    pub sid: SessionId,
    /// Who wrote it.
    pub sender: IdentityPublic,
    /// Its messages.
    pub body: FileBody,
}

fn put_batches(w: &mut Writer, batches: &[Batch]) {
    w.u32(batches.len() as u32);
    for b in batches {
        b.encode(w);
    }
}

fn get_batches(
    r: &mut Reader<'_>,
    field: &'static str,
    max_count: u32,
) -> Result<Vec<Batch>, DecodeError> {
    let n = r.u32(field)?;
    // Each batch takes well over 100 bytes; refuse counts the file cannot hold.
    if n as usize > r.remaining() / 100 + 1 {
        return Err(r.invalid(
            field,
            format!("{n} batches cannot fit in the {} bytes left", r.remaining()),
        ));
    }
    (0..n).map(|_| Batch::decode(r, max_count)).collect()
}

impl PsiFile {
    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(1 << 16);
        w.raw(MAGIC)
            .u16(FILE_VERSION)
            .u8(self.kind as u8)
            .raw(self.sid.as_bytes())
            .raw(&self.sender.to_bytes());
        match &self.body {
            FileBody::Hello(h) => h.encode(&mut w),
            FileBody::Round1 { u } => put_batches(&mut w, u),
            FileBody::Round2 { receipt, w: ws, v } => {
                receipt.encode(&mut w);
                put_batches(&mut w, ws);
                put_batches(&mut w, v);
            }
            FileBody::Close { receipt, z } => {
                receipt.encode(&mut w);
                put_batches(&mut w, z);
            }
        }
        w.finish()
    }

    /// Decodes a file; batches may hold at most `max_batch` elements.
    pub fn decode(bytes: &[u8], max_batch: u32) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let magic: [u8; 8] = r.array("magic")?;
        if &magic != MAGIC {
            return Err(r.invalid("magic", "not a sotto PSI file"));
        }
        let version = r.u16("file.version")?;
        if version != FILE_VERSION {
            return Err(r.invalid(
                "file.version",
                format!("file version {version}; this build reads {FILE_VERSION}"),
            ));
        }
        let code = r.u8("file.kind")?;
        let kind = FileKind::from_code(code)
            .ok_or_else(|| r.invalid("file.kind", format!("unknown kind {code}")))?;
        let sid = SessionId::from_bytes(r.array("file.sid")?);
        let sender_bytes: [u8; 32] = r.array("file.sender")?;
        let sender = IdentityPublic::from_bytes(&sender_bytes)
            .map_err(|e| r.invalid("file.sender", e.to_string()))?;
        let body = match kind {
            FileKind::Hello | FileKind::Accept => FileBody::Hello(Hello::decode(&mut r)?),
            FileKind::Round1 => FileBody::Round1 {
                u: get_batches(&mut r, "round1.u", max_batch)?,
            },
            FileKind::Round2 => FileBody::Round2 {
                receipt: Receipt::decode(&mut r)?,
                w: get_batches(&mut r, "round2.w", max_batch)?,
                v: get_batches(&mut r, "round2.v", max_batch)?,
            },
            FileKind::Close => FileBody::Close {
                receipt: Receipt::decode(&mut r)?,
                z: get_batches(&mut r, "close.z", max_batch)?,
            },
        };
        r.expect_end()?;
        Ok(Self {
            kind,
            sid,
            sender,
            body,
        })
    }
}
