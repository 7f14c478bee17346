//! Content-addressed blob files: `<dir>/<blake3 hex>`. A blob is written to a temporary file and renamed into
//! place, so a reader never sees half a blob, and its hash is checked before it is accepted. The directory has a
//! quota: past it, new blobs are refused (`StorageFull`) rather than filling the disk. A blob the core has ordered
//! stored is readable from memory until its file is written ([`BlobDir::stage`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Makes temporary file names unique within this process (concurrent uploads of the same blob).
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// The blob directory.
#[derive(Clone, Debug)]
pub struct BlobDir {
    dir: PathBuf,
    /// Bytes stored (an estimate kept in step with every write).
    used: Arc<AtomicU64>,
    quota: u64,
    /// Blobs ordered stored whose files are not written yet.
    staged: Arc<Mutex<HashMap<String, Arc<[u8]>>>>,
}

/// Whether `hash` is a blake3 hex digest (64 lowercase hex characters) — which also keeps it a plain file name.
pub fn is_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BlobDir {
    /// Opens (creating) `dir`, holding at most `quota` bytes of blobs.
    pub fn open(dir: PathBuf, quota: u64) -> std::io::Result<BlobDir> {
        std::fs::create_dir_all(&dir)?;
        let mut used = 0u64;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_str().is_some_and(is_hash) {
                used = used.saturating_add(entry.metadata()?.len());
            }
        }
        Ok(BlobDir { dir, used: Arc::new(AtomicU64::new(used)), quota, staged: Arc::default() })
    }

    /// Bytes of blobs stored.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
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
        let len = bytes.len() as u64;
        // Reserve the space first, so concurrent uploads cannot overshoot the quota together.
        let reserved = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(len).filter(|&total| total <= self.quota)
        });
        if reserved.is_err() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("the blob store is full ({} bytes)", self.quota),
            ));
        }
        let tmp = self.dir.join(format!(".{hash}.{}.{}", std::process::id(), NEXT_TMP.fetch_add(1, Ordering::Relaxed)));
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            // On disk before its name is: a database record may point at it right after.
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            self.unreserve(len);
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Makes `bytes` readable under `hash` before their file is written. The shell stages what the core orders stored
    /// while it still holds the core's lock and writes it after ([`BlobDir::put_staged`]): an event handled in between
    /// may already send a task that names the blob, and the node that fetches it must find it (task inputs used to be
    /// fetched in that gap and refused with 404, failing the task).
    pub fn stage(&self, hash: &str, bytes: Arc<[u8]>) {
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).insert(hash.to_string(), bytes);
    }

    /// Writes a staged blob's file ([`BlobDir::put`]), then drops it from memory.
    pub fn put_staged(&self, hash: &str, bytes: &[u8]) -> std::io::Result<()> {
        let written = self.put(hash, bytes);
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
        written
    }

    /// A blob staged and not yet written.
    pub fn staged(&self, hash: &str) -> Option<Arc<[u8]>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner()).get(hash).cloned()
    }

    /// Deletes every blob file not in `keep`, not staged, and not written within `grace` (an upload that a job or a
    /// result frame has not named yet). Returns how many files and bytes went.
    pub fn collect(&self, keep: &std::collections::HashSet<String>, grace: std::time::Duration) -> (usize, u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return (0, 0) };
        let now = std::time::SystemTime::now();
        let (mut files, mut bytes) = (0, 0);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hash) = name.to_str().filter(|n| is_hash(n)) else { continue };
            if keep.contains(hash) || self.staged(hash).is_some() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
            if age.is_none_or(|a| a < grace) {
                continue;
            }
            if std::fs::remove_file(entry.path()).is_ok() {
                self.unreserve(meta.len());
                files += 1;
                bytes += meta.len();
            }
        }
        (files, bytes)
    }

    /// Gives back the space reserved for a write that failed (or of a blob collected).
    fn unreserve(&self, len: u64) {
        let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| Some(used.saturating_sub(len)));
    }

    /// Where a stored blob's file is (for streaming it); `None` for a bad name or a blob not stored.
    pub fn path(&self, hash: &str) -> Option<PathBuf> {
        let path = self.dir.join(hash);
        (is_hash(hash) && path.is_file()).then_some(path)
    }

    pub fn read(&self, hash: &str) -> Option<Vec<u8>> {
        if !is_hash(hash) {
            return None;
        }
        if let Some(bytes) = self.staged(hash) {
            return Some(bytes.to_vec());
        }
        std::fs::read(self.dir.join(hash)).ok()
    }
}

impl neurolov_core::Blobs for BlobDir {
    fn get(&self, hash: &str) -> Option<Arc<[u8]>> {
        self.staged(hash).or_else(|| self.read(hash).map(Into::into))
    }

    fn size(&self, hash: &str) -> Option<u64> {
        if !is_hash(hash) {
            return None;
        }
        if let Some(bytes) = self.staged(hash) {
            return Some(bytes.len() as u64);
        }
        std::fs::metadata(self.dir.join(hash)).ok().map(|m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collector deletes old blobs nobody names and gives their space back; it keeps named, staged and recent
    /// ones.
    #[test]
    fn collection_keeps_what_is_named_staged_or_recent() {
        let dir = std::env::temp_dir().join(format!("neurolov-blobs-gc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let blobs = BlobDir::open(dir.clone(), 1 << 20).expect("open");
        let put = |bytes: &[u8]| {
            let hash = blake3::hash(bytes).to_hex().to_string();
            blobs.put(&hash, bytes).expect("put");
            hash
        };
        let (named, orphan) = (put(b"named by a job"), put(b"named by nothing"));
        let staged: Arc<[u8]> = Arc::from(&b"staged, not yet written"[..]);
        let staged_hash = blake3::hash(&staged).to_hex().to_string();
        blobs.stage(&staged_hash, staged);
        let keep: std::collections::HashSet<String> = [named.clone()].into_iter().collect();
        assert_eq!(blobs.collect(&keep, std::time::Duration::from_secs(3600)), (0, 0), "recent blobs stay");
        let before = blobs.used();
        assert_eq!(blobs.collect(&keep, std::time::Duration::ZERO), (1, 16));
        assert_eq!(blobs.used(), before - 16);
        assert!(blobs.path(&named).is_some() && blobs.path(&orphan).is_none());
        assert!(blobs.staged(&staged_hash).is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_quota_holds_across_reopening() {
        let dir = std::env::temp_dir().join(format!("neurolov-blobs-quota-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let blobs = BlobDir::open(dir.clone(), 10).expect("open");
        let put = |b: &BlobDir, bytes: &[u8]| b.put(&blake3::hash(bytes).to_hex(), bytes);
        put(&blobs, b"123456").expect("fits");
        put(&blobs, b"123456").expect("the same blob again costs nothing");
        let err = put(&blobs, b"abcdefg").expect_err("over the quota");
        assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
        put(&blobs, b"abcd").expect("fits exactly");
        assert_eq!(blobs.used(), 10);
        let again = BlobDir::open(dir.clone(), 10).expect("reopen");
        assert_eq!(again.used(), 10);
        assert!(put(&again, b"x").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
