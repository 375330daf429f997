//! WHM API 1 client: inventory and transfer-session calls against a cPanel host.
//!
//! Every call is `GET {base}/json-api/{function}?api.version=1&...` with the header
//! `Authorization: whm root:TOKEN`. The answers are parsed by pure functions
//! (`parse_listaccts`, `parse_domain_info`, `parse_transfer_log`, …) so that the documented
//! samples and their type quirks are unit-tested without a server: cPanel prints the same field
//! as a number in one place and as a string in another (`"result": "1"` in the transfer guide,
//! `1` in the specification; `pid` likewise), sizes as `"14M"`, limits as `"unlimited"`.
//!
//! Names from the remote host go through [`AccountName::parse`] and [`DomainName::parse`];
//! an item whose names or fields cannot be used is put in [`Listing::rejected`] with the reason
//! and the rest of the listing goes on, so one odd account does not block an inventory.
//!
//! Per-account transfer progress is read from the session's `master.log`, never from the
//! session state: a session can end `COMPLETED` with failed accounts (see [`item_outcomes`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::config::TlsPolicy;
use crate::names::{AccountName, DomainName};
use crate::secret::Secret;

mod parse;
mod zone;

pub use parse::*;
pub use zone::{SourceZone, ZoneRecord, parse_dns_zone};

// ---------------------------------------------------------------------------------------------
// Errors

/// What went wrong talking to WHM. Callers branch on [`WhmError::is_transient`]: transport
/// failures, 5xx/429 answers and garbage bodies are retried; a refused token, a `result = 0`
/// answer or a response of the wrong shape are not.
#[derive(Debug, thiserror::Error)]
pub enum WhmError {
    /// The client could not be built (bad URL scheme, TLS setup).
    #[error("WHM client setup: {0}")]
    Setup(String),
    /// No answer: connection refused or reset, timeout, DNS failure. Transient.
    #[error("WHM {function}{}: transport error: {source}", at(.url))]
    Transport {
        /// The WHM API function called.
        function: String,
        /// The URL called, without the query (its parameters may carry a password).
        url: String,
        /// The underlying error (its URL is stripped: query strings may carry a password).
        #[source]
        source: reqwest::Error,
    },
    /// The TLS handshake failed: the certificate does not verify or does not match the pin.
    /// Not transient: retrying will not change the certificate.
    #[error("WHM {function}{}: TLS handshake refused: {detail}", at(.url))]
    Tls {
        /// The WHM API function called.
        function: String,
        /// The URL called, without the query.
        url: String,
        /// The TLS error text.
        detail: String,
    },
    /// The server refused the API token (HTTP 401/403).
    #[error("WHM {function}{}: the host answered HTTP {status}: it rejected {token}; check the token and its ACL", at(.url))]
    Auth {
        /// The WHM API function called.
        function: String,
        /// The URL called, without the query.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Which token, by where it was read from: `the token in token_file (/path)`.
        token: String,
    },
    /// Any other non-success HTTP status. 5xx and 429 are transient.
    #[error("WHM {function}{}: HTTP {status}", at(.url))]
    Http {
        /// The WHM API function called.
        function: String,
        /// The URL called, without the query.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body is not JSON (an HTML error page from cpsrvd or a proxy). Transient: it is
    /// typically a restarting or overloaded service; the retry limit bounds it.
    #[error("WHM {function}{}: response is not JSON: {snippet:?}", at(.url))]
    NotJson {
        /// The WHM API function called.
        function: String,
        /// The URL called, without the query.
        url: String,
        /// The start of the body, whitespace collapsed.
        snippet: String,
    },
    /// WHM answered `metadata.result = 0`; `reason` is `metadata.reason`.
    #[error("WHM {function} failed: {reason}")]
    Failed {
        /// The WHM API function called.
        function: String,
        /// `metadata.reason` as WHM wrote it.
        reason: String,
    },
    /// The JSON does not have the documented shape.
    #[error("WHM {function}: unexpected response: {detail}")]
    Shape {
        /// The WHM API function called.
        function: String,
        /// What was missing or wrong.
        detail: String,
    },
}

impl WhmError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            WhmError::Transport { .. } | WhmError::NotJson { .. } => true,
            WhmError::Http { status, .. } => *status >= 500 || *status == 429,
            WhmError::Setup(_)
            | WhmError::Tls { .. }
            | WhmError::Auth { .. }
            | WhmError::Failed { .. }
            | WhmError::Shape { .. } => false,
        }
    }

    /// The WHM API function the error belongs to, if any.
    pub fn function(&self) -> Option<&str> {
        match self {
            WhmError::Setup(_) => None,
            WhmError::Transport { function, .. }
            | WhmError::Tls { function, .. }
            | WhmError::Auth { function, .. }
            | WhmError::Http { function, .. }
            | WhmError::NotJson { function, .. }
            | WhmError::Failed { function, .. }
            | WhmError::Shape { function, .. } => Some(function),
        }
    }
}

/// ` URL` for an error's message, or nothing when the pure parsers made it without one.
fn at(url: &str) -> String {
    if url.is_empty() { String::new() } else { format!(" {url}") }
}

impl WhmError {
    /// The same error with the request's URL (shown without its query) and which token was
    /// sent, which the pure parsers below do not know.
    fn for_request(mut self, shown_url: &str, token: &str) -> Self {
        match &mut self {
            WhmError::Transport { url, .. }
            | WhmError::Tls { url, .. }
            | WhmError::Http { url, .. }
            | WhmError::NotJson { url, .. } => *url = shown_url.to_owned(),
            WhmError::Auth { url, token: rejected, .. } => {
                *url = shown_url.to_owned();
                *rejected = token.to_owned();
            }
            WhmError::Setup(_) | WhmError::Failed { .. } | WhmError::Shape { .. } => {}
        }
        self
    }
}

fn auth(function: &str, status: u16) -> WhmError {
    WhmError::Auth {
        function: function.to_owned(),
        url: String::new(),
        status,
        token: "the API token".to_owned(),
    }
}

fn http(function: &str, status: u16) -> WhmError {
    WhmError::Http { function: function.to_owned(), url: String::new(), status }
}

fn not_json(function: &str, body: &[u8]) -> WhmError {
    WhmError::NotJson { function: function.to_owned(), url: String::new(), snippet: snippet(body) }
}

fn shape(function: &str, detail: impl Into<String>) -> WhmError {
    WhmError::Shape { function: function.to_owned(), detail: detail.into() }
}

// ---------------------------------------------------------------------------------------------
// Data types

/// A listing from WHM: the usable items, and the ones refused with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// Items whose names and fields were valid.
    pub items: Vec<T>,
    /// Items that were refused (invalid name, unusable field).
    pub rejected: Vec<Rejected>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self { items: Vec::new(), rejected: Vec::new() }
    }
}

/// One refused item of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The item's JSON as WHM sent it (shortened to 500 characters).
    pub raw: String,
    /// Why it was refused.
    pub reason: String,
}

/// One cPanel account from `listaccts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhmAccount {
    /// The account's user name.
    pub user: AccountName,
    /// The account's main domain.
    pub domain: DomainName,
    /// The contact address, if one is set.
    pub email: Option<String>,
    /// The hosting package.
    pub plan: String,
    /// The reseller that owns the account, or `root`.
    pub owner: String,
    /// The IPv4 address of the main domain.
    pub ip: Option<Ipv4Addr>,
    /// Disk used in MB (`diskused` "14M" → 14; "none" → 0).
    pub disk_used_mb: u64,
    /// Whether the account is suspended.
    pub suspended: bool,
    /// The home partition, e.g. `home`.
    pub partition: String,
}

/// One domain from `get_domain_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhmDomain {
    /// The domain.
    pub domain: DomainName,
    /// The account that owns it.
    pub user: AccountName,
    /// `main`, `addon`, `parked` or `sub`, as WHM wrote it.
    pub domain_type: String,
    /// The document root.
    pub docroot: String,
    /// The IPv4 address the domain is served on.
    pub ipv4: Option<Ipv4Addr>,
    /// The parent domain (for addon, parked and sub domains).
    pub parent_domain: Option<DomainName>,
}

