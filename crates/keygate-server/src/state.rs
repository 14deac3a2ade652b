//! The state every handler shares: the store, the resolved configuration, the key cache and the
//! usage recorder. It is cheap to clone (one `Arc`).

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keygate_store::Store;

use crate::cache::Caches;
use crate::revocation::FeedCursor;
use crate::tokens::{load_master_key, TokenService};
use crate::usage::UsageRecorder;

/// A plan: the account-wide rate limit and the monthly credit allowance.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub rate_limit: keygate_core::gcra::Quota,
    /// Credits the balance is topped up to at the start of each month (UTC); `None`: none.
    pub monthly_credits: Option<u64>,
}

/// The plans of DESIGN.md, which cover the seeds: 002's free and pro, 003's hourly tiers.
pub fn default_plans() -> std::collections::BTreeMap<String, Plan> {
    [
        ("free", "100/minute", 1_000),
        ("pro", "1000/minute", 10_000),
        ("starter", "100/hour", 1_000),
        ("growth", "500/hour", 5_000),
        ("scale", "2000/hour", 20_000),
        ("enterprise", "10000/hour", 100_000),
    ]
    .into_iter()
    .filter_map(|(name, limit, credits)| {
        let rate_limit = keygate_core::gcra::Quota::parse(limit).ok()?;
        Some((
            name.to_owned(),
            Plan {
                rate_limit,
                monthly_credits: Some(credits),
            },
        ))
    })
    .collect()
}

/// The server's settings, resolved from flags, environment and file by the binary.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: std::net::SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: the embedded SQLite file `keygate.db` in `data_dir`.
    pub database_url: Option<String>,
    /// Accepted now; the multi-node rate limiter and event bus use it.
    pub redis_url: Option<String>,
    pub key_prefix: String,
    pub default_plan: String,
    /// How often batched usage counts and `last_used_at` are written.
    pub usage_flush_interval: Duration,
    pub key_cache_capacity: u64,
    /// A cached key is re-read after this long even without an invalidation; it bounds how
    /// stale another node's change can look when no Redis carries invalidations.
    pub key_cache_ttl: Duration,
    /// Base64 of 32 bytes. `None`: the file `master.key` in `data_dir`, created on first start.
    /// Nodes sharing a database must share it.
    pub master_key: Option<String>,
    pub token_ttl: Duration,
    pub token_algorithm: keygate_token::Algorithm,
    /// The `iss` of every token.
    pub token_issuer: String,
    /// The OAuth authorization server's issuer identifier (RFC 8414): the `iss` of OAuth access
    /// tokens and the base of the endpoint URLs in its metadata, e.g. `https://auth.example.com`.
    /// `None`: the token issuer when it is a URL, else the address requests come to.
    pub oauth_issuer: Option<String>,
    /// How long an authorization code may wait to be exchanged (RFC 6749 §4.1.2: short).
    pub oauth_code_ttl: Duration,
    /// How long an OAuth refresh token lasts; each use gives a new one of the same lifetime.
    pub oauth_refresh_ttl: Duration,
    pub plans: std::collections::BTreeMap<String, Plan>,
    /// Off: no request is limited (for measuring the limiter's cost).
    pub rate_limits_enabled: bool,
    /// Failed authentications allowed per client address before it gets 429s.
    pub auth_failure_limit: keygate_core::gcra::Quota,
    /// Credits a call costs, by `"METHOD /path/prefix"` (the longest matching prefix wins).
    pub route_costs: Vec<(String, String, u64)>,
    /// The developer dashboard: sign-up mode, links, cookies, sessions, login throttling.
    pub dashboard: crate::dashboard::DashboardConfig,
    /// Where the dashboard's mail goes: SMTP, or files under `data_dir/mail`.
    pub mail: crate::mailer::MailConfig,
    /// `Some`: the listener speaks TLS (HTTP/2 and HTTP/1.1) with this certificate.
    pub tls: Option<crate::tls::TlsSource>,
    /// Peers whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed (see `http::client`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Refuse (403) a request that carries a credential over plain HTTP.
    pub refuse_plaintext_credentials: bool,
    /// Origins allowed to call the API from a browser (`*` for any); empty: none. Credentials
    /// (cookies) are never allowed cross-origin whatever this holds.
    pub cors_allowed_origins: Vec<String>,
    /// A request still unanswered after this long gets 503 (the gateway has its own upstream
    /// timeout).
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Threads that accept and serve connections, each with a single-threaded runtime of its
    /// own; 0 serves them on the process's runtime. One per core by default.
    pub serve_threads: usize,
    /// The serving threads' nice value (Linux), set by each as it starts; `None` leaves them at
    /// the process's.
    pub serve_nice: Option<i32>,
    /// How long a stopping server lets in-flight requests finish before it closes them.
    pub shutdown_timeout: Duration,
    /// Audit entries older than this many days are purged; 0 keeps them for ever.
    pub audit_retention_days: u32,
    /// Deliver webhooks to private, loopback and link-local addresses too (development only).
    pub webhooks_allow_private: bool,
    /// The deadline of one webhook attempt, connection to last byte read.
    pub webhook_timeout: Duration,
    /// How long a claimed delivery stays with its worker; after that another may take it.
    /// Longer than `webhook_timeout`, so a live worker never loses one mid-attempt.
    pub webhook_lease: Duration,
    /// Attempts one node makes at once.
    pub webhook_concurrency: usize,
    /// How often a worker looks for due deliveries when nothing woke it.
    pub webhook_poll_interval: Duration,
    /// An endpoint whose every attempt has failed for this long is disabled.
    pub webhook_disable_after: Duration,
    /// Delivered events, their deliveries and attempts are kept this long.
    pub webhook_retention: Duration,
    /// `credits.low` fires when a debit leaves less than this; `None`: a tenth of the plan's
    /// monthly credits.
    pub credits_low_threshold: Option<u64>,
}

