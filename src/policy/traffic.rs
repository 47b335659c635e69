//! A model's traffic policy (weights, shadow) and the pure choice of a version for one request:
//! pinned, sticky (a routing key), or weighted random. No I/O, no locks: the policy lives in the
//! registry snapshot and `pick` runs on every request.
//!
//! Sticky routing is weighted rendezvous hashing: for a key, each weighted version `v` gets a
//! score `w_v / -ln(u_v)` with `u_v` a fixed hash of (key, v) in (0, 1), and the highest score
//! wins. A version then gets a share `w_v / Σw` of the keys, and a key moves from version `a` to
//! `b` only if `w_b / w_a` rose (its score for `b` must overtake the one for `a`): growing a
//! canary while the other weights stay or shrink moves keys into the canary and never out of it.
//! (A cumulative split of [0, 1) gives that for two versions only; with three, growing the last
//! segment shifts the middle one and moves keys between versions whose weights did not change.)

use std::cell::Cell;
use std::collections::BTreeMap;

use crate::error::clip;

/// Traffic weights and an optional shadow for one model. Weights are relative (90/10 and 9/1
/// split alike); versions are in ascending order. No weights: the highest ready version serves
/// (as with no policy), which a shadow may accompany.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficPolicy {
    pub weights: BTreeMap<u64, u32>,
    pub shadow: Option<Shadow>,
}

/// Mirror `percent` of routed requests to `version`; its answers are compared and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadow {
    pub version: u64,
    /// 0..=100; fractions allowed.
    pub percent: f64,
}

/// Why a request went where it went (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// No policy: the highest ready version.
    Default,
    /// The request named its version.
    Pinned,
    /// Weighted random.
    Weighted,
    /// Weighted by the request's routing key.
    Sticky,
    /// A mirrored copy of a request.
    Shadow,
}

impl RouteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Default => "default",
            RouteReason::Pinned => "pinned",
            RouteReason::Weighted => "weighted",
            RouteReason::Sticky => "sticky",
            RouteReason::Shadow => "shadow",
        }
    }
}

/// Largest weight accepted: sums stay far from overflow.
pub const MAX_WEIGHT: i64 = 1_000_000;

impl TrafficPolicy {
    /// Checks a policy given as raw numbers (from JSON, gRPC or TOML): versions positive
    /// integers, weights integers in 0..=MAX_WEIGHT, not all zero, shadow percent in 0..=100.
    /// `loaded` (when given) lists the versions that may be named.
    pub fn validate(
        weights: &[(String, i64)],
        shadow: Option<(String, f64)>,
        loaded: Option<&[u64]>,
    ) -> Result<TrafficPolicy, String> {
        let version = |v: &str, what: &str| -> Result<u64, String> {
            let n = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{what}: version {} is not a positive integer", clip(v)))?;
            if let Some(loaded) = loaded {
                if !loaded.contains(&n) {
                    return Err(format!(
                        "{what}: version {n} is not loaded (loaded: {loaded:?})"
                    ));
                }
            }
            Ok(n)
        };
        let mut map = BTreeMap::new();
        for (v, w) in weights {
            let n = version(v, "weights")?;
            if !(0..=MAX_WEIGHT).contains(w) {
                return Err(format!(
                    "weights: version {n} has weight {w}; weights are integers in 0..={MAX_WEIGHT}"
                ));
            }
            if map.insert(n, *w as u32).is_some() {
                return Err(format!("weights: version {n} is given twice"));
            }
        }
        if !map.is_empty() && map.values().all(|&w| w == 0) {
            return Err("weights: all weights are zero; at least one must be positive".into());
        }
        let shadow = match shadow {
            None => None,
            Some((v, percent)) => {
                let n = version(&v, "shadow")?;
                if !(0.0..=100.0).contains(&percent) {
                    return Err(format!("shadow: percent {percent} is outside 0..=100"));
                }
                Some(Shadow {
                    version: n,
                    percent,
                })
            }
        };
        Ok(TrafficPolicy {
            weights: map,
            shadow,
        })
    }

