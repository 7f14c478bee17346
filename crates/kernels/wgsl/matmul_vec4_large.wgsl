// C[M×N] = A[M×K] · B[K×N], f32, row-major, K and N multiples of 4 (any M ≥ 1): the large-tile variant.
//
// A workgroup of 16×16 invocations owns a 128×128 block of C and each invocation an 8×8 block of outputs, held in
// sixteen vec4 registers: per four steps of k it reads eight A vec4s and eight B vec4s from workgroup memory for
// 256 fused multiply-adds (twice the arithmetic intensity of `matmul_vec4.wgsl`). An invocation's rows are r … r+3
// and r+64 … r+67 (columns likewise), so neighbouring invocations read neighbouring vec4s of the B tile. The next
// slice is loaded from global memory into registers while the current one is multiplied. Every invocation writes
// whole vec4s to workgroup memory (8 KiB in all). The executor measures which variant is faster on its adapter.

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

// a_tile[r * 2 + q] holds A[row0 + r][k0 + 4q .. +4]; b_tile[kk * 32 + j] holds B[k0 + kk][col0 + 4j .. +4].
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

    let r = lid.y * 4u;
    let r_hi = r + 64u;
    var next_a = load_a(row0, 0u, tid);
    var next_b = load_b(col0, 0u, tid);

    for (var k0 = 0u; k0 < dims.k; k0 = k0 + SLICE) {
        a_tile[tid] = next_a;
        b_tile[tid] = next_b;
        workgroupBarrier();

        // Start the next slice's global loads before the arithmetic that hides their latency.
        next_a = load_a(row0, k0 + SLICE, tid);
        next_b = load_b(col0, k0 + SLICE, tid);

        for (var q = 0u; q < SLICE / 4u; q = q + 1u) {
            let a0 = a_tile[(r + 0u) * 2u + q];
            let a1 = a_tile[(r + 1u) * 2u + q];
            let a2 = a_tile[(r + 2u) * 2u + q];
            let a3 = a_tile[(r + 3u) * 2u + q];
            let a4 = a_tile[(r_hi + 0u) * 2u + q];
            let a5 = a_tile[(r_hi + 1u) * 2u + q];
            let a6 = a_tile[(r_hi + 2u) * 2u + q];
            let a7 = a_tile[(r_hi + 3u) * 2u + q];
            let b0x = b_tile[(q * 4u + 0u) * 32u + lid.x];
            let b1x = b_tile[(q * 4u + 0u) * 32u + lid.x + 16u];
            c00 = fma(vec4<f32>(a0.x), b0x, c00);
            c01 = fma(vec4<f32>(a0.x), b1x, c01);
            c10 = fma(vec4<f32>(a1.x), b0x, c10);
            c11 = fma(vec4<f32>(a1.x), b1x, c11);
            c20 = fma(vec4<f32>(a2.x), b0x, c20);
            c21 = fma(vec4<f32>(a2.x), b1x, c21);
            c30 = fma(vec4<f32>(a3.x), b0x, c30);
            c31 = fma(vec4<f32>(a3.x), b1x, c31);
            c40 = fma(vec4<f32>(a4.x), b0x, c40);
            c41 = fma(vec4<f32>(a4.x), b1x, c41);
            c50 = fma(vec4<f32>(a5.x), b0x, c50);
            c51 = fma(vec4<f32>(a5.x), b1x, c51);
            c60 = fma(vec4<f32>(a6.x), b0x, c60);
            c61 = fma(vec4<f32>(a6.x), b1x, c61);
            c70 = fma(vec4<f32>(a7.x), b0x, c70);
            c71 = fma(vec4<f32>(a7.x), b1x, c71);
            let b0y = b_tile[(q * 4u + 1u) * 32u + lid.x];
            let b1y = b_tile[(q * 4u + 1u) * 32u + lid.x + 16u];
            c00 = fma(vec4<f32>(a0.y), b0y, c00);
            c01 = fma(vec4<f32>(a0.y), b1y, c01);
            c10 = fma(vec4<f32>(a1.y), b0y, c10);
            c11 = fma(vec4<f32>(a1.y), b1y, c11);
            c20 = fma(vec4<f32>(a2.y), b0y, c20);
            c21 = fma(vec4<f32>(a2.y), b1y, c21);
            c30 = fma(vec4<f32>(a3.y), b0y, c30);
            c31 = fma(vec4<f32>(a3.y), b1y, c31);
            c40 = fma(vec4<f32>(a4.y), b0y, c40);
            c41 = fma(vec4<f32>(a4.y), b1y, c41);
            c50 = fma(vec4<f32>(a5.y), b0y, c50);
            c51 = fma(vec4<f32>(a5.y), b1y, c51);
            c60 = fma(vec4<f32>(a6.y), b0y, c60);
            c61 = fma(vec4<f32>(a6.y), b1y, c61);
            c70 = fma(vec4<f32>(a7.y), b0y, c70);
            c71 = fma(vec4<f32>(a7.y), b1y, c71);
            let b0z = b_tile[(q * 4u + 2u) * 32u + lid.x];
            let b1z = b_tile[(q * 4u + 2u) * 32u + lid.x + 16u];
            c00 = fma(vec4<f32>(a0.z), b0z, c00);
            c01 = fma(vec4<f32>(a0.z), b1z, c01);
            c10 = fma(vec4<f32>(a1.z), b0z, c10);
            c11 = fma(vec4<f32>(a1.z), b1z, c11);
            c20 = fma(vec4<f32>(a2.z), b0z, c20);
            c21 = fma(vec4<f32>(a2.z), b1z, c21);
            c30 = fma(vec4<f32>(a3.z), b0z, c30);
            c31 = fma(vec4<f32>(a3.z), b1z, c31);
            c40 = fma(vec4<f32>(a4.z), b0z, c40);
            c41 = fma(vec4<f32>(a4.z), b1z, c41);
            c50 = fma(vec4<f32>(a5.z), b0z, c50);
            c51 = fma(vec4<f32>(a5.z), b1z, c51);
            c60 = fma(vec4<f32>(a6.z), b0z, c60);
            c61 = fma(vec4<f32>(a6.z), b1z, c61);
            c70 = fma(vec4<f32>(a7.z), b0z, c70);
            c71 = fma(vec4<f32>(a7.z), b1z, c71);
            let b0w = b_tile[(q * 4u + 3u) * 32u + lid.x];
            let b1w = b_tile[(q * 4u + 3u) * 32u + lid.x + 16u];
            c00 = fma(vec4<f32>(a0.w), b0w, c00);
            c01 = fma(vec4<f32>(a0.w), b1w, c01);
            c10 = fma(vec4<f32>(a1.w), b0w, c10);
            c11 = fma(vec4<f32>(a1.w), b1w, c11);
            c20 = fma(vec4<f32>(a2.w), b0w, c20);
            c21 = fma(vec4<f32>(a2.w), b1w, c21);
            c30 = fma(vec4<f32>(a3.w), b0w, c30);
            c31 = fma(vec4<f32>(a3.w), b1w, c31);
            c40 = fma(vec4<f32>(a4.w), b0w, c40);
            c41 = fma(vec4<f32>(a4.w), b1w, c41);
            c50 = fma(vec4<f32>(a5.w), b0w, c50);
            c51 = fma(vec4<f32>(a5.w), b1w, c51);
            c60 = fma(vec4<f32>(a6.w), b0w, c60);
            c61 = fma(vec4<f32>(a6.w), b1w, c61);
            c70 = fma(vec4<f32>(a7.w), b0w, c70);
            c71 = fma(vec4<f32>(a7.w), b1w, c71);
        }
        workgroupBarrier();
    }

    let row = row0 + r;
    let c4 = col0 / 4u + lid.x;
    store4(row + 0u, c4, c00);
    store4(row + 0u, c4 + 16u, c01);
    store4(row + 1u, c4, c10);
    store4(row + 1u, c4 + 16u, c11);
    store4(row + 2u, c4, c20);
    store4(row + 2u, c4 + 16u, c21);
    store4(row + 3u, c4, c30);
    store4(row + 3u, c4 + 16u, c31);
    store4(row + 64u, c4, c40);
    store4(row + 64u, c4 + 16u, c41);
    store4(row + 65u, c4, c50);
    store4(row + 65u, c4 + 16u, c51);
    store4(row + 66u, c4, c60);
    store4(row + 66u, c4 + 16u, c61);
    store4(row + 67u, c4, c70);
    store4(row + 67u, c4 + 16u, c71);
}