impl Config {
    pub fn with_data_dir(data_dir: PathBuf) -> Self {
        Config {
            listen: ([127, 0, 0, 1], 8080).into(),
            data_dir,
            database_url: None,
            redis_url: None,
            key_prefix: "ak".into(),
            default_plan: "free".into(),
            usage_flush_interval: Duration::from_secs(30),
            key_cache_capacity: 100_000,
            key_cache_ttl: Duration::from_secs(30),
            master_key: None,
            token_ttl: Duration::from_secs(3600),
            token_algorithm: keygate_token::Algorithm::Rs256,
            token_issuer: "keygate".into(),
            oauth_issuer: None,
            oauth_code_ttl: Duration::from_secs(60),
            oauth_refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            plans: default_plans(),
            rate_limits_enabled: true,
            auth_failure_limit: keygate_core::gcra::Quota::parse("60/minute")
                .unwrap_or_else(|_| unreachable!()),
            route_costs: Vec::new(),
            dashboard: crate::dashboard::DashboardConfig::default(),
            mail: crate::mailer::MailConfig::default(),
            tls: None,
            trusted_proxies: Vec::new(),
            refuse_plaintext_credentials: false,
            cors_allowed_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            serve_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            serve_nice: None,
            shutdown_timeout: Duration::from_secs(30),
            audit_retention_days: 365,
            webhooks_allow_private: false,
            webhook_timeout: Duration::from_secs(15),
            webhook_lease: Duration::from_secs(60),
            webhook_concurrency: 64,
            webhook_poll_interval: Duration::from_secs(1),
            webhook_disable_after: Duration::from_secs(5 * 24 * 3600),
            webhook_retention: Duration::from_secs(30 * 24 * 3600),
            credits_low_threshold: None,
        }
    }

    /// The `iss` of OAuth access tokens: [`Config::oauth_issuer`], else the token issuer.
    pub fn oauth_token_issuer(&self) -> String {
        self.oauth_issuer
            .clone()
            .unwrap_or_else(|| self.token_issuer.clone())
    }

