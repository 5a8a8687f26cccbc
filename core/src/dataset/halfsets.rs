//! Splitting a dataset into two halfsets, and the numpy-compatible generator behind the
//! random split.
//!
//! RECOVAR splits `n` images with `np.random.seed(seed); np.random.shuffle(arange(n))`, the
//! first `n // 2` going to halfset 0 and the rest to halfset 1, each sorted
//! (`data_io/halfsets.py::split_index_list`). We reproduce numpy's legacy MT19937 stream and
//! its shuffle exactly, so that the same images land in the same halves as in the Python
//! tool: results stay comparable image for image.

/// numpy's legacy `RandomState` MT19937 generator (32-bit Mersenne Twister).
pub struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    /// `np.random.seed(seed)` for an integer seed < 2³² (MT's `init_genrand`).
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            state[i] = 1_812_433_253u32
                .wrapping_mul(state[i - 1] ^ (state[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    /// The next 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// numpy's legacy `random_interval(max)`: uniform in `0..=max` by masked rejection.
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for s in [1, 2, 4, 8, 16, 32] {
            mask |= mask >> s;
        }
        if max <= 0xffff_ffff {
            loop {
                let v = (self.next_u32() as u64) & mask;
                if v <= max {
                    return v;
                }
            }
        }
        loop {
            let hi = self.next_u32() as u64;
            let lo = self.next_u32() as u64;
            let v = ((hi << 32) | lo) & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// numpy's legacy in-place `shuffle` of a 1-D array (Fisher–Yates from the end).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.interval(i as u64) as usize;
            v.swap(i, j);
        }
    }
}

/// Split positions `0..n` into two sorted halves exactly as RECOVAR's random split does.
/// The seed is taken modulo 2³² (numpy accepts 0..2³²−1).
pub fn random_split(n: usize, seed: u64) -> [Vec<usize>; 2] {
    let mut order: Vec<usize> = (0..n).collect();
    Mt19937::new(seed as u32).shuffle(&mut order);
    let half = n / 2;
    let mut a = order[..half].to_vec();
    let mut b = order[half..].to_vec();
    a.sort_unstable();
    b.sort_unstable();
    [a, b]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_outputs() {
        // First outputs of MT19937 after init_genrand(5489), from the reference
        // implementation (mt19937ar.c); numpy's seed(5489) gives the same stream.
        let mut g = Mt19937::new(5489);
        let want = [
            3_499_211_612u32,
            581_869_302,
            3_890_346_734,
            3_586_334_585,
            545_404_204,
        ];
        for w in want {
            assert_eq!(g.next_u32(), w);
        }
    }

    #[test]
    fn numpy_seed0_first_outputs() {
        // np.random.seed(0); np.random.randint(0, 2**32, dtype=np.uint64) draws raw
        // 32-bit words; the first raw word of seed 0 is 2357136044.
        let mut g = Mt19937::new(0);
        assert_eq!(g.next_u32(), 2_357_136_044);
        assert_eq!(g.next_u32(), 2_546_248_239);
    }

    #[test]
    fn numpy_shuffle_seed0_small() {
        // np.random.seed(0); a = np.arange(10); np.random.shuffle(a) -> [2 8 4 9 1 6 7 3 0 5]
        let mut a: Vec<usize> = (0..10).collect();
        Mt19937::new(0).shuffle(&mut a);
        assert_eq!(a, vec![2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
    }

    #[test]
    fn split_sizes() {
        let [a, b] = random_split(7, 0);
        assert_eq!((a.len(), b.len()), (3, 4));
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
    }
}
