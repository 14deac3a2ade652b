//! Settings: flags win over `KEYGATE_*` environment variables (clap reads both), which win over
//! the TOML file, which wins over defaults. A wrong setting stops the start with a message
//! naming the setting and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, text otherwise.
    #[default]
    Auto,
    Json,
    Text,
}

#[derive(Args, Clone, Debug)]
pub struct Common {
    /// A TOML file with any of these settings.
    #[arg(long, env = "KEYGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080, or 127.0.0.1:8443 with TLS].
    #[arg(long, env = "KEYGATE_LISTEN")]
    pub listen: Option<String>,
    /// Where the embedded database lives [default: ./data].
    #[arg(long, env = "KEYGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://… to use PostgreSQL instead of the embedded SQLite.
    #[arg(long, env = "KEYGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// redis://… for shared rate limits and revocation across nodes.
    #[arg(long, env = "KEYGATE_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// The prefix of new API keys, e.g. `ak` gives `ak_live_…` [default: ak].
    #[arg(long, env = "KEYGATE_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    #[arg(long, env = "KEYGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// How long auth tokens live, in seconds [default: 3600].
    #[arg(long, env = "KEYGATE_TOKEN_TTL")]
    pub token_ttl: Option<u64>,
    /// RS256 (default) or EdDSA, for signing keys made from now on.
    #[arg(long, env = "KEYGATE_TOKEN_ALGORITHM")]
    pub token_algorithm: Option<String>,
    /// The OAuth issuer: this server's public URL as third parties reach it, e.g.
    /// https://auth.example.com (the `iss` of OAuth access tokens and the base of the URLs in
    /// /.well-known/oauth-authorization-server) [default: the token issuer].
    #[arg(long, env = "KEYGATE_OAUTH_ISSUER")]
    pub oauth_issuer: Option<String>,
    /// How long an OAuth authorization code may wait to be exchanged, in seconds [default: 60].
    #[arg(long, env = "KEYGATE_OAUTH_CODE_TTL")]
    pub oauth_code_ttl: Option<u64>,
    /// How long an OAuth refresh token lasts, in seconds [default: 2592000, 30 days].
    #[arg(long, env = "KEYGATE_OAUTH_REFRESH_TTL")]
    pub oauth_refresh_ttl: Option<u64>,
    /// Who may sign up in the dashboard: open, or invite (invited users only) [default: open].
    #[arg(long, env = "KEYGATE_SIGNUP")]
    pub signup: Option<String>,
    /// The dashboard's address as users reach it, for links in mail, e.g. https://my.example.com
    /// [default: http://<listen address>].
    #[arg(long, env = "KEYGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Mark the dashboard's cookies Secure (set it when users reach Keygate over HTTPS).
    #[arg(
        long,
        env = "KEYGATE_COOKIE_SECURE",
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true
    )]
    pub cookie_secure: Option<bool>,
    /// The product name the dashboard and its mail show [default: Keygate].
    #[arg(long, env = "KEYGATE_BRAND_NAME")]
    pub brand_name: Option<String>,
    /// The SMTP server for the dashboard's mail; without it, mail is written to data_dir/mail.
    #[arg(long, env = "KEYGATE_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// [default: 587 with starttls, 465 with tls, 25 with none].
    #[arg(long, env = "KEYGATE_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    #[arg(long, env = "KEYGATE_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    #[arg(long, env = "KEYGATE_SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<String>,
    /// starttls, tls or none [default: starttls].
    #[arg(long, env = "KEYGATE_SMTP_TLS")]
    pub smtp_tls: Option<String>,
    /// The From of the dashboard's mail, e.g. "Acme <no-reply@acme.example>".
    #[arg(long, env = "KEYGATE_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. Re-read when
    /// the file changes or on SIGHUP.
    #[arg(long, env = "KEYGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "KEYGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a development certificate for localhost, made once in the data dir.
    #[arg(long, env = "KEYGATE_TLS_SELF_SIGNED", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub tls_self_signed: Option<bool>,
    /// Proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For/-Proto are believed.
    #[arg(long, env = "KEYGATE_TRUSTED_PROXIES", value_delimiter = ',', num_args = 1..)]
    pub trusted_proxies: Option<Vec<String>>,
    /// Refuse (403) requests that carry a credential over plain HTTP.
    #[arg(long, env = "KEYGATE_REFUSE_PLAINTEXT_CREDENTIALS", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub refuse_plaintext_credentials: Option<bool>,
    /// Browser origins allowed to call the API (comma-separated; * for any) [default: none].
    #[arg(long, env = "KEYGATE_CORS_ALLOWED_ORIGINS", value_delimiter = ',', num_args = 1..)]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Seconds a request may take before it is answered 503 [default: 30].
    #[arg(long, env = "KEYGATE_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// Seconds a connection may stay without a request before it is closed [default: 60].
    #[arg(long, env = "KEYGATE_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Connections served at once [default: 10000].
    #[arg(long, env = "KEYGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Threads that serve connections, each with its own event loop; 0 serves them on the
    /// shared runtime [default: one per core].
    #[arg(long, env = "KEYGATE_SERVE_THREADS")]
    pub serve_threads: Option<usize>,
    /// The serving threads' nice value, -20 to 19 (Linux): below 0 (which needs CAP_SYS_NICE)
    /// when Keygate shares its cores with the clients it answers [default: the process's].
    #[arg(long, env = "KEYGATE_SERVE_NICE", allow_negative_numbers = true)]
    pub serve_nice: Option<i32>,
    /// Seconds a stopping server waits for in-flight requests [default: 30].
    #[arg(long, env = "KEYGATE_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,
    /// Days audit entries are kept; 0 keeps them for ever [default: 365].
    #[arg(long, env = "KEYGATE_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// Deliver webhooks to private, loopback and link-local addresses too (development only)
    /// [or [webhooks] allow_private].
    #[arg(long, env = "KEYGATE_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: bool,
}

