// C[M×N] = A[M×K] · B[K×N], f32, row-major, any M, N, K ≥ 1.
//
// A workgroup of 16×16 invocations owns a 64×64 block of C; each invocation accumulates a 4×4 block of outputs in
// registers. K is walked in slices of 16, staged in workgroup memory as vec4s: A row-wise (four consecutive k of
// one row per vec4), B row-wise (four consecutive columns). Per four steps of k an invocation reads four A vec4s
// and four B vec4s for 64 fused multiply-adds. Every invocation writes whole vec4s to workgroup memory: writing
// one component of a shared vector may touch the whole vector (WGSL §memory model), which would race. Global loads
// are scalar and bounds-checked, which keeps this variant correct for every shape; `matmul_vec4.wgsl` loads vec4s
// from global memory when K and N allow it.

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE: u32 = 64u;
const SLICE: u32 = 16u;

// a_tile[r * 4 + q] holds A[row0 + r][k0 + 4q .. +4]; b_tile[kk * 16 + j] holds B[k0 + kk][col0 + 4j .. +4].
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

fn a_at(r: u32, k: u32) -> f32 {
    if (r < dims.m && k < dims.k) {
        return a[r * dims.k + k];
    }
    return 0.0;
}

fn b_at(k: u32, col: u32) -> f32 {
    if (k < dims.k && col < dims.n) {
        return b[k * dims.n + col];
    }
    return 0.0;
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    // This invocation's vec4 of each slice: consecutive invocations read consecutive addresses.
    let ar = row0 + tid / 4u;
    let aq = (tid % 4u) * 4u;
    let bk = tid / 16u;
    let bc = col0 + (tid % 16u) * 4u;
    let r = lid.y * 4u;

    for (var k0 = 0u; k0 < dims.k; k0 = k0 + SLICE) {
        let ak = k0 + aq;
        a_tile[tid] = vec4<f32>(a_at(ar, ak), a_at(ar, ak + 1u), a_at(ar, ak + 2u), a_at(ar, ak + 3u));
        let bkk = k0 + bk;
        b_tile[tid] = vec4<f32>(b_at(bkk, bc), b_at(bkk, bc + 1u), b_at(bkk, bc + 2u), b_at(bkk, bc + 3u));
        workgroupBarrier();
        for (var q = 0u; q < SLICE / 4u; q = q + 1u) {
            let a0 = a_tile[r * 4u + q];
            let a1 = a_tile[(r + 1u) * 4u + q];
            let a2 = a_tile[(r + 2u) * 4u + q];
            let a3 = a_tile[(r + 3u) * 4u + q];
            for (var s = 0u; s < 4u; s = s + 1u) {
                let bv = b_tile[(q * 4u + s) * 16u + lid.x];
                acc0 = fma(vec4<f32>(a0[s]), bv, acc0);
                acc1 = fma(vec4<f32>(a1[s]), bv, acc1);
                acc2 = fma(vec4<f32>(a2[s]), bv, acc2);
                acc3 = fma(vec4<f32>(a3[s]), bv, acc3);
            }
        }
        workgroupBarrier();
    }

    let row = row0 + r;
    let col = col0 + lid.x * 4u;
    store_row(row, col, acc0);
    store_row(row + 1u, col, acc1);
    store_row(row + 2u, col, acc2);
    store_row(row + 3u, col, acc3);
}

fn store_row(r: u32, col: u32, v: vec4<f32>) {
    if (r >= dims.m) {
        return;
    }
    let base = r * dims.n;
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (col + j < dims.n) {
            c[base + col + j] = v[j];
        }
    }
}
