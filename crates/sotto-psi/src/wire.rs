//! PSI messages and their binary encoding: hello, batch header, batch,
//! receipt. Every signed message is domain-separated and carries the protocol
//! version, the session id, the round and the sender.

use std::fmt;

use sotto_crypto::bls::SIGNATURE_LEN as BLS_SIG_LEN;
use sotto_crypto::group::{Element, GroupId, ELEMENT_LEN};
use sotto_crypto::identity::{IdentityPublic, SIGNATURE_LEN as ID_SIG_LEN};
use sotto_crypto::ids::SessionId;

use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

/// The protocol version spoken by this build. Version 2 added the hello's
/// creation time and key parameters; a version-1 hello still decodes, so a
/// peer running an older build is refused by name instead of as garbage.
pub const PROTOCOL_VERSION: u16 = 2;
/// Domain of hello signatures.
pub const HELLO_DOMAIN: &str = "sotto/psi/hello/v1";
/// Domain of batch header signatures.
pub const HEADER_DOMAIN: &str = "sotto/psi/batch/v1";
/// Domain of receipts.
pub const RECEIPT_DOMAIN: &str = "sotto/psi/receipt/v1";
/// Prefix of every per-element BLS message.
pub const ELEMENT_DOMAIN: &[u8] = b"sotto/psi/elem/v1";
/// Prefix of the BLS message over a batch header (digest mode).
pub const DIGEST_DOMAIN: &[u8] = b"sotto/psi/digest/v1";

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $code:literal => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The wire code.
            pub fn code(self) -> u8 {
                match self { $($name::$variant => $code),+ }
            }

            /// Parses a wire code.
            pub fn from_code(code: u8) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }

            /// The name used on the command line and in reports.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Every value, for help texts.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.name()).collect();
                    format!("unknown value {s:?}; expected one of {}", names.join(", "))
                })
            }
        }
    };
}

wire_enum!(
    /// Which side of the session a party plays.
    Role {
        /// Starts the session and learns the intersection.
        Requester = 1 => "requester",
        /// Answers; learns the intersection only with reveal `both`.
        Provider = 2 => "provider",
    }
);

wire_enum!(
    /// How encrypted elements are signed.
    SigningMode {
        /// Every element BLS-signed, keys used in turn; tampering is located.
        Element = 1 => "element",
        /// Only each batch header is signed (identity key and BLS over the digest).
        Digest = 2 => "digest",
        /// Classic ECDH-PSI without integrity; for comparison only.
        None = 3 => "none",
    }
);

wire_enum!(
    /// Who learns what at the end of the session.
    Reveal {
        /// The requester learns the intersection.
        Requester = 1 => "requester",
        /// Both parties learn the intersection (round 3).
        Both = 2 => "both",
        /// The requester learns only its size: the provider sorts round 2's
        /// re-encrypted elements so they cannot be linked to the requester's.
        Size = 3 => "size",
    }
);

wire_enum!(
    /// The element streams of a session.
    StreamKind {
        /// Round 1: the requester's encrypted identifiers u_i.
        RequesterEncrypted = 1 => "u (requester's encrypted ids)",
        /// Round 2: the requester's elements re-encrypted by the provider, w_i.
        Reencrypted = 2 => "w (re-encrypted requester ids)",
        /// Round 2: the provider's encrypted identifiers v_j.
        ProviderEncrypted = 3 => "v (provider's encrypted ids)",
        /// Round 3: the provider's elements re-encrypted by the requester, z_j.
        RevealBack = 4 => "z (re-encrypted provider ids)",
    }
);

impl StreamKind {
    /// The protocol round the stream belongs to.
    pub fn round(self) -> u8 {
        match self {
            StreamKind::RequesterEncrypted => 1,
            StreamKind::Reencrypted | StreamKind::ProviderEncrypted => 2,
            StreamKind::RevealBack => 3,
        }
    }

    /// Who sends the stream.
    pub fn sender(self) -> Role {
        match self {
            StreamKind::RequesterEncrypted | StreamKind::RevealBack => Role::Requester,
            StreamKind::Reencrypted | StreamKind::ProviderEncrypted => Role::Provider,
        }
    }
}

/// Reads a one-byte code and maps it with `parse`.
pub(crate) fn decode_enum<T>(
    r: &mut Reader<'_>,
    field: &'static str,
    parse: fn(u8) -> Option<T>,
) -> Result<T, DecodeError> {
    let code = r.u8(field)?;
    parse(code).ok_or_else(|| r.invalid(field, format!("unknown code {code}")))
}

