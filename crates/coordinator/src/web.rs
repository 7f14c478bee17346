//! The web pages the coordinator serves from its own binary (no CDN, no Node build step): the dashboard at `/`, the
//! browser provider at `/provide`, their scripts and style under `/static/`, and the WGSL kernel files under
//! `/v1/kernels/` — the very bytes native nodes compile, so a browser runs the same kernels without a copy.

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
];

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

pub(crate) async fn static_file(Path(name): Path<String>) -> Response {
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
