//! Serving connections: plain TCP or TLS, HTTP/1.1 and HTTP/2 on one port (HTTP/2 is chosen by
//! ALPN over TLS, or by its preface in clear), at most `max_connections` at once, idle
//! connections closed, and a bounded drain when the server stops.
//!
//! Why our own accept loop rather than `axum::serve`: it has no TLS, no connection cap and no
//! idle timeout, and its graceful shutdown waits without bound.
//!
//! Connections are served on `threads` serving threads, each running a single-threaded tokio
//! runtime (the model of nginx's worker processes). The accept loop, on the caller's runtime,
//! hands each new connection to the thread with the fewest open; from then on the connection,
//! its requests and the gateway's upstream connection for it stay on that thread. No request
//! wakes another thread or moves between threads, where tokio's work-stealing runtime woke a
//! parked worker for most events. Requests reach the shared state (caches, limiter, store) as
//! before. The serving threads' runtimes run until the server's background tasks have
//! finished (see [`Serving::release`]): what requests spawned or opened there (a database
//! connection, a webhook notice) keeps working for the final usage flush. `threads = 0` serves
//! on the caller's runtime instead.
//!
//! Each request is given one extension here, [`Connection`] (the TCP peer, whether the
//! connection is TLS, and what the service keeps for the connection); the frame turns it,
//! with the trusted proxies, into the client's `ClientInfo`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
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
/// A client that has begun a request head and not finished it by then is dropped (or by the
/// idle timeout, if that is shorter).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// What the loop needs from the configuration.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Serving threads; 0 serves on the caller's runtime.
    pub threads: usize,
    /// The serving threads' nice value; `None` leaves it as inherited.
    pub nice: Option<i32>,
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
    /// Bytes read from the client so far ([`CountingStream`]), and when the last request ended: more
    /// since then, with no request in flight, is a request head that has not been finished.
    read: AtomicU64,
    read_when_done: AtomicU64,
    /// Bytes written to the client so far: a response body may still stream after its request
    /// has ended, and the client may have sent its next head meanwhile (pipelining).
    written: AtomicU64,
    /// An HTTP/2 connection: its reads between requests are frames (pings, settings), not a
    /// request head.
    http2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            read: AtomicU64::new(0),
            read_when_done: AtomicU64::new(0),
            written: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    /// Whether an HTTP/1 client has sent part of a request head since its last request and has
    /// waited `limit` without finishing it (a slow or stalled client, or slowloris), while
    /// nothing was written to it for as long (`quiet`: no response body still streaming).
    fn head_unfinished_for(&self, limit: Duration, quiet: Duration) -> bool {
        !self.http2.load(Ordering::Relaxed)
            && quiet >= limit
            && self.read.load(Ordering::Relaxed) > self.read_when_done.load(Ordering::Relaxed)
            && self.idle_for().is_some_and(|d| d >= limit)
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
        a.read_when_done
            .store(a.read.load(Ordering::Relaxed), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No timer for HTTP/1, so no header read timeout of hyper's: it armed (and disarmed) a
    // timer for every request head on a kept-alive connection, 2-3% of the gateway's CPU per
    // request. A client that never finishes its head holds no request, so its connection is
    // idle and the idle timeout closes it (`connection` below; a test covers it).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // Pings find peers that vanished without closing.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// The serving threads, once they have stopped accepting and drained their connections;
/// their runtimes keep running until [`Serving::release`].
#[must_use = "the serving threads run until released"]
pub struct Serving {
    release: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Serving {
    /// Ends the serving threads' runtimes (what requests spawned there and did not finish is
    /// dropped) and waits for the threads.
    pub async fn release(self) {
        let _ = self.release.send(true);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

/// Accepts and serves until `stopped`, then stops accepting (new connections are refused),
/// asks every connection to finish its requests and close, and waits up to
/// `shutdown_timeout` before cutting the ones still open. Returns once every connection has
/// ended; the serving threads' runtimes stay up until the result is released.
pub async fn serve<A: App>(
    listener: TcpListener,
    app: A,
    tls: Option<Tls>,
    limits: ServeLimits,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<Serving> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (release, released) = watch::channel(false);
    let mut serving = Serving {
        release,
        threads: Vec::new(),
    };
    if limits.threads == 0 {
        let builder = Arc::new(builder());
        let mut connections = JoinSet::new();
        while let Some((stream, peer, permit)) = next(&listener, &permits, &stopped).await {
            while connections.try_join_next().is_some() {}
            let conn = ConnectionTask::new(&app, &builder, &tls, &limits, &stopped);
            connections.spawn(conn.run(stream, peer, permit));
        }
        drop(listener);
        drain(connections, limits.shutdown_timeout).await;
        return Ok(serving);
    }
    // Each thread holds a clone of `drained` until its connections have ended.
    let (drained, mut all_drained) = tokio::sync::mpsc::channel::<()>(1);
    let mut workers = Vec::with_capacity(limits.threads);
    for n in 0..limits.threads {
        let started = start_thread(
            n,
            &app,
            &tls,
            &limits,
            &stopped,
            serving.release.subscribe(),
            drained.clone(),
        );
        match started {
            Ok((worker, thread, started)) => {
                // A thread that ended at once (it cannot have) would drop its connections.
                let _ = started.await;
                workers.push(worker);
                serving.threads.push(thread);
            }
            Err(err) => {
                drop(workers);
                serving.release().await;
                return Err(err);
            }
        }
    }
    drop((drained, released));
    let mut turn = 0;
    let mut result = Ok(());
    while let Some((stream, peer, permit)) = next(&listener, &permits, &stopped).await {
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(%peer, error = %err, "handing a connection over failed");
                continue;
            }
        };
        let mut handoff = (stream, permit);
        while !workers.is_empty() {
            // To the thread with the fewest connections; among equals, in turn.
            turn = (turn + 1) % workers.len();
            let chosen = (0..workers.len())
                .map(|i| (turn + i) % workers.len())
                .min_by_key(|&i| workers[i].open.load(Ordering::Relaxed))
                .unwrap_or(0);
            let worker = &workers[chosen];
            worker.open.fetch_add(1, Ordering::Relaxed);
            let counted = Counted(worker.open.clone());
            let (stream, permit) = handoff;
            let sent = worker.handoff.send(Handoff {
                stream,
                peer,
                hold: (permit, counted),
            });
            match sent {
                Ok(()) => break,
                Err(tokio::sync::mpsc::error::SendError(back)) => {
                    // The thread has ended (it cannot, short of a bug that panicked its event
                    // loop): the others take its share from now on.
                    tracing::error!("a serving thread has ended; the others serve its share");
                    workers.swap_remove(chosen);
                    handoff = (back.stream, back.hold.0);
                }
            }
        }
        if workers.is_empty() {
            result = Err(anyhow::anyhow!("every serving thread has ended"));
            break;
        }
    }
    drop(listener);
    // Closing the hand-off channels tells each thread to drain.
    drop(workers);
    let _ = all_drained.recv().await;
    result.map(|()| serving)
}

/// A serving thread as the acceptor sees it.
struct Worker {
    handoff: tokio::sync::mpsc::UnboundedSender<Handoff>,
    /// Connections open on the thread.
    open: Arc<AtomicUsize>,
}

/// A connection accepted for a serving thread, with what it holds while open: its place under
/// the connection cap and its count on the thread.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    hold: (OwnedSemaphorePermit, Counted),
}

/// One connection counted on its thread until dropped.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts serving thread `n`: it serves the connections handed to it until the hand-off
/// channel closes, drains them, drops `drained`, and keeps its runtime running until
/// `released`. The receiver resolves once the thread runs.
fn start_thread<A: App>(
    n: usize,
    app: &A,
    tls: &Option<Tls>,
    limits: &ServeLimits,
    stopped: &watch::Receiver<bool>,
    mut released: watch::Receiver<bool>,
    drained: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<(
    Worker,
    std::thread::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a serving thread's runtime")?;
    let (handoff, mut handed) = tokio::sync::mpsc::unbounded_channel::<Handoff>();
    let (app, tls, limits, stopped) = (app.clone(), tls.clone(), limits.clone(), stopped.clone());
    let (running, started) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("keygate-serve-{n}"))
        .spawn(move || {
            if let Some(nice) = limits.nice {
                keygate_store_sql::set_thread_nice(nice, n == 0);
            }
            // Running (and named, which the thread does itself) before the first connection.
            let _ = running.send(());
            runtime.block_on(async move {
                let builder = Arc::new(builder());
                let mut connections = JoinSet::new();
                while let Some(Handoff { stream, peer, hold }) = handed.recv().await {
                    while connections.try_join_next().is_some() {}
                    match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            let conn = ConnectionTask::new(&app, &builder, &tls, &limits, &stopped);
                            connections.spawn(conn.run(stream, peer, hold));
                        }
                        Err(err) => {
                            tracing::warn!(%peer, error = %err, "a serving thread could not take a connection")
                        }
                    }
                }
                drain(connections, limits.shutdown_timeout).await;
                drop(drained);
                let _ = released.wait_for(|r| *r).await;
            });
        })
        .context("starting a serving thread")?;
    let worker = Worker {
        handoff,
        open: Arc::new(AtomicUsize::new(0)),
    };
    Ok((worker, thread, started))
}

