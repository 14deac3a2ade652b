//! `bench-load`: a constant-rate (open-loop) HTTP/1.1 load generator for `scripts/bench`, which
//! needs latency at a fixed request rate and Debian's `wrk` has no such mode.
//!
//! Request i is due at `start + i / rate`, and is released then (see below). Each of the
//! `--connections` workers takes the next released request, sends it on its own keep-alive
//! connection and reads the whole answer. Latency is timed from the moment the request was
//! sent, except when no worker was free at its due time: then it is timed from the due time, so
//! a backlog counts in full (no coordinated omission). A line on stderr says how many requests
//! were sent late.
//!
//! Releasing: tokio's timer fires on whole milliseconds, so with it every request due within a
//! millisecond went out at its end, together (21 at once at 21,000/s), and the latency measured
//! was largely how long the server took to drain such a burst. Due requests are released
//! instead by a timerfd that the runtime polls with its sockets, every `1 / rate` seconds or
//! every `--tick` (100 µs), whichever is longer (at most 1 ms), and whenever a worker becomes
//! free. (Elsewhere than on Linux, every millisecond.) A thread of its own, sleeping until each
//! due time, released them as evenly but cost a fifth of a core in wake-ups on a 2-core VM,
//! taken from the servers measured.
//!
//! Each request can carry a key picked at random from `--keys FILE` (one a line): `{key}` in
//! `--header` and `--body` is replaced by it.
//!
//! `--sequential`: no schedule and no random pick: the workers send one request per key of
//! `--keys`, in file order, as fast as they can, then stop (warms a cache with every key).
//!
//! `--closed`: no schedule: each worker sends its next request as soon as it has read the
//! answer to the last one (a closed loop, as wrk does), for `--duration` seconds after
//! `--warmup`; latency is timed from the send. The saturating load of wrk, without its Lua: a
//! key picked from a table of a million in wrk's Lua, and the garbage collection of the strings
//! joined around it, cost wrk pauses that showed in its p99 as much as the server's.
//!
//! `--timeline FILE`: also writes, for every 100 ms of the measured window (by due time), the
//! requests due in it and their p99 and maximum latency, to see when a slow stretch happened
//! (a background task's burst, say) rather than only that it did.
//!
//! Prints one line on stdout: `requests/s p50_ms p99_ms` (requests/s achieved); details and
//! errors on stderr. Exits 1 when any request failed or answered other than 2xx.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;
use tokio::time::Instant;

const USAGE: &str = "\
usage: bench-load --url URL (--rate N | --closed | --sequential) [--duration SECONDS] [--warmup SECONDS] [--connections N]
                  [--threads N] [--method M] [--header 'Name: value'] [--body TEXT] [--keys FILE]
                  [--timeline FILE] [--tick MICROSECONDS]

  --rate N         requests per second, fixed
  --closed         as fast as possible: each worker sends its next request once it has the
                   answer to its last (a closed loop, like wrk)
  --sequential     one request per key of --keys, in order, as fast as possible, then stop
  --duration S     measured seconds (default 10), after --warmup seconds (default 1) not counted
  --connections N  keep-alive connections, one worker each (default 32)
  --threads N      runtime threads (default 1)
  --timeline FILE  per 100 ms of the measured window: 'seconds requests p99_ms max_ms'
  --tick US        release due requests every US microseconds at the most often (default 100,
                   at most 1000): shorter sends them more evenly and costs more wake-ups
  --header, --body may contain {key}: a key picked at random from --keys for each request";

struct Template {
    parts: Vec<String>,
}

impl Template {
    fn new(text: &str) -> Self {
        Template {
            parts: text.split("{key}").map(str::to_owned).collect(),
        }
    }

    fn has_key(&self) -> bool {
        self.parts.len() > 1
    }

    fn render(&self, key: &str) -> String {
        self.parts.join(key)
    }
}

struct Plan {
    uri: Uri,
    authority: String,
    method: Method,
    headers: Vec<(HeaderName, Template)>,
    body: Option<Template>,
    keys: Vec<String>,
    rate: f64,
    sequential: bool,
    /// `--closed`: no schedule; each worker sends again once answered.
    closed: bool,
    timeline: Option<String>,
    /// The shortest wait between two releases of due requests by the timer.
    tick: Duration,
    warmup: Duration,
    duration: Duration,
}

