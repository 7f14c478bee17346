//! The inference benchmarks behind `neurolov models bench` (and `scripts/bench-models`, which runs the reference
//! stacks on the same inputs in the same sitting): all-MiniLM-L6-v2 embeddings/s on batches of ≈ 19-token
//! sentences, and SmolLM2 prefill tokens/s on a 128-token prompt and greedy decode tokens/s at batch 1. The
//! sentences and the prompt are built exactly as `scripts/reference/models_bench.py` builds them.

use std::time::Instant;

use crate::engine::{ChatModel, Embedder, EngineError};
use crate::generate::Sampling;
use crate::llama::NoTrace;

/// `n` distinct, deterministic English sentences of about 17 words (about 19 tokens with [CLS] and [SEP]).
pub fn sentences(n: usize) -> Vec<String> {
    const SUBJECTS: [&str; 8] = [
        "The engineer",
        "A small team",
        "Our scheduler",
        "The new node",
        "Every client",
        "The coordinator",
        "A volunteer",
        "The test suite",
    ];
    const VERBS: [&str; 8] =
        ["checked", "uploaded", "verified", "planned", "measured", "repeated", "reported", "compared"];
    const OBJECTS: [&str; 8] = [
        "the final matrix results",
        "each finished small task",
        "the weekly benchmark report",
        "several large queued jobs",
        "the shared payment ledger",
        "a slow remote network link",
        "the cached model weights",
        "every returned result tile",
    ];
    const TAILS: [&str; 8] = [
        "before the long meeting started this morning",
        "while the cluster was still busy with other work",
        "after the nightly build had finally passed",
        "and then wrote a short note for the others",
        "so that nobody would need to do it again",
        "during a quiet hour late in the afternoon",
        "with help from two colleagues in another office",
        "because the previous numbers looked rather odd",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{} {} {} {}.",
                SUBJECTS[i % 8],
                VERBS[(i / 8) % 8],
                OBJECTS[(i / 64) % 8],
                TAILS[(i * 3 + i / 8) % 8]
            )
        })
        .collect()
}

/// The benchmark prompt's first `n` tokens (a paragraph repeated).
pub fn prompt_text() -> String {
    "The history of computing is a story of steady abstraction. Early machines were programmed by rewiring panels, \
     later ones by punched cards, and eventually by high-level languages that let people describe what they wanted \
     rather than how the hardware should do it. "
        .repeat(8)
}

/// One measured figure.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Figure {
    pub bench: &'static str,
    pub backend: String,
    /// The median over the passes.
    pub per_s: f64,
    pub best_per_s: f64,
    pub unit: &'static str,
    pub passes: usize,
}

pub fn figure(bench: &'static str, backend: &str, unit: &'static str, rates: &[f64]) -> Figure {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let best = sorted.last().copied().unwrap_or_default();
    Figure {
        bench,
        backend: backend.to_string(),
        per_s: (median * 10.0).round() / 10.0,
        best_per_s: (best * 10.0).round() / 10.0,
        unit,
        passes: rates.len(),
    }
}

