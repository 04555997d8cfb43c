//! A consortium for tests: identity keys for every node and the genesis
//! text that names them.

#![allow(dead_code, clippy::expect_used)]

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::identity::IdentityKey;

/// Every key of the test consortium.
pub struct Consortium {
    pub center: IdentityKey,
    pub orderers: Vec<IdentityKey>,
    pub endorsers: Vec<IdentityKey>,
    pub business: Vec<IdentityKey>,
    pub clients: Vec<IdentityKey>,
}

impl Consortium {
    /// Deterministic keys: 3 orderers, 3 endorsers, 2 business nodes, 2 clients.
    pub fn new() -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut keys = |n: usize| {
            (0..n)
                .map(|_| IdentityKey::generate(&mut rng))
                .collect::<Vec<_>>()
        };
        let center = keys(1).remove(0);
        Self {
            center,
            orderers: keys(3),
            endorsers: keys(3),
            business: keys(2),
            clients: keys(2),
        }
    }

    /// The genesis text: contracts `credit` (2 of 3 endorsers, both banks)
    /// and `kv` (endorser e1 and an endorser of org `audit`, bank-a only).
    pub fn genesis(&self) -> String {
        let hex = |k: &IdentityKey| hex::encode(k.public().to_bytes());
        let mut text = format!(
            "format = 1\nname = \"credit-ledger\"\ncreated = 1764547200\nca_sha256 = \"{}\"\n\n[center]\nname = \"center\"\nidentity = \"{}\"\n\n[blocks]\nmax_transactions = 100\n",
            "ab".repeat(32),
            hex(&self.center)
        );
        for (i, k) in self.orderers.iter().enumerate() {
            text += &format!(
                "\n[[orderer]]\nname = \"o{}\"\norg = \"ops\"\nidentity = \"{}\"\naddress = \"127.0.0.1:{}\"\n",
                i + 1,
                hex(k),
                7050 + i
            );
        }
        let orgs = ["ops", "audit", "risk"];
        for (i, k) in self.endorsers.iter().enumerate() {
            text += &format!(
                "\n[[endorser]]\nname = \"e{}\"\norg = \"{}\"\nidentity = \"{}\"\naddress = \"127.0.0.1:{}\"\n",
                i + 1,
                orgs[i],
                hex(k),
                7150 + i
            );
        }
        let modes = ["ciphertext", "plaintext"];
        for (i, k) in self.business.iter().enumerate() {
            text += &format!(
                "\n[[business]]\nname = \"b{}\"\norg = \"bank-{}\"\nidentity = \"{}\"\naddress = \"127.0.0.1:{}\"\nmode = \"{}\"\n",
                i + 1,
                ["a", "b"][i],
                hex(k),
                7250 + i,
                modes[i]
            );
        }
        for (i, k) in self.clients.iter().enumerate() {
            let bank = ["a", "b"][i];
            text += &format!(
                "\n[[client]]\nname = \"bank-{bank}\"\norg = \"bank-{bank}\"\nidentity = \"{}\"\n",
                hex(k)
            );
        }
        text += "\n[[contract]]\nname = \"credit\"\nversion = 1\npolicy = \"OutOf(2, 'e1', 'e2', 'e3')\"\ncallers = [\"bank-a\", \"bank-b\"]\n";
        text += "\n[[contract]]\nname = \"kv\"\nversion = 1\npolicy = \"AND('e1', 'audit')\"\ncallers = [\"bank-a\"]\n";
        text
    }
}

use prost::Message;
use sotto_ledger::block::{Block, ChainTip};
use sotto_ledger::clear::seal_copy;
use sotto_ledger::config::StorageMode;
use sotto_ledger::memory::MemoryLedger;
use sotto_ledger::packet::{
    packet_digest, tee_sign, ClearCopy, Endorsement, KvRead, KvWrite, Packet, Version,
    PACKET_FORMAT,
};
use sotto_ledger::tx::{Body, Invoke, MembershipUpdate, Transaction};
use sotto_ledger::LedgerConfig;
use sotto_tee::registry::{Membership, MEMBERSHIP_DOMAIN};

