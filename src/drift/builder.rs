//! `ProfileBuilder`: a reference profile from data fed batch by batch (numeric f64 columns,
//! string categorical columns, or whole tensors). Quantile edges come from a bounded
//! reservoir sample of each numeric feature; categories are counted exactly up to a bound on
//! distinct values.

use std::collections::HashMap;

use super::extract;
pub use super::layout::{FeatureSpec, TensorSpec};
use super::profile::{numeric_bin, FeatureProfile, Kind, Profile, Source};
use super::profile::{TensorProfile, FORMAT};
use crate::tensor::{DataType, Tensor};

/// Values kept per numeric feature for its quantiles.
pub const SAMPLE_SIZE: usize = 100_000;
/// Distinct categories counted per feature; later new ones count as "other".
const MAX_DISTINCT: usize = 10_000;

enum Acc {
    Numeric {
        sample: Vec<f64>,
        seen: u64,
    },
    Categorical {
        counts: HashMap<String, u64>,
        unlisted: u64,
    },
}

/// Builds a [`Profile`] from data fed batch by batch.
pub struct ProfileBuilder {
    specs: Vec<TensorSpec>,
    acc: Vec<Vec<Acc>>,
    bins: usize,
    max_categories: usize,
    rng: u64,
    /// Values fed per feature (NaN included).
    fed: Vec<Vec<u64>>,
}