/// One hosting package from `listpkgs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhmPackage {
    /// The package name (not a validated name: packages may contain spaces).
    pub name: String,
    /// Disk quota in MB; `None` = unlimited.
    pub quota_mb: Option<u64>,
    /// Bandwidth limit in MB; `None` = unlimited.
    pub bandwidth_mb: Option<u64>,
    /// The feature list the package uses.
    pub feature_list: Option<String>,
    /// Whether accounts of this package get a dedicated IP (`IP` = `y`).
    pub dedicated_ip: bool,
}

/// One IPv4 address from `listips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhmIp {
    /// The address.
    pub ip: Ipv4Addr,
    /// Dedicated to one account (1) or shared (0).
    pub dedicated: bool,
    /// The server's main address.
    pub mainaddr: bool,
    /// In use by an account.
    pub used: bool,
}

/// One `listaccts` entry with what inventory needs beyond [`WhmAccount`]: the contact
/// address exactly as WHM sent it, and notes on fields whose type or value is odd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountWithNotes {
    /// The parsed account.
    pub account: WhmAccount,
    /// `email` as sent (trimmed); `None` when absent, empty or `*unknown*`.
    pub email_raw: Option<String>,
    /// One sentence per odd field, e.g. `uid is a number sent as a string ("1042")`.
    pub notes: Vec<String>,
}

/// One partition from `getdiskusage` (sizes in KiB, as `df` prints them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhmPartition {
    /// The device, e.g. `/dev/vda1`.
    pub device: String,
    /// The mount point, e.g. `/home`.
    pub mount: String,
    /// Size in KiB.
    pub total_kib: u64,
    /// Used KiB.
    pub used_kib: u64,
    /// Available KiB.
    pub available_kib: u64,
}

/// Parameters of `create_remote_root_transfer_session` (run on the target; it pulls from
/// the source over SSH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRootSession {
    /// The source host (IP address or host name).
    pub host: String,
    /// The SSH user on the source, normally `root`.
    pub user: String,
    /// A key from the target's *Manage root's SSH Keys*.
    pub sshkey_name: Option<String>,
    /// The SSH password, when no key is used.
    pub password: Option<Secret>,
    /// The SSH port.
    pub port: u16,
    /// Parallel transfers.
    pub transfer_threads: u32,
    /// Parallel restores.
    pub restore_threads: u32,
}

/// A transfer session id, as returned by WHM: `[A-Za-z0-9_.-]{1,128}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferSessionId(String);

impl TransferSessionId {
    /// Validates a session id.
    pub fn parse(value: &str) -> Result<Self, WhmError> {
        let valid = !value.is_empty()
            && value.len() <= 128
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(shape(
                "transfer_session_id",
                format!("invalid transfer session id {:?}", value.chars().take(140).collect::<String>()),
            ))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TransferSessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One account to enqueue in a remote-root transfer session (module `AccountRemoteRoot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountItem {
    /// The account on the source.
    pub user: AccountName,
    /// The account name on the target.
    pub localuser: AccountName,
    /// The account's main domain.
    pub domain: DomainName,
    /// Its size in bytes (WHM uses it to pick a partition).
    pub size_bytes: u64,
}

/// A domain's mail exchanger type on a cPanel server: whether the server delivers the
/// domain's mail itself or relays it to the domain's MX. This is cPanel configuration only;
/// the DNS MX record is separate. Values as documented for `mxcheck` on
/// <https://api.docs.cpanel.net/openapi/cpanel/operation/set_always_accept> (the same
/// parameter as cPanel API 2 `Email::setmxcheck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailRouting {
    /// `local`: "Always accept the domain's mail."
    Local,
    /// `remote`: "Do not accept mail" locally; relay it to the domain's MX.
    Remote,
    /// `secondary`: "Accept mail until a higher priority mail server is available."
    Secondary,
    /// `auto`: "Allow cPanel to determine the appropriate role."
    Auto,
}

impl MailRouting {
    /// The API value: `local`, `remote`, `secondary` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            MailRouting::Local => "local",
            MailRouting::Remote => "remote",
            MailRouting::Secondary => "secondary",
            MailRouting::Auto => "auto",
        }
    }

    /// Parses an API value (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "local" => Some(MailRouting::Local),
            "remote" => Some(MailRouting::Remote),
            "secondary" => Some(MailRouting::Secondary),
            "auto" => Some(MailRouting::Auto),
            _ => None,
        }
    }
}

impl fmt::Display for MailRouting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a transfer session (`get_transfer_session_state` → `data.state_name`).
/// Session state is per session, not per account: see [`item_outcomes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// `TRANSFER_PENDING`
    TransferPending,
    /// `TRANSFER_INPROGRESS`
    TransferInProgress,
    /// `RESTORE_PENDING`
    RestorePending,
    /// `RESTORE_INPROGRESS`
    RestoreInProgress,
    /// `RUNNING`
    Running,
    /// `PAUSED` (resumable with `start_transfer_session`)
    Paused,
    /// `PENDING`
    Pending,
    /// `COMPLETED` (may still contain failed items)
    Completed,
    /// `ABORTED`
    Aborted,
    /// `FAILED`
    Failed,
}

impl SessionState {
    /// Parses WHM's `state_name`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "TRANSFER_PENDING" => Self::TransferPending,
            "TRANSFER_INPROGRESS" => Self::TransferInProgress,
            "RESTORE_PENDING" => Self::RestorePending,
            "RESTORE_INPROGRESS" => Self::RestoreInProgress,
            "RUNNING" => Self::Running,
            "PAUSED" => Self::Paused,
            "PENDING" => Self::Pending,
            "COMPLETED" => Self::Completed,
            "ABORTED" => Self::Aborted,
            "FAILED" => Self::Failed,
            _ => return None,
        })
    }

    /// The session will not change any more (COMPLETED, ABORTED, FAILED).
    pub fn is_terminal(&self) -> bool {
        match self {
            Self::Completed | Self::Aborted | Self::Failed => true,
            Self::TransferPending
            | Self::TransferInProgress
            | Self::RestorePending
            | Self::RestoreInProgress
            | Self::Running
            | Self::Paused
            | Self::Pending => false,
        }
    }
}

/// One parsed line of a transfer session's `master.log` (line-delimited JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// `type`: `out`, `warn`, `success`, `failure` or `control`.
    pub line_type: String,
    /// `contents.action`: `start`, `process-item`, `start-item`, `success-item`,
    /// `failed-item`, `complete`, `queue_count`, …
    pub action: String,
    /// `contents.queue`: `TRANSFER` or `RESTORE`.
    pub queue: Option<String>,
    /// `contents.item`: for accounts, the user name on the source.
    pub item: Option<String>,
    /// `contents.item_name`, e.g. `Account`.
    pub item_name: Option<String>,
    /// `contents.item_type`: the module, e.g. `AccountRemoteRoot`.
    pub item_type: Option<String>,
    /// `contents.msg` as text: a string as is, an object's `message` (or its JSON), a number
    /// printed.
    pub msg: String,
    /// `contents.msg.failure` of a failed item.
    pub failure: Option<String>,
    /// `contents.time` (unix seconds).
    pub time: Option<i64>,
    /// `pid` (a number in the specification's sample, a string in the guide's).
    pub pid: Option<u64>,
}

/// Where one item of a transfer session stands, decided from its own log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Mentioned in the log, no result yet.
    Queued,
    /// `success-item` in the TRANSFER queue: copied to the target, not restored yet.
    Copied,
    /// `success-item` in the RESTORE queue: the account exists on the target.
    Restored,
    /// `failed-item` in either queue, with `msg.failure`.
    Failed {
        /// `TRANSFER` or `RESTORE`.
        queue: String,
        /// The failure message.
        message: String,
    },
}

impl ItemOutcome {
    fn rank(&self) -> u8 {
        match self {
            ItemOutcome::Queued => 0,
            ItemOutcome::Copied => 1,
            ItemOutcome::Restored => 2,
            ItemOutcome::Failed { .. } => 3,
        }
    }
}

