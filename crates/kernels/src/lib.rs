//! Neurolov's compute: the WGSL kernels every provider runs (native through wgpu, browsers through WebGPU), their
//! catalog and CPU references, the wgpu executor with its CPU fallback, the checks on client-supplied WGSL, and the
//! matmul benchmark a node uses to pick its fastest backend per kernel.

pub mod backend;
pub mod bench;
pub mod catalog;
pub mod cpu;
pub mod gpu;
pub mod nn;
pub mod nn_gpu;
pub mod ops;
pub mod pool;
pub mod quant;
pub mod sandbox;
pub mod timing;
pub mod untrusted;

pub use catalog::{Access, KernelId, KernelSpec, Shape};
pub use ops::{Op, ShapeError};
