//! The inference kernels of `nn.wgsl` on the GPU against their CPU references (`nn`, `quant`), on random data of
//! odd shapes: every product kind (f32, Q4_1, Q8_0) on every path (one token, a chunk of tokens, the tiled matmul),
//! the norms, RoPE, the activations, the adds, attention causal against a cache and bidirectional inside a batch.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

mod common;

use neurolov_kernels::nn::{self, Attention};
use neurolov_kernels::nn_gpu::{GpuTensor, MAX_ATTENTION_KEYS, NnGpu};
use neurolov_kernels::quant::{QMatrix, QuantType};

fn random(len: usize, rng: &mut fastrand::Rng) -> Vec<f32> {
    (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// A random half in ±[2⁻⁸, 2⁻²): a plausible block scale.
fn half(rng: &mut fastrand::Rng) -> [u8; 2] {
    let bits = (u16::from(rng.bool()) << 15) | rng.u16(0x1C00..0x3400);
    bits.to_le_bytes()
}

fn matrix(kind: QuantType, rows: usize, cols: usize, rng: &mut fastrand::Rng) -> QMatrix {
    let blocks = rows * cols / 32;
    if kind == QuantType::F32 {
        return QMatrix::from_f32(rows, cols, random(rows * cols, rng)).unwrap();
    }
    let mut bytes = Vec::new();
    for _ in 0..blocks {
        bytes.extend(half(rng));
        let quants = if kind == QuantType::Q4_1 {
            bytes.extend(half(rng));
            16
        } else {
            32
        };
        bytes.extend((0..quants).map(|_| rng.u8(..)));
    }
    QMatrix::new(kind, rows, cols, bytes).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0f32, f32::max);
    assert!(worst <= tol, "{what}: worst relative error {worst:e} > {tol:e}");
}

fn read(gpu: &mut NnGpu, t: &GpuTensor) -> Vec<f32> {
    gpu.read(t, 0..t.len()).unwrap()
}

#[test]
fn products_of_every_storage_type_on_every_path_match_the_cpu() {
    let Some(exec) = common::gpu() else { return };
    let mut gpu = NnGpu::new(exec).unwrap();
    let mut rng = fastrand::Rng::with_seed(12);
    // tokens 1 (matvec), 5 (chunked, a partial chunk), 70 (tiled, partial tiles); rows not a multiple of 16 or 64.
    for kind in [QuantType::F32, QuantType::Q4_1, QuantType::Q8_0] {
        let m = matrix(kind, 100, 96, &mut rng);
        let w = gpu.upload_matrix(&m).unwrap();
        for tokens in [1, 5, 70] {
            let x = random(tokens * 96, &mut rng);
            let mut want = vec![0.0; tokens * 100];
            m.matmul(&x, tokens, &mut want);
            let (xg, y) = (gpu.upload(&x).unwrap(), gpu.scratch(tokens * 100).unwrap());
            gpu.matmul(&w, &xg, tokens, &y).unwrap();
            assert_close(&format!("{kind:?} × {tokens} tokens"), &read(&mut gpu, &y), &want, 2e-5);
        }
        // Gather: rows 3, 99, 0 of the table.
        let ids = [3u32, 99, 0];
        let mut want = Vec::new();
        for &id in &ids {
            m.row_into(id as usize, &mut want);
        }
        let idg = gpu.upload(&ids.map(|i| i as f32)).unwrap();
        let out = gpu.scratch(3 * 96).unwrap();
        gpu.gather(&w, &idg, &out).unwrap();
        assert_close(&format!("{kind:?} gather"), &read(&mut gpu, &out), &want, 0.0);
    }
}

#[test]
fn norms_rope_activations_and_adds_match_the_cpu() {
    let Some(exec) = common::gpu() else { return };
    let mut gpu = NnGpu::new(exec).unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    let (rows, cols) = (7, 300);
    let x = random(rows * cols, &mut rng);
    let (g, b) = (random(cols, &mut rng), random(cols, &mut rng));
    let (xg, gg, bg) = (gpu.upload(&x).unwrap(), gpu.upload(&g).unwrap(), gpu.upload(&b).unwrap());

    let mut want = x.clone();
    nn::rms_norm(&mut want, &g, 1e-5);
    let out = gpu.scratch(x.len()).unwrap();
    gpu.rms_norm(&xg, &gg, 1e-5, &out).unwrap();
    assert_close("rms_norm", &read(&mut gpu, &out), &want, 1e-5);

    let mut want = x.clone();
    nn::layer_norm(&mut want, &g, &b, 1e-12);
    let y = gpu.upload(&x).unwrap();
    gpu.layer_norm(&y, &gg, &bg, 1e-12).unwrap();
    assert_close("layer_norm", &read(&mut gpu, &y), &want, 1e-5);

    let mut want = x.clone();
    nn::gelu_erf(&mut want);
    let y = gpu.upload(&x).unwrap();
    gpu.gelu_erf(&y).unwrap();
    assert_close("gelu_erf", &read(&mut gpu, &y), &want, 1e-6);

    let mut want = x.clone();
    nn::silu_mul(&mut want, &x.iter().rev().copied().collect::<Vec<_>>());
    let (y, up) = (gpu.upload(&x).unwrap(), gpu.upload(&x.iter().rev().copied().collect::<Vec<_>>()).unwrap());
    gpu.silu_mul(&y, &up).unwrap();
    assert_close("silu_mul", &read(&mut gpu, &y), &want, 1e-6);

    let mut want = x.clone();
    nn::add_assign(&mut want, &x);
    nn::add_bias(&mut want, &g);
    let y = gpu.upload(&x).unwrap();
    gpu.add(&y, Some(&xg), Some(&gg)).unwrap();
    assert_close("add", &read(&mut gpu, &y), &want, 0.0);

    // RoPE: 3 tokens × 2 heads × 8, from position 40, with the host's angle table.
    let mut want = random(3 * 2 * 8, &mut rng);
    let y = gpu.upload(&want).unwrap();
    let mut angles = Vec::new();
    for t in 0..3 {
        for i in 0..4 {
            let (s, c) = nn::rope_angle((40 + t) as f64, i, 8, 10_000.0).sin_cos();
            angles.extend([c as f32, s as f32]);
        }
    }
    nn::rope(&mut want, 8, 40, 10_000.0, 2);
    gpu.rope(&y, 2, 8, &gpu.upload(&angles).unwrap()).unwrap();
    assert_close("rope", &read(&mut gpu, &y), &want, 1e-6);
}

#[test]
fn attention_matches_the_cpu_causal_against_a_cache_and_bidirectional_in_a_batch() {
    let Some(exec) = common::gpu() else { return };
    let mut gpu = NnGpu::new(exec).unwrap();
    let mut rng = fastrand::Rng::with_seed(9);
    // Grouped-query, causal: 3 new tokens after 297 cached (more keys than one workgroup's 256 invocations).
    let shape = Attention { tokens: 3, keys: 300, heads: 6, kv_heads: 2, head_dim: 16, causal: true };
    let q = random(3 * 6 * 16, &mut rng);
    let (k, v) = (random(300 * 2 * 16, &mut rng), random(300 * 2 * 16, &mut rng));
    let mut want = vec![0.0; q.len()];
    nn::attention(shape, &q, &k, &v, &mut want);
    let out = gpu.scratch(q.len()).unwrap();
    let (qg, kg, vg) = (gpu.upload(&q).unwrap(), gpu.upload(&k).unwrap(), gpu.upload(&v).unwrap());
    gpu.attention(shape, 0, &qg, &kg, &vg, &out).unwrap();
    assert_close("causal attention", &read(&mut gpu, &out), &want, 1e-5);

    // Bidirectional over the second sequence (tokens 4..9) of a batch: the rest of the output is left alone.
    let shape = Attention { tokens: 5, keys: 5, heads: 4, kv_heads: 4, head_dim: 8, causal: false };
    let width = 4 * 8;
    let (q, k, v) = (random(9 * width, &mut rng), random(9 * width, &mut rng), random(9 * width, &mut rng));
    let mut want = vec![0.0; 9 * width];
    let span = 4 * width..9 * width;
    nn::attention(shape, &q[span.clone()], &k[span.clone()], &v[span.clone()], &mut want[span]);
    let out = gpu.upload(&vec![0.0; 9 * width]).unwrap();
    let (qg, kg, vg) = (gpu.upload(&q).unwrap(), gpu.upload(&k).unwrap(), gpu.upload(&v).unwrap());
    gpu.attention(shape, 4, &qg, &kg, &vg, &out).unwrap();
    assert_close("batched attention", &read(&mut gpu, &out), &want, 1e-5);

    // Shapes the kernel cannot hold are typed errors before anything runs.
    let too_long = Attention { tokens: 1, keys: MAX_ATTENTION_KEYS + 1, ..shape };
    assert!(gpu.attention(too_long, 0, &qg, &kg, &vg, &out).is_err());
    let short = gpu.scratch(3).unwrap();
    assert!(gpu.attention(shape, 4, &short, &kg, &vg, &out).is_err(), "queries shorter than the shape");
}