/// Decides each item's outcome from `master.log` lines, per item and never from the session
/// state: `success-item` in TRANSFER → [`ItemOutcome::Copied`], in RESTORE →
/// [`ItemOutcome::Restored`], `failed-item` in either queue → [`ItemOutcome::Failed`].
/// Outcomes only move forward (Queued < Copied < Restored < Failed), so a failure is never
/// hidden by an earlier or later success line of the same item. Only account items count
/// (`item_type` `Account…` or absent), so a package item cannot shadow a user of the same name.
pub fn item_outcomes(lines: &[LogLine]) -> BTreeMap<String, ItemOutcome> {
    let mut outcomes: BTreeMap<String, ItemOutcome> = BTreeMap::new();
    for line in lines {
        let Some(item) = line.item.as_deref().filter(|i| !i.is_empty()) else {
            continue;
        };
        if let Some(item_type) = &line.item_type
            && !item_type.starts_with("Account")
        {
            continue;
        }
        let queue = line.queue.clone().unwrap_or_default();
        let outcome = match (line.action.as_str(), queue.as_str()) {
            ("success-item", "TRANSFER") => ItemOutcome::Copied,
            ("success-item", "RESTORE") => ItemOutcome::Restored,
            ("failed-item", _) => ItemOutcome::Failed {
                message: line.failure.clone().filter(|f| !f.is_empty()).unwrap_or_else(|| line.msg.clone()),
                queue,
            },
            _ => ItemOutcome::Queued,
        };
        match outcomes.get(item) {
            Some(current) if current.rank() >= outcome.rank() => {}
            _ => {
                outcomes.insert(item.to_owned(), outcome);
            }
        }
    }
    outcomes
}

// ---------------------------------------------------------------------------------------------
// TLS pin

/// Accepts exactly the end-entity certificate whose DER SHA-256 equals the pin. Host name
/// and chain are not checked (a cPanel host's self-signed certificate has neither); the
/// handshake signatures still are, with the ring provider's algorithms, so the peer must hold
/// the pinned certificate's private key.
#[derive(Debug)]
struct PinnedCertVerifier {
    pin: [u8; 32],
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let digest: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if digest == self.pin {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate SHA-256 {} does not match the pinned {}",
                hex::encode(digest),
                hex::encode(self.pin)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn pinned_tls_config(pin: [u8; 32]) -> Result<rustls::ClientConfig, WhmError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCertVerifier { pin, algorithms: provider.signature_verification_algorithms };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WhmError::Setup(format!("TLS protocol versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// The client

/// A WHM API 1 client for one host. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct WhmClient {
    http: reqwest::Client,
    base_url: Url,
    authorization: HeaderValue,
    /// Which token is sent, by where it was read from (`the token in token_file (/path)`).
    token_origin: String,
}

impl fmt::Debug for WhmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhmClient").field("base_url", &self.base_url.as_str()).finish_non_exhaustive()
    }
}

impl WhmClient {
    /// Builds a client for `base_url` (e.g. `https://host:2087/`). `https` is verified against
    /// the web PKI or pinned per `tls`; `http` is allowed (for a loopback simulator) with a
    /// warning. `timeout` bounds each whole request.
    pub fn new(base_url: Url, token: Secret, tls: TlsPolicy, timeout: Duration) -> Result<Self, WhmError> {
        match base_url.scheme() {
            "https" => {}
            "http" => {
                // Once per URL and process: a command builds a host's client more than once.
                static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
                let mut warned = WARNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if !warned.contains(&base_url.to_string()) {
                    warned.push(base_url.to_string());
                    tracing::warn!(url = %base_url, "WHM over plain http: the API token travels unencrypted");
                }
            }
            other => {
                return Err(WhmError::Setup(format!("WHM URL scheme {other:?} is not http or https")));
            }
        }
        if base_url.cannot_be_a_base() || base_url.host().is_none() {
            return Err(WhmError::Setup(format!("WHM URL {base_url} has no host")));
        }
        let mut authorization = HeaderValue::from_str(&format!("whm root:{}", token.expose()))
            .map_err(|_| WhmError::Setup("the WHM API token contains invalid characters".into()))?;
        authorization.set_sensitive(true);

        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // WHM answers directly; a redirect would be to the SSL port or a login page.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("siirto/", env!("CARGO_PKG_VERSION")));
        if let TlsPolicy::PinSha256(pin) = tls {
            builder = builder.use_preconfigured_tls(pinned_tls_config(pin)?);
        }
        let http = builder.build().map_err(|e| WhmError::Setup(format!("HTTP client: {e}")))?;
        let token_origin = match token.origin() {
            Some(origin) => format!("the token in {origin}"),
            None => "the API token".to_owned(),
        };
        Ok(Self { http, base_url, authorization, token_origin })
    }