/// Reads and validates a 32-byte identity key.
pub(crate) fn decode_identity(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<IdentityPublic, DecodeError> {
    let bytes: [u8; 32] = r.array(field)?;
    IdentityPublic::from_bytes(&bytes).map_err(|e| r.invalid(field, e.to_string()))
}

/// How identifiers are turned into keys: what both parties must share for
/// equal customers to give equal keys. Sent in both hellos and compared
/// before any element is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyParams {
    /// Number of key columns (1 for a single column, more for a composite key).
    pub columns: u8,
    /// Leading and trailing whitespace stripped.
    pub trim: bool,
    /// Case folded.
    pub casefold: bool,
    /// Unicode NFKC applied.
    pub nfkc: bool,
    /// The shard taken part in, if the key space is sharded.
    pub shard: Option<ShardParams>,
}

/// One shard of a partition, as the peer sees it: index, count and a digest
/// of the partition's salt (not the salt itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardParams {
    /// This shard, from 0.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
    /// SHA-256 of the shard salt under the domain `sotto/psi/shard-salt/v1`.
    pub salt_digest: [u8; 32],
}

impl Default for KeyParams {
    /// One column, trimmed, no other normalization, not sharded.
    fn default() -> Self {
        Self {
            columns: 1,
            trim: true,
            casefold: false,
            nfkc: false,
            shard: None,
        }
    }
}

/// The hello's option bit for sample alignment.
const HELLO_ALIGN: u8 = 1;
const TRIM: u8 = 1;
const CASEFOLD: u8 = 2;
const NFKC: u8 = 4;

impl KeyParams {
    fn flags(&self) -> u8 {
        u8::from(self.trim) * TRIM + u8::from(self.casefold) * CASEFOLD + u8::from(self.nfkc) * NFKC
    }

    /// Appends the encoding (in hellos and in session state).
    pub(crate) fn encode(&self, w: &mut Writer) {
        let (index, count, salt) = match &self.shard {
            Some(s) => (s.index, s.count, s.salt_digest),
            None => (0, 0, [0; 32]),
        };
        w.u8(self.columns)
            .u8(self.flags())
            .u32(index)
            .u32(count)
            .raw(&salt);
    }

    /// Reads what [`KeyParams::encode`] wrote.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let columns = r.u8("hello.key_columns")?;
        if columns == 0 {
            return Err(r.invalid("hello.key_columns", "a key needs at least one column"));
        }
        let flags = r.u8("hello.key_flags")?;
        if flags & !(TRIM | CASEFOLD | NFKC) != 0 {
            return Err(r.invalid("hello.key_flags", format!("unknown flags {flags:#04x}")));
        }
        let index = r.u32("hello.shard_index")?;
        let count = r.u32("hello.shard_count")?;
        let salt_digest = r.array("hello.shard_salt_digest")?;
        let shard = match count {
            0 => None,
            _ if index >= count => {
                return Err(r.invalid(
                    "hello.shard_index",
                    format!("shard {index} of {count} does not exist"),
                ))
            }
            _ => Some(ShardParams {
                index,
                count,
                salt_digest,
            }),
        };
        Ok(Self {
            columns,
            trim: flags & TRIM != 0,
            casefold: flags & CASEFOLD != 0,
            nfkc: flags & NFKC != 0,
            shard,
        })
    }

    /// The first parameter in which `self` and `other` differ, with both
    /// values in words: `(parameter, ours, theirs)`.
    pub fn first_difference(&self, other: &KeyParams) -> Option<(&'static str, String, String)> {
        let yes_no = |b: bool| if b { "on" } else { "off" }.to_owned();
        if self.columns != other.columns {
            return Some((
                "number of key columns",
                self.columns.to_string(),
                other.columns.to_string(),
            ));
        }
        for (name, a, b) in [
            ("trimming (--no-trim)", self.trim, other.trim),
            ("case folding (--casefold)", self.casefold, other.casefold),
            ("NFKC normalization (--nfkc)", self.nfkc, other.nfkc),
        ] {
            if a != b {
                return Some((name, yes_no(a), yes_no(b)));
            }
        }
        let shard = |s: &Option<ShardParams>| match s {
            None => "none (not sharded)".to_owned(),
            Some(s) => format!("{}/{}", s.index, s.count),
        };
        match (&self.shard, &other.shard) {
            (Some(a), Some(b)) if (a.index, a.count) == (b.index, b.count) => {
                (a.salt_digest != b.salt_digest).then(|| {
                    (
                        "shard salt (--shard-salt)",
                        format!("digest {}", hex::encode(&a.salt_digest[..8])),
                        format!("digest {}", hex::encode(&b.salt_digest[..8])),
                    )
                })
            }
            (a, b) if a != b => Some(("shard (--shard)", shard(a), shard(b))),
            _ => None,
        }
    }
}