#[derive(Default)]
struct Tally {
    /// Latencies of the measured requests, in microseconds.
    micros: Vec<u32>,
    /// With `--timeline`: each measured request's due time, in microseconds into the measured
    /// window, next to its latency in `micros`.
    due_micros: Vec<u32>,
    late: u64,
    failed: u64,
    non_2xx: u64,
    first_error: Option<String>,
    /// When this worker's last measured request finished.
    last_done: Option<Instant>,
}

fn main() {
    let mut url = None;
    let mut rate = None;
    let mut duration = 10.0;
    let mut warmup = 1.0;
    let mut connections = 32usize;
    let mut threads = 1usize;
    let mut method = Method::GET;
    let mut headers = Vec::new();
    let mut body = None;
    let mut keys_file = None;
    let mut timeline = None;
    let mut tick = 100.0;
    let mut sequential = false;
    let mut closed = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--sequential" {
            sequential = true;
            continue;
        }
        if flag == "--closed" {
            closed = true;
            continue;
        }
        let Some(v) = args.next() else { fail(USAGE) };
        match flag.as_str() {
            "--url" => url = Some(v),
            "--rate" => rate = Some(number(&flag, &v)),
            "--duration" => duration = number(&flag, &v),
            "--warmup" => warmup = number(&flag, &v),
            "--connections" => connections = number(&flag, &v) as usize,
            "--threads" => threads = number(&flag, &v) as usize,
            "--method" => {
                method = v
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("--method: bad method {v:?}")))
            }
            "--header" => {
                let (name, value) = v.split_once(':').unwrap_or_else(|| {
                    fail(&format!("--header: expected 'Name: value', got {v:?}"))
                });
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .unwrap_or_else(|_| fail(&format!("--header: bad name in {v:?}")));
                headers.push((name, Template::new(value.trim())));
            }
            "--body" => body = Some(Template::new(&v)),
            "--keys" => keys_file = Some(v),
            "--timeline" => timeline = Some(v),
            "--tick" => tick = number(&flag, &v),
            _ => fail(USAGE),
        }
    }
    let rate = match (rate, sequential, closed) {
        (Some(r), false, false) => r,
        (None, true, false) | (None, false, true) => f64::INFINITY,
        _ => fail(USAGE),
    };
    let Some(url) = url else { fail(USAGE) };
    if sequential {
        warmup = 0.0;
    }
    if !(rate > 0.0 && duration > 0.0 && warmup >= 0.0 && connections > 0 && threads > 0) {
        fail("--rate, --duration, --connections and --threads must be positive");
    }
    if !(1.0..=1000.0).contains(&tick) {
        fail("--tick must be between 1 and 1000 microseconds");
    }
    let uri: Uri = url
        .parse()
        .unwrap_or_else(|_| fail(&format!("--url: not a URL: {url:?}")));
    if uri.scheme_str() != Some("http") {
        fail("--url: only http:// is supported");
    }
    let authority = match uri.authority() {
        Some(a) if a.port_u16().is_some() => a.to_string(),
        Some(a) => format!("{}:80", a.host()),
        None => fail("--url: no host"),
    };
    let keys: Vec<String> = match &keys_file {
        Some(path) => std::fs::read_to_string(path)
            .unwrap_or_else(|e| fail(&format!("--keys {path}: {e}")))
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    let uses_keys =
        headers.iter().any(|(_, t)| t.has_key()) || body.as_ref().is_some_and(Template::has_key);
    if (uses_keys || sequential) && keys.is_empty() {
        fail("{key} is used but --keys gave no key");
    }
    let plan = Arc::new(Plan {
        uri,
        authority,
        method,
        headers,
        body,
        keys,
        rate,
        sequential,
        closed,
        timeline,
        tick: Duration::from_secs_f64(tick / 1e6),
        warmup: Duration::from_secs_f64(warmup),
        duration: Duration::from_secs_f64(duration),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("starting the runtime: {e}")));
    let (tally, elapsed) = runtime.block_on(run(plan.clone(), connections));
    report(&plan, tally, elapsed);
}