/// The file's shape. Unknown keys are errors: a typo should not silently do nothing.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    redis_url: Option<String>,
    key_prefix: Option<String>,
    default_plan: Option<String>,
    log_format: Option<LogFormat>,
    usage_flush_seconds: Option<u64>,
    /// Base64 of 32 random bytes; prefer the KEYGATE_MASTER_KEY environment variable.
    master_key: Option<String>,
    token_ttl: Option<u64>,
    token_algorithm: Option<String>,
    token_issuer: Option<String>,
    oauth_issuer: Option<String>,
    oauth_code_ttl: Option<u64>,
    oauth_refresh_ttl: Option<u64>,
    /// `[plans.NAME] rate_limit = "100/minute"`, `monthly_credits = 1000`: added to, or
    /// replacing, the default plans.
    #[serde(default)]
    plans: std::collections::BTreeMap<String, PlanConfig>,
    rate_limits: Option<bool>,
    auth_failure_limit: Option<String>,
    /// `"GET /api/v1/reports" = 5`: credits a call costs (`*` for any method).
    #[serde(default)]
    costs: std::collections::BTreeMap<String, u64>,
    gateway: Option<GatewayFile>,
    key_cache_capacity: Option<u64>,
    key_cache_ttl_seconds: Option<u64>,
    /// The dashboard: `open` or `invite`.
    signup: Option<String>,
    public_url: Option<String>,
    cookie_secure: Option<bool>,
    brand_name: Option<String>,
    /// How long a dashboard login lasts.
    session_ttl_seconds: Option<u64>,
    /// Dashboard login attempts per email address and client address, e.g. "5/minute".
    login_limit: Option<String>,
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    smtp_username: Option<String>,
    /// Prefer the KEYGATE_SMTP_PASSWORD environment variable.
    smtp_password: Option<String>,
    smtp_tls: Option<String>,
    mail_from: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_self_signed: Option<bool>,
    trusted_proxies: Option<Vec<String>>,
    refuse_plaintext_credentials: Option<bool>,
    cors_allowed_origins: Option<Vec<String>>,
    request_timeout: Option<u64>,
    idle_timeout: Option<u64>,
    max_connections: Option<usize>,
    serve_threads: Option<usize>,
    serve_nice: Option<i32>,
    shutdown_timeout: Option<u64>,
    audit_retention_days: Option<u32>,
    /// `credits.low` fires below this balance [default: a tenth of the plan's monthly credits].
    credits_low_threshold: Option<u64>,
    webhooks: Option<WebhooksFile>,
}