    /// The URL of one function call (without the parameters).
    fn function_url(&self, function: &str) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push("json-api").push(function);
        }
        url
    }

    /// A function's URL as errors show it: no credentials, no query.
    fn shown_url(&self, function: &str) -> String {
        crate::secret::shown_url(&self.function_url(function))
    }

    /// Calls one function and returns its checked envelope.
    async fn call(&self, function: &str, params: &[(&str, &str)]) -> Result<Value, WhmError> {
        let shown = self.shown_url(function);
        let mut url = self.function_url(function);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("api.version", "1");
            for (key, value) in params {
                query.append_pair(key, value);
            }
        }
        let transport =
            |err: reqwest::Error| classify_transport(function, err).for_request(&shown, &self.token_origin);
        let response = self
            .http
            .get(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        let result =
            parse_envelope(function, status, &body).map_err(|e| e.for_request(&shown, &self.token_origin));
        if let Err(err) = &result {
            tracing::debug!(error = %err, "WHM call failed");
        }
        result
    }

    /// `version`: the cPanel & WHM version, e.g. `11.110.0.17`.
    #[tracing::instrument(skip_all, fields(function = "version"))]
    pub async fn version(&self) -> Result<String, WhmError> {
        parse_version(&self.call("version", &[]).await?)
    }

    /// `listaccts` with the contact address as sent and notes on odd fields.
    #[tracing::instrument(skip_all, fields(function = "listaccts"))]
    pub async fn list_accounts_with_notes(&self) -> Result<Listing<AccountWithNotes>, WhmError> {
        parse_listaccts_with_notes(&self.call("listaccts", &[]).await?)
    }

    /// `getdiskusage`: the server's partitions with their free space.
    #[tracing::instrument(skip_all, fields(function = "getdiskusage"))]
    pub async fn disk_partitions(&self) -> Result<Vec<WhmPartition>, WhmError> {
        parse_getdiskusage(&self.call("getdiskusage", &[]).await?)
    }

    /// `listaccts`: every account on the server.
    #[tracing::instrument(skip_all, fields(function = "listaccts"))]
    pub async fn list_accounts(&self) -> Result<Listing<WhmAccount>, WhmError> {
        parse_listaccts(&self.call("listaccts", &[]).await?)
    }

    /// `get_domain_info`: every domain on the server with its owner and type.
    #[tracing::instrument(skip_all, fields(function = "get_domain_info"))]
    pub async fn domain_info(&self) -> Result<Listing<WhmDomain>, WhmError> {
        parse_domain_info(&self.call("get_domain_info", &[]).await?)
    }

    /// `listresellers`: the reseller user names.
    #[tracing::instrument(skip_all, fields(function = "listresellers"))]
    pub async fn list_resellers(&self) -> Result<Vec<AccountName>, WhmError> {
        parse_listresellers(&self.call("listresellers", &[]).await?)
    }

    /// `listpkgs`: the hosting packages.
    #[tracing::instrument(skip_all, fields(function = "listpkgs"))]
    pub async fn list_packages(&self) -> Result<Vec<WhmPackage>, WhmError> {
        parse_listpkgs(&self.call("listpkgs", &[]).await?)
    }

    /// `listips`: the server's IPv4 addresses.
    #[tracing::instrument(skip_all, fields(function = "listips"))]
    pub async fn list_ips(&self) -> Result<Vec<WhmIp>, WhmError> {
        parse_listips(&self.call("listips", &[]).await?)
    }

    /// `create_remote_root_transfer_session` (call it on the target host).
    #[tracing::instrument(skip_all, fields(function = "create_remote_root_transfer_session", host = %req.host))]
    pub async fn create_remote_root_transfer_session(
        &self,
        req: &RemoteRootSession,
    ) -> Result<TransferSessionId, WhmError> {
        let port = req.port.to_string();
        let transfer_threads = req.transfer_threads.max(1).to_string();
        let restore_threads = req.restore_threads.max(1).to_string();
        let mut params: Vec<(&str, &str)> = vec![
            ("host", &req.host),
            ("user", &req.user),
            ("port", &port),
            ("comm_transport", "ssh"),
            ("compressed", "0"),
            ("copy_reseller_privs", "1"),
            ("enable_custom_pkgacct", "0"),
            ("low_priority", "0"),
            ("transfer_threads", &transfer_threads),
            ("restore_threads", &restore_threads),
            ("unencrypted", "0"),
            ("unrestricted_restore", "0"),
            ("use_backups", "0"),
        ];
        if let Some(key) = &req.sshkey_name {
            params.push(("sshkey_name", key));
        }
        if let Some(password) = &req.password {
            params.push(("password", password.expose()));
        }
        parse_create_session(&self.call("create_remote_root_transfer_session", &params).await?)
    }

    /// `enqueue_transfer_item` with module `AccountRemoteRoot`.
    #[tracing::instrument(skip_all, fields(function = "enqueue_transfer_item", session = %session, user = %item.user.as_str()))]
    pub async fn enqueue_account(
        &self,
        session: &TransferSessionId,
        item: &AccountItem,
    ) -> Result<(), WhmError> {
        let size = item.size_bytes.max(1).to_string();
        self.call(
            "enqueue_transfer_item",
            &[
                ("transfer_session_id", session.as_str()),
                ("module", "AccountRemoteRoot"),
                ("user", item.user.as_str()),
                ("localuser", item.localuser.as_str()),
                ("detected_remote_user", item.user.as_str()),
                ("domain", item.domain.as_str()),
                ("size", &size),
            ],
        )
        .await
        .map(drop)
    }

    /// `start_transfer_session`: starts (or restarts a paused) session.
    #[tracing::instrument(skip_all, fields(function = "start_transfer_session", session = %session))]
    pub async fn start_transfer_session(&self, session: &TransferSessionId) -> Result<(), WhmError> {
        self.session_call("start_transfer_session", session).await
    }

    /// `pause_transfer_session`.
    #[tracing::instrument(skip_all, fields(function = "pause_transfer_session", session = %session))]
    pub async fn pause_transfer_session(&self, session: &TransferSessionId) -> Result<(), WhmError> {
        self.session_call("pause_transfer_session", session).await
    }

    /// `abort_transfer_session`.
    #[tracing::instrument(skip_all, fields(function = "abort_transfer_session", session = %session))]
    pub async fn abort_transfer_session(&self, session: &TransferSessionId) -> Result<(), WhmError> {
        self.session_call("abort_transfer_session", session).await
    }

    async fn session_call(&self, function: &str, session: &TransferSessionId) -> Result<(), WhmError> {
        self.call(function, &[("transfer_session_id", session.as_str())]).await.map(drop)
    }

    /// `get_transfer_session_state`.
    #[tracing::instrument(skip_all, fields(function = "get_transfer_session_state", session = %session))]
    pub async fn transfer_session_state(
        &self,
        session: &TransferSessionId,
    ) -> Result<SessionState, WhmError> {
        parse_session_state(
            &self.call("get_transfer_session_state", &[("transfer_session_id", session.as_str())]).await?,
        )
    }

    /// `fetch_transfer_session_log` of `master.log`, parsed line by line.
    #[tracing::instrument(skip_all, fields(function = "fetch_transfer_session_log", session = %session))]
    pub async fn transfer_session_log(&self, session: &TransferSessionId) -> Result<Vec<LogLine>, WhmError> {
        parse_transfer_log(
            &self
                .call(
                    "fetch_transfer_session_log",
                    &[("transfer_session_id", session.as_str()), ("logfile", "master.log")],
                )
                .await?,
        )
    }

    /// `remote_basic_credential_check` (call it on the target): can the target log in to the
    /// source over SSH with these credentials? Parameters as documented on
    /// <https://api.docs.cpanel.net/openapi/whm/operation/remote_basic_credential_check>
    /// (`host`, `user`, `port`, `sshkey_name` or `password`). A refusal is
    /// [`WhmError::Failed`] with the target's reason.
    #[tracing::instrument(skip_all, fields(function = "remote_basic_credential_check", host = %req.host))]
    pub async fn remote_basic_credential_check(
        &self,
        req: &RemoteRootSession,
    ) -> Result<CredentialCheck, WhmError> {
        let port = req.port.to_string();
        let mut params: Vec<(&str, &str)> = vec![("host", &req.host), ("user", &req.user), ("port", &port)];
        if let Some(key) = &req.sshkey_name {
            params.push(("sshkey_name", key));
        }
        if let Some(password) = &req.password {
            params.push(("password", password.expose()));
        }
        parse_credential_check(&self.call("remote_basic_credential_check", &params).await?)
    }

    /// `analyze_transfer_session_remote` (on the target): checks the remote server's
    /// credentials a created session uses; metadata only
    /// (<https://api.docs.cpanel.net/openapi/whm/operation/analyze_transfer_session_remote>).
    #[tracing::instrument(skip_all, fields(function = "analyze_transfer_session_remote", session = %session))]
    pub async fn analyze_transfer_session_remote(&self, session: &TransferSessionId) -> Result<(), WhmError> {
        self.session_call("analyze_transfer_session_remote", session).await
    }

    /// `enqueue_transfer_item` with module `PackageRemoteRoot` and its one required parameter
    /// `package` (<https://api.docs.cpanel.net/openapi/whm/operation/enqueue_transfer_item>).
    #[tracing::instrument(skip_all, fields(function = "enqueue_transfer_item", session = %session, package))]
    pub async fn enqueue_package(&self, session: &TransferSessionId, package: &str) -> Result<(), WhmError> {
        self.call(
            "enqueue_transfer_item",
            &[
                ("transfer_session_id", session.as_str()),
                ("module", "PackageRemoteRoot"),
                ("package", package),
            ],
        )
        .await
        .map(drop)
    }

    /// `setsiteip` for an account (`user`, `ip`): moves the account's sites to that IPv4
    /// address (<https://api.docs.cpanel.net/openapi/whm/operation/setsiteip>).
    #[tracing::instrument(skip_all, fields(function = "setsiteip", user = %user.as_str(), %ip))]
    pub async fn set_site_ip(&self, user: &AccountName, ip: Ipv4Addr) -> Result<(), WhmError> {
        let ip = ip.to_string();
        self.call("setsiteip", &[("user", user.as_str()), ("ip", &ip)]).await.map(drop)
    }

    /// `list_pops_for`: the account's email addresses (`data.pops[]`), sorted
    /// (<https://api.docs.cpanel.net/openapi/whm/operation/list_pops_for>).
    #[tracing::instrument(skip_all, fields(function = "list_pops_for", user = %user.as_str()))]
    pub async fn list_pops_for(&self, user: &AccountName) -> Result<Vec<String>, WhmError> {
        parse_list_pops(user, &self.call("list_pops_for", &[("user", user.as_str())]).await?)
    }

    /// `suspendacct` with a reason (only root can unsuspend is not set).
    #[tracing::instrument(skip_all, fields(function = "suspendacct", user = %user.as_str()))]
    pub async fn suspend_account(&self, user: &AccountName, reason: &str) -> Result<(), WhmError> {
        self.call("suspendacct", &[("user", user.as_str()), ("reason", reason)]).await.map(drop)
    }

    /// `unsuspendacct`: the account serves its sites and mail again.
    #[tracing::instrument(skip_all, fields(function = "unsuspendacct", user = %user.as_str()))]
    pub async fn unsuspend_account(&self, user: &AccountName) -> Result<(), WhmError> {
        self.call("unsuspendacct", &[("user", user.as_str())]).await.map(drop)
    }

    /// `listaccts` searched for exactly this user: the account, or `None` when the server has
    /// no such account (what a step checks before it suspends or removes one).
    #[tracing::instrument(skip_all, fields(function = "listaccts", user = %user.as_str()))]
    pub async fn account(&self, user: &AccountName) -> Result<Option<WhmAccount>, WhmError> {
        let found = parse_listaccts(
            &self
                .call(
                    "listaccts",
                    &[("searchtype", "user"), ("searchmethod", "exact"), ("search", user.as_str())],
                )
                .await?,
        )?;
        Ok(found.items.into_iter().find(|a| a.user == *user))
    }

    /// `removeacct`; `keep_dns` keeps the account's DNS zones (`keepdns=1`).
    #[tracing::instrument(skip_all, fields(function = "removeacct", user = %user.as_str(), keep_dns))]
    pub async fn remove_account(&self, user: &AccountName, keep_dns: bool) -> Result<(), WhmError> {
        self.call("removeacct", &[("username", user.as_str()), ("keepdns", if keep_dns { "1" } else { "0" })])
            .await
            .map(drop)
    }

    /// Calls a cPanel API 2 function as `user` through WHM (`/json-api/cpanel`) and returns
    /// its checked `cpanelresult.data`.
    async fn call_cpanel_api2(
        &self,
        user: &AccountName,
        module: &str,
        func: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Value>, WhmError> {
        let function = format!("cpanel {module}::{func}");
        let shown = self.shown_url("cpanel");
        let mut url = self.function_url("cpanel");
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("cpanel_jsonapi_user", user.as_str());
            query.append_pair("cpanel_jsonapi_apiversion", "2");
            query.append_pair("cpanel_jsonapi_module", module);
            query.append_pair("cpanel_jsonapi_func", func);
            for (key, value) in params {
                query.append_pair(key, value);
            }
        }
        let transport =
            |err: reqwest::Error| classify_transport(&function, err).for_request(&shown, &self.token_origin);
        let response = self
            .http
            .get(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        let result = parse_cpanel_api2(&function, status, &body)
            .map_err(|e| e.for_request(&shown, &self.token_origin));
        if let Err(err) = &result {
            tracing::debug!(error = %err, "cPanel API 2 call through WHM failed");
        }
        result
    }

    /// Sets `domain`'s mail exchanger type on this server: cPanel API 2 `Email::setmxcheck`
    /// through WHM (`mxcheck` = `local`/`remote`/`secondary`/`auto`), documented at
    /// <https://api.docs.cpanel.net/cpanel-api-2/cpanel-api-2-modules-email/cpanel-api-2-functions-email-setmxcheck>
    /// ("no equivalent UAPI function exists"; the values are listed on the UAPI
    /// `Email::set_always_accept` page). Only cPanel's configuration changes, not DNS.
    /// Setting the value it already has succeeds again.
    #[tracing::instrument(skip_all, fields(function = "Email::setmxcheck", user = %user.as_str(), domain = %domain, routing = %routing))]
    pub async fn set_mail_routing(
        &self,
        user: &AccountName,
        domain: &DomainName,
        routing: MailRouting,
    ) -> Result<(), WhmError> {
        let data = self
            .call_cpanel_api2(
                user,
                "Email",
                "setmxcheck",
                &[("domain", domain.as_str()), ("mxcheck", routing.as_str())],
            )
            .await?;
        parse_setmxcheck(&data)
    }

    /// `domain`'s configured mail exchanger type: cPanel API 2 `Email::getmxcheck` through WHM
    /// (<https://api.docs.cpanel.net/cpanel-api-2/cpanel-api-2-modules-email/cpanel-api-2-functions-email-getmxcheck>).
    #[tracing::instrument(skip_all, fields(function = "Email::getmxcheck", user = %user.as_str(), domain = %domain))]
    pub async fn mail_routing(
        &self,
        user: &AccountName,
        domain: &DomainName,
    ) -> Result<MailRouting, WhmError> {
        let data = self.call_cpanel_api2(user, "Email", "getmxcheck", &[("domain", domain.as_str())]).await?;
        parse_getmxcheck(&data)
    }
}

