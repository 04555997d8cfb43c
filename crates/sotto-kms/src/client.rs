//! A connection to the root KMS over mutual TLS, used by the participant
//! agent and by the operator's commands. Every answer that carries key
//! material is checked against the pinned KMS signing key. Recoveries share
//! one reply channel per client (and its clones), opened on first use and
//! again when it expires or the KMS no longer holds it.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::OsRng;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::identity::IdentityPublic;
use sotto_net::tls::{describe_transport, TlsMaterial};
use sotto_node::NodeHome;
use sotto_wire::kms::kms_client::KmsClient as Grpc;
use sotto_wire::kms::{
    AuditRequest, KeygenRequest, ListKeysRequest, OpenChannelRequest, PublicKeyRequest,
    RecoverRequest, RetireRequest, RewrapRequest, RotateRequest, SigningKeyRequest,
};
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::audit::AuditEntry;
use crate::engine::{parse_channel, parse_envelope};
use crate::escrow::Envelope;
use crate::keys::KeyInfo;
use crate::reply::{self, PublicKeyStatement};
use crate::reply_channel::{ChannelGrant, ChannelRequest, ReplyChannel};
use crate::KmsError;

/// The reply channel in use and until when the agent may use it.
struct OpenReplyChannel {
    channel: Arc<ReplyChannel>,
    until: Instant,
}

/// A connection to the KMS.
#[derive(Clone)]
pub struct KmsClient {
    grpc: Grpc<Channel>,
    label: String,
    me: String,
    reply: Arc<tokio::sync::Mutex<Option<OpenReplyChannel>>>,
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
        Ok(Self::new(Grpc::new(channel), label, home))
    }

    fn new(grpc: Grpc<Channel>, label: String, home: &NodeHome) -> Self {
        Self {
            grpc,
            label,
            me: home.name().to_string(),
            reply: Arc::default(),
        }
    }

    /// Like [`KmsClient::connect`], but connects on the first call (for
    /// commands that may not need the KMS at all).
    pub fn connect_lazy(home: &NodeHome, kms_name: &str, address: &str) -> Result<Self, KmsError> {
        let (endpoint, label) = Self::endpoint(home, kms_name, address)?;
        Ok(Self::new(Grpc::new(endpoint.connect_lazy()), label, home))
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
                reason: sotto_net::tls::describe_refused_call(status),
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

    /// Opens a reply channel: a fresh ephemeral key, the KMS's signed half
    /// checked with `signer`.
    async fn open_reply_channel(
        &mut self,
        signer: &IdentityPublic,
    ) -> Result<OpenReplyChannel, KmsError> {
        let request = ChannelRequest::new(&mut OsRng);
        let answer = self
            .grpc
            .open_channel(OpenChannelRequest {
                agent_key: request.public().to_vec(),
            })
            .await
            .map_err(|s| self.refused(&s))?
            .into_inner();
        let grant = ChannelGrant {
            channel: parse_channel(&answer.channel).map_err(|e| self.bad(e.to_string()))?,
            kms_key: answer
                .kms_key
                .as_slice()
                .try_into()
                .map_err(|_| self.bad("the channel's KMS key is not 32 bytes"))?,
            ttl_secs: answer.ttl_secs,
            signature: answer
                .signature
                .as_slice()
                .try_into()
                .map_err(|_| self.bad("the channel grant's signature has the wrong length"))?,
        };
        let (channel, lifetime) = request
            .accept(signer, &self.me, &grant)
            .map_err(|e| self.bad(e.to_string()))?;
        Ok(OpenReplyChannel {
            channel: Arc::new(channel),
            until: Instant::now() + lifetime,
        })
    }

    /// The reply channel to use now; `stale` names one the KMS refused.
    async fn reply_channel(
        &mut self,
        signer: &IdentityPublic,
        stale: Option<&ReplyChannel>,
    ) -> Result<Arc<ReplyChannel>, KmsError> {
        let slot = Arc::clone(&self.reply);
        let mut slot = slot.lock().await;
        if let Some(open) = slot.as_ref() {
            let refused = stale.is_some_and(|s| s.id() == open.channel.id());
            if !refused && Instant::now() < open.until {
                return Ok(Arc::clone(&open.channel));
            }
        }
        let open = self.open_reply_channel(signer).await?;
        let channel = Arc::clone(&open.channel);
        *slot = Some(open);
        Ok(channel)
    }

    /// Recovers an escrowed secret: the KMS's answer is opened with a fresh
    /// key of the reply channel and its signature checked with `signer`.
    /// A channel the KMS no longer holds is replaced once.
    pub async fn recover(
        &mut self,
        signer: &IdentityPublic,
        envelope: &Envelope,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let request = serde_json::to_vec(envelope).unwrap_or_default();
        let mut stale = None;
        loop {
            let channel = self.reply_channel(signer, stale.as_deref()).await?;
            let answer = self
                .grpc
                .recover(RecoverRequest {
                    envelope: request.clone(),
                    channel: channel.id().as_bytes().to_vec(),
                })
                .await;
            match answer {
                Err(s) if s.code() == tonic::Code::Aborted && stale.is_none() => {
                    stale = Some(channel);
                }
                Err(s) => return Err(self.refused(&s)),
                Ok(answer) => {
                    let answer = answer.into_inner();
                    return reply::open_recovered(
                        signer,
                        envelope,
                        &channel,
                        &answer.salt,
                        &answer.sealed,
                    )
                    .map_err(|e| self.bad(e.to_string()));
                }
            }
        }
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
