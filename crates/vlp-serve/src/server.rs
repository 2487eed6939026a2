//! `vlp serve`: the JSON API and the search page over one index.
//!
//! Every input is bounded (body size, image pixels and formats, text length, `k`), every error
//! is JSON with a stable `code`, and load is bounded twice: at most `max_inflight` requests are
//! admitted (the rest get 503 at once, not a place in a growing queue), and at most `workers` of
//! them encode on the CPU at a time, each within `timeout`.

use crate::metrics::Metrics;
use crate::searcher::{Query, SearchError, SearchRequest, Searcher, Side};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use vlp_index::catalog::{Filter, Mode, SearchParams};

pub type Cpu = burn::backend::Flex;

/// The search page: one file, no build step.
const PAGE: &str = include_str!("page.html");

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// With a token, every route but `/healthz` and the page needs `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    pub max_body_bytes: usize,
    pub max_text_chars: usize,
    pub max_k: usize,
    pub timeout: Duration,
    /// Requests admitted at once; more get 503.
    pub max_inflight: usize,
    /// Searches computed at once (the CPU's share).
    pub workers: usize,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            max_body_bytes: 8 << 20,
            max_text_chars: 1000,
            max_k: 1000,
            timeout: Duration::from_secs(10),
            max_inflight: 256,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

struct AppState {
    searcher: Searcher<Cpu>,
    cfg: ServeConfig,
    metrics: Metrics,
    inflight: AtomicUsize,
    /// Held by each search for as long as it computes, even past its timeout.
    work: Arc<Semaphore>,
}

type Shared = Arc<AppState>;

