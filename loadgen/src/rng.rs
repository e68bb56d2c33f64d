//! A small seedable PRNG (SplitMix64), so that a run's key sequence is
//! reproducible from its seed and each connection gets its own stream.

/// SplitMix64 (Steele, Lea and Flood, 2014): one 64-bit state word, passes
/// BigCrush, and any seed (including 0) is a good one. Not cryptographic;
/// key choice needs speed and reproducibility, not secrecy.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The generator of stream `index` of a run seeded with `seed`: one per
    /// connection. The seed is mixed once more before it becomes the state,
    /// because SplitMix64 states that differ by a multiple of its increment
    /// give the same sequence shifted (`seed ^ index * increment` is nearly
    /// that), which made a run's connections draw their keys in near
    /// lockstep instead of independently.
    pub fn stream(seed: u64, index: u64) -> Self {
        SplitMix64::new(
            SplitMix64::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64(),
        )
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `[0, n)`; `n` must be at least 1.
    ///
    /// Lemire's multiply-shift: the bias is at most n / 2^64, far below what
    /// a load test can observe.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no valid result");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn the_streams_of_one_seed_draw_keys_independently() {
        // 64 connections x 160 draws over 10,000 keys: independent streams
        // touch about 10,000 * (1 - e^-1.024) = 6,410 distinct keys; shifted
        // copies of one stream touch far fewer.
        let mut seen = std::collections::HashSet::new();
        for index in 0..64 {
            let mut r = SplitMix64::stream(1, index);
            for _ in 0..160 {
                seen.insert(r.below(10_000));
            }
        }
        assert!(seen.len() > 6_000, "{} distinct keys", seen.len());
    }

    #[test]
    fn floats_stay_in_the_unit_interval_and_below_stays_below() {
        let mut r = SplitMix64::new(7);
        for _ in 0..10_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f), "{f}");
            assert!(r.below(3) < 3);
        }
    }
}
