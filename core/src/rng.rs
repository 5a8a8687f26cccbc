//! A small, fast, seedable random generator whose stream never changes between versions or
//! platforms (xoshiro256++ seeded through splitmix64), so that a seed always gives the same
//! simulated data and the same random choices. numpy-compatible streams, where results must
//! match the Python tool, live next to their use (see `dataset::Mt19937`).

/// xoshiro256++ (Blackman & Vigna).
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
    spare_normal: Option<f64>,
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let s = [
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
            splitmix64(&mut x),
        ];
        Rng {
            s,
            spare_normal: None,
        }
    }

    /// An independent generator for item `index` of stream `seed` (e.g. image `i`), so that
    /// parallel work gives the same numbers whatever the batch sizes or thread count.
    pub fn for_item(seed: u64, stream: u64, index: u64) -> Self {
        let mut x = seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03);
        let a = splitmix64(&mut x);
        Rng::new(a ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let r = (self.s[0].wrapping_add(self.s[3]))
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// Standard normal (Box–Muller; the second value of each pair is kept for the next call).
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare_normal.take() {
            return v;
        }
        loop {
            let u1 = self.uniform();
            let u2 = self.uniform();
            if u1 > 0.0 {
                let r = (-2.0 * u1.ln()).sqrt();
                let t = 2.0 * std::f64::consts::PI * u2;
                self.spare_normal = Some(r * t.sin());
                return r * t.cos();
            }
        }
    }

    /// A uniformly random rotation (Haar measure), row-major, from a uniform unit quaternion.
    pub fn rotation(&mut self) -> [f64; 9] {
        let (mut w, mut x, mut y, mut z);
        loop {
            w = self.normal();
            x = self.normal();
            y = self.normal();
            z = self.normal();
            let n = (w * w + x * x + y * y + z * z).sqrt();
            if n > 1e-12 {
                w /= n;
                x /= n;
                y /= n;
                z /= n;
                break;
            }
        }
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
            2.0 * (x * y + w * z),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - w * x),
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            1.0 - 2.0 * (x * x + y * y),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_well_spread() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut r = Rng::new(1);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let v = r.normal();
            s += v;
            s2 += v * v;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.01,
            "{mean} {var}"
        );
        let u: f64 = (0..n).map(|_| r.uniform()).sum::<f64>() / n as f64;
        assert!((u - 0.5).abs() < 0.005);
        assert!((0..1000).all(|_| r.below(3) < 3));
    }

    #[test]
    fn rotations_are_rotations_and_uniform() {
        let mut r = Rng::new(3);
        let mut zsum = 0.0;
        let n = 20_000;
        for _ in 0..n {
            let m = r.rotation();
            for a in 0..3 {
                for b in 0..3 {
                    let d: f64 = (0..3).map(|k| m[3 * k + a] * m[3 * k + b]).sum();
                    assert!((d - if a == b { 1.0 } else { 0.0 }).abs() < 1e-12);
                }
            }
            let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
                + m[2] * (m[3] * m[7] - m[4] * m[6]);
            assert!((det - 1.0).abs() < 1e-12);
            zsum += m[8];
        }
        // For Haar rotations E[R22] = 0.
        assert!((zsum / n as f64).abs() < 0.02);
    }

    #[test]
    fn item_streams_differ() {
        let a = Rng::for_item(0, 1, 0).next_u64();
        let b = Rng::for_item(0, 1, 1).next_u64();
        let c = Rng::for_item(0, 2, 0).next_u64();
        assert!(a != b && a != c && b != c);
        assert_eq!(a, Rng::for_item(0, 1, 0).next_u64());
    }
}
