//! A node's side of the registry: its HPKE key in its home, registration
//! with evidence from its enclave bound to the center's nonce, the signed
//! membership, and group keys opened with its HPKE key.

use std::path::PathBuf;

use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::identity::IdentityPublic;
use sotto_net::tls::TlsMaterial;
use sotto_node::files::{write_atomic, Visibility};
use sotto_node::{NodeHome, NodeName};
use sotto_wire::tee::registry_client::RegistryClient;
use sotto_wire::tee::{
    ChallengeRequest, GroupKeyRequest, LeaveRequest, MembersRequest, MembershipUpdate,
    RegisterRequest, RevokeRequest,
};
use tonic::transport::Channel;

use super::center::open_update;
use super::OnlineError;
use crate::enclave::Enclave;
use crate::registry::{group_key_aad, registration_report_data, Membership, GROUP_KEY_INFO};

const HPKE_KEY_FILE: &str = "tee-hpke.key";

/// Evidence as a node sends it to the center: which verifier reads it
/// (`software`, `dcap` for SGX and TDX quotes, `sev-snp`) and the bytes each
/// needs.
#[derive(Clone, Debug, Default)]
pub struct EvidenceBundle {
    /// The kind of evidence.
    pub kind: String,
    /// The evidence itself (software evidence, quote, or report).
    pub evidence: Vec<u8>,
    /// DCAP collateral (JSON), for quotes.
    pub collateral: Vec<u8>,
    /// The VCEK certificate (DER), for SEV-SNP.
    pub vcek: Vec<u8>,
    /// The ARK/ASK chain (PEM), for SEV-SNP.
    pub ark_ask: Vec<u8>,
}

/// A connection to the center.
pub struct CenterClient {
    client: RegistryClient<Channel>,
    center: NodeName,
    center_key: IdentityPublic,
    label: String,
}

fn hpke_key_path(home: &NodeHome) -> PathBuf {
    home.dir().join(HPKE_KEY_FILE)
}

/// This node's HPKE key, created (mode 0600) on first use.
pub fn hpke_key(home: &NodeHome) -> Result<HpkeSecretKey, OnlineError> {
    let path = hpke_key_path(home);
    if path.exists() {
        let bytes = zeroize::Zeroizing::new(sotto_node::files::read(&path)?);
        return Ok(
            HpkeSecretKey::from_bytes(&bytes).map_err(|e| crate::TeeError::Malformed {
                what: "HPKE key file",
                reason: e.to_string(),
            })?,
        );
    }
    let (key, _) = HpkeSecretKey::generate(&mut rand::rngs::OsRng);
    write_atomic(&path, key.to_bytes().as_slice(), Visibility::Private)?;
    Ok(key)
}

impl CenterClient {
    /// Connects to the center `center` (a pinned peer) at `address`.
    pub async fn connect(
        home: &NodeHome,
        center: NodeName,
        address: &str,
    ) -> Result<Self, OnlineError> {
        let label = format!("registration center {center} (at {address})");
        let transport = |reason: String| OnlineError::Transport {
            peer: label.clone(),
            reason,
        };
        let center_key = if *home.name() == center {
            home.identity().public()
        } else {
            home.peer(&center)?.identity
        };
        let tls = TlsMaterial::load(home)?;
        tls.check_validity(time::OffsetDateTime::now_utc())?;
        let channel = Channel::from_shared(format!("https://{address}"))
            .map_err(|e| transport(e.to_string()))?
            .tls_config(tls.client_config(center.as_str()))
            .map_err(|e| transport(e.to_string()))?
            .connect()
            .await
            .map_err(|e| transport(sotto_net::tls::describe_transport(&e)))?;
        Ok(Self {
            client: RegistryClient::new(channel),
            center,
            center_key,
            label,
        })
    }

    fn refused(&self, status: &tonic::Status) -> OnlineError {
        OnlineError::Refused {
            center: self.label.clone(),
            reason: sotto_net::tls::describe_refused_call(status),
        }
    }

    fn open(&self, update: &MembershipUpdate) -> Result<Membership, OnlineError> {
        open_update(update, &self.center_key).map_err(|reason| OnlineError::BadAnswer {
            center: self.center.to_string(),
            reason,
        })
    }

    /// Registers with evidence from `enclave` binding the center's nonce and
    /// this node's identity and HPKE keys.
    pub async fn register(
        &mut self,
        home: &NodeHome,
        enclave: &dyn Enclave,
    ) -> Result<Membership, OnlineError> {
        self.register_with(home, |data| {
            Ok(EvidenceBundle {
                kind: "software".into(),
                evidence: enclave.evidence(data)?,
                ..EvidenceBundle::default()
            })
        })
        .await
    }

