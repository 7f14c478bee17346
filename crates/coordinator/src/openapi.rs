//! The OpenAPI document of the coordinator's HTTP API, generated from the request and reply types of `neurolov-api`
//! and the routes' annotations: served at `/openapi.json` and checked in as `docs/openapi.json` (a test fails when
//! the two disagree; `NEUROLOV_UPDATE_OPENAPI=1 cargo test -p neurolov-coordinator openapi` writes it anew).

use neurolov_api as api;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Neurolov coordinator",
        description = "Jobs, blobs, nodes, wallets and statistics of a Neurolov coordinator. Signed requests carry \
                       x-neurolov-client, x-neurolov-timestamp and x-neurolov-signature (see docs/API.md)."
    ),
    paths(
        crate::http::nodes,
        crate::http::get_blob,
        crate::http::put_blob,
        crate::http::submit_job,
        crate::http::recent_jobs,
        crate::http::job_status,
        crate::http::job_result,
        crate::http::cancel_job,
        crate::http::verification,
        crate::money::account,
        crate::money::history,
        crate::money::withdraw,
        crate::money::withdraw_check,
        crate::telegram::session,
        crate::gov::propose,
        crate::gov::list,
        crate::gov::show,
        crate::gov::vote,
        crate::money::chain_activity,
        crate::money::deposits,
        crate::money::withdrawals,
        crate::money::chains,
        crate::money::transfer,
        crate::money::stake,
        crate::money::unstake,
        crate::money::faucet,
        crate::money::evidence,
        crate::money::stats,
        crate::openai::models,
        crate::registry::publish,
        crate::registry::show,
        crate::registry::files,
        crate::openai::embeddings,
        crate::openai::chat_completions,
        crate::openai::create_key,
        crate::openai::list_keys,
        crate::openai::revoke_key,
    ),
    components(schemas(
        api::ErrorReply,
        api::Operand,
        api::BufferSpec,
        api::MatmulJob,
        api::WgslJob,
        api::JobRequest,
        api::JobCreated,
        api::JobState,
        api::TaskStatus,
        api::JobStatus,
        api::JobSummary,
        api::NodeEntry,
        api::Account,
        api::TransferView,
        api::HistoryEntry,
        api::TransferRequest,
        api::TransferReply,
        api::StakeRequest,
        api::WithdrawRequest,
        api::WithdrawalView,
        api::WithdrawCheck,
        api::TelegramSessionRequest,
        api::ProposalRequest,
        api::VoteRequest,
        api::ProposalView,
        api::TelegramSession,
        api::DepositView,
        api::ChainActivity,
        api::ChainView,
        api::StakeReply,
        api::UnstakeReply,
        api::FaucetReply,
        api::EvidenceEntry,
        api::EvidenceOpening,
        api::VerificationParams,
        api::LedgerStats,
        api::Stats,
        api::openai::OpenAiError,
        api::openai::OpenAiErrorBody,
        api::openai::ModelObject,
        api::openai::ModelUsage,
        api::openai::ModelList,
        api::openai::EmbeddingInput,
        api::openai::EmbeddingRequest,
        api::openai::EmbeddingVector,
        api::openai::Embedding,
        api::openai::EmbeddingUsage,
        api::openai::Provenance,
        api::openai::EmbeddingResponse,
        api::openai::MessageContent,
        api::openai::ContentPart,
        api::openai::ChatMessage,
        api::openai::Stop,
        api::openai::StreamOptions,
        api::openai::ChatRequest,
        api::openai::Usage,
        api::openai::AssistantMessage,
        api::openai::ChatChoice,
        api::openai::ChatResponse,
        api::openai::Delta,
        api::openai::ChunkChoice,
        api::openai::ChatChunk,
        api::openai::KeyRequest,
        api::openai::KeyEntry,
        api::openai::KeyCreated,
        api::openai::ModelFile,
        api::openai::ModelManifest,
        api::openai::PublishedModel,
        api::openai::ModelFiles,
    ))
)]
pub struct ApiDoc;

/// The document as served and checked in (pretty JSON, ending in a newline).
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    // The crate's version would make every release a diff: the API has its own version.
    doc.info.version = "1".into();
    let mut text = doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

async fn serve() -> impl axum::response::IntoResponse {
    ([("content-type", "application/json")], document())
}

/// The routes with the document that describes them at `/openapi.json`.
pub(crate) fn router(coordinator: std::sync::Arc<crate::Coordinator>) -> axum::Router {
    crate::http::router(coordinator).route("/openapi.json", axum::routing::get(serve))
}

#[cfg(test)]
mod tests {
    /// The checked-in document is the one the code generates: a renamed field or a new route shows up here first.
    #[test]
    fn the_checked_in_openapi_document_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("NEUROLOV_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).expect("writing docs/openapi.json");
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json differs from the code's API; regenerate it with \
             NEUROLOV_UPDATE_OPENAPI=1 cargo test -p neurolov-coordinator openapi"
        );
        let doc: serde_json::Value = serde_json::from_str(&generated).expect("valid JSON");
        for route in ["/v1/jobs", "/v1/jobs/{id}", "/v1/stats", "/v1/wallet/transfer"] {
            assert!(doc["paths"][route].is_object(), "{route} is missing");
        }
        assert!(doc["components"]["schemas"]["JobRequest"].is_object());
    }
}
