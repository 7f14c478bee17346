//! How much a client may upload. Its blobs are inputs for its jobs and the blob store is shared, so each client gets
//! a byte allowance per day (a window that starts at its first upload and resets a day later), kept in memory for at
//! most [`MAX_TRACKED_CLIENTS`] clients. Nodes are bounded differently: one blob per attempt they hold
//! (`Core::claim_upload`).

use std::collections::HashMap;
use std::sync::Mutex;

use neurolov_protocol::Id;

/// Bytes one client may upload per day.
pub const CLIENT_UPLOAD_BYTES_PER_DAY: u64 = 4 << 30;
/// Clients whose allowance is tracked at once; past it, new clients wait until old windows end.
pub const MAX_TRACKED_CLIENTS: usize = 100_000;
const DAY_MS: u64 = 86_400_000;

/// Each client's upload window: when it started, and the bytes taken in it.
#[derive(Default)]
pub struct UploadBudget {
    used: Mutex<HashMap<Id, (u64, u64)>>,
}

impl UploadBudget {
    /// Takes `bytes` from `client`'s allowance at `now_ms`; `false` (and nothing taken) when that would exceed it.
    pub fn take(&self, client: Id, bytes: u64, now_ms: u64) -> bool {
        let mut used = match self.used.lock() {
            Ok(u) => u,
            Err(poisoned) => poisoned.into_inner(),
        };
        if used.len() >= MAX_TRACKED_CLIENTS && !used.contains_key(&client) {
            used.retain(|_, (since, _)| now_ms.saturating_sub(*since) < DAY_MS);
            if used.len() >= MAX_TRACKED_CLIENTS {
                return false;
            }
        }
        let window = used.entry(client).or_insert((now_ms, 0));
        if now_ms.saturating_sub(window.0) >= DAY_MS {
            *window = (now_ms, 0);
        }
        match window.1.checked_add(bytes) {
            Some(total) if total <= CLIENT_UPLOAD_BYTES_PER_DAY => {
                window.1 = total;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use neurolov_protocol::Keypair;

    use super::*;

    #[test]
    fn a_client_uploads_its_daily_allowance_and_no_more_until_the_day_is_over() {
        let budget = UploadBudget::default();
        let (a, b) = (Keypair::from_seed([1; 32]).id(), Keypair::from_seed([2; 32]).id());
        let half = CLIENT_UPLOAD_BYTES_PER_DAY / 2;
        assert!(budget.take(a, half, 0));
        assert!(budget.take(a, half, 1_000));
        assert!(!budget.take(a, 1, 2_000), "past the allowance");
        assert!(budget.take(b, half, 2_000), "another client has its own");
        assert!(!budget.take(a, 1, DAY_MS - 1), "still the same day");
        assert!(budget.take(a, CLIENT_UPLOAD_BYTES_PER_DAY, DAY_MS), "a new day");
        assert!(!budget.take(b, u64::MAX, 3_000), "no overflow");
    }
}