    /// All traffic to `version` (blue/green switch, promotion); the other weighted versions stay
    /// listed at 0 so the policy shows what was switched away from.
    pub fn all_to(&self, version: u64) -> TrafficPolicy {
        let mut weights: BTreeMap<u64, u32> = self.weights.keys().map(|&v| (v, 0)).collect();
        weights.insert(version, 100);
        TrafficPolicy {
            weights,
            shadow: self.shadow.clone(),
        }
    }
}

/// Picks a version among `candidates` (version, weight), skipping zero weights. The caller
/// passes only versions that can serve. `None` when no candidate has a positive weight.
pub fn pick(
    candidates: impl Iterator<Item = (u64, u32)> + Clone,
    key: Option<&[u8]>,
) -> Option<u64> {
    let total: u64 = candidates.clone().map(|(_, w)| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    match key {
        Some(key) => pick_sticky(candidates, key_hash(key)),
        None => {
            let mut r = random_u64() % total;
            for (v, w) in candidates {
                let w = u64::from(w);
                if r < w {
                    return Some(v);
                }
                r -= w;
            }
            None
        }
    }
}

/// Weighted rendezvous hashing over (version, weight): the highest `w / -ln(u)` wins.
pub fn pick_sticky(candidates: impl Iterator<Item = (u64, u32)>, key_hash: u64) -> Option<u64> {
    let mut best: Option<(u64, f64)> = None;
    for (v, w) in candidates {
        if w == 0 {
            continue;
        }
        let u = unit(mix(key_hash ^ mix(v)));
        // u in (0, 1): -ln(u) in (0, ~37], never zero.
        let score = f64::from(w) / -u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((v, score));
        }
    }
    best.map(|(v, _)| v)
}

/// FNV-1a (64-bit) of the key, then a fixed finaliser: the same key maps to the same number in
/// every process and release (std's `DefaultHasher` is seeded per process and may change).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser: spreads FNV's weak high bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 53 bits as a float strictly inside (0, 1).
fn unit(x: u64) -> f64 {
    ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

thread_local! {
    /// Per-thread splitmix64 state, seeded once from std's per-process random keys and the
    /// thread's id: no lock, no syscall per request.
    static RNG: Cell<u64> = Cell::new({
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id())
    });
}

/// A cheap uniform u64 (splitmix64), for weighted choices and shadow sampling; not for secrets.
pub fn random_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        mix(x.wrapping_sub(0x9e37_79b9_7f4a_7c15))
    })
}

