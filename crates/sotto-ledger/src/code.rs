//! Validation codes: the one verdict a business node gives each transaction
//! of a block. Codes that Fabric has keep Fabric's name and number
//! (`TxValidationCode` in fabric-protos `peer/transaction.proto`); the
//! TEE-specific ones are ours, numbered from 100.

use std::fmt;

/// The verdict on one transaction, identical on every business node except
/// that a node a valid transaction does not name records [`Self::NotAddressed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValidationCode {
    /// The transaction is valid and its writes were applied.
    Valid,
    /// The transaction bytes do not decode, or a field is malformed.
    BadPayload,
    /// The client is not in the genesis file, or its signature does not verify.
    BadCreatorSignature,
    /// A membership update that is not signed by the registration center or
    /// does not advance the membership version.
    InvalidConfigTransaction,
    /// The transaction id was already seen, in this block or an earlier one.
    DuplicateTxid,
    /// The valid endorsements do not satisfy the contract's policy.
    EndorsementPolicyFailure,
    /// A read's version is no longer current.
    MvccReadConflict,
    /// The transaction was made for another ledger (another block 0).
    TargetChainNotFound,
    /// Any other reason.
    InvalidOtherReason,
    /// The TEE signature over the packet does not verify.
    BadTeeSignature,
    /// The packet's signer is not a current member of the compute enclave
    /// group, or its measurement is not the group's.
    EnclaveNotMember,
    /// Valid, but this node is not a target: it keeps only the packet digest.
    NotAddressed,
    /// The contract or its version is not in the ledger configuration.
    UnknownContract,
    /// The packet expired before its block was cut.
    Expired,
    /// The client is not an allowed caller of the contract.
    CallerNotAllowed,
}

impl ValidationCode {
    /// Every code, for decoding and tests.
    pub const ALL: [ValidationCode; 15] = [
        Self::Valid,
        Self::BadPayload,
        Self::BadCreatorSignature,
        Self::InvalidConfigTransaction,
        Self::DuplicateTxid,
        Self::EndorsementPolicyFailure,
        Self::MvccReadConflict,
        Self::TargetChainNotFound,
        Self::InvalidOtherReason,
        Self::BadTeeSignature,
        Self::EnclaveNotMember,
        Self::NotAddressed,
        Self::UnknownContract,
        Self::Expired,
        Self::CallerNotAllowed,
    ];

    /// The code's number.
    pub const fn number(self) -> u32 {
        match self {
            Self::Valid => 0,
            Self::BadPayload => 2,
            Self::BadCreatorSignature => 4,
            Self::InvalidConfigTransaction => 6,
            Self::DuplicateTxid => 9,
            Self::EndorsementPolicyFailure => 10,
            Self::MvccReadConflict => 11,
            Self::TargetChainNotFound => 14,
            Self::InvalidOtherReason => 255,
            Self::BadTeeSignature => 100,
            Self::EnclaveNotMember => 101,
            Self::NotAddressed => 102,
            Self::UnknownContract => 103,
            Self::Expired => 104,
            Self::CallerNotAllowed => 105,
        }
    }

    /// The code with this number, if there is one.
    pub fn from_number(number: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.number() == number)
    }

    /// The code's name, as Fabric spells it where Fabric has it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Valid => "VALID",
            Self::BadPayload => "BAD_PAYLOAD",
            Self::BadCreatorSignature => "BAD_CREATOR_SIGNATURE",
            Self::InvalidConfigTransaction => "INVALID_CONFIG_TRANSACTION",
            Self::DuplicateTxid => "DUPLICATE_TXID",
            Self::EndorsementPolicyFailure => "ENDORSEMENT_POLICY_FAILURE",
            Self::MvccReadConflict => "MVCC_READ_CONFLICT",
            Self::TargetChainNotFound => "TARGET_CHAIN_NOT_FOUND",
            Self::InvalidOtherReason => "INVALID_OTHER_REASON",
            Self::BadTeeSignature => "BAD_TEE_SIGNATURE",
            Self::EnclaveNotMember => "ENCLAVE_NOT_MEMBER",
            Self::NotAddressed => "NOT_ADDRESSED",
            Self::UnknownContract => "UNKNOWN_CONTRACT",
            Self::Expired => "EXPIRED",
            Self::CallerNotAllowed => "CALLER_NOT_ALLOWED",
        }
    }

    /// Whether the transaction's writes count: valid, whether or not it is
    /// addressed to this node.
    pub const fn is_valid(self) -> bool {
        matches!(self, Self::Valid | Self::NotAddressed)
    }

    /// The code as every business node agrees on it: [`Self::NotAddressed`]
    /// is [`Self::Valid`] seen from a node the transaction does not name.
    pub const fn consensus(self) -> Self {
        match self {
            Self::NotAddressed => Self::Valid,
            other => other,
        }
    }
}

impl fmt::Display for ValidationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_fabrics_and_ours_and_round_trip() {
        let fabric = [
            ("VALID", 0),
            ("BAD_CREATOR_SIGNATURE", 4),
            ("DUPLICATE_TXID", 9),
            ("ENDORSEMENT_POLICY_FAILURE", 10),
            ("MVCC_READ_CONFLICT", 11),
            ("INVALID_OTHER_REASON", 255),
        ];
        for (name, number) in fabric {
            let code = ValidationCode::from_number(number).expect("a Fabric code");
            assert_eq!(code.name(), name);
        }
        let mut numbers: Vec<u32> = ValidationCode::ALL.iter().map(|c| c.number()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(
            numbers.len(),
            ValidationCode::ALL.len(),
            "numbers are distinct"
        );
        for code in ValidationCode::ALL {
            assert_eq!(ValidationCode::from_number(code.number()), Some(code));
        }
        assert_eq!(ValidationCode::from_number(1), None);
        assert_eq!(
            ValidationCode::NotAddressed.consensus(),
            ValidationCode::Valid
        );
        assert!(ValidationCode::NotAddressed.is_valid());
        assert!(!ValidationCode::MvccReadConflict.is_valid());
        assert_eq!(ValidationCode::Expired.to_string(), "EXPIRED (104)");
    }
}
