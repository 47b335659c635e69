//! `profile.json`, the reference of one version: per monitored feature its bins and reference
//! proportions. Numeric features have quantile edges `e0 < … < ek` and `k + 2` bins: underflow
//! `(-inf, e0)`, the quantile bins `[e0, e1) … [ek-1, ek]`, overflow `(ek, inf)`. Categorical (and
//! integer) features have their top categories and one last "other" bin.
//!
//! ```json
//! {"format": "ferroserve-drift-profile/1", "rows": 150, "tensors": [
//!   {"tensor": "input", "role": "input", "features": [
//!     {"name": "sepal_length", "column": 0, "kind": "numeric",
//!      "edges": [4.3, 5.0, 5.8, 7.9], "proportions": [0, 0.33, 0.34, 0.33, 0]},
//!     {"name": "mean", "summary": "mean", "kind": "numeric", ...}]},
//!   {"tensor": "label", "role": "output", "features": [
//!     {"name": "label", "kind": "categorical", "categories": ["0", "1", "2"],
//!      "proportions": [0.33, 0.33, 0.34, 0]}]}]}
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "ferroserve-drift-profile/1";
/// Bins per feature at most (the per-batch tally lives on the stack).
pub const MAX_BINS: usize = 64;
/// Monitored features per version at most: the metric label set stays bounded.
pub const MAX_FEATURES: usize = 64;
/// `profile.json` larger than this is refused.
const MAX_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format: String,
    /// Rows the reference was built from.
    pub rows: u64,
    pub tensors: Vec<TensorProfile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Input,
    Output,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorProfile {
    pub tensor: String,
    pub role: Role,
    pub features: Vec<FeatureProfile>,
}

/// A per-row statistic of a tensor of rank > 2 (or any row too wide to monitor per column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    Mean,
    Std,
    Norm,
}

impl Summary {
    pub const ALL: [Summary; 3] = [Summary::Mean, Summary::Std, Summary::Norm];
    pub fn as_str(self) -> &'static str {
        match self {
            Summary::Mean => "mean",
            Summary::Std => "std",
            Summary::Norm => "norm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Numeric,
    Categorical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    pub name: String,
    /// Column of a `[batch, columns]` tensor; with neither `column` nor `summary` the feature is
    /// the row's one value (`[batch]` or `[batch, 1]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    pub proportions: Vec<f64>,
}

/// Where a feature's value comes from in its tensor's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Value,
    Column(usize),
    Summary(Summary),
}

impl FeatureProfile {
    pub fn source(&self) -> Source {
        match (self.column, self.summary) {
            (Some(c), _) => Source::Column(c),
            (None, Some(s)) => Source::Summary(s),
            (None, None) => Source::Value,
        }
    }

    pub fn bins(&self) -> usize {
        self.proportions.len()
    }

    fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if self.column.is_some() && self.summary.is_some() {
            return Err(format!("feature {name:?}: both column and summary"));
        }
        let want = match self.kind {
            Kind::Numeric => {
                if self.edges.len() < 2 || !self.edges.windows(2).all(|w| w[0] < w[1]) {
                    return Err(format!(
                        "feature {name:?}: numeric edges must be at least 2 finite, strictly increasing values"
                    ));
                }
                if self.edges.iter().any(|e| !e.is_finite()) {
                    return Err(format!("feature {name:?}: an edge is not finite"));
                }
                self.edges.len() + 1
            }
            Kind::Categorical => {
                if self.categories.is_empty() {
                    return Err(format!("feature {name:?}: no categories"));
                }
                self.categories.len() + 1
            }
        };
        if self.proportions.len() != want {
            return Err(format!(
                "feature {name:?}: {} proportions for {want} bins",
                self.proportions.len()
            ));
        }
        if want > MAX_BINS {
            return Err(format!("feature {name:?}: {want} bins, at most {MAX_BINS}"));
        }
        let sum: f64 = self.proportions.iter().sum();
        if self.proportions.iter().any(|p| !(0.0..=1.0).contains(p)) || (sum - 1.0).abs() > 1e-3 {
            return Err(format!(
                "feature {name:?}: proportions must lie in [0, 1] and sum to 1 (sum {sum})"
            ));
        }
        Ok(())
    }
}

/// The bin of a numeric `x` (see the module doc); `None` for NaN, which is not counted.
pub fn numeric_bin(edges: &[f64], x: f64) -> Option<usize> {
    let last = edges.len().checked_sub(1)?;
    if x.is_nan() {
        None
    } else if x < edges[0] {
        Some(0)
    } else if x > edges[last] {
        Some(edges.len())
    } else {
        Some(1 + edges[1..].partition_point(|&e| e <= x).min(last - 1))
    }
}

impl Profile {
    /// Reads and validates `path`.
    pub fn from_file(path: &Path) -> Result<Profile, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(format!(
                "{}: {size} bytes, at most {MAX_FILE_BYTES}",
                path.display()
            ));
        }
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Profile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &[u8]) -> Result<Profile, String> {
        let p: Profile = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", self.format));
        }
        let count: usize = self.tensors.iter().map(|t| t.features.len()).sum();
        if count > MAX_FEATURES {
            return Err(format!("{count} features, at most {MAX_FEATURES}"));
        }
        for t in &self.tensors {
            for f in &t.features {
                f.validate()?;
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_bins_have_underflow_and_overflow() {
        let e = [0.0, 1.0, 2.0];
        let bins: Vec<_> = [-1.0, 0.0, 0.5, 1.0, 2.0, 2.5, f64::NAN]
            .iter()
            .map(|&x| numeric_bin(&e, x))
            .collect();
        assert_eq!(
            bins,
            [Some(0), Some(1), Some(1), Some(2), Some(2), Some(3), None]
        );
    }
}
