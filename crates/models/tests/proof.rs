//! Verified inference on the real SmolLM2 (`proof.rs`): honest runs on every backend pass every challenge; a
//! provider that skips layers, runs another model, moves one layer's output by 1%, invents its activations or emits
//! a token its logits do not give is proven wrong.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

use std::ops::ControlFlow;

use neurolov_kernels::nn::Attention;
use neurolov_kernels::quant::QMatrix;
use neurolov_models::catalog::SMOLLM2_135M_INSTRUCT;
use neurolov_models::device::{BackendKind, Cpu, Device, DeviceError};
use neurolov_models::engine::ChatModel;
use neurolov_models::fetch::{cache_dir, model_dir};
use neurolov_models::generate::{self, FinishReason, Generated, Message, Sampling};
use neurolov_models::llama::{Llama, Trace};
use neurolov_models::proof::{self, Challenge, ChatRun, ChatVerifier, Recorder, Verdict};

fn chat_model(backend: BackendKind) -> ChatModel {
    let dir = model_dir(&cache_dir().unwrap(), &SMOLLM2_135M_INSTRUCT);
    ChatModel::load(&dir.join(SMOLLM2_135M_INSTRUCT.files[0].name), backend).unwrap()
}

fn backends() -> Vec<BackendKind> {
    let gpu = neurolov_kernels::gpu::gpu_required() || neurolov_kernels::gpu::GpuExecutor::open_default().is_ok();
    if gpu { vec![BackendKind::Cpu, BackendKind::Gpu] } else { vec![BackendKind::Cpu] }
}

/// One request as a provider answers it.
struct Answer {
    prompt: Vec<u32>,
    sampling: Sampling,
    generated: Generated,
    recorder: Recorder,
}

impl Answer {
    fn run(&self) -> ChatRun<'_> {
        ChatRun {
            prompt: &self.prompt,
            sampling: self.sampling,
            tokens: &self.generated.tokens,
            finish: self.generated.finish,
            stop_token: self.generated.stop_token,
        }
    }

    /// The verifier's verdict for a challenge drawn from `seed`, the provider opening with `weights`.
    fn verdict(&self, verifier: &ChatVerifier, weights: &Llama, seed: u64) -> Verdict {
        let run = self.run();
        let root = self.recorder.commit().unwrap();
        let c = verifier.config();
        let challenge = Challenge::draw(seed, c.layers, run.positions(), run.decisions().len());
        let opening = proof::open(weights, &self.recorder, &run, &challenge).unwrap();
        // Through the wire format, as a coordinator receives it.
        let opening = proof::Opening::from_bytes(&opening.to_bytes()).unwrap();
        verifier.check(&run, &root, &challenge, &opening)
    }
}

const PROMPTS: [&str; 3] = [
    "What is the capital of France?",
    "Write a haiku about graphics cards.",
    "List three prime numbers and explain why they are prime.",
];

fn samplings() -> [Sampling; 2] {
    [Sampling::GREEDY, Sampling { temperature: 0.8, top_p: 0.9, seed: 42 }]
}

fn answer_with(model: &mut ChatModel, text: &str, sampling: &Sampling, max_tokens: usize) -> Answer {
    let prompt = model.prompt(&[Message { role: "user".into(), content: text.into() }]).unwrap();
    let mut recorder = Recorder::new(model.config());
    let stop = model.stop_tokens().to_vec();
    let generated = model
        .generate_traced(&prompt, max_tokens, sampling, &stop, &mut recorder, |_| ControlFlow::Continue(()))
        .unwrap();
    Answer { prompt, sampling: *sampling, generated, recorder }
}

