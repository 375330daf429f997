//! Customer notices: sending them through a channel (SMTP, directory, signed webhook); templates are rendered by
//! [`render`] (the playbook's, re-exported).

use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

pub mod bounce;
mod webhook;

pub use crate::config::SmtpSecurity;
pub use crate::playbook::{render, render_html};
use crate::secret::Secret;
pub use webhook::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, WebhookChannel, signature, verify, without_url};

// ---------------------------------------------------------------------------------------------
// Channels

/// One message ready to send: rendered, addressed, with a stable Message-ID so a resend after
/// a crash is recognisable as the same message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingNotice {
    /// The stable Message-ID, e.g. `<notice-42.mig@siirto>` (angle brackets are added if
    /// missing).
    pub message_id: String,
    /// The From address (`Name <addr>` or `addr`).
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The subject (UTF-8).
    pub subject: String,
    /// The plain-text body (UTF-8).
    pub body: String,
    /// The HTML part, sent with the text as multipart/alternative; `None`: text only.
    pub html: Option<String>,
    /// The envelope sender (SMTP `MAIL FROM`) where bounces go, e.g. `bounces+42@example.fi`
    /// (VERP: it names the notice); `None`: the From address.
    pub return_path: Option<String>,
}

/// A way to deliver notices. Implementations: [`SmtpChannel`], [`DirectoryChannel`].
///
/// Delivery is split where the outbox needs it: [`Channel::open`] does everything that can be
/// slow before the message (connect, greeting, STARTTLS, login); [`Delivery::transmit`] hands
/// the message over and returns as soon as the server has accepted it (SMTP: the 250 after
/// DATA), before the session is closed ([`Delivery::close`], SMTP QUIT). The engine records
/// the acceptance between the two, so a slow QUIT or a crash after the 250 never resends.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// Opens a delivery session.
    async fn open(&self) -> Result<Box<dyn Delivery>, NotifyError>;
    /// A short name for logs and status (`smtp`, `directory`).
    fn name(&self) -> &'static str;
    /// Delivers one notice in a session of its own: open, transmit, close.
    async fn send(&self, notice: &OutgoingNotice) -> Result<(), NotifyError> {
        let mut delivery = self.open().await?;
        let sent = delivery.transmit(notice).await;
        delivery.close().await;
        sent
    }
}

/// An open delivery session of a [`Channel`].
#[async_trait::async_trait]
pub trait Delivery: Send {
    /// Hands one message over; `Ok` once the server has accepted it. Delivering the same notice
    /// twice must not be worse than once (a resend keeps its Message-ID).
    async fn transmit(&mut self, notice: &OutgoingNotice) -> Result<(), NotifyError>;
    /// Ends the session politely (SMTP QUIT). Its outcome changes nothing about messages already
    /// accepted, so it reports nothing.
    async fn close(self: Box<Self>);
}

