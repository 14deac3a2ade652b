//! The frame around every request, written as one layer rather than a stack of middleware:
//! each tower layer on a router costs a boxed future and a cloned service per request, and the
//! hot paths (`POST /api/v1/keys/verify`, the gateway) passed through seven of them.
//!
//! [`Frame`], from the outside in:
//! - a request id (the client's `X-Request-Id` when it is short and plain, otherwise a new
//!   `req_…`), the client's address and scheme ([`client_info`]), and the request context that
//!   authentication, the audit log and the log formatter read (see `request_id`);
//! - the access log line, once the answer is known, and the id in the answer's `X-Request-Id`;
//! - the security headers on the server's own answers, only the transport ones on the
//!   gateway's (the upstream's pages are its own to secure);
//! - the rate-limit headers of the limit the request was counted against, whoever counted it;
//! - a panic inside turned into a 500 in the native error body.
//!
//! [`Guard`], inside CORS (so that its answers carry the CORS headers a browser needs to read
//! them): credentials sent over plain HTTP refused when `refuse_plaintext_credentials` is on,
//! and the request timeout. The gateway refuses plaintext credentials itself and bounds its
//! upstream call rather than the whole request, whose body may stream for long.

use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use tower::Service;

use super::client::{client_info, ClientInfo, Connection};
use super::request_id::{self, RequestContext};
use super::security::{transport_headers, API_CSP, HTML_CSP};
use super::ApiError;

/// Which answers the frame is around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The server's own answers: every security header.
    Api,
    /// An upstream's answers: only the transport headers.
    Gateway,
}

/// What the frame needs from the configuration.
#[derive(Clone, Debug)]
pub struct FrameConfig {
    pub surface: Surface,
    pub trusted_proxies: Vec<IpNet>,
}

/// What the frame wraps: a future per request that always ends in an answer.
pub trait Inner: Clone + Send + Sync + 'static {
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send + 'static;
}

/// Any infallible tower service (a router, the CORS layer around one) as an [`Inner`].
#[derive(Clone)]
pub struct Routes<S>(pub S);

impl<S> Inner for Routes<S>
where
    S: Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send + 'static {
        // Routers and CORS are always ready: `poll_ready` is a formality for them. Called inside
        // the future, which runs in the request's context: `call` itself may read it.
        let mut service = self.0.clone();
        async move {
            match service.call(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    }
}

/// The outer layer (see the module comment). A tower service, served by `serve`.
#[derive(Clone)]
pub struct Frame<I> {
    config: Arc<FrameConfig>,
    inner: I,
}

impl<I: Inner> Frame<I> {
    pub fn new(config: FrameConfig, inner: I) -> Self {
        Frame {
            config: Arc::new(config),
            inner,
        }
    }
}

impl<I: Inner> Service<Request> for Frame<I> {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let context = Arc::new(begin(&req, &self.config.trusted_proxies));
        let surface = self.config.surface;
        let started = Instant::now();
        // Boxed on its own: the handler's future is large (every await it may reach), and the
        // wrappers below would otherwise copy it whole each time one of them takes it in.
        let inner = Box::pin(self.inner.call(req));
        Box::pin(async move {
            let outcome = request_id::CURRENT
                .scope(context.clone(), catch_panic(inner))
                .await;
            // The internal error is logged where it becomes an answer.
            let mut response = outcome.unwrap_or_else(|_| {
                ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
            });
            finish(&mut response, &context, surface, started);
            Ok(response)
        })
    }
}

/// The request's context: its id, the client, what it asks for.
fn begin(req: &Request, proxies: &[IpNet]) -> RequestContext {
    let id = req
        .headers()
        .get(request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| request_id::acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(request_id::new_request_id);
    let connection = req.extensions().get::<Connection>();
    let peer = connection
        .map(|c| c.peer.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let tls = connection.is_some_and(|c| c.tls);
    let client = client_info(peer, tls, req.headers(), proxies);
    RequestContext::new(id, peer, client, req.method().clone(), req.uri().path())
}

/// Headers, the log line, the id: what every answer gets on its way out.
fn finish(
    response: &mut Response,
    context: &Arc<RequestContext>,
    surface: Surface,
    started: Instant,
) {
    let headers = response.headers_mut();
    match surface {
        Surface::Api => security_headers(headers, &context.client),
        Surface::Gateway => transport_headers(headers, Some(&context.client)),
    }
    if let Some(info) = context.take_ratelimit() {
        crate::ratelimit::write_headers(
            headers,
            &info,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&context.id) {
        headers.insert(request_id::HEADER, value);
    }
    let status = response.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    request_id::log_handled(context, status, latency_us);
}

/// Polls `future`, turning a panic inside it into `Err`. The panic's message was printed by the
/// panic hook; the answer is a 500 and the connection lives on.
async fn catch_panic<F: Future>(future: F) -> Result<F::Output, ()> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    })
    .await
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/html"))
}

