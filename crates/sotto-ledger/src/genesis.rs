//! The genesis file: the consortium's ledger configuration in TOML, checked
//! field by field with file, line and column in every error, into a
//! [`LedgerConfig`]. Block 0 carries the file's text verbatim, so every node
//! reads the same configuration from the chain itself.

use std::collections::BTreeSet;
use std::ops::Range;
use std::str::FromStr;

use serde::Deserialize;
use sotto_crypto::identity::IdentityPublic;
use sotto_node::NodeName;
use toml::Spanned;

use crate::config::{
    BlockCutting, BusinessNode, ContractConfig, LedgerConfig, Member, StorageMode, MAX_ENDORSERS,
};
use crate::policy::Policy;

/// The genesis format this build reads.
pub const GENESIS_FORMAT: u32 = 1;

/// Why a genesis file was refused. Every variant says where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {reason}")]
pub struct GenesisError {
    /// The file (as given).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
    /// What is wrong and what to write instead.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGenesis {
    format: Spanned<u32>,
    name: Spanned<String>,
    created: u64,
    ca_sha256: Spanned<String>,
    center: RawMember,
    #[serde(default)]
    enclave: RawEnclave,
    #[serde(default)]
    blocks: RawBlocks,
    #[serde(default)]
    orderer: Vec<RawNode>,
    #[serde(default)]
    endorser: Vec<RawNode>,
    #[serde(default)]
    business: Vec<RawNode>,
    #[serde(default)]
    client: Vec<RawNode>,
    #[serde(default)]
    contract: Vec<RawContract>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: Spanned<String>,
    identity: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEnclave {
    measurement: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlocks {
    #[serde(default = "default_max_transactions")]
    max_transactions: Spanned<u32>,
    #[serde(default = "default_max_bytes")]
    max_bytes: Spanned<u32>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: Spanned<u32>,
}

impl Default for RawBlocks {
    fn default() -> Self {
        Self {
            max_transactions: default_max_transactions(),
            max_bytes: default_max_bytes(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

fn default_max_transactions() -> Spanned<u32> {
    Spanned::new(0..0, BlockCutting::DEFAULT.max_transactions)
}

fn default_max_bytes() -> Spanned<u32> {
    Spanned::new(0..0, BlockCutting::DEFAULT.max_bytes)
}

fn default_timeout_ms() -> Spanned<u32> {
    Spanned::new(0..0, BlockCutting::DEFAULT.timeout_ms)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    org: Spanned<String>,
    identity: Spanned<String>,
    address: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    name: Spanned<String>,
    version: Spanned<u32>,
    policy: Spanned<String>,
    callers: Spanned<Vec<String>>,
}

/// Turns byte spans of one text into line and column.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn at(&self, span: Range<usize>, reason: impl Into<String>) -> GenesisError {
        let start = span.start.min(self.text.len());
        let before = self.text.get(..start).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        GenesisError {
            file: self.file.to_owned(),
            line,
            column,
            reason: reason.into(),
        }
    }

    fn name(&self, raw: &Spanned<String>) -> Result<NodeName, GenesisError> {
        NodeName::from_str(raw.get_ref()).map_err(|e| self.at(raw.span(), e.to_string()))
    }

    fn identity(&self, raw: &Spanned<String>) -> Result<IdentityPublic, GenesisError> {
        let bytes = hex::decode(raw.get_ref()).map_err(|e| {
            self.at(
                raw.span(),
                format!("the identity key must be 64 hex digits: {e}"),
            )
        })?;
        IdentityPublic::from_bytes(&bytes).map_err(|e| {
            self.at(
                raw.span(),
                format!(
                    "not an Ed25519 identity public key ({e}); copy it from the node's profile"
                ),
            )
        })
    }
}

impl LedgerConfig {
    /// Parses and checks genesis text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, GenesisError> {
        let at = Locator { file, text };
        let raw: RawGenesis = toml::from_str(text)
            .map_err(|e| at.at(e.span().unwrap_or(0..0), e.message().trim_end().to_owned()))?;
        if *raw.format.get_ref() != GENESIS_FORMAT {
            return Err(at.at(
                raw.format.span(),
                format!(
                    "genesis format {} is not the one this build reads ({GENESIS_FORMAT})",
                    raw.format.get_ref()
                ),
            ));
        }
        let ca = hex::decode(raw.ca_sha256.get_ref())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                at.at(
                    raw.ca_sha256.span(),
                    "ca_sha256 must be the SHA-256 of the consortium CA certificate (64 hex digits)",
                )
            })?;
        let center = Member {
            name: at.name(&raw.center.name)?,
            org: at.name(&raw.center.name)?,
            identity: at.identity(&raw.center.identity)?,
            address: None,
        };
        let measurement = match &raw.enclave.measurement {
            Some(m) => Some(
                hex::decode(m.get_ref())
                    .map_err(|e| at.at(m.span(), format!("the measurement must be hex: {e}")))?,
            ),
            None => None,
        };
        let mut names = Names::default();
        names.claim(&at, &raw.center.name)?;
        let orderers = nodes(&at, &mut names, &raw.orderer, "orderer", true)?;
        let endorsers = nodes(&at, &mut names, &raw.endorser, "endorser", true)?;
        check_endorser_names(&at, &raw.endorser)?;
        let business = business_nodes(&at, &mut names, &raw.business)?;
        let clients = nodes(&at, &mut names, &raw.client, "client", false)?;
        for (what, count) in [
            ("orderer", orderers.len()),
            ("endorser", endorsers.len()),
            ("business", business.len()),
        ] {
            if count == 0 {
                return Err(at.at(0..0, format!("declare at least one [[{what}]]")));
            }
        }
        let config = Self {
            name: at.name(&raw.name)?.to_string(),
            created: raw.created,
            ca_sha256: ca,
            center,
            measurement,
            blocks: block_cutting(&at, &raw.blocks)?,
            orderers,
            endorsers,
            business,
            clients,
            contracts: Vec::new(),
        };
        let contracts = raw
            .contract
            .iter()
            .map(|c| contract(&at, &config, c))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = BTreeSet::new();
        for (raw, c) in raw.contract.iter().zip(&contracts) {
            if !seen.insert(c.name.clone()) {
                return Err(at.at(
                    raw.name.span(),
                    format!("contract {} is declared twice", c.name),
                ));
            }
        }
        Ok(Self {
            contracts,
            ..config
        })
    }
}

/// A policy principal names an endorser or an organisation; an endorser
/// named like another endorser's organisation would make it ambiguous.
fn check_endorser_names(at: &Locator<'_>, raw: &[RawNode]) -> Result<(), GenesisError> {
    if raw.len() > MAX_ENDORSERS {
        return Err(at.at(
            raw.get(MAX_ENDORSERS).map_or(0..0, |n| n.name.span()),
            format!("a ledger has at most {MAX_ENDORSERS} endorsers"),
        ));
    }
    for node in raw {
        let clash = raw.iter().find(|other| {
            other.name.get_ref() != node.name.get_ref()
                && other.org.get_ref() == node.name.get_ref()
        });
        if let Some(other) = clash {
            return Err(at.at(
                node.name.span(),
                format!(
                    "endorser {} is named like the organisation of endorser {}; a policy could not tell them apart",
                    node.name.get_ref(),
                    other.name.get_ref()
                ),
            ));
        }
    }
    Ok(())
}

/// Node names seen so far: a name identifies one node.
#[derive(Default)]
struct Names(BTreeSet<String>);

impl Names {
    fn claim(&mut self, at: &Locator<'_>, name: &Spanned<String>) -> Result<(), GenesisError> {
        if self.0.insert(name.get_ref().clone()) {
            Ok(())
        } else {
            Err(at.at(
                name.span(),
                format!("{} names two nodes; names must be unique", name.get_ref()),
            ))
        }
    }
}

fn nodes(
    at: &Locator<'_>,
    names: &mut Names,
    raw: &[RawNode],
    what: &str,
    needs_address: bool,
) -> Result<Vec<Member>, GenesisError> {
    raw.iter()
        .map(|node| {
            names.claim(at, &node.name)?;
            if let Some(mode) = &node.mode {
                return Err(at.at(
                    mode.span(),
                    format!("only [[business]] nodes have a storage mode, not an {what}"),
                ));
            }
            let address = match (&node.address, needs_address) {
                (Some(a), _) => Some(address(at, a)?),
                (None, true) => {
                    return Err(at.at(
                        node.name.span(),
                        format!(
                            "{what} {} needs an address (host:port)",
                            node.name.get_ref()
                        ),
                    ))
                }
                (None, false) => None,
            };
            Ok(Member {
                name: at.name(&node.name)?,
                org: at.name(&node.org)?,
                identity: at.identity(&node.identity)?,
                address,
            })
        })
        .collect()
}

fn address(at: &Locator<'_>, raw: &Spanned<String>) -> Result<String, GenesisError> {
    let text = raw.get_ref();
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(text.clone())
        }
        _ => Err(at.at(
            raw.span(),
            format!("{text:?} is not host:port (for example 127.0.0.1:7051)"),
        )),
    }
}

