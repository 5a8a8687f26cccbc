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

#[cfg(test)]
mod tests {
    use super::*;

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
