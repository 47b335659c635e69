//! Which of a model's versions are served (Triton's version policy), as written in
//! `config.toml` and as used by the repository scan.

use serde::Deserialize;

/// Which of a model's versions are served (Triton's version policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The highest `n`.
    Latest(usize),
    All,
    /// Exactly these (missing ones are reported).
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those present (ascending); specific versions not present
    /// are returned too, so their absence is reported.
    pub fn select(&self, present: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest(n) => present[present.len().saturating_sub(*n)..].to_vec(),
            VersionPolicy::All => present.to_vec(),
            VersionPolicy::Specific(list) => list.clone(),
        }
    }
}

/// `version_policy = "all"`, `{ latest = 2 }` or `{ specific = [1, 3] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawVersionPolicy {
    Word(String),
    Table {
        latest: Option<usize>,
        specific: Option<Vec<u64>>,
    },
}

impl RawVersionPolicy {
    pub(super) fn validate(self) -> Result<VersionPolicy, String> {
        const EXPECTED: &str =
            "expected \"all\", { latest = N > 0 } or { specific = [positive versions] }";
        match self {
            RawVersionPolicy::Word(w) if w == "all" => Ok(VersionPolicy::All),
            RawVersionPolicy::Table {
                latest: Some(n),
                specific: None,
            } if n > 0 => Ok(VersionPolicy::Latest(n)),
            RawVersionPolicy::Table {
                latest: None,
                specific: Some(mut v),
            } if !v.is_empty() && !v.contains(&0) => {
                v.sort_unstable();
                v.dedup();
                Ok(VersionPolicy::Specific(v))
            }
            _ => Err(format!("version_policy: {EXPECTED}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn version_policies_parse_in_triton_forms() {
        let policy = |t: &str| ModelConfig::parse(t, "m").map(|c| c.version_policy);
        assert_eq!(policy(""), Ok(VersionPolicy::Latest(1)));
        assert_eq!(
            policy("version_policy = { latest = 2 }"),
            Ok(VersionPolicy::Latest(2))
        );
        assert_eq!(policy("version_policy = \"all\""), Ok(VersionPolicy::All));
        assert_eq!(
            policy("version_policy = { specific = [3, 1] }"),
            Ok(VersionPolicy::Specific(vec![1, 3]))
        );
        for bad in [
            "version_policy = \"some\"",
            "version_policy = { latest = 0 }",
            "version_policy = { specific = [] }",
        ] {
            assert!(policy(bad).is_err(), "{bad}");
        }
        assert_eq!(VersionPolicy::Latest(2).select(&[1, 2, 5]), vec![2, 5]);
        assert_eq!(
            VersionPolicy::Specific(vec![1, 9]).select(&[1, 2]),
            vec![1, 9]
        );
    }
}
