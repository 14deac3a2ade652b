//! Keygate's HTTP server. One router serves the native API (`/api/v1`), the operations
//! endpoints and, as later features land, the Crossbar-compatible API, OAuth and the dashboard.
//! [`start`] runs it on a listener with its background tasks and shuts both down in order:
//! stop accepting, drain requests (bounded), then stop the background tasks, which finish
//! their last round (the final usage flush among them).

pub mod api;
pub mod cache;
pub mod crossbar;
pub mod dashboard;
pub mod gateway;
pub mod http;
pub mod mailer;
pub mod oauth;
pub mod ops;
pub mod ratelimit;
pub mod revocation;
pub mod serve;
pub mod service;
pub mod state;
pub mod tls;
pub mod tokens;
pub mod usage;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::util::Either;
use tower::Layer;
use tower_http::cors::Cors;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use state::{AppState, Config};

use http::frame::{Frame, FrameConfig, Guard, Routes, Surface};
use http::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(title = "Keygate", description = "API keys, auth tokens, rate limits, credits and webhooks for your API."),
    components(schemas(http::error::ErrorBodyDoc)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

fn all_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(ops::routes())
        .merge(api::routes())
        .merge(crossbar::routes())
        .merge(webhooks::routes())
        .merge(oauth::routes())
}

/// The OpenAPI document of every route, built from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    all_routes().split_for_parts().1
}

/// The routes as served: the router, with its body limit, under the request guard (plaintext
/// credentials, request timeout), CORS when origins are configured, and the frame (request id,
/// access log, security and rate-limit headers, panics). See `http::frame`.
pub type Api = Frame<Routes<Either<Cors<Guarded>, Guarded>>>;
type Guarded = Guard<<DefaultBodyLimit as Layer<Router>>::Service>;

/// The server's routes in their frame.
pub fn router(state: AppState) -> Api {
    let (router, _) = all_routes().split_for_parts();
    let router = router
        .merge(dashboard::routes(&state))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    // Layers around the whole router, not `Router::layer`, which wraps every route on its own
    // and costs a boxed service per route and per request.
    let guarded = Guard::new(
        DefaultBodyLimit::max(http::extract::MAX_BODY_BYTES).layer(router),
        state.config.refuse_plaintext_credentials,
        state.config.request_timeout,
    );
    let inner = match http::security::cors_layer(&state.config.cors_allowed_origins) {
        Some(cors) => Either::Left(cors.layer(guarded)),
        None => Either::Right(guarded),
    };
    Frame::new(
        FrameConfig {
            surface: Surface::Api,
            trusted_proxies: state.config.trusted_proxies.clone(),
        },
        Routes(inner),
    )
}

/// Answers in the shape of the surface the path belongs to.
pub(crate) fn surface_error(uri: &Uri, err: ApiError) -> Response {
    if crossbar::owns(uri.path()) {
        crossbar::CbError(err).into_response()
    } else {
        err.into_response()
    }
}

async fn route_not_found(uri: Uri) -> Response {
    let path = uri.path();
    let shown = if path.len() > 100 {
        &path[..path.floor_char_boundary(100)]
    } else {
        path
    };
    surface_error(&uri, ApiError::NotFound(format!("No route for {shown}")))
}

async fn method_not_allowed(uri: Uri) -> Response {
    surface_error(
        &uri,
        ApiError::MethodNotAllowed("This method is not allowed on this route".into()),
    )
}

/// A running server: its address, and a handle that stops it.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, flushes usage, and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await?
    }

    /// Waits until the server stops by itself (it only does on error) or `signal` resolves.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        signal.await;
        self.shutdown().await
    }
}

/// Serves `state` on `listener` with its background tasks.
pub fn start(state: AppState, listener: TcpListener) -> anyhow::Result<RunningServer> {
    let app = router(state.clone());
    start_with(state, listener, app)
}