/// The compute group's measurement in these tests.
pub const MEASUREMENT: [u8; 32] = [0x5a; 32];
/// Block times start here (ms) and advance one second per block.
pub const START_MS: u64 = 1_764_547_200_000;

/// A ledger under test: the consortium, two compute enclaves, block 0 and
/// the orderer's chain tip.
pub struct World {
    pub consortium: Consortium,
    pub enclaves: Vec<IdentityKey>,
    pub genesis: Block,
    pub config: LedgerConfig,
    pub tip: ChainTip,
}

/// One invoke, with a knob for each thing a test may get wrong.
#[derive(Clone)]
pub struct TxSpec {
    pub tx_id: [u8; 16],
    pub client: usize,
    pub signing_client: usize,
    pub contract: String,
    pub version: u32,
    pub ledger: Option<[u8; 32]>,
    pub reads: Vec<([u8; 32], Option<Version>)>,
    pub writes: Vec<([u8; 32], Vec<u8>)>,
    /// Deletes: the key and the value the write carries (empty when
    /// well formed).
    pub deletes: Vec<([u8; 32], Vec<u8>)>,
    pub targets: Vec<String>,
    pub member: String,
    pub measurement: Vec<u8>,
    pub tee_signer: usize,
    pub expires_ms: u64,
    pub endorsers: Vec<usize>,
    pub endorsed_targets: Option<Vec<String>>,
    pub endorsed_digest: Option<[u8; 32]>,
    /// The clear copies the packet carries (none: one, correct, for each
    /// plaintext-mode target).
    pub clear_copies: Option<Vec<ClearCopy>>,
}

impl TxSpec {
    /// A credit-contract invoke by bank-a through enclave c1, endorsed by
    /// e1 and e2, for business node b1.
    pub fn credit(
        id: u8,
        reads: Vec<([u8; 32], Option<Version>)>,
        writes: Vec<([u8; 32], Vec<u8>)>,
    ) -> Self {
        Self {
            tx_id: [id; 16],
            client: 0,
            signing_client: 0,
            contract: "credit".into(),
            version: 1,
            ledger: None,
            reads,
            writes,
            deletes: Vec::new(),
            targets: vec!["b1".into()],
            member: "c1".into(),
            measurement: MEASUREMENT.to_vec(),
            tee_signer: 0,
            expires_ms: u64::MAX,
            endorsers: vec![0, 1],
            endorsed_targets: None,
            endorsed_digest: None,
            clear_copies: None,
        }
    }
}

/// A 32-byte key id for tests.
pub fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

impl World {
    /// A ledger with both enclaves already members (block 1).
    pub fn new() -> Self {
        let consortium = Consortium::new();
        let text = consortium.genesis();
        let config = LedgerConfig::parse("genesis.toml", &text).expect("valid genesis");
        let genesis = Block::genesis(&config, &text);
        let (_, tip) = genesis.open_genesis("block 0").expect("genesis");
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let enclaves = (0..2).map(|_| IdentityKey::generate(&mut rng)).collect();
        Self {
            consortium,
            enclaves,
            genesis,
            config,
            tip,
        }
    }

    /// A membership update signed by the center.
    pub fn membership(&self, version: u64, members: &[usize], measurement: &[u8]) -> Vec<u8> {
        let membership = Membership {
            version,
            measurement: Some(hex::encode(measurement)),
            members: members
                .iter()
                .map(|&i| {
                    (
                        format!("c{}", i + 1),
                        hex::encode(self.enclaves[i].public().to_bytes()),
                        "00".repeat(32),
                    )
                })
                .collect(),
            group_key_version: 1,
        };
        let bytes = membership.signed_bytes();
        let signature = self
            .consortium
            .center
            .sign(MEMBERSHIP_DOMAIN, &bytes)
            .to_vec();
        Transaction {
            body: Some(Body::Membership(MembershipUpdate {
                membership: bytes,
                signature,
            })),
        }
        .encode_to_vec()
    }

