//! A connection to the root KMS over mutual TLS, used by the participant
//! agent and by the operator's commands. Every answer that carries key
//! material is checked against the pinned KMS signing key.

use rand::rngs::OsRng;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::identity::IdentityPublic;
use sotto_net::tls::{describe_transport, TlsMaterial};
use sotto_node::NodeHome;
use sotto_wire::kms::kms_client::KmsClient as Grpc;
use sotto_wire::kms::{
    AuditRequest, KeygenRequest, ListKeysRequest, PublicKeyRequest, RecoverRequest, RetireRequest,
    RewrapRequest, RotateRequest, SigningKeyRequest,
};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::audit::AuditEntry;
use crate::engine::parse_envelope;
use crate::escrow::Envelope;
use crate::keys::KeyInfo;
use crate::reply::{self, PublicKeyStatement};
use crate::KmsError;

/// A connection to the KMS.
#[derive(Clone)]
pub struct KmsClient {
    grpc: Grpc<Channel>,
    label: String,
}

impl KmsClient {
    /// Connects from `home` to the KMS node `kms_name` at `address`; the
    /// server must present a consortium certificate issued to that name.
    pub async fn connect(home: &NodeHome, kms_name: &str, address: &str) -> Result<Self, KmsError> {
        let (endpoint, label) = Self::endpoint(home, kms_name, address)?;
        let channel = endpoint.connect().await.map_err(|e| KmsError::Transport {
            peer: label.clone(),
            reason: describe_transport(&e),
        })?;
        Ok(Self {
            grpc: Grpc::new(channel),
            label,
        })
    }

    /// Like [`KmsClient::connect`], but connects on the first call (for
    /// commands that may not need the KMS at all).
    pub fn connect_lazy(home: &NodeHome, kms_name: &str, address: &str) -> Result<Self, KmsError> {
        let (endpoint, label) = Self::endpoint(home, kms_name, address)?;
        Ok(Self {
            grpc: Grpc::new(endpoint.connect_lazy()),
            label,
        })
    }

    fn endpoint(
        home: &NodeHome,
        kms_name: &str,
        address: &str,
    ) -> Result<(tonic::transport::Endpoint, String), KmsError> {
        let label = format!("KMS {kms_name} at {address}");
        let transport = |reason: String| KmsError::Transport {
            peer: label.clone(),
            reason,
        };
        let tls = TlsMaterial::load(home)?;
        tls.check_validity(time::OffsetDateTime::now_utc())?;
        let endpoint = Channel::from_shared(format!("https://{address}"))
            .map_err(|e| transport(e.to_string()))?
            .tls_config(tls.client_config(kms_name))
            .map_err(|e| transport(e.to_string()))?;
        Ok((endpoint, label))
    }

