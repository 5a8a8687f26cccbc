//! Endpoints of the trajectories `analyze --n-trajectories` computes between k-means centers
//! (algorithms.md §8 step 6), and the straight path used when the latent space has one
//! dimension.

/// RECOVAR's `pick_pairs`: pairs of center indices `(start, end)` meant to cover the latent
/// space.
///
/// The first `n_pairs / 2` pairs are found by repeatedly taking the farthest pair of centers
/// (the first maximum of the distance matrix in row-major order, so `start < end`) and then
/// zeroing the rows and columns of both; once every entry is zero this yields `(0, 0)`, as the
/// Python code does. Then, for the axes `k = 0, 1, ...` up to `min(n_pairs − n_pairs / 2,
/// dim)` of them, the pair (center with the largest coordinate `k`, center with the smallest)
/// (first on ties). Squared distances are used; they have the same maximum.
///
/// `centers` is `k × dim`, row-major; no centers, or `dim` = 0, gives no pairs.
pub fn pick_pairs(centers: &[f32], dim: usize, n_pairs: usize) -> Vec<(usize, usize)> {
    if dim == 0 || centers.len() < dim {
        return Vec::new();
    }
    let k = centers.len() / dim;
    let row = |i: usize| &centers[i * dim..(i + 1) * dim];
    let mut dist = vec![0.0f64; k * k];
    for i in 0..k {
        for j in 0..k {
            dist[i * k + j] = row(i)
                .iter()
                .zip(row(j))
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum();
        }
    }
    let mut pairs = Vec::with_capacity(n_pairs);
    for _ in 0..n_pairs / 2 {
        let mut best = 0;
        for (idx, &d) in dist.iter().enumerate() {
            if d > dist[best] {
                best = idx;
            }
        }
        let (i, j) = (best / k, best % k);
        for m in [i, j] {
            for c in 0..k {
                dist[m * k + c] = 0.0;
                dist[c * k + m] = 0.0;
            }
        }
        pairs.push((i, j));
    }
    for axis in 0..(n_pairs - n_pairs / 2).min(dim) {
        let (mut hi, mut lo) = (0, 0);
        for i in 1..k {
            if row(i)[axis] > row(hi)[axis] {
                hi = i;
            }
            if row(i)[axis] < row(lo)[axis] {
                lo = i;
            }
        }
        pairs.push((hi, lo));
    }
    pairs
}

/// `n_points` evenly spaced points from `a` to `b`, both included (numpy `linspace` per
/// coordinate), `n_points × dim` row-major with `dim = min(a.len(), b.len())`. One point
/// gives `a`; zero gives nothing.
pub fn straight_line(a: &[f32], b: &[f32], n_points: usize) -> Vec<f32> {
    let dim = a.len().min(b.len());
    let mut out = Vec::with_capacity(n_points * dim);
    for i in 0..n_points {
        if i + 1 == n_points && n_points > 1 {
            out.extend_from_slice(&b[..dim]);
            break;
        }
        let t = if n_points > 1 {
            i as f64 / (n_points - 1) as f64
        } else {
            0.0
        };
        out.extend(
            a.iter()
                .zip(b)
                .map(|(&p, &q)| (p as f64 + t * (q as f64 - p as f64)) as f32),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn farthest_pairs_then_axis_extremes() {
        // Five 2-D centers: 3 and 4 are farthest apart (squared distance 133.25), then, of
        // 0, 1 and 2, centers 1 and 2 (17).
        let centers = [
            0.0f32, 0.0, // 0
            1.0, 1.0, // 1
            2.0, -3.0, // 2
            10.0, 0.5, // 3
            -1.0, 4.0, // 4
        ];
        let p = pick_pairs(&centers, 2, 5);
        // 5 // 2 = 2 far pairs, then min(3, 2) = 2 axis pairs.
        // Axis pairs: x from center 3 (10) to 4 (−1); y from 4 (4) to 2 (−3).
        assert_eq!(p, vec![(3, 4), (1, 2), (3, 4), (4, 2)]);
        assert_eq!(pick_pairs(&centers, 2, 1), vec![(3, 4)]);
        assert_eq!(pick_pairs(&centers, 2, 2), vec![(3, 4), (3, 4)]);
        assert_eq!(pick_pairs(&centers, 2, 3), vec![(3, 4), (3, 4), (4, 2)]);
        assert!(pick_pairs(&centers, 2, 0).is_empty());
    }

    #[test]
    fn exhausted_distances_give_zero_pairs_like_numpy() {
        let centers = [0.0f32, 3.0, 7.0];
        // Farthest (0, 2); then only center 1 is left: every distance is 0 → (0, 0).
        assert_eq!(pick_pairs(&centers, 1, 4), vec![(0, 2), (0, 0), (2, 0)]);
        assert!(pick_pairs(&[], 2, 3).is_empty());
    }

    #[test]
    fn straight_lines_include_both_ends() {
        let l = straight_line(&[0.0, 1.0], &[1.0, -1.0], 5);
        assert_eq!(
            l,
            vec![0.0, 1.0, 0.25, 0.5, 0.5, 0.0, 0.75, -0.5, 1.0, -1.0]
        );
        assert_eq!(straight_line(&[2.0], &[3.0], 1), vec![2.0]);
        assert!(straight_line(&[2.0], &[3.0], 0).is_empty());
        let l = straight_line(&[0.1], &[0.7], 7);
        assert_eq!(l[6], 0.7, "the end is exact");
    }
}
