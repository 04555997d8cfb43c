//! Signed receipts: what each side attests the session exchanged.

use super::{PeerKeys, Session, Signer};
use crate::error::EngineError;
use crate::wire::{Receipt, Role, PROTOCOL_VERSION, RECEIPT_DOMAIN};

impl Session {
    fn transcript_or_phase(&self) -> Result<[u8; 32], EngineError> {
        self.transcript_hash().ok_or_else(|| {
            EngineError::Phase("rounds 1 and 2 are not complete; no receipt yet".into())
        })
    }

    /// Signs this party's receipt. `intersection_size` is `None` when this
    /// party does not learn it.
    pub fn receipt(
        &mut self,
        signer: &Signer<'_>,
        intersection_size: Option<u64>,
    ) -> Result<Receipt, EngineError> {
        let (requester, provider) = match self.role {
            Role::Requester => (self.local, self.peer),
            Role::Provider => (self.peer, self.local),
        };
        let mut receipt = Receipt {
            version: PROTOCOL_VERSION,
            sid: self.params.sid,
            signer: self.role,
            requester,
            provider,
            requester_size: self.requester_size,
            provider_size: self.provider_size,
            intersection_size,
            transcript: self.transcript_or_phase()?,
            alignment: self.alignment,
            signature: [0; 64],
        };
        receipt.signature = signer
            .identity
            .sign(RECEIPT_DOMAIN, &receipt.signed_bytes());
        self.counts.made += 1;
        Ok(receipt)
    }

    /// Checks the peer's receipt: its signature, and that it describes this
    /// very session (ids, identities, sizes, transcript). A stated
    /// intersection size must equal `our_intersection` when we know it.
    pub fn check_receipt(
        &mut self,
        receipt: &Receipt,
        peer: &PeerKeys,
        our_intersection: Option<u64>,
    ) -> Result<(), EngineError> {
        peer.identity
            .verify(
                RECEIPT_DOMAIN,
                &receipt.signed_bytes(),
                &receipt.signature,
                "receipt",
            )
            .map_err(|_| EngineError::BadSignature { what: "receipt" })?;
        let (requester, provider) = match self.role {
            Role::Requester => (self.local, self.peer),
            Role::Provider => (self.peer, self.local),
        };
        let mismatch = |what: &str| Err(EngineError::ReceiptMismatch(what.to_owned()));
        if receipt.sid != self.params.sid {
            return mismatch("session id");
        }
        if receipt.signer == self.role
            || receipt.requester != requester
            || receipt.provider != provider
        {
            return mismatch("identities");
        }
        if (receipt.requester_size, receipt.provider_size)
            != (self.requester_size, self.provider_size)
        {
            return mismatch("input sizes");
        }
        if receipt.transcript != self.transcript_or_phase()? {
            return mismatch("transcript hash (the two sides saw different messages)");
        }
        if let (Some(theirs), Some(ours)) = (receipt.intersection_size, our_intersection) {
            if theirs != ours {
                return mismatch("intersection size");
            }
        }
        if let Some(ours) = self.alignment {
            match receipt.alignment {
                Some(theirs) if theirs != ours => {
                    return mismatch(
                        "alignment digest (the two aligned outputs would not line up)",
                    );
                }
                None if receipt.signer == Role::Requester => {
                    return mismatch(
                        "alignment digest (missing from an aligned session's receipt)",
                    );
                }
                _ => {}
            }
        }
        self.counts.verified += 1;
        Ok(())
    }
}
