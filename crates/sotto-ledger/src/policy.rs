//! Endorsement policies: the `AND`, `OR` and `OutOf(k, ...)` language of
//! Fabric over principals (an endorser's name, or an organisation meaning any
//! of its endorsers), its parser with column-precise errors, and evaluation
//! over the set of endorsers whose endorsements verified.
//!
//! Semantics: a set of endorsers satisfies a policy when its principals can
//! be given distinct endorsers from the set that make the formula true; one
//! endorsement never counts twice (so `OutOf(2, 'bank-a', 'bank-a')` needs two
//! endorsers of `bank-a`).

use std::fmt;
use std::str::FromStr;

/// The most principals a policy may name (endorser sets are bit masks).
pub const MAX_PRINCIPALS: usize = 64;
/// The deepest nesting a policy may have.
pub const MAX_DEPTH: usize = 8;
/// The longest policy text accepted.
pub const MAX_TEXT: usize = 4096;

/// A set of endorsers, as bits of their index in the ledger configuration.
pub type EndorserSet = u64;

/// An endorsement policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// One endorsement from this endorser, or from any endorser of this
    /// organisation.
    Principal(String),
    /// Every sub-policy.
    And(Vec<Policy>),
    /// At least one sub-policy.
    Or(Vec<Policy>),
    /// At least `k` of the sub-policies.
    OutOf(usize, Vec<Policy>),
}

/// Why a policy text does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct PolicyError {
    /// 1-based character column in the policy text.
    pub column: usize,
    /// What is wrong and what was expected.
    pub reason: String,
}

impl Policy {
    /// Every principal the policy names, in order, with repeats.
    pub fn principals(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_principals(&mut out);
        out
    }

    fn collect_principals<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Self::Principal(name) => out.push(name),
            Self::And(subs) | Self::Or(subs) | Self::OutOf(_, subs) => {
                for sub in subs {
                    sub.collect_principals(out);
                }
            }
        }
    }

    /// Whether the endorsers in `present` satisfy the policy; `members`
    /// gives the endorsers each principal stands for.
    pub fn satisfied_by(
        &self,
        members: &dyn Fn(&str) -> EndorserSet,
        present: EndorserSet,
    ) -> bool {
        !self.ways(members, present).is_empty()
    }

    /// The minimal sets of distinct endorsers from `present` that satisfy
    /// this policy.
    fn ways(
        &self,
        members: &dyn Fn(&str) -> EndorserSet,
        present: EndorserSet,
    ) -> Vec<EndorserSet> {
        match self {
            Self::Principal(name) => {
                let candidates = members(name) & present;
                (0..64)
                    .map(|i| 1u64 << i)
                    .filter(|bit| candidates & bit != 0)
                    .collect()
            }
            Self::And(subs) => subs.iter().fold(vec![0], |acc, sub| {
                minimal(joined(&acc, &sub.ways(members, present)))
            }),
            Self::Or(subs) => minimal(
                subs.iter()
                    .flat_map(|sub| sub.ways(members, present))
                    .collect(),
            ),
            Self::OutOf(k, subs) => {
                // by_count[c]: minimal sets satisfying c of the sub-policies seen so far.
                let mut by_count: Vec<Vec<EndorserSet>> = vec![Vec::new(); k + 1];
                by_count[0].push(0);
                for sub in subs {
                    let options = sub.ways(members, present);
                    for count in (0..*k).rev() {
                        let extended = joined(&by_count[count], &options);
                        let mut next = std::mem::take(&mut by_count[count + 1]);
                        next.extend(extended);
                        by_count[count + 1] = minimal(next);
                    }
                }
                by_count.pop().unwrap_or_default()
            }
        }
    }
}

/// Unions of one set from `left` and one from `right` that share no endorser.
fn joined(left: &[EndorserSet], right: &[EndorserSet]) -> Vec<EndorserSet> {
    let mut out = Vec::new();
    for a in left {
        for b in right {
            if a & b == 0 {
                out.push(a | b);
            }
        }
    }
    out
}