/// An error as the API returns it: a status, a stable code, and what was wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        let status = match &e {
            SearchError::NotFound(_) => StatusCode::NOT_FOUND,
            SearchError::ImageTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SearchError::UnsupportedImage(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            SearchError::BadImage(_) | SearchError::BadEmbedding(_) | SearchError::BadRequest(_) => StatusCode::BAD_REQUEST,
            // the server was started without the model that embeds such queries
            SearchError::NoModel(_) => StatusCode::SERVICE_UNAVAILABLE,
            SearchError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

/// The routes, with auth, admission control and metrics around them.
pub fn router(searcher: Searcher<Cpu>, cfg: ServeConfig) -> Router {
    let state: Shared = Arc::new(AppState {
        work: Arc::new(Semaphore::new(cfg.workers.max(1))),
        searcher,
        cfg,
        metrics: Metrics::default(),
        inflight: AtomicUsize::new(0),
    });
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/search", post(search))
        .route("/v1/items/{id}", get(item))
        .route("/v1/items/{id}/image", get(item_image))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .with_state(state)
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish.
pub async fn serve(searcher: Searcher<Cpu>, cfg: ServeConfig) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
    eprintln!(
        "serving {} items on http://{}/ ({}; Ctrl-C or SIGTERM stops)",
        searcher.index.items.len(),
        listener.local_addr()?,
        if cfg.token.is_some() { "bearer token required" } else { "no token" }
    );
    axum::serve(listener, router(searcher, cfg)).with_graceful_shutdown(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    eprintln!("shutting down: finishing requests in flight");
}

/// Auth, admission and metrics for every request.
async fn guard(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let public = matches!(route.as_str(), "/healthz" | "/");
    let response = if let (Some(token), false) = (&st.cfg.token, public) {
        if authorized(req.headers(), token) {
            None
        } else {
            Some(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer TOKEN").into_response())
        }
    } else {
        None
    };
    let response = match response {
        Some(r) => r,
        None => {
            let admitted = st.inflight.fetch_add(1, Ordering::SeqCst) < st.cfg.max_inflight;
            let r = if admitted || public {
                next.run(req).await
            } else {
                st.metrics.rejected_busy();
                let mut r =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the server is at its request limit; retry shortly")
                        .into_response();
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            };
            st.inflight.fetch_sub(1, Ordering::SeqCst);
            r
        }
    };
    st.metrics.observe(&route, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Compares in time independent of where the token differs.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 200 and `"status": "ok"` only when a search is answered (one item's own nearest image,
/// searched as a client would); otherwise 503, `"status": "failing"` and the error.
async fn healthz(State(st): State<Shared>) -> Response {
    let (probe, queries) = st.searcher.health();
    let mut v = st.searcher.sizes();
    v.insert("model".into(), json!(st.searcher.model));
    v.insert("queries".into(), json!(queries));
    let status = match probe {
        Ok(()) => {
            v.insert("status".into(), json!("ok"));
            StatusCode::OK
        }
        Err(e) => {
            v.insert("status".into(), json!("failing"));
            v.insert("error".into(), json!({"code": e.code(), "message": e.to_string()}));
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    (status, Json(Value::Object(v))).into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    let s = &st.searcher;
    let text = st.metrics.render(&[
        ("vlp_index_items", "Images in the index.", s.index.items.len() as f64),
        ("vlp_index_texts", "Texts in the index.", s.index.texts.len() as f64),
        ("vlp_requests_in_flight", "Requests admitted and not yet answered.", st.inflight.load(Ordering::SeqCst) as f64),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

fn lookup(st: &AppState, id: &str) -> Result<usize, ApiError> {
    st.searcher.item_row(id).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no item {id:?} in this index")))
}

async fn item(State(st): State<Shared>, UrlPath(id): UrlPath<String>) -> Result<Json<Value>, ApiError> {
    let row = lookup(&st, &id)?;
    let mut v = st.searcher.item_json(row, 0.0);
    if let Some(o) = v.as_object_mut() {
        o.remove("score");
    }
    Ok(Json(v))
}

/// The item's image. Its path comes from the index's catalog, never from the request, so an id
/// cannot name another file.
async fn item_image(State(st): State<Shared>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let row = lookup(&st, &id)?;
    let path = st.searcher.index.items[row].image.clone();
    let bytes = tokio::fs::read(&path).await.map_err(|_| {
        ApiError::new(StatusCode::NOT_FOUND, "image_missing", format!("the image of {id:?} is no longer where the index recorded it"))
    })?;
    let mime = match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Png) => "image/png",
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::WebP) => "image/webp",
        Ok(image::ImageFormat::Gif) => "image/gif",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "max-age=3600")], Body::from(bytes)).into_response())
}

/// A search as JSON, or as a multipart form (an `image` file plus the same fields as text).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    text: Option<String>,
    /// Base64 (standard alphabet; a `data:` URL prefix is allowed).
    image: Option<String>,
    embedding: Option<Vec<f32>>,
    item: Option<String>,
    side: Option<Side>,
    k: Option<usize>,
    mode: Option<Mode>,
    rerank: Option<usize>,
    #[serde(default)]
    filter: FilterSpec,
    ef: Option<usize>,
    exact: Option<bool>,
}

/// `"lang=zh"`, `["lang=zh", "style=google"]` or `{"lang": "zh"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum FilterSpec {
    #[default]
    None,
    One(String),
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

impl FilterSpec {
    fn filters(self) -> Result<Vec<Filter>, ApiError> {
        let parse = |s: &str| s.parse::<Filter>().map_err(|e| ApiError::bad("bad_filter", e.to_string()));
        match self {
            FilterSpec::None => Ok(Vec::new()),
            FilterSpec::One(s) => Ok(vec![parse(&s)?]),
            FilterSpec::List(l) => l.iter().map(|s| parse(s)).collect(),
            FilterSpec::Map(m) => Ok(m.into_iter().map(|(field, value)| Filter { field, value }).collect()),
        }
    }
}

async fn search(State(st): State<Shared>, req: Request) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let is_multipart =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/form-data"));
    let (body, image) = if is_multipart { read_multipart(&st, req).await? } else { read_json(&st, req).await? };
    let request = st.validate(body, image)?;
    let permit = tokio::time::timeout(st.cfg.timeout, st.work.clone().acquire_owned())
        .await
        .map_err(|_| timeout(&st))?
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping"))?;
    let left = st.cfg.timeout.saturating_sub(started.elapsed());
    let worker = st.clone();
    let req2 = request.clone();
    // the permit goes with the work: a search that outlives its timeout still counts against
    // `workers` until it ends
    let compute = move || {
        let _permit = permit;
        worker.searcher.search(&req2)
    };
    let results = tokio::time::timeout(left, tokio::task::spawn_blocking(compute))
        .await
        .map_err(|_| timeout(&st))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(json!({
        "results": results,
        "count": results.len(),
        "k": request.params.k,
        "side": request.side,
        "mode": request.params.mode,
        "took_ms": started.elapsed().as_secs_f64() * 1e3,
    })))
}

fn timeout(st: &AppState) -> ApiError {
    ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", format!("the search took longer than {:?}", st.cfg.timeout))
}

fn too_large(st: &AppState) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the request body is over {} bytes", st.cfg.max_body_bytes))
}

async fn read_json(st: &Shared, req: Request) -> Result<(SearchBody, Option<Vec<u8>>), ApiError> {
    let bytes = Bytes::from_request(req, st).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(st)
        } else {
            ApiError::bad("bad_body", e.body_text())
        }
    })?;
    let body: SearchBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad("bad_json", format!("the body is not a search request: {e}")))?;
    let image = match &body.image {
        Some(b64) => {
            let data = b64.split_once(";base64,").map_or(b64.as_str(), |(_, d)| d);
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| ApiError::bad("bad_image", format!("\"image\" is not base64: {e}")))?,
            )
        }
        None => None,
    };
    Ok((body, image))
}

