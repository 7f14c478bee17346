//! What every route shares: the coordinator, the replay cache, the upload allowances, the cached statistics, and
//! the one shape of a refusal.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use neurolov_api as api;

use crate::Coordinator;
use crate::auth::ReplayCache;

pub(crate) struct App {
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) replay: ReplayCache,
    pub(crate) uploads: crate::uploads::UploadBudget,
    /// The last `/v1/stats` and when it was computed: it walks every node and account under the core's lock, so it
    /// is computed at most once per [`crate::STATS_MAX_AGE`], however often it is asked for.
    pub(crate) stats: std::sync::Mutex<Option<(std::time::Instant, neurolov_core::NetworkStats)>>,
    /// One permit per request waiting for a job to end (`?wait_ms=`, [`crate::ServeConfig::max_job_waiters`]): a held request costs its
    /// sender a connection and the coordinator a task, so their number is bounded; past it a request is answered at
    /// once, as if it had not asked to wait.
    pub(crate) waiters: Arc<tokio::sync::Semaphore>,
}

pub(crate) type Shared = State<Arc<App>>;

impl App {
    /// The network's statistics, computed at most once per [`crate::STATS_MAX_AGE`].
    pub(crate) fn network_stats(&self) -> neurolov_core::NetworkStats {
        let now = std::time::Instant::now();
        let mut cached = match self.stats.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        match cached.as_ref().filter(|(at, _)| now.saturating_duration_since(*at) < crate::STATS_MAX_AGE) {
            Some((_, s)) => s.clone(),
            None => {
                let s = self.coordinator.read_core(|c| c.stats());
                *cached = Some((now, s.clone()));
                s
            }
        }
    }
}

pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(api::ErrorReply { error: message.to_string() })).into_response()
}
