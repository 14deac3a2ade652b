//! `posts-api`: a small in-memory posts API in the spirit of seed 003 (Audenci), written to sit
//! behind `keygate gateway`.
//!
//! It has no authentication of its own. It trusts the identity headers the gateway adds
//! (`X-Keygate-Account-Id`, `X-Keygate-Key-Id`, `X-Keygate-Scope`) and records them on every post
//! it creates or changes, so it must only listen where nothing but the gateway can reach it.
//!
//! Routes: `GET/POST /api/posts`, `GET/PUT/DELETE /api/posts/{id}`,
//! `POST /api/posts/{id}/publish`, `GET /api/whoami`, `GET /healthz`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
const ACCOUNT_HEADER: &str = "x-keygate-account-id";
const KEY_HEADER: &str = "x-keygate-key-id";
const SCOPE_HEADER: &str = "x-keygate-scope";
/// Headers that carry a Keygate credential. The gateway strips them; none should arrive here.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-auth-token"];
const MAX_CAPTION_CHARS: usize = 2200;
const MAX_PLATFORM_CHARS: usize = 32;
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

const USAGE: &str = "\
posts-api: an in-memory posts API meant to run behind `keygate gateway`.

Usage: posts-api [--listen ADDR]

Options:
  --listen ADDR   address to listen on (env POSTS_API_LISTEN; default 127.0.0.1:9000).
                  Port 0 picks a free port; the address is printed on stdout.
  -h, --help      print this help

It performs no authentication: it trusts the X-Keygate-* headers the gateway adds, so it must
only listen where the gateway, and nothing else, can reach it.";

// ---------------------------------------------------------------------------------------------
// Model

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
enum Status {
    Draft,
    Scheduled,
    Published,
}

impl Status {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "DRAFT" => Some(Self::Draft),
            "SCHEDULED" => Some(Self::Scheduled),
            "PUBLISHED" => Some(Self::Published),
            _ => None,
        }
    }
}

/// Who made a call, as the gateway told us (`None` when the header was absent).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Caller {
    account_id: Option<String>,
    key_id: Option<String>,
}

impl Caller {
    fn from_headers(h: &HeaderMap) -> Self {
        Self {
            account_id: header(h, ACCOUNT_HEADER),
            key_id: header(h, KEY_HEADER),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Post {
    id: String,
    caption: String,
    status: Status,
    platform: Option<String>,
    created_at: String,
    updated_at: String,
    published_at: Option<String>,
    created_by: Caller,
    updated_by: Caller,
}

/// Posts, oldest first; lists show them newest first.
#[derive(Clone, Default)]
struct AppState {
    posts: Arc<Mutex<Vec<Post>>>,
}

impl AppState {
    fn posts(&self) -> MutexGuard<'_, Vec<Post>> {
        // A panic while holding the lock cannot leave a post half-written: recover the data.
        self.posts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Errors: `{"error": {"code", "message", "details"?: {"field", "reason"}}}` as seed 003 shows.

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<(&'static str, String)>,
}

impl ApiError {
    fn invalid(field: &'static str, message: &str, reason: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_INPUT",
            message: message.to_owned(),
            details: Some((field, reason.to_owned())),
        }
    }

    fn post_not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: "Post not found".to_owned(),
            details: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

/// Fields in seed 003's order: code, message, details.
#[derive(Serialize)]
struct ErrorFields<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<ErrorDetails<'a>>,
}

#[derive(Serialize)]
struct ErrorDetails<'a> {
    field: &'a str,
    reason: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorFields {
                code: self.code,
                message: &self.message,
                details: self
                    .details
                    .as_ref()
                    .map(|(field, reason)| ErrorDetails { field, reason }),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------------
// Input

fn parse_object(body: &Bytes) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::invalid(
            "body",
            "Request body must be a JSON object",
            "Invalid JSON",
        )),
    }
}

/// `Some(caption)` when the field is present; a present caption must be a non-empty string.
fn caption_field(body: &Map<String, Value>, required: bool) -> ApiResult<Option<String>> {
    let missing = || ApiError::invalid("caption", "Caption is required", "Field is required");
    match body.get("caption") {
        None if !required => Ok(None),
        None | Some(Value::Null) => Err(missing()),
        Some(Value::String(s)) if s.trim().is_empty() => Err(missing()),
        Some(Value::String(s)) if s.chars().count() > MAX_CAPTION_CHARS => Err(ApiError::invalid(
            "caption",
            "Caption is too long",
            &format!("Must be at most {MAX_CAPTION_CHARS} characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(
            "caption",
            "Caption must be a string",
            "Must be a string",
        )),
    }
}

fn invalid_status() -> ApiError {
    ApiError::invalid(
        "status",
        "Invalid status",
        "Must be one of DRAFT, SCHEDULED, PUBLISHED",
    )
}

fn status_field(body: &Map<String, Value>) -> ApiResult<Option<Status>> {
    match body.get("status") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Status::parse(s).map(Some).ok_or_else(invalid_status),
        Some(_) => Err(invalid_status()),
    }
}

/// `None`: absent; `Some(None)`: `null` (clears it); `Some(Some(p))`: a platform, lowercased.
fn platform_field(body: &Map<String, Value>) -> ApiResult<Option<Option<String>>> {
    let invalid = || {
        ApiError::invalid(
            "platform",
            "Invalid platform",
            &format!("Must be a string of 1 to {MAX_PLATFORM_CHARS} characters"),
        )
    };
    match body.get("platform") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > MAX_PLATFORM_CHARS {
                Err(invalid())
            } else {
                Ok(Some(Some(s.to_lowercase())))
            }
        }
        Some(_) => Err(invalid()),
    }
}

