//! `neurolov models bench --network URL --api-key KEY`: the inference benchmarks through a coordinator's
//! OpenAI-compatible API — the same sentences and question as the local benchmarks, answered by the network's nodes,
//! each answer's proof checked before it returns — so `scripts/bench-inference` can put the network beside the local
//! engine in one sitting: embeddings/s (batches in flight at once, one per node), and for chat the time to the first
//! streamed chunk (a verified answer streams only once its proof passed) and generated tokens/s per request.

use std::time::Instant;

use anyhow::{Context, bail};
use neurolov_api::openai as oa;
use neurolov_models::bench::{self, BENCH_QUESTION, Figure};
use neurolov_models::catalog::{ALL_MINILM_L6_V2, SMOLLM2_135M_INSTRUCT};

use crate::net::{http, runtime};

/// What the network benchmark sends.
pub struct Shape {
    pub sentences: usize,
    pub batch: usize,
    pub decode_tokens: usize,
    pub passes: usize,
    pub concurrency: usize,
}

async fn post(url: &str, key: &str, path: &str, body: &impl serde::Serialize) -> anyhow::Result<reqwest::Response> {
    let resp =
        http().post(format!("{url}{path}")).bearer_auth(key).json(body).send().await.context(path.to_string())?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!("{path}: {status} {}", resp.text().await.unwrap_or_default());
    }
    Ok(resp)
}

/// Embeddings/s of `shape.sentences` sentences in batches, `shape.concurrency` batches in flight.
async fn embeddings(url: &str, key: &str, shape: &Shape) -> anyhow::Result<f64> {
    let texts = bench::sentences(shape.sentences);
    let batches: Vec<Vec<String>> = texts.chunks(shape.batch.max(1)).map(<[String]>::to_vec).collect();
    let started = Instant::now();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(batches));
    let mut workers = Vec::new();
    for _ in 0..shape.concurrency.max(1) {
        let (url, key, queue) = (url.to_string(), key.to_string(), std::sync::Arc::clone(&queue));
        workers.push(tokio::spawn(async move {
            loop {
                let Some(batch) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let body = oa::EmbeddingRequest {
                    model: ALL_MINILM_L6_V2.name.into(),
                    input: oa::EmbeddingInput::Texts(batch.clone()),
                    encoding_format: Some("base64".into()),
                    dimensions: None,
                    user: None,
                };
                let reply: oa::EmbeddingResponse = post(&url, &key, "/v1/embeddings", &body).await?.json().await?;
                if reply.data.len() != batch.len() {
                    bail!("{} embeddings for {} texts", reply.data.len(), batch.len());
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(texts.len() as f64 / started.elapsed().as_secs_f64())
}

/// One greedy chat request, streamed: (seconds to the first chunk, generated tokens per second of the request).
async fn chat(url: &str, key: &str, decode_tokens: usize) -> anyhow::Result<(f64, f64)> {
    let body = oa::ChatRequest {
        model: SMOLLM2_135M_INSTRUCT.name.into(),
        messages: vec![oa::ChatMessage {
            role: "user".into(),
            content: Some(oa::MessageContent::Text(BENCH_QUESTION.into())),
            name: None,
        }],
        max_tokens: Some(decode_tokens as u32),
        max_completion_tokens: None,
        temperature: Some(0.0),
        top_p: None,
        seed: None,
        stop: None,
        stream: Some(true),
        stream_options: Some(oa::StreamOptions { include_usage: true }),
        n: None,
        user: None,
    };
    let started = Instant::now();
    let mut resp = post(url, key, "/v1/chat/completions", &body).await?;
    let mut first = None;
    let mut text = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        text.extend_from_slice(&chunk);
    }
    let total = started.elapsed().as_secs_f64();
    let text = String::from_utf8(text)?;
    let usage = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<oa::ChatChunk>(d).ok())
        .find_map(|c| c.usage)
        .context("the stream carried no usage")?;
    Ok((first.unwrap_or(total), usage.completion_tokens as f64 / total))
}

pub fn run(url: &str, key: &str, shape: &Shape, json: bool) -> anyhow::Result<()> {
    let url = url.trim_end_matches('/');
    let rt = runtime()?;
    // One warm-up of each, then the passes.
    rt.block_on(embeddings(url, key, shape))?;
    rt.block_on(chat(url, key, shape.decode_tokens))?;
    let mut embed = Vec::new();
    let (mut ttft, mut tokens) = (Vec::new(), Vec::new());
    for _ in 0..shape.passes.max(1) {
        embed.push(rt.block_on(embeddings(url, key, shape))?);
        let (first, rate) = rt.block_on(chat(url, key, shape.decode_tokens))?;
        ttft.push(1.0 / first);
        tokens.push(rate);
    }
    let figures: [Figure; 3] = [
        bench::figure("network_embed", "network", "embeddings", &embed),
        bench::figure("network_chat_request", "network", "tokens", &tokens),
        // As a rate (requests answered per second of waiting) so the median and best read like the others; the
        // seconds are printed beside it.
        bench::figure("network_first_chunk", "network", "first chunks", &ttft),
    ];
    for f in figures {
        if json {
            println!("{}", serde_json::to_string(&f)?);
        } else if f.bench == "network_first_chunk" {
            println!("{:<22} {:>9.3} s to the first verified chunk (median of {})", f.bench, 1.0 / f.per_s, f.passes);
        } else {
            println!("{:<22} {:>9.1} {}/s (best {:.1}, {} passes)", f.bench, f.per_s, f.unit, f.best_per_s, f.passes);
        }
    }
    Ok(())
}
