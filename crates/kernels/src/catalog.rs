//! The kernel catalog: every WGSL kernel Neurolov runs, with its entry point, workgroup size, bindings and FLOP
//! count. The WGSL files in `crates/kernels/wgsl/` are the only copy of each kernel; they are embedded here
//! verbatim so the node compiles them and, later, the coordinator serves the very same bytes to browsers.

pub use neurolov_protocol::messages::Access;

/// One `@group(0) @binding(n)` resource a kernel's entry point uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub binding: u32,
    pub name: &'static str,
    pub access: Access,
}

/// A WGSL source file in the kernel folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFile {
    pub name: &'static str,
    pub source: &'static str,
}

/// The kernel files, as embedded from `crates/kernels/wgsl/`.
pub const FILES: &[KernelFile] = &[
    KernelFile { name: "matmul.wgsl", source: include_str!("../wgsl/matmul.wgsl") },
    KernelFile { name: "matmul_vec4.wgsl", source: include_str!("../wgsl/matmul_vec4.wgsl") },
    KernelFile { name: "matmul_vec4_large.wgsl", source: include_str!("../wgsl/matmul_vec4_large.wgsl") },
    KernelFile { name: "elementwise.wgsl", source: include_str!("../wgsl/elementwise.wgsl") },
    KernelFile { name: "rows.wgsl", source: include_str!("../wgsl/rows.wgsl") },
    // The inference engine's kernels (`nn_gpu`), served so browser tabs compile the same file.
    KernelFile { name: "nn.wgsl", source: crate::nn_gpu::NN_WGSL },
];

/// The WebGL2 tier's shaders (the browser provider's fallback where WebGPU is missing: no compute shaders, so C is
/// rendered one fragment per element). Served beside the WGSL; the native node never runs them.
pub const GLSL_FILES: &[KernelFile] = &[
    KernelFile { name: "matmul.vert", source: include_str!("../glsl/matmul.vert") },
    KernelFile { name: "matmul.frag", source: include_str!("../glsl/matmul.frag") },
];

/// Every kernel in the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelId {
    Matmul,
    MatmulVec4,
    MatmulVec4Large,
    Matvec,
    Add,
    Mul,
    Scale,
    Gelu,
    ReduceSum,
    Softmax,
    Layernorm,
}

impl KernelId {
    pub const ALL: [KernelId; 11] = [
        KernelId::Matmul,
        KernelId::MatmulVec4,
        KernelId::MatmulVec4Large,
        KernelId::Matvec,
        KernelId::Add,
        KernelId::Mul,
        KernelId::Scale,
        KernelId::Gelu,
        KernelId::ReduceSum,
        KernelId::Softmax,
        KernelId::Layernorm,
    ];

    pub fn spec(self) -> &'static KernelSpec {
        // ALL and SPECS list the kernels in the same order; a unit test holds them to it.
        &SPECS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The kernel a node schedules by name: the vec4 matmuls are the GPU's variants of `matmul`.
    pub fn family(self) -> KernelId {
        match self {
            KernelId::MatmulVec4 | KernelId::MatmulVec4Large => KernelId::Matmul,
            k => k,
        }
    }

    pub fn from_name(name: &str) -> Option<KernelId> {
        KernelId::ALL.into_iter().find(|id| id.name() == name)
    }
}

impl serde::Serialize for KernelId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::fmt::Display for KernelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The size of one kernel invocation, which fixes its FLOP count and dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// C[m×n] = A[m×k]·B[k×n].
    Matmul { m: usize, n: usize, k: usize },
    /// A flat array of `len` elements.
    Flat { len: usize },
    /// A row-major matrix processed one row at a time.
    Rows { rows: usize, cols: usize },
}

/// Static facts about one kernel.
#[derive(Debug)]
pub struct KernelSpec {
    pub id: KernelId,
    pub name: &'static str,
    pub file: &'static str,
    pub entry_point: &'static str,
    pub workgroup_size: [u32; 3],
    pub bindings: &'static [Binding],
    /// Floating-point operations per output element (or per input element for row kernels); see [`KernelSpec::flops`].
    flops_per_element: u64,
}

impl KernelSpec {
    pub fn source(&self) -> &'static str {
        FILES.iter().find(|f| f.name == self.file).map(|f| f.source).unwrap_or_default()
    }

    /// For the matmul variants: the side of the square block of C one workgroup computes.
    pub fn matmul_tile(&self) -> Option<usize> {
        match self.id {
            KernelId::Matmul | KernelId::MatmulVec4 => Some(64),
            KernelId::MatmulVec4Large => Some(128),
            _ => None,
        }
    }

    /// Floating-point operations one run performs at `shape`: 2·m·n·k for a matrix product (a fused multiply-add
    /// counts as two), a per-element count otherwise.
    pub fn flops(&self, shape: Shape) -> u64 {
        let per = self.flops_per_element;
        match shape {
            Shape::Matmul { m, n, k } => per * (m as u64) * (n as u64) * (k as u64),
            Shape::Flat { len } => per * len as u64,
            Shape::Rows { rows, cols } => per * (rows as u64) * (cols as u64),
        }
    }
}

