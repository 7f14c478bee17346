// Elementwise kernels over flat f32 arrays of any length: add, mul, scale, gelu.
//
// One invocation per element; the host folds large dispatches into two dimensions (at most 65535 workgroups per
// dimension), so the flat index is rebuilt from the workgroup grid.

struct Params {
    len: u32,
    alpha: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

fn flat_index(lid: vec3<u32>, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(256, 1, 1)
fn add(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(lid, wid, nwg);
    if (i < params.len) {
        out[i] = a[i] + b[i];
    }
}

@compute @workgroup_size(256, 1, 1)
fn mul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(lid, wid, nwg);
    if (i < params.len) {
        out[i] = a[i] * b[i];
    }
}

@compute @workgroup_size(256, 1, 1)
fn scale(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(lid, wid, nwg);
    if (i < params.len) {
        out[i] = a[i] * params.alpha;
    }
}

// GELU, tanh form: 0.5·x·(1 + tanh(u)) with u = √(2/π)·(x + 0.044715·x³), computed as x / (1 + exp(−2u)) — the
// same function, without tanh's rounding near ±1 that turns large negative inputs into large errors. u is clamped
// to ±43 so exp never overflows f32 (WGSL leaves overflow undefined); the clamp changes the result by < |x|·e⁻⁸⁶.
@compute @workgroup_size(256, 1, 1)
fn gelu(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(lid, wid, nwg);
    if (i < params.len) {
        let x = a[i];
        let u = clamp(0.7978845608 * (x + 0.044715 * x * x * x), -43.0, 43.0);
        out[i] = x / (1.0 + exp(-2.0 * u));
    }
}