/// Why a notice was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The notice cannot become a message (bad address, empty recipients). Permanent.
    #[error("invalid notice {message_id}: {detail}")]
    Invalid {
        /// The notice's Message-ID.
        message_id: String,
        /// What is wrong.
        detail: String,
    },
    /// The channel is misconfigured (bad TLS name, half credentials). Permanent.
    #[error("mail channel setup: {0}")]
    Setup(String),
    /// The SMTP server could not be reached (refused, unreachable). Transient.
    #[error("SMTP server {server}: cannot connect: {source}")]
    Connect {
        /// `host:port`.
        server: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The SMTP exchange took longer than the configured timeout. Transient.
    #[error("SMTP server {server}: timed out after {timeout:?}")]
    Timeout {
        /// `host:port`.
        server: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// STARTTLS was required but the server does not offer it. Permanent (no downgrade).
    #[error("SMTP server {server} does not offer STARTTLS")]
    StartTlsUnavailable {
        /// `host:port`.
        server: String,
    },
    /// The SMTP server or the exchange failed. Transient for 4xx replies and network
    /// errors; permanent for 5xx replies, TLS and client errors.
    #[error("SMTP server {server}: {source}")]
    Smtp {
        /// `host:port`.
        server: String,
        /// lettre's error (carries the reply code).
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The webhook endpoint did not take the notice: no answer (`status` `None`: transient) or
    /// an answer other than 2xx (transient for 5xx, 408 and 429; permanent otherwise).
    #[error("webhook {url}: {}{detail}", .status.map(|s| format!("HTTP {s}: ")).unwrap_or_default())]
    Webhook {
        /// The URL posted to, without credentials or query.
        url: String,
        /// The HTTP status, when one came back.
        status: Option<u16>,
        /// What went wrong, or the start of the answer's body.
        detail: String,
    },
    /// Writing the message file failed. Transient (disk full, a mount coming back).
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl NotifyError {
    /// Whether sending again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            NotifyError::Connect { .. } | NotifyError::Timeout { .. } | NotifyError::Io { .. } => true,
            NotifyError::Webhook { status, .. } => status.is_none_or(|s| s >= 500 || s == 408 || s == 429),
            NotifyError::Smtp { source, .. } => {
                !(source.is_permanent() || source.is_client() || source.is_tls())
            }
            NotifyError::Invalid { .. } | NotifyError::Setup(_) | NotifyError::StartTlsUnavailable { .. } => {
                false
            }
        }
    }

    /// The SMTP reply code, when the server answered with an error.
    pub fn smtp_code(&self) -> Option<String> {
        match self {
            NotifyError::Smtp { source, .. } => source.status().map(|c| c.to_string()),
            _ => None,
        }
    }
}

/// Builds the RFC 5322 message of a notice: Message-ID, Date, From, To, Subject, a UTF-8
/// plain-text body (lettre picks 7bit, quoted-printable or base64 for it), or the text and the
/// HTML part as multipart/alternative; its envelope sender is the notice's return path.
pub fn build_message(notice: &OutgoingNotice) -> Result<Message, NotifyError> {
    let invalid = |detail: String| NotifyError::Invalid { message_id: notice.message_id.clone(), detail };
    let id = notice.message_id.trim();
    if id.is_empty() || id.contains(['\r', '\n']) {
        return Err(invalid("empty or multi-line Message-ID".into()));
    }
    let id = if id.starts_with('<') && id.ends_with('>') {
        id.to_owned()
    } else {
        format!("<{}>", id.trim_matches(['<', '>']))
    };
    if notice.to.is_empty() {
        return Err(invalid("no recipients".into()));
    }
    let from: Mailbox = notice.from.parse().map_err(|e| invalid(format!("From {:?}: {e}", notice.from)))?;
    let mut builder =
        Message::builder().message_id(Some(id)).from(from.clone()).subject(notice.subject.clone());
    let mut recipients = Vec::new();
    for to in &notice.to {
        let mailbox: Mailbox = to.parse().map_err(|e| invalid(format!("To {to:?}: {e}")))?;
        recipients.push(mailbox.email.clone());
        builder = builder.to(mailbox);
    }
    if let Some(return_path) = &notice.return_path {
        let sender: lettre::Address =
            return_path.parse().map_err(|e| invalid(format!("return path {return_path:?}: {e}")))?;
        let envelope =
            lettre::address::Envelope::new(Some(sender), recipients).map_err(|e| invalid(e.to_string()))?;
        builder = builder.envelope(envelope);
    }
    match &notice.html {
        Some(html) => builder
            .multipart(lettre::message::MultiPart::alternative_plain_html(notice.body.clone(), html.clone()))
            .map_err(|e| invalid(e.to_string())),
        None => builder
            .header(ContentType::TEXT_PLAIN)
            .body(notice.body.clone())
            .map_err(|e| invalid(e.to_string())),
    }
}

/// Settings of an [`SmtpChannel`].
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The server's host name (also the TLS name).
    pub host: String,
    /// The server's port.
    pub port: u16,
    /// How the connection is secured.
    pub security: SmtpSecurity,
    /// Login name, if the server wants authentication.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<Secret>,
    /// Bound on one whole delivery (connect, greeting, TLS, auth, DATA).
    pub timeout: Duration,
}

/// Sends notices over SMTP with lettre, one connection per message.
///
/// lettre 0.11.23 leaves Nagle's algorithm on and writes the body and the final `.` in two
/// writes, so the receiver's delayed ACK costs 40 ms per message (23 messages/s on
/// loopback; fixed upstream after 0.11.23). We therefore open the TCP connection ourselves
/// with `TCP_NODELAY` and hand it to [`AsyncSmtpConnection::connect_with_transport`]; STARTTLS
/// then upgrades that same socket. For implicit TLS ([`SmtpSecurity::Tls`]) lettre has to
/// build the TLS stream before the greeting and offers no way to take a pre-connected socket
/// for it, so that mode uses lettre's own connect and keeps the 40 ms penalty.
///
/// Sessions are kept for the next message: after a message was accepted and recorded, the
/// session goes back to an idle pool instead of being closed, and the next send takes it
/// (after a NOOP proves it still answers) instead of connecting, greeting and logging in again;
/// a session idle longer than [`SESSION_IDLE`] is closed with QUIT. This is what a mail server
/// sees from any submission client that sends in bulk.
#[derive(Debug, Clone)]
pub struct SmtpChannel {
    settings: SmtpSettings,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: SessionPool,
}

