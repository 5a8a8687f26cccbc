//! Small statistics shared by the rooms.

/// numpy's `np.percentile(v, q)` (default linear interpolation, `q` in 0–100) of values
/// sorted ascending; `None` when there are none.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    Some(sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// Adjusted Rand index of two labelings of the same items (Hubert & Arabie; sklearn's
/// `adjusted_rand_score`): 1 for identical partitions whatever the label names, about 0
/// for unrelated ones. `None` when the lengths differ or there are fewer than 2 items.
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let ka = a.iter().max()? + 1;
    let kb = b.iter().max()? + 1;
    let mut table = vec![vec![0u64; kb]; ka];
    for (&x, &y) in a.iter().zip(b) {
        table[x][y] += 1;
    }
    let c2 = |n: u64| (n as f64) * (n.saturating_sub(1) as f64) / 2.0;
    let sum_ij: f64 = table.iter().flatten().map(|&n| c2(n)).sum();
    let sum_a: f64 = table.iter().map(|r| c2(r.iter().sum())).sum();
    let sum_b: f64 = (0..kb).map(|j| c2(table.iter().map(|r| r[j]).sum())).sum();
    let total = c2(a.len() as u64);
    let expected = sum_a * sum_b / total;
    let max = 0.5 * (sum_a + sum_b);
    if max == expected {
        // Both partitions trivial (one cluster each, or all singletons): identical.
        return Some(1.0);
    }
    Some((sum_ij - expected) / (max - expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ari_matches_sklearn() {
        let ari = |a: &[usize], b: &[usize]| adjusted_rand_index(a, b).unwrap();
        assert!((ari(&[0, 0, 1, 1], &[1, 1, 0, 0]) - 1.0).abs() < 1e-12);
        // sklearn: adjusted_rand_score([0,0,1,1],[0,0,1,2]) = 0.5714285714
        assert!((ari(&[0, 0, 1, 1], &[0, 0, 1, 2]) - 0.5714285714).abs() < 1e-9);
        // adjusted_rand_score([0,0,0,1,1,1],[0,1,2,0,1,2]) = -4/11
        assert!((ari(&[0, 0, 0, 1, 1, 1], &[0, 1, 2, 0, 1, 2]) + 4.0 / 11.0).abs() < 1e-12);
        assert_eq!(adjusted_rand_index(&[0], &[0]), None);
        assert_eq!(adjusted_rand_index(&[0, 1], &[0]), None);
    }

    #[test]
    fn matches_numpy_linear() {
        // np.percentile([1, 2, 3, 4, 10], q) for q = 95, 50, 0, 100, 12.5
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert!((percentile_sorted(&v, 95.0).unwrap() - 8.8).abs() < 1e-12);
        assert_eq!(percentile_sorted(&v, 50.0), Some(3.0));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1.0));
        assert_eq!(percentile_sorted(&v, 100.0), Some(10.0));
        assert!((percentile_sorted(&v, 12.5).unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(percentile_sorted(&[], 50.0), None);
    }
}
