//! Outgoing mail: the dashboard's verification, password-reset and invitation links. A
//! [`Mailer`] is picked at start from the configuration: SMTP when a host is set, otherwise
//! the [`FileMailer`], which writes each message under `<data dir>/mail/` and logs where, so a
//! single binary with no mail server still lets its first user verify an address.
//!
//! The messages carry one-time secrets (the links). Neither mailer logs a message's body or
//! link: only that a message was written or sent, to whom it went is left out too.

use std::path::PathBuf;

use anyhow::Context;
use async_trait::async_trait;

/// One plain-text message.
#[derive(Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body holds a one-time link.
        write!(f, "Mail({:?})", self.subject)
    }
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, mail: Mail) -> anyhow::Result<()>;
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587), required.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host.
    None,
}

impl SmtpTls {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "starttls" => Some(SmtpTls::Starttls),
            "tls" | "implicit" => Some(SmtpTls::Tls),
            "none" | "plain" => Some(SmtpTls::None),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    /// `None`: the default of the TLS mode (587, 465 or 25).
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: SmtpTls,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// Where mail goes and who it is from.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// `None`: the file mailer.
    pub smtp: Option<SmtpConfig>,
    /// The `From` of every message, e.g. `Keygate <keygate@example.com>`.
    pub from: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp: None,
            from: "Keygate <keygate@localhost>".into(),
        }
    }
}

/// The mailer the configuration asks for.
pub fn from_config(
    config: &MailConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn Mailer>> {
    Ok(match &config.smtp {
        Some(smtp) => std::sync::Arc::new(SmtpMailer::new(smtp, &config.from)?),
        None => {
            let dir = data_dir.join("mail");
            tracing::debug!(dir = %dir.display(), "no SMTP server configured: mail is written to files");
            std::sync::Arc::new(FileMailer::new(dir, &config.from))
        }
    })
}

/// Writes each message to a file of its own, `<dir>/<time>-<id>.eml`, readable by the owner
/// only (it holds a one-time link), and logs the file's path.
pub struct FileMailer {
    dir: PathBuf,
    from: String,
}

impl FileMailer {
    pub fn new(dir: PathBuf, from: &str) -> Self {
        FileMailer {
            dir,
            from: from.to_owned(),
        }
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, mail: Mail) -> anyhow::Result<()> {
        let now = time::OffsetDateTime::now_utc();
        let name = format!(
            "{}-{}.eml",
            now.unix_timestamp_nanos() / 1_000_000,
            uuid::Uuid::new_v4().simple()
        );
        let path = self.dir.join(name);
        let date = now
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default();
        let message = format!(
            "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}\r\n",
            self.from,
            mail.to,
            mail.subject,
            mail.text.replace('\n', "\r\n")
        );
        let dir = self.dir.clone();
        let written = path.clone();
        tokio::task::spawn_blocking(move || write_private(&dir, &written, message.as_bytes()))
            .await
            .context("the mail-writing task")??;
        tracing::info!(path = %path.display(), "mail written to a file (no SMTP server configured)");
        Ok(())
    }
}

fn write_private(
    dir: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        builder.mode(0o700);
        options.mode(0o600);
    }
    builder
        .create(dir)
        .with_context(|| format!("creating the mail directory {}", dir.display()))?;
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Sends through an SMTP server (lettre over rustls).
pub struct SmtpMailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl SmtpMailer {
    pub fn new(config: &SmtpConfig, from: &str) -> anyhow::Result<Self> {
        use lettre::transport::smtp::authentication::Credentials;
        use lettre::{AsyncSmtpTransport, Tokio1Executor};
        let from = from
            .parse()
            .map_err(|e| anyhow::anyhow!("mail_from: not an address ({e}): {from:?}"))?;
        let mut builder = match config.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
                .with_context(|| format!("smtp_host {:?}", config.host))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
                .with_context(|| format!("smtp_host {:?}", config.host))?,
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        };
        if let Some(port) = config.port {
            builder = builder.port(port);
        }
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(SmtpMailer {
            transport: builder.build(),
            from,
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: Mail) -> anyhow::Result<()> {
        use lettre::AsyncTransport;
        let to: lettre::message::Mailbox = mail
            .to
            .parse()
            .map_err(|e| anyhow::anyhow!("not a deliverable address ({e})"))?;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(mail.text)
            .context("building the message")?;
        self.transport
            .send(message)
            .await
            .context("sending through SMTP")?;
        tracing::info!("mail sent through SMTP");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_mailer_writes_one_private_file_per_message() {
        let dir = std::env::temp_dir().join(format!("keygate-mail-{}", uuid::Uuid::new_v4()));
        let mailer = FileMailer::new(dir.clone(), "Keygate <k@example.com>");
        for n in 0..2 {
            mailer
                .send(Mail {
                    to: "ada@example.com".into(),
                    subject: format!("Message {n}"),
                    text: "Open http://localhost/verify-email?token=abc\nThanks".into(),
                })
                .await
                .expect("written");
        }
        let files: Vec<_> = std::fs::read_dir(&dir)
            .expect("the mail dir exists")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(files.len(), 2);
        let text = std::fs::read_to_string(&files[0]).expect("readable");
        assert!(text.contains("To: ada@example.com\r\n"), "{text}");
        assert!(text.contains("verify-email?token=abc"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files[0])
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by the owner only");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_smtp_mailer_is_built_from_its_settings_without_connecting() {
        let config = SmtpConfig {
            host: "smtp.example.com".into(),
            port: Some(2525),
            username: Some("user".into()),
            password: Some("secret".into()),
            tls: SmtpTls::Starttls,
        };
        assert!(SmtpMailer::new(&config, "Keygate <k@example.com>").is_ok());
        assert!(!format!("{config:?}").contains("secret"));
        assert!(SmtpMailer::new(&config, "not an address").is_err());
    }
}