/// How long an SMTP session may wait idle for the next message before it is closed.
pub const SESSION_IDLE: Duration = Duration::from_secs(10);
/// At most this many idle SMTP sessions are kept; more are closed with QUIT.
const SESSIONS_KEPT: usize = 16;
/// How long the NOOP that checks an idle session before reuse may take.
const SESSION_CHECK: Duration = Duration::from_secs(5);

/// The idle sessions of an [`SmtpChannel`], newest last.
#[derive(Clone, Default)]
struct SessionPool(std::sync::Arc<std::sync::Mutex<Vec<(AsyncSmtpConnection, std::time::Instant)>>>);

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.0.lock().map(|pool| pool.len()).unwrap_or_default();
        f.debug_struct("SessionPool").field("idle", &idle).finish()
    }
}

impl SessionPool {
    /// The newest idle session young enough to reuse; the expired ones are closed (QUIT, in the
    /// background).
    fn take(&self) -> Option<AsyncSmtpConnection> {
        let mut pool = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = std::time::Instant::now();
        let (fresh, expired): (Vec<_>, Vec<_>) =
            pool.drain(..).partition(|(_, since)| now.duration_since(*since) < SESSION_IDLE);
        *pool = fresh;
        for (connection, _) in expired {
            quit_in_background(connection);
        }
        pool.pop().map(|(connection, _)| connection)
    }

    /// Keeps `connection` for the next message, or closes it when enough are kept.
    fn put(&self, connection: AsyncSmtpConnection) {
        let mut pool = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pool.len() < SESSIONS_KEPT {
            pool.push((connection, std::time::Instant::now()));
        } else {
            quit_in_background(connection);
        }
    }
}

/// Ends a session politely without making anyone wait for the server's answer.
fn quit_in_background(mut connection: AsyncSmtpConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if tokio::time::timeout(SESSION_CHECK, connection.quit()).await.is_err() {
                connection.abort().await;
            }
        });
    }
}

impl SmtpChannel {
    /// Validates the settings (credentials complete, TLS name usable).
    pub fn new(settings: SmtpSettings) -> Result<Self, NotifyError> {
        if settings.host.trim().is_empty() {
            return Err(NotifyError::Setup("SMTP host is empty".into()));
        }
        let credentials = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                Some(Credentials::new(user.clone(), password.expose().to_owned()))
            }
            (None, None) => None,
            _ => {
                return Err(NotifyError::Setup("SMTP username and password must be given together".into()));
            }
        };
        if settings.security != SmtpSecurity::None {
            TlsParameters::new(settings.host.clone())
                .map_err(|e| NotifyError::Setup(format!("TLS for SMTP host {:?}: {e}", settings.host)))?;
        }
        Ok(Self { settings, credentials, hello: ClientId::default(), idle: SessionPool::default() })
    }

    fn server(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    /// Connects, greets, upgrades to TLS and logs in: everything before the message.
    async fn connect(&self) -> Result<AsyncSmtpConnection, NotifyError> {
        let server = self.server();
        let smtp = |source| NotifyError::Smtp { server: server.clone(), source };
        let tls = || {
            TlsParameters::new(self.settings.host.clone())
                .map_err(|e| NotifyError::Setup(format!("TLS for SMTP host {:?}: {e}", self.settings.host)))
        };
        let mut connection = match self.settings.security {
            SmtpSecurity::Tls => AsyncSmtpConnection::connect_tokio1(
                (self.settings.host.as_str(), self.settings.port),
                Some(self.settings.timeout),
                &self.hello,
                Some(tls()?),
                None,
            )
            .await
            .map_err(smtp)?,
            SmtpSecurity::Starttls | SmtpSecurity::None => {
                let tcp = tokio::net::TcpStream::connect((self.settings.host.as_str(), self.settings.port))
                    .await
                    .map_err(|source| NotifyError::Connect { server: server.clone(), source })?;
                tcp.set_nodelay(true)
                    .map_err(|source| NotifyError::Connect { server: server.clone(), source })?;
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await.map_err(smtp)?
            }
        };
        if self.settings.security == SmtpSecurity::Starttls {
            if !connection.can_starttls() {
                connection.abort().await;
                return Err(NotifyError::StartTlsUnavailable { server });
            }
            connection.starttls(tls()?, &self.hello).await.map_err(smtp)?;
        }
        if let Some(credentials) = &self.credentials {
            connection.auth(&[Mechanism::Plain, Mechanism::Login], credentials).await.map_err(smtp)?;
        }
        Ok(connection)
    }
}

