// The inference engine's kernels (issue 12): products that read weights in their storage type (f32, Q4_1, Q8_0),
// embedding gather, RMSNorm, LayerNorm, RoPE, SiLU·up, exact GELU, residual and bias adds, and attention for a
// prefill and for new tokens against a KV cache. Plain WebGPU WGSL: browsers compile this same file.
//
// Every entry point shares one layout (the host binds all six): `params`, the activations `x`, the weights `w`
// (u32 words), two more f32 inputs `a` and `b`, and the output `out`. Grids wider than the device allows fold into
// a second dimension; `flat_index`/`group_index` unfold them. The CPU references are `crates/kernels/src/nn.rs` and
// `quant.rs`.

struct Params {
    p0: u32,
    p1: u32,
    p2: u32,
    p3: u32,
    p4: u32,
    p5: u32,
    p6: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> a: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

// Weight storage kinds (`QuantType` on the host).
const KIND_F32: u32 = 0u;
const KIND_Q4_1: u32 = 1u;
const KIND_Q8_0: u32 = 2u;
// Most keys one attention row holds in workgroup memory (the host's MAX_ATTENTION_KEYS).
const MAX_KEYS: u32 = 2048u;

fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

fn flat_index(lid: vec3<u32>, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return group_index(wid, nwg) * 256u + lid.x;
}

// Element (row, col) of the weight matrix with `cols` columns stored as `kind`:
// - f32: one word per element, row-major;
// - Q4_1: blocks of 32 in 5 words: [f16 scale d | f16 minimum m], then 16 bytes whose low nibbles are elements
//   0–15 and high nibbles 16–31; x = d·q + m;
// - Q8_0, repacked by the host for 4-byte alignment: every block's f32 scale first (`blocks` words), then each
//   block's 32 signed bytes in 8 words; x = d·q.
fn weight(kind: u32, row: u32, col: u32, cols: u32) -> f32 {
    if (kind == KIND_F32) {
        return bitcast<f32>(w[row * cols + col]);
    }
    let block = (row * cols + col) / 32u;
    let i = col % 32u;
    if (kind == KIND_Q4_1) {
        let dm = unpack2x16float(w[block * 5u]);
        let byte = (w[block * 5u + 1u + (i % 16u) / 4u] >> (8u * (i % 4u))) & 0xFFu;
        let q = select(byte & 0xFu, byte >> 4u, i >= 16u);
        return dm.x * f32(q) + dm.y;
    }
    let blocks = params.p6;
    let word = w[blocks + block * 8u + i / 4u];
    let q = i32(word << (24u - 8u * (i % 4u))) >> 24u;
    return bitcast<f32>(w[block]) * f32(q);
}

// Σ_j W[row, 32·blk + j]·x[base + 32·blk + j] for one block: Q4_1 reads its five words once.
fn block_dot(kind: u32, row: u32, blk: u32, cols: u32, base: u32) -> f32 {
    let xb = base + blk * 32u;
    if (kind == KIND_Q4_1) {
        let block = row * (cols / 32u) + blk;
        let dm = unpack2x16float(w[block * 5u]);
        var s = 0.0;
        var xsum = 0.0;
        for (var k = 0u; k < 4u; k = k + 1u) {
            let word = w[block * 5u + 1u + k];
            for (var j = 0u; j < 4u; j = j + 1u) {
                let byte = (word >> (8u * j)) & 0xFFu;
                let lo = x[xb + 4u * k + j];
                let hi = x[xb + 16u + 4u * k + j];
                s = s + f32(byte & 0xFu) * lo + f32(byte >> 4u) * hi;
                xsum = xsum + lo + hi;
            }
        }
        return dm.x * s + dm.y * xsum;
    }
    var s = 0.0;
    for (var j = 0u; j < 32u; j = j + 1u) {
        s = s + weight(kind, row, blk * 32u + j, cols) * x[xb + j];
    }
    return s;
}

var<workgroup> scratch: array<f32, 256>;

// Sum (or, with `take_max`, maximum) of `v` over the first `width` invocations of a workgroup (a power of two,
// at most 256; every invocation gets the result); call in uniform control flow.
fn workgroup_reduce(v: f32, lane: u32, width: u32, take_max: bool) -> f32 {
    scratch[lane] = v;
    workgroupBarrier();
    for (var s = width / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            let other = scratch[lane + s];
            scratch[lane] = select(scratch[lane] + other, max(scratch[lane], other), take_max);
        }
        workgroupBarrier();
    }
    let total = scratch[0];
    workgroupBarrier();
    return total;
}