async fn run(plan: Arc<Plan>, connections: usize) -> (Tally, Duration) {
    let next = Arc::new(AtomicU64::new(0));
    // Connect every worker before the clock starts.
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        match connect(&plan.authority).await {
            Ok(s) => senders.push(s),
            Err(e) => fail(&format!("connecting to {}: {e}", plan.authority)),
        }
    }
    let start = Instant::now() + Duration::from_millis(50);
    let pacer = Arc::new(Pacer::new(&plan, start, connections));
    if !(plan.sequential || plan.closed) {
        let pacer = pacer.clone();
        let period =
            Duration::from_secs_f64(1.0 / plan.rate).clamp(plan.tick, Duration::from_millis(1));
        tokio::spawn(async move {
            #[cfg(target_os = "linux")]
            if let Err(e) = tick_precisely(&pacer, period).await {
                eprintln!("bench-load: no pacing timer ({e}); pacing on whole milliseconds");
            }
            let mut tick = tokio::time::interval_at(start, Duration::from_millis(1));
            while !pacer.finished() {
                tick.tick().await;
                pacer.release_due();
            }
        });
    }
    let mut workers = Vec::with_capacity(connections);
    for (n, sender) in senders.into_iter().enumerate() {
        let plan = plan.clone();
        let next = next.clone();
        let pacer = pacer.clone();
        workers.push(tokio::spawn(worker(
            plan, next, start, pacer, sender, n as u64,
        )));
    }
    let mut total = Tally::default();
    for w in workers {
        match w.await {
            Ok(t) => {
                total.micros.extend(t.micros);
                total.due_micros.extend(t.due_micros);
                total.late += t.late;
                total.failed += t.failed;
                total.non_2xx += t.non_2xx;
                if total.first_error.is_none() {
                    total.first_error = t.first_error;
                }
                total.last_done = total.last_done.max(t.last_done);
            }
            Err(e) => fail(&format!("a worker panicked: {e}")),
        }
    }
    // Requests per second achieved: over the measured window, until the last answer.
    let since = total
        .last_done
        .map_or(Duration::ZERO, |t| t.duration_since(start + plan.warmup));
    let elapsed = if plan.sequential || plan.closed {
        since
    } else {
        since.max(plan.duration)
    };
    (total, elapsed)
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