/// `[webhooks]`: delivery settings.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct WebhooksFile {
    allow_private: Option<bool>,
    timeout_seconds: Option<u64>,
    lease_seconds: Option<u64>,
    concurrency: Option<usize>,
    poll_interval_ms: Option<u64>,
    disable_after_hours: Option<u64>,
    retention_days: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PlanConfig {
    rate_limit: String,
    monthly_credits: Option<u64>,
}

/// `[gateway]`: the upstream, where to listen, and per-route scopes and costs.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    upstream: Option<String>,
    listen: Option<String>,
    timeout_seconds: Option<u64>,
    #[serde(default)]
    admin_prefixes: Vec<String>,
    #[serde(default)]
    routes: Vec<RouteFile>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    prefix: String,
    methods: Option<Vec<String>>,
    scope: Option<String>,
    #[serde(default)]
    cost: u64,
}

pub struct Settings {
    pub server: keygate_server::Config,
    pub log_format: LogFormat,
    /// The listen address given by flag or environment, if any (the gateway reads it too).
    pub listen_flag: Option<SocketAddr>,
    pub gateway: GatewayFile,
}

impl Settings {
    /// Whether the file's `[gateway]` names an upstream (so `config check` validates it).
    pub fn has_gateway_upstream(&self) -> bool {
        self.gateway.upstream.is_some()
    }

    /// The gateway's settings: flags, then `[gateway]`, then defaults.
    pub fn gateway_config(
        &self,
        upstream_flag: Option<String>,
    ) -> anyhow::Result<keygate_server::gateway::GatewayConfig> {
        use keygate_server::gateway::{GatewayConfig, RouteRule};
        let g = &self.gateway;
        let upstream = upstream_flag
            .or_else(|| g.upstream.clone())
            .ok_or_else(|| {
                anyhow::anyhow!("gateway: --upstream (or [gateway] upstream) is required")
            })?;
        let uri: axum_http::Uri = upstream.parse().map_err(|_| {
            anyhow::anyhow!(
                "gateway upstream: expected a URL such as http://127.0.0.1:9000, got {upstream:?}"
            )
        })?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http") && uri.authority().is_some(),
            "gateway upstream: expected http://host:port[/base], got {upstream:?}"
        );
        let mut cfg = GatewayConfig::new(uri);
        cfg.listen = match (self.listen_flag, &g.listen) {
            (Some(l), _) => l,
            (None, Some(l)) => l.parse().map_err(|_| {
                anyhow::anyhow!(
                    "[gateway] listen: expected an address such as 127.0.0.1:8081, got {l:?}"
                )
            })?,
            (None, None) => cfg.listen,
        };
        if let Some(t) = g.timeout_seconds {
            anyhow::ensure!(
                (1..=600).contains(&t),
                "[gateway] timeout_seconds: expected 1 to 600, got {t}"
            );
            cfg.timeout = Duration::from_secs(t);
        }
        cfg.admin_prefixes = g.admin_prefixes.clone();
        for (i, r) in g.routes.iter().enumerate() {
            anyhow::ensure!(
                r.prefix.starts_with('/'),
                "[[gateway.routes]] #{}: prefix must start with /",
                i + 1
            );
            let methods = match &r.methods {
                None => None,
                Some(ms) if ms.iter().any(|m| m == "*") => None,
                Some(ms) => Some(
                    ms.iter()
                        .map(|m| {
                            m.to_ascii_uppercase().parse().map_err(|_| {
                                anyhow::anyhow!("[[gateway.routes]] #{}: bad method {m:?}", i + 1)
                            })
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?,
                ),
            };
            let scope = match &r.scope {
                None => None,
                Some(s) => Some(s.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "[[gateway.routes]] #{}: scope must be read, write or admin, got {s:?}",
                        i + 1
                    )
                })?),
            };
            cfg.routes.push(RouteRule {
                prefix: r.prefix.clone(),
                methods,
                scope,
                cost: r.cost,
            });
        }
        Ok(cfg)
    }
}

