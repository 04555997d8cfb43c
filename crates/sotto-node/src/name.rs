//! Node names: the human-readable handle of a node in a consortium.

use std::fmt;
use std::str::FromStr;

use crate::NodeError;

/// A node name: 1 to 64 characters from `a-z`, `0-9`, `-`, `_`, `.`, starting
/// with a letter or digit. Names are used as file names in peer directories.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| NodeError::BadName {
            name: s.to_owned(),
            reason,
        };
        if s.is_empty() || s.len() > 64 {
            return Err(bad("must be 1 to 64 characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            return Err(bad("must start with a lowercase letter or a digit"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad("may contain only a-z, 0-9, '-', '_' and '.'"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeName({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_paths() {
        assert!("bank-a".parse::<NodeName>().is_ok());
        assert!("lender_2.eu".parse::<NodeName>().is_ok());
        for bad in ["", "../x", "Bank", "-a", "a/b", &"x".repeat(65)] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad:?} accepted");
        }
    }
}
