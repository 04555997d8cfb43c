//! The job file: who takes part (coordinator, clients, lead), which columns
//! are summed with which scale and range, and the step deadlines. Coordinator
//! and clients read the same file; its digest is in the signed offer, so a
//! client takes part only in the job it agreed to.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sotto_crypto::hash::FieldHasher;
use sotto_node::NodeName;

use crate::error::JobError;
use crate::fixed;

/// One summed column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    /// Name in the job (and default column name in the clients' tables).
    pub name: String,
    /// Fixed-point scale (a power of ten).
    pub scale: u64,
    /// Smallest accepted value, times the scale.
    pub min: i64,
    /// Largest accepted value, times the scale.
    pub max: i64,
}

impl ColumnSpec {
    /// The declared minimum as decimal text.
    pub fn min_text(&self) -> String {
        fixed::format(self.min, self.scale)
    }

    /// The declared maximum as decimal text.
    pub fn max_text(&self) -> String {
        fixed::format(self.max, self.scale)
    }
}

/// A parsed and checked job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// Human name of the job.
    pub name: String,
    /// The coordinator's node name.
    pub coordinator: NodeName,
    /// The clients, in job order.
    pub clients: Vec<NodeName>,
    /// The lead client.
    pub lead: NodeName,
    /// The fewest clients an attempt may run with (a re-run without missing
    /// clients included). With 2, each client learns the other's exact
    /// figures by subtracting its own from the total.
    pub min_clients: usize,
    /// Summed columns (the presence column is added by the protocol).
    pub columns: Vec<ColumnSpec>,
    /// How long the coordinator waits for every client to join.
    pub join_deadline: Duration,
    /// How long each later step may take.
    pub step_deadline: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    coordinator: String,
    clients: Vec<String>,
    lead: Option<String>,
    min_clients: Option<usize>,
    #[serde(rename = "column")]
    columns: Vec<RawColumn>,
    #[serde(default)]
    deadlines: RawDeadlines,
}

/// A column as a TOML file declares it: name, scale (a power of ten), and
/// the accepted range as decimal text. Shared with other capabilities that
/// read numeric tables (secret-shared data sharing).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawColumn {
    /// The column's name.
    pub name: String,
    /// Fixed-point scale.
    pub scale: u64,
    /// Smallest accepted value, as decimal text.
    pub min: String,
    /// Largest accepted value, as decimal text.
    pub max: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadlines {
    #[serde(default = "default_join")]
    join_seconds: u64,
    #[serde(default = "default_step")]
    step_seconds: u64,
}

/// The fewest clients of an attempt when the job does not say.
pub const DEFAULT_MIN_CLIENTS: usize = 3;

fn default_join() -> u64 {
    120
}

fn default_step() -> u64 {
    60
}

impl Default for RawDeadlines {
    fn default() -> Self {
        Self {
            join_seconds: default_join(),
            step_seconds: default_step(),
        }
    }
}

