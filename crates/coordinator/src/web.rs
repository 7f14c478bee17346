//! The web pages the coordinator serves from its own binary (no CDN, no Node build step): the dashboard at `/`, the
//! browser provider at `/provide`, their scripts and style under `/static/`, and the WGSL kernel files under
//! `/v1/kernels/` — the very bytes native nodes compile, so a browser runs the same kernels without a copy — and the
//! inference engine compiled to WebAssembly, the very code native nodes run.

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// (path under `/static/`, content type, bytes).
const STATIC: &[(&str, &str, &str)] = &[
    ("style.css", "text/css; charset=utf-8", include_str!("../web/style.css")),
    ("neurolov.js", "text/javascript; charset=utf-8", include_str!("../web/neurolov.js")),
    ("provide.js", "text/javascript; charset=utf-8", include_str!("../web/provide.js")),
    ("backends.js", "text/javascript; charset=utf-8", include_str!("../web/backends.js")),
    ("dashboard.js", "text/javascript; charset=utf-8", include_str!("../web/dashboard.js")),
    ("chains.js", "text/javascript; charset=utf-8", include_str!("../web/chains.js")),
    ("tg.js", "text/javascript; charset=utf-8", include_str!("../web/tg.js")),
    ("tg.css", "text/css; charset=utf-8", include_str!("../web/tg.css")),
    ("infer-worker.js", "text/javascript; charset=utf-8", include_str!("../web/infer-worker.js")),
];

/// The browser's inference engine (`crates/wasm` built for `wasm32-unknown-unknown`, by `scripts/build-web-engine`),
/// served at `/static/engine.wasm`.
pub const ENGINE_WASM: &str = "neurolov_wasm.wasm";

/// Where the engine is: `NEUROLOV_WEB_ENGINE`, else beside this executable (an install), else in the cargo target
/// directory this executable was built in (release, then debug). It is read when asked for, so a rebuilt engine is
/// served without a restart.
fn engine_path() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("NEUROLOV_WEB_ENGINE") {
        return Some(path.into());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let target = dir.parent()?.join("wasm32-unknown-unknown");
    [dir.join(ENGINE_WASM), target.join("release").join(ENGINE_WASM), target.join("debug").join(ENGINE_WASM)]
        .into_iter()
        .find(|p| p.is_file())
}

async fn engine_wasm() -> Response {
    let Some(path) = engine_path() else {
        return (StatusCode::NOT_FOUND, "this coordinator has no browser engine (scripts/build-web-engine builds it)")
            .into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            ([(header::CONTENT_TYPE, "application/wasm"), (header::CACHE_CONTROL, "no-cache")], bytes).into_response()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the browser engine cannot be read");
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

const INDEX: &str = include_str!("../web/index.html");
const PROVIDE: &str = include_str!("../web/provide.html");

fn page(body: &'static str) -> Response {
    // No other site may frame a page: a framed /provide could be made to provide, or be clickjacked.
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

pub(crate) async fn index() -> Response {
    page(INDEX)
}

pub(crate) async fn provide() -> Response {
    page(PROVIDE)
}

const TELEGRAM: &str = include_str!("../web/tg.html");

/// The Telegram Mini App (issue 15). Telegram shows it in a webview, or framed by Telegram Web: only Telegram's
/// origins may frame it. Without a configured bot there is no Mini App (404).
pub(crate) async fn telegram(axum::extract::State(app): crate::app::Shared) -> Response {
    let Some(telegram) = app.coordinator.telegram.as_ref() else {
        return (StatusCode::NOT_FOUND, "this coordinator is not a Telegram bot").into_response();
    };
    let script = telegram.cfg.web_app_js.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;");
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors https://web.telegram.org https://*.telegram.org"),
        ],
        TELEGRAM.replace("{{TELEGRAM_WEB_APP_JS}}", &script),
    )
        .into_response()
}

pub(crate) async fn static_file(Path(name): Path<String>) -> Response {
    if name == "engine.wasm" {
        return engine_wasm().await;
    }
    match STATIC.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => {
            ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "no-cache")], *body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn kernel(Path(name): Path<String>) -> Response {
    use neurolov_kernels::catalog::{FILES, GLSL_FILES};
    if let Some(f) = FILES.iter().find(|f| f.name == name) {
        return ([(header::CONTENT_TYPE, "text/wgsl; charset=utf-8")], f.source).into_response();
    }
    match GLSL_FILES.iter().find(|f| f.name == name) {
        Some(f) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], f.source).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
