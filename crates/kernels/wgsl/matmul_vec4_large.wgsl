// C[M×N] = A[M×K] · B[K×N], f32, row-major, K and N multiples of 4 (any M ≥ 1): the large-tile variant.
//
// A workgroup of 16×16 invocations owns a 128×128 block of C and each invocation an 8×8 block of outputs, held in
// sixteen vec4 registers: per 8-deep slice of K it does four vec4 loads from workgroup memory for 64 fused
// multiply-adds (twice the arithmetic intensity of `matmul_vec4.wgsl`). An invocation's rows are r, r+1, r+2, r+3
// and r+64 … r+67 (columns likewise), so neighbouring invocations read neighbouring vec4s of the tiles. The next
// slice is loaded from global memory into registers while the current one is multiplied. Workgroup memory: 8 KiB.
// Which matmul variant a device runs is measured per adapter (see the executor's calibration).

struct Dims {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

const TILE: u32 = 128u;
const SLICE: u32 = 8u;

// a_tile[kk * 32 + i] holds A[row0 + 4·i .. +4][k0 + kk]; b_tile[kk * 32 + j] holds B[k0 + kk][col0 + 4·j .. +4].
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

// This invocation's share of one slice: A[row0 + tid / 2][k0 + 4·(tid % 2) .. +4], B[k0 + tid / 32][col0 + 4·(tid % 32) .. +4].
fn load_a(row0: u32, k0: u32, tid: u32) -> vec4<f32> {
    let r = row0 + tid / 2u;
    let k = k0 + (tid % 2u) * 4u;
    if (r < dims.m && k < dims.k) {
        return a[(r * dims.k + k) / 4u];
    }
    return vec4<f32>(0.0);
}

fn load_b(col0: u32, k0: u32, tid: u32) -> vec4<f32> {
    let k = k0 + tid / 32u;
    let col = col0 + (tid % 32u) * 4u;
    if (k < dims.k && col < dims.n) {
        return b[(k * dims.n + col) / 4u];
    }
    return vec4<f32>(0.0);
}

fn store4(r: u32, c4: u32, v: vec4<f32>) {
    if (r < dims.m && c4 * 4u < dims.n) {
        c[r * (dims.n / 4u) + c4] = v;
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);

    // The slice this invocation stages: row tid / 2 of A (transposed into a_tile), one vec4 of a row of B.
    let a_row = tid / 2u;
    let a_kq = (tid % 2u) * 4u;
    var next_a = load_a(row0, 0u, tid);
    var next_b = load_b(col0, 0u, tid);

    for (var k0 = 0u; k0 < dims.k; k0 = k0 + SLICE) {
        let base = a_kq * 32u + a_row / 4u;
        a_tile[base][a_row % 4u] = next_a.x;
        a_tile[base + 32u][a_row % 4u] = next_a.y;
        a_tile[base + 64u][a_row % 4u] = next_a.z;
        a_tile[base + 96u][a_row % 4u] = next_a.w;
        b_tile[tid] = next_b;
        workgroupBarrier();

        // Start the next slice's global loads before the arithmetic that hides their latency.
        next_a = load_a(row0, k0 + SLICE, tid);
        next_b = load_b(col0, k0 + SLICE, tid);

        for (var kk = 0u; kk < SLICE; kk = kk + 1u) {
            let a0 = a_tile[kk * 32u + lid.y];
            let a1 = a_tile[kk * 32u + lid.y + 16u];
            let b0 = b_tile[kk * 32u + lid.x];
            let b1 = b_tile[kk * 32u + lid.x + 16u];
            c00 = fma(vec4<f32>(a0.x), b0, c00);
            c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10);
            c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20);
            c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30);
            c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40);
            c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50);
            c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60);
            c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70);
            c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
    }

    let r0 = row0 + lid.y * 4u;
    let c4 = col0 / 4u + lid.x;
    store4(r0 + 0u, c4, c00);
    store4(r0 + 0u, c4 + 16u, c01);
    store4(r0 + 1u, c4, c10);
    store4(r0 + 1u, c4 + 16u, c11);
    store4(r0 + 2u, c4, c20);
    store4(r0 + 2u, c4 + 16u, c21);
    store4(r0 + 3u, c4, c30);
    store4(r0 + 3u, c4 + 16u, c31);
    store4(r0 + 64u, c4, c40);
    store4(r0 + 64u, c4 + 16u, c41);
    store4(r0 + 65u, c4, c50);
    store4(r0 + 65u, c4 + 16u, c51);
    store4(r0 + 66u, c4, c60);
    store4(r0 + 66u, c4 + 16u, c61);
    store4(r0 + 67u, c4, c70);
    store4(r0 + 67u, c4 + 16u, c71);
}
