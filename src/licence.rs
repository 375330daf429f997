//! The old server's cPanel licence: found by the server's IP, its way back proven, expired, and
//! reactivated on an undo. Two providers: cPanel's own [`Manage2`] API, and a [`LicenceWebhook`]
//! for a company that buys its licences from someone else (a distributor's portal, a billing
//! system), which answers the same four actions as signed JSON.
//!
//! # Manage2
//!
//! Every call is `GET {base}/{function}.cgi?output=json&…` with HTTP Basic authentication (the
//! Manage2 user and password); Manage2 also refuses a caller whose IP is not an access IP of the
//! account (*Manage2 » Security » Add an Access IP*). Replies are
//! `{"status": 1, "reason": "…", …}`, `status` 1 meaning success. The documentation relied on:
//!
//! - <https://docs.cpanel.net/manage2/knowledge-base/guide-to-the-manage2-api> (GET or POST,
//!   `output=json`, the access IP)
//! - <https://docs.cpanel.net/manage2/knowledge-base/manage2-authentication-methods> (Basic
//!   authentication over TLS)
//! - <https://docs.cpanel.net/manage2/knowledge-base/manage2-return-data> (`status`, `reason`)
//! - <https://docs.cpanel.net/manage2/api/manage2-api-look-up-a-license-id/> (`XMLlookup.cgi`,
//!   `ip=`; returns `licenseid`)
//! - <https://docs.cpanel.net/manage2/api/manage2-api-expire-licenses/> (`XMLlicenseExpire.cgi`,
//!   `liscid`, `reason`, `expcode=normal`; returns `licenseid`, `reason`, `result`, `status`)
//! - <https://docs.cpanel.net/manage2/api/manage2-api-reactivate-expired-licenses>
//!   (`XMLlicenseReActivate.cgi`, `liscid`, `force`, `dryrun`; returns `licenseid`,
//!   `monthly_price`, `price`, `reason`, `status`)
//!
//! Where the documentation is silent we chose, and say so at the code: an IP without a licence
//! is read from a successful lookup without a `licenseid` (or with `0`); a 401 or 403 is a
//! refused login; a lookup's several `licenseid` keys (the documentation's own JSON sample
//! repeats the key) are all read.
//!
//! # The webhook
//!
//! Each action is one `POST` of
//! `{"action": "lookup"|"check_reactivation"|"expire"|"reactivate", "ip": "…", "licence": {…}|null, "reason": "…"|null}`
//! signed as notice webhooks are (`X-Siirto-Signature-256: sha256=<hex>`, see
//! [`crate::notify::signature`]). The receiver answers a lookup with
//! `{"licence": {"id": "123", "ip": "…", "status": "active"|"expired", "package": "…"}}` or
//! `{"licence": null}`, and the other actions with `{"ok": true}` or
//! `{"ok": false, "reason": "…"}`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};

use crate::secret::Secret;

// ---------------------------------------------------------------------------------------------
// Licences

/// A licence id as Manage2 numbers them: ASCII digits, not all zeros (a lookup's `0` means "no
/// licence"). Anything else a provider sends is refused before it reaches a URL or the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct LicenceId(String);

impl LicenceId {
    /// Checks a licence id: 1 to 20 ASCII digits, not all zeros.
    pub fn parse(text: &str) -> Result<LicenceId, String> {
        let valid = !text.is_empty()
            && text.len() <= 20
            && text.bytes().all(|b| b.is_ascii_digit())
            && text.bytes().any(|b| b != b'0');
        if valid {
            Ok(LicenceId(text.to_owned()))
        } else {
            Err(format!("licence id {text:?} is not a number of 1 to 20 digits"))
        }
    }

    /// The id as sent to the provider.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LicenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a licence is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenceStatus {
    /// In force: cPanel & WHM runs on its IP.
    Active,
    /// Expired (cancelled): cPanel & WHM no longer runs on its IP; it can be reactivated.
    Expired,
}

/// A licence as a provider reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Licence {
    /// Its id (Manage2's `licenseid`, sent back as `liscid`).
    pub id: LicenceId,
    /// The server address it is bound to.
    pub ip: IpAddr,
    /// Whether it is in force.
    pub status: LicenceStatus,
    /// Its package, when the provider says (Manage2's lookup does not: see [`Manage2::lookup`]).
    pub package: Option<String>,
}

/// What is being done, for the webhook's `action` and for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenceAction {
    /// Finding the licence of an IP.
    Lookup,
    /// Asking whether an expired licence could be reactivated, without doing it.
    CheckReactivation,
    /// Expiring (cancelling) a licence.
    Expire,
    /// Reactivating an expired licence.
    Reactivate,
}

impl LicenceAction {
    /// The action's name in the webhook's JSON: `lookup`, `check_reactivation`, `expire`,
    /// `reactivate`.
    pub fn as_str(self) -> &'static str {
        match self {
            LicenceAction::Lookup => "lookup",
            LicenceAction::CheckReactivation => "check_reactivation",
            LicenceAction::Expire => "expire",
            LicenceAction::Reactivate => "reactivate",
        }
    }
}

