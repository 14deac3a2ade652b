//! `bench-upstream`: the bare upstream of `scripts/bench gateway`. Every request gets an empty
//! 200, whatever its method and path: the ceiling the gateways are measured against.
//!
//! Usage: bench-upstream [--listen ADDR] (default 127.0.0.1:0); prints the bound address on
//! stdout, then serves until killed.

use std::io::Write;
use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::Router;

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--listen", Some(v)) => match v.parse() {
                Ok(a) => listen = a,
                Err(_) => fail(&format!("--listen: not an address: {v:?}")),
            },
            _ => fail("usage: bench-upstream [--listen ADDR]"),
        }
    }
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => fail(&format!("listening on {listen}: {e}")),
    };
    if let Ok(addr) = listener.local_addr() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{addr}");
        let _ = out.flush();
    }
    let app = Router::new().fallback(|| async { StatusCode::OK });
    if let Err(e) = axum::serve(listener, app).await {
        fail(&format!("serving: {e}"));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("bench-upstream: {message}");
    std::process::exit(2)
}