/// `--tls-cert` for `tls_cert`, and its environment variable: how a setting's error names it.
fn flag_origin(key: &str) -> String {
    format!(
        "--{} (or KEYGATE_{})",
        key.replace('_', "-"),
        key.to_ascii_uppercase()
    )
}

/// The flag's (or environment's) value, else the file's, with where it came from.
fn pick<T>(
    flag: Option<T>,
    file: Option<T>,
    key: &str,
    path: Option<&Path>,
) -> Option<(T, String)> {
    match (flag, file) {
        (Some(v), _) => Some((v, flag_origin(key))),
        (None, Some(v)) => Some((
            v,
            match path {
                Some(p) => format!("{key} (in {})", p.display()),
                None => key.to_owned(),
            },
        )),
        (None, None) => None,
    }
}

type Picked<T> = Option<(T, String)>;

/// TLS from files, or self-signed, or off; a half-given pair or both at once is an error.
fn resolve_tls(
    cert: Picked<PathBuf>,
    key: Picked<PathBuf>,
    self_signed: Picked<bool>,
) -> anyhow::Result<Option<keygate_server::tls::TlsSource>> {
    use keygate_server::tls::TlsSource;
    let self_signed = self_signed.filter(|(on, _)| *on);
    match (cert, key, self_signed) {
        (None, None, None) => Ok(None),
        (None, None, Some(_)) => Ok(Some(TlsSource::SelfSigned)),
        (Some((cert, _)), Some((key, _)), None) => Ok(Some(TlsSource::Files { cert, key })),
        (Some((_, origin)), None, None) => anyhow::bail!(
            "{origin} is set but its private key is not: expected tls_key (--tls-key or KEYGATE_TLS_KEY) too"
        ),
        (None, Some((_, origin)), None) => anyhow::bail!(
            "{origin} is set but its certificate is not: expected tls_cert (--tls-cert or KEYGATE_TLS_CERT) too"
        ),
        (_, _, Some((_, origin))) => anyhow::bail!(
            "{origin} and tls_cert/tls_key are both set: expected one way to get a certificate"
        ),
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "in the config file {}: {}",
            path.display(),
            e.to_string().trim()
        )
    })
}