    /// The encoded packet of a spec.
    pub fn packet(&self, spec: &TxSpec) -> Vec<u8> {
        Packet {
            format: PACKET_FORMAT,
            ledger: spec.ledger.unwrap_or(self.tip.ledger).to_vec(),
            tx_id: spec.tx_id.to_vec(),
            client: format!("bank-{}", ["a", "b"][spec.client]),
            contract: spec.contract.clone(),
            contract_version: spec.version,
            reads: spec
                .reads
                .iter()
                .map(|(key, version)| KvRead {
                    key: key.to_vec(),
                    version: *version,
                })
                .collect(),
            writes: spec
                .writes
                .iter()
                .map(|(key, value)| KvWrite {
                    key: key.to_vec(),
                    value: value.clone(),
                    delete: false,
                })
                .chain(spec.deletes.iter().map(|(key, value)| KvWrite {
                    key: key.to_vec(),
                    value: value.clone(),
                    delete: true,
                }))
                .collect(),
            dek_version: 1,
            targets: spec.targets.clone(),
            request_digest: vec![1; 32],
            member: spec.member.clone(),
            measurement: spec.measurement.clone(),
            expires_ms: spec.expires_ms,
            clear_copies: spec
                .clear_copies
                .clone()
                .unwrap_or_else(|| self.clear_copies(spec)),
        }
        .encode_to_vec()
    }

    /// The identity key of business node `name` (b1 or b2).
    pub fn business_key(&self, name: &str) -> &IdentityKey {
        let index = usize::from(name == "b2");
        &self.consortium.business[index]
    }

    /// The clear copies an enclave would add: one for each plaintext-mode
    /// target, holding the spec's writes.
    pub fn clear_copies(&self, spec: &TxSpec) -> Vec<ClearCopy> {
        let mut rng = ChaCha20Rng::from_seed([spec.tx_id[0]; 32]);
        let writes: Vec<([u8; 32], &[u8])> = spec
            .writes
            .iter()
            .map(|(k, v)| (*k, v.as_slice()))
            .collect();
        spec.targets
            .iter()
            .filter(|t| {
                self.config
                    .business_node(t)
                    .is_some_and(|b| b.mode == StorageMode::Plaintext)
            })
            .map(|t| {
                let ledger = spec.ledger.unwrap_or(self.tip.ledger);
                seal_copy(
                    t,
                    &self.business_key(t).public(),
                    &ledger,
                    &spec.tx_id,
                    &writes,
                    &mut rng,
                )
                .expect("seal")
            })
            .collect()
    }

    /// Business node `name`'s ledger in memory, from block 0.
    pub fn node(&self, name: &str) -> MemoryLedger {
        MemoryLedger::open(&self.genesis, name, Some(self.business_key(name))).expect(name)
    }

    /// The encoded transaction of a spec.
    pub fn invoke(&self, spec: &TxSpec) -> Vec<u8> {
        let packet = self.packet(spec);
        let tee_signature = tee_sign(&self.enclaves[spec.tee_signer], &packet).to_vec();
        let digest = spec
            .endorsed_digest
            .unwrap_or_else(|| packet_digest(&packet));
        let targets = spec
            .endorsed_targets
            .clone()
            .unwrap_or_else(|| spec.targets.clone());
        let endorsements = spec
            .endorsers
            .iter()
            .map(|&i| {
                Endorsement::sign(
                    &self.consortium.endorsers[i],
                    &format!("e{}", i + 1),
                    digest,
                    &targets,
                )
            })
            .collect();
        let invoke = Invoke::sign(
            &self.consortium.clients[spec.signing_client],
            packet,
            tee_signature,
            endorsements,
        );
        Transaction {
            body: Some(Body::Invoke(invoke)),
        }
        .encode_to_vec()
    }

    /// Cuts the next block (orderer o1, one second after the last).
    pub fn cut(&mut self, transactions: Vec<Vec<u8>>) -> Block {
        let time = self.tip.time_ms.max(START_MS) + 1000;
        let block = Block::cut(
            &self.tip,
            "o1",
            &self.consortium.orderers[0],
            time,
            transactions,
        );
        self.tip = self
            .tip
            .check_next(&self.config, &block)
            .expect("the orderer's own block");
        block
    }
}