async fn connect(authority: &str) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Releases due requests every `period` until the last one, on a timerfd watched by the
/// runtime's own poll (no thread to wake; the kernel's timer slack does not apply to it).
#[cfg(target_os = "linux")]
async fn tick_precisely(pacer: &Pacer, period: Duration) -> std::io::Result<()> {
    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )?;
    let every = Timespec {
        tv_sec: 0,
        tv_nsec: period.as_nanos() as _,
    };
    timerfd_settime(
        &fd,
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: every,
            it_value: every,
        },
    )?;
    // Deprecated because a raw descriptor could be closed or reused under the registration;
    // an `OwnedFd` moved into the `AsyncFd` cannot be (the condition of the unsafe
    // `register_with_interest`, which this crate's lints forbid).
    #[allow(deprecated)]
    let fd = tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
    let mut expirations = [0u8; 8];
    while !pacer.finished() {
        let mut ready = fd.readable().await?;
        match rustix::io::read(ready.get_inner(), &mut expirations[..]) {
            Ok(_) => pacer.release_due(),
            Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Releases each request when it is due: a permit in `due` per request whose time has come,
/// then one more per worker, whose next request is past the end and which stops there.
struct Pacer {
    due: Semaphore,
    start: Instant,
    rate: f64,
    total: u64,
    workers: usize,
    released: AtomicU64,
}

impl Pacer {
    fn new(plan: &Plan, start: Instant, workers: usize) -> Self {
        Pacer::with(start, plan.rate, plan.warmup + plan.duration, workers)
    }

    fn with(start: Instant, rate: f64, length: Duration, workers: usize) -> Self {
        Pacer {
            due: Semaphore::new(0),
            start,
            rate,
            total: (length.as_secs_f64() * rate).ceil() as u64,
            workers,
            released: AtomicU64::new(0),
        }
    }

    fn finished(&self) -> bool {
        self.released.load(Ordering::Relaxed) >= self.total
    }

    /// Adds the permits of the requests that have become due since the last call.
    fn release_due(&self) {
        self.release_due_at(Instant::now());
    }

    fn release_due_at(&self, now: Instant) {
        if now < self.start {
            return;
        }
        // Requests 0..=k are due once k / rate has passed since the start.
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let due_now = ((elapsed * self.rate).floor() as u64 + 1).min(self.total);
        let mut released = self.released.load(Ordering::Relaxed);
        while due_now > released {
            match self.released.compare_exchange_weak(
                released,
                due_now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let mut permits = (due_now - released) as usize;
                    if due_now == self.total {
                        permits += self.workers;
                    }
                    self.due.add_permits(permits);
                    return;
                }
                Err(now_released) => released = now_released,
            }
        }
    }

    /// Waits for the next due request: `Some(true)` when it was waited for (released just now),
    /// `Some(false)` when it was due before the caller was free.
    async fn next(&self) -> Option<bool> {
        self.release_due();
        if let Ok(permit) = self.due.try_acquire() {
            permit.forget();
            return Some(false);
        }
        let permit = self.due.acquire().await.ok()?;
        permit.forget();
        Some(true)
    }
}

async fn worker(
    plan: Arc<Plan>,
    next: Arc<AtomicU64>,
    start: Instant,
    pacer: Arc<Pacer>,
    mut sender: Sender,
    seed: u64,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ (seed + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let interval = 1.0 / plan.rate;
    let end = plan.warmup + plan.duration;
    tokio::time::sleep_until(start).await;
    if plan.closed {
        return closed_loop(&plan, start, sender, rng).await;
    }
    loop {
        // Paced: a request is taken when its time has come. One taken at once was due before
        // this worker was free; one waited for was released just now.
        let waited = if plan.sequential {
            false
        } else {
            match pacer.next().await {
                Some(waited) => waited,
                None => return tally,
            }
        };
        let i = next.fetch_add(1, Ordering::Relaxed);
        if plan.sequential {
            let Some(key) = plan.keys.get(i as usize) else {
                return tally;
            };
            let sent = Instant::now();
            let outcome = send(&plan, &mut sender, key).await;
            if !tally.record(outcome, sent, Some(None)) {
                sender = reconnect(&plan, sender).await;
            }
            continue;
        }
        let offset = Duration::from_secs_f64(i as f64 * interval);
        if offset >= end {
            return tally;
        }
        let due = start + offset;
        let measured = offset >= plan.warmup;
        let now = Instant::now();
        let sent = if waited || now < due {
            now
        } else {
            if measured && now > due + Duration::from_millis(1) {
                tally.late += 1;
            }
            due
        };
        let key = if plan.keys.is_empty() {
            ""
        } else {
            plan.keys[(rng.next() % plan.keys.len() as u64) as usize].as_str()
        };
        let outcome = send(&plan, &mut sender, key).await;
        // Where in the measured window it was due, for --timeline.
        let due_at = (measured && plan.timeline.is_some()).then(|| offset - plan.warmup);
        if !tally.record(outcome, sent, measured.then_some(due_at)) {
            sender = reconnect(&plan, sender).await;
        }
    }
}

/// `--closed`: one request after another on this worker's connection until the end; those
/// sent within the measured window are counted, timed from their send.
async fn closed_loop(plan: &Plan, start: Instant, mut sender: Sender, mut rng: XorShift) -> Tally {
    let mut tally = Tally::default();
    let (from, end) = (start + plan.warmup, start + plan.warmup + plan.duration);
    loop {
        let sent = Instant::now();
        if sent >= end {
            return tally;
        }
        let key = if plan.keys.is_empty() {
            ""
        } else {
            plan.keys[(rng.next() % plan.keys.len() as u64) as usize].as_str()
        };
        let outcome = send(plan, &mut sender, key).await;
        let measured = (sent >= from).then(|| plan.timeline.as_ref().map(|_| sent - from));
        if !tally.record(outcome, sent, measured) {
            sender = reconnect(plan, sender).await;
        }
    }
}

impl Tally {
    /// Counts one answer; false when the request failed and the connection must be replaced.
    /// `measured`: `None` for a warm-up request, not counted; `Some(due)` otherwise, with the
    /// request's due time into the measured window when a timeline is kept.
    fn record(
        &mut self,
        outcome: Result<u16, String>,
        sent: Instant,
        measured: Option<Option<Duration>>,
    ) -> bool {
        let latency = sent.elapsed();
        match outcome {
            Ok(status) => {
                if let Some(due) = measured {
                    self.last_done = Some(Instant::now());
                    self.micros.push(micros(latency));
                    if let Some(due) = due {
                        self.due_micros.push(micros(due));
                    }
                    if !(200..300).contains(&status) {
                        self.non_2xx += 1;
                        self.first_error
                            .get_or_insert_with(|| format!("answer {status}"));
                    }
                }
                true
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
                false
            }
        }
    }
}

async fn reconnect(plan: &Plan, old: Sender) -> Sender {
    drop(old);
    for _ in 0..50 {
        match connect(&plan.authority).await {
            Ok(s) => return s,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    fail(&format!("{} stopped answering", plan.authority))
}

async fn send(plan: &Plan, sender: &mut Sender, key: &str) -> Result<u16, String> {
    let mut builder = Request::builder()
        .method(plan.method.clone())
        .uri(plan.uri.path_and_query().map_or("/", |p| p.as_str()))
        .header("host", plan.authority.as_str());
    for (name, value) in &plan.headers {
        let v = HeaderValue::from_str(&value.render(key)).map_err(|e| e.to_string())?;
        builder = builder.header(name, v);
    }
    let body = match &plan.body {
        Some(t) => Body::from(t.render(key)),
        None => Body::empty(),
    };
    let request = builder.body(body).map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    axum::body::to_bytes(Body::new(answer.into_body()), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// `--timeline`: one line per 100 ms window of due times: its start in seconds, the requests
/// due in it, their p99 and their maximum latency in ms.
fn write_timeline(path: &str, tally: &Tally) {
    const WINDOW_MICROS: u32 = 100_000;
    let mut windows: Vec<Vec<u32>> = Vec::new();
    for (&due, &latency) in tally.due_micros.iter().zip(&tally.micros) {
        let w = (due / WINDOW_MICROS) as usize;
        if windows.len() <= w {
            windows.resize_with(w + 1, Vec::new);
        }
        windows[w].push(latency);
    }
    let mut out = String::from("# seconds requests p99_ms max_ms\n");
    for (w, mut latencies) in windows.into_iter().enumerate() {
        latencies.sort_unstable();
        let n = latencies.len();
        let (p99, max) = match n {
            0 => (0, 0),
            _ => (
                latencies[(n * 99).div_ceil(100).clamp(1, n) - 1],
                latencies[n - 1],
            ),
        };
        out.push_str(&format!(
            "{:.1} {n} {:.3} {:.3}\n",
            w as f64 / 10.0,
            f64::from(p99) / 1000.0,
            f64::from(max) / 1000.0
        ));
    }
    if let Err(e) = std::fs::write(path, out) {
        fail(&format!("--timeline {path}: {e}"));
    }
}

fn report(plan: &Plan, mut tally: Tally, elapsed: Duration) {
    if let Some(path) = &plan.timeline {
        write_timeline(path, &tally);
    }
    tally.micros.sort_unstable();
    let n = tally.micros.len();
    let pct = |p: f64| -> f64 {
        if n == 0 {
            return 0.0;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        f64::from(tally.micros[rank - 1]) / 1000.0
    };
    let achieved = if plan.sequential || plan.closed {
        n as f64 / elapsed.as_secs_f64().max(1e-6)
    } else {
        n as f64 / elapsed.as_secs_f64()
    };
    eprintln!(
        "bench-load: {n} requests measured at {:.0}/s (asked {:.0}/s); p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; {} sent over 1 ms late; {} failed, {} non-2xx",
        achieved,
        plan.rate,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0),
        tally.late,
        tally.failed,
        tally.non_2xx
    );
    println!("{achieved:.1} {:.3} {:.3}", pct(0.50), pct(0.99));
    if tally.failed > 0 || tally.non_2xx > 0 {
        eprintln!(
            "bench-load: first error: {}",
            tally.first_error.unwrap_or_default()
        );
        std::process::exit(1);
    }
}

fn number(flag: &str, v: &str) -> f64 {
    v.parse()
        .unwrap_or_else(|_| fail(&format!("{flag}: not a number: {v:?}")))
}

fn fail(message: &str) -> ! {
    eprintln!("bench-load: {message}");
    std::process::exit(2)
}

/// xorshift64*: enough to spread keys, and no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers each request 5 ms after reading it, and keeps each request's body.
    async fn slow_server() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let authority = listener.local_addr().expect("addr").to_string();
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = bodies.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One whole request: its head, then Content-Length bytes of body.
                        let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
                        let length: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().expect("length"));
                        if buf.len() < head + 4 + length {
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        }
                        let body = String::from_utf8_lossy(&buf[head + 4..head + 4 + length]);
                        seen.lock().expect("bodies").push(body.into_owned());
                        buf.drain(..head + 4 + length);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (authority, bodies)
    }

    #[tokio::test]
    async fn the_closed_loop_sends_once_answered_until_the_end_and_counts_every_request() {
        let (authority, bodies) = slow_server().await;
        let keys: Vec<String> = (0..50).map(|i| format!("key{i}")).collect();
        let plan = Arc::new(Plan {
            uri: format!("http://{authority}/verify").parse().expect("uri"),
            authority: authority.clone(),
            method: Method::POST,
            headers: Vec::new(),
            body: Some(Template::new("{key}")),
            keys: keys.clone(),
            rate: f64::INFINITY,
            sequential: false,
            closed: true,
            timeline: None,
            tick: Duration::from_micros(100),
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
        });
        let (tally, elapsed) = run(plan, 2).await;
        let sent = bodies.lock().expect("bodies").clone();
        // Two connections, one request at a time each, 5 ms an answer, for 0.3 s: at most 60
        // each, and every one sent was measured (no warm-up), none lost or sent after the end.
        assert_eq!(
            tally.micros.len(),
            sent.len(),
            "every request sent is counted"
        );
        assert!(
            (20..=122).contains(&sent.len()),
            "{} requests in 0.3 s on two connections at 5 ms each",
            sent.len()
        );
        assert!(
            tally.micros.iter().all(|&m| m >= 5_000),
            "each waited for its answer"
        );
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2));
        assert!(
            sent.iter().all(|b| keys.contains(b)),
            "each carried a key of the list"
        );
        let distinct: std::collections::HashSet<_> = sent.iter().collect();
        assert!(
            distinct.len() > 5,
            "keys picked at random, not one: {distinct:?}"
        );
        assert_eq!(tally.failed + tally.non_2xx, 0);
    }

    #[tokio::test]
    async fn each_request_is_released_at_its_time_and_each_worker_is_let_go_at_the_end() {
        let start = Instant::now() + Duration::from_secs(60);
        // 1,000 a second for 0.1 s: request k is due at k ms; 4 workers.
        let pacer = Pacer::with(start, 1000.0, Duration::from_millis(100), 4);
        let at = |micros: u64| start + Duration::from_micros(micros);
        pacer.release_due_at(start - Duration::from_millis(1));
        assert_eq!(pacer.due.available_permits(), 0, "nothing before the start");
        pacer.release_due_at(at(0));
        assert_eq!(
            pacer.due.available_permits(),
            1,
            "request 0 is due at the start"
        );
        pacer.release_due_at(at(999));
        assert_eq!(pacer.due.available_permits(), 1, "request 1 is not due yet");
        pacer.release_due_at(at(1000));
        assert_eq!(pacer.due.available_permits(), 2);
        // Released once only, however often it is asked, and in order of time.
        pacer.release_due_at(at(1000));
        pacer.release_due_at(at(500));
        assert_eq!(pacer.due.available_permits(), 2);
        pacer.release_due_at(at(10_500));
        assert_eq!(pacer.due.available_permits(), 11);
        assert!(!pacer.finished());
        pacer.release_due_at(at(99_000));
        assert!(pacer.finished());
        assert_eq!(
            pacer.due.available_permits(),
            100 + 4,
            "all 100, and one per worker"
        );
        pacer.release_due_at(at(500_000));
        assert_eq!(
            pacer.due.available_permits(),
            104,
            "nothing more after the end"
        );
    }

    #[tokio::test]
    async fn a_request_already_due_is_taken_at_once_and_one_not_yet_due_is_waited_for() {
        // The start an hour ahead: only what the test releases is released.
        let start = Instant::now() + Duration::from_secs(3600);
        let pacer = Arc::new(Pacer::with(start, 1000.0, Duration::from_millis(50), 1));
        pacer.release_due_at(start);
        assert_eq!(
            pacer.next().await,
            Some(false),
            "request 0 was due at the start"
        );
        // Request 1 is due 1 ms after the start: a waiting worker gets it when it is released.
        let waiting = tokio::spawn({
            let pacer = pacer.clone();
            async move { pacer.next().await }
        });
        tokio::task::yield_now().await;
        pacer.release_due_at(start + Duration::from_millis(1));
        assert_eq!(waiting.await.expect("worker"), Some(true));
    }
}
