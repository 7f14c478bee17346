//! `neurolov embed` and `neurolov chat`: the inference engine on this machine — sentence vectors from
//! all-MiniLM-L6-v2, and SmolLM2-135M-Instruct's reply streamed to the terminal as it is generated.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use neurolov_models::catalog::{ALL_MINILM_L6_V2, Model, SMOLLM2_135M_INSTRUCT};
use neurolov_models::device::BackendKind;
use neurolov_models::engine::{ChatModel, Embedder};
use neurolov_models::fetch;
use neurolov_models::generate::{Message, Sampling};

#[derive(Args)]
pub struct EmbedArgs {
    /// The texts to embed.
    #[arg(required = true)]
    texts: Vec<String>,
    /// One JSON object per text (text, tokens, embedding) instead of a summary.
    #[arg(long)]
    json: bool,
    /// The model cache (default `$NEUROLOV_MODELS_DIR`, else `neurolov/models` in the user's cache directory).
    #[arg(long)]
    models_dir: Option<PathBuf>,
    /// Where the model runs: `cpu`, or `gpu` (wgpu; an error when no adapter is found).
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
}

#[derive(Args)]
pub struct ChatArgs {
    /// The user's message.
    prompt: String,
    /// A system message (the model's template supplies its own when none is given).
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 is greedy decoding; above 0 samples (reproducibly, given --seed).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the token count, the finish reason and tokens/s to stderr at the end.
    #[arg(long)]
    stats: bool,
    #[arg(long)]
    models_dir: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    backend: BackendKind,
}

/// The directory of `model` in the cache, checked to be there (fetching is `neurolov models fetch`).
fn model_dir(dir: Option<PathBuf>, model: &Model) -> anyhow::Result<PathBuf> {
    let cache = dir.or_else(fetch::cache_dir).context("no model cache directory: name one with --models-dir")?;
    let path = fetch::model_dir(&cache, model);
    for file in model.files {
        if !path.join(file.name).is_file() {
            anyhow::bail!("{} is not in {}: run `neurolov models fetch {}`", model.name, cache.display(), model.name);
        }
    }
    Ok(path)
}

pub fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let mut embedder = Embedder::load(&model_dir(args.models_dir, &ALL_MINILM_L6_V2)?, args.backend)?;
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&texts)?;
    for (text, vector) in texts.iter().zip(&vectors) {
        if args.json {
            let tokens = embedder.tokenize(text)?.len();
            println!("{}", serde_json::json!({ "text": text, "tokens": tokens, "embedding": vector }));
        } else {
            let head: Vec<String> = vector.iter().take(6).map(|v| format!("{v:+.4}")).collect();
            println!("[{} …] ({} dims) {text}", head.join(", "), vector.len());
        }
    }
    Ok(())
}

pub fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let dir = model_dir(args.models_dir, &SMOLLM2_135M_INSTRUCT)?;
    let path = dir.join(SMOLLM2_135M_INSTRUCT.files[0].name);
    let mut model = ChatModel::load(&path, args.backend).with_context(|| format!("loading {}", path.display()))?;
    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(Message { role: "system".into(), content: system });
    }
    messages.push(Message { role: "user".into(), content: args.prompt });
    let sampling = Sampling { temperature: args.temperature, top_p: args.top_p, seed: args.seed };
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    let (generated, _) = model.chat(&messages, args.max_tokens, &sampling, |text| {
        // A closed stdout (a pipe to `head`) ends generation instead of failing it.
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    })?;
    writeln!(out).ok();
    if args.stats {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{} prompt tokens, {} generated ({:?}) in {seconds:.2} s: {:.1} tokens/s",
            generated.prompt_tokens,
            generated.tokens.len(),
            generated.finish,
            generated.tokens.len() as f64 / seconds
        );
    }
    Ok(())
}