    /// Whether this server terminates TLS itself.
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether cookies should carry `Secure`: the site is served over HTTPS, by this server or
    /// by the trusted proxies in front of it. (Per request, `ClientInfo::secure` says how that
    /// request arrived.)
    pub fn secure_cookies(&self) -> bool {
        self.tls_enabled() || !self.trusted_proxies.is_empty()
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("keygate.db").display()
            ),
        }
    }
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub config: Config,
    pub caches: Caches,
    pub usage: UsageRecorder,
    pub tokens: TokenService,
    /// Where this node is in the revocation feed.
    pub feed: FeedCursor,
    /// With Redis: the channel that wakes every node's revocation feed at once.
    pub bus: Option<Arc<keygate_cluster::RedisBus>>,
    /// Wakes this node's feed poller before its next tick.
    pub feed_wakeup: tokio::sync::Notify,
    /// The rate limiter: in-process, or over Redis when several nodes share one.
    pub limiter: Arc<dyn keygate_cluster::RateLimiter>,
    /// (account, month) pairs whose monthly credit top-up this node has applied or seen.
    pub refilled: crate::cache::BoundedCache<(keygate_core::AccountId, String), ()>,
    /// Sends the dashboard's mail (verification, password reset, invitations).
    pub mailer: Arc<dyn crate::mailer::Mailer>,
    /// Wakes this node's webhook worker: an event was just enqueued (here or, via Redis,
    /// elsewhere).
    pub webhook_wakeup: tokio::sync::Notify,
    /// This process's name on the webhook leases it holds; new at every start.
    pub webhook_owner: String,
    /// Accounts told about a `ratelimit.exceeded` in the last minute, by this node.
    pub ratelimit_notices: crate::cache::BoundedCache<keygate_core::AccountId, ()>,
    /// (account, month) pairs whose `credits.low` notice this node checked in the last hour.
    pub low_credit_notices: crate::cache::BoundedCache<(keygate_core::AccountId, String), ()>,
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Opens the database (creating the data dir and the SQLite file on first start) and
    /// applies pending migrations. The admin commands use this too, without serving.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        keygate_core::key::validate_prefix(&config.key_prefix)
            .with_context(|| format!("key prefix {:?}", config.key_prefix))?;
        if config.database_url.is_none() {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
        }
        let store = keygate_store_sql::connect(&config.database_url())
            .await
            .context("opening the database")?;
        store.migrate().await.context("migrating the database")?;
        if config.master_key.is_none() && config.database_url.is_some() {
            tracing::warn!(
                "no master key configured: using {}/master.key; every node sharing this database needs the same one (KEYGATE_MASTER_KEY)",
                config.data_dir.display()
            );
        }
        let master = load_master_key(config.master_key.as_deref(), &config.data_dir)?;
        let tokens = TokenService::load(
            store.as_ref(),
            master,
            config.token_issuer.clone(),
            config.oauth_token_issuer(),
            config.token_ttl,
            config.token_algorithm,
        )
        .await
        .context("loading the token signing keys")?;
        let caches = Caches::new(config.key_cache_capacity, config.key_cache_ttl);
        let bus = match &config.redis_url {
            Some(url) => Some(
                keygate_cluster::RedisBus::new(url)
                    .map_err(|e| anyhow::anyhow!("redis_url: {e}"))?,
            ),
            None => None,
        };
        let limiter: Arc<dyn keygate_cluster::RateLimiter> = match &config.redis_url {
            Some(url) => Arc::new(
                keygate_cluster::RedisLimiter::connect(url)
                    .await
                    .map_err(|e| anyhow::anyhow!("redis_url: {e}"))?,
            ),
            None => Arc::new(keygate_cluster::LocalLimiter::new()),
        };
        let mailer = crate::mailer::from_config(&config.mail, &config.data_dir)?;
        let state = AppState(Arc::new(Inner {
            store,
            mailer,
            caches,
            usage: UsageRecorder::default(),
            tokens,
            feed: FeedCursor::default(),
            limiter,
            bus,
            feed_wakeup: tokio::sync::Notify::new(),
            refilled: crate::cache::BoundedCache::new(100_000, Duration::from_secs(3600)),
            webhook_wakeup: tokio::sync::Notify::new(),
            webhook_owner: format!("node_{}", uuid::Uuid::new_v4().simple()),
            ratelimit_notices: crate::cache::BoundedCache::new(100_000, Duration::from_secs(60)),
            low_credit_notices: crate::cache::BoundedCache::new(100_000, Duration::from_secs(3600)),
            config,
        }));
        crate::revocation::prime(&state)
            .await
            .context("reading the revocation feed")?;
        Ok(state)
    }
}