/// Embeddings/s over `count` sentences in batches of `batch`, after one warm-up pass.
pub fn embeddings(
    embedder: &mut Embedder,
    backend: &str,
    count: usize,
    batch: usize,
    passes: usize,
) -> Result<Figure, EngineError> {
    let texts = sentences(count);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let run = |e: &mut Embedder| -> Result<f64, EngineError> {
        let started = Instant::now();
        for chunk in texts.chunks(batch.max(1)) {
            e.embed(chunk)?;
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    };
    run(embedder)?;
    let rates = (0..passes).map(|_| run(embedder)).collect::<Result<Vec<_>, _>>()?;
    Ok(figure("minilm_embed", backend, "embeddings", &rates))
}

/// Prefill tokens/s on a `prompt_tokens` prompt and greedy decode tokens/s for `decode_tokens` after it.
pub fn generation(
    model: &mut ChatModel,
    backend: &str,
    prompt_tokens: usize,
    decode_tokens: usize,
    passes: usize,
) -> Result<[Figure; 2], EngineError> {
    let ids = model.tokenizer.encode(&prompt_text(), false)?;
    let ids = &ids[..prompt_tokens.min(ids.len())];
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for pass in 0..=passes {
        let started = Instant::now();
        model.logits(ids, false, &mut NoTrace)?;
        let prefill_s = started.elapsed().as_secs_f64();
        // Decode: from the first token (its prefill done) to the end, one forward pass per token after the first
        // (the last token is not run through the model).
        let mut first = None;
        let generated = model.generate(ids, decode_tokens, &Sampling::GREEDY, |_| {
            first.get_or_insert_with(Instant::now);
            std::ops::ControlFlow::Continue(())
        })?;
        let decode_s = first.map_or(f64::INFINITY, |f| f.elapsed().as_secs_f64());
        if pass > 0 {
            prefill.push(ids.len() as f64 / prefill_s);
            decode.push(generated.tokens.len().saturating_sub(1) as f64 / decode_s);
        }
    }
    Ok([figure("smollm2_prefill", backend, "tokens", &prefill), figure("smollm2_decode", backend, "tokens", &decode)])
}

/// The question a whole chat request asks in the benchmarks (here and through the network, `neurolov models bench
/// --network`): a user message through the chat template.
pub const BENCH_QUESTION: &str = "Explain in a few sentences why the sky is blue.";

/// Generated tokens per second of a whole chat request — template, prefill and up to `decode_tokens` greedy tokens
/// (until the model's stop token, as through the network) — the figure a client sees, here on the local engine.
pub fn chat_request(
    model: &mut ChatModel,
    backend: &str,
    decode_tokens: usize,
    passes: usize,
) -> Result<Figure, EngineError> {
    let messages = [crate::generate::Message { role: "user".into(), content: BENCH_QUESTION.into() }];
    let prompt = model.prompt(&messages)?;
    let mut rates = Vec::new();
    for pass in 0..=passes {
        let started = Instant::now();
        let g = model.generate(&prompt, decode_tokens, &Sampling::GREEDY, |_| std::ops::ControlFlow::Continue(()))?;
        if pass > 0 {
            rates.push(g.tokens.len() as f64 / started.elapsed().as_secs_f64());
        }
    }
    Ok(figure("smollm2_request", backend, "tokens", &rates))
}

/// What verifying one chat request costs next to generating it (`neurolov models bench --only proof`): seconds,
/// medians over the passes, on a `prompt_tokens` prompt and `decode_tokens` greedy tokens.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProofCost {
    pub bench: &'static str,
    pub backend: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Generating without a recorder.
    pub generate_s: f64,
    /// Generating with the recorder (the provider's cost of keeping what it commits to).
    pub generate_recorded_s: f64,
    /// Hashing the record into the root.
    pub commit_s: f64,
    /// The provider answering a challenge.
    pub open_s: f64,
    /// The verifier checking the opening.
    pub check_s: f64,
    /// What the opening puts on the wire.
    pub opening_bytes: usize,
    /// Preparing the verifier's secret projections (once per model and seed).
    pub prepare_s: f64,
    /// check_s / generate_s: the verifier's share of the inference's cost.
    pub check_share: f64,
    /// (generate_recorded_s + commit_s + open_s) / generate_s − 1: the provider's overhead.
    pub provider_overhead: f64,
}

