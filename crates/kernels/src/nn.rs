//! The neural-network ops of the inference engine on the CPU, in f32: RMSNorm, LayerNorm, RoPE, SiLU·up (SwiGLU),
//! exact GELU, and attention (scores, mask, softmax, weighted sum) for a prefill and for new tokens against a KV
//! cache. They are the CPU path and, at the same time, the references the WGSL kernels are tested against; the
//! products live with the weights in [`crate::quant::QMatrix`]. Work is shared among threads where it pays
//! (attention over (token, head) pairs).

use rayon::prelude::*;

/// Each row of `x[rows × cols]` scaled to unit root mean square, then by `weight` (Llama's RMSNorm).
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let cols = weight.len();
    debug_assert!(x.len().is_multiple_of(cols));
    for row in x.chunks_exact_mut(cols) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
        let scale = 1.0 / (mean_square + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v * scale * w;
        }
    }
}

/// Each row of `x[rows × cols]` centred and scaled to unit variance, then `gamma·x + beta` (BERT's LayerNorm).
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let cols = gamma.len();
    debug_assert!(x.len().is_multiple_of(cols) && beta.len() == cols);
    x.par_chunks_mut(cols).for_each(|row| {
        let mean = row.iter().sum::<f32>() / cols as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
        let inv_std = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv_std * g + b;
        }
    });
}

/// Rotary position embedding, in place, on `x[tokens × heads × head_dim]` whose first token is at position
/// `first_pos`: each adjacent pair (2i, 2i+1) of a head turns by pos·base^(−2i/head_dim) — the pairing GGUF's
/// Llama weights are stored for (llama.cpp's "normal" RoPE).
pub fn rope(x: &mut [f32], head_dim: usize, first_pos: usize, freq_base: f32, heads: usize) {
    let tokens = x.len() / (heads * head_dim);
    rope_with(x, head_dim, heads, &rope_table(first_pos, tokens, head_dim, freq_base));
}

/// (cos, sin) of every pair's angle for `tokens` positions from `first_pos` (`[tokens × head_dim/2]`), computed in
/// f64 and rounded once.
pub fn rope_table(first_pos: usize, tokens: usize, head_dim: usize, freq_base: f32) -> Vec<(f32, f32)> {
    let mut table = Vec::with_capacity(tokens * head_dim / 2);
    for t in 0..tokens {
        for i in 0..head_dim / 2 {
            let (sin, cos) = rope_angle((first_pos + t) as f64, i, head_dim, freq_base).sin_cos();
            table.push((cos as f32, sin as f32));
        }
    }
    table
}