// out[r] = W[r, :]·x for one token (decoding, memory-bound): one invocation per row streams its contiguous
// blocks, everything in registers. Grid over rows / 64. p0 rows, p1 cols, p2 kind, p6 Q8_0 blocks.
@compute @workgroup_size(64, 1, 1)
fn matvec(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * 64u + lid.x;
    if (r >= params.p0) {
        return;
    }
    var s = 0.0;
    for (var blk = 0u; blk < params.p1 / 32u; blk = blk + 1u) {
        s = s + block_dot(params.p2, r, blk, params.p1, 0u);
    }
    out[r] = s;
}

// Tokens one `matvec_chunked` invocation multiplies by each weight block it decodes.
const CHUNK: u32 = 8u;

// out[t·rows + r] = W[r, :]·x[t·cols + :] for a few dozen tokens (short prompts): one invocation per (row, chunk
// of CHUNK tokens) walks the row's blocks, decodes each once and multiplies it by every token of its chunk. Grid over
// rows × ⌈tokens / CHUNK⌉ / 64. p0 rows, p1 cols, p2 kind, p3 tokens, p6 Q8_0 blocks.
@compute @workgroup_size(64, 1, 1)
fn matvec_chunked(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = params.p0;
    let cols = params.p1;
    let tokens = params.p3;
    let i = group_index(wid, nwg) * 64u + lid.x;
    let r = i % rows;
    let t0 = (i / rows) * CHUNK;
    if (t0 >= tokens) {
        return;
    }
    let n = min(CHUNK, tokens - t0);
    var acc: array<f32, 8>;
    var wb: array<f32, 32>;
    for (var blk = 0u; blk < cols / 32u; blk = blk + 1u) {
        for (var j = 0u; j < 32u; j = j + 1u) {
            wb[j] = weight(params.p2, r, blk * 32u + j, cols);
        }
        for (var t = 0u; t < n; t = t + 1u) {
            let xb = (t0 + t) * cols + blk * 32u;
            var s = 0.0;
            for (var j = 0u; j < 32u; j = j + 1u) {
                s = s + wb[j] * x[xb + j];
            }
            acc[t] = acc[t] + s;
        }
    }
    for (var t = 0u; t < n; t = t + 1u) {
        out[(t0 + t) * rows + r] = acc[t];
    }
}

// The tiled matmul: a workgroup of 16×16 invocations owns a 64×64 block of the output, each invocation a 4×4
// sub-block held in registers; the K dimension goes 16 at a time through workgroup memory.
const TILE: u32 = 64u;
const KSTEP: u32 = 16u;
var<workgroup> tile_x: array<array<f32, 16>, 64>;
var<workgroup> tile_w: array<array<f32, 16>, 64>;

