//! Serving connections: plain TCP or TLS, HTTP/1.1 and HTTP/2 on one port (HTTP/2 is chosen by
//! ALPN over TLS, or by its preface in clear), at most `max_connections` at once, idle
//! connections closed, and a bounded drain when the server stops.
//!
//! Why our own accept loop rather than `axum::serve`: it has no TLS, no connection cap and no
//! idle timeout, and its graceful shutdown waits without bound.
//!
//! Each request is given one extension here, [`Connection`] (the TCP peer, whether the
//! connection is TLS, and what the service keeps for the connection); the frame turns it, with the trusted proxies, into the client's
//! `ClientInfo`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::http::client::{Connection, ConnectionLocal};
use crate::tls::Tls;

/// What a server serves: the API's routes or the gateway, each in its frame. Any infallible
/// tower service that can be shared between connections.
pub trait App:
    tower::Service<
        Request,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> App for T where
    T: tower::Service<
            Request,
            Response = Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the loop needs from the configuration.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
}

/// Requests in flight on one connection, and when the last one ended: what the idle timeout
/// looks at. Counting requests rather than bytes makes HTTP/1.1 and HTTP/2 the same case. A
/// request ends when its response head is sent; a body still streaming then (the gateway's) is
/// safe all the same, because closing is graceful: the body finishes first.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` that the last request ended.
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        }
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        Some(self.started.elapsed().saturating_sub(since))
    }
}

/// Marks a request in flight until dropped (also when the client goes away mid-request).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_done_ms
            .store(a.started.elapsed().as_millis() as u64, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's default header read timeout (30 s) bounds a client that never finishes its
    // request head; it needs a timer to act.
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // Pings find peers that vanished without closing.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Accepts and serves until `stopped`, then stops accepting (new connections are refused),
/// asks every connection to finish its requests and close, and waits up to
/// `shutdown_timeout` before cutting the ones still open.
pub async fn serve<A: App>(
    listener: TcpListener,
    app: A,
    tls: Option<Tls>,
    limits: ServeLimits,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let builder = Arc::new(builder());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        // A permit first: at the cap, connections wait in the kernel's backlog, not in memory.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit?,
            _ = stopping(&mut stopped) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping(&mut stopped) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let (app, builder, tls, stopped) =
            (app.clone(), builder.clone(), tls.clone(), stopped.clone());
        let idle = limits.idle_timeout;
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(stream, peer, false, app, &builder, idle, stopped).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, true, app, &builder, idle, stopped).await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(connections = open, "draining connections");
    }
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still running at the shutdown timeout are cut"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Resolves once the server is told to stop (or whoever could tell it is gone).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Serves one connection until it closes, it has been idle for `idle`, or the server stops
/// (both of which close it gracefully: requests in flight finish first).
async fn connection<I, A: App>(
    io: I,
    peer: SocketAddr,
    tls: bool,
    app: A,
    builder: &auto::Builder<TokioExecutor>,
    idle: Duration,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let local = Arc::new(ConnectionLocal::default());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(Connection {
                peer,
                tls,
                local: local.clone(),
            });
            let in_flight = InFlight::begin(&activity);
            let call = app.clone().oneshot(req.map(Body::new));
            async move {
                let response = call.await;
                drop(in_flight);
                response
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut check =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            _ = stopping(&mut stopped), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = check.tick(), if !closing => {
                if activity.idle_for().is_some_and(|d| d >= idle) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
