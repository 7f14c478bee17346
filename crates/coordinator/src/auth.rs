//! Client authentication by signed requests. A client signs `METHOD \n PATH \n TIMESTAMP_MS \n blake3(body)` with
//! its ed25519 key in domain `neurolov/client-request/v1` and sends three headers: `x-neurolov-client` (its id),
//! `x-neurolov-timestamp` (ms since the Unix epoch) and `x-neurolov-signature` (base58). Chosen over API keys
//! because identities are already keypairs (the same key pays from its wallet) and the server keeps no secrets.
//! A request is refused when its timestamp is more than [`MAX_CLOCK_SKEW_MS`] away or its signature was seen
//! before. The replay cache is bounded and never forgets a signature that could still be replayed: each entry lives
//! until its timestamp leaves the skew window, and when the cache (or one client's share of it) is full, new
//! requests are refused — a flood of cheap signed requests once flushed it and a replayed job was accepted twice.

use std::collections::HashMap;
use std::sync::Mutex;

use neurolov_protocol::identity::{Id, Signature, verify};

pub use neurolov_protocol::request::{
    DOMAIN, HEADER_CLIENT, HEADER_SIGNATURE, HEADER_TIMESTAMP, message, message_for_body_hash, sign,
};

/// How far a request's timestamp may be from the coordinator's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Signatures remembered against replay (≈ 100 bytes each).
pub const REPLAY_CACHE: usize = 1_000_000;
/// Of which one client may hold at most this many: one key cannot lock the others out.
pub const REPLAY_CACHE_PER_CLIENT: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing(&'static str),
    Malformed(&'static str),
    Skewed {
        timestamp_ms: u64,
        now_ms: u64,
    },
    BadSignature,
    Replayed,
    /// The replay cache is full of signatures still inside their window (all of it, or this client's share).
    Busy,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing(h) => write!(f, "missing header {h}"),
            AuthError::Malformed(h) => write!(f, "malformed header {h}"),
            AuthError::Skewed { timestamp_ms, now_ms } => {
                write!(f, "request timestamp {timestamp_ms} is more than {MAX_CLOCK_SKEW_MS} ms from {now_ms}")
            }
            AuthError::BadSignature => f.write_str("request signature does not verify"),
            AuthError::Replayed => f.write_str("request was already received"),
            AuthError::Busy => f.write_str("too many signed requests in the last minutes: try again later"),
        }
    }
}