async fn read_multipart(st: &Shared, req: Request) -> Result<(SearchBody, Option<Vec<u8>>), ApiError> {
    let mut form = Multipart::from_request(req, st).await.map_err(|e| ApiError::bad("bad_multipart", e.body_text()))?;
    let mut body = SearchBody::default();
    let mut image = None;
    let mut filters = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large(st)),
            Err(e) => return Err(ApiError::bad("bad_multipart", e.body_text())),
        };
        let name = field.name().unwrap_or("").to_string();
        let data = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(st)
            } else {
                ApiError::bad("bad_multipart", e.body_text())
            }
        })?;
        if name == "image" {
            image = Some(data.to_vec());
            continue;
        }
        let text = String::from_utf8(data.to_vec()).map_err(|_| ApiError::bad("bad_multipart", format!("field {name:?} is not UTF-8")))?;
        let number = |t: &str| {
            t.trim().parse::<usize>().map_err(|_| ApiError::bad("bad_multipart", format!("field {name:?}: {t:?} is not a number")))
        };
        match name.as_str() {
            "text" => body.text = Some(text),
            "item" => body.item = Some(text),
            "k" => body.k = Some(number(&text)?),
            "rerank" => body.rerank = Some(number(&text)?),
            "ef" => body.ef = Some(number(&text)?),
            "exact" => body.exact = Some(matches!(text.trim(), "true" | "1")),
            "side" => body.side = Some(choice(&name, &text)?),
            "mode" => body.mode = Some(choice(&name, &text)?),
            "filter" => filters.push(text),
            other => return Err(ApiError::bad("bad_multipart", format!("unknown field {other:?}"))),
        }
    }
    if !filters.is_empty() {
        body.filter = FilterSpec::List(filters);
    }
    Ok((body, image))
}

/// A lower-case enum value (`images`, `hybrid`) from a form field.
fn choice<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> Result<T, ApiError> {
    serde_json::from_value(Value::String(text.trim().to_lowercase()))
        .map_err(|_| ApiError::bad("bad_multipart", format!("field {name:?}: {text:?} is not one of the choices")))
}

impl AppState {
    /// Turns a parsed body into a request, refusing what is out of bounds.
    fn validate(&self, b: SearchBody, image: Option<Vec<u8>>) -> Result<SearchRequest, ApiError> {
        let given = [b.text.is_some(), image.is_some(), b.embedding.is_some(), b.item.is_some()].iter().filter(|x| **x).count();
        if given != 1 {
            return Err(ApiError::bad("bad_query", "give exactly one of \"text\", \"image\", \"embedding\" or \"item\""));
        }
        let query = if let Some(text) = b.text {
            let chars = text.chars().count();
            if text.trim().is_empty() {
                return Err(ApiError::bad("empty_text", "the text query is empty"));
            }
            if chars > self.cfg.max_text_chars {
                return Err(ApiError::bad(
                    "text_too_long",
                    format!("the text has {chars} characters; the limit is {}", self.cfg.max_text_chars),
                ));
            }
            Query::Text(text)
        } else if let Some(bytes) = image {
            Query::Image(bytes)
        } else if let Some(v) = b.embedding {
            Query::Embedding(v)
        } else {
            Query::Item(b.item.unwrap_or_default())
        };
        let k = b.k.unwrap_or(10);
        let max = self.cfg.max_k;
        if k > max || b.rerank.is_some_and(|r| r > max) || b.ef.is_some_and(|e| e > 10 * max) {
            return Err(ApiError::bad("k_too_large", format!("k and rerank may be at most {max}, ef at most {}", 10 * max)));
        }
        let mode = b.mode.unwrap_or(Mode::Dense);
        let is_text = matches!(query, Query::Text(_));
        if !is_text && mode != Mode::Dense {
            return Err(ApiError::bad("bad_mode", "bm25 and hybrid need a text query"));
        }
        let params = SearchParams { k, ef: b.ef, exact: b.exact.unwrap_or(false), filters: b.filter.filters()?, mode, rerank: b.rerank };
        Ok(SearchRequest { query, side: b.side.unwrap_or_default(), params })
    }
}