/// The handshake message. The requester's hello opens the session; the
/// provider's hello (its accept) answers it and names it in `reply_to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version of the sender.
    pub version: u16,
    /// The session id, chosen by the requester.
    pub sid: SessionId,
    /// Which side the sender plays.
    pub role: Role,
    /// The PSI group.
    pub group: GroupId,
    /// The signing mode.
    pub mode: SigningMode,
    /// The reveal mode.
    pub reveal: Reveal,
    /// Elements per batch.
    pub batch_size: u32,
    /// Number of distinct identifiers the sender will encrypt.
    pub input_size: u64,
    /// The sender's identity key.
    pub sender: IdentityPublic,
    /// Fingerprint of the sender's profile (its BLS keys and proofs).
    pub profile: [u8; 32],
    /// The sender's ephemeral X25519 key for the salt agreement.
    pub ephemeral: [u8; 32],
    /// Hash of the requester's hello (all zero in the requester's hello).
    pub reply_to: [u8; 32],
    /// When the sender wrote it, Unix seconds (0 in a version-1 hello).
    pub created: u64,
    /// How the sender's keys were made (the default in a version-1 hello).
    pub keys: KeyParams,
    /// Sample alignment: both parties write their matched rows in one common
    /// order (requires reveal `both`; the provider must agree).
    pub align: bool,
    /// Identity signature over all of the above.
    pub signature: [u8; ID_SIG_LEN],
}

impl Hello {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(260);
        w.u16(self.version)
            .raw(self.sid.as_bytes())
            .u8(self.role.code())
            .u8(self.group.code())
            .u8(self.mode.code())
            .u8(self.reveal.code())
            .u32(self.batch_size)
            .u64(self.input_size)
            .raw(&self.sender.to_bytes())
            .raw(&self.profile)
            .raw(&self.ephemeral)
            .raw(&self.reply_to);
        if self.version >= 2 {
            w.u64(self.created);
            self.keys.encode(&mut w);
            w.u8(if self.align { HELLO_ALIGN } else { 0 });
        }
        w.finish()
    }

    /// The full encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.raw(&self.signed_bytes()).raw(&self.signature);
    }

    /// Decodes a hello (without checking the signature).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u16("hello.version")?;
        let sid = SessionId::from_bytes(r.array("hello.sid")?);
        let role = decode_enum(r, "hello.role", Role::from_code)?;
        let group = decode_enum(r, "hello.group", GroupId::from_code)?;
        let mode = decode_enum(r, "hello.mode", SigningMode::from_code)?;
        let reveal = decode_enum(r, "hello.reveal", Reveal::from_code)?;
        let batch_size = r.u32("hello.batch_size")?;
        let input_size = r.u64("hello.input_size")?;
        let sender = decode_identity(r, "hello.sender")?;
        let profile = r.array("hello.profile")?;
        let ephemeral = r.array("hello.ephemeral")?;
        let reply_to = r.array("hello.reply_to")?;
        let (created, keys, align) = if version >= 2 {
            let created = r.u64("hello.created")?;
            let keys = KeyParams::decode(r)?;
            let options = r.u8("hello.options")?;
            if options & !HELLO_ALIGN != 0 {
                return Err(r.invalid("hello.options", format!("unknown options {options:#04x}")));
            }
            (created, keys, options & HELLO_ALIGN != 0)
        } else {
            (0, KeyParams::default(), false)
        };
        Ok(Self {
            version,
            sid,
            role,
            group,
            mode,
            reveal,
            batch_size,
            input_size,
            sender,
            profile,
            ephemeral,
            reply_to,
            created,
            keys,
            align,
            signature: r.array("hello.signature")?,
        })
    }

    /// Hash of the whole message, used in `reply_to` and the transcript.
    pub fn digest(&self) -> [u8; 32] {
        let mut w = Writer::new();
        self.encode(&mut w);
        sotto_crypto::hash::sha256(w.as_slice())
    }
}