/// RoPE with the rotations of [`rope_table`].
pub fn rope_with(x: &mut [f32], head_dim: usize, heads: usize, table: &[(f32, f32)]) {
    debug_assert!(head_dim.is_multiple_of(2) && x.len() / (heads * head_dim) * head_dim / 2 == table.len());
    for (token, angles) in x.chunks_exact_mut(heads * head_dim).zip(table.chunks_exact(head_dim / 2)) {
        for head in token.chunks_exact_mut(head_dim) {
            for (pair, &(cos, sin)) in head.chunks_exact_mut(2).zip(angles) {
                let (x0, x1) = (pair[0], pair[1]);
                pair[0] = x0 * cos - x1 * sin;
                pair[1] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// The angle pair `i` of a head turns by at position `pos`.
pub fn rope_angle(pos: f64, i: usize, head_dim: usize, freq_base: f32) -> f64 {
    pos * f64::from(freq_base).powf(-2.0 * i as f64 / head_dim as f64)
}

/// gate ← silu(gate)·up, SwiGLU's gated activation.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    debug_assert_eq!(gate.len(), up.len());
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Elements per task when an elementwise op is shared among threads.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// GELU in its exact form x·Φ(x) = x·(1 + erf(x/√2))/2, as BERT computes it.
pub fn gelu_erf(x: &mut [f32]) {
    x.par_chunks_mut(ELEMENTS_PER_TASK).for_each(|chunk| {
        for v in chunk {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5·10⁻⁷), the same formula `nn.wgsl` uses.
pub fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-x * x).exp();
    y.copysign(x)
}

/// `x += y`, element by element (residual connections).
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Adds `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add_assign(row, bias);
    }
}

/// The shape of one attention call: `tokens` queries of `heads` heads against `keys` cached keys of `kv_heads`
/// heads (grouped-query attention when fewer), each `head_dim` wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attention {
    pub tokens: usize,
    pub keys: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Causal: query t sits at position `keys − tokens + t` and sees keys up to it. Otherwise every query sees
    /// every key (an encoder).
    pub causal: bool,
}

impl Attention {
    /// Keys query `t` may see.
    pub fn visible(&self, t: usize) -> usize {
        if self.causal { self.keys - self.tokens + t + 1 } else { self.keys }
    }
}

/// softmax(q·kᵀ/√d + mask)·v for `q[tokens × heads × d]` against `k`, `v[keys × kv_heads × d]`, into
/// `out[tokens × heads × d]`; each (token, head) pair is one task.
pub fn attention(shape: Attention, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) {
    let Attention { tokens, keys, heads, kv_heads, head_dim: d, .. } = shape;
    assert!(
        q.len() == tokens * heads * d
            && k.len() >= keys * kv_heads * d
            && v.len() >= keys * kv_heads * d
            && out.len() == q.len()
            && keys >= tokens
            && heads.is_multiple_of(kv_heads),
        "attention operands do not fit {shape:?}"
    );
    let scale = 1.0 / (d as f32).sqrt();
    let group = heads / kv_heads;
    let one = |scores: &mut Vec<f32>, (pair, o): (usize, &mut [f32])| {
        let (t, h) = (pair / heads, pair % heads);
        let kv = h / group;
        let qh = &q[pair * d..(pair + 1) * d];
        let visible = shape.visible(t);
        scores.clear();
        scores.extend((0..visible).map(|j| crate::quant::dot_f32(qh, &k[(j * kv_heads + kv) * d..][..d]) * scale));
        softmax(scores);
        o.fill(0.0);
        for (j, p) in scores.iter().enumerate() {
            for (ov, vv) in o.iter_mut().zip(&v[(j * kv_heads + kv) * d..][..d]) {
                *ov += p * vv;
            }
        }
    };
    // A decoding step's attention is a few hundred thousand multiply-adds: cheaper here than handed to threads.
    if tokens * keys * heads * d < PARALLEL_ATTENTION_MIN_WORK {
        let mut scores = Vec::new();
        out.chunks_mut(d).enumerate().for_each(|item| one(&mut scores, item));
    } else {
        out.par_chunks_mut(d).enumerate().for_each_init(Vec::new, one);
    }
}

/// Multiply-adds from which attention is shared among threads.
const PARALLEL_ATTENTION_MIN_WORK: usize = 1 << 21;

/// `x` ← softmax(x), with the maximum subtracted first so large scores do not overflow.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [(0.0f32, 0.0f32), (0.5, 0.520_499_9), (1.0, 0.842_700_8), (-2.0, -0.995_322_3), (4.0, 1.0)] {
            assert!((erf(x) - want).abs() < 3e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn rope_turns_pairs_by_position_and_keeps_norms() {
        // Position 0 is the identity; at position 1 the first pair turns by 1 radian.
        let mut x = vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        rope(&mut x, 4, 0, 10_000.0, 1);
        assert_eq!(&x[..4], &[1.0, 0.0, 0.0, 1.0]);
        let (s, c) = 1f32.sin_cos();
        let second_angle = 10_000f32.powf(-0.5);
        assert!(close(&x[4..6], &[c, s], 1e-6), "{x:?}");
        assert!(close(&x[6..8], &[-second_angle.sin(), second_angle.cos()], 1e-6), "{x:?}");
    }

    #[test]
    fn causal_attention_sees_only_the_past_and_groups_heads() {
        // Two heads sharing one kv head; three keys whose values are 1, 2, 3; equal scores → mean of the visible.
        let shape = Attention { tokens: 2, keys: 3, heads: 2, kv_heads: 1, head_dim: 2, causal: true };
        let q = vec![0.0; 2 * 2 * 2];
        let k = vec![0.0; 3 * 2];
        let v = vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0];
        let mut out = vec![0.0; q.len()];
        attention(shape, &q, &k, &v, &mut out);
        // Query 0 sits at position 1 (sees values 1, 2), query 1 at position 2 (sees all three).
        assert!(close(&out, &[1.5, 1.5, 1.5, 1.5, 2.0, 2.0, 2.0, 2.0], 1e-6), "{out:?}");
        let mut all = vec![0.0; q.len()];
        attention(Attention { causal: false, ..shape }, &q, &k, &v, &mut all);
        assert!(close(&all, &[2.0; 8], 1e-6), "{all:?}");
    }

    #[test]
    fn norms_normalize() {
        let mut x = vec![3.0, 4.0, 0.0, 0.0];
        rms_norm(&mut x, &[1.0, 2.0], 0.0);
        let r = (12.5f32).sqrt();
        assert!(close(&x[..2], &[3.0 / r, 8.0 / r], 1e-6), "{x:?}");
        let mut y = vec![1.0, 3.0];
        layer_norm(&mut y, &[2.0, 2.0], &[0.5, 0.5], 0.0);
        assert!(close(&y, &[-1.5, 2.5], 1e-6), "{y:?}");
    }
}
