//! Client WGSL: malformed, oversized and hostile kernels are refused with a precise error before anything runs,
//! and what does run is memory-safe (out-of-bounds accesses stay inside their own buffer).

mod common;

use neurolov_kernels::catalog::Access;
use neurolov_kernels::untrusted::{
    JobBuffer, MAX_SOURCE_BYTES, RejectError, ShaderFeatures, WgslJob, needed_features, validate,
};

/// Doubles `data` in place: the well-formed job every rejection case below is a variation of.
const DOUBLE: &str = r#"
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&data)) { data[id.x] = data[id.x] * 2.0; }
}
"#;

fn buffer(binding: u32, access: Access, size_bytes: u64) -> JobBuffer {
    JobBuffer { binding, access, size_bytes, init: Vec::new() }
}

fn job(source: &str) -> WgslJob {
    WgslJob {
        source: source.to_string(),
        entry_point: "main".into(),
        buffers: vec![buffer(0, Access::ReadWrite, 256)],
        dispatch: [1, 1, 1],
    }
}

trait WithBuffers {
    fn with_buffers(self, buffers: Vec<JobBuffer>) -> Self;
}

impl WithBuffers for WgslJob {
    fn with_buffers(self, buffers: Vec<JobBuffer>) -> Self {
        WgslJob { buffers, ..self }
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `want` matches the rejection; `contains` must appear in its message (the precise part a client reads).
fn check(name: &str, job: WgslJob, features: ShaderFeatures, want: fn(&RejectError) -> bool, contains: &str) {
    match validate(&job, features) {
        Ok(_) => panic!("{name}: accepted"),
        Err(e) => {
            assert!(want(&e), "{name}: wrong rejection: {e:?}");
            assert!(e.to_string().contains(contains), "{name}: message {:?} lacks {contains:?}", e.to_string());
        }
    }
}

#[test]
fn the_base_job_is_accepted() {
    let info = validate(&job(DOUBLE), ShaderFeatures::default()).expect("valid");
    assert_eq!(info.workgroup_size, [64, 1, 1]);
    assert_eq!(info.bindings.len(), 1);
    assert_eq!(info.bindings[0].access, Access::ReadWrite);
}

#[test]
fn malformed_and_mismatched_kernels_are_rejected_precisely() {
    let none = ShaderFeatures::default();
    check("garbage", job("this is not wgsl"), none, |e| matches!(e, RejectError::Parse(_)), "expected");
    check(
        "unknown identifier",
        job(&DOUBLE.replace("data[id.x] * 2.0", "missing * 2.0")),
        none,
        |e| matches!(e, RejectError::Parse(_)),
        "missing",
    );
    check(
        "type error",
        job(&DOUBLE.replace("data[id.x] * 2.0", "data[id.x] * 2u")),
        none,
        |e| matches!(e, RejectError::Parse(_) | RejectError::Invalid(_)),
        "",
    );
    check(
        "no such entry point",
        WgslJob { entry_point: "run".into(), ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::NoEntryPoint(n) if n == "run"),
        "`run`",
    );
    check(
        "vertex entry point",
        job("@vertex fn main() -> @builtin(position) vec4<f32> { return vec4<f32>(0.0); }"),
        none,
        |e| matches!(e, RejectError::NotCompute(_)),
        "not a compute shader",
    );
    check(
        "missing buffer",
        WgslJob { buffers: vec![buffer(1, Access::ReadWrite, 256)], ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::MissingBuffer { binding: 0, .. }),
        "`data`",
    );
    check(
        "extra buffer",
        WgslJob { buffers: vec![buffer(0, Access::ReadWrite, 256), buffer(1, Access::Read, 16)], ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::UnusedBuffer { binding: 1, .. }),
        "binding 1",
    );
    check(
        "wrong access",
        WgslJob { buffers: vec![buffer(0, Access::Read, 256)], ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::AccessMismatch { shader: Access::ReadWrite, job: Access::Read, .. }),
        "binding 0",
    );
    check(
        "duplicate binding",
        WgslJob { buffers: vec![buffer(0, Access::ReadWrite, 256), buffer(0, Access::ReadWrite, 256)], ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::DuplicateBinding { binding: 0 }),
        "twice",
    );
    check(
        "fixed array larger than its buffer",
        WgslJob {
            buffers: vec![buffer(0, Access::ReadWrite, 16)],
            ..job(&DOUBLE.replace("array<f32>", "array<f32, 64>").replace("arrayLength(&data)", "64u"))
        },
        none,
        |e| matches!(e, RejectError::BufferTooSmall { needed: 256, given: 16, .. }),
        "256 bytes",
    );
    check(
        "second bind group",
        job(&DOUBLE.replace("@group(0)", "@group(1)")),
        none,
        |e| matches!(e, RejectError::WrongGroup { group: 1, .. }),
        "group 1",
    );
    check(
        "texture binding",
        job("@group(0) @binding(0) var t: texture_storage_2d<rgba8unorm, write>;\n\
             @compute @workgroup_size(1) fn main() { textureStore(t, vec2<i32>(0), vec4<f32>(1.0)); }"),
        none,
        |e| matches!(e, RejectError::NotABuffer { .. }),
        "not a buffer",
    );
    check(
        "override constant",
        job(&DOUBLE.replace("@compute", "override scale: f32 = 2.0;\n@compute").replace("* 2.0", "* scale")),
        none,
        |e| matches!(e, RejectError::Overrides),
        "overridable",
    );
}

#[test]
fn limits_are_enforced() {
    let none = ShaderFeatures::default();
    let padded = format!("{DOUBLE}\n//{}", "x".repeat(MAX_SOURCE_BYTES));
    check("huge source", job(&padded), none, |e| matches!(e, RejectError::SourceTooLarge { .. }), "limit");
    check(
        "workgroup too large",
        job(&DOUBLE.replace("@workgroup_size(64)", "@workgroup_size(1024)")),
        none,
        |e| matches!(e, RejectError::WorkgroupTooLarge { size: [1024, 1, 1] }),
        "256 invocations",
    );
    check(
        "workgroup too many invocations",
        job(&DOUBLE.replace("@workgroup_size(64)", "@workgroup_size(32, 32)")),
        none,
        |e| matches!(e, RejectError::WorkgroupTooLarge { .. }),
        "",
    );
    check(
        "dispatch over a dimension",
        WgslJob { dispatch: [65_536, 1, 1], ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::DispatchTooLarge { .. }),
        "65535 per dimension",
    );
    check(
        "dispatch over the total",
        WgslJob { dispatch: [65_535, 65_535, 65_535], ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::DispatchTooLarge { .. }),
        "workgroups in all",
    );
    check(
        "empty dispatch",
        WgslJob { dispatch: [0, 1, 1], ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::EmptyDispatch { .. }),
        "no workgroup",
    );
    for size in [0, 6, 1 << 40] {
        check(
            "bad buffer size",
            WgslJob { buffers: vec![buffer(0, Access::ReadWrite, size)], ..job(DOUBLE) },
            none,
            |e| matches!(e, RejectError::BadBufferSize { .. }),
            "multiple of 4",
        );
    }
    check(
        "too many buffers",
        WgslJob { buffers: (0..20).map(|b| buffer(b, Access::Read, 4)).collect(), ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::TooManyBuffers { actual: 20 }),
        "limit",
    );
    check(
        "nine storage buffers",
        WgslJob { buffers: (0..9).map(|b| buffer(b, Access::ReadWrite, 4)).collect(), ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::TooManyBuffers { actual: 9 }),
        "8 storage",
    );
    check(
        "no output",
        job("@group(0) @binding(0) var<storage, read> data: array<f32>;\n\
             @compute @workgroup_size(1) fn main() { let x = data[0]; }")
        .with_buffers(vec![buffer(0, Access::Read, 16)]),
        none,
        |e| matches!(e, RejectError::NoOutput),
        "no read-write buffer",
    );
    check(
        "workgroup memory over the limit",
        job(&DOUBLE
            .replace("@compute", "var<workgroup> big: array<f32, 8192>;\n@compute")
            .replace("data[id.x] * 2.0", "data[id.x] * big[id.x]")),
        none,
        |e| matches!(e, RejectError::WorkgroupMemoryTooLarge { bytes: 32768 }),
        "workgroup memory",
    );
    check(
        "initial data longer than the buffer",
        WgslJob { buffers: vec![JobBuffer { init: vec![0; 512], ..buffer(0, Access::ReadWrite, 256) }], ..job(DOUBLE) },
        none,
        |e| matches!(e, RejectError::InitTooLong { .. }),
        "512 bytes",
    );
}

#[test]
fn features_the_adapter_lacks_are_named() {
    let f16 = "enable f16;\n@group(0) @binding(0) var<storage, read_write> data: array<f16>;\n\
               @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n\
               if (id.x < arrayLength(&data)) { data[id.x] = data[id.x] * 2.0h; } }";
    check(
        "f16 without shader-f16",
        job(f16),
        ShaderFeatures::default(),
        |e| matches!(e, RejectError::MissingFeature(_)),
        "feature",
    );
    validate(&job(f16), ShaderFeatures { f16: true, subgroups: false }).expect("f16 adapter accepts it");
    // What a job needs is the smallest set that makes it valid: that is what the coordinator routes it by.
    let needs = needed_features(&job(f16)).unwrap();
    assert_eq!(
        (needs, needs.names()),
        (ShaderFeatures { f16: true, subgroups: false }, vec!["shader-f16".to_string()])
    );
    let needs = needed_features(&job(DOUBLE)).unwrap();
    assert_eq!((needs, needs.names()), (ShaderFeatures::default(), Vec::<String>::new()));
    assert!(needed_features(&job("@compute fn main() {")).is_err());
}

#[test]
fn a_valid_job_runs_and_returns_its_buffers() {
    let Some(gpu) = common::gpu() else { return };
    let values: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let mut job = job(DOUBLE);
    job.buffers[0].init = f32_bytes(&values);
    let out = gpu.run_untrusted(&job, std::time::Duration::from_secs(30)).expect("runs");
    assert_eq!(out.len(), 1);
    let doubled: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
    assert_eq!(out[0], (0, f32_bytes(&doubled)));
}

#[test]
fn out_of_bounds_accesses_stay_inside_their_buffer() {
    let Some(gpu) = common::gpu() else { return };
    // Writes far past `out` and reads far past `src`; `victim` sits beside them and must come back untouched.
    let hostile = r#"
@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> victim: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let far = id.x * 4096u + 1000000u;
    out[far] = src[far] + 13.0;
    out[id.x + 64u] = 99.0;
    if (id.x == 0u) { victim[0] = victim[0]; }
}
"#;
    let victim: Vec<f32> = (0..64).map(|i| 1000.0 + i as f32).collect();
    let job = WgslJob {
        source: hostile.into(),
        entry_point: "main".into(),
        buffers: vec![
            JobBuffer { init: f32_bytes(&[5.0; 64]), ..buffer(0, Access::Read, 256) },
            buffer(1, Access::ReadWrite, 256),
            JobBuffer { init: f32_bytes(&victim), ..buffer(2, Access::ReadWrite, 256) },
        ],
        dispatch: [64, 1, 1],
    };
    let out = gpu.run_untrusted(&job, std::time::Duration::from_secs(30)).expect("runs, confined");
    assert_eq!(out.iter().map(|(b, _)| *b).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(out[1].1, f32_bytes(&victim), "an out-of-bounds write reached another buffer");
    // The device still computes correctly afterwards.
    let mut ok = WgslJob { source: DOUBLE.into(), ..job_with_values(&[1.0, 2.0]) };
    ok.entry_point = "main".into();
    let again = gpu.run_untrusted(&ok, std::time::Duration::from_secs(30)).expect("still serving");
    assert_eq!(again[0].1, f32_bytes(&[2.0, 4.0]));
}

fn job_with_values(values: &[f32]) -> WgslJob {
    WgslJob {
        buffers: vec![JobBuffer { init: f32_bytes(values), ..buffer(0, Access::ReadWrite, values.len() as u64 * 4) }],
        ..job(DOUBLE)
    }
}

/// Issue 9 §3: a 64 KiB source of one long sum (`x+x+…`, 20,000 terms) overflowed naga's stack and aborted the
/// process — a coordinator validating a job, or a node. It is refused before naga sees it; a long but reasonable
/// statement (1,000 terms) still validates; comments do not count.
#[test]
fn statements_too_long_for_the_front_end_are_refused_before_it_runs() {
    let sum = |terms: usize| {
        DOUBLE.replace(
            "data[id.x] = data[id.x] * 2.0",
            &format!("let v = data[id.x]; data[id.x] = {}", vec!["v"; terms].join("+")),
        )
    };
    check(
        "20,000-term sum",
        job(&sum(20_000)),
        ShaderFeatures::default(),
        |e| matches!(e, RejectError::StatementTooLong { operators } if *operators >= 19_999),
        "1024",
    );
    validate(&job(&sum(1_000)), ShaderFeatures::default()).expect("a 1,000-term sum is fine");
    let commented = format!("{DOUBLE}\n/* {} /* nested */ */\n// {}", "+".repeat(5_000), "- ".repeat(5_000));
    validate(&job(&commented), ShaderFeatures::default()).expect("operators in comments do not count");
    assert_eq!(neurolov_kernels::untrusted::statement_operators("a = b + -c; d = e;"), 3);
}