impl ProofCost {
    /// The medians of timed passes (`[compute, recorded, commit, open, check]` seconds each) for a request of
    /// `[input tokens, generated tokens, opening bytes]`.
    fn of(bench: &'static str, backend: &str, sizes: [usize; 3], rows: &[[f64; 5]], prepare_s: f64) -> ProofCost {
        let median = |i: usize| {
            let mut v: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        let [generate_s, generate_recorded_s, commit_s, open_s, check_s] = [0, 1, 2, 3, 4].map(median);
        ProofCost {
            bench,
            backend: backend.to_string(),
            prompt_tokens: sizes[0],
            generated_tokens: sizes[1],
            generate_s,
            generate_recorded_s,
            commit_s,
            open_s,
            check_s,
            opening_bytes: sizes[2],
            prepare_s,
            check_share: check_s / generate_s,
            provider_overhead: (generate_recorded_s + commit_s + open_s) / generate_s - 1.0,
        }
    }
}

pub fn proof_cost(
    model: &mut ChatModel,
    backend: &str,
    prompt_tokens: usize,
    decode_tokens: usize,
    passes: usize,
) -> Result<ProofCost, EngineError> {
    use crate::proof::{self, Challenge, ChatRun, ChatVerifier, Recorder};
    let ids = model.tokenizer.encode(&prompt_text(), false)?;
    let ids = &ids[..prompt_tokens.min(ids.len())];
    let timed = |f: &mut dyn FnMut() -> Result<(), EngineError>| -> Result<f64, EngineError> {
        let started = Instant::now();
        f()?;
        Ok(started.elapsed().as_secs_f64())
    };
    let started = Instant::now();
    let verifier = ChatVerifier::prepare(model.weights(), 1)?;
    let prepare_s = started.elapsed().as_secs_f64();
    let mut rows: Vec<[f64; 5]> = Vec::new();
    let (mut opening_bytes, mut generated_tokens) = (0, 0);
    for pass in 0..=passes {
        let generate_s =
            timed(&mut || {
                model.generate_until(ids, decode_tokens, &Sampling::GREEDY, &[], |_| {
                    std::ops::ControlFlow::Continue(())
                })?;
                Ok(())
            })?;
        let mut recorder = Recorder::new(model.config());
        let started = Instant::now();
        let generated = model.generate_traced(ids, decode_tokens, &Sampling::GREEDY, &[], &mut recorder, |_| {
            std::ops::ControlFlow::Continue(())
        })?;
        let recorded_s = started.elapsed().as_secs_f64();
        let run = ChatRun {
            prompt: ids,
            sampling: Sampling::GREEDY,
            tokens: &generated.tokens,
            finish: generated.finish,
            stop_token: generated.stop_token,
        };
        let started = Instant::now();
        let root = recorder.commit()?;
        let commit_s = started.elapsed().as_secs_f64();
        let challenge = Challenge::draw(pass as u64, model.config().layers, run.positions(), run.decisions().len());
        let started = Instant::now();
        let opening = proof::open(model.weights(), &recorder, &run, &challenge)?;
        let open_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let verdict = verifier.check(&run, &root, &challenge, &opening);
        let check_s = started.elapsed().as_secs_f64();
        if !verdict.accepted() {
            return Err(EngineError::Model(format!("an honest run failed its check: {verdict:?}")));
        }
        (opening_bytes, generated_tokens) = (opening.to_bytes().len(), generated.tokens.len());
        if pass > 0 {
            rows.push([generate_s, recorded_s, commit_s, open_s, check_s]);
        }
    }
    Ok(ProofCost::of("smollm2_proof", backend, [ids.len(), generated_tokens, opening_bytes], &rows, prepare_s))
}

/// What verifying one embedding batch costs next to computing it: `count` benchmark sentences in one batch, on the
/// embedder's backend (seconds, medians over the passes).
pub fn embed_proof_cost(
    embedder: &mut Embedder,
    backend: &str,
    count: usize,
    passes: usize,
) -> Result<ProofCost, EngineError> {
    use crate::proof::Recorder;
    use crate::proof::embed::{self, EmbedRun, EmbedVerifier};
    let texts = sentences(count);
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| embedder.tokenize(t)).collect::<Result<_, _>>()?;
    let started = Instant::now();
    let verifier = EmbedVerifier::prepare(embedder.weights(), 1)?;
    let prepare_s = started.elapsed().as_secs_f64();
    let mut rows: Vec<[f64; 5]> = Vec::new();
    let mut opening_bytes = 0;
    let positions: usize = ids.iter().map(Vec::len).sum();
    for pass in 0..=passes {
        let started = Instant::now();
        embedder.embed_ids_traced(&ids, &mut crate::llama::NoTrace)?;
        let generate_s = started.elapsed().as_secs_f64();
        let mut recorder = Recorder::for_encoder(&embedder.weights().config);
        let started = Instant::now();
        let embeddings = embedder.embed_ids_traced(&ids, &mut recorder)?;
        let recorded_s = started.elapsed().as_secs_f64();
        let run = EmbedRun { texts: &ids, embeddings: &embeddings };
        let started = Instant::now();
        let root = recorder.commit()?;
        let commit_s = started.elapsed().as_secs_f64();
        let challenge = embed::challenge(pass as u64, embedder.weights().config.num_hidden_layers, positions);
        let started = Instant::now();
        let opening = embed::open(embedder.weights(), &recorder, &run, &challenge)?;
        let open_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let verdict = verifier.check(&run, &root, &challenge, &opening);
        let check_s = started.elapsed().as_secs_f64();
        if !verdict.accepted() {
            return Err(EngineError::Model(format!("an honest batch failed its check: {verdict:?}")));
        }
        opening_bytes = opening.to_bytes().len();
        if pass > 0 {
            rows.push([generate_s, recorded_s, commit_s, open_s, check_s]);
        }
    }
    Ok(ProofCost::of("minilm_proof", backend, [positions, 0, opening_bytes], &rows, prepare_s))
}
