//! The enclave group as an inference party follows it: the center's signed
//! membership (who may ask, who may answer) and the partials keys derived
//! from each group key version, read again from the registration center at
//! every membership change it announces.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sotto_crypto::identity::IdentityPublic;
use sotto_crypto::kdf::hkdf_key;
use sotto_crypto::secret::SecretBytes;
use sotto_node::{NodeHome, NodeName};
use sotto_tee::online::node::CenterClient;
use sotto_tee::online::OnlineError;
use tokio::sync::watch;

use crate::inference::partials_key;
use crate::split::IdTagger;

/// How long to wait before opening the center's stream again once it broke.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// The group as last read from the center.
#[derive(Clone, Debug)]
pub struct GroupView {
    /// The membership's version.
    pub version: u64,
    /// Active members: name → identity key (hex).
    pub members: HashMap<String, String>,
    /// The current group key version.
    pub key_version: u64,
    /// Partials keys by group key version (those this node could open).
    pub keys: HashMap<u64, SecretBytes<32>>,
}

impl GroupView {
    /// Whether `name` is an active member with `identity`.
    pub fn is_member(&self, name: &str, identity: &IdentityPublic) -> bool {
        self.members
            .get(name)
            .is_some_and(|hex_key| *hex_key == hex::encode(identity.to_bytes()))
    }

    /// Admits `name` (its certificate's `identity`) when it is one of
    /// `allowed` and a current member with that identity; else says why.
    pub fn admit(
        &self,
        allowed: &[String],
        name: &str,
        identity: &IdentityPublic,
    ) -> Result<(), String> {
        if !allowed.iter().any(|a| a == name) {
            return Err(format!(
                "{name} is not an inference enclave this provider serves (gateways: {})",
                allowed.join(", ")
            ));
        }
        if !self.is_member(name, identity) {
            return Err(format!(
                "{name} is not a current member of the enclave group (membership v{}): revoked, or never registered",
                self.version
            ));
        }
        Ok(())
    }

    /// The current key version and its partials key, when held.
    pub fn current_key(&self) -> Option<(u64, &SecretBytes<32>)> {
        self.keys
            .get(&self.key_version)
            .map(|k| (self.key_version, k))
    }
}

/// The dataset's tag key, from group key version 1 (every member derives
/// the same one; see docs/share.md).
pub async fn tagger(home: &NodeHome, center: &mut CenterClient) -> Result<IdTagger, OnlineError> {
    let (_, group_key) = center.group_key_version(home, 1).await?;
    Ok(IdTagger::new(hkdf_key(
        None,
        &group_key,
        b"sotto/share/tag-key/v1",
    )))
}

/// Reads the group once: membership and the current group key (when this
/// node is a member).
async fn read(
    home: &NodeHome,
    center: &mut CenterClient,
    previous: &GroupView,
) -> Result<GroupView, OnlineError> {
    let membership = center.members().await?;
    let mut keys = previous.keys.clone();
    let me = home.name().as_str();
    let member = membership.members.iter().any(|(name, _, _)| name == me);
    if member && !keys.contains_key(&membership.group_key_version) {
        let (version, key) = center
            .group_key_version(home, membership.group_key_version)
            .await?;
        keys.insert(version, partials_key(&key));
    }
    Ok(GroupView {
        version: membership.version,
        members: membership
            .members
            .into_iter()
            .map(|(name, identity, _)| (name, identity))
            .collect(),
        key_version: membership.group_key_version,
        keys,
    })
}

/// Reads the group from the center at `address` and keeps following it in
/// a background task, driven by the center's stream of membership changes
/// (a revocation reaches the view as soon as the center signs it); the
/// receiver always holds the last view read. A broken stream keeps the
/// previous view, is logged, and is opened again after [`RECONNECT_DELAY`].
pub async fn follow(
    home: NodeHome,
    center: NodeName,
    address: String,
) -> Result<watch::Receiver<Arc<GroupView>>, OnlineError> {
    let mut client = CenterClient::connect(&home, center.clone(), &address).await?;
    let empty = GroupView {
        version: 0,
        members: HashMap::new(),
        key_version: 0,
        keys: HashMap::new(),
    };
    let first = read(&home, &mut client, &empty).await?;
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        while !tx.is_closed() {
            if let Err(e) = follow_changes(&home, &center, &address, &tx).await {
                tracing::warn!("following the group at {center} ({address}): {e}");
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    });
    Ok(rx)
}

/// Reads the group again (keys included) at every membership change the
/// center announces, until the stream breaks.
async fn follow_changes(
    home: &NodeHome,
    center: &NodeName,
    address: &str,
    tx: &watch::Sender<Arc<GroupView>>,
) -> Result<(), OnlineError> {
    let mut watcher = CenterClient::connect(home, center.clone(), address).await?;
    let mut reader = CenterClient::connect(home, center.clone(), address).await?;
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let announcing = watcher.watch(usize::MAX, |m| {
        let _ = changed.send(m.version);
    });
    let reading = async {
        while let Some(version) = changes.recv().await {
            let previous = Arc::clone(&tx.borrow());
            if version != previous.version {
                tx.send_replace(Arc::new(read(home, &mut reader, &previous).await?));
            }
        }
        Ok(())
    };
    tokio::select! {
        watched = announcing => watched,
        read = reading => read,
    }
}

#[cfg(test)]
mod tests {
    use sotto_crypto::identity::IdentityKey;

    use super::*;

    fn view(members: &[(&str, &IdentityKey)]) -> GroupView {
        GroupView {
            version: 7,
            members: members
                .iter()
                .map(|(n, k)| ((*n).to_owned(), hex::encode(k.public().to_bytes())))
                .collect(),
            key_version: 2,
            keys: HashMap::new(),
        }
    }

    #[test]
    fn only_a_named_gateway_that_is_a_current_member_is_admitted() {
        let mut rng = rand::rngs::OsRng;
        let gateway = IdentityKey::generate(&mut rng);
        let lender = IdentityKey::generate(&mut rng);
        let allowed = vec!["gateway".to_owned()];
        let group = view(&[("gateway", &gateway), ("lender", &lender)]);
        assert_eq!(group.admit(&allowed, "gateway", &gateway.public()), Ok(()));
        assert_eq!(
            group.admit(&allowed, "lender", &lender.public()),
            Err(
                "lender is not an inference enclave this provider serves (gateways: gateway)"
                    .into()
            )
        );
        let revoked = view(&[("lender", &lender)]);
        assert_eq!(
            revoked.admit(&allowed, "gateway", &gateway.public()),
            Err("gateway is not a current member of the enclave group (membership v7): revoked, or never registered".into())
        );
        assert!(
            group.admit(&allowed, "gateway", &lender.public()).is_err(),
            "another key under the gateway's name"
        );
    }
}
