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
            usage_flush_interval: Duration::from_secs(2),
            key_cache_capacity: 100_000,
            key_cache_ttl: Duration::from_secs(30),
            master_key: None,
            token_ttl: Duration::from_secs(3600),
            token_algorithm: keygate_token::Algorithm::Rs256,
            token_issuer: "keygate".into(),
        }
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
            config.token_ttl,
            config.token_algorithm,
        )
        .await
        .context("loading the token signing keys")?;
        let caches = Caches::new(config.key_cache_capacity, config.key_cache_ttl);
        let state = AppState(Arc::new(Inner {
            store,
            caches,
            usage: UsageRecorder::default(),
            tokens,
            feed: FeedCursor::default(),
            config,
        }));
        crate::revocation::prime(&state)
            .await
            .context("reading the revocation feed")?;
        Ok(state)
    }
}