/// The next connection, under the cap; `None` once the server stops.
async fn next(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    stopped: &watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let mut stopped = stopped.clone();
    loop {
        // A permit first: at the cap, connections wait in the kernel's backlog, not in memory.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.ok()?,
            _ = stopping(&mut stopped) => return None,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping(&mut stopped) => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer, permit));
            }
            Err(err) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %err, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What serving one connection needs, cloned from its thread's share.
struct ConnectionTask<A> {
    app: A,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<Tls>,
    idle: Duration,
    stopped: watch::Receiver<bool>,
}

impl<A: App> ConnectionTask<A> {
    fn new(
        app: &A,
        builder: &Arc<auto::Builder<TokioExecutor>>,
        tls: &Option<Tls>,
        limits: &ServeLimits,
        stopped: &watch::Receiver<bool>,
    ) -> Self {
        ConnectionTask {
            app: app.clone(),
            builder: builder.clone(),
            tls: tls.clone(),
            idle: limits.idle_timeout,
            stopped: stopped.clone(),
        }
    }

    /// The TLS handshake if any, then the connection; `hold` is kept until it ends.
    async fn run<H: Send + 'static>(self, stream: TcpStream, peer: SocketAddr, hold: H) {
        let _hold = hold;
        let ConnectionTask {
            app,
            builder,
            tls,
            idle,
            stopped,
        } = self;
        match tls {
            None => connection(stream, peer, false, app, &builder, idle, stopped).await,
            Some(tls) => {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        connection(stream, peer, true, app, &builder, idle, stopped).await
                    }
                    Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }
}

