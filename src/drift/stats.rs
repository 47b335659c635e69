//! The drift statistics of one closed window against its reference, on the same bins (pure):
//! PSI with additive smoothing, Jensen-Shannon distance (base 2, in [0, 1]) and the p-value of
//! Pearson's chi-square goodness-of-fit test, reported only when every expected count is >= 5.

/// Added to every proportion before PSI's logarithms so an empty bin gives a large but finite
/// term; both sides are renormalised afterwards.
pub const PSI_SMOOTHING: f64 = 1e-4;

/// Smallest expected count per bin for the chi-square p-value to be reported.
pub const MIN_EXPECTED: f64 = 5.0;

/// Proportions of `counts` (all zero when the counts are).
pub fn proportions(counts: &[u64]) -> Vec<f64> {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| if n == 0 { 0.0 } else { c as f64 / n as f64 })
        .collect()
}

fn smoothed(p: &[f64]) -> impl Iterator<Item = f64> + '_ {
    let total = 1.0 + PSI_SMOOTHING * p.len() as f64;
    p.iter().map(move |&x| (x + PSI_SMOOTHING) / total)
}

/// Population stability index of `current` against `reference` (proportions, same bins).
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    smoothed(reference)
        .zip(smoothed(current))
        .map(|(p, q)| (q - p) * (q / p).ln())
        .sum()
}

/// Jensen-Shannon distance (the square root of the divergence, base 2): scipy's
/// `jensenshannon(p, q, base=2)`.
pub fn js_distance(reference: &[f64], current: &[f64]) -> f64 {
    let kl_to_mean = |a: &[f64], b: &[f64]| -> f64 {
        a.iter()
            .zip(b)
            .filter(|(&x, _)| x > 0.0)
            .map(|(&x, &y)| x * (2.0 * x / (x + y)).log2())
            .sum()
    };
    let divergence = 0.5 * kl_to_mean(reference, current) + 0.5 * kl_to_mean(current, reference);
    divergence.max(0.0).sqrt()
}

/// The p-value of the chi-square test of `counts` against `reference` proportions, over the
/// bins the reference gives mass (a value in a bin the reference never saw shows in PSI and
/// JS). `None` unless there are two such bins and every expected count is at least 5.
pub fn chi_square_p_value(reference: &[f64], counts: &[u64]) -> Option<f64> {
    let mass: f64 = reference.iter().filter(|&&p| p > 0.0).sum();
    let support: Vec<(f64, u64)> = reference
        .iter()
        .zip(counts)
        .filter(|(&p, _)| p > 0.0)
        .map(|(&p, &c)| (p / mass, c))
        .collect();
    let n: u64 = support.iter().map(|&(_, c)| c).sum();
    if support.len() < 2 || n == 0 {
        return None;
    }
    let mut statistic = 0.0;
    for &(p, c) in &support {
        let expected = p * n as f64;
        if expected < MIN_EXPECTED {
            return None;
        }
        statistic += (c as f64 - expected).powi(2) / expected;
    }
    let dof = (support.len() - 1) as f64;
    Some(upper_regularized_gamma(dof / 2.0, statistic / 2.0))
}

/// Q(a, x) = Γ(a, x) / Γ(a): the chi-square survival function is Q(k/2, x/2). Series below
/// a + 1, continued fraction above (Numerical Recipes' gammq).
pub fn upper_regularized_gamma(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let log_prefix = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        (1.0 - sum * log_prefix.exp()).clamp(0.0, 1.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..1000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (log_prefix.exp() * h).clamp(0.0, 1.0)
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |acc, (i, g)| acc + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_score_zero_and_p_one() {
        let p = [0.25, 0.25, 0.5];
        assert!(psi(&p, &p).abs() < 1e-12);
        assert!(js_distance(&p, &p).abs() < 1e-7);
        assert!((chi_square_p_value(&p, &[25, 25, 50]).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn chi_square_survival_matches_known_values() {
        // scipy.stats.chi2.sf(3.84145882, 1) = 0.05; chi2.sf(18.307038, 10) = 0.05
        assert!((upper_regularized_gamma(0.5, 3.841_458_82 / 2.0) - 0.05).abs() < 1e-8);
        assert!((upper_regularized_gamma(5.0, 18.307_038 / 2.0) - 0.05).abs() < 1e-7);
    }

    #[test]
    fn p_value_needs_five_expected_per_bin() {
        assert_eq!(chi_square_p_value(&[0.5, 0.5], &[4, 5]), None);
        assert!(chi_square_p_value(&[0.5, 0.5, 0.0], &[5, 5, 3]).is_some());
    }
}
