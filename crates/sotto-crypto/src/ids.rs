//! Typed identifiers with a fixed length, shown and parsed as lowercase hex.

use std::fmt;
use std::str::FromStr;

use rand_core::{CryptoRng, RngCore};

use crate::CryptoError;

/// Defines a 128-bit random identifier type shown and parsed as hex.
macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Length of the id in bytes.
            pub const LEN: usize = 16;

            /// Draws a fresh random id.
            pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
                let mut bytes = [0u8; 16];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl FromStr for $name {
            type Err = CryptoError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bytes = hex::decode(s).map_err(|e| CryptoError::BadHex {
                    what: $what,
                    reason: e.to_string(),
                })?;
                let bytes: [u8; 16] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| CryptoError::BadLength {
                            what: $what,
                            expected: 16,
                            got: bytes.len(),
                        })?;
                Ok(Self(bytes))
            }
        }
    };
}

random_id!(
    /// A 128-bit PSI session id, fresh for every session.
    SessionId,
    "session id"
);

random_id!(
    /// A 128-bit aggregation job id, fresh for every attempt of a job (a
    /// re-run gets a new one).
    JobId,
    "job id"
);

random_id!(
    /// A 128-bit id of a KMS reply channel: one ephemeral key agreement
    /// between a participant's agent and the root KMS that recovered
    /// secrets come back under.
    ReplyChannelId,
    "reply channel id"
);

random_id!(
    /// A 128-bit ledger transaction id, drawn by the client for each request;
    /// validation refuses a second transaction with the same id.
    TxId,
    "transaction id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips_through_text() {
        let id = SessionId::from_bytes([7; 16]);
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(text.parse::<SessionId>(), Ok(id));
    }

    #[test]
    fn job_id_round_trips_through_text() {
        let id = JobId::from_bytes([9; 16]);
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        assert_eq!(format!("{id:?}"), format!("JobId({id})"));
    }

    #[test]
    fn reply_channel_id_round_trips_through_text() {
        let id = ReplyChannelId::from_bytes([3; 16]);
        assert_eq!(id.to_string().parse::<ReplyChannelId>(), Ok(id));
    }

    #[test]
    fn session_id_rejects_bad_text() {
        assert!(matches!(
            "abcd".parse::<SessionId>(),
            Err(CryptoError::BadLength { got: 2, .. })
        ));
        assert!(matches!(
            "zz".parse::<SessionId>(),
            Err(CryptoError::BadHex { .. })
        ));
    }
}
