//! The dataset declaration every provider agrees on: the dataset's name and
//! version, and for each provider (in a fixed order) the numeric columns it
//! publishes with their fixed-point scales and ranges. The joint table's
//! columns are each provider's columns followed by its presence column, in
//! provider order; the declaration's digest is bound into every fragment.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use sotto_agg::job::{parse_column, ColumnSpec, RawColumn};
use sotto_crypto::hash::FieldHasher;
use sotto_node::NodeName;

/// The declaration format this build reads.
pub const DECLARATION_FORMAT: u32 = 1;
/// The most providers one dataset may have.
pub const MAX_PROVIDERS: usize = 64;

/// Why a declaration was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeclarationError {
    /// The file could not be read.
    #[error("{path}: cannot read the dataset declaration: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not the expected TOML.
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        reason: String,
    },
    /// The TOML is well formed but not a usable declaration.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field at fault.
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// A dataset's name: 1 to 64 characters from `a-z`, `0-9`, `-`, `_`, `.`,
/// starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetId(String);

impl FromStr for DatasetId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_name("dataset", s)?;
        Ok(Self(s.to_owned()))
    }
}

/// Checks the name of a dataset or model: 1 to 64 characters from `a-z`,
/// `0-9`, `-`, `_`, `.`, starting with a letter or digit.
pub(crate) fn check_name(what: &str, s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    let starts_well = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if s.is_empty() || s.len() > 64 || !starts_well || !s.chars().all(ok_char) {
        return Err(format!(
            "{what} name {s:?} must be 1 to 64 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl DatasetId {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One provider's part of the joint table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderColumns {
    /// The provider's node name.
    pub name: String,
    /// Its columns, in the order of its rows' values.
    pub columns: Vec<ColumnSpec>,
}

/// A checked dataset declaration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declaration {
    /// The dataset.
    pub dataset: DatasetId,
    /// Its version (a new version supersedes the old one whole).
    pub version: u64,
    /// The providers, in the order of the joint table's columns.
    pub providers: Vec<ProviderColumns>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeclaration {
    format: u32,
    dataset: String,
    version: u64,
    #[serde(rename = "provider")]
    providers: Vec<RawProvider>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: String,
    #[serde(rename = "column", default)]
    columns: Vec<RawColumn>,
}

impl Declaration {
    /// Reads and checks a declaration file.
    pub fn read(path: &Path) -> Result<Self, DeclarationError> {
        let text = std::fs::read_to_string(path).map_err(|source| DeclarationError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks declaration text; `path` is only for errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, DeclarationError> {
        let raw: RawDeclaration = toml::from_str(text).map_err(|e| DeclarationError::Syntax {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |field: &str, reason: String| DeclarationError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason,
        };
        if raw.format != DECLARATION_FORMAT {
            return Err(invalid(
                "format",
                format!("format {} is not {DECLARATION_FORMAT}", raw.format),
            ));
        }
        let dataset = raw
            .dataset
            .parse::<DatasetId>()
            .map_err(|e| invalid("dataset", e))?;
        if raw.version == 0 {
            return Err(invalid("version", "versions start at 1".into()));
        }
        if raw.providers.len() < 2 || raw.providers.len() > MAX_PROVIDERS {
            return Err(invalid(
                "provider",
                format!(
                    "{} providers declared: sharing needs 2 to {MAX_PROVIDERS} (with one, its share would be its data)",
                    raw.providers.len()
                ),
            ));
        }
        let mut providers: Vec<ProviderColumns> = Vec::new();
        for (i, p) in raw.providers.iter().enumerate() {
            let field = format!("provider[{i}] ({})", p.name);
            p.name
                .parse::<NodeName>()
                .map_err(|e| invalid(&field, e.to_string()))?;
            if providers.iter().any(|q| q.name == p.name) {
                return Err(invalid(&field, "the provider is declared twice".into()));
            }
            if p.columns.is_empty() {
                return Err(invalid(
                    &field,
                    "declare at least one [[provider.column]] with name, scale, min and max".into(),
                ));
            }
            let mut columns: Vec<ColumnSpec> = Vec::new();
            for (k, c) in p.columns.iter().enumerate() {
                let field = format!("{field}.column[{k}] ({})", c.name);
                let column = parse_column(c).map_err(|reason| invalid(&field, reason))?;
                if columns.iter().any(|x| x.name == column.name) {
                    return Err(invalid(&field, "the column is declared twice".into()));
                }
                columns.push(column);
            }
            providers.push(ProviderColumns {
                name: p.name.clone(),
                columns,
            });
        }
        Ok(Self {
            dataset,
            version: raw.version,
            providers,
        })
    }

    /// The joint table's width: every provider's columns and its presence
    /// column.
    pub fn width(&self) -> usize {
        self.providers.iter().map(|p| p.columns.len() + 1).sum()
    }

    /// The position of `provider` in the declaration.
    pub fn index_of(&self, provider: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.name == provider)
    }

    /// Where provider `index`'s values and presence sit in a joint row:
    /// (first column, number of columns including presence).
    pub fn slot(&self, index: usize) -> Option<(usize, usize)> {
        let offset = self.providers[..index.min(self.providers.len())]
            .iter()
            .map(|p| p.columns.len() + 1)
            .sum();
        self.providers
            .get(index)
            .map(|p| (offset, p.columns.len() + 1))
    }

    /// The joint table's column names: `provider.column`, and
    /// `provider.present` after each provider's columns.
    pub fn column_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.width());
        for p in &self.providers {
            for c in &p.columns {
                names.push(format!("{}.{}", p.name, c.name));
            }
            names.push(format!("{}.present", p.name));
        }
        names
    }

    /// Each joint column's declared scale (presence columns: 1), in the
    /// order of [`Self::column_names`].
    pub fn column_scales(&self) -> Vec<u64> {
        let mut scales = Vec::with_capacity(self.width());
        for p in &self.providers {
            scales.extend(p.columns.iter().map(|c| c.scale));
            scales.push(1);
        }
        scales
    }

    /// The digest every fragment binds: format, dataset, version and every
    /// provider's columns with scales and ranges.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = FieldHasher::new("sotto/share/declaration/v1");
        h.field(&DECLARATION_FORMAT.to_be_bytes())
            .field(self.dataset.as_str().as_bytes())
            .field(&self.version.to_be_bytes())
            .field(&(self.providers.len() as u64).to_be_bytes());
        for p in &self.providers {
            h.field(p.name.as_bytes())
                .field(&(p.columns.len() as u64).to_be_bytes());
            for c in &p.columns {
                h.field(c.name.as_bytes())
                    .field(&c.scale.to_be_bytes())
                    .field(&c.min.to_be_bytes())
                    .field(&c.max.to_be_bytes());
            }
        }
        h.finish()
    }
}
