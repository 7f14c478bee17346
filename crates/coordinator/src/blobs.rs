//! Content-addressed blob files: `<dir>/<blake3 hex>`. A blob is written to a temporary file and renamed into
//! place, so a reader never sees half a blob, and its hash is checked before it is accepted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes temporary file names unique within this process (concurrent uploads of the same blob).
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// The blob directory.
#[derive(Clone, Debug)]
pub struct BlobDir {
    dir: PathBuf,
}

/// Whether `hash` is a blake3 hex digest (64 lowercase hex characters) — which also keeps it a plain file name.
pub fn is_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobDir {
    pub fn open(dir: PathBuf) -> std::io::Result<BlobDir> {
        std::fs::create_dir_all(&dir)?;
        Ok(BlobDir { dir })
    }

    /// Stores `bytes` under `hash`, which must be their blake3 hash.
    pub fn put(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        if !is_hash(hash) || blake3::hash(bytes).to_hex().as_str() != hash {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "bytes do not hash to the blob's name"));
        }
        let path = self.dir.join(hash);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".{hash}.{}.{}", std::process::id(), NEXT_TMP.fetch_add(1, Ordering::Relaxed)));
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            // On disk before its name is: a database record may point at it right after.
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
    }

    pub fn read(&self, hash: &str) -> Option<Vec<u8>> {
        if !is_hash(hash) {
            return None;
        }
        std::fs::read(self.dir.join(hash)).ok()
    }
}

impl neurolov_core::Blobs for BlobDir {
    fn get(&self, hash: &str) -> Option<Arc<[u8]>> {
        self.read(hash).map(Into::into)
    }

    fn size(&self, hash: &str) -> Option<u64> {
        if !is_hash(hash) {
            return None;
        }
        std::fs::metadata(self.dir.join(hash)).ok().map(|m| m.len())
    }
}