    /// Registers with the evidence `make` produces for the 64 bytes of
    /// report data that bind the center's nonce and this node's keys.
    pub async fn register_with(
        &mut self,
        home: &NodeHome,
        make: impl FnOnce(&[u8; 64]) -> Result<EvidenceBundle, OnlineError>,
    ) -> Result<Membership, OnlineError> {
        let hpke = hpke_key(home)?.public();
        let challenge = self
            .client
            .challenge(ChallengeRequest {})
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        let nonce: [u8; 32] =
            challenge
                .nonce
                .as_slice()
                .try_into()
                .map_err(|_| OnlineError::BadAnswer {
                    center: self.center.to_string(),
                    reason: "the nonce is not 32 bytes".into(),
                })?;
        let data = registration_report_data(
            &nonce,
            home.name().as_str(),
            &home.identity().public(),
            &hpke,
        );
        let bundle = make(&data)?;
        let update = self
            .client
            .register(RegisterRequest {
                nonce: nonce.to_vec(),
                hpke_public: hpke.to_bytes(),
                kind: bundle.kind,
                evidence: bundle.evidence,
                collateral: bundle.collateral,
                vcek: bundle.vcek,
                ark_ask: bundle.ark_ask,
            })
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        self.open(&update)
    }

    /// The membership, checked against the center's pinned key.
    pub async fn members(&mut self) -> Result<Membership, OnlineError> {
        Ok(self.members_signed().await?.0)
    }

    /// The membership, checked against the center's pinned key, with the
    /// update as the center signed it.
    pub async fn members_signed(&mut self) -> Result<(Membership, MembershipUpdate), OnlineError> {
        let update = self
            .client
            .members(MembersRequest {})
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        Ok((self.open(&update)?, update))
    }

    /// Calls `each` with the membership now and after each change, `count`
    /// times in all.
    pub async fn watch(
        &mut self,
        count: usize,
        mut each: impl FnMut(&Membership),
    ) -> Result<(), OnlineError> {
        self.watch_signed(count, |m, _| each(m)).await
    }

    /// Like [`Self::watch`], with the update as the center signed it (for
    /// passing on to others who check the center's signature themselves).
    pub async fn watch_signed(
        &mut self,
        count: usize,
        mut each: impl FnMut(&Membership, &MembershipUpdate),
    ) -> Result<(), OnlineError> {
        let mut stream = self
            .client
            .watch(MembersRequest {})
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        for _ in 0..count {
            match stream.message().await {
                Ok(Some(update)) => each(&self.open(&update)?, &update),
                Ok(None) => break,
                Err(s) => return Err(self.refused(&s)),
            }
        }
        Ok(())
    }

    /// The current group key (version, key), opened with this node's HPKE
    /// key.
    pub async fn group_key(
        &mut self,
        home: &NodeHome,
    ) -> Result<(u64, zeroize::Zeroizing<Vec<u8>>), OnlineError> {
        self.group_key_version(home, 0).await
    }

    /// Group key `version` (0: the current one), opened with this node's
    /// HPKE key.
    pub async fn group_key_version(
        &mut self,
        home: &NodeHome,
        version: u64,
    ) -> Result<(u64, zeroize::Zeroizing<Vec<u8>>), OnlineError> {
        let response = self
            .client
            .group_key(GroupKeyRequest { version })
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        if version != 0 && response.version != version {
            return Err(OnlineError::BadAnswer {
                center: self.center.to_string(),
                reason: format!("asked for group key v{version}, got v{}", response.version),
            });
        }
        let aad = group_key_aad(response.version, home.name().as_str());
        let key = hpke_key(home)?
            .open(GROUP_KEY_INFO, &aad, &response.sealed)
            .map_err(|e| OnlineError::BadAnswer {
                center: self.center.to_string(),
                reason: format!("the sealed group key does not open: {e}"),
            })?;
        Ok((response.version, zeroize::Zeroizing::new(key)))
    }

    /// Leaves the group.
    pub async fn leave(&mut self) -> Result<Membership, OnlineError> {
        let update = self
            .client
            .leave(LeaveRequest {})
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        self.open(&update)
    }

    /// Revokes `node` (the center's operator only).
    pub async fn revoke(&mut self, node: &str) -> Result<Membership, OnlineError> {
        let update = self
            .client
            .revoke(RevokeRequest {
                node: node.to_owned(),
            })
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        self.open(&update)
    }
}
