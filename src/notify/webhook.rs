//! The webhook channel: each notice is one JSON `POST` to a ticket system or chat bridge,
//! signed the way GitHub signs its webhooks — `X-Siirto-Signature-256: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body bytes under a shared secret — with an `Idempotency-Key` equal
//! to the notice's Message-ID, so a resend after a crash is recognisable as the same notice.
//! A 2xx answer is delivery; 5xx, 408, 429 and transport failures are retried by the outbox;
//! any other answer is permanent.
//!
//! The body:
//! `{"id": "<completion.kukka.mig@siirto>", "from": "…", "to": ["…"], "subject": "…", "body": "…", "html": "…" | null}`.
//!
//! A receiver verifies by computing the HMAC over the raw body and comparing in constant time
//! ([`signature`] is the function both sides can use).

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Url;
use sha2::Sha256;

use super::{Channel, Delivery, NotifyError, OutgoingNotice};
use crate::secret::Secret;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Siirto-Signature-256";
/// The header carrying the notice's id (its Message-ID).
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as [`SIGNATURE_HEADER`] carries it.
pub fn signature(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the right [`signature`] of `body` under `secret`, compared in constant
/// time (what a receiver does).
pub fn verify(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(hex_mac) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sent) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sent).is_ok()
}

/// Sends notices as signed JSON POSTs.
pub struct WebhookChannel {
    url: Url,
    secret: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookChannel").field("url", &crate::secret::shown_url(&self.url)).finish()
    }
}

impl WebhookChannel {
    /// A channel posting to `url` (certificates verified against the web PKI), each request
    /// bounded by `timeout`.
    pub fn new(url: Url, secret: Secret, timeout: Duration) -> Result<Self, NotifyError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("siirto/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| NotifyError::Setup(format!("webhook client: {err}")))?;
        Ok(Self { url, secret, http })
    }
}

#[async_trait::async_trait]
impl Channel for WebhookChannel {
    async fn open(&self) -> Result<Box<dyn Delivery>, NotifyError> {
        Ok(Box::new(WebhookDelivery {
            url: self.url.clone(),
            secret: self.secret.clone(),
            http: self.http.clone(),
        }))
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

struct WebhookDelivery {
    url: Url,
    secret: Secret,
    http: reqwest::Client,
}

#[async_trait::async_trait]
impl Delivery for WebhookDelivery {
    async fn transmit(&mut self, notice: &OutgoingNotice) -> Result<(), NotifyError> {
        if notice.to.is_empty() {
            return Err(NotifyError::Invalid {
                message_id: notice.message_id.clone(),
                detail: "no recipients".into(),
            });
        }
        let body = serde_json::to_vec(&serde_json::json!({
            "id": notice.message_id,
            "from": notice.from,
            "to": notice.to,
            "subject": notice.subject,
            "body": notice.body,
            "html": notice.html,
        }))
        .map_err(|err| NotifyError::Invalid {
            message_id: notice.message_id.clone(),
            detail: err.to_string(),
        })?;
        let shown = crate::secret::shown_url(&self.url);
        let response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&self.secret, &body))
            .header(IDEMPOTENCY_HEADER, notice.message_id.as_str())
            .body(body)
            .send()
            .await
            .map_err(|err| NotifyError::Webhook {
                url: shown.clone(),
                status: None,
                detail: without_url(&err),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let snippet: String =
            text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
        Err(NotifyError::Webhook { url: shown, status: Some(status.as_u16()), detail: snippet })
    }

    async fn close(self: Box<Self>) {}
}

/// A reqwest error in words without its URL, whose query may carry data (the caller names the
/// URL once, without its query); also the licence webhook's and Manage2's.
pub fn without_url(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(err);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() { kind.to_owned() } else { format!("{kind}: {detail}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_githubs_hmac_sha256_and_verifies_only_the_same_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let secret = Secret::new("Jefe");
        let body = b"what do ya want for nothing?";
        let header = signature(&secret, body);
        assert_eq!(header, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(verify(&secret, body, &header));
        assert!(!verify(&secret, b"what do ya want for nothing!", &header));
        assert!(!verify(&Secret::new("jefe"), body, &header));
        assert!(!verify(&secret, body, header.trim_start_matches("sha256=")));
        assert!(!verify(&secret, body, "sha256=zz"));
    }

    #[test]
    fn which_answers_are_retried() {
        let error = |status| NotifyError::Webhook { url: "u".into(), status, detail: String::new() };
        for status in [None, Some(500), Some(503), Some(429), Some(408)] {
            assert!(error(status).is_transient(), "{status:?}");
        }
        for status in [Some(400), Some(401), Some(404), Some(410), Some(422)] {
            assert!(!error(status).is_transient(), "{status:?}");
        }
    }
}