// out[t·rows + r] = Σ_c x[t·cols + c]·W[r, c] for many tokens (long prompts, embedding batches); W's elements are
// dequantized as they are loaded. Grid: x over 64-row blocks of W, y over 64-token blocks.
// p0 rows, p1 cols, p2 kind, p3 tokens, p6 Q8_0 blocks.
@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let rows = params.p0;
    let cols = params.p1;
    let tokens = params.p3;
    let t0 = wid.y * TILE;
    let r0 = wid.x * TILE;
    let lane = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < cols; k0 = k0 + KSTEP) {
        // 256 invocations load 64×16 of x and of W: four elements each.
        for (var e = 0u; e < 4u; e = e + 1u) {
            let i = lane + e * 256u;
            let row = i / KSTEP;
            let k = i % KSTEP;
            let c = k0 + k;
            var xv = 0.0;
            if (t0 + row < tokens && c < cols) {
                xv = x[(t0 + row) * cols + c];
            }
            tile_x[row][k] = xv;
            var wv = 0.0;
            if (r0 + row < rows && c < cols) {
                wv = weight(params.p2, r0 + row, c, cols);
            }
            tile_w[row][k] = wv;
        }
        workgroupBarrier();
        for (var k = 0u; k < KSTEP; k = k + 1u) {
            var xs: array<f32, 4>;
            var ws: array<f32, 4>;
            for (var i = 0u; i < 4u; i = i + 1u) {
                xs[i] = tile_x[lid.y * 4u + i][k];
                ws[i] = tile_w[lid.x * 4u + i][k];
            }
            for (var i = 0u; i < 4u; i = i + 1u) {
                for (var j = 0u; j < 4u; j = j + 1u) {
                    acc[i][j] = acc[i][j] + xs[i] * ws[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let t = t0 + lid.y * 4u + i;
        for (var j = 0u; j < 4u; j = j + 1u) {
            let r = r0 + lid.x * 4u + j;
            if (t < tokens && r < rows) {
                out[t * rows + r] = acc[i][j];
            }
        }
    }
}

// out[t·cols + c] = W[id_t, c] with the token ids in `a` (exact in f32 below 2²⁴). p0 tokens, p1 cols, p2 kind.
@compute @workgroup_size(256, 1, 1)
fn gather(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(lid, wid, nwg);
    let cols = params.p1;
    if (i >= params.p0 * cols) {
        return;
    }
    out[i] = weight(params.p2, u32(a[i / cols]), i % cols, cols);
}

// out row = x row / rms(x row) · a (Llama's RMSNorm). One workgroup per row. p0 rows, p1 cols.
@compute @workgroup_size(256, 1, 1)
fn rms_norm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = group_index(wid, nwg);
    let live = row < params.p0;
    let cols = params.p1;
    let base = row * cols;
    var s = 0.0;
    if (live) {
        for (var j = lid.x; j < cols; j = j + 256u) {
            s = s + x[base + j] * x[base + j];
        }
    }
    let scale = 1.0 / sqrt(workgroup_reduce(s, lid.x, 256u, false) / f32(cols) + params.eps);
    if (live) {
        for (var j = lid.x; j < cols; j = j + 256u) {
            out[base + j] = x[base + j] * scale * a[j];
        }
    }
}

// out row ← (out row − mean) / std · a + b, in place (BERT's LayerNorm); two passes: mean, then the variance of
// the centred values. p0 rows, p1 cols.
@compute @workgroup_size(256, 1, 1)
fn layer_norm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = group_index(wid, nwg);
    let live = row < params.p0;
    let cols = params.p1;
    let base = row * cols;
    var s = 0.0;
    if (live) {
        for (var j = lid.x; j < cols; j = j + 256u) {
            s = s + out[base + j];
        }
    }
    let mean = workgroup_reduce(s, lid.x, 256u, false) / f32(cols);
    var v = 0.0;
    if (live) {
        for (var j = lid.x; j < cols; j = j + 256u) {
            let d = out[base + j] - mean;
            v = v + d * d;
        }
    }
    let inv_std = 1.0 / sqrt(workgroup_reduce(v, lid.x, 256u, false) / f32(cols) + params.eps);
    if (live) {
        for (var j = lid.x; j < cols; j = j + 256u) {
            out[base + j] = (out[base + j] - mean) * inv_std * a[j] + b[j];
        }
    }
}

// RoPE in place on out[tokens × heads × head_dim]: pair (2i, 2i+1) of token t turns by the angle whose
// (cos, sin) the host put at a[(t·head_dim/2 + i)·2]. p0 tokens, p1 heads, p2 head_dim.
@compute @workgroup_size(256, 1, 1)
fn rope(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let pair = flat_index(lid, wid, nwg);
    let half_dim = params.p2 / 2u;
    if (pair >= params.p0 * params.p1 * half_dim) {
        return;
    }
    let i = pair % half_dim;
    let t = pair / (half_dim * params.p1);
    let cos_t = a[(t * half_dim + i) * 2u];
    let sin_t = a[(t * half_dim + i) * 2u + 1u];
    let x0 = out[2u * pair];
    let x1 = out[2u * pair + 1u];
    out[2u * pair] = x0 * cos_t - x1 * sin_t;
    out[2u * pair + 1u] = x0 * sin_t + x1 * cos_t;
}

// out ← silu(out)·x (SwiGLU). p0 length.
@compute @workgroup_size(256, 1, 1)
fn silu_mul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(lid, wid, nwg);
    if (i >= params.p0) {
        return;
    }
    let g = out[i];
    out[i] = g / (1.0 + exp(-g)) * x[i];
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5·10⁻⁷), as `nn::erf` on the host.
fn erf(v: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(v));
    let poly = t * (0.2548296 + t * (-0.28449674 + t * (1.4214138 + t * (-1.4531521 + t * 1.0614054))));
    return sign(v) * (1.0 - poly * exp(-v * v));
}