/// Honest answers on the CPU and on wgpu pass every challenge, greedy and sampled, under several secret seeds.
#[test]
fn honest_runs_pass_on_every_backend() {
    let weights = chat_model(BackendKind::Cpu).weights().clone();
    let started = std::time::Instant::now();
    let verifiers: Vec<ChatVerifier> = (1..=2).map(|seed| ChatVerifier::prepare(&weights, seed).unwrap()).collect();
    eprintln!("two verifiers prepared in {:?}", started.elapsed());
    let mut worst = 0.0f64;
    for backend in backends() {
        let mut model = chat_model(backend);
        // Every prompt and sampling on the CPU; on wgpu (lavapipe: a slow device) one greedy and one sampled.
        let cases: Vec<(&str, Sampling)> = match backend {
            BackendKind::Cpu => PROMPTS.iter().flat_map(|&t| samplings().map(|s| (t, s))).collect(),
            BackendKind::Gpu => vec![(PROMPTS[0], samplings()[0]), (PROMPTS[1], samplings()[1])],
        };
        for (text, sampling) in cases {
            let started = std::time::Instant::now();
            let answer = answer_with(&mut model, text, &sampling, 24);
            eprintln!("{backend:?}: {} tokens in {:?}", answer.generated.tokens.len(), started.elapsed());
            for (i, verifier) in verifiers.iter().enumerate() {
                for seed in 0..3 {
                    let v = answer.verdict(verifier, &weights, seed * 7 + i as u64);
                    assert!(v.accepted(), "{backend:?} {text:?} {sampling:?} seed {seed}: {v:?}");
                    worst = worst.max(v.worst_ratio);
                }
            }
        }
    }
    eprintln!("honest worst ratio {worst:.3}");
}

/// A CPU device that moves one layer's output by a factor: the cheat computes on with its moved values.
struct Scaled {
    cpu: Cpu,
    adds: usize,
    /// The residual add (counted from 1 in each forward pass) whose result is scaled.
    target: usize,
    factor: f32,
}

