// Row-wise kernels over a row-major f32 matrix x[rows × cols]: reduce_sum, matvec, softmax, layernorm.
//
// One workgroup of 256 invocations owns one row: each invocation strides over the columns, then the workgroup
// combines the partial results through workgroup memory. The host folds more than 65535 rows into a second
// dispatch dimension. `w` is a per-column vector (matvec's operand, layernorm's gain), `bias` layernorm's shift.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const WG: u32 = 256u;

var<workgroup> scratch: array<f32, 256>;

fn row_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// Sum (or, with `take_max`, maximum) of `v` over the workgroup; every invocation gets the result. Must be called
// in uniform control flow.
fn workgroup_reduce(v: f32, lane: u32, take_max: bool) -> f32 {
    scratch[lane] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
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

fn workgroup_sum(v: f32, lane: u32) -> f32 {
    return workgroup_reduce(v, lane, false);
}

fn workgroup_max(v: f32, lane: u32) -> f32 {
    return workgroup_reduce(v, lane, true);
}

@compute @workgroup_size(256, 1, 1)
fn reduce_sum(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = row_index(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    var s = 0.0;
    for (var j = lid.x; j < params.cols; j = j + WG) {
        s = s + x[base + j];
    }
    let total = workgroup_sum(s, lid.x);
    if (lid.x == 0u) {
        y[row] = total;
    }
}

@compute @workgroup_size(256, 1, 1)
fn matvec(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = row_index(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    var s = 0.0;
    for (var j = lid.x; j < params.cols; j = j + WG) {
        s = fma(x[base + j], w[j], s);
    }
    let total = workgroup_sum(s, lid.x);
    if (lid.x == 0u) {
        y[row] = total;
    }
}

// Numerically stable: exponents are taken of x − max(x), so none overflows.
@compute @workgroup_size(256, 1, 1)
fn softmax(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = row_index(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    var m = -3.4028234e38;
    for (var j = lid.x; j < params.cols; j = j + WG) {
        m = max(m, x[base + j]);
    }
    let row_max = workgroup_max(m, lid.x);
    var s = 0.0;
    for (var j = lid.x; j < params.cols; j = j + WG) {
        s = s + exp(x[base + j] - row_max);
    }
    let inv = 1.0 / workgroup_sum(s, lid.x);
    for (var j = lid.x; j < params.cols; j = j + WG) {
        y[base + j] = exp(x[base + j] - row_max) * inv;
    }
}

// Two passes (mean, then variance of the centred values) rather than E[x²] − E[x]², which cancels badly.
@compute @workgroup_size(256, 1, 1)
fn layernorm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = row_index(wid, nwg);
    if (row >= params.rows) {
        return;
    }
    let base = row * params.cols;
    let n = f32(params.cols);
    var s = 0.0;
    for (var j = lid.x; j < params.cols; j = j + WG) {
        s = s + x[base + j];
    }
    let mean = workgroup_sum(s, lid.x) / n;
    var q = 0.0;
    for (var j = lid.x; j < params.cols; j = j + WG) {
        let d = x[base + j] - mean;
        q = fma(d, d, q);
    }
    let inv_std = inverseSqrt(workgroup_sum(q, lid.x) / n + params.eps);
    for (var j = lid.x; j < params.cols; j = j + WG) {
        y[base + j] = (x[base + j] - mean) * inv_std * w[j] + bias[j];
    }
}
