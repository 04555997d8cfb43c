//! The compute enclave's engine (sans-IO): open an encrypted request,
//! check the client, run the contract on state loaded from the target
//! business node, and return the TEE-signed packet with the response sealed
//! to the client. When the contract asks for a key that is not loaded yet,
//! the engine answers [`Outcome::Fetch`]; the driver loads those keys and
//! runs it again (contracts are deterministic, so the rerun sees the same
//! calls).

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use rand_core::{CryptoRng, RngCore};
use serde_json::json;
use sotto_crypto::identity::IdentityKey;
use sotto_crypto::ids::TxId;

use crate::clear::seal_copy;
use crate::config::{LedgerConfig, StorageMode};
use crate::contracts::{Call, Contract, ContractError, State};
use crate::keys::LedgerKeys;
use crate::packet::{tee_sign, ClearCopy, KvRead, KvWrite, Packet, Version, PACKET_FORMAT};
use crate::request::{request_digest, Proposal, Request, RequestError, TxKey};

/// Why a compute node refused a request (the client gets this in clear
/// over its mTLS connection; it reveals nothing of the ledger's state).
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The request does not open.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The proposal names another ledger.
    #[error("the proposal names another ledger")]
    WrongLedger,
    /// The transaction id is not 16 bytes.
    #[error("the transaction id must be 16 bytes")]
    BadTxId,
    /// The client is not in block 0.
    #[error("client {0} is not a client of this ledger")]
    UnknownClient(String),
    /// The client's signature over the proposal fails.
    #[error("the proposal is not signed by client {0}")]
    BadClientSignature(String),
    /// Block 0 or this enclave lacks the contract at that version.
    #[error(
        "contract {contract} version {version} is not in the ledger configuration or this enclave"
    )]
    UnknownContract {
        /// The contract.
        contract: String,
        /// The version asked for.
        version: u32,
    },
    /// The client may not call the contract.
    #[error("client {client} is not an allowed caller of {contract}")]
    CallerNotAllowed {
        /// The client.
        client: String,
        /// The contract.
        contract: String,
    },
    /// A target is not a business node, or none or the same twice.
    #[error("targets must be distinct business nodes of this ledger, at least one: {0}")]
    BadTargets(String),
    /// A value the business node returned does not open.
    #[error("the stored value of a key does not open: {0}")]
    StoredValue(String),
    /// Sealing failed.
    #[error("sealing failed: {0}")]
    Seal(String),
}

/// A request opened inside the enclave, its client and contract checked.
#[derive(Debug)]
pub struct Opened {
    /// The proposal.
    pub proposal: Proposal,
    /// The transaction id.
    pub tx_id: TxId,
    /// The key that seals the response.
    pub tx_key: TxKey,
    /// The digest the packet names.
    pub request_digest: [u8; 32],
}

/// What a business node returned for one key id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// Its version (none: absent).
    pub version: Option<Version>,
    /// Its value, as the node keeps it.
    pub held: Held,
}

/// A value as a business node keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Held {
    /// No value: the key is absent, or the node was not a target of its
    /// last write.
    #[default]
    Nothing,
    /// Sealed under the data-encryption key (ciphertext mode).
    Sealed(Vec<u8>),
    /// In clear, already through the load channel (plaintext mode).
    Clear(Vec<u8>),
}

/// The result of one run.
#[derive(Debug)]
pub enum Outcome {
    /// Load these key ids from the target business node, then run again.
    Fetch(Vec<[u8; 32]>),
    /// The contract ran.
    Executed {
        /// The encoded packet.
        packet: Vec<u8>,
        /// The TEE signature over it.
        tee_signature: Vec<u8>,
        /// The contract's response, sealed to the client.
        response: Vec<u8>,
    },
    /// The contract refused the call; the reason is sealed to the client.
    Refused {
        /// `{"error": ...}` sealed to the client.
        response: Vec<u8>,
    },
}

/// One compute enclave.
pub struct Enclave<'a> {
    /// Block 0's configuration.
    pub config: &'a LedgerConfig,
    /// The ledger id.
    pub ledger: [u8; 32],
    /// This member's name in the compute group.
    pub member: &'a str,
    /// Its identity key (the TEE signing key, bound by its evidence).
    pub identity: &'a IdentityKey,
    /// Its measurement.
    pub measurement: &'a [u8],
    /// The keys derived from the group keys.
    pub keys: &'a LedgerKeys,
    /// The contracts it carries.
    pub contracts: &'a [Box<dyn Contract>],
}