impl AuthError {
    /// The HTTP status that answers it: 429 while the replay cache is full, 401 otherwise.
    pub fn status(&self) -> axum::http::StatusCode {
        match self {
            AuthError::Busy => axum::http::StatusCode::TOO_MANY_REQUESTS,
            _ => axum::http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// Signatures seen: each with its client and the time it stops being replayable, and the same in expiry order.
#[derive(Default)]
struct Seen {
    by_signature: HashMap<[u8; 64], Id>,
    by_expiry: std::collections::BTreeSet<(u64, [u8; 64])>,
    per_client: HashMap<Id, usize>,
}

/// Remembers recent signatures.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<Seen>,
}

impl ReplayCache {
    /// Checks a request's headers and signature; returns the client's id.
    pub fn verify(
        &self,
        header: impl Fn(&'static str) -> Option<String>,
        method: &str,
        path: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<Id, AuthError> {
        self.verify_hashed(header, method, path, blake3::hash(body).to_hex().as_str(), now_ms)
    }

    /// [`ReplayCache::verify`] for a body known by its blake3 hash (hex) before it is read: a blob upload, whose name
    /// is its hash. The caller must still check that the body it then reads hashes to `body_hash_hex`.
    pub fn verify_hashed(
        &self,
        header: impl Fn(&'static str) -> Option<String>,
        method: &str,
        path: &str,
        body_hash_hex: &str,
        now_ms: u64,
    ) -> Result<Id, AuthError> {
        self.verify_within(header, method, path, body_hash_hex, now_ms, (REPLAY_CACHE, REPLAY_CACHE_PER_CLIENT))
    }

    /// [`ReplayCache::verify_hashed`] with the cache's bounds (total, per client) given.
    fn verify_within(
        &self,
        header: impl Fn(&'static str) -> Option<String>,
        method: &str,
        path: &str,
        body_hash_hex: &str,
        now_ms: u64,
        (total, per_client): (usize, usize),
    ) -> Result<Id, AuthError> {
        let client = header(HEADER_CLIENT).ok_or(AuthError::Missing(HEADER_CLIENT))?;
        let client: Id = client.parse().map_err(|_| AuthError::Malformed(HEADER_CLIENT))?;
        let ts = header(HEADER_TIMESTAMP).ok_or(AuthError::Missing(HEADER_TIMESTAMP))?;
        let timestamp_ms: u64 = ts.parse().map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP))?;
        if timestamp_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(AuthError::Skewed { timestamp_ms, now_ms });
        }
        let sig = header(HEADER_SIGNATURE).ok_or(AuthError::Missing(HEADER_SIGNATURE))?;
        let sig = Signature::from_base58(&sig).map_err(|_| AuthError::Malformed(HEADER_SIGNATURE))?;
        verify(&client, DOMAIN, &message_for_body_hash(method, path, timestamp_ms, body_hash_hex), &sig)
            .map_err(|_| AuthError::BadSignature)?;
        let mut guard = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let seen = &mut *guard;
        // Forget only signatures whose timestamp has left the window: they would be refused as skewed anyway.
        while let Some(&(expiry, old)) = seen.by_expiry.first() {
            if expiry >= now_ms {
                break;
            }
            seen.by_expiry.pop_first();
            if let Some(owner) = seen.by_signature.remove(&old)
                && let Some(n) = seen.per_client.get_mut(&owner)
            {
                *n -= 1;
                if *n == 0 {
                    seen.per_client.remove(&owner);
                }
            }
        }
        let bytes = sig.to_bytes();
        if seen.by_signature.contains_key(&bytes) {
            return Err(AuthError::Replayed);
        }
        let mine = seen.per_client.get(&client).copied().unwrap_or(0);
        if seen.by_signature.len() >= total || mine >= per_client {
            return Err(AuthError::Busy);
        }
        seen.by_signature.insert(bytes, client);
        seen.by_expiry.insert((timestamp_ms.saturating_add(MAX_CLOCK_SKEW_MS), bytes));
        *seen.per_client.entry(client).or_insert(0) += 1;
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use neurolov_protocol::Keypair;

    use super::*;

    #[test]
    fn signed_requests_verify_once() {
        let kp = Keypair::from_seed([3; 32]);
        let headers = sign(&kp, "POST", "/v1/jobs", 1_000_000, b"{}");
        let get = |name: &'static str| headers.iter().find(|(h, _)| *h == name).map(|(_, v)| v.clone());
        let cache = ReplayCache::default();
        assert_eq!(cache.verify(get, "POST", "/v1/jobs", b"{}", 1_000_100), Ok(kp.id()));
        assert_eq!(cache.verify(get, "POST", "/v1/jobs", b"{}", 1_000_200), Err(AuthError::Replayed));
        let fresh = ReplayCache::default();
        assert_eq!(fresh.verify(get, "POST", "/v1/jobs", b"{\"x\":1}", 1_000_100), Err(AuthError::BadSignature));
        assert_eq!(fresh.verify(get, "POST", "/v1/other", b"{}", 1_000_100), Err(AuthError::BadSignature));
        assert!(matches!(
            fresh.verify(get, "POST", "/v1/jobs", b"{}", 1_000_000 + 2 * MAX_CLOCK_SKEW_MS),
            Err(AuthError::Skewed { .. })
        ));
        assert_eq!(fresh.verify(|_| None, "POST", "/v1/jobs", b"{}", 0), Err(AuthError::Missing(HEADER_CLIENT)));
    }

    /// A flood of fresh signed requests cannot push a signature out while it could still be replayed: the flood is
    /// refused instead, first for the flooding client's share, then for everyone once the cache is full; a signature
    /// is forgotten only once its timestamp is out of the window.
    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let cache = ReplayCache::default();
        let bounds = (6, 4);
        let check = |kp: &Keypair, body: &[u8], ts: u64, now: u64| {
            let headers = sign(kp, "POST", "/v1/jobs", ts, body);
            let get = |name: &'static str| headers.iter().find(|(h, _)| *h == name).map(|(_, v)| v.clone());
            cache.verify_within(get, "POST", "/v1/jobs", blake3::hash(body).to_hex().as_str(), now, bounds)
        };
        let (victim, flooder, third) =
            (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]), Keypair::from_seed([4; 32]));
        let t0 = 10_000_000;
        assert_eq!(check(&victim, b"job", t0, t0), Ok(victim.id()));
        for i in 0..4u8 {
            assert_eq!(check(&flooder, &[i], t0, t0), Ok(flooder.id()));
        }
        assert_eq!(check(&flooder, b"more", t0, t0), Err(AuthError::Busy), "one client's share is full");
        assert_eq!(check(&third, b"a", t0, t0), Ok(third.id()));
        assert_eq!(check(&third, b"b", t0, t0), Err(AuthError::Busy), "the whole cache is full");
        // Still inside the window: the first request is still refused as a replay.
        assert_eq!(check(&victim, b"job", t0, t0 + MAX_CLOCK_SKEW_MS), Err(AuthError::Replayed));
        // Once its timestamp has left the window it is forgotten, and a replay is refused as skewed.
        let later = t0 + MAX_CLOCK_SKEW_MS + 1;
        assert!(matches!(check(&victim, b"job", t0, later), Err(AuthError::Skewed { .. })));
        assert_eq!(check(&flooder, b"more", later, later), Ok(flooder.id()));
    }
}