const MATMUL_BINDINGS: &[Binding] = &[
    Binding { binding: 0, name: "dims", access: Access::Uniform },
    Binding { binding: 1, name: "a", access: Access::Read },
    Binding { binding: 2, name: "b", access: Access::Read },
    Binding { binding: 3, name: "c", access: Access::ReadWrite },
];
const BINARY_BINDINGS: &[Binding] = &[
    Binding { binding: 0, name: "params", access: Access::Uniform },
    Binding { binding: 1, name: "a", access: Access::Read },
    Binding { binding: 2, name: "b", access: Access::Read },
    Binding { binding: 3, name: "out", access: Access::ReadWrite },
];
const UNARY_BINDINGS: &[Binding] = &[
    Binding { binding: 0, name: "params", access: Access::Uniform },
    Binding { binding: 1, name: "a", access: Access::Read },
    Binding { binding: 3, name: "out", access: Access::ReadWrite },
];
const ROW_BINDINGS: &[Binding] = &[
    Binding { binding: 0, name: "params", access: Access::Uniform },
    Binding { binding: 1, name: "x", access: Access::Read },
    Binding { binding: 4, name: "y", access: Access::ReadWrite },
];
const ROW_WEIGHTED_BINDINGS: &[Binding] = &[
    Binding { binding: 0, name: "params", access: Access::Uniform },
    Binding { binding: 1, name: "x", access: Access::Read },
    Binding { binding: 2, name: "w", access: Access::Read },
    Binding { binding: 4, name: "y", access: Access::ReadWrite },
];
const LAYERNORM_BINDINGS: &[Binding] = &[
    Binding { binding: 0, name: "params", access: Access::Uniform },
    Binding { binding: 1, name: "x", access: Access::Read },
    Binding { binding: 2, name: "w", access: Access::Read },
    Binding { binding: 3, name: "bias", access: Access::Read },
    Binding { binding: 4, name: "y", access: Access::ReadWrite },
];

const fn spec(
    id: KernelId,
    name: &'static str,
    file: &'static str,
    entry_point: &'static str,
    workgroup_size: [u32; 3],
    bindings: &'static [Binding],
    flops_per_element: u64,
) -> KernelSpec {
    KernelSpec { id, name, file, entry_point, workgroup_size, bindings, flops_per_element }
}

/// In the order of [`KernelId::ALL`].
static SPECS: [KernelSpec; 11] = [
    spec(KernelId::Matmul, "matmul", "matmul.wgsl", "main", [16, 16, 1], MATMUL_BINDINGS, 2),
    spec(KernelId::MatmulVec4, "matmul_vec4", "matmul_vec4.wgsl", "main", [16, 16, 1], MATMUL_BINDINGS, 2),
    spec(
        KernelId::MatmulVec4Large,
        "matmul_vec4_large",
        "matmul_vec4_large.wgsl",
        "main",
        [16, 16, 1],
        MATMUL_BINDINGS,
        2,
    ),
    spec(KernelId::Matvec, "matvec", "rows.wgsl", "matvec", [256, 1, 1], ROW_WEIGHTED_BINDINGS, 2),
    spec(KernelId::Add, "add", "elementwise.wgsl", "add", [256, 1, 1], BINARY_BINDINGS, 1),
    spec(KernelId::Mul, "mul", "elementwise.wgsl", "mul", [256, 1, 1], BINARY_BINDINGS, 1),
    spec(KernelId::Scale, "scale", "elementwise.wgsl", "scale", [256, 1, 1], UNARY_BINDINGS, 1),
    // x³ (2), ·0.044715 and + (2), ·√(2/π) (1), tanh (~4), 1 + and two products (3).
    spec(KernelId::Gelu, "gelu", "elementwise.wgsl", "gelu", [256, 1, 1], UNARY_BINDINGS, 12),
    spec(KernelId::ReduceSum, "reduce_sum", "rows.wgsl", "reduce_sum", [256, 1, 1], ROW_BINDINGS, 1),
    // max, subtract, exp (~4), add; then subtract, exp, multiply.
    spec(KernelId::Softmax, "softmax", "rows.wgsl", "softmax", [256, 1, 1], ROW_BINDINGS, 12),
    // sum; subtract and fma; subtract, two products and an add.
    spec(KernelId::Layernorm, "layernorm", "rows.wgsl", "layernorm", [256, 1, 1], LAYERNORM_BINDINGS, 8),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_follow_the_order_of_all() {
        for id in KernelId::ALL {
            assert_eq!(id.spec().id, id);
            assert_eq!(KernelId::from_name(id.name()), Some(id));
        }
    }

    #[test]
    fn every_spec_names_an_embedded_file_with_its_entry_point() {
        for id in KernelId::ALL {
            let spec = id.spec();
            let source = spec.source();
            assert!(!source.is_empty(), "{} has no source file {}", spec.name, spec.file);
            assert!(source.contains(&format!("fn {}(", spec.entry_point)), "{} lacks its entry point", spec.name);
        }
    }

    #[test]
    fn flop_counts() {
        assert_eq!(KernelId::Matmul.spec().flops(Shape::Matmul { m: 2, n: 3, k: 4 }), 48);
        assert_eq!(KernelId::Add.spec().flops(Shape::Flat { len: 10 }), 10);
        assert_eq!(KernelId::Matvec.spec().flops(Shape::Rows { rows: 3, cols: 5 }), 30);
    }
}