/// Waits up to `bound` for the connections to end, then cuts the ones still open.
async fn drain(mut connections: JoinSet<()>, bound: Duration) {
    // Those that have ended are still in the set until joined.
    while connections.try_join_next().is_some() {}
    let open = connections.len();
    if open > 0 {
        tracing::info!(connections = open, "draining connections");
    }
    let drained = tokio::time::timeout(bound, async {
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
            if req.version() >= hyper::Version::HTTP_2 {
                activity.http2.store(true, Ordering::Relaxed);
            }
            let in_flight = InFlight::begin(&activity);
            let call = app.clone().oneshot(req.map(Body::new));
            async move {
                let response = call.await;
                drop(in_flight);
                response
            }
        })
    };
    let io = CountingStream {
        io,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut check =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    // When the connection was last seen writing, checked at each tick.
    let (mut written, mut writing_seen) = (0, Instant::now());
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
            _ = check.tick() => {
                // A head begun and never finished: nothing is in flight to wait for, and hyper
                // would wait for the head's end before it closed, so the connection is dropped.
                let now_written = activity.written.load(Ordering::Relaxed);
                if now_written != written {
                    (written, writing_seen) = (now_written, Instant::now());
                }
                if activity.head_unfinished_for(HEAD_TIMEOUT.min(idle), writing_seen.elapsed()) {
                    tracing::debug!(%peer, "request head not finished in time");
                    return;
                }
                if !closing && activity.idle_for().is_some_and(|d| d >= idle) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// The client's stream, counting the bytes read from it and written to it into its
/// connection's [`Activity`] (one uncontended atomic add per read or write): what tells a
/// request head that was begun and not finished from a connection that is simply idle or
/// still streaming an answer.
struct CountingStream<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for CountingStream<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        if read > 0 {
            self.activity.read.fetch_add(read, Ordering::Relaxed);
        }
        polled
    }
}

impl<I> CountingStream<I> {
    fn count_written(&self, polled: &std::task::Poll<std::io::Result<usize>>) {
        if let std::task::Poll::Ready(Ok(n)) = polled {
            self.activity
                .written
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CountingStream<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.count_written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.count_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
