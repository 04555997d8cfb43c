//! The gateway's outside users (a TOML file the consortium keeps): each
//! user is admitted by an API token (only its SHA-256 is kept) or by a
//! client certificate from the consortium CA naming the user.

use std::path::Path;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_crypto::hash::sha256;
use subtle::ConstantTimeEq;

/// The users file format this build reads.
pub const USERS_FORMAT: u32 = 1;

/// Why a users file or a credential was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    /// The file is not the expected TOML.
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// What the parser said (line and column).
        reason: String,
    },
    /// A user entry is unusable.
    #[error("{path}: user {name:?}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The user.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The request carries neither a token nor a client certificate.
    #[error("no credentials: send `Authorization: Bearer TOKEN` or a client certificate from the consortium CA")]
    NoCredentials,
    /// The token is not one the consortium issued.
    #[error("the API token is not valid")]
    BadToken,
    /// The client certificate names nobody admitted by certificate.
    #[error("the client certificate names {0}, who is not a user admitted by certificate")]
    UnknownCertificate(String),
}

/// One user.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user's name (recorded on the ledger with each query).
    pub name: String,
    /// SHA-256 of the user's API token (hex), when admitted by token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// Whether a client certificate naming the user admits it.
    #[serde(default)]
    pub certificate: bool,
    /// Requests per second this user may make (the gateway's default when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
    /// Requests this user may make at once (the gateway's default when
    /// absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// The users file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// File format.
    pub format: u32,
    /// The users.
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
}

impl Users {
    /// No users yet.
    pub fn empty() -> Self {
        Self {
            format: USERS_FORMAT,
            users: Vec::new(),
        }
    }

    /// Parses and checks a users file's text.
    pub fn parse(path: &Path, text: &str) -> Result<Self, UsersError> {
        let shown = path.display().to_string();
        let users: Users = toml::from_str(text).map_err(|e| UsersError::Syntax {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        if users.format != USERS_FORMAT {
            return Err(UsersError::Syntax {
                path: shown,
                reason: format!(
                    "format {} is not supported (this build reads {USERS_FORMAT})",
                    users.format
                ),
            });
        }
        for (i, user) in users.users.iter().enumerate() {
            let invalid = |reason: &str| UsersError::Invalid {
                path: shown.clone(),
                name: user.name.clone(),
                reason: reason.to_owned(),
            };
            crate::dataset::check_name("user", &user.name).map_err(|e| invalid(&e))?;
            if users.users[..i].iter().any(|u| u.name == user.name) {
                return Err(invalid("listed twice"));
            }
            match &user.token_sha256 {
                Some(h) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    return Err(invalid("token_sha256 is 64 hex digits"))
                }
                None if !user.certificate => {
                    return Err(invalid(
                        "admits nothing: give token_sha256 or certificate = true",
                    ))
                }
                _ => {}
            }
        }
        Ok(users)
    }

    /// The text of the file.
    pub fn to_text(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("the users file does not serialize: {e}"))
    }

    /// Adds `name` admitted by a fresh API token; returns the token (shown
    /// once; only its hash is kept).
    pub fn add_token_user<R: RngCore + CryptoRng>(
        &mut self,
        user: User,
        rng: &mut R,
    ) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let token = format!("sotto_{}", hex::encode(bytes));
        self.add(User {
            token_sha256: Some(hex::encode(sha256(token.as_bytes()))),
            ..user
        })?;
        Ok(token)
    }

    /// Adds `user` (a fresh name).
    pub fn add(&mut self, user: User) -> Result<(), String> {
        crate::dataset::check_name("user", &user.name)?;
        if self.users.iter().any(|u| u.name == user.name) {
            return Err(format!(
                "user {} already exists; pick another name",
                user.name
            ));
        }
        self.users.push(user);
        Ok(())
    }

    /// The user a request's credentials admit: the bearer token when one
    /// is sent, else the client certificate's name.
    pub fn authenticate(
        &self,
        token: Option<&str>,
        certificate_name: Option<&str>,
    ) -> Result<&User, UsersError> {
        if let Some(token) = token {
            let presented = sha256(token.trim().as_bytes());
            let mut found = None;
            for user in &self.users {
                let Some(Ok(kept)) = user.token_sha256.as_deref().map(hex::decode) else {
                    continue;
                };
                if bool::from(kept.as_slice().ct_eq(presented.as_slice())) {
                    found = Some(user);
                }
            }
            return found.ok_or(UsersError::BadToken);
        }
        let name = certificate_name.ok_or(UsersError::NoCredentials)?;
        self.users
            .iter()
            .find(|u| u.certificate && u.name == name)
            .ok_or_else(|| UsersError::UnknownCertificate(name.to_owned()))
    }
}