impl Enclave<'_> {
    /// Opens a request and checks its client, contract and targets.
    pub fn open(&self, request: &Request) -> Result<Opened, ComputeError> {
        let envelope = self
            .keys
            .envelope()
            .ok_or(ComputeError::Seal("no envelope key".into()))?;
        let (signed, proposal, tx_key) = request.open(envelope, self.keys.current())?;
        if proposal.ledger != self.ledger {
            return Err(ComputeError::WrongLedger);
        }
        let tx_id = <[u8; 16]>::try_from(proposal.tx_id.as_slice())
            .map(TxId::from_bytes)
            .map_err(|_| ComputeError::BadTxId)?;
        let client = self
            .config
            .client(&proposal.client)
            .ok_or_else(|| ComputeError::UnknownClient(proposal.client.clone()))?;
        Proposal::verify(&signed.proposal, &signed.signature, &client.identity)
            .map_err(|_| ComputeError::BadClientSignature(proposal.client.clone()))?;
        self.contract(&proposal)?;
        let contract = self
            .config
            .contract(&proposal.contract)
            .ok_or_else(|| unknown(&proposal))?;
        if !contract.callers.contains(&client.name) {
            return Err(ComputeError::CallerNotAllowed {
                client: proposal.client.clone(),
                contract: proposal.contract.clone(),
            });
        }
        self.check_targets(&proposal.targets)?;
        Ok(Opened {
            request_digest: request_digest(request),
            proposal,
            tx_id,
            tx_key,
        })
    }

    fn contract(&self, proposal: &Proposal) -> Result<&dyn Contract, ComputeError> {
        let configured = self
            .config
            .contract(&proposal.contract)
            .is_some_and(|c| c.version == proposal.contract_version);
        self.contracts
            .iter()
            .find(|c| c.name() == proposal.contract && c.version() == proposal.contract_version)
            .filter(|_| configured)
            .map(|c| &**c)
            .ok_or_else(|| unknown(proposal))
    }

    fn check_targets(&self, targets: &[String]) -> Result<(), ComputeError> {
        let mut seen = Vec::new();
        for target in targets {
            if self.config.business_node(target).is_none() || seen.contains(&target) {
                return Err(ComputeError::BadTargets(target.clone()));
            }
            seen.push(target);
        }
        if seen.is_empty() {
            return Err(ComputeError::BadTargets("(none)".into()));
        }
        Ok(())
    }

    /// Runs the contract on the state loaded so far.
    pub fn run<R: RngCore + CryptoRng>(
        &self,
        opened: &Opened,
        loaded: &HashMap<[u8; 32], Loaded>,
        rng: &mut R,
    ) -> Result<Outcome, ComputeError> {
        let proposal = &opened.proposal;
        let contract = self.contract(proposal)?;
        let mut session = Session {
            enclave: self,
            contract: &proposal.contract,
            loaded,
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            missing: Vec::new(),
            damaged: None,
        };
        let call = Call {
            function: &proposal.function,
            args: &proposal.args,
            client: &proposal.client,
        };
        let result = contract.call(&call, &mut session);
        if let Some(reason) = session.damaged {
            return Err(ComputeError::StoredValue(reason));
        }
        if !session.missing.is_empty() {
            return Ok(Outcome::Fetch(session.missing));
        }
        let seal = |body: &[u8], rng: &mut R| {
            opened
                .tx_key
                .seal_response(&proposal.tx_id, body, rng)
                .map_err(|e| ComputeError::Seal(e.to_string()))
        };
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                let body = json!({ "error": e.to_string() }).to_string();
                return Ok(Outcome::Refused {
                    response: seal(body.as_bytes(), rng)?,
                });
            }
        };
        let packet = self
            .packet(opened, session.reads, session.writes, rng)?
            .encode_to_vec();
        Ok(Outcome::Executed {
            tee_signature: tee_sign(self.identity, &packet).to_vec(),
            packet,
            response: seal(&response, rng)?,
        })
    }

    fn packet<R: RngCore + CryptoRng>(
        &self,
        opened: &Opened,
        reads: BTreeMap<[u8; 32], Option<Version>>,
        writes: BTreeMap<[u8; 32], Option<Vec<u8>>>,
        rng: &mut R,
    ) -> Result<Packet, ComputeError> {
        let proposal = &opened.proposal;
        let clear_copies = self.clear_copies(&proposal.tx_id, &proposal.targets, &writes, rng)?;
        let mut sealed = Vec::with_capacity(writes.len());
        for (key, value) in writes {
            let write = match value {
                Some(value) => KvWrite {
                    key: key.to_vec(),
                    value: self
                        .keys
                        .seal_value(&self.ledger, &key, &value, rng)
                        .map_err(|e| ComputeError::Seal(e.to_string()))?,
                    delete: false,
                },
                None => KvWrite {
                    key: key.to_vec(),
                    value: Vec::new(),
                    delete: true,
                },
            };
            sealed.push(write);
        }
        Ok(Packet {
            format: PACKET_FORMAT,
            ledger: self.ledger.to_vec(),
            tx_id: proposal.tx_id.clone(),
            client: proposal.client.clone(),
            contract: proposal.contract.clone(),
            contract_version: proposal.contract_version,
            reads: reads
                .into_iter()
                .map(|(key, version)| KvRead {
                    key: key.to_vec(),
                    version,
                })
                .collect(),
            writes: sealed,
            dek_version: self.keys.current(),
            targets: proposal.targets.clone(),
            request_digest: opened.request_digest.to_vec(),
            member: self.member.to_owned(),
            measurement: self.measurement.to_vec(),
            expires_ms: proposal.expires_ms,
            clear_copies,
        })
    }

    /// A copy of the value-setting writes for each plaintext-mode target,
    /// sealed to that node.
    fn clear_copies<R: RngCore + CryptoRng>(
        &self,
        tx_id: &[u8],
        targets: &[String],
        writes: &BTreeMap<[u8; 32], Option<Vec<u8>>>,
        rng: &mut R,
    ) -> Result<Vec<ClearCopy>, ComputeError> {
        let values: Vec<([u8; 32], &[u8])> = writes
            .iter()
            .filter_map(|(key, value)| value.as_deref().map(|v| (*key, v)))
            .collect();
        let mut copies = Vec::new();
        for target in targets {
            let Some(node) = self.config.business_node(target) else {
                return Err(ComputeError::BadTargets(target.clone()));
            };
            if node.mode == StorageMode::Plaintext {
                let copy = seal_copy(
                    target,
                    &node.member.identity,
                    &self.ledger,
                    tx_id,
                    &values,
                    rng,
                )
                .map_err(|e| ComputeError::Seal(e.to_string()))?;
                copies.push(copy);
            }
        }
        Ok(copies)
    }
}

