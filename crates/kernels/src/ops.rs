//! One kernel invocation with its data: the shape checks every backend relies on, the 16-byte parameter block
//! the WGSL reads, and which input goes to which binding. The GPU executor and the CPU path both take an [`Op`],
//! so a shape is checked once, in one place, before anything runs.

use crate::catalog::{KernelId, KernelSpec, Shape};

/// Largest number of elements one operand may have: keeps every flat index inside WGSL's `u32`.
pub const MAX_ELEMENTS: usize = (u32::MAX / 4) as usize;

/// Why an [`Op`]'s data does not fit its shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("{kernel}: dimension {name} is zero")]
    ZeroDimension { kernel: KernelId, name: &'static str },
    #[error("{kernel}: operand {operand} has {actual} elements, the shape needs {expected}")]
    Length { kernel: KernelId, operand: &'static str, expected: usize, actual: usize },
    #[error("{kernel}: operand {operand} would have more than {MAX_ELEMENTS} elements")]
    TooLarge { kernel: KernelId, operand: &'static str },
}

/// A kernel invocation over borrowed row-major f32 data.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    /// C[m×n] = A[m×k]·B[k×n].
    Matmul {
        a: &'a [f32],
        b: &'a [f32],
        m: usize,
        n: usize,
        k: usize,
    },
    /// y[rows] = A[rows×cols]·x[cols].
    Matvec {
        a: &'a [f32],
        x: &'a [f32],
        rows: usize,
        cols: usize,
    },
    Add {
        a: &'a [f32],
        b: &'a [f32],
    },
    Mul {
        a: &'a [f32],
        b: &'a [f32],
    },
    Scale {
        a: &'a [f32],
        alpha: f32,
    },
    Gelu {
        a: &'a [f32],
    },
    /// y[rows] = Σ_j x[row, j].
    ReduceSum {
        x: &'a [f32],
        rows: usize,
        cols: usize,
    },
    Softmax {
        x: &'a [f32],
        rows: usize,
        cols: usize,
    },
    /// y = (x − mean) / √(var + eps) · gamma + beta, per row; gamma and beta have `cols` elements.
    Layernorm {
        x: &'a [f32],
        gamma: &'a [f32],
        beta: &'a [f32],
        rows: usize,
        cols: usize,
        eps: f32,
    },
}

impl<'a> Op<'a> {
    /// The catalog kernel that computes this op (the generic one; see [`Op::gpu_kernel`]).
    /// Whether `kernel` computes this op correctly: the vec4 matmuls need K and N to be multiples of 4.
    pub fn computed_by(&self, kernel: &KernelSpec) -> bool {
        match (kernel.id, self) {
            (KernelId::MatmulVec4 | KernelId::MatmulVec4Large, Op::Matmul { n, k, .. }) => n % 4 == 0 && k % 4 == 0,
            (id, op) => id == op.kernel(),
        }
    }

    pub fn kernel(&self) -> KernelId {
        match self {
            Op::Matmul { .. } => KernelId::Matmul,
            Op::Matvec { .. } => KernelId::Matvec,
            Op::Add { .. } => KernelId::Add,
            Op::Mul { .. } => KernelId::Mul,
            Op::Scale { .. } => KernelId::Scale,
            Op::Gelu { .. } => KernelId::Gelu,
            Op::ReduceSum { .. } => KernelId::ReduceSum,
            Op::Softmax { .. } => KernelId::Softmax,
            Op::Layernorm { .. } => KernelId::Layernorm,
        }
    }

    /// The kernel a GPU runs by default: a vec4 matmul where K and N are multiples of 4 (the executor may swap in
    /// another vec4 variant measured faster on its adapter).
    pub fn gpu_kernel(&self) -> KernelId {
        match *self {
            Op::Matmul { n, k, .. } if n % 4 == 0 && k % 4 == 0 => KernelId::MatmulVec4,
            _ => self.kernel(),
        }
    }

    pub fn shape(&self) -> Shape {
        match *self {
            Op::Matmul { m, n, k, .. } => Shape::Matmul { m, n, k },
            Op::Add { a, .. } | Op::Mul { a, .. } | Op::Scale { a, .. } | Op::Gelu { a } => {
                Shape::Flat { len: a.len() }
            }
            Op::Matvec { rows, cols, .. }
            | Op::ReduceSum { rows, cols, .. }
            | Op::Softmax { rows, cols, .. }
            | Op::Layernorm { rows, cols, .. } => Shape::Rows { rows, cols },
        }
    }

    pub fn flops(&self) -> u64 {
        self.kernel().spec().flops(self.shape())
    }

    /// Number of f32 values the op produces.
    pub fn output_len(&self) -> usize {
        match *self {
            Op::Matmul { m, n, .. } => m * n,
            Op::Matvec { rows, .. } | Op::ReduceSum { rows, .. } => rows,
            Op::Softmax { rows, cols, .. } | Op::Layernorm { rows, cols, .. } => rows * cols,
            Op::Add { a, .. } | Op::Mul { a, .. } | Op::Scale { a, .. } | Op::Gelu { a } => a.len(),
        }
    }

    /// The inputs with their binding numbers in the kernel's WGSL.
    pub fn inputs(&self) -> Vec<(u32, &'a [f32])> {
        match *self {
            Op::Matmul { a, b, .. } | Op::Add { a, b } | Op::Mul { a, b } => vec![(1, a), (2, b)],
            Op::Matvec { a, x, .. } => vec![(1, a), (2, x)],
            Op::Scale { a, .. } | Op::Gelu { a } => vec![(1, a)],
            Op::ReduceSum { x, .. } | Op::Softmax { x, .. } => vec![(1, x)],
            Op::Layernorm { x, gamma, beta, .. } => vec![(1, x), (2, gamma), (3, beta)],
        }
    }

    /// The binding the kernel writes its output to.
    pub fn output_binding(&self) -> u32 {
        match self {
            Op::Matmul { .. } | Op::Add { .. } | Op::Mul { .. } | Op::Scale { .. } | Op::Gelu { .. } => 3,
            Op::Matvec { .. } | Op::ReduceSum { .. } | Op::Softmax { .. } | Op::Layernorm { .. } => 4,
        }
    }

    /// The uniform block at binding 0, as the kernel's WGSL `Params`/`Dims` struct lays it out.
    pub fn params(&self) -> [u32; 4] {
        match *self {
            Op::Matmul { m, n, k, .. } => [m as u32, n as u32, k as u32, 0],
            Op::Add { a, .. } | Op::Mul { a, .. } | Op::Gelu { a } => [a.len() as u32, 0, 0, 0],
            Op::Scale { a, alpha } => [a.len() as u32, alpha.to_bits(), 0, 0],
            Op::Matvec { rows, cols, .. } | Op::ReduceSum { rows, cols, .. } | Op::Softmax { rows, cols, .. } => {
                [rows as u32, cols as u32, 0, 0]
            }
            Op::Layernorm { rows, cols, eps, .. } => [rows as u32, cols as u32, eps.to_bits(), 0],
        }
    }

    /// Checks that every operand has exactly the length the shape calls for and that no dimension is zero.
    pub fn check(&self) -> Result<(), ShapeError> {
        let kernel = self.kernel();
        let nonzero = |name: &'static str, v: usize| {
            if v == 0 { Err(ShapeError::ZeroDimension { kernel, name }) } else { Ok(()) }
        };
        let len = |operand: &'static str, actual: usize, dims: &[usize]| -> Result<(), ShapeError> {
            let expected = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .filter(|&e| e <= MAX_ELEMENTS)
                .ok_or(ShapeError::TooLarge { kernel, operand })?;
            if actual != expected {
                return Err(ShapeError::Length { kernel, operand, expected, actual });
            }
            Ok(())
        };
        match *self {
            Op::Matmul { a, b, m, n, k } => {
                nonzero("m", m)?;
                nonzero("n", n)?;
                nonzero("k", k)?;
                len("a", a.len(), &[m, k])?;
                len("b", b.len(), &[k, n])?;
                len("c", m * n, &[m, n])
            }
            Op::Matvec { a, x, rows, cols } => {
                nonzero("rows", rows)?;
                nonzero("cols", cols)?;
                len("a", a.len(), &[rows, cols])?;
                len("x", x.len(), &[cols])
            }
            Op::Add { a, b } | Op::Mul { a, b } => {
                nonzero("len", a.len())?;
                len("a", a.len(), &[a.len()])?;
                len("b", b.len(), &[a.len()])
            }
            Op::Scale { a, .. } | Op::Gelu { a } => {
                nonzero("len", a.len())?;
                len("a", a.len(), &[a.len()])
            }
            Op::ReduceSum { x, rows, cols } | Op::Softmax { x, rows, cols } => {
                nonzero("rows", rows)?;
                nonzero("cols", cols)?;
                len("x", x.len(), &[rows, cols])
            }
            Op::Layernorm { x, gamma, beta, rows, cols, .. } => {
                nonzero("rows", rows)?;
                nonzero("cols", cols)?;
                len("x", x.len(), &[rows, cols])?;
                len("gamma", gamma.len(), &[cols])?;
                len("beta", beta.len(), &[cols])
            }
        }
    }
}