/// The server's own answers: [`transport_headers`], and the browser headers unless the
/// handler chose its own.
pub fn security_headers(headers: &mut HeaderMap, client: &ClientInfo) {
    transport_headers(headers, Some(client));
    let csp = if is_html(headers) { HTML_CSP } else { API_CSP };
    let defaults: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in defaults {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
}

/// Paths whose body is a credential (Crossbar's logins).
const CREDENTIAL_BODY_PATHS: [&str; 2] = ["/v2/api_auth", "/v2/user_auth"];

/// Whether a request carries a credential, in a header or (Crossbar's logins) its body.
pub fn carries_credential(headers: &HeaderMap, path: &str) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key("x-api-key")
        || headers.contains_key("x-auth-token")
        || CREDENTIAL_BODY_PATHS.contains(&path)
}

/// With `refuse_plaintext_credentials`: a credential that arrived over plain HTTP is refused
/// before it is looked at. (It has crossed the network in clear already; the refusal makes the
/// mistake loud instead of letting it work.)
pub fn plaintext_refusal(refuse: bool, headers: &HeaderMap, path: &str) -> Option<ApiError> {
    let secure = request_id::context().is_some_and(|c| c.client.secure);
    (refuse && !secure && carries_credential(headers, path)).then(|| {
        ApiError::forbidden(
            "Credentials must be sent over HTTPS; this server refuses them over plain HTTP",
        )
    })
}

/// The inner layer of the API (see the module comment).
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    refuse_plaintext: bool,
    timeout: Duration,
}

impl<S> Guard<S> {
    pub fn new(inner: S, refuse_plaintext: bool, timeout: Duration) -> Self {
        Guard {
            inner,
            refuse_plaintext,
            timeout,
        }
    }
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = GuardFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if let Some(err) = plaintext_refusal(self.refuse_plaintext, req.headers(), req.uri().path())
        {
            return GuardFuture::Answered {
                response: Some(crate::surface_error(req.uri(), err)),
            };
        }
        let uri = req.uri().clone();
        GuardFuture::Running {
            inner: tokio::time::timeout(self.timeout, self.inner.call(req)),
            uri,
            limit: self.timeout,
        }
    }
}

pin_project_lite::pin_project! {
    #[project = GuardProj]
    pub enum GuardFuture<F> {
        Answered { response: Option<Response> },
        Running {
            #[pin]
            inner: tokio::time::Timeout<F>,
            uri: Uri,
            limit: Duration,
        },
    }
}