#[async_trait::async_trait]
impl Channel for SmtpChannel {
    #[tracing::instrument(skip_all, fields(channel = "smtp"))]
    async fn open(&self) -> Result<Box<dyn Delivery>, NotifyError> {
        let timeout = self.settings.timeout;
        let delivery = |connection| SmtpDelivery {
            connection: Some(connection),
            server: self.server(),
            timeout,
            accepted: false,
            pool: self.idle.clone(),
        };
        // A kept session that still answers, else a new one.
        while let Some(mut connection) = self.idle.take() {
            if matches!(tokio::time::timeout(SESSION_CHECK, connection.test_connected()).await, Ok(true)) {
                return Ok(Box::new(delivery(connection)));
            }
            connection.abort().await;
        }
        match tokio::time::timeout(timeout, self.connect()).await {
            Ok(connection) => Ok(Box::new(delivery(connection?))),
            Err(_) => Err(NotifyError::Timeout { server: self.server(), timeout }),
        }
    }

    fn name(&self) -> &'static str {
        "smtp"
    }
}

/// An open SMTP session; each step is bounded by the channel's timeout.
struct SmtpDelivery {
    /// `None` once the session failed and was aborted.
    connection: Option<AsyncSmtpConnection>,
    server: String,
    timeout: Duration,
    /// Whether the server accepted a message in this session (it is then kept for the next).
    accepted: bool,
    /// Where a session that served well waits for the next message.
    pool: SessionPool,
}

#[async_trait::async_trait]
impl Delivery for SmtpDelivery {
    #[tracing::instrument(skip_all, fields(channel = "smtp", message_id = %notice.message_id))]
    async fn transmit(&mut self, notice: &OutgoingNotice) -> Result<(), NotifyError> {
        let message = build_message(notice)?;
        let Some(connection) = self.connection.as_mut() else {
            return Err(NotifyError::Setup("the SMTP session was aborted".into()));
        };
        // MAIL FROM, RCPT TO, DATA and the message; the answer is the server's acceptance.
        let sent =
            tokio::time::timeout(self.timeout, connection.send(message.envelope(), &message.formatted()))
                .await;
        let error = match sent {
            Ok(Ok(_accepted)) => {
                self.accepted = true;
                return Ok(());
            }
            Ok(Err(source)) => NotifyError::Smtp { server: self.server.clone(), source },
            Err(_) => NotifyError::Timeout { server: self.server.clone(), timeout: self.timeout },
        };
        if let Some(mut connection) = self.connection.take() {
            connection.abort().await;
        }
        Err(error)
    }

    async fn close(self: Box<Self>) {
        let Some(mut connection) = self.connection else { return };
        // A session that delivered is kept for the next message (its QUIT comes when it has
        // waited idle too long); one that never delivered is closed.
        if self.accepted && !connection.has_broken() {
            self.pool.put(connection);
            return;
        }
        // The messages are accepted; a failing or slow QUIT changes nothing about them.
        if tokio::time::timeout(self.timeout, connection.quit()).await.is_err() {
            connection.abort().await;
        }
    }
}

/// Writes each notice as an RFC 5322 `.eml` file into a directory (for a mail pickup
/// directory, a review step, or tests). The file is named after the sanitized Message-ID and
/// written to a temporary file then renamed, so a reader never sees half a message and
/// sending the same notice twice overwrites the file instead of adding a second one.
#[derive(Debug, Clone)]
pub struct DirectoryChannel {
    dir: PathBuf,
}

impl DirectoryChannel {
    /// A channel writing into `dir` (created on first send if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory the files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a notice with this Message-ID is written to.
    pub fn file_for(&self, message_id: &str) -> PathBuf {
        self.dir.join(eml_file_name(message_id))
    }
}

/// `<notice-42.mig@siirto>` → `notice-42.mig@siirto.eml`: letters, digits, `.`, `-`, `_`,
/// `@`, `+` and `=` kept, everything else `_`, at most 150 characters, never starting with a
/// dot (no hidden files, no `..`).
fn eml_file_name(message_id: &str) -> String {
    let inner = message_id.trim().trim_start_matches('<').trim_end_matches('>');
    let mut name: String = inner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@' | '+' | '=') { c } else { '_' }
        })
        .take(150)
        .collect();
    if name.is_empty() || name.starts_with('.') {
        name.insert(0, '_');
    }
    name.push_str(".eml");
    name
}