/// The header of a batch of elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Protocol version.
    pub version: u16,
    /// Session id.
    pub sid: SessionId,
    /// The stream (which fixes the round and the sender's role).
    pub stream: StreamKind,
    /// The sender's identity key.
    pub sender: IdentityPublic,
    /// Index of the batch within its stream, from 0.
    pub batch_index: u32,
    /// Stream position of the batch's first element.
    pub first_position: u64,
    /// Number of elements.
    pub count: u32,
    /// SHA-256 of the concatenated elements.
    pub digest: [u8; 32],
}

impl BatchHeader {
    /// Encoded length.
    pub const LEN: usize = 2 + 16 + 1 + 1 + 32 + 4 + 8 + 4 + 32;

    /// The encoding, which is also what the signatures cover.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::LEN);
        w.u16(self.version)
            .raw(self.sid.as_bytes())
            .u8(self.stream.round())
            .u8(self.stream.code())
            .raw(&self.sender.to_bytes())
            .u32(self.batch_index)
            .u64(self.first_position)
            .u32(self.count)
            .raw(&self.digest);
        w.finish()
    }

    /// Decodes a header.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u16("batch.version")?;
        let sid = SessionId::from_bytes(r.array("batch.sid")?);
        let round = r.u8("batch.round")?;
        let stream = decode_enum(r, "batch.stream", StreamKind::from_code)?;
        if stream.round() != round {
            return Err(r.invalid(
                "batch.round",
                format!("round {round} does not carry stream {stream}"),
            ));
        }
        Ok(Self {
            version,
            sid,
            stream,
            sender: decode_identity(r, "batch.sender")?,
            batch_index: r.u32("batch.index")?,
            first_position: r.u64("batch.first_position")?,
            count: r.u32("batch.count")?,
            digest: r.array("batch.digest")?,
        })
    }

    /// The BLS message for the element at `position` (domain, version, sid,
    /// round, stream, sender, batch index, position, element).
    pub fn element_message(&self, position: u64, element: &Element) -> [u8; ELEMENT_MESSAGE_LEN] {
        let mut m = [0u8; ELEMENT_MESSAGE_LEN];
        let mut at = 0;
        for part in [
            ELEMENT_DOMAIN,
            &self.version.to_be_bytes(),
            self.sid.as_bytes(),
            &[self.stream.round(), self.stream.code()],
            &self.sender.to_bytes(),
            &self.batch_index.to_be_bytes(),
            &position.to_be_bytes(),
            element,
        ] {
            m[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        m
    }

    /// The BLS message over the whole header (digest mode).
    pub fn digest_message(&self) -> Vec<u8> {
        let mut m = DIGEST_DOMAIN.to_vec();
        m.extend_from_slice(&self.to_bytes());
        m
    }
}

/// Length of a per-element BLS message.
pub const ELEMENT_MESSAGE_LEN: usize = ELEMENT_DOMAIN.len() + 2 + 16 + 2 + 32 + 4 + 8 + ELEMENT_LEN;

/// A batch: header, its signatures, the elements and their signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The header.
    pub header: BatchHeader,
    /// Identity signature over the header (absent in mode `none`).
    pub header_signature: Option<[u8; ID_SIG_LEN]>,
    /// BLS signature over the header (mode `digest` only).
    pub digest_signature: Option<[u8; BLS_SIG_LEN]>,
    /// The encoded group elements.
    pub elements: Vec<Element>,
    /// One BLS signature per element (mode `element` only).
    pub signatures: Vec<[u8; BLS_SIG_LEN]>,
}