/// Turns a reqwest error into `Tls` (a rustls error somewhere in the chain: not transient)
/// or `Transport` (transient). The URL is stripped: a query string may carry a password.
fn classify_transport(function: &str, err: reqwest::Error) -> WhmError {
    let err = err.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return WhmError::Tls {
                function: function.to_owned(),
                url: String::new(),
                detail: tls.to_string(),
            };
        }
        // `io::Error::source` skips the error it wraps (hyper nests them), so step into it.
        source = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    WhmError::Transport { function: function.to_owned(), url: String::new(), source: err }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(data: Value) -> Value {
        json!({"data": data, "metadata": {"command": "x", "reason": "OK", "result": 1, "version": 1}})
    }

    /// The listaccts / accountsummary response sample from the cPanel operation pages
    /// (api.docs.cpanel.net/openapi/whm/operation/accountsummary), quoted field by field,
    /// plus a second account with the other documented quirks and three refused ones.
    #[test]
    fn listaccts_documented_sample_and_quirks() {
        let body = br#"{
          "data": {"acct": [
            {"backup": 0, "child_nodes": [{"alias": "nodealias", "workload": "Mail"}],
             "disklimit": "unlimited", "diskused": "14M", "domain": "example.com",
             "email": "username@example.com", "inodeslimit": "unlimited", "inodesused": 1,
             "ip": "192.168.0.128", "ipv6": ["0101:ca75:0101:ca75:0101:ca75:0101:ca77"],
             "is_locked": 0, "legacy_backup": 0, "mailbox_format": "maildir",
             "max_defer_fail_percentage": "unlimited", "max_email_per_hour": "unlimited",
             "max_emailacct_quota": "unlimited", "maxaddons": "unlimited", "maxftp": "unlimited",
             "maxlst": "unlimited", "maxparked": "unlimited", "maxpop": "unlimited",
             "maxsql": "unlimited", "maxsub": "unlimited",
             "min_defer_fail_to_trigger_protection": "5", "outgoing_mail_hold": 0,
             "outgoing_mail_suspended": 0, "owner": "root", "partition": "home",
             "plan": "packagename", "shell": "/bin/bash", "startdate": "13 May 22 16:03",
             "suspended": 0, "suspendreason": "not suspended", "suspendtime": null,
             "temporary": 0, "theme": "jupiter", "uid": 0, "unix_startdate": 1369256589,
             "user": "username"},
            {"user": "kukka0002", "domain": "kukka-0002.test", "diskused": "none",
             "disklimit": "500M", "suspended": "1", "ipv6": null, "ip": "10.0.0.2",
             "email": "", "owner": "reseller1", "plan": "gold", "partition": "home2"},
            {"user": "kukka0003", "domain": "kukka-0003.test", "diskused": 7, "suspended": "0"},
            {"user": "Bad User", "domain": "bad.test", "diskused": "1M"},
            {"user": "kukka0005", "domain": "exa mple..com", "diskused": "1M"},
            {"user": "kukka0006", "domain": "kukka-0006.test", "diskused": "lots"}
          ]},
          "metadata": {"command": "listaccts", "reason": "OK", "result": 1, "version": 1}
        }"#;
        let json = parse_envelope("listaccts", 200, body).unwrap();
        let listing = parse_listaccts(&json).unwrap();
        assert_eq!(listing.items.len(), 3, "{listing:#?}");
        assert_eq!(listing.rejected.len(), 3, "{listing:#?}");

        let a = &listing.items[0];
        assert_eq!(a.user.as_str(), "username");
        assert_eq!(a.domain.as_str(), "example.com");
        assert_eq!(a.email.as_deref(), Some("username@example.com"));
        assert_eq!(a.plan, "packagename");
        assert_eq!(a.owner, "root");
        assert_eq!(a.ip, Some(Ipv4Addr::new(192, 168, 0, 128)));
        assert_eq!(a.disk_used_mb, 14);
        assert!(!a.suspended);
        assert_eq!(a.partition, "home");

        let b = &listing.items[1];
        assert_eq!(b.disk_used_mb, 0, "diskused \"none\"");
        assert!(b.suspended, "suspended \"1\" as a string");
        assert_eq!(b.email, None, "empty contact address");
        assert_eq!(b.owner, "reseller1");

        let c = &listing.items[2];
        assert_eq!(c.disk_used_mb, 7, "diskused as a number");
        assert!(!c.suspended);
        assert_eq!(c.ip, None);

        assert!(listing.rejected[0].reason.contains("cPanel user"));
        assert!(listing.rejected[0].raw.contains("Bad User"));
        assert!(listing.rejected[1].reason.contains("domain"));
        assert!(listing.rejected[2].reason.contains("diskused"));
    }

    /// The getdiskusage response sample of its operation page, and odd listaccts fields.
    #[test]
    fn getdiskusage_sample_and_account_notes() {
        let json = envelope(json!({"partition": [
            {"available": 377856, "device": "/dev/vda1", "disk": "vda1", "filesystem": "/",
             "inodes_available": 20575847, "inodes_ipercentage": 2, "inodes_total": 20970944,
             "inodes_used": 395097, "mount": "/boot", "percentage": 20, "total": 495844,
             "used": 92388},
            {"available": "1024", "device": "/dev/vdb1", "mount": "/home", "total": "4096", "used": 3072}
        ]}));
        let parts = parse_getdiskusage(&json).unwrap();
        assert_eq!(parts[0].mount, "/boot");
        assert_eq!(parts[0].available_kib, 377856);
        assert_eq!(parts[1].total_kib, 4096);
        assert!(parse_getdiskusage(&envelope(json!({"partition": [{"mount": "/"}]}))).is_err());

        let listed = parse_listaccts_with_notes(&envelope(json!({"acct": [
            {"user": "odd", "domain": "odd.test", "email": " not-an-address ", "uid": "1042",
             "suspended": "0", "diskused": 12},
            {"user": "plain", "domain": "plain.test", "email": "*unknown*", "uid": 1001, "diskused": "0M"}
        ]})))
        .unwrap();
        let odd = &listed.items[0];
        assert_eq!(odd.email_raw.as_deref(), Some("not-an-address"));
        assert_eq!(odd.account.disk_used_mb, 12);
        assert_eq!(odd.notes.len(), 3, "{:?}", odd.notes);
        assert!(odd.notes[0].contains("suspended"));
        assert!(odd.notes.iter().any(|n| n.contains("uid is a number sent as a string")));
        let plain = &listed.items[1];
        assert_eq!(plain.email_raw, None);
        assert!(plain.notes.is_empty());
    }

    #[test]
    fn sizes_and_limits() {
        assert_eq!(parse_size_mb(&json!("14M")), Ok(14));
        assert_eq!(parse_size_mb(&json!("0M")), Ok(0));
        assert_eq!(parse_size_mb(&json!("none")), Ok(0));
        assert_eq!(parse_size_mb(&json!(12)), Ok(12));
        assert_eq!(parse_size_mb(&json!("1.5G")), Ok(1536));
        assert_eq!(parse_size_mb(&json!("512K")), Ok(1));
        assert!(parse_size_mb(&json!("-3M")).is_err());
        assert_eq!(parse_limit_mb(&json!("unlimited")), Ok(None));
        assert_eq!(parse_limit_mb(&json!("*unknown*")), Ok(None));
        assert_eq!(parse_limit_mb(&json!("500M")), Ok(Some(500)));
        assert_eq!(parse_limit_mb(&json!(250)), Ok(Some(250)));
    }

    /// Field names and values of the get_domain_info description (api-evangelist/cpanel,
    /// cpanel-domain-information-api-openapi.yml; whm-api.md §1): `ipv6` may be null.
    #[test]
    fn domain_info_sample_and_rejects() {
        let json = envelope(json!({"domains": [
            {"docroot": "/home/example/public_html", "domain": "example.com",
             "domain_type": "main", "ipv4": "192.168.0.20", "ipv4_ssl": "192.168.0.20",
             "ipv6": null, "ipv6_is_dedicated": 0, "modsecurity_enabled": 1,
             "parent_domain": "example.com", "php_version": "ea-php54", "port": "80",
             "port_ssl": "443", "user": "example", "user_owner": "root"},
            {"docroot": "/home/example/public_html/addon.test", "domain": "addon.test",
             "domain_type": "addon", "ipv4": "192.168.0.20", "ipv6": "2001:db8::1",
             "parent_domain": "example.com", "user": "example", "user_owner": "root"},
            {"domain": "sub.example.com", "domain_type": "sub", "ipv4": "",
             "parent_domain": "", "user": "example", "docroot": "/home/example/sub"},
            {"domain": "../etc", "domain_type": "addon", "user": "example"},
            {"domain": "fine.test", "domain_type": "addon", "user": "root;rm"}
        ]}));
        let listing = parse_domain_info(&json).unwrap();
        assert_eq!(listing.items.len(), 3);
        assert_eq!(listing.rejected.len(), 2);
        let main = &listing.items[0];
        assert_eq!(main.domain.as_str(), "example.com");
        assert_eq!(main.user.as_str(), "example");
        assert_eq!(main.domain_type, "main");
        assert_eq!(main.docroot, "/home/example/public_html");
        assert_eq!(main.ipv4, Some(Ipv4Addr::new(192, 168, 0, 20)));
        assert_eq!(main.parent_domain.as_ref().map(DomainName::as_str), Some("example.com"));
        assert_eq!(listing.items[1].domain_type, "addon");
        assert_eq!(listing.items[2].ipv4, None);
        assert_eq!(listing.items[2].parent_domain, None);
    }

    /// The get_transfer_session_state example of the transfer guide prints
    /// `"result": "1"` as a string; the specification prints `1`.
    #[test]
    fn envelope_result_as_string_and_number() {
        let guide = br#"{"data": {"state_name": "TRANSFER_INPROGRESS"},
            "metadata": {"version": 1, "reason": "OK", "result": "1",
                         "command": "get_transfer_session_state"}}"#;
        let json = parse_envelope("get_transfer_session_state", 200, guide).unwrap();
        assert_eq!(parse_session_state(&json).unwrap(), SessionState::TransferInProgress);
        for name in
            ["TRANSFER_PENDING", "RESTORE_PENDING", "RESTORE_INPROGRESS", "RUNNING", "PAUSED", "PENDING"]
        {
            let s = parse_session_state(&envelope(json!({"state_name": name}))).unwrap();
            assert!(!s.is_terminal(), "{name}");
        }
        for name in ["COMPLETED", "ABORTED", "FAILED"] {
            let s = parse_session_state(&envelope(json!({"state_name": name}))).unwrap();
            assert!(s.is_terminal(), "{name}");
        }
        assert!(matches!(
            parse_session_state(&envelope(json!({"state_name": "EXPLODED"}))),
            Err(WhmError::Shape { .. })
        ));
    }

    #[test]
    fn result_zero_is_failed_and_not_transient() {
        for result in ["0", "\"0\""] {
            let body = format!(
                r#"{{"metadata": {{"command": "suspendacct", "reason": "The user “nobody” does not exist.", "result": {result}, "version": 1}}}}"#
            );
            let err = parse_envelope("suspendacct", 200, body.as_bytes()).unwrap_err();
            match &err {
                WhmError::Failed { function, reason } => {
                    assert_eq!(function, "suspendacct");
                    assert_eq!(reason, "The user “nobody” does not exist.");
                }
                other => panic!("expected Failed, got {other:?}"),
            }
            assert!(!err.is_transient());
        }
        // Metadata-only success (enqueue_transfer_item, pause/abort).
        let ok =
            br#"{"metadata":{"command":"pause_transfer_session","reason":"OK.","result":1,"version":1}}"#;
        assert!(parse_envelope("pause_transfer_session", 200, ok).is_ok());
    }

    #[test]
    fn non_json_body_and_http_statuses() {
        let html = b"<html>\n<head><title>cPanel &amp; WHM</title></head>\n<body>  The service is restarting  </body></html>";
        let err = parse_envelope("listaccts", 200, html).unwrap_err();
        match &err {
            WhmError::NotJson { function, snippet, .. } => {
                assert_eq!(function, "listaccts");
                assert!(snippet.starts_with("<html> <head><title>"), "{snippet}");
                assert!(snippet.len() <= 160 * 4);
            }
            other => panic!("expected NotJson, got {other:?}"),
        }
        assert!(err.is_transient());

        let auth = parse_envelope("listaccts", 403, b"Access denied").unwrap_err();
        assert!(matches!(auth, WhmError::Auth { status: 403, .. }));
        assert!(!auth.is_transient());
        for (status, transient) in [(500, true), (503, true), (429, true), (404, false)] {
            let err = parse_envelope("listaccts", status, b"{}").unwrap_err();
            assert!(matches!(err, WhmError::Http { .. }));
            assert_eq!(err.is_transient(), transient, "{status}");
        }
        let api0 = br#"{"status": 1, "statusmsg": "Ok", "acct": []}"#;
        assert!(matches!(parse_envelope("listaccts", 200, api0), Err(WhmError::Shape { .. })));
    }

    /// The master.log sample of the fetch_transfer_session_log operation page starts with
    /// these lines (pid as a number, msg as a number for `version`):
    /// `{"contents":{"action":"start","time":1598991042,"child_number":0},"pid":12789,"type":"control","indent":0,"partial":0}`
    /// `{"partial":0,"indent":0,"type":"control","pid":12789,"contents":{"time":1598991042,"action":"initiator","child_number":0,"msg":"norootcopy"}}`
    /// `{"partial":0,"indent":0,"pid":12789,"type":"control","contents":{"msg":2.3,"child_number":0,"time":1598991042,"action":"version"}}`
    /// `{"type":"control","pid":12789,"contents":{"time":1598991042,"queue":"TRANSFER","action":"queue_count","msg":1,"child_number":0},"partial":0,"indent":0}`
    /// The item lines follow the shape whm-api.md §4 documents from the same sample and the
    /// transfer guide (pid as a string there; failures carry `msg.failure`).
    const MASTER_LOG: &str = concat!(
        r#"{"contents":{"action":"start","time":1598991042,"child_number":0},"pid":12789,"type":"control","indent":0,"partial":0}"#,
        "\n",
        r#"{"partial":0,"indent":0,"type":"control","pid":12789,"contents":{"time":1598991042,"action":"initiator","child_number":0,"msg":"norootcopy"}}"#,
        "\n",
        r#"{"partial":0,"indent":0,"pid":12789,"type":"control","contents":{"msg":2.3,"child_number":0,"time":1598991042,"action":"version"}}"#,
        "\n",
        r#"{"type":"control","pid":12789,"contents":{"time":1598991042,"queue":"TRANSFER","action":"queue_count","msg":3,"child_number":0},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"control","pid":"12790","contents":{"action":"process-item","item":"alice","item_name":"Account","item_type":"AccountRemoteRoot","queue":"TRANSFER","msg":"item-TRANSFER_AccountRemoteRoot_alice","time":1598991043,"child_number":1},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"success","pid":"12790","contents":{"action":"success-item","item":"alice","item_name":"Account","item_type":"AccountRemoteRoot","queue":"TRANSFER","msg":{"message":"Transfer complete","warnings":[],"skipped_items":[],"dangerous_items":[],"altered_items":[]},"time":1598991050,"child_number":1},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"success","pid":12791,"contents":{"action":"success-item","item":"alice","item_name":"Account","item_type":"AccountRemoteRoot","queue":"RESTORE","msg":{"message":"Restore complete","warnings":["a warning"]},"time":1598991060,"child_number":1},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"success","pid":12790,"contents":{"action":"success-item","item":"bob","item_name":"Account","item_type":"AccountRemoteRoot","queue":"TRANSFER","msg":{"message":"ok"},"time":1598991051,"child_number":2},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"failure","pid":12791,"contents":{"action":"failed-item","item":"root","item_name":"Account","item_type":"AccountRemoteRoot","queue":"RESTORE","msg":{"failure":"The account “root” already exists on “control.box.new”.","warnings":[]},"time":1598991061,"child_number":3},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"control","pid":12790,"contents":{"action":"start-item","item":"carol","item_name":"Account","item_type":"AccountRemoteRoot","queue":"TRANSFER","msg":{"size":1024},"time":1598991062,"child_number":4},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"success","pid":12790,"contents":{"action":"success-item","item":"carol","item_name":"Package","item_type":"PackageRemoteRoot","queue":"RESTORE","msg":"ok","time":1598991063,"child_number":5},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"control","pid":12789,"contents":{"action":"complete","queue":"RESTORE","time":1598991070,"child_number":0},"partial":0,"indent":0}"#,
        "\n",
        r#"{"type":"control","pid":12789,"contents":{"action":"comp"#,
    );

    #[test]
    fn master_log_lines_and_item_outcomes() {
        let json = envelope(json!({ "log": MASTER_LOG }));
        let lines = parse_transfer_log(&json).unwrap();
        // The truncated last line (being written) is skipped.
        assert_eq!(lines.len(), 12);
        assert_eq!(lines[0].action, "start");
        assert_eq!(lines[0].pid, Some(12789));
        assert_eq!(lines[1].msg, "norootcopy");
        assert_eq!(lines[2].msg, "2.3");
        assert_eq!(lines[3].queue.as_deref(), Some("TRANSFER"));
        assert_eq!(lines[4].pid, Some(12790), "pid as a string");
        assert_eq!(lines[4].item.as_deref(), Some("alice"));
        assert_eq!(lines[5].msg, "Transfer complete");
        assert_eq!(lines[5].line_type, "success");
        assert_eq!(lines[5].time, Some(1598991050));
        assert_eq!(
            lines[8].failure.as_deref(),
            Some("The account “root” already exists on “control.box.new”.")
        );

        let outcomes = item_outcomes(&lines);
        assert_eq!(outcomes.len(), 4, "{outcomes:?}");
        assert_eq!(outcomes["alice"], ItemOutcome::Restored);
        assert_eq!(outcomes["bob"], ItemOutcome::Copied);
        assert_eq!(
            outcomes["root"],
            ItemOutcome::Failed {
                queue: "RESTORE".into(),
                message: "The account “root” already exists on “control.box.new”.".into()
            }
        );
        // The package line with the same name does not count for the account.
        assert_eq!(outcomes["carol"], ItemOutcome::Queued);
    }

    #[test]
    fn a_failure_is_never_hidden_by_success_lines() {
        let line = |action: &str, queue: &str| LogLine {
            line_type: "x".into(),
            action: action.into(),
            queue: Some(queue.into()),
            item: Some("dave".into()),
            item_name: Some("Account".into()),
            item_type: None,
            msg: "m".into(),
            failure: None,
            time: None,
            pid: None,
        };
        let lines = vec![
            line("success-item", "TRANSFER"),
            line("failed-item", "RESTORE"),
            line("success-item", "RESTORE"),
        ];
        assert_eq!(
            item_outcomes(&lines)["dave"],
            ItemOutcome::Failed { queue: "RESTORE".into(), message: "m".into() }
        );
    }

    #[test]
    fn other_inventory_calls() {
        assert_eq!(parse_version(&envelope(json!({"version": "11.88.0.1"}))).unwrap(), "11.88.0.1");
        let resellers =
            parse_listresellers(&envelope(json!({"reseller": ["reseller1", "Bad Name", 5]}))).unwrap();
        assert_eq!(resellers.len(), 1);
        assert_eq!(resellers[0].as_str(), "reseller1");

        let pkgs = parse_listpkgs(&envelope(json!({"pkg": [
            {"name": "package1", "QUOTA": "unlimited", "BWLIMIT": 1000, "FEATURELIST": "default", "IP": "n"},
            {"name": "reseller_Gold Plan", "QUOTA": "2048", "BWLIMIT": "unlimited", "IP": "y"}
        ]})))
        .unwrap();
        assert_eq!(pkgs[0].quota_mb, None);
        assert_eq!(pkgs[0].bandwidth_mb, Some(1000));
        assert_eq!(pkgs[0].feature_list.as_deref(), Some("default"));
        assert!(!pkgs[0].dedicated_ip);
        assert_eq!(pkgs[1].quota_mb, Some(2048));
        assert!(pkgs[1].dedicated_ip);

        let ips = parse_listips(&envelope(json!({"ip": [
            {"active": 1, "dedicated": 0, "if": "eth0", "ip": "192.168.0.20", "mainaddr": 1,
             "netmask": "255.255.255.0", "network": "192.168.0.0", "public_ip": "203.0.113.20",
             "removable": 0, "used": 1},
            {"active": 1, "dedicated": "1", "ip": "192.168.0.21", "mainaddr": "0", "used": "0"},
            {"ip": "2001:db8::1"}
        ]})))
        .unwrap();
        assert_eq!(ips.len(), 2);
        assert!(ips[0].mainaddr && ips[0].used && !ips[0].dedicated);
        assert!(ips[1].dedicated && !ips[1].mainaddr && !ips[1].used);

        let id = parse_create_session(&envelope(json!({
            "analyze_rawout": "<html>…</html>", "create_rawout": "",
            "transfer_session_id": "vm5docscpanelcopya20140224163412sylG"
        })))
        .unwrap();
        assert_eq!(id.as_str(), "vm5docscpanelcopya20140224163412sylG");
        assert!(parse_create_session(&envelope(json!({"transfer_session_id": "../../x y"}))).is_err());
    }

    #[test]
    fn function_urls_and_secret_free_debug() {
        let client = WhmClient::new(
            Url::parse("https://whm.example.test:2087").unwrap(),
            Secret::new("TOPSECRET"),
            TlsPolicy::PinSha256([7; 32]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(
            client.function_url("listaccts").as_str(),
            "https://whm.example.test:2087/json-api/listaccts"
        );
        assert!(!format!("{client:?}").contains("TOPSECRET"));
        assert!(matches!(
            WhmClient::new(
                Url::parse("ftp://x.test/").unwrap(),
                Secret::new("t"),
                TlsPolicy::WebPki,
                Duration::from_secs(1)
            ),
            Err(WhmError::Setup(_))
        ));
    }

    #[test]
    fn cpanel_api2_envelope_success_failure_and_whm_refusals() {
        // The shape of the cPanel API 2 return-data page (`Email::loadfilter` there).
        let ok = json!({ "cpanelresult": {
            "apiversion": 2,
            "func": "setmxcheck",
            "module": "Email",
            "event": { "result": 1 },
            "data": [{
                "checkmx": { "changed": 1, "detected": "remote", "isprimary": 0, "local": 0,
                             "remote": 1, "secondary": 0, "mxcheck": "remote", "warnings": [] },
                "detected": "remote",
                "mxcheck": "remote",
                "results": "Set Always Accept Status to: remote",
                "status": 1,
                "statusmsg": "Set Always Accept Status to: remote",
            }],
        }});
        let data = parse_cpanel_api2("cpanel Email::setmxcheck", 200, ok.to_string().as_bytes()).unwrap();
        assert_eq!(data.len(), 1);
        parse_setmxcheck(&data).unwrap();

        // A function-level failure: event.result 0 with an error.
        let failed = json!({ "cpanelresult": {
            "apiversion": 2, "func": "setmxcheck", "module": "Email",
            "event": { "result": 0, "reason": "You do not own the domain “x.test”." },
            "error": "You do not own the domain “x.test”.",
            "data": [],
        }});
        let err =
            parse_cpanel_api2("cpanel Email::setmxcheck", 200, failed.to_string().as_bytes()).unwrap_err();
        assert!(matches!(&err, WhmError::Failed { reason, .. } if reason.contains("do not own")), "{err}");
        assert!(!err.is_transient());

        // WHM refusing the cPanel user: no event, `error` and `data.result = "0"` (strings).
        let no_user = json!({ "cpanelresult": {
            "apiversion": "2",
            "error": "User parameter is invalid or was not supplied",
            "data": { "reason": "User parameter is invalid or was not supplied", "result": "0" },
            "type": "text",
        }});
        let err =
            parse_cpanel_api2("cpanel Email::setmxcheck", 200, no_user.to_string().as_bytes()).unwrap_err();
        assert!(
            matches!(&err, WhmError::Failed { reason, .. } if reason.starts_with("User parameter")),
            "{err}"
        );

        // A status 0 inside data (the call ran but did not set the value).
        let status_zero = vec![json!({ "status": 0, "statusmsg": "Invalid mxcheck" })];
        let err = parse_setmxcheck(&status_zero).unwrap_err();
        assert!(matches!(&err, WhmError::Failed { reason, .. } if reason == "Invalid mxcheck"), "{err}");

        // WHM API 1 refusal before cPanel (metadata.result 0), garbage, HTTP errors.
        let api1 = json!({ "metadata": { "result": 0, "reason": "Permission denied" } });
        let err =
            parse_cpanel_api2("cpanel Email::setmxcheck", 200, api1.to_string().as_bytes()).unwrap_err();
        assert!(matches!(&err, WhmError::Failed { reason, .. } if reason == "Permission denied"), "{err}");
        let err = parse_cpanel_api2("f", 200, b"{\"status\":1}").unwrap_err();
        assert!(matches!(err, WhmError::Shape { .. }), "{err}");
        assert!(parse_cpanel_api2("f", 200, b"<html>").unwrap_err().is_transient());
        assert!(matches!(parse_cpanel_api2("f", 403, b"").unwrap_err(), WhmError::Auth { status: 403, .. }));
        assert!(parse_cpanel_api2("f", 503, b"").unwrap_err().is_transient());
    }

    #[test]
    fn getmxcheck_and_routing_values() {
        let answer = json!({ "cpanelresult": {
            "apiversion": 2, "func": "getmxcheck", "module": "Email", "event": { "result": 1 },
            "data": [{ "alwaysaccept": 0, "detected": "remote", "domain": "example.com", "mxcheck": "remote" }],
        }});
        let data = parse_cpanel_api2("cpanel Email::getmxcheck", 200, answer.to_string().as_bytes()).unwrap();
        assert_eq!(parse_getmxcheck(&data).unwrap(), MailRouting::Remote);
        assert!(matches!(parse_getmxcheck(&[]).unwrap_err(), WhmError::Shape { .. }));
        assert!(matches!(
            parse_getmxcheck(&[json!({ "mxcheck": "backup" })]).unwrap_err(),
            WhmError::Shape { .. }
        ));
        for routing in [MailRouting::Local, MailRouting::Remote, MailRouting::Secondary, MailRouting::Auto] {
            assert_eq!(MailRouting::parse(routing.as_str()), Some(routing));
            assert_eq!(routing.to_string(), routing.as_str());
        }
        assert_eq!(MailRouting::parse(" Local "), Some(MailRouting::Local));
    }

    #[test]
    fn credential_check_and_pops_parse_in_their_documented_shapes() {
        let check = parse_credential_check(&serde_json::json!({
            "data": {"output": "Connected to old.example.net as root.", "response": "OK"},
            "metadata": {"command": "remote_basic_credential_check", "reason": "OK", "result": 1, "version": 1}
        }))
        .unwrap();
        assert_eq!(check.response, "OK");
        assert!(check.output.contains("as root"));
        assert!(parse_credential_check(&serde_json::json!({"metadata": {}})).is_err());

        let user = AccountName::parse("example").unwrap();
        let pops = parse_list_pops(
            &user,
            &serde_json::json!({"data": {"pops": ["Info@Example.com", "example1@example.com", "info@example.com"]}}),
        )
        .unwrap();
        assert_eq!(pops, vec!["example1@example.com", "info@example.com"]);
        let err = parse_list_pops(&user, &serde_json::json!({"data": {"pops": ["x@../etc"]}})).unwrap_err();
        assert!(err.to_string().contains("account example"), "{err}");
        assert!(parse_list_pops(&user, &serde_json::json!({"data": {}})).is_err());
    }
}