impl Common {
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let from_file = |what: &str| match &self.config {
            Some(p) => format!("{what} (from {})", p.display()),
            None => what.to_owned(),
        };
        let cfg = self.config.as_deref();
        let listen_flag = match &self.listen {
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                anyhow::anyhow!(
                    "{}: expected an address such as 127.0.0.1:8080, got {s:?}",
                    flag_origin("listen")
                )
            })?),
            None => None,
        };
        let tls = resolve_tls(
            pick(self.tls_cert, file.tls_cert, "tls_cert", cfg),
            pick(self.tls_key, file.tls_key, "tls_key", cfg),
            pick(
                self.tls_self_signed,
                file.tls_self_signed,
                "tls_self_signed",
                cfg,
            ),
        )?;
        let listen = match (listen_flag, &file.listen) {
            (Some(l), _) => l,
            (None, Some(s)) => s.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: expected an address such as 127.0.0.1:8080, got {s:?}",
                    from_file("listen")
                )
            })?,
            // The seeds' APIs are HTTPS on 8443.
            (None, None) if tls.is_some() => SocketAddr::from(([127, 0, 0, 1], 8443)),
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("data"));
        if let Some(keygate_server::tls::TlsSource::Files { cert, key }) = &tls {
            // A certificate that cannot be served stops the start here, not at the first
            // handshake.
            keygate_server::tls::load_certified_key(cert, key)?;
        }
        let mut server = keygate_server::Config::with_data_dir(data_dir);
        server.listen = listen;
        server.tls = tls;
        if let Some((list, origin)) = pick(
            self.trusted_proxies,
            file.trusted_proxies,
            "trusted_proxies",
            cfg,
        ) {
            server.trusted_proxies = list
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| keygate_server::http::client::parse_cidr(s))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        }
        if let Some((on, _)) = pick(
            self.refuse_plaintext_credentials,
            file.refuse_plaintext_credentials,
            "refuse_plaintext_credentials",
            cfg,
        ) {
            server.refuse_plaintext_credentials = on;
        }
        if let Some((list, origin)) = pick(
            self.cors_allowed_origins,
            file.cors_allowed_origins,
            "cors_allowed_origins",
            cfg,
        ) {
            let list: Vec<String> = list
                .into_iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect();
            for o in &list {
                keygate_server::http::security::validate_origin(o)
                    .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
            }
            server.cors_allowed_origins = list;
        }
        let seconds = |value: Option<(u64, String)>, range: std::ops::RangeInclusive<u64>| {
            value
                .map(|(v, origin)| {
                    anyhow::ensure!(
                        range.contains(&v),
                        "{origin}: expected {} to {} seconds, got {v}",
                        range.start(),
                        range.end()
                    );
                    Ok(Duration::from_secs(v))
                })
                .transpose()
        };
        if let Some(d) = seconds(
            pick(
                self.request_timeout,
                file.request_timeout,
                "request_timeout",
                cfg,
            ),
            1..=3600,
        )? {
            server.request_timeout = d;
        }
        if let Some(d) = seconds(
            pick(self.idle_timeout, file.idle_timeout, "idle_timeout", cfg),
            1..=3600,
        )? {
            server.idle_timeout = d;
        }
        if let Some(d) = seconds(
            pick(
                self.shutdown_timeout,
                file.shutdown_timeout,
                "shutdown_timeout",
                cfg,
            ),
            1..=3600,
        )? {
            server.shutdown_timeout = d;
        }
        if let Some((n, origin)) = pick(
            self.max_connections,
            file.max_connections,
            "max_connections",
            cfg,
        ) {
            anyhow::ensure!(
                (1..=1_000_000).contains(&n),
                "{origin}: expected 1 to 1000000 connections, got {n}"
            );
            server.max_connections = n;
        }
        if let Some((n, origin)) =
            pick(self.serve_threads, file.serve_threads, "serve_threads", cfg)
        {
            anyhow::ensure!(
                n <= 1024,
                "{origin}: expected 0 (the shared runtime) to 1024 serving threads, got {n}"
            );
            server.serve_threads = n;
        }
        if let Some((n, origin)) = pick(self.serve_nice, file.serve_nice, "serve_nice", cfg) {
            anyhow::ensure!(
                (-20..=19).contains(&n),
                "{origin}: expected a nice value from -20 to 19, got {n}"
            );
            server.serve_nice = Some(n);
        }
        if let Some((days, origin)) = pick(
            self.audit_retention_days,
            file.audit_retention_days,
            "audit_retention_days",
            cfg,
        ) {
            anyhow::ensure!(
                days <= 36_500,
                "{origin}: expected 0 (for ever) to 36500 days, got {days}"
            );
            server.audit_retention_days = days;
        }
        server.database_url = self
            .database_url
            .or(file.database_url)
            .filter(|s| !s.is_empty());
        server.redis_url = self.redis_url.or(file.redis_url).filter(|s| !s.is_empty());
        if let Some(prefix) = self.key_prefix.or(file.key_prefix) {
            keygate_core::key::validate_prefix(&prefix).map_err(|e| {
                anyhow::anyhow!(
                    "key_prefix ({}): {e}; got {prefix:?}",
                    "--key-prefix, KEYGATE_KEY_PREFIX or the file"
                )
            })?;
            server.key_prefix = prefix;
        }
        if let Some(plan) = file.default_plan {
            server.default_plan = plan;
        }
        if let Some(secs) = file.usage_flush_seconds {
            anyhow::ensure!(
                secs > 0,
                "{}: must be at least 1",
                from_file("usage_flush_seconds")
            );
            server.usage_flush_interval = Duration::from_secs(secs);
        }
        if let Some(n) = file.key_cache_capacity {
            server.key_cache_capacity = n;
        }
        if let Some(secs) = file.key_cache_ttl_seconds {
            server.key_cache_ttl = Duration::from_secs(secs.max(1));
        }
        server.master_key = std::env::var("KEYGATE_MASTER_KEY")
            .ok()
            .filter(|s| !s.is_empty())
            .or(file.master_key);
        if let Some((ttl, origin)) = pick(self.token_ttl, file.token_ttl, "token_ttl", cfg) {
            anyhow::ensure!(
                (60..=30 * 86_400).contains(&ttl),
                "{origin}: expected 60 to 2592000 seconds, got {ttl}"
            );
            server.token_ttl = Duration::from_secs(ttl);
        }
        if let Some((alg, origin)) = pick(
            self.token_algorithm,
            file.token_algorithm,
            "token_algorithm",
            cfg,
        ) {
            server.token_algorithm = match alg.to_ascii_lowercase().as_str() {
                "rs256" => keygate_token::Algorithm::Rs256,
                "eddsa" | "ed25519" => keygate_token::Algorithm::EdDsa,
                _ => anyhow::bail!("{origin}: expected RS256 or EdDSA, got {alg:?}"),
            };
        }
        if let Some(iss) = file.token_issuer {
            server.token_issuer = iss;
        }
        if let Some(iss) = self.oauth_issuer.or(file.oauth_issuer) {
            anyhow::ensure!(
                iss.starts_with("https://") || iss.starts_with("http://"),
                "oauth_issuer: expected an https:// URL, got {iss:?}"
            );
            server.oauth_issuer = Some(iss.trim_end_matches('/').to_owned());
        }
        if let Some(ttl) = self.oauth_code_ttl.or(file.oauth_code_ttl) {
            anyhow::ensure!(
                (1..=600).contains(&ttl),
                "oauth_code_ttl: expected 1 to 600 seconds, got {ttl}"
            );
            server.oauth_code_ttl = Duration::from_secs(ttl);
        }
        if let Some(ttl) = self.oauth_refresh_ttl.or(file.oauth_refresh_ttl) {
            anyhow::ensure!(
                (60..=365 * 86_400).contains(&ttl),
                "oauth_refresh_ttl: expected 60 to 31536000 seconds, got {ttl}"
            );
            server.oauth_refresh_ttl = Duration::from_secs(ttl);
        }
        for (name, plan) in file.plans {
            let plan_name_ok = (1..=32).contains(&name.len())
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            anyhow::ensure!(
                plan_name_ok,
                "{}: plan names are 1 to 32 of a-z, 0-9, _ and -",
                from_file(&format!("plans.{name}"))
            );
            let rate_limit = plan
                .rate_limit
                .parse::<keygate_core::gcra::Quota>()
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {e}; got {:?}",
                        from_file(&format!("plans.{name}.rate_limit")),
                        plan.rate_limit
                    )
                })?;
            server.plans.insert(
                name,
                keygate_server::state::Plan {
                    rate_limit,
                    monthly_credits: plan.monthly_credits,
                },
            );
        }
        anyhow::ensure!(
            server.plans.contains_key(&server.default_plan),
            "{}: no plan named {:?} is defined",
            from_file("default_plan"),
            server.default_plan
        );
        if let Some(on) = file.rate_limits {
            server.rate_limits_enabled = on;
        }
        if let Some(q) = file.auth_failure_limit {
            server.auth_failure_limit = q.parse().map_err(|e| {
                anyhow::anyhow!("{}: {e}; got {q:?}", from_file("auth_failure_limit"))
            })?;
        }
        server.credits_low_threshold = file.credits_low_threshold;
        let hooks = file.webhooks.unwrap_or_default();
        server.webhooks_allow_private =
            self.webhooks_allow_private || hooks.allow_private.unwrap_or(false);
        if let Some(secs) = hooks.timeout_seconds {
            anyhow::ensure!(
                (1..=300).contains(&secs),
                "{}: expected 1 to 300 seconds, got {secs}",
                from_file("webhooks.timeout_seconds")
            );
            server.webhook_timeout = Duration::from_secs(secs);
        }
        server.webhook_lease = match hooks.lease_seconds {
            Some(secs) => Duration::from_secs(secs),
            None => (server.webhook_timeout * 2).max(server.webhook_lease),
        };
        anyhow::ensure!(
            server.webhook_lease > server.webhook_timeout,
            "{}: must be longer than webhooks.timeout_seconds ({} s), got {} s",
            from_file("webhooks.lease_seconds"),
            server.webhook_timeout.as_secs(),
            server.webhook_lease.as_secs()
        );
        if let Some(n) = hooks.concurrency {
            anyhow::ensure!(
                (1..=10_000).contains(&n),
                "{}: expected 1 to 10000, got {n}",
                from_file("webhooks.concurrency")
            );
            server.webhook_concurrency = n;
        }
        if let Some(ms) = hooks.poll_interval_ms {
            anyhow::ensure!(
                (10..=60_000).contains(&ms),
                "{}: expected 10 to 60000 ms, got {ms}",
                from_file("webhooks.poll_interval_ms")
            );
            server.webhook_poll_interval = Duration::from_millis(ms);
        }
        if let Some(hours) = hooks.disable_after_hours {
            anyhow::ensure!(
                hours >= 1,
                "{}: expected at least 1 hour",
                from_file("webhooks.disable_after_hours")
            );
            server.webhook_disable_after = Duration::from_secs(hours * 3600);
        }
        if let Some(days) = hooks.retention_days {
            anyhow::ensure!(
                days >= 1,
                "{}: expected at least 1 day",
                from_file("webhooks.retention_days")
            );
            server.webhook_retention = Duration::from_secs(days * 86_400);
        }
        for (route, cost) in file.costs {
            let (method, prefix) = route
                .split_once(' ')
                .filter(|(m, p)| !m.is_empty() && p.starts_with('/'))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: expected \"METHOD /path/prefix\"",
                        from_file(&format!("costs.{route:?}"))
                    )
                })?;
            server
                .route_costs
                .push((method.to_owned(), prefix.to_owned(), cost));
        }
        if let Some(mode) = self.signup.or(file.signup) {
            server.dashboard.signup = keygate_server::dashboard::SignupMode::parse(&mode)
                .ok_or_else(|| anyhow::anyhow!("signup: expected open or invite, got {mode:?}"))?;
        }
        if let Some(url) = self
            .public_url
            .or(file.public_url)
            .filter(|u| !u.is_empty())
        {
            anyhow::ensure!(
                (url.starts_with("http://") || url.starts_with("https://"))
                    && url.parse::<axum_http::Uri>().is_ok(),
                "public_url: expected http(s)://host[:port][/path], got {url:?}"
            );
            server.dashboard.public_url = Some(url);
        }
        if let Some(on) = self.cookie_secure.or(file.cookie_secure) {
            server.dashboard.cookie_secure = on;
        }
        if let Some(name) = self
            .brand_name
            .or(file.brand_name)
            .filter(|n| !n.trim().is_empty())
        {
            server.dashboard.brand = name.trim().to_owned();
        }
        if let Some(secs) = file.session_ttl_seconds {
            anyhow::ensure!(
                (60..=90 * 86_400).contains(&secs),
                "{}: expected 60 to 7776000",
                from_file("session_ttl_seconds")
            );
            server.dashboard.session_ttl = Duration::from_secs(secs);
        }
        if let Some(q) = file.login_limit {
            server.dashboard.login_limit = q
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: {e}; got {q:?}", from_file("login_limit")))?;
        }
        if let Some(from) = self.mail_from.or(file.mail_from).filter(|f| !f.is_empty()) {
            server.mail.from = from;
        }
        if let Some(host) = self.smtp_host.or(file.smtp_host).filter(|h| !h.is_empty()) {
            let tls = match self.smtp_tls.or(file.smtp_tls) {
                Some(t) => keygate_server::mailer::SmtpTls::parse(&t).ok_or_else(|| {
                    anyhow::anyhow!("smtp_tls: expected starttls, tls or none, got {t:?}")
                })?,
                None => keygate_server::mailer::SmtpTls::Starttls,
            };
            server.mail.smtp = Some(keygate_server::mailer::SmtpConfig {
                host,
                port: self.smtp_port.or(file.smtp_port),
                username: self.smtp_username.or(file.smtp_username),
                password: self.smtp_password.or(file.smtp_password),
                tls,
            });
        }
        if let Some(url) = &server.database_url {
            anyhow::ensure!(
                url.starts_with("postgres://")
                    || url.starts_with("postgresql://")
                    || url.starts_with("sqlite:"),
                "database_url (--database-url, KEYGATE_DATABASE_URL or the config file): expected postgres://… or sqlite:…"
            );
        }
        Ok(Settings {
            server,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            listen_flag,
            gateway: file.gateway.unwrap_or_default(),
        })
    }
}