/// The sets of `sets` that contain no other set of the list.
fn minimal(mut sets: Vec<EndorserSet>) -> Vec<EndorserSet> {
    sets.sort_unstable_by_key(|s| (s.count_ones(), *s));
    sets.dedup();
    let mut out: Vec<EndorserSet> = Vec::with_capacity(sets.len());
    for set in sets {
        if !out.iter().any(|kept| kept & set == *kept) {
            out.push(set);
        }
    }
    out
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, subs: &[Policy]| -> fmt::Result {
            for (i, sub) in subs.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{sub}")?;
            }
            f.write_str(")")
        };
        match self {
            Self::Principal(name) => write!(f, "'{name}'"),
            Self::And(subs) => {
                f.write_str("AND(")?;
                list(f, subs)
            }
            Self::Or(subs) => {
                f.write_str("OR(")?;
                list(f, subs)
            }
            Self::OutOf(k, subs) => {
                write!(f, "OutOf({k}, ")?;
                list(f, subs)
            }
        }
    }
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.chars().count() > MAX_TEXT {
            return Err(PolicyError {
                column: MAX_TEXT + 1,
                reason: format!("a policy is at most {MAX_TEXT} characters"),
            });
        }
        let mut parser = Parser {
            chars: text.chars().collect(),
            at: 0,
            principals: 0,
        };
        let policy = parser.policy(0)?;
        parser.skip_space();
        if parser.at < parser.chars.len() {
            return Err(parser.error("unexpected text after the policy"));
        }
        Ok(policy)
    }
}

/// A recursive-descent parser over the characters of a policy.
struct Parser {
    chars: Vec<char>,
    at: usize,
    principals: usize,
}