#[async_trait::async_trait]
impl Channel for DirectoryChannel {
    async fn open(&self) -> Result<Box<dyn Delivery>, NotifyError> {
        Ok(Box::new(self.clone()))
    }

    fn name(&self) -> &'static str {
        "directory"
    }
}

#[async_trait::async_trait]
impl Delivery for DirectoryChannel {
    #[tracing::instrument(skip_all, fields(channel = "directory", message_id = %notice.message_id))]
    async fn transmit(&mut self, notice: &OutgoingNotice) -> Result<(), NotifyError> {
        let bytes = build_message(notice)?.formatted();
        let dir = self.dir.clone();
        let target = self.file_for(&notice.message_id);
        tokio::task::spawn_blocking(move || write_atomically(&dir, &target, &bytes)).await.map_err(|e| {
            NotifyError::Io { path: self.dir.clone(), source: std::io::Error::other(e.to_string()) }
        })?
    }

    async fn close(self: Box<Self>) {}
}

fn write_atomically(dir: &Path, target: &Path, bytes: &[u8]) -> Result<(), NotifyError> {
    use std::io::Write;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| NotifyError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp =
        tempfile::Builder::new().prefix(".notice-").suffix(".tmp").tempfile_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(target))?;
    tmp.persist(target).map_err(|e| NotifyError::Io { path: target.to_path_buf(), source: e.error })?;
    Ok(())
}

/// Builds the channel the config's `[mail]` table names.
pub fn channel_from_config(
    mail: &crate::config::MailConfig,
) -> Result<std::sync::Arc<dyn Channel>, NotifyError> {
    use crate::config::MailChannelConfig;
    Ok(match &mail.channel {
        MailChannelConfig::Smtp { host, port, security, username, password } => {
            std::sync::Arc::new(SmtpChannel::new(SmtpSettings {
                host: host.clone(),
                port: *port,
                security: *security,
                username: username.clone(),
                password: password.clone(),
                timeout: Duration::from_secs(60),
            })?)
        }
        MailChannelConfig::Directory { path } => std::sync::Arc::new(DirectoryChannel::new(path.clone())),
        MailChannelConfig::Webhook { url, secret } => {
            std::sync::Arc::new(WebhookChannel::new(url.clone(), secret.clone(), Duration::from_secs(60))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(id: &str) -> OutgoingNotice {
        OutgoingNotice {
            message_id: id.into(),
            from: "Siirto <siirto@example.test>".into(),
            to: vec!["asiakas@example.test".into()],
            subject: "Sivustosi on siirretty".into(),
            body: "Hei Äänekosken Kukka Oy!\n".into(),
            html: None,
            return_path: None,
        }
    }

    #[test]
    fn file_names_are_sanitized() {
        assert_eq!(eml_file_name("<notice-42.mig@siirto>"), "notice-42.mig@siirto.eml");
        assert_eq!(eml_file_name("<../../etc/passwd>"), "_.._.._etc_passwd.eml");
        assert_eq!(eml_file_name("<>"), "_.eml");
        assert_eq!(eml_file_name("a/b c"), "a_b_c.eml");
    }

    #[test]
    fn message_has_the_stable_id_and_headers() {
        let text = String::from_utf8(build_message(&notice("n-1@siirto")).unwrap().formatted()).unwrap();
        assert!(text.contains("Message-ID: <n-1@siirto>\r\n"), "{text}");
        assert!(text.contains("Subject: Sivustosi on siirretty\r\n"), "{text}");
        assert!(text.contains("To: asiakas@example.test\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8"), "{text}");
    }

    #[test]
    fn bad_notices_are_permanent_errors() {
        let mut n = notice("<x@y>");
        n.to = vec!["not an address".into()];
        let err = build_message(&n).unwrap_err();
        assert!(matches!(err, NotifyError::Invalid { .. }));
        assert!(!err.is_transient());
        n.to.clear();
        assert!(build_message(&n).is_err());
        assert!(build_message(&notice("")).is_err());
    }

    #[test]
    fn half_credentials_are_refused() {
        let settings = SmtpSettings {
            host: "mail.example.test".into(),
            port: 587,
            security: SmtpSecurity::Starttls,
            username: Some("u".into()),
            password: None,
            timeout: Duration::from_secs(5),
        };
        assert!(matches!(SmtpChannel::new(settings), Err(NotifyError::Setup(_))));
    }
}
