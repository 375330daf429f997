//! Who is asking: the tokens from the config (`[[web.tokens]]`), a browser session made from
//! one, the CSRF token of a session, and the guard every route passes through.
//!
//! A session cookie is `NAME.EXPIRY.MAC`, where MAC is HMAC-SHA256 keyed with the token itself
//! over the name and expiry: no session table, every daemon on the store accepts it, and
//! removing a token from the config ends its sessions. The CSRF token is another MAC of the same
//! key over the same session, put into every form. Tokens are compared as SHA-256 digests in
//! constant time, every configured one each time, and never logged.

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{WebConfig, WebRole};
use crate::secret::Secret;

use super::App;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "siirto_session";
/// The CSRF token's form field (or `X-CSRF-Token` header).
pub const CSRF_FIELD: &str = "csrf";
/// How long a browser session lasts.
const SESSION_SECONDS: i64 = 12 * 3600;
/// The largest form a state-changing request may carry.
const FORM_LIMIT: usize = 64 * 1024;

/// The configured tokens, ready to be checked.
#[derive(Clone)]
pub struct Access {
    tokens: Vec<Known>,
    secure_cookie: bool,
}

#[derive(Clone)]
struct Known {
    name: String,
    role: WebRole,
    digest: [u8; 32],
    token: Secret,
}

/// Who made a request, and how they proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub role: WebRole,
    /// The CSRF token of its browser session (none for a bearer token, which a browser never
    /// sends on its own).
    pub csrf: Option<String>,
}

impl Principal {
    /// The actor recorded with every action it takes.
    pub fn actor(&self) -> String {
        format!("web:{}", self.name)
    }

    /// Whether it may act (not only read).
    pub fn is_operator(&self) -> bool {
        self.role == WebRole::Operator
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("Access").field("tokens", &names).finish()
    }
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

fn mac(key: &Secret, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn same(a: &str, b: &str) -> bool {
    digest(a).ct_eq(&digest(b)).into()
}

impl Access {
    /// The tokens of `[web]`.
    pub fn from_config(web: &WebConfig) -> Access {
        Access {
            tokens: web
                .tokens
                .iter()
                .map(|t| Known {
                    name: t.name.clone(),
                    role: t.role,
                    digest: digest(t.token.expose()),
                    token: t.token.clone(),
                })
                .collect(),
            secure_cookie: web.public_url.as_deref().is_some_and(|u| u.starts_with("https://")),
        }
    }

    /// The holder of `token`, if it is one of ours. Every configured token is compared, in
    /// constant time.
    pub fn bearer(&self, token: &str) -> Option<Principal> {
        let given = digest(token);
        let mut found = None;
        for known in &self.tokens {
            if bool::from(known.digest.ct_eq(&given)) {
                found = Some(Principal { name: known.name.clone(), role: known.role, csrf: None });
            }
        }
        found
    }

    /// A session cookie's value for the holder of `token`, valid until `now + 12 h`.
    pub fn session_for(&self, token: &str, now: i64) -> Option<(Principal, String)> {
        let principal = self.bearer(token)?;
        let known = self.tokens.iter().find(|k| k.name == principal.name)?;
        let expiry = now + SESSION_SECONDS;
        let value = format!(
            "{}.{expiry}.{}",
            known.name,
            mac(&known.token, &format!("session|{}|{expiry}", known.name))
        );
        let csrf = mac(&known.token, &format!("csrf|{}|{expiry}", known.name));
        Some((Principal { csrf: Some(csrf), ..principal }, value))
    }

    /// The holder of a session cookie, if it is one of ours and not expired.
    pub fn session(&self, value: &str, now: i64) -> Option<Principal> {
        let mut parts = value.rsplitn(3, '.');
        let (given, expiry, name) = (parts.next()?, parts.next()?, parts.next()?);
        let expiry_at: i64 = expiry.parse().ok()?;
        if expiry_at <= now {
            return None;
        }
        let known = self.tokens.iter().find(|k| k.name == name)?;
        let expected = mac(&known.token, &format!("session|{name}|{expiry}"));
        if !same(&expected, given) {
            return None;
        }
        let csrf = mac(&known.token, &format!("csrf|{name}|{expiry}"));
        Some(Principal { name: known.name.clone(), role: known.role, csrf: Some(csrf) })
    }

    /// The `Set-Cookie` value of a new session.
    pub fn set_cookie(&self, value: &str) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!(
            "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}"
        )
    }

    /// The `Set-Cookie` value that ends a session.
    pub fn clear_cookie(&self) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }

