//! Every catalog kernel on the real wgpu path (lavapipe in CI) against its f64 CPU reference, on random inputs of
//! odd shapes: 1, 7, 17, 255, 1000 and non-multiples of the tiles, plus grids large enough to need a 2-D dispatch.

mod common;

use neurolov_kernels::backend::{Backend, Compute};
use neurolov_kernels::catalog::{KernelId, Shape};
use neurolov_kernels::cpu::{self, max_abs_error};
use neurolov_kernels::gpu::{GpuError, GpuExecutor};
use neurolov_kernels::ops::{Op, Sample};

/// Runs `kernel` at each shape on the GPU and compares with the reference; `tol` gives the allowed absolute error
/// for a shape (f32 sums of many terms drift further than single products).
fn check(gpu: &GpuExecutor, kernel: KernelId, shapes: &[Shape], tol: impl Fn(Shape) -> f64) {
    for (i, &shape) in shapes.iter().enumerate() {
        let sample = Sample::new(kernel, shape, 100 + i as u64);
        let op = sample.op();
        let want = cpu::reference(&op).expect("reference");
        let got = gpu.run_kernel(&op, kernel).unwrap_or_else(|e| panic!("{kernel} {shape:?}: {e}"));
        let err = max_abs_error(&got, &want);
        assert!(err <= tol(shape), "{kernel} {shape:?}: max abs error {err:e} > {:e}", tol(shape));
    }
}

fn mm(m: usize, n: usize, k: usize) -> Shape {
    Shape::Matmul { m, n, k }
}

fn rows(rows: usize, cols: usize) -> Shape {
    Shape::Rows { rows, cols }
}

fn flat(len: usize) -> Shape {
    Shape::Flat { len }
}

/// Error bound of an f32 sum of `terms` products of values in [-1, 1].
fn sum_tol(terms: usize) -> f64 {
    2e-7 * terms as f64 + 1e-5
}

#[test]
fn matmul_generic_on_odd_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let shapes = [
        mm(1, 1, 1),
        mm(1, 7, 17),
        mm(7, 1, 1000),
        mm(17, 17, 17),
        mm(255, 7, 255),
        mm(1000, 17, 7),
        mm(7, 1000, 255),
        mm(255, 255, 1000),
        mm(65, 129, 33),
    ];
    check(&gpu, KernelId::Matmul, &shapes, |s| match s {
        Shape::Matmul { k, .. } => sum_tol(k),
        _ => 0.0,
    });
}

#[test]
fn matmul_vec4_on_aligned_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let shapes = [mm(1, 4, 4), mm(7, 4, 1000), mm(17, 1000, 4), mm(255, 252, 20), mm(1000, 68, 256), mm(64, 64, 64)];
    check(&gpu, KernelId::MatmulVec4, &shapes, |s| match s {
        Shape::Matmul { k, .. } => sum_tol(k),
        _ => 0.0,
    });
}

#[test]
fn matmul_vec4_large_on_aligned_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let shapes = [mm(1, 4, 4), mm(7, 4, 1000), mm(17, 1000, 4), mm(255, 252, 20), mm(129, 132, 260), mm(256, 256, 256)];
    check(&gpu, KernelId::MatmulVec4Large, &shapes, |s| match s {
        Shape::Matmul { k, .. } => sum_tol(k),
        _ => 0.0,
    });
}

#[test]
fn the_generic_matmul_is_used_for_unaligned_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let sample = Sample::new(KernelId::Matmul, mm(8, 6, 8), 1);
    assert_eq!(gpu.kernel_for(&sample.op()), KernelId::Matmul);
    let err = gpu.run_kernel(&sample.op(), KernelId::MatmulVec4Large).expect_err("n = 6 is not a multiple of 4");
    assert!(matches!(err, GpuError::WrongKernel { .. }), "{err}");
}

#[test]
fn matmul_tuning_keeps_the_faster_variant() {
    let Some(gpu) = common::gpu() else { return };
    let timings = gpu.tune_matmul(128).expect("both variants run");
    assert_eq!(timings.len(), 2);
    let best = timings.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|t| t.0);
    let aligned = Sample::new(KernelId::Matmul, mm(64, 64, 64), 1);
    assert_eq!(Some(gpu.kernel_for(&aligned.op())), best);
}

#[test]
fn elementwise_kernels() {
    let Some(gpu) = common::gpu() else { return };
    let shapes = [flat(1), flat(7), flat(17), flat(255), flat(1000), flat(70_001)];
    for kernel in [KernelId::Add, KernelId::Mul, KernelId::Scale] {
        check(&gpu, kernel, &shapes, |_| 0.0);
    }
    check(&gpu, KernelId::Gelu, &shapes, |_| 1e-6);
}

#[test]
fn gelu_on_large_inputs() {
    let Some(gpu) = common::gpu() else { return };
    let x: Vec<f32> = [-1e30f32, -1e9, -50.0, -8.0, -3.0, -0.5, 0.0, 0.5, 3.0, 8.0, 50.0, 1e9, 1e30].to_vec();
    let op = Op::Gelu { a: &x };
    let want = cpu::reference(&op).expect("reference");
    // Exact GELU: ≈0 far left, ≈x far right.
    assert!(want[0].abs() < 1e-6 && want[1].abs() < 1e-6 && want[2].abs() < 1e-6, "{want:?}");
    assert_eq!(want[12], 1e30);
    let got = gpu.run(&op).expect("gelu");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-6 + 1e-6 * w.abs(), "x = {}: gpu {g}, reference {w}", x[i]);
    }
}

