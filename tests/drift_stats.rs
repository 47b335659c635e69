//! Drift statistics with known answers: PSI, Jensen-Shannon distance and chi-square p-values
//! against scipy's on the same bins (tests/data/drift_golden.json, written by
//! tests/data/make_drift_golden.py), and the detector over windows of known distributions.

use ferroserve::config::drift::{DriftConfig, FeatureRef};
use ferroserve::drift::builder::{FeatureSpec, TensorSpec};
use ferroserve::drift::profile::{Kind, Role, Source};
use ferroserve::drift::stats::{chi_square_p_value, js_distance, proportions, psi};
use ferroserve::drift::window::{Counters, Thresholds, WindowState};
use ferroserve::drift::{layout, ProfileBuilder, Slot};
use ferroserve::tensor::{DataType, Tensor};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Deterministic normal draws: xorshift64* uniforms through Box-Muller.
struct Normal(u64);

impl Normal {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn draw(&mut self, mean: f64) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        mean + (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn column(&mut self, mean: f64, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.draw(mean)).collect()
    }
}

const ALPHA: f64 = 0.01;
const WINDOW: usize = 1000;

fn thresholds() -> Thresholds {
    Thresholds {
        psi: 0.25,
        js: None,
        p_value: Some(ALPHA),
    }
}

fn one_numeric_feature() -> Vec<TensorSpec> {
    let slot = Slot {
        name: "x".into(),
        dtype: DataType::F64,
        dims: vec![1],
    };
    let config = DriftConfig {
        features: vec![FeatureRef::Name("x0".into())],
        ..DriftConfig::default()
    };
    layout(&config, &[slot], &[]).unwrap()
}

/// Counters for a profile of `reference` (one numeric feature, decile bins).
fn counters_for(reference: &[f64]) -> Counters {
    let mut b = ProfileBuilder::new(one_numeric_feature(), 10, 10);
    b.feed_numeric(0, 0, reference);
    let profile = b.finish().unwrap();
    Counters::new(&profile, &["x".into()], &[]).unwrap()
}

/// Serves `values` as one window and closes it; returns (psi, p-value, drifting).
fn serve_window(c: &Counters, w: &mut WindowState, values: &[f64]) -> (f64, Option<f64>, bool) {
    let t = Tensor::from_values(vec![values.len(), 1], values).unwrap();
    c.observe(&[t], &[]);
    let closed = w
        .tick(
            c,
            Instant::now(),
            Duration::ZERO,
            WINDOW as u64,
            thresholds(),
        )
        .expect("a full window closes");
    let s = &closed.scores[0];
    (s.psi, s.p_value, s.drifting)
}

#[test]
fn psi_js_and_p_values_match_scipy_on_the_same_bins() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/drift_golden.json"
    ))
    .unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 6);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let reference: Vec<f64> = serde_json::from_value(c["reference"].clone()).unwrap();
        let counts: Vec<u64> = serde_json::from_value(c["counts"].clone()).unwrap();
        let current = proportions(&counts);
        let (want_psi, want_js) = (
            c["psi"].as_f64().unwrap(),
            c["js_distance"].as_f64().unwrap(),
        );
        let got_psi = psi(&reference, &current);
        let got_js = js_distance(&reference, &current);
        assert!(
            (got_psi - want_psi).abs() < 1e-9,
            "{name}: psi {got_psi} vs scipy {want_psi}"
        );
        assert!(
            (got_js - want_js).abs() < 1e-7,
            "{name}: js {got_js} vs scipy {want_js}"
        );
        let got_p = chi_square_p_value(&reference, &counts);
        match c["p_value"].as_f64() {
            None => assert_eq!(got_p, None, "{name}: scipy reports no p-value"),
            Some(want) => {
                let got = got_p.unwrap_or_else(|| panic!("{name}: no p-value, scipy {want}"));
                assert!(
                    (got - want).abs() <= 1e-9 * want.max(1e-300) + 1e-12,
                    "{name}: p {got} vs scipy {want}"
                );
            }
        }
    }
}

#[test]
fn same_distribution_for_100_windows_false_alarms_within_the_binomial_bound() {
    let mut rng = Normal(0x1234_5678_9abc_def1);
    let c = counters_for(&rng.column(0.0, 100_000));
    let mut w = WindowState::new(&c, Instant::now());
    let mut alarms = 0;
    for _ in 0..100 {
        let (psi, p, drifting) = serve_window(&c, &mut w, &rng.column(0.0, WINDOW));
        assert!(
            psi < 0.1,
            "PSI {psi} of a window of the reference distribution"
        );
        assert!(p.is_some(), "every bin expects at least 5 rows of 1000");
        alarms += usize::from(drifting);
    }
    // Alarms ~ Binomial(100, 0.01): P(X >= 6) < 0.001.
    assert!(
        alarms <= 5,
        "{alarms} false alarms in 100 windows at alpha {ALPHA}"
    );
}

