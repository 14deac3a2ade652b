//! The one Keygate binary. Every setting comes from a flag, else a `KEYGATE_*` environment
//! variable, else the TOML file named by `--config`, else its default.

mod config;
mod log_format;
mod log_writer;

/// mimalloc rather than glibc's malloc: a request allocates and frees many small buffers on
/// whichever runtime thread runs it, which glibc serves from contended arenas (its malloc,
/// free and consolidation were a tenth of the gateway's time in a profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keygate_server::service::accounts::{self, NewAccount};
use keygate_server::AppState;

use config::{Common, LogFormat};

#[derive(Parser)]
#[command(
    name = "keygate",
    version,
    about = "API keys, auth tokens, rate limits and credits for your API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        common: Common,
    },
    /// Administer accounts and operator keys (works while the server runs).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Put Keygate in front of an upstream HTTP API (shares the server's database).
    Gateway {
        /// The upstream, e.g. http://127.0.0.1:9000 [or [gateway] upstream].
        #[arg(long, env = "KEYGATE_UPSTREAM")]
        upstream: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Print the OpenAPI document of every route.
    Openapi,
    /// Manage the keys that sign auth tokens.
    SigningKeys {
        #[command(subcommand)]
        command: SigningKeysCommand,
    },
    /// Work with the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check the settings (the file named by --config, the environment and flags) without
    /// starting: every key is known, every value valid, TLS files readable. Exits non-zero with
    /// a message naming the setting otherwise.
    Check {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum SigningKeysCommand {
    /// Make a new signing key active; older keys keep verifying until their tokens expire.
    Rotate {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an account, its owner and a first admin API key (printed once).
    CreateAccount {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        plan: Option<String>,
        /// The owner's password (for the dashboard and /v2/user_auth).
        #[arg(long, env = "KEYGATE_ADMIN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        /// Print {"account_id", "user_id", "api_key"}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Create COUNT keys of an account at once, for benchmarks; their plaintexts go to FILE.
    #[command(hide = true)]
    BulkKeys {
        #[arg(long)]
        account: String,
        #[arg(long)]
        count: u64,
        /// Where the plaintext keys are written, one a line (created with mode 0600).
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value = "write")]
        scope: String,
        /// Keys inserted per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Create an operator key: it acts across all accounts.
    CreateOperatorKey {
        #[arg(long, default_value = "Operator key")]
        name: String,
        /// Print {"api_key"}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log_writer::StderrBatched::new())
        .event_format(log_format::Lines { json })
        .init();
    keygate_server::http::request_id::set_access_log(Box::new(log_format::AccessLines { json }));
}

/// Clap names the flag of a value it cannot parse; the value may have come from the
/// environment instead, which this adds (without the value, which may be a secret).
fn parse_cli() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            if matches!(
                err.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) {
                if let Some(ContextValue::String(arg)) = err.get(ContextKind::InvalidArg) {
                    let flag = arg.split_whitespace().next().unwrap_or_default();
                    let env = format!(
                        "KEYGATE_{}",
                        flag.trim_start_matches('-')
                            .replace('-', "_")
                            .to_ascii_uppercase()
                    );
                    if std::env::var_os(&env).is_some()
                        && !std::env::args().any(|a| a.starts_with(flag))
                    {
                        eprintln!(
                            "keygate: the value of {flag} came from the environment variable {env}"
                        );
                    }
                }
            }
            err.exit()
        }
    }
}

#[tokio::main]
async fn main() {
    let result = run(parse_cli()).await;
    log_writer::flush();
    if let Err(err) = result {
        eprintln!("keygate: {err:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { common } => {
            let settings = common.resolve()?;
            init_logging(settings.log_format, "info,sqlx=warn");
            serve(settings.server).await
        }
        Command::Gateway { upstream, common } => {
            let settings = common.resolve()?;
            init_logging(settings.log_format, "info,sqlx=warn");
            let gateway = settings.gateway_config(upstream)?;
            let listener = tokio::net::TcpListener::bind(gateway.listen)
                .await
                .with_context(|| format!("listening on {}", gateway.listen))?;
            let signals = ShutdownSignals::install()?;
            let state = AppState::open(settings.server).await?;
            tracing::info!(upstream = %gateway.upstream, "gateway starting");
            let app = keygate_server::gateway::router(state.clone(), gateway);
            let server = keygate_server::start_with(state, listener, app)?;
            server.run_until(signals.recv()).await?;
            Ok(())
        }
        Command::Migrate { common } => {
            let settings = common.resolve()?;
            init_logging(settings.log_format, "info,sqlx=warn");
            AppState::open(settings.server).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { common },
        } => {
            let source = common.config.as_ref().map(|p| p.display().to_string());
            let settings = common.resolve()?;
            if settings.has_gateway_upstream() {
                settings.gateway_config(None)?;
            }
            match source {
                Some(path) => println!("{path}: the configuration is valid"),
                None => println!("the configuration (environment and flags) is valid"),
            }
            Ok(())
        }
        Command::Openapi => {
            println!("{}", keygate_server::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Admin { command } => admin(command).await,
        Command::SigningKeys {
            command: SigningKeysCommand::Rotate { common },
        } => {
            let settings = common.resolve()?;
            init_logging(settings.log_format, "warn");
            let state = AppState::open(settings.server).await?;
            // Running nodes reload their keys when they read the rotation from the feed.
            let kid = state.tokens.rotate(state.store.as_ref()).await?;
            use keygate_server::service::audit::{self, action, AuditEvent};
            audit::record(
                &state,
                AuditEvent::new(action::SIGNING_KEY_ROTATED, "signing_key", &kid),
            )
            .await;
            println!("new signing key active: {kid}");
            Ok(())
        }
    }
}

async fn serve(config: keygate_server::Config) -> anyhow::Result<()> {
    let signals = ShutdownSignals::install()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let state = AppState::open(config).await?;
    let server = keygate_server::start(state, listener)?;
    server.run_until(signals.recv()).await?;
    tracing::info!("keygate stopped");
    Ok(())
}

/// SIGTERM and SIGINT, listened for from before the server starts: a signal that arrives
/// while it is starting stops it cleanly instead of killing the process.
struct ShutdownSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: draining requests, then flushing usage");
    }
}

async fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::CreateAccount {
            name,
            email,
            plan,
            password,
            first_name,
            last_name,
            json,
            common,
        } => {
            let settings = common.resolve()?;
            init_logging(settings.log_format, "warn");
            let state = AppState::open(settings.server).await?;
            let created = accounts::create_account(
                &state,
                NewAccount {
                    name,
                    email,
                    plan,
                    password,
                    first_name: first_name.unwrap_or_default(),
                    last_name: last_name.unwrap_or_default(),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let api_key = created.plaintext.into_plaintext();
            if json {
                let out = serde_json::json!({
                    "account_id": created.account.id,
                    "user_id": created.owner.id,
                    "api_key": api_key,
                });
                println!("{out}");
            } else {
                println!("account_id: {}", created.account.id);
                println!("user_id:    {}", created.owner.id);
                println!("api_key:    {api_key}");
                println!("Store the API key now: it is not shown again.");
            }
            Ok(())
        }
        AdminCommand::BulkKeys {
            account,
            count,
            out,
            scope,
            batch,
            common,
        } => {
            let settings = common.resolve()?;
            init_logging(settings.log_format, "warn");
            let state = AppState::open(settings.server).await?;
            bulk_keys(&state, &account, count, &out, &scope, batch).await
        }
        AdminCommand::CreateOperatorKey { name, json, common } => {
            let settings = common.resolve()?;
            init_logging(settings.log_format, "warn");
            let state = AppState::open(settings.server).await?;
            let (_, key) = accounts::create_operator_key(&state, &name)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let api_key = key.into_plaintext();
            if json {
                println!("{}", serde_json::json!({ "api_key": api_key }));
            } else {
                println!("api_key: {api_key}");
                println!("Store the operator key now: it is not shown again.");
            }
            Ok(())
        }
    }
}

/// `admin bulk-keys`: builds the keys as the API would (same generator, same record) and
/// inserts them `batch` at a time, one transaction each.
async fn bulk_keys(
    state: &AppState,
    account: &str,
    count: u64,
    out: &std::path::Path,
    scope: &str,
    batch: usize,
) -> anyhow::Result<()> {
    use std::io::Write;

    use keygate_core::{AccountId, Environment, Scope};
    use keygate_server::service::keys::{build_key, KeySpec};

    let account = AccountId::parse(account)
        .ok_or_else(|| anyhow::anyhow!("--account: not an account id: {account:?}"))?;
    state
        .store
        .get_account(&account)
        .await
        .with_context(|| format!("account {account}"))?;
    let scope: Scope = scope
        .parse()
        .map_err(|_| anyhow::anyhow!("--scope: expected read, write or admin, got {scope:?}"))?;
    anyhow::ensure!(
        (1..=10_000).contains(&batch),
        "--batch: expected 1 to 10000"
    );
    let file = {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(out)
            .with_context(|| format!("creating {}", out.display()))?
    };
    let mut writer = std::io::BufWriter::new(file);
    let started = std::time::Instant::now();
    let mut done = 0u64;
    let mut records = Vec::with_capacity(batch);
    while done < count {
        let n = (count - done).min(batch as u64);
        records.clear();
        for i in 0..n {
            let spec = KeySpec {
                name: format!("bench {}", done + i + 1),
                description: String::new(),
                scope,
                environment: Environment::Live,
                expires_at: None,
                metadata: serde_json::json!({}),
                rate_limit: None,
                permissions: Vec::new(),
            };
            let (record, plaintext) =
                build_key(state, Some(&account), None, spec).map_err(|e| anyhow::anyhow!("{e}"))?;
            writeln!(writer, "{}", plaintext.expose_plaintext())?;
            records.push(record);
        }
        state.store.create_keys(&records).await?;
        done += n;
        // Progress each time another 100,000 keys are in.
        if done / 100_000 != (done - n) / 100_000 {
            eprintln!(
                "keygate: {done} keys in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    writer.flush()?;
    eprintln!(
        "keygate: created {done} keys in {:.1}s; plaintexts in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}