/// Serves `app` (the API, or the gateway) with the background tasks every node runs.
pub fn start_with<A: serve::App>(
    state: AppState,
    listener: TcpListener,
    app: A,
) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let config = &state.config;
    let tls = match &config.tls {
        Some(source) => Some(tls::Tls::load(source, &config.data_dir)?),
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let mut background = Background::new();
    background.spawn("usage flush", |stop| flush_usage(state.clone(), stop));
    background.spawn("revocation feed", |stop| {
        revocation::follow(state.clone(), stop)
    });
    background.spawn("audit retention", |stop| {
        service::audit::purge_periodically(state.clone(), stop)
    });
    if let Some(tls) = &tls {
        let cert = tls.cert.clone();
        background.spawn("certificate reload", |stop| {
            tls::watch_certificate(cert, stop)
        });
    }
    // The webhook worker finishes or releases its leases when told to stop, before the
    // process exits.
    background.spawn("webhook delivery", |stop| {
        webhooks::worker::run(state.clone(), stop)
    });
    background.spawn("webhook housekeeping", |stop| {
        webhooks::worker::housekeeping(state.clone(), stop)
    });
    // Later features register their workers here the same way.
    let subscriber = state.bus.as_ref().map(|bus| {
        let waker = state.clone();
        bus.subscribe(revocation::CHANNEL, move || waker.feed_wakeup.notify_one())
    });
    let webhook_subscriber = state.bus.as_ref().map(|bus| {
        let waker = state.clone();
        bus.subscribe(webhooks::events::CHANNEL, move || {
            waker.webhook_wakeup.notify_one()
        })
    });
    let limits = serve::ServeLimits {
        max_connections: config.max_connections,
        idle_timeout: config.idle_timeout,
        shutdown_timeout: config.shutdown_timeout,
        threads: config.serve_threads,
        nice: config.serve_nice,
    };
    let background_bound = config.shutdown_timeout;
    let task = tokio::spawn(async move {
        let served = serve::serve(listener, app, tls, limits, stopped).await;
        // Every request has ended: what they counted is all in memory, so the background
        // tasks' last round (the final usage flush) writes all of it.
        background.stop(background_bound).await;
        for s in [subscriber, webhook_subscriber].into_iter().flatten() {
            s.abort();
        }
        // Only now: the serving threads' runtimes drive what requests opened there (a
        // database connection the last flush may use).
        served?.release().await;
        Ok(())
    });
    tracing::info!(%addr, tls = config.tls_enabled(), database = state.store.backend_name(), "keygate listening");
    Ok(RunningServer { addr, stop, task })
}

/// The background tasks of a serving node. Each is told to stop only after the server has
/// drained its requests, and is awaited (within a bound) so its last round completes before
/// the process exits.
struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Background {
    fn new() -> Self {
        Background {
            stop: watch::channel(false).0,
            tasks: Vec::new(),
        }
    }

    /// Starts `task`, which must return soon after its receiver turns `true`.
    fn spawn<F>(&mut self, name: &'static str, task: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(task(self.stop.subscribe()));
        self.tasks.push((name, handle));
    }

    /// Tells every task to stop and waits for them all, at most `bound` in total; a task
    /// still running then is aborted.
    async fn stop(self, bound: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + bound;
        for (name, mut handle) in self.tasks {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                tracing::warn!(task = name, "background task did not stop in time; aborted");
                handle.abort();
            }
        }
    }
}

/// Writes batched usage every `usage_flush_interval`, and a last time on shutdown, from a thread
/// of its own at a lower CPU priority (nice 10) with a runtime of its own. A flush of many keys
/// is a good part of a second of CPU (building statements, handing them to the database, the
/// paced chunks' wake-ups); on the shared runtime, at the serving threads' priority, a loaded
/// machine felt it in the requests' p99. Niced, it takes the CPU they leave. The stores give
/// the flush a database connection of its own, so no connection it opens carries requests. If
/// the thread cannot be started or its runtime fails, the flush runs here: usage is never
/// left unwritten.
async fn flush_usage(state: AppState, stopped: watch::Receiver<bool>) {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let (moved_state, moved_stopped) = (state.clone(), stopped.clone());
    let started = std::thread::Builder::new()
        .name("keygate-usage".into())
        .spawn(move || {
            keygate_store_sql::lower_thread_priority();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => {
                    rt.block_on(flush_usage_periodically(moved_state, moved_stopped));
                    let _ = done.send(());
                }
                Err(err) => tracing::warn!(error = %err, "no runtime for the usage flush thread"),
            }
        });
    if let Err(err) = &started {
        tracing::warn!(error = %err, "no usage flush thread; flushing on the shared runtime");
    }
    // Dropped without a word (no thread, no runtime, a panic): carry on here.
    if finished.await.is_err() {
        flush_usage_periodically(state, stopped).await;
    }
}

async fn flush_usage_periodically(state: AppState, mut stopped: watch::Receiver<bool>) {
    // The first tick one period from now: an interval's first tick is immediate otherwise.
    let period = state.config.usage_flush_interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
        // Paced: a flush of many keys is spread over part of the period rather than done in
        // one burst next to the requests.
        let pause = Duration::from_millis(2);
        if let Err(err) = state.usage.flush_paced(state.store.as_ref(), pause).await {
            tracing::warn!(error = %format!("{err:#}"), "usage flush failed; will retry");
        }
    }
    for attempt in 1..=3 {
        match state.usage.flush(state.store.as_ref()).await {
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(attempt, error = %format!("{err:#}"), "final usage flush failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