/// Random f32 values uniform in [-1, 1) from a seed: the inputs of tests, benchmarks and (later) seeded jobs.
pub fn random_vec(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// Owned random inputs for one kernel at one shape, from a seed: what tests, benchmarks and calibration run.
#[derive(Clone, Debug)]
pub struct Sample {
    pub kernel: KernelId,
    pub shape: Shape,
    x: Vec<f32>,
    y: Vec<f32>,
    z: Vec<f32>,
}

impl Sample {
    /// `shape` must be the kernel's kind (`Matmul` for the matmuls, `Flat` for elementwise kernels, `Rows` for row
    /// kernels); for any other pair [`Sample::op`] gives an op whose [`Op::check`] fails.
    pub fn new(kernel: KernelId, shape: Shape, seed: u64) -> Sample {
        let (x_len, y_len, z_len) = match (kernel, shape) {
            (KernelId::Matmul | KernelId::MatmulVec4 | KernelId::MatmulVec4Large, Shape::Matmul { m, n, k }) => {
                (m * k, k * n, 0)
            }
            (KernelId::Add | KernelId::Mul, Shape::Flat { len }) => (len, len, 0),
            (KernelId::Scale | KernelId::Gelu, Shape::Flat { len }) => (len, 0, 0),
            (KernelId::Matvec, Shape::Rows { rows, cols }) => (rows * cols, cols, 0),
            (KernelId::ReduceSum | KernelId::Softmax, Shape::Rows { rows, cols }) => (rows * cols, 0, 0),
            (KernelId::Layernorm, Shape::Rows { rows, cols }) => (rows * cols, cols, cols),
            _ => (0, 0, 0),
        };
        Sample {
            kernel,
            shape,
            x: random_vec(x_len, seed),
            y: random_vec(y_len, seed.wrapping_add(1)),
            z: random_vec(z_len, seed.wrapping_add(2)),
        }
    }

    pub fn op(&self) -> Op<'_> {
        let (x, y, z) = (&self.x[..], &self.y[..], &self.z[..]);
        let (rows, cols) = match self.shape {
            Shape::Rows { rows, cols } => (rows, cols),
            _ => (0, 0),
        };
        match self.kernel {
            KernelId::Matmul | KernelId::MatmulVec4 | KernelId::MatmulVec4Large => match self.shape {
                Shape::Matmul { m, n, k } => Op::Matmul { a: x, b: y, m, n, k },
                _ => Op::Matmul { a: x, b: y, m: 0, n: 0, k: 0 },
            },
            KernelId::Add => Op::Add { a: x, b: y },
            KernelId::Mul => Op::Mul { a: x, b: y },
            KernelId::Scale => Op::Scale { a: x, alpha: -1.5 },
            KernelId::Gelu => Op::Gelu { a: x },
            KernelId::Matvec => Op::Matvec { a: x, x: y, rows, cols },
            KernelId::ReduceSum => Op::ReduceSum { x, rows, cols },
            KernelId::Softmax => Op::Softmax { x, rows, cols },
            KernelId::Layernorm => Op::Layernorm { x, gamma: y, beta: z, rows, cols, eps: 1e-5 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_errors_name_the_operand() {
        let a = [0.0f32; 6];
        let b = [0.0f32; 5];
        let op = Op::Matmul { a: &a, b: &b, m: 2, n: 2, k: 3 };
        assert_eq!(
            op.check(),
            Err(ShapeError::Length { kernel: KernelId::Matmul, operand: "b", expected: 6, actual: 5 })
        );
        let op = Op::Matmul { a: &[], b: &[], m: 0, n: 2, k: 3 };
        assert_eq!(op.check(), Err(ShapeError::ZeroDimension { kernel: KernelId::Matmul, name: "m" }));
        let op = Op::Add { a: &a, b: &b };
        assert!(matches!(op.check(), Err(ShapeError::Length { operand: "b", .. })));
        let op = Op::Matvec { a: &a, x: &a, rows: usize::MAX, cols: 2 };
        assert_eq!(op.check(), Err(ShapeError::TooLarge { kernel: KernelId::Matvec, operand: "a" }));
    }

    #[test]
    fn vec4_matmul_only_for_aligned_shapes() {
        let a = [0.0f32; 16];
        assert_eq!(Op::Matmul { a: &a, b: &a, m: 4, n: 4, k: 4 }.gpu_kernel(), KernelId::MatmulVec4);
        assert_eq!(Op::Matmul { a: &a, b: &a, m: 4, n: 2, k: 8 }.gpu_kernel(), KernelId::Matmul);
    }
}