    /// Who this client talks to, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    fn refused(&self, status: &tonic::Status) -> KmsError {
        if status.code() == tonic::Code::Unavailable {
            return KmsError::Transport {
                peer: self.label.clone(),
                reason: match std::error::Error::source(status) {
                    Some(cause) => describe_transport(cause),
                    None => status.message().to_owned(),
                },
            };
        }
        KmsError::Refused {
            kms: self.label.clone(),
            reason: status.message().to_owned(),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> KmsError {
        KmsError::BadAnswer {
            kms: self.label.clone(),
            reason: reason.into(),
        }
    }

    /// The KMS signing key as the server states it (to pin on first use).
    pub async fn signing_key(&mut self) -> Result<IdentityPublic, KmsError> {
        let answer = self
            .grpc
            .signing_key(SigningKeyRequest {})
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        IdentityPublic::from_bytes(&answer.public_key).map_err(|e| self.bad(e.to_string()))
    }

    /// A key's public key (newest active version unless `version`), its
    /// statement verified with `signer`; `via_channel` has it sealed to an
    /// ephemeral key of this request.
    pub async fn public_key(
        &mut self,
        signer: &IdentityPublic,
        key_id: &str,
        version: Option<u32>,
        via_channel: bool,
    ) -> Result<PublicKeyStatement, KmsError> {
        let channel = via_channel.then(|| HpkeSecretKey::generate(&mut OsRng));
        let answer = self
            .grpc
            .public_key(PublicKeyRequest {
                key_id: key_id.to_owned(),
                version: version.unwrap_or(0),
                channel_key: channel
                    .as_ref()
                    .map(|(_, public)| public.to_bytes())
                    .unwrap_or_default(),
            })
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        let (json, signature) = match &channel {
            Some((secret, _)) => {
                reply::open_channel(secret, &answer.sealed).map_err(|e| self.bad(e))?
            }
            None => (answer.statement, answer.signature),
        };
        let statement =
            reply::verify_statement(signer, &json, &signature).map_err(|e| self.bad(e))?;
        if statement.key.key_id != key_id || version.is_some_and(|v| v != statement.key.version) {
            return Err(self.bad(format!(
                "asked for {key_id}, got a statement for {} v{}",
                statement.key.key_id, statement.key.version
            )));
        }
        Ok(statement)
    }

    /// Recovers an escrowed secret: the KMS's answer is opened with a fresh
    /// ephemeral key and its signature checked with `signer`.
    pub async fn recover(
        &mut self,
        signer: &IdentityPublic,
        envelope: &Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let (reply_key, reply_public) = HpkeSecretKey::generate(&mut OsRng);
        let answer = self
            .grpc
            .recover(RecoverRequest {
                envelope: serde_json::to_vec(envelope).unwrap_or_default(),
                reply_key: reply_public.to_bytes(),
            })
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        reply::open_recovered(signer, envelope, &reply_key, &answer.sealed).map_err(|e| self.bad(e))
    }

    /// Has the KMS re-seal an envelope to the newest versions of its keys.
    pub async fn rewrap(&mut self, envelope: &Envelope) -> Result<Envelope, KmsError> {
        let answer = self
            .grpc
            .rewrap(RewrapRequest {
                envelope: serde_json::to_vec(envelope).unwrap_or_default(),
            })
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        let rewrapped = parse_envelope(&answer.envelope).map_err(|e| self.bad(e.to_string()))?;
        if rewrapped.header != envelope.header || rewrapped.layers.len() != envelope.layers.len() {
            return Err(self.bad("the rewrapped envelope is for another secret"));
        }
        Ok(rewrapped)
    }

    fn key_info(&self, json: &[u8]) -> Result<KeyInfo, KmsError> {
        serde_json::from_slice(json).map_err(|e| self.bad(format!("key info: {e}")))
    }

    /// Operator: creates a key pair.
    pub async fn keygen(&mut self, owner: &str, purpose: &str) -> Result<KeyInfo, KmsError> {
        let answer = self
            .grpc
            .keygen(KeygenRequest {
                owner: owner.to_owned(),
                purpose: purpose.to_owned(),
            })
            .await
            .map_err(|s| self.refused(&s))?;
        self.key_info(&answer.into_inner().json)
    }

    /// Operator: adds a version to a key pair.
    pub async fn rotate(&mut self, key_id: &str) -> Result<KeyInfo, KmsError> {
        let answer = self
            .grpc
            .rotate(RotateRequest {
                key_id: key_id.to_owned(),
            })
            .await
            .map_err(|s| self.refused(&s))?;
        self.key_info(&answer.into_inner().json)
    }

    /// Operator: retires a key version.
    pub async fn retire(&mut self, key_id: &str, version: u32) -> Result<KeyInfo, KmsError> {
        let answer = self
            .grpc
            .retire(RetireRequest {
                key_id: key_id.to_owned(),
                version,
            })
            .await
            .map_err(|s| self.refused(&s))?;
        self.key_info(&answer.into_inner().json)
    }

    /// Operator: every key pair version.
    pub async fn list_keys(&mut self) -> Result<Vec<KeyInfo>, KmsError> {
        let answer = self
            .grpc
            .list_keys(ListKeysRequest {})
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        answer.keys.iter().map(|k| self.key_info(&k.json)).collect()
    }

    /// Operator: the audit log.
    pub async fn audit(&mut self) -> Result<Vec<AuditEntry>, KmsError> {
        let answer = self
            .grpc
            .audit(AuditRequest {})
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        answer
            .entries
            .iter()
            .enumerate()
            .map(|(i, json)| {
                serde_json::from_slice(json).map_err(|e| self.bad(format!("audit entry {i}: {e}")))
            })
            .collect()
    }
}
