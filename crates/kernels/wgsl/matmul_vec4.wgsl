// C[M×N] = A[M×K] · B[K×N], f32, row-major, for K and N multiples of 4 (any M ≥ 1).
//
// The same 64×64 block per workgroup and 4×4 outputs per invocation as `matmul.wgsl`, but every global load and
// store moves a vec4: one A load and one B load per invocation per 16-deep slice. The catalog picks this variant
// when the shape allows it.

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

const TILE: u32 = 64u;
const SLICE: u32 = 16u;

var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let k4 = dims.k / 4u;
    let n4 = dims.n / 4u;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    // Which part of the slices this invocation loads.
    let ar = tid / 4u;
    let aq = tid % 4u;
    let bk = tid / 16u;
    let bq = tid % 16u;

    for (var k0 = 0u; k0 < dims.k; k0 = k0 + SLICE) {
        var av = vec4<f32>(0.0);
        if (row0 + ar < dims.m && k0 + aq * 4u < dims.k) {
            av = a[(row0 + ar) * k4 + k0 / 4u + aq];
        }
        // Transpose into a_tile[kk * 16 + row / 4][row % 4].
        let a_base = aq * 4u * 16u + ar / 4u;
        a_tile[a_base][ar % 4u] = av.x;
        a_tile[a_base + 16u][ar % 4u] = av.y;
        a_tile[a_base + 32u][ar % 4u] = av.z;
        a_tile[a_base + 48u][ar % 4u] = av.w;

        var bv = vec4<f32>(0.0);
        if (k0 + bk < dims.k && col0 + bq * 4u < dims.n) {
            bv = b[(k0 + bk) * n4 + col0 / 4u + bq];
        }
        b_tile[bk * 16u + bq] = bv;
        workgroupBarrier();

        for (var kk = 0u; kk < SLICE; kk = kk + 1u) {
            let a4 = a_tile[kk * 16u + lid.y];
            let b4 = b_tile[kk * 16u + lid.x];
            acc0 = fma(vec4<f32>(a4.x), b4, acc0);
            acc1 = fma(vec4<f32>(a4.y), b4, acc1);
            acc2 = fma(vec4<f32>(a4.z), b4, acc2);
            acc3 = fma(vec4<f32>(a4.w), b4, acc3);
        }
        workgroupBarrier();
    }

    let r = row0 + lid.y * 4u;
    let c4 = col0 / 4u + lid.x;
    if (c4 < n4) {
        if (r < dims.m) { c[r * n4 + c4] = acc0; }
        if (r + 1u < dims.m) { c[(r + 1u) * n4 + c4] = acc1; }
        if (r + 2u < dims.m) { c[(r + 2u) * n4 + c4] = acc2; }
        if (r + 3u < dims.m) { c[(r + 3u) * n4 + c4] = acc3; }
    }
}