/// True with probability `percent` / 100.
pub fn sample(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && unit(random_u64()) * 100.0 < percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user-{i}")).collect()
    }

    #[test]
    fn sticky_keys_map_stably_and_split_by_weight() {
        let policy = [(1, 90), (2, 10)];
        let first: Vec<u64> = keys(10_000)
            .iter()
            .map(|k| pick(policy.iter().copied(), Some(k.as_bytes())).unwrap())
            .collect();
        let again: Vec<u64> = keys(10_000)
            .iter()
            .map(|k| pick(policy.iter().copied(), Some(k.as_bytes())).unwrap())
            .collect();
        assert_eq!(
            first, again,
            "the same key always lands on the same version"
        );
        let canary = first.iter().filter(|&&v| v == 2).count() as f64;
        // Binomial(10000, 0.1): sd 30; 5 sd either side.
        assert!((850.0..=1150.0).contains(&canary), "canary keys: {canary}");
    }

    #[test]
    fn growing_the_canary_moves_keys_only_into_it() {
        let before = [(1, 90), (2, 10)];
        let after = [(1, 70), (2, 30)];
        let mut moved = 0;
        for k in keys(10_000) {
            let (a, b) = (
                pick(before.iter().copied(), Some(k.as_bytes())).unwrap(),
                pick(after.iter().copied(), Some(k.as_bytes())).unwrap(),
            );
            assert!(!(a == 2 && b == 1), "key {k} moved from canary to stable");
            moved += usize::from(a != b);
        }
        // About 20% of the keys move (from stable to canary).
        assert!((1_700..=2_300).contains(&moved), "moved {moved}");
        // With a third version at a fixed weight, growing the canary takes keys from the
        // others and moves none between them.
        let before = [(1, 60), (2, 30), (3, 10)];
        let after = [(1, 60), (2, 30), (3, 40)];
        for k in keys(10_000) {
            let (a, b) = (
                pick(before.iter().copied(), Some(k.as_bytes())).unwrap(),
                pick(after.iter().copied(), Some(k.as_bytes())).unwrap(),
            );
            assert!(a == b || b == 3, "key {k} moved from {a} to {b}");
        }
    }

    /// FNV-1a 64 of "user-42" then splitmix64's finaliser, computed independently (Python).
    const PINNED_USER_42: u64 = 0xe28b_a372_823d_e243;

    #[test]
    fn the_key_hash_is_fixed_across_processes() {
        // FNV-1a of "" is its offset basis; the finaliser is splitmix64's. Pinned values: a
        // change here would move every sticky key in a fleet.
        assert_eq!(key_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(key_hash(b"user-42"), key_hash(b"user-42"));
        assert_ne!(key_hash(b"user-42"), key_hash(b"user-43"));
        assert_eq!(key_hash(b"user-42"), PINNED_USER_42);
    }

    #[test]
    fn weighted_random_follows_the_weights_and_skips_zero() {
        let mut counts = BTreeMap::new();
        for _ in 0..20_000 {
            *counts
                .entry(pick([(1, 90), (2, 10), (3, 0)].into_iter(), None).unwrap())
                .or_insert(0) += 1;
        }
        assert_eq!(counts.get(&3), None);
        let c2 = f64::from(counts[&2]);
        // Binomial(20000, 0.1): sd 42.4.
        assert!((2000.0 - c2).abs() <= 5.0 * 42.5, "{counts:?}");
        assert_eq!(pick([(1, 0)].into_iter(), None), None);
        assert_eq!(pick(std::iter::empty(), Some(b"k")), None);
    }

    #[test]
    fn validation_names_the_problem() {
        let w = |v: &[(&str, i64)]| -> Vec<(String, i64)> {
            v.iter().map(|(a, b)| (a.to_string(), *b)).collect()
        };
        let loaded = [1, 2];
        let ok = TrafficPolicy::validate(&w(&[("1", 90), ("2", 10)]), None, Some(&loaded)).unwrap();
        assert_eq!(ok.weights, BTreeMap::from([(1, 90), (2, 10)]));
        for (weights, shadow, want) in [
            (w(&[("3", 10)]), None, "not loaded"),
            (w(&[("1", -1)]), None, "weight -1"),
            (w(&[("1", 0), ("2", 0)]), None, "all weights are zero"),
            (w(&[("x", 1)]), None, "not a positive integer"),
            (w(&[("0", 1)]), None, "not a positive integer"),
            (
                w(&[("1", 1)]),
                Some(("2".to_string(), 101.0)),
                "outside 0..=100",
            ),
            (
                w(&[("1", 1)]),
                Some(("9".to_string(), 5.0)),
                "shadow: version 9",
            ),
        ] {
            let err = TrafficPolicy::validate(&weights, shadow, Some(&loaded)).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn all_to_switches_every_weight() {
        let p = TrafficPolicy {
            weights: BTreeMap::from([(1, 90), (2, 10)]),
            shadow: None,
        };
        assert_eq!(p.all_to(2).weights, BTreeMap::from([(1, 0), (2, 100)]));
    }

    #[test]
    fn sampling_honours_the_percentage() {
        assert!(sample(100.0));
        assert!(!sample(0.0));
        let hits = (0..20_000).filter(|_| sample(5.0)).count() as f64;
        // Binomial(20000, 0.05): sd 30.8.
        assert!((1000.0 - hits).abs() <= 5.0 * 31.0, "{hits}");
    }
}