fn positive_param(
    q: &HashMap<String, String>,
    name: &'static str,
    default: usize,
    max: usize,
) -> ApiResult<usize> {
    let Some(raw) = q.get(name) else {
        return Ok(default);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => {
            let reason = if max == usize::MAX {
                "Must be a positive integer".to_owned()
            } else {
                format!("Must be an integer from 1 to {max}")
            };
            Err(ApiError::invalid(name, &format!("Invalid {name}"), &reason))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// A list response in seed 003's shape.
#[derive(Serialize)]
struct Page {
    data: Vec<Post>,
    pagination: Pagination,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Pagination {
    page: usize,
    limit: usize,
    total_count: usize,
    has_more: bool,
    next_cursor: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WhoAmI {
    account_id: Option<String>,
    key_id: Option<String>,
    scope: Option<String>,
    credential_received: bool,
    credential_headers: Vec<&'static str>,
}

/// `GET /api/posts?page=&limit=&status=&platform=&cursor=`: newest first. `nextCursor` (the id
/// of the page's last post) may be sent back as `cursor` to get the posts after it, which stays
/// stable while new posts are created; without a cursor, `page` and `limit` pick the slice.
async fn list_posts(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Page>> {
    let page = positive_param(&q, "page", 1, usize::MAX)?;
    let limit = positive_param(&q, "limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let status = match q.get("status") {
        Some(s) => Some(Status::parse(s).ok_or_else(invalid_status)?),
        None => None,
    };
    let platform = q.get("platform").map(|p| p.trim().to_lowercase());

    let posts = state.posts();
    let matching: Vec<&Post> = posts
        .iter()
        .rev()
        .filter(|p| status.is_none_or(|s| p.status == s))
        .filter(|p| {
            platform
                .as_deref()
                .is_none_or(|want| p.platform.as_deref() == Some(want))
        })
        .collect();
    let total = matching.len();
    let (start, page) = match q.get("cursor") {
        Some(cursor) => {
            let at = matching
                .iter()
                .position(|p| &p.id == cursor)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "cursor",
                        "Invalid cursor",
                        "Must be a nextCursor from an earlier page with the same filters",
                    )
                })?;
            (at + 1, (at + 1) / limit + 1)
        }
        None => (page.saturating_sub(1).saturating_mul(limit), page),
    };
    let data: Vec<Post> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|p| (*p).clone())
        .collect();
    let has_more = start.saturating_add(data.len()) < total;
    let next_cursor = if has_more {
        data.last().map(|p| p.id.clone())
    } else {
        None
    };
    Ok(Json(Page {
        data,
        pagination: Pagination {
            page,
            limit,
            total_count: total,
            has_more,
            next_cursor,
        },
    }))
}

/// `POST /api/posts`: `{"caption", "status"?: DRAFT|SCHEDULED|PUBLISHED, "platform"?}`.
async fn create_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Post>)> {
    let body = parse_object(&body)?;
    let caption = caption_field(&body, true)?.unwrap_or_default();
    let status = status_field(&body)?.unwrap_or(Status::Draft);
    let platform = platform_field(&body)?.flatten();
    let caller = Caller::from_headers(&headers);
    let at = now();
    let post = Post {
        id: format!("post_{}", uuid::Uuid::now_v7().simple()),
        caption,
        status,
        platform,
        created_at: at.clone(),
        updated_at: at.clone(),
        published_at: (status == Status::Published).then_some(at),
        created_by: caller.clone(),
        updated_by: caller,
    };
    state.posts().push(post.clone());
    Ok((StatusCode::CREATED, Json(post)))
}

async fn get_post(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Post>> {
    state
        .posts()
        .iter()
        .find(|p| p.id == id)
        .cloned()
        .map(Json)
        .ok_or_else(ApiError::post_not_found)
}

/// `PUT /api/posts/{id}`: any of `caption`, `status`, `platform`; the others are kept.
async fn update_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Post>> {
    let body = parse_object(&body)?;
    let caption = caption_field(&body, false)?;
    let status = status_field(&body)?;
    let platform = platform_field(&body)?;
    let mut posts = state.posts();
    let post = posts
        .iter_mut()
        .find(|p| p.id == id)
        .ok_or_else(ApiError::post_not_found)?;
    let at = now();
    if let Some(caption) = caption {
        post.caption = caption;
    }
    if let Some(platform) = platform {
        post.platform = platform;
    }
    if let Some(status) = status {
        if status != Status::Published {
            post.published_at = None;
        } else if post.published_at.is_none() {
            post.published_at = Some(at.clone());
        }
        post.status = status;
    }
    post.updated_at = at;
    post.updated_by = Caller::from_headers(&headers);
    Ok(Json(post.clone()))
}

async fn delete_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let mut posts = state.posts();
    let at = posts
        .iter()
        .position(|p| p.id == id)
        .ok_or_else(ApiError::post_not_found)?;
    posts.remove(at);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/posts/{id}/publish`: 409 when it already is.
async fn publish_post(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Post>> {
    let mut posts = state.posts();
    let post = posts
        .iter_mut()
        .find(|p| p.id == id)
        .ok_or_else(ApiError::post_not_found)?;
    if post.status == Status::Published {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "CONFLICT",
            message: "Post is already published".to_owned(),
            details: None,
        });
    }
    let at = now();
    post.status = Status::Published;
    post.published_at = Some(at.clone());
    post.updated_at = at;
    post.updated_by = Caller::from_headers(&headers);
    Ok(Json(post.clone()))
}

/// `GET /api/whoami`: the identity the gateway passed on, and whether any credential header
/// reached this upstream (it must not: the gateway strips them). Never echoes a credential.
async fn whoami(headers: HeaderMap) -> Json<WhoAmI> {
    let received: Vec<&'static str> = CREDENTIAL_HEADERS
        .into_iter()
        .filter(|name| headers.contains_key(*name))
        .collect();
    Json(WhoAmI {
        account_id: header(&headers, ACCOUNT_HEADER),
        key_id: header(&headers, KEY_HEADER),
        scope: header(&headers, SCOPE_HEADER),
        credential_received: !received.is_empty(),
        credential_headers: received,
    })
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "NOT_FOUND",
        message: "No such route".to_owned(),
        details: None,
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "METHOD_NOT_ALLOWED",
        message: "Method not allowed on this route".to_owned(),
        details: None,
    }
}

/// One log line per request, with the caller the gateway named.
async fn log_requests(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let caller = Caller::from_headers(req.headers());
    let credential = CREDENTIAL_HEADERS
        .into_iter()
        .find(|name| req.headers().contains_key(*name));
    let response = next.run(req).await;
    if let Some(name) = credential {
        tracing::warn!(
            header = name,
            "a credential header reached posts-api: is it reachable without the gateway?"
        );
    }
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        account = caller.account_id.as_deref().unwrap_or("-"),
        key = caller.key_id.as_deref().unwrap_or("-"),
        "request"
    );
    response
}

fn app() -> Router {
    Router::new()
        .route("/api/posts", get(list_posts).post(create_post))
        .route(
            "/api/posts/{id}",
            get(get_post).put(update_post).delete(delete_post),
        )
        .route("/api/posts/{id}/publish", post(publish_post))
        .route("/api/whoami", get(whoami))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(log_requests))
        .with_state(AppState::default())
}

// ---------------------------------------------------------------------------------------------
// Start-up

fn listen_address() -> Result<SocketAddr, String> {
    let mut listen = std::env::var("POSTS_API_LISTEN")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--listen" => {
                listen = Some(args.next().ok_or("--listen needs an address")?);
            }
            other => match other.strip_prefix("--listen=") {
                Some(v) => listen = Some(v.to_owned()),
                None => return Err(format!("unknown argument {other:?} (try --help)")),
            },
        }
    }
    let listen = listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    listen
        .trim()
        .parse()
        .map_err(|_| format!("--listen: {listen:?} is not an address like 127.0.0.1:9000"))
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
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() {
    let addr = match listen_address() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("posts-api: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTS_API_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("posts-api: listening on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    // The one line on stdout: tests (and scripts using port 0) read the address from it.
    println!("posts-api listening on http://{local}");
    let _ = std::io::stdout().flush();
    if !local.ip().is_loopback() {
        tracing::warn!(
            %local,
            "posts-api has no authentication of its own: make sure only the gateway can reach it"
        );
    }
    if let Err(e) = axum::serve(listener, app())
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        eprintln!("posts-api: {e}");
        std::process::exit(1);
    }
}
