//! TLS: the certificate the server presents, read from PEM files or made on first start as a
//! self-signed development certificate, and swapped in place when its files change or on
//! SIGHUP. A renewed certificate needs no restart and drops no connection: connections keep the
//! session they negotiated, new handshakes get the new certificate.
//!
//! rustls runs on the aws-lc-rs provider, the one the token code already uses, so no second
//! cryptography library is built. ALPN offers HTTP/2 and HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// Where the server's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsSource {
    /// A PEM certificate chain (leaf first) and its PEM private key.
    Files { cert: PathBuf, key: PathBuf },
    /// A development certificate for localhost, made once in the data dir and reused.
    SelfSigned,
}

/// How often the certificate files are checked for a change.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A self-signed certificate is made again when its files are older than this (it is valid
/// for a year).
const SELF_SIGNED_RENEW_AFTER: Duration = Duration::from_secs(300 * 86_400);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The files of the self-signed certificate in `data_dir`.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("self-signed.crt"), dir.join("self-signed.key"))
}

/// The certificate and key files to serve: the given ones, or the self-signed pair, made (or
/// renewed) here when missing or old.
pub fn resolve_files(source: &TlsSource, data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    match source {
        TlsSource::Files { cert, key } => Ok((cert.clone(), key.clone())),
        TlsSource::SelfSigned => {
            let (cert, key) = self_signed_paths(data_dir);
            let fresh = std::fs::metadata(&cert)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < SELF_SIGNED_RENEW_AFTER);
            if !(fresh && key.exists() && load_certified_key(&cert, &key).is_ok()) {
                make_self_signed(&cert, &key)?;
            }
            Ok((cert, key))
        }
    }
}

/// Writes a certificate for `localhost`, `127.0.0.1` and `::1`, valid for a year; the key file
/// is readable by its owner only.
fn make_self_signed(cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let mut params = rcgen::CertificateParams::new(names).context("self-signed certificate")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Keygate development certificate");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let key_pair = rcgen::KeyPair::generate().context("generating the self-signed key")?;
    let cert = params
        .self_signed(&key_pair)
        .context("signing the self-signed certificate")?;
    write_private(key_path, key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    tracing::info!(cert = %cert_path.display(), "made a self-signed TLS certificate for localhost");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads and checks a certificate chain and its key: the key must be the certificate's.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls_cert: reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "tls_cert: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls_cert: {} holds no PEM certificate",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "tls_key: {} is not a readable PEM private key",
            key.display()
        )
    })?;
    CertifiedKey::from_der(chain, private, &provider()).map_err(|e| {
        anyhow::anyhow!(
            "tls_key: {} does not fit the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })
}

/// The certificate in use, replaced whole when the files change. Handshakes read it under a
/// read lock held for a pointer copy.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl ReloadingCert {
    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = load_certified_key(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    fn stamp(&self) -> Option<(SystemTime, SystemTime, u64)> {
        let cert = std::fs::metadata(&self.cert_path).ok()?;
        let key = std::fs::metadata(&self.key_path).ok()?;
        Some((
            cert.modified().ok()?,
            key.modified().ok()?,
            cert.len() + key.len(),
        ))
    }
}

/// What a TLS listener needs: the acceptor, and the certificate it resolves through.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub cert: Arc<ReloadingCert>,
}

impl Tls {
    /// Loads the certificate (making the self-signed one if asked) and builds the acceptor.
    pub fn load(source: &TlsSource, data_dir: &Path) -> anyhow::Result<Tls> {
        let (cert_path, key_path) = resolve_files(source, data_dir)?;
        let first = load_certified_key(&cert_path, &key_path)?;
        let cert = Arc::new(ReloadingCert {
            cert_path,
            key_path,
            current: RwLock::new(Arc::new(first)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            cert,
        })
    }
}

/// Re-reads the certificate when its files change (checked every two seconds) or on SIGHUP,
/// until the server stops. A change half written (a new certificate whose key is not there yet)
/// fails to load and keeps the old certificate; writing the key changes the files again, which
/// triggers the next attempt.
pub async fn watch_certificate(cert: Arc<ReloadingCert>, mut stopped: watch::Receiver<bool>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = cert.stamp();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = {
            let _ = &mut hangup;
            std::future::pending::<()>()
        };
        let forced = tokio::select! {
            _ = tick.tick() => false,
            _ = sighup => true,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let stamp = cert.stamp();
        if !forced && stamp == seen {
            continue;
        }
        seen = stamp;
        match cert.reload() {
            Ok(()) => {
                tracing::info!(cert = %cert.cert_path.display(), "TLS certificate reloaded");
            }
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "TLS certificate not reloaded; the previous one stays in use");
            }
        }
    }
}