impl Batch {
    /// Appends the encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.raw(&self.header.to_bytes());
        match &self.header_signature {
            Some(sig) => w.u8(1).raw(sig),
            None => w.u8(0),
        };
        match &self.digest_signature {
            Some(sig) => w.u8(1).raw(sig),
            None => w.u8(0),
        };
        w.u32(self.elements.len() as u32);
        for e in &self.elements {
            w.raw(e);
        }
        w.u32(self.signatures.len() as u32);
        for s in &self.signatures {
            w.raw(s);
        }
    }

    /// Decodes a batch whose element and signature counts are at most
    /// `max_count` (the negotiated batch size), so a forged count cannot make
    /// the reader allocate without bound.
    pub fn decode(r: &mut Reader<'_>, max_count: u32) -> Result<Self, DecodeError> {
        let header = BatchHeader::decode(r)?;
        let header_signature = match r.u8("batch.header_signature.present")? {
            0 => None,
            1 => Some(r.array("batch.header_signature")?),
            other => {
                return Err(r.invalid("batch.header_signature.present", format!("flag {other}")))
            }
        };
        let digest_signature = match r.u8("batch.digest_signature.present")? {
            0 => None,
            1 => Some(r.array("batch.digest_signature")?),
            other => {
                return Err(r.invalid("batch.digest_signature.present", format!("flag {other}")))
            }
        };
        let elements = read_list(r, "batch.elements", max_count)?;
        let signatures = read_list(r, "batch.signatures", max_count)?;
        Ok(Self {
            header,
            header_signature,
            digest_signature,
            elements,
            signatures,
        })
    }
}

fn read_list<const N: usize>(
    r: &mut Reader<'_>,
    field: &'static str,
    max: u32,
) -> Result<Vec<[u8; N]>, DecodeError> {
    let count = r.u32(field)?;
    if count > max {
        return Err(r.invalid(
            field,
            format!("{count} entries exceed the batch size {max}"),
        ));
    }
    let bytes = r.take(count as usize * N, field)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
        .collect())
}

/// A signed statement of what a session exchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Protocol version.
    pub version: u16,
    /// Session id.
    pub sid: SessionId,
    /// Who signed it.
    pub signer: Role,
    /// The requester's identity.
    pub requester: IdentityPublic,
    /// The provider's identity.
    pub provider: IdentityPublic,
    /// Distinct identifiers of the requester.
    pub requester_size: u64,
    /// Distinct identifiers of the provider.
    pub provider_size: u64,
    /// Intersection size, if the signer learned it.
    pub intersection_size: Option<u64>,
    /// Hash of the transcript (hellos and every batch header of rounds 1-2).
    pub transcript: [u8; 32],
    /// Under sample alignment, the digest of the signer's aligned output
    /// (see [`crate::engine::alignment_digest`]), once it knows it.
    pub alignment: Option<[u8; 32]>,
    /// The signer's identity signature.
    pub signature: [u8; ID_SIG_LEN],
}

impl Receipt {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(180);
        w.u16(self.version)
            .raw(self.sid.as_bytes())
            .u8(self.signer.code())
            .raw(&self.requester.to_bytes())
            .raw(&self.provider.to_bytes())
            .u64(self.requester_size)
            .u64(self.provider_size);
        match self.intersection_size {
            Some(n) => w.u8(1).u64(n),
            None => w.u8(0).u64(0),
        };
        w.raw(&self.transcript);
        match &self.alignment {
            Some(digest) => w.u8(1).raw(digest),
            None => w.u8(0),
        };
        w.finish()
    }

    /// Appends the encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.raw(&self.signed_bytes()).raw(&self.signature);
    }

    /// Decodes a receipt (without checking the signature).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u16("receipt.version")?;
        let sid = SessionId::from_bytes(r.array("receipt.sid")?);
        let signer = decode_enum(r, "receipt.signer", Role::from_code)?;
        let requester = decode_identity(r, "receipt.requester")?;
        let provider = decode_identity(r, "receipt.provider")?;
        let requester_size = r.u64("receipt.requester_size")?;
        let provider_size = r.u64("receipt.provider_size")?;
        let known = r.u8("receipt.intersection_known")?;
        let size = r.u64("receipt.intersection_size")?;
        let intersection_size = match known {
            0 => None,
            1 => Some(size),
            other => return Err(r.invalid("receipt.intersection_known", format!("flag {other}"))),
        };
        let transcript = r.array("receipt.transcript")?;
        let alignment = match r.u8("receipt.alignment_known")? {
            0 => None,
            1 => Some(r.array("receipt.alignment")?),
            other => return Err(r.invalid("receipt.alignment_known", format!("flag {other}"))),
        };
        Ok(Self {
            version,
            sid,
            signer,
            requester,
            provider,
            requester_size,
            provider_size,
            intersection_size,
            transcript,
            alignment,
            signature: r.array("receipt.signature")?,
        })
    }

    /// Hex of the full encoding, for reports.
    pub fn to_hex(&self) -> String {
        let mut w = Writer::new();
        self.encode(&mut w);
        hex::encode(w.finish())
    }
}
