//! `bench-webhooks`: webhook delivery throughput and delay, for `scripts/bench webhooks`.
//!
//! It runs its own receiver on 127.0.0.1 (answers 200 at once, notes when each `webhook-id`
//! arrives), registers it as an endpoint of the account whose admin `--key` it is given, and
//! measures, in one run:
//!
//! - the reference: the receiver's own rate for the same bodies POSTed straight at it, one new
//!   connection per request and `--concurrency` at once (as Keygate's sender works);
//! - throughput: `--events` events published as fast as `--concurrency` clients can, and the
//!   deliveries per second from the first publish to the last arrival;
//! - delay: events published at a constant `--rate` for `--duration` seconds, each timed from
//!   the moment its `POST /api/v1/events` was sent to its arrival at the receiver (p50, p99).
//!
//! Prints `name value` lines on stdout; details on stderr.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

const USAGE: &str = "usage: bench-webhooks --url KEYGATE_BASE --key ADMIN_API_KEY [--events N] [--rate N] [--duration S] [--concurrency N]";

#[derive(Default)]
struct Arrivals {
    first: HashMap<String, Instant>,
    duplicates: u64,
}

struct Args {
    url: String,
    key: String,
    events: usize,
    rate: u64,
    duration: u64,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        key: String::new(),
        events: 5000,
        rate: 200,
        duration: 10,
        concurrency: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--url" => args.url = value.trim_end_matches('/').to_owned(),
            "--key" => args.key = value,
            "--events" => args.events = number()? as usize,
            "--rate" => args.rate = number()?.max(1),
            "--duration" => args.duration = number()?.max(1),
            "--concurrency" => args.concurrency = number()?.max(1) as usize,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.url.is_empty() || args.key.is_empty() {
        return Err("--url and --key are required".into());
    }
    Ok(args)
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    key: &str,
    body: String,
) -> Result<(u16, String), String> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The `"id"` of a JSON answer, without a JSON parser.
fn id_of(json: &str) -> Option<String> {
    let start = json.find("\"id\":\"")? + 6;
    let end = json[start..].find('"')? + start;
    Some(json[start..end].to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn wait_for(
    arrivals: &Mutex<Arrivals>,
    ids: &[String],
    limit: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let missing = {
            let a = arrivals.lock().map_err(|_| "poisoned")?;
            ids.iter().filter(|id| !a.first.contains_key(*id)).count()
        };
        if missing == 0 {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!("{missing} of {} events never arrived", ids.len()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// POSTs a body straight at the receiver, a new connection each time: its ceiling.
async fn direct(addr: std::net::SocketAddr, n: usize, concurrency: usize) -> Result<f64, String> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                let req = Request::post("/direct")
                    .header("host", addr.to_string())
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"type":"order.paid","timestamp":"2026-01-01T00:00:00Z","account_id":"acct_x","data":{"order":1}}"#))
                    .map_err(|e| e.to_string())?;
                let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                resp.into_body().collect().await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn run(args: Args) -> Result<(), String> {
    let arrivals: Arc<Mutex<Arrivals>> = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            let at = Instant::now();
            if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                if let Ok(mut a) = seen.lock() {
                    if a.first.contains_key(id) {
                        a.duplicates += 1;
                    } else {
                        a.first.insert(id.to_owned(), at);
                    }
                }
            }
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let reference = direct(addr, args.events, 64).await?;
    eprintln!("reference: {reference:.0} direct POSTs/s to the receiver");

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let (status, body) = call(
        &client,
        Method::POST,
        &format!("{}/api/v1/webhooks", args.url),
        &args.key,
        format!(r#"{{"url": "http://{addr}/hooks", "events": ["order.*"]}}"#),
    )
    .await?;
    if status != 201 {
        return Err(format!("creating the endpoint: {status} {body}"));
    }

    // Throughput.
    let events_url = format!("{}/api/v1/events", args.url);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, ids, url, key) = (
            client.clone(),
            next.clone(),
            ids.clone(),
            events_url.clone(),
            args.key.clone(),
        );
        let total = args.events;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), String>(());
                }
                let body = format!(r#"{{"type": "order.paid", "data": {{"order": {i}}}}}"#);
                let (status, text) = call(&client, Method::POST, &url, &key, body).await?;
                if status != 202 {
                    return Err(format!("publish: {status} {text}"));
                }
                let id = id_of(&text).ok_or("no id in the answer")?;
                ids.lock().map_err(|_| "poisoned")?.push(id);
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let published_in = started.elapsed();
    let ids: Vec<String> = ids.lock().map_err(|_| "poisoned")?.clone();
    wait_for(&arrivals, &ids, Duration::from_secs(300)).await?;
    let last = {
        let a = arrivals.lock().map_err(|_| "poisoned")?;
        ids.iter().filter_map(|id| a.first.get(id)).max().copied()
    }
    .ok_or("nothing arrived")?;
    let delivered_in = last - started;
    println!("events {}", args.events);
    println!(
        "publish_per_s {:.0}",
        args.events as f64 / published_in.as_secs_f64()
    );
    println!(
        "deliveries_per_s {:.0}",
        args.events as f64 / delivered_in.as_secs_f64()
    );
    println!("reference_direct_per_s {reference:.0}");

    // Delay at a constant rate.
    let count = (args.rate * args.duration) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let sent: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + interval * i as u32;
        let (client, sent, url, key) = (
            client.clone(),
            sent.clone(),
            events_url.clone(),
            args.key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let at = Instant::now();
            let body = format!(r#"{{"type": "order.shipped", "data": {{"order": {i}}}}}"#);
            let (status, text) = call(&client, Method::POST, &url, &key, body).await?;
            if status != 202 {
                return Err(format!("publish: {status} {text}"));
            }
            let id = id_of(&text).ok_or("no id in the answer")?;
            sent.lock().map_err(|_| "poisoned")?.push((id, at));
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let sent: Vec<(String, Instant)> = sent.lock().map_err(|_| "poisoned")?.clone();
    let ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    wait_for(&arrivals, &ids, Duration::from_secs(120)).await?;
    let mut delays: Vec<f64> = {
        let a = arrivals.lock().map_err(|_| "poisoned")?;
        sent.iter()
            .filter_map(|(id, at)| {
                a.first
                    .get(id)
                    .map(|got| got.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    delays.sort_by(|a, b| a.total_cmp(b));
    println!("rate {}", args.rate);
    println!("delay_p50_ms {:.2}", percentile(&delays, 0.50));
    println!("delay_p99_ms {:.2}", percentile(&delays, 0.99));
    let duplicates = arrivals.lock().map_err(|_| "poisoned")?.duplicates;
    println!("duplicates {duplicates}");
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("bench-webhooks: {e}");
        std::process::exit(1);
    }
}
