// C[M×N] = A[M×K] · B[K×N], f32, row-major, any M, N, K ≥ 1.
//
// A workgroup of 16×16 invocations owns a 64×64 block of C; each invocation accumulates a 4×4 block of outputs in
// registers. K is walked in slices of 16: the A and B slices are staged in workgroup memory as vec4s so the inner
// loop does two vec4 loads for 16 fused multiply-adds. Global loads are scalar and bounds-checked, which keeps this
// variant correct for every shape; `matmul_vec4.wgsl` loads vec4s from global memory when K and N allow it.

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
const THREADS: u32 = 256u;

// a_tile[kk * 16 + r4] holds A[row0 + 4·r4 .. +4][k0 + kk]: the four rows one invocation needs at depth kk.
var<workgroup> a_tile: array<vec4<f32>, 256>;
// b_tile[kk * 16 + c4] holds B[k0 + kk][col0 + 4·c4 .. +4].
var<workgroup> b_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < dims.k; k0 = k0 + SLICE) {
        for (var j = 0u; j < 4u; j = j + 1u) {
            let idx = tid + j * THREADS;
            // A slice: 64 rows × 16 columns, consecutive invocations walk along a row of A.
            let ar = idx / SLICE;
            let ak = idx % SLICE;
            var av = 0.0;
            if (row0 + ar < dims.m && k0 + ak < dims.k) {
                av = a[(row0 + ar) * dims.k + k0 + ak];
            }
            a_tile[ak * 16u + ar / 4u][ar % 4u] = av;
            // B slice: 16 rows × 64 columns, consecutive invocations walk along a row of B.
            let bk = idx / TILE;
            let bc = idx % TILE;
            var bv = 0.0;
            if (k0 + bk < dims.k && col0 + bc < dims.n) {
                bv = b[(k0 + bk) * dims.n + col0 + bc];
            }
            b_tile[bk * 16u + bc / 4u][bc % 4u] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < SLICE; kk = kk + 1u) {
            let av = a_tile[kk * 16u + lid.y];
            let bv = b_tile[kk * 16u + lid.x];
            acc0 = fma(vec4<f32>(av.x), bv, acc0);
            acc1 = fma(vec4<f32>(av.y), bv, acc1);
            acc2 = fma(vec4<f32>(av.z), bv, acc2);
            acc3 = fma(vec4<f32>(av.w), bv, acc3);
        }
        workgroupBarrier();
    }

    let r = row0 + lid.y * 4u;
    let col = col0 + lid.x * 4u;
    store_row(r, col, acc0);
    store_row(r + 1u, col, acc1);
    store_row(r + 2u, col, acc2);
    store_row(r + 3u, col, acc3);
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