#[test]
fn shifted_mean_is_detected_in_the_first_full_window() {
    let mut rng = Normal(42);
    let c = counters_for(&rng.column(0.0, 100_000));
    let mut w = WindowState::new(&c, Instant::now());
    let half = rng.column(0.5, WINDOW / 2);
    // Half a window is not scored: the window stays open until it holds min_count rows.
    let t = Tensor::from_values(vec![half.len(), 1], &half).unwrap();
    c.observe(&[t], &[]);
    assert!(w
        .tick(
            &c,
            Instant::now(),
            Duration::ZERO,
            WINDOW as u64,
            thresholds()
        )
        .is_none());
    let (psi, p, drifting) = serve_window(&c, &mut w, &rng.column(0.5, WINDOW / 2));
    assert!(drifting, "N(0.5, 1) against N(0, 1): psi {psi}, p {p:?}");
    assert!(p.unwrap() < 1e-10 && psi > 0.1, "psi {psi}, p {p:?}");
}

#[test]
fn categorical_mix_moving_from_50_50_to_70_30_is_detected() {
    let spec = vec![TensorSpec {
        tensor: "colour".into(),
        role: Role::Input,
        features: vec![FeatureSpec {
            name: "colour".into(),
            source: Source::Value,
            kind: Kind::Categorical,
        }],
    }];
    let mut b = ProfileBuilder::new(spec, 10, 10);
    let reference: Vec<&str> = (0..10_000)
        .map(|i| if i % 2 == 0 { "red" } else { "blue" })
        .collect();
    b.feed_categorical(0, 0, &reference);
    let profile = b.finish().unwrap();
    let f = &profile.tensors[0].features[0];
    assert_eq!(f.categories, ["blue", "red"]);
    assert_eq!(f.proportions, [0.5, 0.5, 0.0]);
    let c = Counters::new(&profile, &["colour".into()], &[]).unwrap();
    let mut w = WindowState::new(&c, Instant::now());
    let served: Vec<&str> = (0..WINDOW)
        .map(|i| if i % 10 < 7 { "red" } else { "blue" })
        .collect();
    c.observe(
        &[Tensor::from_byte_strings(vec![WINDOW], &served).unwrap()],
        &[],
    );
    let closed = w
        .tick(
            &c,
            Instant::now(),
            Duration::ZERO,
            WINDOW as u64,
            thresholds(),
        )
        .unwrap();
    assert_eq!(closed.counts[0], [300, 700, 0]);
    let s = &closed.scores[0];
    assert!(s.drifting && s.p_value.unwrap() < 1e-30, "{s:?}");
    assert!((s.psi - 0.1694).abs() < 1e-3, "{s:?}");
}

#[test]
fn prediction_drift_compares_versions_on_shared_bins_only() {
    use ferroserve::drift::prediction_drift;
    use ferroserve::drift::profile::FeatureProfile;
    let label = |edges: Vec<f64>| FeatureProfile {
        name: "score".into(),
        column: None,
        summary: None,
        kind: Kind::Numeric,
        proportions: vec![0.0; edges.len() + 1],
        edges,
        categories: Vec::new(),
    };
    let stable = vec![("y".to_owned(), label(vec![0.0, 1.0]), vec![0, 50, 50])];
    let same = vec![("y".to_owned(), label(vec![0.0, 1.0]), vec![0, 52, 48])];
    let moved = vec![("y".to_owned(), label(vec![0.0, 1.0]), vec![0, 10, 90])];
    let other_bins = vec![("y".to_owned(), label(vec![0.0, 2.0]), vec![0, 10, 90])];
    assert!(prediction_drift(&stable, &same).unwrap() < 0.01);
    let psi_moved = prediction_drift(&stable, &moved).unwrap();
    assert!((psi_moved - psi(&[0.0, 0.5, 0.5], &[0.0, 0.1, 0.9])).abs() < 1e-12);
    assert!(psi_moved > 0.25);
    assert_eq!(
        prediction_drift(&stable, &other_bins),
        None,
        "different bins are not compared"
    );
    assert_eq!(prediction_drift(&[], &moved), None);
}

#[test]
fn inputs_of_rank_above_two_are_summarised_per_row() {
    let slot = Slot {
        name: "image".into(),
        dtype: DataType::F32,
        dims: vec![2, 3],
    };
    let specs = layout(&DriftConfig::default(), &[slot], &[]).unwrap();
    let names: Vec<&str> = specs[0].features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["mean", "std", "norm"]);
    let mut b = ProfileBuilder::new(specs, 4, 10);
    let mut rng = Normal(7);
    let values: Vec<f32> = (0..600).map(|_| rng.draw(0.0) as f32).collect();
    b.feed_tensor(0, &Tensor::from_values(vec![100, 2, 3], &values).unwrap())
        .unwrap();
    let profile = b.finish().unwrap();
    assert_eq!(profile.rows, 100);
    let c = Counters::new(&profile, &["image".into()], &[]).unwrap();
    // Rows scaled by 10: the norm and std leave the reference's range, the mean's spread widens.
    let scaled: Vec<f32> = values.iter().map(|v| v * 10.0).collect();
    c.observe(
        &[Tensor::from_values(vec![100, 2, 3], &scaled).unwrap()],
        &[],
    );
    let mut w = WindowState::new(&c, Instant::now());
    let closed = w
        .tick(&c, Instant::now(), Duration::ZERO, 100, thresholds())
        .unwrap();
    let norm = &closed.scores[2];
    assert!(norm.drifting && norm.psi > 1.0, "{norm:?}");
    assert!(
        *closed.counts[2].last().unwrap() > 90,
        "norms overflow the reference range"
    );
}