    /// Who a request comes from: a bearer token first, else a session cookie.
    pub fn identify(&self, headers: &HeaderMap, now: i64) -> Option<Principal> {
        if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
            return self.bearer(token.trim());
        }
        cookie(headers, SESSION_COOKIE).and_then(|value| self.session(&value, now))
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// Whether a request of this method changes anything.
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The guard in front of every route: public routes pass; the rest need a token or a session
/// (401 without); a request that changes state needs the operator role (403 for a viewer, except
/// logging out) and, from a browser session, the session's CSRF token (403 without).
pub async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().clone();
    if super::is_public(&method, &path) {
        return next.run(request).await;
    }
    let now = app.clock.now().timestamp();
    let Some(principal) = app.access.identify(request.headers(), now) else {
        return unauthorized(&path, &app, request.headers());
    };
    if !changes_state(&method) {
        return next.run(with(request, principal)).await;
    }
    if !principal.is_operator() && path != "/logout" {
        return refuse(StatusCode::FORBIDDEN, "this needs the operator role; your token is a viewer's");
    }
    let Some(csrf) = principal.csrf.clone() else {
        return next.run(with(request, principal)).await;
    };
    // A browser session: the form (or the header) must carry the session's CSRF token.
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, FORM_LIMIT).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
    };
    let given = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| form_field(&bytes, CSRF_FIELD));
    if !given.is_some_and(|given| same(&given, &csrf)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "the form's CSRF token is missing or wrong: reload the page and try again",
        );
    }
    next.run(with(Request::from_parts(parts, Body::from(bytes)), principal)).await
}

fn with(mut request: Request, principal: Principal) -> Request {
    request.extensions_mut().insert(principal);
    request
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

/// No credential: the API and the feeds say 401; a page says 401 with the login form.
fn unauthorized(path: &str, app: &App, headers: &HeaderMap) -> Response {
    if path.starts_with("/api/") || path == "/metrics" || path.starts_with("/live") {
        let mut response = refuse(StatusCode::UNAUTHORIZED, "a token is needed: Authorization: Bearer TOKEN");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer realm=\"siirto\"".parse().expect("header"));
        return response;
    }
    let lang = super::i18n::Lang::of(headers);
    let mut response = super::pages::login_page(app, lang, None);
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WebToken;

    fn access() -> Access {
        Access::from_config(&WebConfig {
            public_url: Some("https://siirto.example.fi/".to_owned()),
            tokens: vec![
                WebToken {
                    name: "cs".into(),
                    role: WebRole::Viewer,
                    token: Secret::new("viewer-token-0123456789"),
                },
                WebToken {
                    name: "ops".into(),
                    role: WebRole::Operator,
                    token: Secret::new("operator-token-0123456"),
                },
            ],
        })
    }

    #[test]
    fn a_bearer_token_names_its_holder_and_role() {
        let access = access();
        assert_eq!(access.bearer("viewer-token-0123456789").map(|p| p.role), Some(WebRole::Viewer));
        assert_eq!(access.bearer("operator-token-0123456").map(|p| p.name), Some("ops".to_owned()));
        assert_eq!(access.bearer("operator-token-012345"), None);
        assert_eq!(access.bearer(""), None);
    }

    #[test]
    fn a_session_cookie_is_accepted_until_it_expires_and_not_when_changed() {
        let access = access();
        let (principal, value) = access.session_for("operator-token-0123456", 1_000).expect("session");
        assert_eq!(access.session(&value, 1_001), Some(principal.clone()));
        assert_eq!(access.session(&value, 1_000 + SESSION_SECONDS), None, "expired");
        // Another name, or another expiry, with the same MAC is refused.
        let forged = value.replacen("ops.", "cs.", 1);
        assert_eq!(access.session(&forged, 1_001), None);
        let (_, mac) = value.rsplit_once('.').expect("mac");
        assert_eq!(access.session(&format!("ops.{}.{mac}", 1_000 + 10 * SESSION_SECONDS), 1_001), None);
        assert!(access.set_cookie(&value).contains("HttpOnly; SameSite=Strict"));
        assert!(access.set_cookie(&value).ends_with("; Secure"), "public_url is https");
        assert!(principal.csrf.is_some_and(|c| c.len() == 64));
    }

    #[test]
    fn the_debug_form_names_holders_not_tokens() {
        let shown = format!("{:?}", access());
        assert!(shown.contains("\"cs\"") && !shown.contains("viewer-token"), "{shown}");
    }
}