impl Device for Scaled {
    type Buf = Vec<f32>;
    type Mat = QMatrix;
    type Staged = Vec<f32>;
    fn matrix(&mut self, m: QMatrix) -> Result<QMatrix, DeviceError> {
        self.cpu.matrix(m)
    }
    fn input(&mut self, values: &[f32]) -> Result<Vec<f32>, DeviceError> {
        self.cpu.input(values)
    }
    fn zeros(&mut self, len: usize) -> Result<Vec<f32>, DeviceError> {
        self.cpu.zeros(len)
    }
    fn gather(&mut self, table: &QMatrix, ids: &[u32]) -> Result<Vec<f32>, DeviceError> {
        self.adds = 0;
        self.cpu.gather(table, ids)
    }
    fn matmul(&mut self, w: &QMatrix, x: &Vec<f32>, tokens: usize, rows: usize) -> Result<Vec<f32>, DeviceError> {
        self.cpu.matmul(w, x, tokens, rows)
    }
    fn rms_norm(&mut self, x: &Vec<f32>, weight: &Vec<f32>, eps: f32) -> Result<Vec<f32>, DeviceError> {
        self.cpu.rms_norm(x, weight, eps)
    }
    fn layer_norm(&mut self, x: &mut Vec<f32>, g: &Vec<f32>, b: &Vec<f32>, eps: f32) -> Result<(), DeviceError> {
        self.cpu.layer_norm(x, g, b, eps)
    }
    fn rope(&mut self, x: &mut Vec<f32>, h: usize, d: usize, first: usize, base: f32) -> Result<(), DeviceError> {
        self.cpu.rope(x, h, d, first, base)
    }
    fn silu_mul(&mut self, gate: &mut Vec<f32>, up: &Vec<f32>) -> Result<(), DeviceError> {
        self.cpu.silu_mul(gate, up)
    }
    fn gelu(&mut self, x: &mut Vec<f32>) -> Result<(), DeviceError> {
        self.cpu.gelu(x)
    }
    fn add(&mut self, x: &mut Vec<f32>, y: &Vec<f32>) -> Result<(), DeviceError> {
        self.cpu.add(x, y)?;
        self.adds += 1;
        if self.adds == self.target {
            x.iter_mut().for_each(|v| *v *= self.factor);
        }
        Ok(())
    }
    fn add_bias(&mut self, x: &mut Vec<f32>, bias: &Vec<f32>) -> Result<(), DeviceError> {
        self.cpu.add_bias(x, bias)
    }
    fn attention(
        &mut self,
        shape: Attention,
        first: usize,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<(), DeviceError> {
        self.cpu.attention(shape, first, q, k, v, out)
    }
    fn copy(&mut self, s: &Vec<f32>, at: usize, d: &mut Vec<f32>, to: usize, n: usize) -> Result<(), DeviceError> {
        self.cpu.copy(s, at, d, to, n)
    }
    fn read(&mut self, x: &Vec<f32>, range: std::ops::Range<usize>) -> Result<Vec<f32>, DeviceError> {
        self.cpu.read(x, range)
    }
    fn stage(&mut self, x: &Vec<f32>) -> Result<Vec<f32>, DeviceError> {
        self.cpu.stage(x)
    }
    fn collect(&mut self, staged: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>, DeviceError> {
        self.cpu.collect(staged)
    }
    fn len(&self, x: &Vec<f32>) -> usize {
        x.len()
    }
}

/// A provider's answer computed by `model` on `dev` (the cheat's own model and device).
fn cheat<D: Device>(model: &Llama<D>, dev: &mut D, prompt: &[u32], stop: &[u32], max_tokens: usize) -> Answer {
    let sampling = Sampling::GREEDY;
    let mut recorder = Recorder::new(&model.config);
    let generated = generate::generate(model, dev, prompt, max_tokens, &sampling, stop, &mut recorder, |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    Answer { prompt: prompt.to_vec(), sampling, generated, recorder }
}

fn zeros_like(m: &QMatrix) -> QMatrix {
    QMatrix::from_f32(m.rows(), m.cols(), vec![0.0; m.rows() * m.cols()]).unwrap()
}

/// Each weight rounded to bfloat16: a model a hair away from the real one (what a cheaper quantization gives).
fn bf16_like(m: &QMatrix) -> QMatrix {
    let values =
        m.to_f32().into_iter().map(|x| f32::from_bits(x.to_bits().wrapping_add(0x8000) & 0xFFFF_0000)).collect();
    QMatrix::from_f32(m.rows(), m.cols(), values).unwrap()
}

fn assert_convicted(what: &str, answer: &Answer, verifier: &ChatVerifier, weights: &Llama) {
    for seed in 0..3 {
        let v = answer.verdict(verifier, weights, seed);
        assert!(v.proven_wrong(), "{what}, challenge {seed}: not proven wrong: {v:?}");
        eprintln!("{what}: convicted at {} ({:.3e}× the bound)", v.convicting, v.conviction_ratio);
    }
}

#[test]
fn cheats_are_proven_wrong() {
    let model = chat_model(BackendKind::Cpu);
    let weights = model.weights().clone();
    let verifier = ChatVerifier::prepare(&weights, 99).unwrap();
    let prompt = model.prompt(&[Message { role: "user".into(), content: PROMPTS[0].into() }]).unwrap();
    let stop = model.stop_tokens().to_vec();
    let layers = weights.config.layers;

    // Fewer layers: the last four do nothing (their products are zero, so the residual passes through).
    let mut short = weights.clone();
    for layer in &mut short.layers[layers - 4..] {
        for m in
            [&mut layer.q, &mut layer.k, &mut layer.v, &mut layer.out, &mut layer.gate, &mut layer.up, &mut layer.down]
        {
            *m = zeros_like(m);
        }
    }
    assert_convicted("four layers skipped", &cheat(&short, &mut Cpu::new(), &prompt, &stop, 12), &verifier, &short);

    // Another model: every weight rounded to bf16.
    let mut other = weights.clone();
    for layer in &mut other.layers {
        for m in
            [&mut layer.q, &mut layer.k, &mut layer.v, &mut layer.out, &mut layer.gate, &mut layer.up, &mut layer.down]
        {
            *m = bf16_like(m);
        }
    }
    assert_convicted("bf16 model", &cheat(&other, &mut Cpu::new(), &prompt, &stop, 12), &verifier, &other);

    // One layer's output moved by 1% (layer 12's FFN residual: the 26th add of each pass).
    let mut scaled = Scaled { cpu: Cpu::new(), adds: 0, target: 26, factor: 1.01 };
    let moved = weights.clone().to_device(&mut scaled).unwrap();
    assert_convicted("layer 12 output ×1.01", &cheat(&moved, &mut scaled, &prompt, &stop, 12), &verifier, &weights);

    // Invented activations: an honest answer's tokens, with random values committed for every leaf.
    let honest = cheat(&weights, &mut Cpu::new(), &prompt, &stop, 12);
    let mut invented = Recorder::new(&weights.config);
    let positions = honest.run().positions();
    let mut rng = generate::SplitMix64::new(5);
    let mut random = |n: usize| (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect::<Vec<f32>>();
    let (w, kw) = (weights.config.width, weights.config.kv_width());
    invented.op(None, "embed", &random(positions * w));
    for l in 0..layers {
        invented.op(Some(l), "k_rope", &random(positions * kw));
        invented.op(Some(l), "v", &random(positions * kw));
        invented.op(Some(l), "attn_residual", &random(positions * w));
        invented.op(Some(l), "ffn_residual", &random(positions * w));
    }
    let invented = Answer { recorder: invented, ..honest };
    assert_convicted("random activations", &invented, &verifier, &weights);

    // A token its logits do not give: the reply forced to a different token at index 3, the run honest around it
    // (every later position computed from the forced token). Eight decisions: all opened (with more, each is opened
    // with probability HEAD_OPENINGS / decisions: `challenges_are_uniform` in proof.rs).
    let honest = cheat(&weights, &mut Cpu::new(), &prompt, &stop, proof::HEAD_OPENINGS);
    let mut forced = honest.generated.tokens.clone();
    forced[3] = (forced[3] + 1) % weights.config.vocab as u32;
    let mut dev = Cpu::new();
    let mut cache = weights.cache(&mut dev, 2048).unwrap();
    let mut recorder = Recorder::new(&weights.config);
    weights.forward(&mut dev, &prompt, &mut cache, false, &mut recorder).unwrap();
    for &t in &forced[..forced.len() - 1] {
        weights.forward(&mut dev, &[t], &mut cache, false, &mut recorder).unwrap();
    }
    let generated =
        Generated { tokens: forced, finish: FinishReason::Length, prompt_tokens: prompt.len(), stop_token: None };
    let forged = Answer { prompt: prompt.clone(), sampling: Sampling::GREEDY, generated, recorder };
    assert_convicted("forced token", &forged, &verifier, &weights);
}

mod embeddings {
    use super::*;
    use neurolov_models::bert::{Bert, BertWeights, Tensor};
    use neurolov_models::catalog::ALL_MINILM_L6_V2;
    use neurolov_models::engine::Embedder;
    use neurolov_models::proof::embed::{self, EmbedRun, EmbedVerifier};

    const TEXTS: [&str; 4] = [
        "The quick brown fox jumps over the lazy dog.",
        "Verified inference makes a wrong answer unprofitable.",
        "hello",
        "A longer sentence, with punctuation, numbers like 42 and 1999, and several clauses that run on for a while.",
    ];

    fn embedder(backend: BackendKind) -> Embedder {
        Embedder::load(&model_dir(&cache_dir().unwrap(), &ALL_MINILM_L6_V2), backend).unwrap()
    }

    struct Answer {
        ids: Vec<Vec<u32>>,
        embeddings: Vec<Vec<f32>>,
        recorder: Recorder,
    }

    impl Answer {
        fn verdict(&self, verifier: &EmbedVerifier, weights: &BertWeights, seed: u64) -> Verdict {
            let run = EmbedRun { texts: &self.ids, embeddings: &self.embeddings };
            let root = self.recorder.commit().unwrap();
            let positions = self.ids.iter().map(Vec::len).sum();
            let challenge = embed::challenge(seed, verifier.config().num_hidden_layers, positions);
            let opening = embed::open(weights, &self.recorder, &run, &challenge).unwrap();
            let opening = proof::Opening::from_bytes(&opening.to_bytes()).unwrap();
            verifier.check(&run, &root, &challenge, &opening)
        }
    }

    fn ids(e: &Embedder) -> Vec<Vec<u32>> {
        TEXTS.iter().map(|t| e.tokenize(t).unwrap()).collect()
    }

    /// Honest batches on the CPU and on wgpu pass every challenge.
    #[test]
    fn honest_embeddings_pass_on_every_backend() {
        let weights = embedder(BackendKind::Cpu).weights().clone();
        let verifiers: Vec<EmbedVerifier> = (1..=2).map(|s| EmbedVerifier::prepare(&weights, s).unwrap()).collect();
        let mut worst = 0.0f64;
        for backend in backends() {
            let mut e = embedder(backend);
            let ids = ids(&e);
            let mut recorder = Recorder::for_encoder(&weights.config);
            let embeddings = e.embed_ids_traced(&ids, &mut recorder).unwrap();
            let answer = Answer { ids, embeddings, recorder };
            for (i, verifier) in verifiers.iter().enumerate() {
                for seed in 0..4 {
                    let v = answer.verdict(verifier, &weights, seed * 5 + i as u64);
                    assert!(v.accepted(), "{backend:?} seed {seed}: {v:?}");
                    worst = worst.max(v.worst_ratio);
                }
            }
        }
        eprintln!("honest embeddings: worst ratio {worst:.3}");
    }

    fn cheat<D: Device>(weights: BertWeights, dev: &mut D, ids: &[Vec<u32>]) -> Answer {
        let config = weights.config.clone();
        let bert = Bert::new(weights, dev).unwrap();
        let mut recorder = Recorder::for_encoder(&config);
        let embeddings = bert.embed_traced(dev, ids, &mut recorder).unwrap();
        Answer { ids: ids.to_vec(), embeddings, recorder }
    }

    fn map_matrices(w: &mut BertWeights, layers: std::ops::Range<usize>, f: impl Fn(&Tensor) -> Tensor) {
        for l in &mut w.layers[layers] {
            for t in [&mut l.query, &mut l.key, &mut l.value, &mut l.attention_out, &mut l.intermediate, &mut l.output]
            {
                t.0 = f(&t.0);
            }
        }
    }

    fn assert_convicted(what: &str, answer: &Answer, verifier: &EmbedVerifier, weights: &BertWeights) {
        for seed in 0..3 {
            let v = answer.verdict(verifier, weights, seed);
            assert!(v.proven_wrong(), "{what}, challenge {seed}: not proven wrong: {v:?}");
            eprintln!("{what}: convicted at {} ({:.3e}× the bound)", v.convicting, v.conviction_ratio);
        }
    }

    #[test]
    fn embedding_cheats_are_proven_wrong() {
        let e = embedder(BackendKind::Cpu);
        let weights = e.weights().clone();
        let verifier = EmbedVerifier::prepare(&weights, 7).unwrap();
        let ids = ids(&e);
        let layers = weights.config.num_hidden_layers;

        let mut short = weights.clone();
        map_matrices(&mut short, layers - 2..layers, |t| Tensor {
            shape: t.shape.clone(),
            data: vec![0.0; t.data.len()],
        });
        assert_convicted("two layers skipped", &cheat(short.clone(), &mut Cpu::new(), &ids), &verifier, &short);

        let mut other = weights.clone();
        map_matrices(&mut other, 0..layers, |t| Tensor {
            shape: t.shape.clone(),
            data: t.data.iter().map(|x| f32::from_bits(x.to_bits().wrapping_add(0x8000) & 0xFFFF_0000)).collect(),
        });
        assert_convicted("bf16 model", &cheat(other.clone(), &mut Cpu::new(), &ids), &verifier, &other);

        // Layer 3's output sum ×1.01: the adds are the position rows', then two per layer.
        let mut scaled = Scaled { cpu: Cpu::new(), adds: 0, target: 1 + 2 * 3 + 2, factor: 1.01 };
        assert_convicted("layer 3 output ×1.01", &cheat(weights.clone(), &mut scaled, &ids), &verifier, &weights);

        // An honest run's record with random vectors returned.
        let mut random_vectors = cheat(weights.clone(), &mut Cpu::new(), &ids);
        let mut rng = generate::SplitMix64::new(3);
        for v in &mut random_vectors.embeddings {
            v.iter_mut().for_each(|x| *x = rng.next_f64() as f32 - 0.5);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
        }
        assert_convicted("random vectors", &random_vectors, &verifier, &weights);
    }
}
