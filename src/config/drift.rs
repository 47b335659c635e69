//! `[drift]` of a model's `config.toml`: which features are monitored against the version's
//! reference (`profile.json`, or the first N rows served), the tumbling window, sampling and the
//! thresholds that call a feature drifting. See `drift` for what is computed.
//!
//! ```toml
//! [drift]
//! features = ["sepal_length", "sepal_width", 2]  # columns of `input` by name (in order) or index
//! input = "input"            # the 2-D input the names are columns of (default: the first)
//! categorical = ["species"]  # features binned by category (integer inputs always are)
//! outputs = ["label"]        # outputs monitored (default: all)
//! window_seconds = 60        # tumbling window length
//! min_count = 1000           # a window closes only once it holds this many rows
//! sample_rate = 1.0          # share of batches binned (under load: lower it)
//! baseline = "profile"       # or "first: 10000": the first rows served are the reference
//! psi_threshold = 0.25
//! js_threshold = 0.2         # optional
//! p_value_threshold = 0.01   # optional; the p-value is always reported when valid
//! bins = 10                  # quantile bins (baseline "first: N" and `ferroserve profile`)
//! max_categories = 10
//! ```

use std::time::Duration;

use serde::Deserialize;

/// Features per version at most (the metric label set stays bounded).
pub const MAX_DRIFT_FEATURES: usize = 64;
/// Rows a `first: N` baseline may hold (its sample is kept in memory until built).
pub const MAX_BASELINE_ROWS: u64 = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub enum FeatureRef {
    Name(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// `profile.json` of the version directory.
    Profile,
    /// The first N rows served build the reference, then monitoring starts.
    First(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    pub features: Vec<FeatureRef>,
    pub input: Option<String>,
    pub categorical: Vec<String>,
    pub outputs: Option<Vec<String>>,
    pub window: Duration,
    pub min_count: u64,
    pub sample_rate: f64,
    pub baseline: Baseline,
    pub psi_threshold: f64,
    pub js_threshold: Option<f64>,
    pub p_value_threshold: Option<f64>,
    pub bins: usize,
    pub max_categories: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            features: Vec::new(),
            input: None,
            categorical: Vec::new(),
            outputs: None,
            window: Duration::from_secs(60),
            min_count: 1000,
            sample_rate: 1.0,
            baseline: Baseline::Profile,
            psi_threshold: 0.25,
            js_threshold: None,
            p_value_threshold: None,
            bins: 10,
            max_categories: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawFeature {
    Name(String),
    Index(usize),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrift {
    #[serde(default)]
    features: Vec<RawFeature>,
    input: Option<String>,
    #[serde(default)]
    categorical: Vec<String>,
    outputs: Option<Vec<String>>,
    window_seconds: Option<f64>,
    min_count: Option<u64>,
    sample_rate: Option<f64>,
    baseline: Option<String>,
    psi_threshold: Option<f64>,
    js_threshold: Option<f64>,
    p_value_threshold: Option<f64>,
    bins: Option<usize>,
    max_categories: Option<usize>,
}

impl RawDrift {
    pub(super) fn validate(self) -> Result<DriftConfig, String> {
        let d = DriftConfig::default();
        let err = |m: String| Err(format!("[drift] {m}"));
        let window = match self.window_seconds {
            None => d.window,
            Some(s) if s.is_finite() && (0.01..=86_400.0).contains(&s) => {
                Duration::from_secs_f64(s)
            }
            Some(s) => return err(format!("window_seconds {s} is outside 0.01..=86400")),
        };
        let sample_rate = self.sample_rate.unwrap_or(1.0);
        if !(sample_rate > 0.0 && sample_rate <= 1.0) {
            return err(format!("sample_rate {sample_rate} is outside (0, 1]"));
        }
        let baseline = match self.baseline.as_deref().map(str::trim) {
            None | Some("profile") => Baseline::Profile,
            Some(s) => match s.strip_prefix("first:").map(|n| n.trim().parse::<u64>()) {
                Some(Ok(n)) if (1..=MAX_BASELINE_ROWS).contains(&n) => Baseline::First(n),
                _ => {
                    return err(format!(
                        "baseline {s:?}: expected \"profile\" or \"first: N\" with N in 1..={MAX_BASELINE_ROWS}"
                    ))
                }
            },
        };
        let positive = |v: Option<f64>, key: &str| match v {
            Some(x) if !(x.is_finite() && x > 0.0) => {
                Err(format!("[drift] {key} must be positive"))
            }
            other => Ok(other),
        };
        let p_value_threshold = match self.p_value_threshold {
            Some(p) if !(p > 0.0 && p < 1.0) => {
                return err(format!("p_value_threshold {p} is outside (0, 1)"))
            }
            p => p,
        };
        let bins = self.bins.unwrap_or(d.bins);
        // Quantile bins plus under- and overflow within the profile's bin limit.
        if !(2..=MAX_QUANTILE_BINS).contains(&bins) {
            return err(format!("bins {bins} is outside 2..={MAX_QUANTILE_BINS}"));
        }
        let max_categories = self.max_categories.unwrap_or(d.max_categories);
        if !(1..=MAX_QUANTILE_BINS).contains(&max_categories) {
            return err(format!(
                "max_categories {max_categories} is outside 1..={MAX_QUANTILE_BINS}"
            ));
        }
        if self.features.len() > MAX_DRIFT_FEATURES {
            return err(format!(
                "{} features, at most {MAX_DRIFT_FEATURES}",
                self.features.len()
            ));
        }
        Ok(DriftConfig {
            features: self
                .features
                .into_iter()
                .map(|f| match f {
                    RawFeature::Name(n) => FeatureRef::Name(n),
                    RawFeature::Index(i) => FeatureRef::Index(i),
                })
                .collect(),
            input: self.input,
            categorical: self.categorical,
            outputs: self.outputs,
            window,
            min_count: self.min_count.unwrap_or(d.min_count).max(1),
            sample_rate,
            baseline,
            psi_threshold: positive(self.psi_threshold, "psi_threshold")?
                .unwrap_or(d.psi_threshold),
            js_threshold: positive(self.js_threshold, "js_threshold")?,
            p_value_threshold,
            bins,
            max_categories,
        })
    }
}

/// Quantile bins (and categories) per feature at most: with under- and overflow they fit the
/// profile's 64 bins.
pub const MAX_QUANTILE_BINS: usize = 62;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DriftConfig, String> {
        toml::from_str::<RawDrift>(text)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn drift_section_reads_names_indices_and_baseline() {
        let c = parse("features = ['a', 2]\nbaseline = 'first: 500'\nwindow_seconds = 5").unwrap();
        assert_eq!(
            c.features,
            [FeatureRef::Name("a".into()), FeatureRef::Index(2)]
        );
        assert_eq!(c.baseline, Baseline::First(500));
        assert_eq!(c.window, Duration::from_secs(5));
        let e = parse("baseline = 'first: x'").unwrap_err();
        assert!(e.contains("first: N"), "{e}");
        let e = parse("sample_rate = 0").unwrap_err();
        assert!(e.contains("sample_rate"), "{e}");
        let e = parse("bins = 100").unwrap_err();
        assert!(e.contains("bins 100"), "{e}");
    }
}