impl<F> Future for GuardFuture<F>
where
    F: Future<Output = Result<Response, std::convert::Infallible>>,
{
    type Output = Result<Response, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GuardProj::Answered { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => Poll::Pending,
            },
            GuardProj::Running { inner, uri, limit } => match inner.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(answer)) => Poll::Ready(answer),
                Poll::Ready(Err(_)) => {
                    // Dropping the handler's future cancelled its work at its last `.await`.
                    tracing::warn!(timeout_ms = limit.as_millis() as u64, "request timed out");
                    Poll::Ready(Ok(crate::surface_error(uri, ApiError::Timeout)))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::response::Html;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn framed(
        app: Router,
        refuse_plaintext: bool,
        timeout: Duration,
    ) -> Frame<Routes<Guard<Router>>> {
        Frame::new(
            FrameConfig {
                surface: Surface::Api,
                // Requests made here have no connection: their peer is 0.0.0.0.
                trusted_proxies: vec!["0.0.0.0/32".parse().expect("cidr")],
            },
            Routes(Guard::new(app, refuse_plaintext, timeout)),
        )
    }

    async fn call(app: Frame<Routes<Guard<Router>>>, req: Request) -> Response {
        app.oneshot(req).await.expect("infallible")
    }

    fn get_req(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request")
    }

    async fn json(response: Response) -> serde_json::Value {
        let body = axum::body::to_bytes(response.into_body(), 10_000)
            .await
            .expect("body");
        serde_json::from_slice(&body).expect("json")
    }

    #[tokio::test]
    async fn html_pages_get_the_strict_policy_and_json_the_closed_one() {
        let app = Router::new()
            .route("/page", get(|| async { Html("<h1>hi</h1>") }))
            .route("/json", get(|| async { axum::Json(serde_json::json!({})) }));
        let app = framed(app, false, Duration::from_secs(5));
        let page = call(app.clone(), get_req("/page")).await;
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], HTML_CSP);
        assert_eq!(page.headers()[header::X_FRAME_OPTIONS], "DENY");
        let json = call(app, get_req("/json")).await;
        assert_eq!(json.headers()[header::CONTENT_SECURITY_POLICY], API_CSP);
        assert_eq!(json.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            json.headers()
                .get(header::STRICT_TRANSPORT_SECURITY)
                .is_none(),
            "not over HTTPS"
        );
        assert!(json.headers()[request_id::HEADER]
            .to_str()
            .expect("ascii")
            .starts_with("req_"));
    }

    #[tokio::test]
    async fn a_page_that_sets_its_own_policy_keeps_it() {
        let app = Router::new().route(
            "/page",
            get(|| async {
                (
                    [(header::CONTENT_SECURITY_POLICY, "default-src 'self' data:")],
                    Html("x"),
                )
            }),
        );
        let page = call(framed(app, false, Duration::from_secs(5)), get_req("/page")).await;
        assert_eq!(
            page.headers()[header::CONTENT_SECURITY_POLICY],
            "default-src 'self' data:"
        );
    }

    #[tokio::test]
    async fn a_request_slower_than_the_timeout_gets_503_in_the_surface_shape() {
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        };
        let app = Router::new()
            .route("/api/v1/slow", get(slow))
            .route("/v2/slow", get(slow));
        let app = framed(app, false, Duration::from_millis(50));
        let native = call(app.clone(), get_req("/api/v1/slow")).await;
        assert_eq!(native.status(), 503);
        assert_eq!(json(native).await["error"]["code"], "timeout");
        let crossbar = call(app, get_req("/v2/slow")).await;
        assert_eq!(json(crossbar).await["error"], "503");
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_a_500_with_the_headers_and_id() {
        let app = Router::new().route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("boom");
                }
                "never"
            }),
        );
        let req = Request::builder()
            .uri("/boom")
            .header(request_id::HEADER, "abc-123")
            .body(Body::empty())
            .expect("request");
        let answer = call(framed(app, false, Duration::from_secs(5)), req).await;
        assert_eq!(answer.status(), 500);
        assert_eq!(answer.headers()[request_id::HEADER], "abc-123");
        assert_eq!(answer.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(json(answer).await["error"]["code"], "internal");
    }

    #[tokio::test]
    async fn credentials_in_clear_are_refused_only_when_configured() {
        let app = Router::new().route("/api/v1/x", get(|| async { "ok" }));
        let with_key = || {
            Request::builder()
                .uri("/api/v1/x")
                .header("x-api-key", "ak_live_x")
                .body(Body::empty())
                .expect("request")
        };
        let refused = call(
            framed(app.clone(), true, Duration::from_secs(5)),
            with_key(),
        )
        .await;
        assert_eq!(refused.status(), 403);
        let plain = call(
            framed(app.clone(), true, Duration::from_secs(5)),
            get_req("/api/v1/x"),
        )
        .await;
        assert_eq!(plain.status(), 200, "no credential, nothing to refuse");
        let mut behind_https_proxy = with_key();
        behind_https_proxy
            .headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let proxied = call(
            framed(app.clone(), true, Duration::from_secs(5)),
            behind_https_proxy,
        )
        .await;
        assert_eq!(proxied.status(), 200, "HTTPS at a trusted proxy is HTTPS");
        let allowed = call(framed(app, false, Duration::from_secs(5)), with_key()).await;
        assert_eq!(allowed.status(), 200);
    }
}
