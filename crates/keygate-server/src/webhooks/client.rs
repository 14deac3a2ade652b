//! Sends one delivery attempt to a receiver, safely.
//!
//! Receivers are URLs our users type in, so the sender treats them as hostile: the URL is parsed
//! strictly ([`keygate_core::webhook::check_url`]), the host is resolved here and every address
//! is checked *after* resolution ([`keygate_core::webhook::is_forbidden_destination`]), and the
//! connection goes to one of the checked addresses itself, so a name that resolves to a public
//! address at one moment and to `127.0.0.1` the next (DNS rebinding) cannot slip through. There
//! is no proxy, no redirect is followed (a 3xx is a failed attempt), the whole exchange has a
//! deadline and only the first bytes of a response are read.
//!
//! One connection per attempt: deliveries to one receiver are spread out in time, and a fresh
//! connection is the one that was checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt as _;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper_util::rt::TokioIo;
use keygate_core::webhook::{self, Host, ParsedDestination, Scheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// The most of a response body kept for the attempts log.
pub const EXCERPT_BYTES: usize = 1024;

/// What one attempt came to.
#[derive(Debug)]
pub struct Outcome {
    /// The receiver's status; `None` when no response came.
    pub status: Option<u16>,
    /// `Retry-After`, as sent.
    pub retry_after: Option<String>,
    /// Why no response came (or none was accepted): refused destination, timeout, TLS, I/O.
    pub error: Option<String>,
    pub excerpt: String,
    pub latency: Duration,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("invalid URL: {0}")]
    Url(#[from] webhook::UrlError),
    #[error("{0} resolves only to private, loopback or link-local addresses; refused (the server allows them with --webhooks-allow-private)")]
    Forbidden(String),
    #[error("could not resolve {0}")]
    Resolve(String),
    #[error("could not connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("the request could not be built")]
    Request,
}

pub struct Sender {
    tls: tokio_rustls::TlsConnector,
    allow_private: bool,
    timeout: Duration,
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Sender {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            allow_private,
            timeout,
        })
    }

    /// POSTs `body` to `url` with `headers`, within the sender's deadline.
    pub async fn send(
        &self,
        url: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Outcome {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.exchange(url, headers, body)).await;
        let latency = started.elapsed();
        match result {
            Ok(Ok((status, retry_after, excerpt))) => Outcome {
                status: Some(status),
                retry_after,
                error: None,
                excerpt,
                latency,
            },
            Ok(Err(err)) => Outcome {
                status: None,
                retry_after: None,
                error: Some(err.to_string()),
                excerpt: String::new(),
                latency,
            },
            Err(_) => Outcome {
                status: None,
                retry_after: None,
                error: Some(format!(
                    "no complete response within {} ms",
                    self.timeout.as_millis()
                )),
                excerpt: String::new(),
                latency,
            },
        }
    }

    async fn exchange(
        &self,
        url: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<(u16, Option<String>, String), SendError> {
        let dest = webhook::check_url(url)?;
        let addrs = self.resolve(&dest).await?;
        let stream = connect(&addrs).await?;
        match dest.scheme {
            Scheme::Http => post(stream, &dest, headers, body).await,
            Scheme::Https => {
                let name = match &dest.host {
                    Host::Domain(d) => rustls::pki_types::ServerName::try_from(d.clone())
                        .map_err(|_| SendError::Resolve(d.clone()))?,
                    Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
                };
                let tls = self
                    .tls
                    .connect(name, stream)
                    .await
                    .map_err(SendError::Tls)?;
                post(tls, &dest, headers, body).await
            }
        }
    }

    /// The addresses the destination may be reached at: every resolved address that is not
    /// private, loopback or link-local (all of them with `allow_private`).
    async fn resolve(&self, dest: &ParsedDestination) -> Result<Vec<SocketAddr>, SendError> {
        let (shown, resolved) = match &dest.host {
            Host::Ip(ip) => (ip.to_string(), vec![SocketAddr::new(*ip, dest.port)]),
            Host::Domain(name) => {
                let found = tokio::net::lookup_host((name.as_str(), dest.port))
                    .await
                    .map_err(|_| SendError::Resolve(name.clone()))?
                    .collect::<Vec<_>>();
                if found.is_empty() {
                    return Err(SendError::Resolve(name.clone()));
                }
                (name.clone(), found)
            }
        };
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|a| self.allow_private || !webhook::is_forbidden_destination(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(SendError::Forbidden(shown));
        }
        Ok(allowed)
    }
}

async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, SendError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(SendError::Connect(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
    })))
}

async fn post<S>(
    stream: S,
    dest: &ParsedDestination,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
) -> Result<(u16, Option<String>, String), SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends when the exchange is over and `sender` is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::post(dest.path.as_str())
        .header(HOST, dest.authority())
        .header(CONTENT_TYPE, "application/json")
        .header(
            USER_AGENT,
            concat!("Keygate-Webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .body(Body::from(body))
        .map_err(|_| SendError::Request)?;
    request.headers_mut().extend(headers);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = EXCERPT_BYTES - excerpt.len();
                    excerpt.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            // A body cut short still leaves the status, which decides the attempt.
            Some(Err(_)) | None => break,
        }
    }
    Ok((
        status,
        retry_after,
        String::from_utf8_lossy(&excerpt).into_owned(),
    ))
}
