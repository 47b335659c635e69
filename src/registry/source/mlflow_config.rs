//! The `config.toml` generated for a model served from MLflow: the model's own without
//! `[source]`, its versions fixed to the aliased ones, its `[traffic]` weights and `[rollout]`
//! versions with aliases resolved to version numbers.

use std::collections::BTreeMap;

/// The model's config without `[source]`, its versions fixed, its weights by version number.
pub(super) fn generated_config(
    table: &toml::Table,
    aliases: &BTreeMap<String, u64>,
    versions: &[u64],
) -> Result<String, String> {
    if versions.is_empty() {
        return Err("no alias points at a version (set champion)".into());
    }
    let mut out = table.clone();
    out.remove("source");
    let specific: Vec<toml::Value> = versions
        .iter()
        .map(|v| toml::Value::Integer(*v as i64))
        .collect();
    let mut policy = toml::Table::new();
    policy.insert("specific".into(), toml::Value::Array(specific));
    out.insert("version_policy".into(), toml::Value::Table(policy));
    let mut traffic = out
        .remove("traffic")
        .and_then(|t| t.as_table().cloned())
        .unwrap_or_default();
    let named = traffic
        .remove("weights")
        .and_then(|w| w.as_table().cloned());
    let mut weights: BTreeMap<u64, i64> = BTreeMap::new();
    match named {
        Some(named) => {
            for (key, w) in named {
                let w = w
                    .as_integer()
                    .ok_or(format!("traffic.weights.{key}: not an integer"))?;
                let v = key
                    .parse::<u64>()
                    .ok()
                    .or_else(|| aliases.get(&key).copied());
                if let Some(v) = v.filter(|v| versions.contains(v)) {
                    *weights.entry(v).or_default() += w;
                }
            }
        }
        None => {
            if let Some(v) = aliases.get("champion") {
                weights.insert(*v, 100);
            }
        }
    }
    if weights.values().any(|w| *w > 0) {
        let table: toml::Table = weights
            .into_iter()
            .map(|(v, w)| (v.to_string(), toml::Value::Integer(w)))
            .collect();
        traffic.insert("weights".into(), toml::Value::Table(table));
    }
    if !traffic.is_empty() {
        out.insert("traffic".into(), toml::Value::Table(traffic));
    }
    resolve_rollout(&mut out, aliases, versions);
    toml::to_string(&out).map_err(|e| e.to_string())
}

/// `[rollout]` with its `candidate` (default `challenger`) and `stable` (default `champion`)
/// as version numbers; dropped while the candidate's alias points nowhere served, so a
/// `challenger` move (to a new version) is a new rollout. Without `start` its clock starts when
/// this generated file changes: MLflow records no time for an alias move.
fn resolve_rollout(out: &mut toml::Table, aliases: &BTreeMap<String, u64>, versions: &[u64]) {
    let Some(mut rollout) = out.remove("rollout").and_then(|r| r.as_table().cloned()) else {
        return;
    };
    let resolve = |v: Option<&toml::Value>, default: &str| {
        let text = match v {
            None => default.to_owned(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        text.parse::<u64>()
            .ok()
            .or_else(|| aliases.get(&text).copied())
            .filter(|v| versions.contains(v))
    };
    let Some(candidate) = resolve(rollout.get("candidate"), "challenger") else {
        return;
    };
    rollout.insert("candidate".into(), toml::Value::Integer(candidate as i64));
    match resolve(rollout.get("stable"), "champion").filter(|s| *s != candidate) {
        Some(s) => rollout.insert("stable".into(), toml::Value::Integer(s as i64)),
        None => rollout.remove("stable"),
    };
    out.insert("rollout".into(), toml::Value::Table(rollout));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(a, v)| (a.to_string(), *v)).collect()
    }

    #[test]
    fn weights_by_alias_resolve_to_version_numbers() {
        let table: toml::Table = "max_batch_size = 8\n[source]\nmlflow = \"http://m\"\nregistered_model = \"f\"\n[traffic]\nweights = { champion = 90, challenger = 10 }".parse().unwrap();
        let text = generated_config(
            &table,
            &aliases(&[("champion", 1), ("challenger", 2)]),
            &[1, 2],
        )
        .unwrap();
        let cfg = crate::config::ModelConfig::parse(&text, "f").unwrap();
        assert_eq!(
            cfg.traffic.unwrap().weights,
            BTreeMap::from([(1, 90), (2, 10)])
        );
        assert!(!text.contains("source"));
        let text = generated_config(
            &table,
            &aliases(&[("champion", 2), ("challenger", 2)]),
            &[2],
        )
        .unwrap();
        let cfg = crate::config::ModelConfig::parse(&text, "f").unwrap();
        assert_eq!(cfg.traffic.unwrap().weights, BTreeMap::from([(2, 100)]));
    }

    #[test]
    fn without_weights_the_champion_takes_all_traffic() {
        let table: toml::Table = "[source]\nmlflow = \"http://m\"\nregistered_model = \"f\""
            .parse()
            .unwrap();
        let text = generated_config(
            &table,
            &aliases(&[("champion", 3), ("challenger", 4)]),
            &[3, 4],
        )
        .unwrap();
        let cfg = crate::config::ModelConfig::parse(&text, "f").unwrap();
        assert_eq!(cfg.traffic.unwrap().weights, BTreeMap::from([(3, 100)]));
    }

    #[test]
    fn a_rollout_follows_the_challenger_alias() {
        let table: toml::Table = "[source]\nmlflow = \"http://m\"\nregistered_model = \"f\"\n[rollout]\nsteps = [10, 100]\nstep_duration_s = 5".parse().unwrap();
        let text = generated_config(
            &table,
            &aliases(&[("champion", 1), ("challenger", 2)]),
            &[1, 2],
        )
        .unwrap();
        let r = crate::config::ModelConfig::parse(&text, "f")
            .unwrap()
            .rollout
            .unwrap();
        assert_eq!(
            (r.candidate, r.stable),
            (toml::Value::Integer(2), Some(toml::Value::Integer(1)))
        );
        let text = generated_config(&table, &aliases(&[("champion", 1)]), &[1]).unwrap();
        assert_eq!(
            crate::config::ModelConfig::parse(&text, "f")
                .unwrap()
                .rollout,
            None
        );
    }
}
