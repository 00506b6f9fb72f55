//! Pyramid vector quantization of a frame's band shape into 48 bits, as CELT codes its
//! normalized bands: the direction of a 21-dimensional vector is approximated by an integer
//! vector with [`PULSES`] unit pulses, whose rank among all such vectors is the code.

use crate::BANDS;

/// Pulses of the codebook: the most whose codebook still has at most 2^48 entries
/// (V(21, 19) = 1.5 · 10^14; V(21, 20) = 3.7 · 10^14 would not fit).
pub const PULSES: usize = 19;

/// V(n, k): how many integer vectors of dimension n have absolute values summing to k.
const fn counts() -> [[u64; PULSES + 1]; BANDS + 1] {
    let mut v = [[0u64; PULSES + 1]; BANDS + 1];
    let mut n = 0;
    while n <= BANDS {
        let mut k = 0;
        while k <= PULSES {
            v[n][k] = if k == 0 {
                1
            } else if n == 0 {
                0
            } else {
                v[n - 1][k] + v[n][k - 1] + v[n - 1][k - 1]
            };
            k += 1;
        }
        n += 1;
    }
    v
}

const V: [[u64; PULSES + 1]; BANDS + 1] = counts();
const _: () = assert!(V[BANDS][PULSES] <= 1 << 48, "the PVQ code must fit its 6 bytes");

/// The pulse vector nearest in direction to `x` (largest normalized correlation), found as
/// CELT does: pulses projected by magnitude, then the rest placed one at a time where each
/// raises the correlation most. A zero vector gets every pulse on its first dimension.
pub fn quantize(x: &[f32; BANDS]) -> [i8; BANDS] {
    let l1: f32 = x.iter().map(|v| v.abs()).sum();
    let mut y = [0i8; BANDS];
    if l1 <= f32::MIN_POSITIVE || !l1.is_finite() {
        y[0] = PULSES as i8;
        return y;
    }
    let mut placed = 0;
    let (mut xy, mut yy) = (0.0f32, 0.0f32);
    for (yi, xi) in y.iter_mut().zip(x) {
        let p = (PULSES as f32 * xi.abs() / l1).floor() as usize;
        *yi = p as i8;
        placed += p;
        xy += p as f32 * xi.abs();
        yy += (p * p) as f32;
    }
    while placed < PULSES {
        let mut best = (0, f32::MIN);
        for (i, (yi, xi)) in y.iter().zip(x).enumerate() {
            let (nxy, nyy) = (xy + xi.abs(), yy + 2.0 * f32::from(*yi) + 1.0);
            let score = nxy * nxy / nyy;
            if score > best.1 {
                best = (i, score);
            }
        }
        let i = best.0;
        xy += x[i].abs();
        yy += 2.0 * f32::from(y[i]) + 1.0;
        y[i] += 1;
        placed += 1;
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        if *xi < 0.0 {
            *yi = -*yi;
        }
    }
    y
}

/// The rank of a pulse vector among all vectors of [`PULSES`] pulses: dimension by
/// dimension, values ordered 0, +1, -1, +2, -2, …, each preceded by every vector whose
/// current value comes earlier in that order.
pub fn rank(y: &[i8; BANDS]) -> u64 {
    let (mut index, mut k) = (0u64, PULSES);
    for (j, &v) in y.iter().enumerate() {
        let rest = BANDS - j - 1;
        let a = usize::from(v.unsigned_abs());
        if a > 0 {
            index += V[rest][k];
            index += (1..a).map(|m| 2 * V[rest][k - m]).sum::<u64>();
            if v < 0 {
                index += V[rest][k - a];
            }
        }
        k -= a;
    }
    index
}

/// The pulse vector of a rank; `None` for a rank past the codebook (a corrupt code).
pub fn unrank(mut index: u64) -> Option<[i8; BANDS]> {
    if index >= V[BANDS][PULSES] {
        return None;
    }
    let (mut y, mut k) = ([0i8; BANDS], PULSES);
    for (j, yj) in y.iter_mut().enumerate() {
        let rest = BANDS - j - 1;
        if index < V[rest][k] {
            continue;
        }
        index -= V[rest][k];
        let mut a = 1;
        while index >= 2 * V[rest][k - a] {
            index -= 2 * V[rest][k - a];
            a += 1;
        }
        let negative = index >= V[rest][k - a];
        if negative {
            index -= V[rest][k - a];
        }
        *yj = if negative { -(a as i8) } else { a as i8 };
        k -= a;
    }
    Some(y)
}

/// A pulse vector scaled to unit length.
pub fn direction(y: &[i8; BANDS]) -> [f32; BANDS] {
    let norm = y.iter().map(|&v| f32::from(v) * f32::from(v)).sum::<f32>().sqrt().max(1.0);
    y.map(|v| f32::from(v) / norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn ranks_are_a_bijection_at_the_edges_and_on_random_vectors() {
        let last = V[BANDS][PULSES] - 1;
        for index in [0, 1, 2, 41, 42, 1_000_003, last / 2, last] {
            let y = unrank(index).unwrap();
            assert_eq!(y.iter().map(|v| usize::from(v.unsigned_abs())).sum::<usize>(), PULSES);
            assert_eq!(rank(&y), index);
        }
        assert_eq!(unrank(last + 1), None);
        let mut seed = 7;
        for _ in 0..2000 {
            let x: [f32; BANDS] = std::array::from_fn(|_| lcg(&mut seed));
            let y = quantize(&x);
            assert_eq!(unrank(rank(&y)), Some(y));
        }
    }

    #[test]
    fn quantized_directions_stay_close() {
        let mut seed = 11;
        let mut worst = 1.0f32;
        for _ in 0..2000 {
            let x: [f32; BANDS] = std::array::from_fn(|_| lcg(&mut seed));
            let d = direction(&quantize(&x));
            let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
            worst = worst.min(x.iter().zip(&d).map(|(a, b)| a * b).sum::<f32>() / norm);
        }
        // 19 pulses over 21 uniformly random dimensions: the hardest shapes for a PVQ code.
        assert!(worst > 0.85, "cosine {worst}");
        assert_eq!(quantize(&[0.0; BANDS])[0], PULSES as i8);
    }
}