fn unknown(proposal: &Proposal) -> ComputeError {
    ComputeError::UnknownContract {
        contract: proposal.contract.clone(),
        version: proposal.contract_version,
    }
}

/// The contract's view of state during one run: reads recorded with their
/// versions, writes buffered, keys not yet loaded collected.
struct Session<'e, 'a> {
    enclave: &'e Enclave<'a>,
    contract: &'e str,
    loaded: &'e HashMap<[u8; 32], Loaded>,
    reads: BTreeMap<[u8; 32], Option<Version>>,
    writes: BTreeMap<[u8; 32], Option<Vec<u8>>>,
    missing: Vec<[u8; 32]>,
    damaged: Option<String>,
}

impl State for Session<'_, '_> {
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ContractError> {
        let id = self.enclave.keys.key_id(self.contract, key);
        if let Some(written) = self.writes.get(&id) {
            return Ok(written.clone());
        }
        let Some(loaded) = self.loaded.get(&id) else {
            if !self.missing.contains(&id) {
                self.missing.push(id);
            }
            return Err(ContractError::NotLoaded);
        };
        self.reads.insert(id, loaded.version);
        match &loaded.held {
            Held::Sealed(sealed) => {
                match self
                    .enclave
                    .keys
                    .open_value(&self.enclave.ledger, &id, sealed)
                {
                    Ok(value) => Ok(Some(value)),
                    Err(e) => {
                        self.damaged = Some(format!("{key}: {e}"));
                        Err(ContractError::NotLoaded)
                    }
                }
            }
            Held::Clear(value) => Ok(Some(value.clone())),
            Held::Nothing if loaded.version.is_some() => {
                self.damaged = Some(format!(
                    "{key}: the business node holds its version but not its value (it was not a target of the last write)"
                ));
                Err(ContractError::NotLoaded)
            }
            Held::Nothing => Ok(None),
        }
    }

    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), ContractError> {
        let id = self.enclave.keys.key_id(self.contract, key);
        self.writes.insert(id, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), ContractError> {
        let id = self.enclave.keys.key_id(self.contract, key);
        self.writes.insert(id, None);
        Ok(())
    }
}