impl Parser {
    fn error(&self, reason: impl Into<String>) -> PolicyError {
        PolicyError {
            column: self.at + 1,
            reason: reason.into(),
        }
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), PolicyError> {
        self.skip_space();
        if self.chars.get(self.at) == Some(&wanted) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected '{wanted}'")))
        }
    }

    fn policy(&mut self, depth: usize) -> Result<Policy, PolicyError> {
        self.skip_space();
        if depth > MAX_DEPTH {
            return Err(self.error(format!("policies nest at most {MAX_DEPTH} levels deep")));
        }
        if self.chars.get(self.at) == Some(&'\'') {
            return self.principal();
        }
        let start = self.at;
        let word: String = self.word();
        match word.to_ascii_lowercase().as_str() {
            "and" => Ok(Policy::And(self.arguments(depth)?)),
            "or" => Ok(Policy::Or(self.arguments(depth)?)),
            "outof" => self.out_of(depth),
            "" => {
                Err(self.error("expected AND(...), OR(...), OutOf(k, ...) or a quoted principal"))
            }
            other => {
                self.at = start;
                Err(self.error(format!(
                    "unknown operator '{other}': use AND, OR or OutOf, or quote a principal"
                )))
            }
        }
    }

    fn word(&mut self) -> String {
        let mut word = String::new();
        while let Some(c) = self
            .chars
            .get(self.at)
            .filter(|c| c.is_ascii_alphanumeric())
        {
            word.push(*c);
            self.at += 1;
        }
        word
    }

    fn principal(&mut self) -> Result<Policy, PolicyError> {
        let open = self.at;
        self.at += 1;
        let mut name = String::new();
        loop {
            match self.chars.get(self.at) {
                Some('\'') => break,
                Some(c) if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') => {
                    name.push(*c);
                    self.at += 1;
                }
                Some(c) => {
                    return Err(self.error(format!(
                        "'{c}' cannot be part of a principal (letters, digits, '-', '_', '.')"
                    )))
                }
                None => {
                    self.at = open;
                    return Err(self.error("this quote is never closed"));
                }
            }
        }
        if name.is_empty() {
            self.at = open;
            return Err(self.error("an empty principal names nobody"));
        }
        self.principals += 1;
        if self.principals > MAX_PRINCIPALS {
            self.at = open;
            return Err(self.error(format!(
                "a policy names at most {MAX_PRINCIPALS} principals"
            )));
        }
        self.at += 1;
        Ok(Policy::Principal(name))
    }

    fn arguments(&mut self, depth: usize) -> Result<Vec<Policy>, PolicyError> {
        self.expect('(')?;
        self.list(depth)
    }

    /// Sub-policies separated by commas, up to and including ')'.
    fn list(&mut self, depth: usize) -> Result<Vec<Policy>, PolicyError> {
        let mut subs = vec![self.policy(depth + 1)?];
        loop {
            self.skip_space();
            match self.chars.get(self.at) {
                Some(',') => {
                    self.at += 1;
                    subs.push(self.policy(depth + 1)?);
                }
                Some(')') => {
                    self.at += 1;
                    return Ok(subs);
                }
                _ => return Err(self.error("expected ',' or ')'")),
            }
        }
    }

    fn out_of(&mut self, depth: usize) -> Result<Policy, PolicyError> {
        self.expect('(')?;
        self.skip_space();
        let start = self.at;
        let digits = self.word();
        let k: usize = match digits.parse() {
            Ok(k) => k,
            Err(_) => {
                self.at = start;
                return Err(self.error("OutOf needs a count first: OutOf(k, ...)"));
            }
        };
        self.expect(',')?;
        let subs = self.list(depth)?;
        if k == 0 || k > subs.len() {
            self.at = start;
            return Err(self.error(format!(
                "OutOf({k}, ...) over {} sub-policies: k must be between 1 and {}",
                subs.len(),
                subs.len()
            )));
        }
        Ok(Policy::OutOf(k, subs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Policy {
        text.parse().expect("a valid policy")
    }

    fn error(text: &str) -> PolicyError {
        text.parse::<Policy>().expect_err("an invalid policy")
    }

    /// Endorsers e0..e3; org `a` is e0 and e1, org `b` is e2 and e3.
    fn members(principal: &str) -> EndorserSet {
        match principal {
            "a" => 0b0011,
            "b" => 0b1100,
            other => other
                .strip_prefix('e')
                .and_then(|i| i.parse::<u32>().ok())
                .map_or(0, |i| 1 << i),
        }
    }

    #[test]
    fn the_fabric_forms_parse_and_print_back() {
        for text in [
            "AND('e0', 'e1')",
            "OR('e0', AND('e1', 'e2'))",
            "OutOf(2, 'e0', 'e1', 'e2')",
            "'bank-a.endorser_1'",
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
        assert_eq!(
            parse(" outof ( 1 ,'e0' ) "),
            Policy::OutOf(1, vec![Policy::Principal("e0".into())])
        );
        assert_eq!(
            parse("and('e0')"),
            Policy::And(vec![Policy::Principal("e0".into())])
        );
    }

    #[test]
    fn errors_name_the_column() {
        let cases = [
            ("", 1, "expected AND"),
            ("AND('e0' 'e1')", 10, "expected ',' or ')'"),
            ("XOR('e0')", 1, "unknown operator 'xor'"),
            ("AND('e0', 'e1'", 15, "expected ',' or ')'"),
            ("OR('e0", 4, "never closed"),
            ("OR('e0)", 7, "')' cannot be part of a principal"),
            ("OR('')", 4, "empty principal"),
            ("OR('e 0')", 6, "' ' cannot be part of a principal"),
            ("OutOf(3, 'e0', 'e1')", 7, "k must be between 1 and 2"),
            ("OutOf(0, 'e0')", 7, "k must be between 1 and 1"),
            ("OutOf('e0')", 7, "needs a count first"),
            ("AND('e0') x", 11, "unexpected text"),
        ];
        for (text, column, reason) in cases {
            let err = error(text);
            assert_eq!(err.column, column, "{text}: {err}");
            assert!(err.reason.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let deep = format!(
            "{}'e0'{}",
            "OR(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(error(&deep).reason.contains("nest at most"));
        let ok = format!("{}'e0'{}", "OR(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(ok.parse::<Policy>().is_ok());
        let many = format!("OR({})", vec!["'e0'"; MAX_PRINCIPALS + 1].join(","));
        assert!(error(&many).reason.contains("at most 64 principals"));
        let long = format!("'{}'", "e".repeat(MAX_TEXT));
        assert!(error(&long).reason.contains("at most 4096 characters"));
    }

    #[test]
    fn one_endorsement_never_counts_twice() {
        let two_of_a = parse("OutOf(2, 'a', 'a')");
        assert!(!two_of_a.satisfied_by(&members, 0b0001));
        assert!(two_of_a.satisfied_by(&members, 0b0011));
        let and = parse("AND('a', 'e0')");
        assert!(!and.satisfied_by(&members, 0b0001), "e0 cannot be both");
        assert!(and.satisfied_by(&members, 0b0011));
    }

    #[test]
    fn two_of_three_needs_two_distinct_endorsers() {
        let policy = parse("OutOf(2, 'e0', 'e1', 'e2')");
        for present in 0u64..16 {
            let wanted = (present & 0b0111).count_ones() >= 2;
            assert_eq!(
                policy.satisfied_by(&members, present),
                wanted,
                "{present:04b}"
            );
        }
    }

    #[test]
    fn an_unknown_principal_is_satisfied_by_nobody() {
        assert!(!parse("'nobody'").satisfied_by(&members, u64::MAX));
        assert!(parse("OR('nobody', 'b')").satisfied_by(&members, 0b0100));
    }
}