// out ← out·(1 + erf(out/√2))/2, BERT's exact GELU. p0 length.
@compute @workgroup_size(256, 1, 1)
fn gelu_erf(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(lid, wid, nwg);
    if (i >= params.p0) {
        return;
    }
    let v = out[i];
    out[i] = 0.5 * v * (1.0 + erf(v * 0.70710678));
}

// out[i] += x[i] + a[i % p1] (a residual when p1 is 0, a bias when x is not read: p2 = 0). p0 length, p1 bias
// length, p2 1 to add x.
@compute @workgroup_size(256, 1, 1)
fn add(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(lid, wid, nwg);
    if (i >= params.p0) {
        return;
    }
    var v = out[i];
    if (params.p2 == 1u) {
        v = v + x[i];
    }
    if (params.p1 > 0u) {
        v = v + a[i % params.p1];
    }
    out[i] = v;
}

var<workgroup> scores: array<f32, 2048>;
// Attention's workgroup: 64 invocations (a head is 32–128 wide; more would idle).
const AWG: u32 = 64u;

// softmax(q·kᵀ/√d + mask)·v for one (query token, head) per workgroup: q in x[tokens × heads × d], keys in
// a and values in b [keys × kv_heads × d]; output to out at the query's place. Queries and keys both start at
// token p5 of their buffers (a sequence inside a batch of them; 0 for a decoder's step against its cache). Causal:
// query t sees keys up to keys − tokens + t. p0 tokens, p1 keys (≤ MAX_KEYS), p2 heads, p3 kv_heads, p4 head_dim
// (≤ 256), p5 first token, p6 1 for causal.
@compute @workgroup_size(64, 1, 1)
fn attention(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let pair = group_index(wid, nwg);
    let tokens = params.p0;
    let keys = params.p1;
    let heads = params.p2;
    let kv_heads = params.p3;
    let d = params.p4;
    let live = pair < tokens * heads;
    let t = pair / heads;
    let h = pair % heads;
    let kv = h / (heads / kv_heads);
    var visible = keys;
    if (params.p6 == 1u) {
        visible = keys - tokens + t + 1u;
    }
    let scale = 1.0 / sqrt(f32(d));
    let qb = ((params.p5 + t) * heads + h) * d;
    var m = -3.4028234e38;
    if (live) {
        for (var j = lid.x; j < visible; j = j + AWG) {
            let kb = ((params.p5 + j) * kv_heads + kv) * d;
            var s = 0.0;
            for (var e = 0u; e < d; e = e + 1u) {
                s = s + x[qb + e] * a[kb + e];
            }
            scores[j] = s * scale;
            m = max(m, s * scale);
        }
    }
    // Maximum over the workgroup, then the exponentials and their sum.
    let row_max = workgroup_reduce(m, lid.x, AWG, true);
    var sum = 0.0;
    if (live) {
        for (var j = lid.x; j < visible; j = j + AWG) {
            let e = exp(scores[j] - row_max);
            scores[j] = e;
            sum = sum + e;
        }
    }
    let inv = 1.0 / workgroup_reduce(sum, lid.x, AWG, false);
    if (live) {
        for (var e = lid.x; e < d; e = e + AWG) {
            var o = 0.0;
            for (var j = 0u; j < visible; j = j + 1u) {
                o = o + scores[j] * b[((params.p5 + j) * kv_heads + kv) * d + e];
            }
            out[qb + e] = o * inv;
        }
    }
}
