//! The `[traffic]` section of a model's `config.toml`, read into a `policy::traffic::TrafficPolicy`
//! with the same checks as a policy set through the admin API.

use serde::Deserialize;

use crate::policy::traffic::TrafficPolicy;

/// `[traffic]` of a model config: `weights = { "1" = 90, "2" = 10 }` and
/// `shadow = { version = "3", percent = 5 }` (versions as strings or integers).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraffic {
    #[serde(default)]
    weights: std::collections::BTreeMap<String, i64>,
    shadow: Option<RawShadow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShadow {
    version: StrOrNum,
    percent: StrOrNum,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StrOrNum {
    Int(i64),
    Float(f64),
    Str(String),
}

impl StrOrNum {
    fn text(&self) -> String {
        match self {
            StrOrNum::Int(i) => i.to_string(),
            StrOrNum::Float(f) => f.to_string(),
            StrOrNum::Str(s) => s.clone(),
        }
    }
}

impl RawTraffic {
    pub(super) fn validate(self) -> Result<TrafficPolicy, String> {
        let weights: Vec<(String, i64)> = self.weights.into_iter().collect();
        let shadow = match self.shadow {
            None => None,
            Some(s) => {
                let percent = match s.percent {
                    StrOrNum::Int(i) => i as f64,
                    StrOrNum::Float(f) => f,
                    StrOrNum::Str(t) => {
                        return Err(format!(
                            "traffic.shadow.percent must be a number, got {t:?}"
                        ))
                    }
                };
                Some((s.version.text(), percent))
            }
        };
        TrafficPolicy::validate(&weights, shadow, None).map_err(|e| format!("traffic.{e}"))
    }
}

/// `[rollout]` of a model config: a progressive rollout the model's source declares, started by
/// the server when the section appears or changes (`rollout::declared`). Its steps run on a
/// wall-clock schedule from `start` (unix seconds), else from the time the source declared it
/// (the config file's modification time; an S3 object's Last-Modified; the MLflow alias move),
/// so every replica reading the same source is at the same step at the same time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// A version number (from MLflow: the alias `challenger`, resolved by the source).
    pub candidate: toml::Value,
    pub stable: Option<toml::Value>,
    pub steps: Vec<i64>,
    pub step_duration_s: f64,
    pub max_error_rate_increase: Option<f64>,
    pub max_p99_ratio: Option<f64>,
    pub min_requests: Option<i64>,
    /// PSI limit on the candidate's predictions against the stable's (both under `[drift]`).
    pub max_prediction_drift: Option<f64>,
    pub start: Option<f64>,
}

impl RolloutSection {
    pub(super) fn validate(self) -> Result<RolloutSection, String> {
        if let Some(s) = self.start {
            if !(s.is_finite() && (0.0..=1e11).contains(&s)) {
                return Err(format!("rollout.start must be unix seconds, got {s}"));
            }
        }
        Ok(self)
    }

    /// A version given as a number or a string, as text.
    pub fn version_text(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ModelConfig;

    #[test]
    fn traffic_section_parses_weights_and_shadow() {
        let cfg = ModelConfig::parse(
            "[traffic]\nweights = { \"1\" = 90, \"2\" = 10 }\nshadow = { version = 3, percent = 5 }",
            "m",
        )
        .unwrap();
        let t = cfg.traffic.clone().unwrap();
        assert_eq!(
            t.weights,
            std::collections::BTreeMap::from([(1, 90), (2, 10)])
        );
        assert_eq!(
            t.shadow.as_ref().map(|s| (s.version, s.percent)),
            Some((3, 5.0))
        );
        assert!(cfg.same_versions_as(&ModelConfig::parse("", "m").unwrap()));
        for (text, want) in [
            ("[traffic]\nweights = { \"1\" = -5 }", "weight -5"),
            ("[traffic]\nweights = { \"1\" = 0 }", "all weights are zero"),
            (
                "[traffic]\nweights = { \"a\" = 1 }",
                "not a positive integer",
            ),
            (
                "[traffic]\nshadow = { version = \"2\", percent = 150 }",
                "outside 0..=100",
            ),
            ("[traffic]\nsplit = 3", "unknown field"),
        ] {
            let err = ModelConfig::parse(text, "m").unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