fn business_nodes(
    at: &Locator<'_>,
    names: &mut Names,
    raw: &[RawNode],
) -> Result<Vec<BusinessNode>, GenesisError> {
    raw.iter()
        .map(|node| {
            let mode = match &node.mode {
                Some(m) => m
                    .get_ref()
                    .parse::<StorageMode>()
                    .map_err(|e| at.at(m.span(), e))?,
                None => {
                    return Err(at.at(
                        node.name.span(),
                        format!(
                            "business node {} needs mode = \"ciphertext\" or \"plaintext\"",
                            node.name.get_ref()
                        ),
                    ))
                }
            };
            let plain = RawNode {
                name: node.name.clone(),
                org: node.org.clone(),
                identity: node.identity.clone(),
                address: node.address.clone(),
                mode: None,
            };
            let member = nodes(
                at,
                names,
                std::slice::from_ref(&plain),
                "business node",
                true,
            )?
            .pop()
            .ok_or_else(|| at.at(node.name.span(), "business node missing"))?;
            Ok(BusinessNode { member, mode })
        })
        .collect()
}

fn block_cutting(at: &Locator<'_>, raw: &RawBlocks) -> Result<BlockCutting, GenesisError> {
    let check = |value: &Spanned<u32>, field: &str, range: Range<u32>| {
        if range.contains(value.get_ref()) {
            Ok(*value.get_ref())
        } else {
            Err(at.at(
                value.span(),
                format!(
                    "blocks.{field} = {} is outside {}..={}",
                    value.get_ref(),
                    range.start,
                    range.end - 1
                ),
            ))
        }
    };
    Ok(BlockCutting {
        max_transactions: check(&raw.max_transactions, "max_transactions", 1..100_001)?,
        max_bytes: check(
            &raw.max_bytes,
            "max_bytes",
            1024..BlockCutting::MAX_BYTES + 1,
        )?,
        timeout_ms: check(&raw.timeout_ms, "timeout_ms", 1..60_001)?,
    })
}

