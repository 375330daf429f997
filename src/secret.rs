//! Secrets (API tokens, passwords, keys): held in a type whose `Debug` and `Display` redact.

use std::fmt;

/// A secret string. It can be read only through [`Secret::expose`], so printing a config,
/// an error or a log field never shows it. It may carry where it was read from (not secret),
/// so that a server refusing it can be answered with which file or variable to fix.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    origin: Option<String>,
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self { value: value.into(), origin: None }
    }

    /// The same secret, saying where it was read from, e.g. `api_key_file (/etc/siirto/pdns.key)`.
    pub fn with_origin(self, origin: impl Into<String>) -> Self {
        Self { origin: Some(origin.into()), ..self }
    }

    /// Where the secret was read from, when known.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A URL as messages and logs show it: without credentials, query or fragment (where a token
/// could ride along).
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_redact() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{secret}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
        let secret = secret.with_origin("token_file (/etc/t)");
        assert_eq!(secret.origin(), Some("token_file (/etc/t)"));
        assert!(!format!("{secret:?}{secret}").contains("hunter2"));
    }
}