impl fmt::Display for LicenceAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a licence action did not happen. Callers branch on [`LicenceError::is_transient`]:
/// no answer, a 5xx/408/429 or a body that is not JSON (a proxy's error page) are retried; a
/// refused login, a refused action, an IP without a licence or an answer of the wrong shape are
/// not. Every message names the provider; none carries a password or secret (only where it was
/// read from).
#[derive(Debug, thiserror::Error)]
pub enum LicenceError {
    /// The client could not be built (URL scheme, TLS setup).
    #[error("licence provider {provider}: {detail}")]
    Setup {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// No answer: connection refused or reset, timeout, DNS failure. Transient.
    #[error("licence provider {provider}: {action}: no answer from {url}: {detail}")]
    Transport {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// What was being done.
        action: LicenceAction,
        /// The URL called, without its query.
        url: String,
        /// What failed, in words (`timed out`, `cannot connect: …`).
        detail: String,
    },
    /// The provider refused our credentials (HTTP 401 or 403).
    #[error("licence provider {provider}: {action}: {url} answered HTTP {status}: it refused {credential}")]
    Auth {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// What was being done.
        action: LicenceAction,
        /// The URL called, without its query.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Which credential, by where it was read from, and what to check.
        credential: String,
    },
    /// Any other non-success HTTP status; 5xx, 408 and 429 are transient.
    #[error("licence provider {provider}: {action}: {url} answered HTTP {status}{}", snippet_suffix(.snippet))]
    Http {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// What was being done.
        action: LicenceAction,
        /// The URL called, without its query.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, whitespace collapsed.
        snippet: String,
    },
    /// A 2xx whose body is not JSON. Transient: typically a proxy or a restarting service.
    #[error("licence provider {provider}: {action}: the answer is not JSON: {snippet:?}")]
    NotJson {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// What was being done.
        action: LicenceAction,
        /// The start of the body, whitespace collapsed.
        snippet: String,
    },
    /// The provider answered and refused (Manage2 `status` other than 1, the webhook's
    /// `"ok": false`): the licence is unknown, already expired, cannot be reactivated, …
    #[error("licence provider {provider}: {action} refused: {reason}")]
    Refused {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// What was being done.
        action: LicenceAction,
        /// The provider's reason, as it wrote it.
        reason: String,
    },
    /// The provider knows no licence for this IP ([`LicenceProvider::require`]).
    #[error("licence provider {provider}: there is no licence for {ip}")]
    NoLicence {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// The address looked up.
        ip: IpAddr,
    },
    /// The IP has more than one licence; which one to expire is a person's decision.
    #[error(
        "licence provider {provider}: {ip} has {} licences ({}); expire the right one by hand",
        .ids.len(),
        joined(.ids)
    )]
    Several {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// The address looked up.
        ip: IpAddr,
        /// The licences found.
        ids: Vec<LicenceId>,
    },
    /// The answer does not have the documented shape (a licence id that is not digits, a
    /// different IP, a missing `status`).
    #[error("licence provider {provider}: {action}: unexpected answer: {detail}")]
    Shape {
        /// `manage2` or `webhook`.
        provider: &'static str,
        /// What was being done.
        action: LicenceAction,
        /// What was wrong.
        detail: String,
    },
}

fn joined(ids: &[LicenceId]) -> String {
    ids.iter().map(LicenceId::as_str).collect::<Vec<_>>().join(", ")
}

fn snippet_suffix(snippet: &str) -> String {
    if snippet.is_empty() { String::new() } else { format!(": {snippet:?}") }
}