fn contract(
    at: &Locator<'_>,
    config: &LedgerConfig,
    raw: &RawContract,
) -> Result<ContractConfig, GenesisError> {
    let name = at.name(&raw.name)?;
    if *raw.version.get_ref() == 0 {
        return Err(at.at(raw.version.span(), "contract versions start at 1"));
    }
    // The policy text starts one character after the opening quote.
    let policy_start = raw.policy.span().start + 1;
    let policy: Policy =
        raw.policy
            .get_ref()
            .parse()
            .map_err(|e: crate::policy::PolicyError| {
                at.at(
                    policy_start + e.column - 1..policy_start,
                    format!("policy: {}", e.reason),
                )
            })?;
    for principal in policy.principals() {
        if config.endorsers_of(principal) == 0 {
            let offset = raw
                .policy
                .get_ref()
                .find(&format!("'{principal}'"))
                .unwrap_or(0);
            return Err(at.at(
                policy_start + offset..policy_start,
                format!("policy: '{principal}' is neither an endorser nor an organisation with endorsers"),
            ));
        }
    }
    if !policy.satisfied_by(&|p| config.endorsers_of(p), u64::MAX) {
        return Err(at.at(
            raw.policy.span(),
            "policy: not even every endorser together can satisfy it",
        ));
    }
    let mut callers = Vec::new();
    for caller in raw.callers.get_ref() {
        let known = config.clients.iter().find(|c| c.name.as_str() == caller);
        match known {
            Some(c) if !callers.contains(&c.name) => callers.push(c.name.clone()),
            Some(_) => {
                return Err(at.at(
                    raw.callers.span(),
                    format!("caller {caller} is listed twice"),
                ))
            }
            None => {
                return Err(at.at(
                    raw.callers.span(),
                    format!("caller {caller} is not a [[client]]"),
                ))
            }
        }
    }
    Ok(ContractConfig {
        name,
        version: *raw.version.get_ref(),
        policy,
        callers,
    })
}
