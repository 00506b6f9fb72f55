//! Choosing a token from logits as the reference's `generate` does: the logits processors
//! (repetition penalty, tokens that may not come yet, suppressed tokens), then either the
//! argmax (greedy) or temperature, top-k and top-p and a draw from a seeded generator.
//!
//! ```
//! use spiral_engine::models::qwen3::sampling::{Sampler, Sampling};
//!
//! let mut greedy = Sampler::new(Sampling::Greedy, 0);
//! assert_eq!(greedy.pick(&mut [0.1, 2.0, 0.3], &[], &[]), 1);
//! // A repetition penalty of 2 halves a positive logit that was already chosen.
//! let mut logits = [1.0, 1.5, 0.0];
//! greedy.repetition_penalty = 2.0;
//! assert_eq!(greedy.pick(&mut logits, &[1], &[]), 0);
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a token is chosen once the logits are processed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties: the lowest id, as `argmax` gives).
    Greedy,
    /// A draw from the softmax of logits / temperature, restricted to the `top_k` most
    /// likely tokens (0: all) and then to the smallest set whose probability reaches `top_p`.
    Sample { temperature: f32, top_k: usize, top_p: f32 },
}

/// A token chooser with its own random generator.
#[derive(Clone, Debug)]
pub struct Sampler {
    pub sampling: Sampling,
    /// Logits of tokens already generated are divided (positive) or multiplied (negative)
    /// by this; 1 leaves them.
    pub repetition_penalty: f32,
    rng: StdRng,
}

impl Sampler {
    pub fn new(sampling: Sampling, seed: u64) -> Sampler {
        Sampler { sampling, repetition_penalty: 1.0, rng: StdRng::seed_from_u64(seed) }
    }

    /// Chooses a token: `history` is what this sequence generated so far (for the
    /// repetition penalty), `banned` may not be chosen now. `logits` is used as scratch.
    /// If every token is banned the lowest id comes back (the reference's argmax of −∞).
    pub fn pick(&mut self, logits: &mut [f32], history: &[u32], banned: &[u32]) -> u32 {
        if self.repetition_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in history {
                if let Some(l) = logits.get_mut(t as usize).filter(|_| !std::mem::replace(&mut seen[t as usize], true))
                {
                    *l = if *l < 0.0 { *l * self.repetition_penalty } else { *l / self.repetition_penalty };
                }
            }
        }
        for &t in banned {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        match self.sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::Sample { temperature, top_k, top_p } => self.draw(logits, temperature, top_k, top_p),
        }
    }

    fn draw(&mut self, logits: &mut [f32], temperature: f32, top_k: usize, top_p: f32) -> u32 {
        let scale = 1.0 / temperature.max(f32::MIN_POSITIVE);
        // Candidates in descending order of logit; stable, so equal logits keep id order.
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        if top_k > 0 {
            order.truncate(top_k.max(1));
        }
        order.retain(|&t| logits[t as usize] > f32::NEG_INFINITY);
        if order.is_empty() {
            return argmax(logits);
        }
        let top = logits[order[0] as usize] * scale;
        let mut probs: Vec<f32> = order.iter().map(|&t| (logits[t as usize] * scale - top).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if top_p < 1.0 {
            // Keep the most likely tokens until their mass reaches top_p (at least one).
            let mut mass = 0.0;
            let keep = probs
                .iter()
                .take_while(|&&p| {
                    let before = mass;
                    mass += p;
                    before < top_p
                })
                .count();
            probs.truncate(keep.max(1));
            order.truncate(keep.max(1));
        }
        let total: f32 = probs.iter().sum();
        let mut u = self.rng.random::<f32>() * total;
        for (&t, &p) in order.iter().zip(&probs) {
            if u < p {
                return t;
            }
            u -= p;
        }
        *order.last().expect("at least one candidate")
    }
}

/// The first index of the largest value (NaN never wins).
fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || x[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banned_tokens_never_come_and_ties_go_to_the_lowest_id() {
        let mut s = Sampler::new(Sampling::Greedy, 0);
        assert_eq!(s.pick(&mut [3.0, 5.0, 5.0, 1.0], &[], &[]), 1);
        assert_eq!(s.pick(&mut [3.0, 5.0, 5.0, 1.0], &[], &[1, 2]), 0);
        assert_eq!(s.pick(&mut [3.0, 5.0], &[], &[0, 1]), 0);
    }

    #[test]
    fn repetition_penalty_counts_each_token_once_and_pushes_negatives_down() {
        let mut s = Sampler::new(Sampling::Greedy, 0);
        s.repetition_penalty = 2.0;
        let mut logits = [4.0, -1.0, 3.0];
        s.pick(&mut logits, &[0, 0, 1], &[]);
        assert_eq!(logits, [2.0, -2.0, 3.0]);
    }

    #[test]
    fn sampling_respects_top_k_and_top_p_and_follows_the_probabilities() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let draws = |sampling, n| {
            let mut s = Sampler::new(sampling, 7);
            let mut counts = [0usize; 4];
            for _ in 0..n {
                counts[s.pick(&mut logits.clone(), &[], &[]) as usize] += 1;
            }
            counts
        };
        let c = draws(Sampling::Sample { temperature: 1.0, top_k: 2, top_p: 1.0 }, 4000);
        assert_eq!(c[0] + c[1], 0, "{c:?}");
        // p(3) / p(2) = e within top-2.
        let ratio = c[3] as f64 / c[2] as f64;
        assert!((ratio - std::f64::consts::E).abs() < 0.3, "{c:?}");
        // The top token alone holds 64 % of the mass: top_p 0.5 keeps only it.
        let c = draws(Sampling::Sample { temperature: 1.0, top_k: 0, top_p: 0.5 }, 500);
        assert_eq!(c, [0, 0, 0, 500]);
        // A low temperature sharpens towards the argmax; a seed repeats its draws.
        let c = draws(Sampling::Sample { temperature: 0.05, top_k: 0, top_p: 1.0 }, 500);
        assert_eq!(c[3], 500);
        let a = draws(Sampling::Sample { temperature: 1.0, top_k: 0, top_p: 1.0 }, 300);
        assert_eq!(a, draws(Sampling::Sample { temperature: 1.0, top_k: 0, top_p: 1.0 }, 300));
    }
}
