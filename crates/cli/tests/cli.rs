//! The `neurolov` binary end to end: the benchmark's JSON, and untrusted kernels run in real worker processes,
//! where an endless kernel is stopped at its deadline and the node keeps serving.

use std::process::Command;
use std::time::{Duration, Instant};

use neurolov_kernels::gpu::{self, REQUIRE_GPU_ENV};
use neurolov_kernels::sandbox::{SandboxError, run_isolated};
use neurolov_kernels::untrusted::{JobBuffer, ShaderFeatures, WgslJob};
use neurolov_protocol::messages::Access;

fn neurolov() -> Command {
    Command::new(env!("CARGO_BIN_EXE_neurolov"))
}

fn have_gpu() -> bool {
    let found = !gpu::discover().is_empty();
    if !found && gpu::gpu_required() {
        panic!("{REQUIRE_GPU_ENV}=1 but no gpu adapter found");
    }
    if !found {
        eprintln!("skipping: no gpu adapter");
    }
    found
}

#[test]
fn bench_json_lists_every_backend_with_small_errors() {
    let out = neurolov().args(["bench", "--json", "--sizes", "32,100", "--runs", "1"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("a json list");
    let expected_backends = 1 + gpu::discover().len();
    assert_eq!(rows.len(), 2 * expected_backends, "{rows:#?}");
    for row in &rows {
        for key in ["backend", "adapter", "software", "size", "gflops", "max_abs_error"] {
            assert!(row.get(key).is_some(), "row lacks {key}: {row}");
        }
        assert!(row["gflops"].as_f64().is_some_and(|g| g > 0.0), "{row}");
        assert!(row["max_abs_error"].as_f64().is_some_and(|e| e < 1e-4), "{row}");
        assert!(row["software"].is_boolean());
        assert!([32, 100].contains(&row["size"].as_u64().unwrap_or(0)));
    }
    assert!(rows.iter().any(|r| r["backend"] == "cpu" && r["software"] == false));
    if have_gpu() {
        assert!(rows.iter().any(|r| r["backend"] != "cpu"), "no gpu row: {rows:#?}");
    }
}

#[test]
fn without_an_adapter_bench_falls_back_to_the_cpu_unless_a_gpu_is_required() {
    // No Metal on Linux: wgpu finds no adapter at all.
    let run = |require: &str| {
        neurolov()
            .args(["bench", "--json", "--sizes", "16", "--runs", "1"])
            .env("WGPU_BACKEND", "metal")
            .env(REQUIRE_GPU_ENV, require)
            .output()
            .expect("runs")
    };
    let out = run("0");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("a json list");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["backend"], "cpu");

    let out = run("1");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no gpu adapter"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn adapters_json_reports_software_adapters_as_such() {
    let out = neurolov().args(["adapters", "--json"]).output().expect("runs");
    assert!(out.status.success());
    let adapters: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("a json list");
    for a in &adapters {
        let name = a["name"].as_str().unwrap_or_default().to_lowercase();
        if name.contains("llvmpipe") || name.contains("swiftshader") {
            assert_eq!(a["software"], true, "{a}");
        }
        assert!(a["limits"]["max_storage_buffer_binding_size"].as_u64().is_some_and(|l| l > 0), "{a}");
    }
    if have_gpu() {
        assert!(!adapters.is_empty());
    }
}

#[test]
fn bench_refuses_absurd_sizes() {
    let out = neurolov().args(["bench", "--sizes", "0"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"));
}

const DOUBLE: &str = r#"
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&data)) { data[id.x] = data[id.x] * 2.0; }
}
"#;

/// Never ends on a real GPU: the value saturates at 2^24, where adding 1 changes nothing, and never goes negative.
/// Mesa's llvmpipe (CI's lavapipe) cuts every loop off after 65535 iterations, so [`endless_job`] also launches
/// 2^24 workgroups: about 10^12 iterations, hours on a CPU — endless as far as any deadline is concerned.
const ENDLESS: &str = r#"
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@compute @workgroup_size(1)
fn main() {
    while (data[0] >= 0.0) { data[0] = data[0] + 1.0; }
}
"#;

fn endless_job() -> WgslJob {
    WgslJob { dispatch: [4096, 4096, 1], ..job(ENDLESS, &[0.0]) }
}

fn job(source: &str, values: &[f32]) -> WgslJob {
    WgslJob {
        source: source.into(),
        entry_point: "main".into(),
        buffers: vec![JobBuffer {
            binding: 0,
            access: Access::ReadWrite,
            size_bytes: values.len() as u64 * 4,
            init: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }],
        dispatch: [1, 1, 1],
    }
}

fn worker() -> Command {
    let mut c = neurolov();
    c.arg("kernel-worker");
    c
}

#[test]
fn an_endless_kernel_is_stopped_and_the_node_keeps_serving() {
    if !have_gpu() {
        return;
    }
    let features = ShaderFeatures::default();
    let start = Instant::now();
    let err = run_isolated(&mut worker(), &endless_job(), features, Duration::from_secs(2))
        .expect_err("an endless kernel cannot finish");
    assert!(matches!(err, SandboxError::Timeout { timeout_ms: 2000 }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(60), "stopping took {:?}", start.elapsed());

    let out = run_isolated(&mut worker(), &job(DOUBLE, &[1.5, -2.0, 3.0]), features, Duration::from_secs(30))
        .expect("a good kernel still runs");
    let want: Vec<u8> = [3.0f32, -4.0, 6.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(out, vec![(0, want)]);
}

#[test]
fn the_sandbox_refuses_invalid_kernels_before_starting_a_worker() {
    let mut missing = Command::new("/nonexistent/neurolov-worker");
    let err = run_isolated(&mut missing, &job("fn broken(", &[0.0]), ShaderFeatures::default(), Duration::from_secs(1))
        .expect_err("invalid");
    assert!(matches!(err, SandboxError::Rejected(_)), "{err}");
}

#[test]
fn a_worker_fed_garbage_replies_with_an_error() {
    use std::io::Write;
    let mut child =
        worker().stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().expect("spawns");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&u64::MAX.to_le_bytes()).expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("exits");
    assert!(out.status.success());
    // Ready byte, error tag, then a message naming the problem.
    assert_eq!(&out.stdout[..2], b"R\x01");
    assert!(
        String::from_utf8_lossy(&out.stdout[6..]).contains("exceeds"),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `neurolov embed --json` prints one unit vector of 384 per text, the reference's for "hello world"
/// (sentence-transformers: −0.0345, 0.0310, 0.0067, …); `neurolov chat` streams a reply that stops at the end
/// marker; a sampling request out of range is refused with a clear message.
#[test]
fn embed_and_chat_on_the_cached_models() {
    let out = neurolov().args(["embed", "--json", "hello world", "Café"]).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("a json line")).collect();
    assert_eq!(rows.len(), 2);
    let v: Vec<f64> = rows[0]["embedding"].as_array().expect("a vector").iter().filter_map(|x| x.as_f64()).collect();
    assert_eq!(v.len(), 384);
    assert!((v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-4, "unit length");
    for (got, want) in v.iter().zip([-0.034_477, 0.031_023, 0.006_735]) {
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
    assert_eq!(rows[0]["tokens"], 4, "[CLS] hello world [SEP]");

    let out = neurolov()
        .args(["chat", "What is the capital of France?", "--max-tokens", "24", "--stats"])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("Paris") && !reply.contains("<|im_end|>"), "{reply}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("(Stop)"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = neurolov().args(["chat", "hi", "--top-p", "0"]).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_p"), "{}", String::from_utf8_lossy(&out.stderr));
}
