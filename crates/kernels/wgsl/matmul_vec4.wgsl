// C[M×N] = A[M×K] · B[K×N], f32, row-major, for K and N multiples of 4 (any M ≥ 1).
//
// The same 64×64 block per workgroup, 4×4 outputs per invocation and workgroup-memory layout as `matmul.wgsl`, but
// every global load and store moves a vec4: one A load and one B load per invocation per 16-deep slice. The
// executor picks this variant, or `matmul_vec4_large.wgsl`, when the shape allows it.

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

// a_tile[r * 4 + q] holds A[row0 + r][k0 + 4q .. +4]; b_tile[kk * 16 + j] holds B[k0 + kk][col0 + 4j .. +4].
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

    let ar = row0 + tid / 4u;
    let aq = tid % 4u;
    let bk = tid / 16u;
    let bq = col0 / 4u + tid % 16u;
    let r = lid.y * 4u;

    for (var k0 = 0u; k0 < dims.k; k0 = k0 + SLICE) {
        var av = vec4<f32>(0.0);
        if (ar < dims.m && k0 + aq * 4u < dims.k) {
            av = a[ar * k4 + k0 / 4u + aq];
        }
        a_tile[tid] = av;
        var bv = vec4<f32>(0.0);
        if (k0 + bk < dims.k && bq < n4) {
            bv = b[(k0 + bk) * n4 + bq];
        }
        b_tile[tid] = bv;
        workgroupBarrier();

        for (var q = 0u; q < SLICE / 4u; q = q + 1u) {
            let a0 = a_tile[r * 4u + q];
            let a1 = a_tile[(r + 1u) * 4u + q];
            let a2 = a_tile[(r + 2u) * 4u + q];
            let a3 = a_tile[(r + 3u) * 4u + q];
            for (var s = 0u; s < 4u; s = s + 1u) {
                let b4 = b_tile[(q * 4u + s) * 16u + lid.x];
                acc0 = fma(vec4<f32>(a0[s]), b4, acc0);
                acc1 = fma(vec4<f32>(a1[s]), b4, acc1);
                acc2 = fma(vec4<f32>(a2[s]), b4, acc2);
                acc3 = fma(vec4<f32>(a3[s]), b4, acc3);
            }
        }
        workgroupBarrier();
    }

    let row = row0 + r;
    let c4 = col0 / 4u + lid.x;
    if (c4 < n4) {
        if (row < dims.m) { c[row * n4 + c4] = acc0; }
        if (row + 1u < dims.m) { c[(row + 1u) * n4 + c4] = acc1; }
        if (row + 2u < dims.m) { c[(row + 2u) * n4 + c4] = acc2; }
        if (row + 3u < dims.m) { c[(row + 3u) * n4 + c4] = acc3; }
    }
}
