//! Zipfian key choice: rank `k` (1-based) of `n` is drawn with probability
//! proportional to `1 / k^theta`.
//!
//! The generator is rejection-inversion (Hörmann and Derflinger, 1996, as
//! used by Apache Commons and `rand_distr`): O(1) set-up and O(1) expected
//! time per draw for any `n`, so a key space of a billion costs nothing to
//! prepare, unlike Gray et al.'s generator whose zeta(n) sum is O(n).

use crate::rng::SplitMix64;

/// A Zipf distribution over ranks `1..=n` with exponent `theta >= 0`
/// (`theta = 0` is uniform).
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    theta: f64,
    /// The total mass of the continuous envelope, `H(n + 1/2)`-like
    /// normaliser used by the inversion.
    t: f64,
    /// `1 / (1 - theta)`, unused when `theta == 1`.
    q: f64,
}

impl Zipf {
    /// A distribution over `n >= 1` ranks. Returns `None` for `n == 0` or a
    /// negative or non-finite `theta`.
    pub fn new(n: u64, theta: f64) -> Option<Self> {
        if n == 0 || !theta.is_finite() || theta < 0.0 {
            return None;
        }
        let n = n as f64;
        let t = if theta == 1.0 {
            1.0 + n.ln()
        } else {
            (n.powf(1.0 - theta) - theta) / (1.0 - theta)
        };
        let q = if theta == 1.0 {
            0.0
        } else {
            1.0 / (1.0 - theta)
        };
        Some(Zipf { n, theta, t, q })
    }

    fn inverse_cdf(&self, p: f64) -> f64 {
        let pt = p * self.t;
        if pt <= 1.0 {
            pt
        } else if self.theta == 1.0 {
            (pt - 1.0).exp()
        } else {
            (pt * (1.0 - self.theta) + self.theta).powf(self.q)
        }
    }

    /// Draws a rank in `1..=n`; rank 1 is the most frequent.
    pub fn sample(&self, rng: &mut SplitMix64) -> u64 {
        loop {
            let inv_b = self.inverse_cdf(rng.next_f64());
            let x = (inv_b + 1.0).floor();
            let mut ratio = x.powf(-self.theta);
            if x > 1.0 {
                ratio *= inv_b.powf(self.theta);
            }
            if rng.next_f64() < ratio {
                // The envelope never exceeds n, but clamp so that float
                // rounding can never produce rank n + 1.
                return (x.min(self.n)) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws `draws` ranks and checks each of the first ranks' observed
    /// frequency against `k^-theta / H(n, theta)` within `tolerance`
    /// (relative), and the total variation distance overall against what
    /// sampling noise alone would give.
    fn check(n: u64, theta: f64, seed: u64, draws: u64, tolerance: f64) {
        println!("zipf check: n={n} theta={theta} seed={seed}");
        let zipf = Zipf::new(n, theta).unwrap();
        let mut rng = SplitMix64::new(seed);
        let mut counts = vec![0u64; n as usize + 1];
        for _ in 0..draws {
            let k = zipf.sample(&mut rng);
            assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
            counts[k as usize] += 1;
        }
        let norm: f64 = (1..=n).map(|k| (k as f64).powf(-theta)).sum();
        let (mut distance, mut noise) = (0.0, 0.0);
        for k in 1..=n {
            let expected = (k as f64).powf(-theta) / norm;
            let observed = counts[k as usize] as f64 / draws as f64;
            distance += (expected - observed).abs() / 2.0;
            // E|observed - expected| for a binomial count, by the normal
            // approximation: sampling noise alone gives about this distance.
            noise += (2.0 / std::f64::consts::PI).sqrt()
                * (expected * (1.0 - expected) / draws as f64).sqrt()
                / 2.0;
            if k <= 5 {
                let error = (observed - expected).abs() / expected;
                assert!(
                    error < tolerance,
                    "rank {k}: observed {observed}, expected {expected}"
                );
            }
        }
        assert!(
            distance < 1.5 * noise + 0.002,
            "total variation distance {distance}, noise alone {noise}"
        );
    }

    #[test]
    fn zipfian_frequencies_match_the_distribution() {
        check(100, 0.99, 1, 400_000, 0.03);
        check(1000, 1.0, 2, 400_000, 0.03);
        check(50, 1.5, 3, 400_000, 0.03);
        check(10, 0.5, 4, 400_000, 0.03);
    }

    #[test]
    fn theta_zero_is_uniform() {
        check(20, 0.0, 5, 200_000, 0.03);
    }

    #[test]
    fn a_key_space_of_one_always_gives_rank_one() {
        let zipf = Zipf::new(1, 0.99).unwrap();
        let mut rng = SplitMix64::new(9);
        assert!((0..1000).all(|_| zipf.sample(&mut rng) == 1));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        assert!(Zipf::new(0, 1.0).is_none());
        assert!(Zipf::new(10, -0.1).is_none());
        assert!(Zipf::new(10, f64::NAN).is_none());
    }
}