/// How a category is spelled from a numeric value: integers without a fraction.
pub fn category_of(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

impl ProfileBuilder {
    /// `bins` quantile bins per numeric feature, the top `max_categories` per categorical one.
    pub fn new(specs: Vec<TensorSpec>, bins: usize, max_categories: usize) -> ProfileBuilder {
        let acc = specs
            .iter()
            .map(|t| {
                t.features
                    .iter()
                    .map(|f| match f.kind {
                        Kind::Numeric => Acc::Numeric {
                            sample: Vec::new(),
                            seen: 0,
                        },
                        Kind::Categorical => Acc::Categorical {
                            counts: HashMap::new(),
                            unlisted: 0,
                        },
                    })
                    .collect()
            })
            .collect();
        let fed = specs.iter().map(|t| vec![0; t.features.len()]).collect();
        ProfileBuilder {
            fed,
            specs,
            acc,
            bins,
            max_categories,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// (tensor, feature) index of the feature named `name` (the first match).
    pub fn find(&self, name: &str) -> Option<(usize, usize)> {
        self.specs.iter().enumerate().find_map(|(t, s)| {
            s.features
                .iter()
                .position(|f| f.name == name)
                .map(|f| (t, f))
        })
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic, so the same data gives the same profile.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Feeds values of one feature (numeric ones sampled, categorical ones spelled by
    /// [`category_of`]).
    pub fn feed_numeric(&mut self, tensor: usize, feature: usize, values: &[f64]) {
        for &x in values {
            self.push_numeric(tensor, feature, x);
        }
        self.note_rows(tensor, Some(feature), values.len());
    }

    fn note_rows(&mut self, tensor: usize, feature: Option<usize>, n: usize) {
        if let Some(fed) = self.fed.get_mut(tensor) {
            for (i, c) in fed.iter_mut().enumerate() {
                if feature.is_none_or(|f| f == i) {
                    *c += n as u64;
                }
            }
        }
    }

    fn push_numeric(&mut self, tensor: usize, feature: usize, x: f64) {
        if x.is_nan() {
            return;
        }
        let r = self.next_random();
        match self.acc.get_mut(tensor).and_then(|a| a.get_mut(feature)) {
            Some(Acc::Numeric { sample, seen }) => {
                *seen += 1;
                if sample.len() < SAMPLE_SIZE {
                    sample.push(x);
                } else {
                    // Reservoir sampling (algorithm R): each value kept with probability k/seen.
                    let j = (r % *seen) as usize;
                    if j < SAMPLE_SIZE {
                        sample[j] = x;
                    }
                }
            }
            Some(Acc::Categorical { .. }) => self.push_category(tensor, feature, &category_of(x)),
            None => {}
        }
    }

    /// Feeds string values of one categorical feature.
    pub fn feed_categorical(&mut self, tensor: usize, feature: usize, values: &[&str]) {
        for v in values {
            self.push_category(tensor, feature, v);
        }
        self.note_rows(tensor, Some(feature), values.len());
    }

    fn push_category(&mut self, tensor: usize, feature: usize, v: &str) {
        if let Some(Acc::Categorical { counts, unlisted }) =
            self.acc.get_mut(tensor).and_then(|a| a.get_mut(feature))
        {
            if let Some(c) = counts.get_mut(v) {
                *c += 1;
            } else if counts.len() < MAX_DISTINCT {
                counts.insert(v.to_owned(), 1);
            } else {
                *unlisted += 1;
            }
        }
    }

    /// Feeds every feature of spec `tensor` from a batch of that tensor.
    pub fn feed_tensor(&mut self, tensor: usize, t: &Tensor) -> Result<(), String> {
        let Some(spec) = self.specs.get(tensor).cloned() else {
            return Err(format!("no tensor {tensor} in the profile"));
        };
        for (i, f) in spec.features.iter().enumerate() {
            let ok = if t.dtype() == DataType::Bytes {
                let mut items = Vec::new();
                let ok = extract::for_each_bytes(t, f.source, |b| {
                    items.push(String::from_utf8_lossy(b).into_owned())
                });
                for v in &items {
                    self.push_category(tensor, i, v);
                }
                ok
            } else {
                let mut values = Vec::new();
                let ok = extract::for_each_value(t, f.source, |x| values.push(x));
                for x in values {
                    self.push_numeric(tensor, i, x);
                }
                ok
            };
            if !ok {
                return Err(format!(
                    "tensor {:?} of shape {:?} has no feature {:?}",
                    spec.tensor,
                    t.shape(),
                    f.name
                ));
            }
        }
        self.note_rows(tensor, None, t.rows());
        Ok(())
    }

    /// Rows fed so far (the most any feature got).
    pub fn rows(&self) -> u64 {
        self.fed.iter().flatten().copied().max().unwrap_or(0)
    }

    /// The profile: quantile edges and proportions from each sample, top categories.
    pub fn finish(self) -> Result<Profile, String> {
        let rows = self.rows();
        let mut tensors = Vec::with_capacity(self.specs.len());
        for (spec, accs) in self.specs.into_iter().zip(self.acc) {
            let mut features = Vec::with_capacity(accs.len());
            for (f, acc) in spec.features.into_iter().zip(accs) {
                features.push(finish_feature(f, acc, self.bins, self.max_categories)?);
            }
            tensors.push(TensorProfile {
                tensor: spec.tensor,
                role: spec.role,
                features,
            });
        }
        let profile = Profile {
            format: FORMAT.to_owned(),
            rows,
            tensors,
        };
        profile.validate()?;
        Ok(profile)
    }
}

fn finish_feature(
    f: FeatureSpec,
    acc: Acc,
    bins: usize,
    max_categories: usize,
) -> Result<FeatureProfile, String> {
    let (column, summary) = match f.source {
        Source::Value => (None, None),
        Source::Column(c) => (Some(c), None),
        Source::Summary(s) => (None, Some(s)),
    };
    let mut out = FeatureProfile {
        name: f.name,
        column,
        summary,
        kind: f.kind,
        edges: Vec::new(),
        categories: Vec::new(),
        proportions: Vec::new(),
    };
    match acc {
        Acc::Numeric { mut sample, .. } => {
            if sample.is_empty() {
                return Err(format!("feature {:?}: no values", out.name));
            }
            sample.sort_by(f64::total_cmp);
            let n = sample.len();
            let mut edges: Vec<f64> = (0..=bins)
                .map(|i| sample[i * (n - 1) / bins])
                .filter(|e| e.is_finite())
                .collect();
            edges.dedup();
            if edges.len() < 2 {
                // One value throughout: a category of its own, anything else is "other".
                let counts = HashMap::from([(category_of(sample[0]), n as u64)]);
                return finish_categorical(out, counts, 0, max_categories);
            }
            let mut counts = vec![0u64; edges.len() + 1];
            for &x in &sample {
                if let Some(b) = numeric_bin(&edges, x) {
                    counts[b] += 1;
                }
            }
            out.proportions = super::stats::proportions(&counts);
            out.edges = edges;
            Ok(out)
        }
        Acc::Categorical { counts, unlisted } => {
            finish_categorical(out, counts, unlisted, max_categories)
        }
    }
}

fn finish_categorical(
    mut out: FeatureProfile,
    counts: HashMap<String, u64>,
    unlisted: u64,
    max_categories: usize,
) -> Result<FeatureProfile, String> {
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    if ranked.is_empty() {
        return Err(format!("feature {:?}: no values", out.name));
    }
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let other: u64 = unlisted + ranked.iter().skip(max_categories).map(|c| c.1).sum::<u64>();
    ranked.truncate(max_categories);
    // Listed in a stable order (names), so profiles of the same data compare equal.
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tally: Vec<u64> = ranked.iter().map(|c| c.1).collect();
    tally.push(other);
    out.kind = Kind::Categorical;
    out.proportions = super::stats::proportions(&tally);
    out.categories = ranked.into_iter().map(|c| c.0).collect();
    Ok(out)
}
