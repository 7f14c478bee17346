//! Client authentication by signed requests. A client signs `METHOD \n PATH \n TIMESTAMP_MS \n blake3(body)` with
//! its ed25519 key in domain `neurolov/client-request/v1` and sends three headers: `x-neurolov-client` (its id),
//! `x-neurolov-timestamp` (ms since the Unix epoch) and `x-neurolov-signature` (base58). Chosen over API keys
//! because identities are already keypairs (the same key pays from its wallet) and the server keeps no secrets.
//! A request is refused when its timestamp is more than [`MAX_CLOCK_SKEW_MS`] away or its signature was seen
//! before (a bounded replay cache covers the skew window).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use neurolov_protocol::identity::{Id, Signature, verify};

pub use neurolov_protocol::request::{DOMAIN, HEADER_CLIENT, HEADER_SIGNATURE, HEADER_TIMESTAMP, message, sign};

/// How far a request's timestamp may be from the coordinator's clock.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// Signatures remembered against replay.
pub const REPLAY_CACHE: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing(&'static str),
    Malformed(&'static str),
    Skewed { timestamp_ms: u64, now_ms: u64 },
    BadSignature,
    Replayed,
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
        }
    }
}

/// Signatures seen, with when, and the same in arrival order for expiry.
type Seen = (HashMap<[u8; 64], u64>, VecDeque<([u8; 64], u64)>);

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
        let client = header(HEADER_CLIENT).ok_or(AuthError::Missing(HEADER_CLIENT))?;
        let client: Id = client.parse().map_err(|_| AuthError::Malformed(HEADER_CLIENT))?;
        let ts = header(HEADER_TIMESTAMP).ok_or(AuthError::Missing(HEADER_TIMESTAMP))?;
        let timestamp_ms: u64 = ts.parse().map_err(|_| AuthError::Malformed(HEADER_TIMESTAMP))?;
        if timestamp_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(AuthError::Skewed { timestamp_ms, now_ms });
        }
        let sig = header(HEADER_SIGNATURE).ok_or(AuthError::Missing(HEADER_SIGNATURE))?;
        let sig = Signature::from_base58(&sig).map_err(|_| AuthError::Malformed(HEADER_SIGNATURE))?;
        verify(&client, DOMAIN, &message(method, path, timestamp_ms, body), &sig)
            .map_err(|_| AuthError::BadSignature)?;
        let mut guard = match self.seen.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (set, order) = &mut *guard;
        // Forget what has aged out of the skew window, and the oldest beyond the cache's size.
        while let Some(&(old, at)) = order.front() {
            if now_ms.saturating_sub(at) > 2 * MAX_CLOCK_SKEW_MS || order.len() > REPLAY_CACHE {
                order.pop_front();
                set.remove(&old);
            } else {
                break;
            }
        }
        let bytes = sig.to_bytes();
        if set.insert(bytes, now_ms).is_some() {
            return Err(AuthError::Replayed);
        }
        order.push_back((bytes, now_ms));
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
}