impl JobSpec {
    /// Reads and checks a job file.
    pub fn read(path: &Path) -> Result<Self, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks job text; `path` is only for errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, JobError> {
        let raw: RawJob = toml::from_str(text).map_err(|e| JobError::Syntax {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |field: &str, reason: String| JobError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason,
        };
        let node = |field: &str, s: &str| {
            s.parse::<NodeName>()
                .map_err(|e| invalid(field, e.to_string()))
        };
        let coordinator = node("coordinator", &raw.coordinator)?;
        let mut clients = Vec::with_capacity(raw.clients.len());
        for (i, c) in raw.clients.iter().enumerate() {
            let name = node(&format!("clients[{i}]"), c)?;
            if clients.contains(&name) {
                return Err(invalid("clients", format!("{name} is listed twice")));
            }
            if name == coordinator {
                return Err(invalid(
                    "clients",
                    format!("{name} is the coordinator; the coordinator cannot also be a client"),
                ));
            }
            clients.push(name);
        }
        if clients.len() < 2 {
            return Err(invalid(
                "clients",
                "a job needs at least 2 clients, or the total would reveal a single institution's values".into(),
            ));
        }
        let lead = match &raw.lead {
            Some(l) => node("lead", l)?,
            None => clients[0].clone(),
        };
        if !clients.contains(&lead) {
            return Err(invalid("lead", format!("{lead} is not one of the clients")));
        }
        let min_clients = raw.min_clients.unwrap_or(DEFAULT_MIN_CLIENTS);
        if min_clients < 2 {
            return Err(invalid(
                "min_clients",
                format!("{min_clients} is below 2: one client's total is its own figures"),
            ));
        }
        if min_clients > clients.len() {
            return Err(invalid(
                "min_clients",
                format!(
                    "the job has {} clients but needs at least {min_clients}{}",
                    clients.len(),
                    if raw.min_clients.is_none() {
                        " (the default): with 2 clients each learns the other's exact figures; set min_clients = 2 only if both accept that"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if raw.columns.is_empty() {
            return Err(invalid(
                "column",
                "declare at least one [[column]] with name, scale, min and max".into(),
            ));
        }
        let mut columns: Vec<ColumnSpec> = Vec::new();
        for (i, c) in raw.columns.iter().enumerate() {
            let field = format!("column[{i}] ({})", c.name);
            let column = parse_column(c).map_err(|reason| invalid(&field, reason))?;
            if columns.iter().any(|x| x.name == column.name) {
                return Err(invalid(&field, "declared twice".into()));
            }
            check_no_wrap(&column, clients.len()).map_err(|reason| invalid(&field, reason))?;
            columns.push(column);
        }
        if raw.deadlines.join_seconds == 0 || raw.deadlines.step_seconds == 0 {
            return Err(invalid(
                "deadlines",
                "deadlines must be at least 1 second".into(),
            ));
        }
        Ok(Self {
            name: raw.name,
            coordinator,
            clients,
            lead,
            min_clients,
            columns,
            join_deadline: Duration::from_secs(raw.deadlines.join_seconds),
            step_deadline: Duration::from_secs(raw.deadlines.step_seconds),
        })
    }

    /// Columns per row on the wire: the summed columns plus presence.
    pub fn width(&self) -> usize {
        self.columns.len() + 1
    }

    /// The digest both sides compare: every field that decides what is
    /// computed (not the deadlines, which are the coordinator's to set).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = FieldHasher::new("sotto/agg/job/v1");
        h.field(self.name.as_bytes())
            .field(self.coordinator.as_str().as_bytes())
            .field(&(self.clients.len() as u64).to_be_bytes());
        for c in &self.clients {
            h.field(c.as_str().as_bytes());
        }
        h.field(self.lead.as_str().as_bytes())
            .field(&(self.min_clients as u64).to_be_bytes());
        for c in &self.columns {
            h.field(c.name.as_bytes())
                .field(&c.scale.to_be_bytes())
                .field(&c.min.to_be_bytes())
                .field(&c.max.to_be_bytes());
        }
        h.finish()
    }
}

/// Checks a declared column: a usable name, a power-of-ten scale, bounds
/// that parse at that scale and are in order.
pub fn parse_column(c: &RawColumn) -> Result<ColumnSpec, String> {
    if c.name.is_empty() || c.name == "id" || c.name == "institutions" {
        return Err("a column needs a name other than \"id\" and \"institutions\"".into());
    }
    if c.scale == 0 || c.scale > fixed::MAX_SCALE || fixed::decimal_places(c.scale).is_none() {
        return Err(format!(
            "scale {} must be a power of ten from 1 to 10^18 (100 keeps cents)",
            c.scale
        ));
    }
    let bound = |which: &str, text: &str| {
        fixed::parse(text, c.scale).map_err(|e| format!("{which} {text:?}: {e}"))
    };
    let (min, max) = (bound("min", &c.min)?, bound("max", &c.max)?);
    if min > max {
        return Err(format!("min {} is above max {}", c.min, c.max));
    }
    Ok(ColumnSpec {
        name: c.name.clone(),
        scale: c.scale,
        min,
        max,
    })
}

/// The job must declare `n * max(|min|, |max|) < 2^63`, so that the signed
/// total of n clients cannot wrap around the ring.
fn check_no_wrap(column: &ColumnSpec, clients: usize) -> Result<(), String> {
    let widest = i128::from(column.min)
        .abs()
        .max(i128::from(column.max).abs());
    let n = i128::try_from(clients).unwrap_or(i128::MAX);
    if n.saturating_mul(widest) >= 1i128 << 63 {
        return Err(format!(
            "{clients} clients times the widest value {} could overflow the 64-bit total; narrow min/max or lower the scale",
            fixed::format(i64::try_from(widest).unwrap_or(i64::MAX), column.scale)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "multi-lender"
coordinator = "bureau"
clients = ["lender-1", "lender-2", "lender-3"]
lead = "lender-2"

[deadlines]
step_seconds = 30

[[column]]
name = "debt"
scale = 100
min = "0"
max = "1000000000"

[[column]]
name = "overdue_days"
scale = 1
min = "0"
max = "3650"
"#;

    fn parse(text: &str) -> Result<JobSpec, JobError> {
        JobSpec::parse(Path::new("job.toml"), text)
    }

    #[test]
    fn reads_a_good_job() {
        let job = parse(GOOD).expect("job");
        assert_eq!(job.clients.len(), 3);
        assert_eq!(job.lead.as_str(), "lender-2");
        assert_eq!(job.min_clients, DEFAULT_MIN_CLIENTS);
        assert_eq!(job.columns[0].max, 100_000_000_000);
        assert_eq!(job.width(), 3);
        assert_eq!(job.step_deadline, Duration::from_secs(30));
        assert_eq!(job.join_deadline, Duration::from_secs(120));
    }

    #[test]
    fn digest_changes_with_every_agreed_field() {
        let base = parse(GOOD).expect("job").digest();
        for (from, to) in [
            ("multi-lender", "other"),
            (
                "lead = \"lender-2\"",
                "lead = \"lender-2\"\nmin_clients = 2",
            ),
            ("lead = \"lender-2\"", "lead = \"lender-3\""),
            ("max = \"3650\"", "max = \"3651\""),
            ("scale = 1\n", "scale = 10\n"),
        ] {
            let changed = parse(&GOOD.replace(from, to)).expect("job").digest();
            assert_ne!(base, changed, "{from} -> {to}");
        }
        let deadline = parse(&GOOD.replace("step_seconds = 30", "step_seconds = 5")).expect("job");
        assert_eq!(base, deadline.digest());
    }

    #[test]
    fn refuses_bad_jobs_naming_the_field() {
        let cases = [
            (
                GOOD.replace("\"lender-3\"]", "\"lender-1\"]"),
                "listed twice",
            ),
            (
                GOOD.replace("lead = \"lender-2\"", "lead = \"x\""),
                "not one of the clients",
            ),
            (GOOD.replace("scale = 100", "scale = 30"), "power of ten"),
            (
                GOOD.replace("max = \"1000000000\"", "max = \"1e9\""),
                "not a decimal",
            ),
            (GOOD.replace("max = \"3650\"", "max = \"-1\""), "above max"),
            (
                GOOD.replace("max = \"1000000000\"", "max = \"90000000000000000\""),
                "overflow",
            ),
            (
                GOOD.replace(
                    "[\"lender-1\", \"lender-2\", \"lender-3\"]",
                    "[\"lender-2\"]",
                ),
                "at least 2",
            ),
            (
                GOOD.replace(
                    "[\"lender-1\", \"lender-2\", \"lender-3\"]",
                    "[\"lender-1\", \"lender-2\"]",
                ),
                "each learns the other's exact figures",
            ),
            (
                GOOD.replace(
                    "lead = \"lender-2\"",
                    "lead = \"lender-2\"\nmin_clients = 1",
                ),
                "below 2",
            ),
            (
                GOOD.replace(
                    "lead = \"lender-2\"",
                    "lead = \"lender-2\"\nmin_clients = 4",
                ),
                "needs at least 4",
            ),
            (
                GOOD.replace("coordinator = \"bureau\"", "coordinator = \"lender-1\""),
                "coordinator",
            ),
            (
                GOOD.replace("step_seconds = 30", "step_seconds = 0"),
                "at least 1 second",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.starts_with("job.toml: "), "{err}");
        }
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let err = parse("name = \"x\"\nclients = [\n")
            .expect_err("syntax")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        let err = parse(&GOOD.replace("name = \"debt\"", "nmae = \"debt\"")).expect_err("unknown");
        assert!(err.to_string().contains("nmae"), "{err}");
    }
}