#[test]
fn elementwise_beyond_one_dispatch_dimension() {
    let Some(gpu) = common::gpu() else { return };
    // 65535 workgroups × 256 invocations is the most one dimension covers; this needs the second.
    check(&gpu, KernelId::Add, &[flat(65_535 * 256 + 1001)], |_| 0.0);
}

#[test]
fn row_kernels() {
    let Some(gpu) = common::gpu() else { return };
    let shapes = [rows(1, 1), rows(1, 1000), rows(7, 17), rows(17, 255), rows(255, 7), rows(1000, 1000)];
    let by_cols = |s: Shape| match s {
        Shape::Rows { cols, .. } => sum_tol(cols),
        _ => 0.0,
    };
    check(&gpu, KernelId::ReduceSum, &shapes, by_cols);
    check(&gpu, KernelId::Matvec, &shapes, by_cols);
    check(&gpu, KernelId::Softmax, &shapes, |_| 1e-6);
    check(&gpu, KernelId::Layernorm, &shapes, |_| 5e-6);
}

#[test]
fn row_kernels_beyond_one_dispatch_dimension() {
    let Some(gpu) = common::gpu() else { return };
    let shapes = [rows(70_000, 3)];
    check(&gpu, KernelId::ReduceSum, &shapes, |_| 1e-5);
    check(&gpu, KernelId::Softmax, &shapes, |_| 1e-6);
}

#[test]
fn softmax_does_not_overflow_on_large_logits() {
    let Some(gpu) = common::gpu() else { return };
    let x: Vec<f32> = (0..300).map(|i| 80.0 + i as f32).collect();
    let op = Op::Softmax { x: &x, rows: 1, cols: 300 };
    let got = gpu.run(&op).expect("softmax");
    assert!(got.iter().all(|v| v.is_finite()), "non-finite softmax output");
    assert!(max_abs_error(&got, &cpu::reference(&op).expect("reference")) < 1e-6);
}

#[test]
fn bad_shapes_are_refused_before_the_gpu() {
    let Some(gpu) = common::gpu() else { return };
    let a = [1.0f32; 6];
    let err = gpu.run(&Op::Matmul { a: &a, b: &a, m: 2, n: 2, k: 2 }).expect_err("6 ≠ 4 elements");
    assert!(matches!(err, GpuError::Shape(_)), "{err}");
}

#[test]
fn oversized_buffers_fail_typed_and_fall_back_to_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let limit = gpu.report().limits.max_storage_buffer_binding_size;
    // One operand just over the storage-binding limit; the product itself is cheap (n = 1).
    let k = 1024;
    let m = (limit / 4) as usize / k + 1;
    let a = vec![0.5f32; m * k];
    let b = vec![1.0f32; k];
    let op = Op::Matmul { a: &a, b: &b, m, n: 1, k };
    let err = gpu.run(&op).expect_err("over the limit");
    assert!(matches!(err, GpuError::LimitExceeded { what: "storage buffer binding size", .. }), "{err}");

    let compute = Compute::new(Some(gpu));
    assert_eq!(compute.backend_for(KernelId::Matmul), Backend::Gpu);
    let ran = compute.run(&op).expect("falls back");
    assert_eq!(ran.backend, Backend::Cpu);
    assert!(ran.output.iter().all(|&v| v == 512.0));
}

#[test]
fn a_lost_device_falls_back_to_the_cpu() {
    let Some(gpu) = common::gpu() else { return };
    let sample = Sample::new(KernelId::Gelu, flat(1000), 1);
    let op = sample.op();
    gpu.destroy();
    let err = gpu.run(&op).expect_err("destroyed");
    // The reason comes from wgpu's own device-lost callback.
    assert!(matches!(&err, GpuError::DeviceLost(reason) if reason.contains("Destroyed")), "{err:?}");
    let ran = Compute::new(Some(gpu)).run(&op).expect("falls back");
    assert_eq!(ran.backend, Backend::Cpu);
    assert_eq!(ran.output, cpu::reference(&op).expect("reference"));
}

#[test]
fn calibration_picks_a_backend_for_every_kernel() {
    let Some(gpu) = common::gpu() else { return };
    let software = gpu.report().software;
    let mut compute = Compute::new(Some(gpu));
    let calibrations = compute.calibrate();
    assert_eq!(calibrations.len(), neurolov_kernels::backend::planned_kernels().count());
    assert_eq!(calibrations.len(), 9);
    for c in &calibrations {
        let gpu_gflops = c.gpu_gflops.expect("gpu measured");
        let faster = if gpu_gflops >= c.cpu_gflops { Backend::Gpu } else { Backend::Cpu };
        assert_eq!(c.chosen, faster, "{c:?}");
        assert_eq!(compute.backend_for(c.kernel), c.chosen);
    }
    if software {
        eprintln!("software adapter: plan {:?}", compute.plan());
    }
}