impl LicenceError {
    /// Whether the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            LicenceError::Transport { .. } | LicenceError::NotJson { .. } => true,
            LicenceError::Http { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            LicenceError::Setup { .. }
            | LicenceError::Auth { .. }
            | LicenceError::Refused { .. }
            | LicenceError::NoLicence { .. }
            | LicenceError::Several { .. }
            | LicenceError::Shape { .. } => false,
        }
    }

    /// The provider the error came from (`manage2`, `webhook`).
    pub fn provider(&self) -> &'static str {
        match self {
            LicenceError::Setup { provider, .. }
            | LicenceError::Transport { provider, .. }
            | LicenceError::Auth { provider, .. }
            | LicenceError::Http { provider, .. }
            | LicenceError::NotJson { provider, .. }
            | LicenceError::Refused { provider, .. }
            | LicenceError::NoLicence { provider, .. }
            | LicenceError::Several { provider, .. }
            | LicenceError::Shape { provider, .. } => provider,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The provider trait

/// Where licences are cancelled: [`Manage2`] or [`LicenceWebhook`]. Every action checks before
/// it acts where the provider allows it, but a caller that may run again after a crash looks the
/// licence up first (an expired licence is not expired again).
#[async_trait::async_trait]
pub trait LicenceProvider: Send + Sync {
    /// `manage2` or `webhook`, for messages and logs.
    fn name(&self) -> &'static str;

    /// The licence bound to `ip`, `None` when the provider knows none; an error when it knows
    /// several ([`LicenceError::Several`]).
    async fn lookup(&self, ip: IpAddr) -> Result<Option<Licence>, LicenceError>;

    /// Asks the provider whether `licence` could be reactivated, without changing anything: the
    /// way back is proven before the licence is expired.
    async fn check_reactivation(&self, licence: &Licence) -> Result<(), LicenceError>;

    /// Expires (cancels) `licence`, giving `reason`.
    async fn expire(&self, licence: &Licence, reason: &str) -> Result<(), LicenceError>;

    /// Reactivates the expired `licence` (the undo of [`LicenceProvider::expire`]).
    async fn reactivate(&self, licence: &Licence) -> Result<(), LicenceError>;

    /// The licence bound to `ip`, [`LicenceError::NoLicence`] when there is none.
    async fn require(&self, ip: IpAddr) -> Result<Licence, LicenceError> {
        self.lookup(ip).await?.ok_or(LicenceError::NoLicence { provider: self.name(), ip })
    }
}

/// The provider a validated `[licence]` table names, each request bounded by `timeout`.
pub fn provider_from_config(
    config: &crate::config::LicenceConfig,
    timeout: Duration,
) -> Result<std::sync::Arc<dyn LicenceProvider>, LicenceError> {
    Ok(match config {
        crate::config::LicenceConfig::Manage2 { url, user, password } => {
            std::sync::Arc::new(Manage2::new(url.clone(), user.clone(), password.clone(), timeout)?)
        }
        crate::config::LicenceConfig::Webhook { url, secret } => {
            std::sync::Arc::new(LicenceWebhook::new(url.clone(), secret.clone(), timeout)?)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP shared by both providers

/// A client for one provider: TLS verified against the web PKI, no redirects (a redirect would
/// be to a login page), each request bounded by `timeout`. Plain `http://` only to a loopback
/// address (the simulator and the tests): credentials never cross a network unencrypted.
fn http_client(
    provider: &'static str,
    url: &Url,
    timeout: Duration,
) -> Result<reqwest::Client, LicenceError> {
    let setup = |detail: String| LicenceError::Setup { provider, detail };
    let Some(host) = url.host_str() else {
        return Err(setup(format!("URL {} has no host", crate::secret::shown_url(url))));
    };
    let loopback = host == "localhost"
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        other => {
            return Err(setup(format!(
                "URL scheme {other:?} of {} is not https (http:// only to a loopback address)",
                crate::secret::shown_url(url)
            )));
        }
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("siirto/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| setup(format!("HTTP client: {err}")))
}

/// The start of a body, whitespace collapsed, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect()
}

/// The status of an answer other than 2xx as an error: 401/403 refused credentials, the rest
/// by status.
fn http_error(
    provider: &'static str,
    action: LicenceAction,
    url: &str,
    status: u16,
    body: &[u8],
    credential: impl FnOnce() -> String,
) -> LicenceError {
    if status == 401 || status == 403 {
        return LicenceError::Auth {
            provider,
            action,
            url: url.to_owned(),
            status,
            credential: credential(),
        };
    }
    LicenceError::Http { provider, action, url: url.to_owned(), status, snippet: snippet(body) }
}

// ---------------------------------------------------------------------------------------------
// Manage2

const MANAGE2: &str = "manage2";

/// cPanel's Manage2 API (see the module doc for the pages relied on).
pub struct Manage2 {
    base_url: Url,
    user: String,
    password: Secret,
    http: reqwest::Client,
}

impl fmt::Debug for Manage2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manage2")
            .field("base_url", &crate::secret::shown_url(&self.base_url))
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Manage2 {
    /// Manage2's own address.
    pub const DEFAULT_URL: &str = crate::config::MANAGE2_URL;

    /// A client for the Manage2 API at `base_url` (normally [`Manage2::DEFAULT_URL`]; the
    /// simulator's `http://127.0.0.1:…/` in tests), logging in as `user` with `password`; each
    /// request bounded by `timeout`.
    pub fn new(
        base_url: Url,
        user: impl Into<String>,
        password: Secret,
        timeout: Duration,
    ) -> Result<Manage2, LicenceError> {
        let http = http_client(MANAGE2, &base_url, timeout)?;
        let mut base_url = base_url;
        // The functions are files next to the base: `…/XMLlookup.cgi`.
        if !base_url.path().ends_with('/') {
            let path = format!("{}/", base_url.path());
            base_url.set_path(&path);
        }
        Ok(Manage2 { base_url, user: user.into(), password, http })
    }

    /// The credential as messages name it: the user, and where the password came from.
    fn credential(&self) -> String {
        let password = match self.password.origin() {
            Some(origin) => format!("the password in {origin}"),
            None => "its password".to_owned(),
        };
        format!(
            "the user {:?} with {password}; check both, and that this server's address is an access IP in Manage2 (Security » Add an Access IP)",
            self.user
        )
    }

    /// Calls one function and returns its checked reply (`status` 1).
    async fn call(
        &self,
        action: LicenceAction,
        function: &str,
        params: &[(&str, &str)],
    ) -> Result<Reply, LicenceError> {
        let mut url = self.base_url.join(function).map_err(|err| LicenceError::Setup {
            provider: MANAGE2,
            detail: format!("URL of {function}: {err}"),
        })?;
        let shown = crate::secret::shown_url(&url);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("output", "json");
            for (key, value) in params {
                query.append_pair(key, value);
            }
        }
        let transport = |err: reqwest::Error| LicenceError::Transport {
            provider: MANAGE2,
            action,
            url: shown.clone(),
            detail: crate::notify::without_url(&err),
        };
        let response = self
            .http
            .get(url)
            .basic_auth(&self.user, Some(self.password.expose()))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            let err = http_error(MANAGE2, action, &shown, status, &body, || self.credential());
            tracing::debug!(error = %err, "Manage2 call failed");
            return Err(err);
        }
        let reply = parse_reply(action, &body).map_err(|err| err.into_error(MANAGE2, action));
        if let Err(err) = &reply {
            tracing::debug!(error = %err, "Manage2 call failed");
        }
        reply
    }
}

#[async_trait::async_trait]
impl LicenceProvider for Manage2 {
    fn name(&self) -> &'static str {
        MANAGE2
    }

    /// `XMLlookup.cgi?ip=…`. The documentation gives an `all` parameter without saying what it
    /// adds (expired licences, most likely); we do not send it, so what comes back are the IP's
    /// licences in force, reported [`LicenceStatus::Active`]. The lookup names no package.
    #[tracing::instrument(skip_all, fields(provider = MANAGE2, %ip))]
    async fn lookup(&self, ip: IpAddr) -> Result<Option<Licence>, LicenceError> {
        let action = LicenceAction::Lookup;
        let reply = self.call(action, "XMLlookup.cgi", &[("ip", &ip.to_string())]).await?;
        let ids = reply.licence_ids().map_err(|detail| LicenceError::Shape {
            provider: MANAGE2,
            action,
            detail,
        })?;
        match <[LicenceId; 1]>::try_from(ids) {
            Ok([id]) => Ok(Some(Licence { id, ip, status: LicenceStatus::Active, package: None })),
            Err(ids) if ids.is_empty() => Ok(None),
            Err(ids) => Err(LicenceError::Several { provider: MANAGE2, ip, ids }),
        }
    }

    /// `XMLlicenseReActivate.cgi?liscid=…&dryrun=1`: "show error messages and price
    /// information, but not reactivate the license".
    #[tracing::instrument(skip_all, fields(provider = MANAGE2, licence = %licence.id))]
    async fn check_reactivation(&self, licence: &Licence) -> Result<(), LicenceError> {
        let action = LicenceAction::CheckReactivation;
        let params = [("liscid", licence.id.as_str()), ("dryrun", "1")];
        let reply = self.call(action, "XMLlicenseReActivate.cgi", &params).await?;
        tracing::debug!(reason = %reply.reason, "Manage2 would reactivate the licence");
        Ok(())
    }

    /// `XMLlicenseExpire.cgi?liscid=…&reason=…&expcode=normal` ("Normal Cancellation - No
    /// Security Risk"). A reply about another licence is refused.
    #[tracing::instrument(skip_all, fields(provider = MANAGE2, licence = %licence.id))]
    async fn expire(&self, licence: &Licence, reason: &str) -> Result<(), LicenceError> {
        let action = LicenceAction::Expire;
        let params = [("liscid", licence.id.as_str()), ("reason", reason), ("expcode", "normal")];
        let reply = self.call(action, "XMLlicenseExpire.cgi", &params).await?;
        let ids = reply.licence_ids().map_err(|detail| LicenceError::Shape {
            provider: MANAGE2,
            action,
            detail,
        })?;
        if !ids.is_empty() && !ids.contains(&licence.id) {
            return Err(LicenceError::Shape {
                provider: MANAGE2,
                action,
                detail: format!("asked to expire licence {}, the answer is about {}", licence.id, ids[0]),
            });
        }
        tracing::info!(reason = %reply.reason, "licence expired");
        Ok(())
    }

    /// `XMLlicenseReActivate.cgi?liscid=…`. The reactivation has happened when Manage2 says
    /// `status` 1, so an answer naming another licence id is logged, not refused.
    #[tracing::instrument(skip_all, fields(provider = MANAGE2, licence = %licence.id))]
    async fn reactivate(&self, licence: &Licence) -> Result<(), LicenceError> {
        let action = LicenceAction::Reactivate;
        let reply = self.call(action, "XMLlicenseReActivate.cgi", &[("liscid", licence.id.as_str())]).await?;
        match reply.licence_ids() {
            Ok(ids) if ids.is_empty() || ids.contains(&licence.id) => {}
            Ok(ids) => tracing::warn!(answered = %ids[0], "Manage2 reactivated under another licence id"),
            Err(detail) => tracing::warn!(%detail, "Manage2's reactivation answer names no valid licence id"),
        }
        tracing::info!(reason = %reply.reason, "licence reactivated");
        Ok(())
    }
}

/// A Manage2 reply whose `status` was 1.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    /// `reason`, as Manage2 wrote it.
    reason: String,
    /// Every `licenseid` value, in order, as written (checked by [`Reply::licence_ids`]).
    licenseids: Vec<String>,
}

impl Reply {
    /// The licence ids of the reply, each checked, duplicates dropped; an empty string or `0`
    /// means none (how an IP without a licence is answered, as far as we can tell: the
    /// documentation shows only replies that found one).
    fn licence_ids(&self) -> Result<Vec<LicenceId>, String> {
        let mut ids: Vec<LicenceId> = Vec::new();
        for text in &self.licenseids {
            let text = text.trim();
            if text.is_empty() || text.bytes().all(|b| b == b'0') {
                continue;
            }
            let id = LicenceId::parse(text)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

/// Why a 2xx body is not a successful reply.
#[derive(Debug, PartialEq, Eq)]
enum ReplyError {
    NotJson(String),
    Refused(String),
    Shape(String),
}

impl ReplyError {
    fn into_error(self, provider: &'static str, action: LicenceAction) -> LicenceError {
        match self {
            ReplyError::NotJson(snippet) => LicenceError::NotJson { provider, action, snippet },
            ReplyError::Refused(reason) => LicenceError::Refused { provider, action, reason },
            ReplyError::Shape(detail) => LicenceError::Shape { provider, action, detail },
        }
    }
}

/// Reads a Manage2 JSON reply: `status` (a number, or a string of one), `reason`, and every
/// `licenseid` key (a string, a number, or a list of them). The documentation's lookup sample
/// repeats the `licenseid` key for an IP with two licences, so the object is read key by key:
/// a map type would keep only the last.
fn parse_reply(action: LicenceAction, body: &[u8]) -> Result<Reply, ReplyError> {
    let raw: RawReply = serde_json::from_slice(body).map_err(|err| {
        if err.is_data() { ReplyError::Shape(format!("{err}")) } else { ReplyError::NotJson(snippet(body)) }
    })?;
    let reason = raw.reason.unwrap_or_default();
    match raw.status {
        None => Err(ReplyError::Shape(format!("the {action} answer has no status"))),
        Some(1) => Ok(Reply { reason, licenseids: raw.licenseids }),
        Some(status) if reason.trim().is_empty() => {
            Err(ReplyError::Refused(format!("status {status}, no reason given")))
        }
        Some(_) => Err(ReplyError::Refused(reason)),
    }
}

#[derive(Default)]
struct RawReply {
    status: Option<i64>,
    reason: Option<String>,
    licenseids: Vec<String>,
}

impl<'de> Deserialize<'de> for RawReply {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawReplyVisitor)
    }
}

struct RawReplyVisitor;

impl<'de> Visitor<'de> for RawReplyVisitor {
    type Value = RawReply;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Manage2 reply object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReply, A::Error> {
        let mut reply = RawReply::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "status" => {
                    let status = match map.next_value::<Scalar>()? {
                        Scalar::Int(n) => Some(n),
                        Scalar::Text(text) => text.trim().parse().ok(),
                        Scalar::Float(_) | Scalar::Null => None,
                    };
                    let Some(status) = status else {
                        return Err(serde::de::Error::custom("status is not an integer"));
                    };
                    reply.status = Some(status);
                }
                "reason" => reply.reason = map.next_value::<Option<String>>()?,
                "licenseid" => match map.next_value::<OneOrMany>()? {
                    OneOrMany::One(value) => reply.licenseids.extend(value.into_id_text()),
                    OneOrMany::Many(values) => {
                        reply.licenseids.extend(values.into_iter().filter_map(Scalar::into_id_text))
                    }
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(reply)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Float(f64),
    Text(String),
    Null,
}

impl Scalar {
    /// The value as a licence id's text (checked later); `None` for null.
    fn into_id_text(self) -> Option<String> {
        match self {
            Scalar::Int(n) => Some(n.to_string()),
            // Not an id; kept so that the check names it.
            Scalar::Float(x) => Some(x.to_string()),
            Scalar::Text(text) => Some(text),
            Scalar::Null => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

// ---------------------------------------------------------------------------------------------
// The webhook

const WEBHOOK: &str = "webhook";

/// Licence actions as signed JSON POSTs to a company's own system (see the module doc).
pub struct LicenceWebhook {
    url: Url,
    secret: Secret,
    http: reqwest::Client,
}

impl fmt::Debug for LicenceWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenceWebhook")
            .field("url", &crate::secret::shown_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// The webhook's answer to the actions other than lookup.
#[derive(Deserialize)]
struct WebhookAck {
    ok: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// The webhook's answer to a lookup.
#[derive(Deserialize)]
struct WebhookLookup {
    // Required, though it may be null: a reply without it is not an answer to a lookup.
    #[serde(deserialize_with = "Option::deserialize")]
    licence: Option<WebhookLicence>,
}

#[derive(Deserialize)]
struct WebhookLicence {
    id: Scalar,
    ip: String,
    status: String,
    #[serde(default)]
    package: Option<String>,
}

impl LicenceWebhook {
    /// Posts to `url` (`https://`, or `http://` to a loopback address), signing each body with
    /// `secret`; each request bounded by `timeout`.
    pub fn new(url: Url, secret: Secret, timeout: Duration) -> Result<LicenceWebhook, LicenceError> {
        let http = http_client(WEBHOOK, &url, timeout)?;
        Ok(LicenceWebhook { url, secret, http })
    }

    fn credential(&self) -> String {
        let secret = match self.secret.origin() {
            Some(origin) => format!("the secret in {origin}"),
            None => "the shared secret".to_owned(),
        };
        format!("the request signed with {secret}; check that both sides hold the same secret")
    }

    /// Posts one action and returns the answer's JSON body.
    async fn post(
        &self,
        action: LicenceAction,
        ip: IpAddr,
        licence: Option<&Licence>,
        reason: Option<&str>,
    ) -> Result<Vec<u8>, LicenceError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "action": action.as_str(),
            "ip": ip.to_string(),
            "licence": licence,
            "reason": reason,
        }))
        .map_err(|err| LicenceError::Shape {
            provider: WEBHOOK,
            action,
            detail: format!("request body: {err}"),
        })?;
        let shown = crate::secret::shown_url(&self.url);
        let transport = |err: reqwest::Error| LicenceError::Transport {
            provider: WEBHOOK,
            action,
            url: shown.clone(),
            detail: crate::notify::without_url(&err),
        };
        let response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(crate::notify::SIGNATURE_HEADER, crate::notify::signature(&self.secret, &body))
            .body(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            let err = http_error(WEBHOOK, action, &shown, status, &body, || self.credential());
            tracing::debug!(error = %err, "licence webhook failed");
            return Err(err);
        }
        Ok(body.to_vec())
    }

    /// Posts an action other than lookup and checks its `{"ok": …}`.
    async fn act(
        &self,
        action: LicenceAction,
        licence: &Licence,
        reason: Option<&str>,
    ) -> Result<(), LicenceError> {
        let body = self.post(action, licence.ip, Some(licence), reason).await?;
        parse_webhook_ack(&body).map_err(|err| err.into_error(WEBHOOK, action))
    }
}

/// Reads the webhook's answer to a lookup of `ip`: the licence must be bound to that IP, its id
/// digits, its status `active` or `expired`.
fn parse_webhook_lookup(ip: IpAddr, body: &[u8]) -> Result<Option<Licence>, ReplyError> {
    let answer: WebhookLookup = json_of(body)?;
    let Some(raw) = answer.licence else {
        return Ok(None);
    };
    let id = raw.id.into_id_text().unwrap_or_default();
    let id = LicenceId::parse(id.trim()).map_err(ReplyError::Shape)?;
    let answered: IpAddr = raw
        .ip
        .trim()
        .parse()
        .map_err(|_| ReplyError::Shape(format!("licence {id}: ip {:?} is not an IP address", raw.ip)))?;
    if answered != ip {
        return Err(ReplyError::Shape(format!(
            "asked for the licence of {ip}, the answer is licence {id} on {answered}"
        )));
    }
    let status = match raw.status.trim() {
        "active" => LicenceStatus::Active,
        "expired" => LicenceStatus::Expired,
        other => {
            return Err(ReplyError::Shape(format!(
                "licence {id}: status {other:?} is not \"active\" or \"expired\""
            )));
        }
    };
    let package = raw.package.map(|p| p.trim().to_owned()).filter(|p| !p.is_empty());
    Ok(Some(Licence { id, ip, status, package }))
}

/// Reads the webhook's `{"ok": true}` or `{"ok": false, "reason": "…"}`.
fn parse_webhook_ack(body: &[u8]) -> Result<(), ReplyError> {
    let ack: WebhookAck = json_of(body)?;
    if ack.ok {
        return Ok(());
    }
    let reason = ack.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    Err(ReplyError::Refused(reason.unwrap_or_else(|| "\"ok\": false, no reason given".to_owned())))
}

fn json_of<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ReplyError> {
    serde_json::from_slice(body).map_err(|err| {
        if err.is_data() { ReplyError::Shape(err.to_string()) } else { ReplyError::NotJson(snippet(body)) }
    })
}

#[async_trait::async_trait]
impl LicenceProvider for LicenceWebhook {
    fn name(&self) -> &'static str {
        WEBHOOK
    }

    #[tracing::instrument(skip_all, fields(provider = WEBHOOK, %ip))]
    async fn lookup(&self, ip: IpAddr) -> Result<Option<Licence>, LicenceError> {
        let action = LicenceAction::Lookup;
        let body = self.post(action, ip, None, None).await?;
        parse_webhook_lookup(ip, &body).map_err(|err| err.into_error(WEBHOOK, action))
    }

    #[tracing::instrument(skip_all, fields(provider = WEBHOOK, licence = %licence.id))]
    async fn check_reactivation(&self, licence: &Licence) -> Result<(), LicenceError> {
        self.act(LicenceAction::CheckReactivation, licence, None).await
    }

    #[tracing::instrument(skip_all, fields(provider = WEBHOOK, licence = %licence.id))]
    async fn expire(&self, licence: &Licence, reason: &str) -> Result<(), LicenceError> {
        self.act(LicenceAction::Expire, licence, Some(reason)).await
    }

    #[tracing::instrument(skip_all, fields(provider = WEBHOOK, licence = %licence.id))]
    async fn reactivate(&self, licence: &Licence) -> Result<(), LicenceError> {
        self.act(LicenceAction::Reactivate, licence, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &str) -> Result<Reply, ReplyError> {
        parse_reply(LicenceAction::Lookup, body.as_bytes())
    }

    fn ids(body: &str) -> Result<Vec<String>, String> {
        let reply = reply(body).map_err(|err| format!("{err:?}"))?;
        Ok(reply.licence_ids()?.into_iter().map(|id| id.as_str().to_owned()).collect())
    }

    #[test]
    fn licence_ids_are_digits_and_nothing_else() {
        for good in ["7216526", "5388377", "1", "007"] {
            assert_eq!(LicenceId::parse(good).expect(good).as_str(), good);
        }
        for bad in ["", "0", "000", "L0001", "12 34", "-1", "1.5", "123456789012345678901", "１２"] {
            let err = LicenceId::parse(bad).expect_err(bad);
            assert!(err.contains("is not a number of 1 to 20 digits"), "{err}");
        }
    }

    #[test]
    fn the_documented_replies_are_read() {
        // The lookup sample, two licences under a repeated key (docs: look-up-a-license-id).
        let two = r#"{"status": 1, "reason": "OK", "licenseid": "5388377", "licenseid": "5388378"}"#;
        assert_eq!(ids(two), Ok(vec!["5388377".to_owned(), "5388378".to_owned()]));
        // The expire sample (docs: expire-licenses).
        let expired = r#"{"status": 1, "reason": "Expired 45-DAY-TEST license 7216526 in the 'cPanel/WHM Auto Trial' group on 192.0.2.0 for reason: Normal Cancellation - No Security Risk.", "result": "OK", "licenseid": "7216526"}"#;
        let parsed = reply(expired).expect("expire");
        assert!(parsed.reason.starts_with("Expired 45-DAY-TEST license 7216526"), "{parsed:?}");
        assert_eq!(ids(expired), Ok(vec!["7216526".to_owned()]));
        // The reactivation sample (docs: reactivate-expired-licenses).
        let reactivated = r#"{"monthly_price": "25.00", "status": 1, "reason": "Reactivated COMPANY-INTERNAL-VPS license on 192.0.2.0 in the 'ExampleGroup' group.", "price": "150.00", "licenseid": "12345"}"#;
        assert_eq!(ids(reactivated), Ok(vec!["12345".to_owned()]));
        // The return-data sample: status as a number among other keys (docs: manage2-return-data).
        let packages =
            r#"{"packages": {"P0001": "ONE TIME FEE"}, "status": 1, "version": 0.3, "reason": "OK"}"#;
        assert_eq!(ids(packages), Ok(vec![]));
    }

    #[test]
    fn status_and_licence_ids_come_in_several_spellings() {
        let cases: [(&str, Result<Vec<&str>, &str>); 9] = [
            (r#"{"status": "1", "reason": "OK", "licenseid": 42}"#, Ok(vec!["42"])),
            (r#"{"status": 1, "reason": "OK", "licenseid": ["1", 2, "1"]}"#, Ok(vec!["1", "2"])),
            (r#"{"status": 1, "reason": "OK"}"#, Ok(vec![])),
            (r#"{"status": 1, "reason": "OK", "licenseid": "0"}"#, Ok(vec![])),
            (r#"{"status": 1, "reason": "OK", "licenseid": ""}"#, Ok(vec![])),
            (r#"{"status": 1, "reason": "OK", "licenseid": null}"#, Ok(vec![])),
            (r#"{"status": 1, "reason": "OK", "licenseid": "L0001"}"#, Err("\"L0001\" is not a number")),
            (r#"{"status": 1, "licenseid": "12/../34"}"#, Err("\"12/../34\" is not a number")),
            (r#"{"status": 1, "licenseid": 1.5}"#, Err("\"1.5\" is not a number")),
        ];
        for (body, expected) in cases {
            match (ids(body), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{body}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{body}: {got}"),
                (got, want) => panic!("{body}: got {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn a_status_other_than_one_is_a_refusal_with_its_reason() {
        let cases = [
            (
                r#"{"status": 0, "reason": "Could not find license 99"}"#,
                ReplyError::Refused("Could not find license 99".into()),
            ),
            (
                r#"{"status": -1, "reason": "License not reactivated"}"#,
                ReplyError::Refused("License not reactivated".into()),
            ),
            (r#"{"status": "0"}"#, ReplyError::Refused("status 0, no reason given".into())),
            (r#"{"reason": "OK"}"#, ReplyError::Shape("the lookup answer has no status".into())),
        ];
        for (body, expected) in cases {
            assert_eq!(reply(body), Err(expected), "{body}");
        }
        assert!(
            matches!(reply(r#"{"status": "yes"}"#), Err(ReplyError::Shape(detail)) if detail.contains("status is not an integer"))
        );
        assert!(matches!(reply(r#"["status", 1]"#), Err(ReplyError::Shape(_))));
        assert_eq!(
            reply("<html><body>502 Bad Gateway</body></html>"),
            Err(ReplyError::NotJson("<html><body>502 Bad Gateway</body></html>".into()))
        );
    }

    #[test]
    fn which_errors_are_retried() {
        let http = |status| LicenceError::Http {
            provider: MANAGE2,
            action: LicenceAction::Expire,
            url: "u".into(),
            status,
            snippet: String::new(),
        };
        for status in [500, 502, 503, 408, 429] {
            assert!(http(status).is_transient(), "{status}");
        }
        for status in [400, 404, 410, 422] {
            assert!(!http(status).is_transient(), "{status}");
        }
        let transport = LicenceError::Transport {
            provider: MANAGE2,
            action: LicenceAction::Lookup,
            url: "u".into(),
            detail: "timed out".into(),
        };
        assert!(transport.is_transient());
        let permanent = [
            http_error(MANAGE2, LicenceAction::Lookup, "u", 401, b"", || "c".into()),
            http_error(MANAGE2, LicenceAction::Lookup, "u", 403, b"", || "c".into()),
            ReplyError::Refused("no".into()).into_error(MANAGE2, LicenceAction::Expire),
            ReplyError::Shape("odd".into()).into_error(MANAGE2, LicenceAction::Expire),
            LicenceError::NoLicence { provider: MANAGE2, ip: "192.0.2.1".parse().expect("ip") },
        ];
        for err in permanent {
            assert!(!err.is_transient(), "{err}");
            assert_eq!(err.provider(), MANAGE2);
            assert!(err.to_string().starts_with("licence provider manage2: "), "{err}");
        }
        assert!(ReplyError::NotJson("x".into()).into_error(WEBHOOK, LicenceAction::Lookup).is_transient());
    }

    #[test]
    fn the_webhooks_answers_are_validated() {
        let ip: IpAddr = "192.0.2.10".parse().expect("ip");
        let found = parse_webhook_lookup(
            ip,
            br#"{"licence": {"id": 7216526, "ip": "192.0.2.10", "status": "expired", "package": "VPS"}}"#,
        )
        .expect("found");
        assert_eq!(
            found,
            Some(Licence {
                id: LicenceId::parse("7216526").expect("id"),
                ip,
                status: LicenceStatus::Expired,
                package: Some("VPS".into()),
            })
        );
        assert_eq!(parse_webhook_lookup(ip, br#"{"licence": null}"#), Ok(None));
        let refused = [
            (
                r#"{"licence": {"id": "abc", "ip": "192.0.2.10", "status": "active"}}"#,
                "\"abc\" is not a number",
            ),
            (
                r#"{"licence": {"id": "1", "ip": "192.0.2.11", "status": "active"}}"#,
                "licence 1 on 192.0.2.11",
            ),
            (r#"{"licence": {"id": "1", "ip": "nowhere", "status": "active"}}"#, "is not an IP address"),
            (r#"{"licence": {"id": "1", "ip": "192.0.2.10", "status": "gone"}}"#, "\"gone\" is not"),
            (r#"{"licences": []}"#, "missing field `licence`"),
        ];
        for (body, expected) in refused {
            match parse_webhook_lookup(ip, body.as_bytes()) {
                Err(ReplyError::Shape(detail)) => assert!(detail.contains(expected), "{body}: {detail}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert_eq!(parse_webhook_ack(br#"{"ok": true}"#), Ok(()));
        assert_eq!(
            parse_webhook_ack(br#"{"ok": false, "reason": "already expired"}"#),
            Err(ReplyError::Refused("already expired".into()))
        );
        assert_eq!(
            parse_webhook_ack(br#"{"ok": false}"#),
            Err(ReplyError::Refused("\"ok\": false, no reason given".into()))
        );
        assert!(matches!(parse_webhook_ack(b"{}"), Err(ReplyError::Shape(_))));
        assert!(matches!(parse_webhook_ack(b"accepted"), Err(ReplyError::NotJson(_))));
    }

    #[test]
    fn plain_http_only_to_loopback_and_no_password_in_debug() {
        let timeout = Duration::from_secs(5);
        let password = Secret::new("hunter2-manage2");
        for url in ["http://127.0.0.1:9/", "http://[::1]:9/", "http://localhost:9/", Manage2::DEFAULT_URL] {
            let client =
                Manage2::new(Url::parse(url).expect("url"), "siirto@example.fi", password.clone(), timeout)
                    .expect(url);
            let debug = format!("{client:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("siirto@example.fi"), "{debug}");
        }
        for url in ["http://manage2.cpanel.net/", "ftp://127.0.0.1/"] {
            let err =
                Manage2::new(Url::parse(url).expect("url"), "u", password.clone(), timeout).expect_err(url);
            assert!(err.to_string().contains("is not https"), "{err}");
        }
        let err =
            LicenceWebhook::new(Url::parse("http://10.0.0.1/hook").expect("url"), Secret::new("s"), timeout)
                .expect_err("http to a remote host");
        assert!(err.to_string().starts_with("licence provider webhook: "), "{err}");
    }

    #[test]
    fn a_licence_serializes_as_the_webhook_sends_it() {
        let licence = Licence {
            id: LicenceId::parse("12345").expect("id"),
            ip: "192.0.2.10".parse().expect("ip"),
            status: LicenceStatus::Active,
            package: None,
        };
        assert_eq!(
            serde_json::to_value(&licence).expect("json"),
            serde_json::json!({"id": "12345", "ip": "192.0.2.10", "status": "active", "package": null})
        );
    }
}
