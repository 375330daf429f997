//! The `[licence]` table: where the old server's cPanel licence is cancelled at the
//! decommission (read by [`crate::licence`]). Optional: without it no licence stage can run,
//! and the stage says so.
//!
//! ```toml
//! [licence]
//! provider = "manage2"                        # cPanel's own licence API
//! url = "https://manage2.cpanel.net/"         # the default
//! user = "licences@example.fi"
//! password_file = "secrets/manage2.password"  # or password_env
//! ```
//!
//! or `provider = "webhook"` with `url` and `secret_file` (or `secret_env`). Both URLs are
//! `https://`, or `http://` to a loopback address only (a simulator, a local bridge): the
//! password or the signed requests never cross a network in the clear.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::parse::Ctx;
use crate::secret::Secret;

/// Manage2's own address, the default `url` of `provider = "manage2"`.
pub const MANAGE2_URL: &str = "https://manage2.cpanel.net/";

/// The validated `[licence]` table.
#[derive(Debug, Clone, PartialEq)]
pub enum LicenceConfig {
    /// cPanel's Manage2 API, with HTTP Basic authentication. Manage2 also wants the address
    /// siirto calls from added as an access IP (Manage2 » Security » Add an Access IP).
    Manage2 {
        /// The API's base (`url`, default [`MANAGE2_URL`]).
        url: reqwest::Url,
        /// The Manage2 user (`user`).
        user: String,
        /// Its password (`password_file` or `password_env`).
        password: Secret,
    },
    /// A company's own licence system, asked by signed JSON POSTs (see [`crate::licence`]).
    Webhook {
        /// Where to post (`url`).
        url: reqwest::Url,
        /// The shared secret the bodies are signed with (`secret_file` or `secret_env`).
        secret: Secret,
    },
}

impl LicenceConfig {
    /// `manage2` or `webhook`, as the config names it.
    pub fn provider(&self) -> &'static str {
        match self {
            LicenceConfig::Manage2 { .. } => "manage2",
            LicenceConfig::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLicence {
    provider: Spanned<String>,
    url: Option<Spanned<String>>,
    // provider = "manage2"
    user: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_env: Option<Spanned<String>>,
    /// Accepted by the parser only to be refused with a helpful message.
    password: Option<Spanned<toml::Value>>,
    // provider = "webhook"
    secret_file: Option<Spanned<String>>,
    secret_env: Option<Spanned<String>>,
    /// Accepted by the parser only to be refused with a helpful message.
    secret: Option<Spanned<toml::Value>>,
}

impl Ctx<'_> {
    /// Validates the `[licence]` table.
    pub(super) fn licence(&self, raw: &RawLicence) -> Result<LicenceConfig, ConfigError> {
        let provider = raw.provider.get_ref().trim();
        let manage2_only: [(&str, Option<Range<usize>>); 4] = [
            ("user", raw.user.as_ref().map(Spanned::span)),
            ("password_file", raw.password_file.as_ref().map(Spanned::span)),
            ("password_env", raw.password_env.as_ref().map(Spanned::span)),
            ("password", raw.password.as_ref().map(Spanned::span)),
        ];
        let webhook_only: [(&str, Option<Range<usize>>); 3] = [
            ("secret_file", raw.secret_file.as_ref().map(Spanned::span)),
            ("secret_env", raw.secret_env.as_ref().map(Spanned::span)),
            ("secret", raw.secret.as_ref().map(Spanned::span)),
        ];
        // A field of the other provider is a mistake worth naming (a half-edited table).
        let refuse = |fields: &[(&str, Option<Range<usize>>)], owner: &str| -> Result<(), ConfigError> {
            match fields.iter().find_map(|(name, span)| span.clone().map(|span| (name, span))) {
                Some((name, span)) => Err(self.src.error(
                    span,
                    format!("licence.{name}"),
                    format!("expected no {name} with provider = \"{provider}\" ({name} is for provider = \"{owner}\")"),
                )),
                None => Ok(()),
            }
        };
        match provider {
            "manage2" => {
                refuse(&webhook_only, "webhook")?;
                let url = match &raw.url {
                    Some(url) => self.licence_url(url)?,
                    None => reqwest::Url::parse(MANAGE2_URL).map_err(|err| {
                        self.src.at(&raw.provider, "licence.url", format!("the default URL: {err}"))
                    })?,
                };
                let user = raw.user.as_ref().ok_or_else(|| {
                    self.src.at(
                        &raw.provider,
                        "licence.user",
                        "expected user (the Manage2 login) for provider = \"manage2\"",
                    )
                })?;
                let name = user.get_ref().trim();
                // Basic authentication joins user and password with a colon.
                if name.is_empty() || name.contains(':') || name.contains(char::is_control) {
                    return Err(self.src.at(
                        user,
                        "licence.user",
                        format!("expected a Manage2 user name without \":\", got {:?}", user.get_ref()),
                    ));
                }
                let password = self
                    .secret(
                        "licence",
                        "password",
                        raw.password_file.as_ref(),
                        raw.password_env.as_ref(),
                        raw.password.as_ref(),
                        Some(raw.provider.span()),
                    )?
                    .ok_or_else(|| {
                        self.src.at(
                            &raw.provider,
                            "licence.password_file",
                            "expected password_file or password_env",
                        )
                    })?;
                Ok(LicenceConfig::Manage2 { url, user: name.to_owned(), password })
            }
            "webhook" => {
                refuse(&manage2_only, "manage2")?;
                let url = raw.url.as_ref().ok_or_else(|| {
                    self.src.at(&raw.provider, "licence.url", "expected url for provider = \"webhook\"")
                })?;
                let url = self.licence_url(url)?;
                let secret = self
                    .secret(
                        "licence",
                        "secret",
                        raw.secret_file.as_ref(),
                        raw.secret_env.as_ref(),
                        raw.secret.as_ref(),
                        Some(raw.provider.span()),
                    )?
                    .ok_or_else(|| {
                        self.src.at(
                            &raw.provider,
                            "licence.secret_file",
                            "expected secret_file or secret_env",
                        )
                    })?;
                Ok(LicenceConfig::Webhook { url, secret })
            }
            other => Err(self.src.at(
                &raw.provider,
                "licence.provider",
                format!("expected \"manage2\" or \"webhook\", got {other:?}"),
            )),
        }
    }

    /// `https://`, or `http://` to a loopback address only.
    fn licence_url(&self, value: &Spanned<String>) -> Result<reqwest::Url, ConfigError> {
        let refused = |detail: String| self.src.at(value, "licence.url", detail);
        let url = reqwest::Url::parse(value.get_ref().trim())
            .map_err(|err| refused(format!("expected a URL, got {:?} ({err})", value.get_ref())))?;
        let loopback = url.host_str().is_some_and(|host| {
            host == "localhost"
                || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
        match url.scheme() {
            "https" if url.host_str().is_some() => Ok(url),
            "http" if loopback => Ok(url),
            _ => Err(refused(format!(
                "expected an https:// URL (http:// only to a loopback address): it carries the licence credentials, got {:?}",
                value.get_ref()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::parse::parse_with_env;
    use super::*;

    const BASE: &str = r#"database = "sqlite:s.db"

[dns]
provider = "powerdns"
api_url = "http://127.0.0.1:8081"
api_key_file = "secrets/pdns.key"
nameservers = ["127.0.0.1:5300"]

[mail]
from = "support@example.fi"
channel = "directory"
path = "outbox"
"#;

    fn dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("secrets")).expect("secrets");
        for (name, value) in [
            ("pdns.key", "PDNSKEY"),
            ("manage2.password", "MANAGE2PASSWORD\n"),
            ("licence-webhook.secret", "LICENCESECRET"),
        ] {
            std::fs::write(dir.path().join("secrets").join(name), value).expect("write");
        }
        dir
    }

    fn env(name: &str) -> Option<String> {
        (name == "SIIRTO_MANAGE2_PASSWORD").then(|| "FROMENV".to_owned())
    }

    fn parse(dir: &Path, table: &str) -> Result<Option<LicenceConfig>, ConfigError> {
        parse_with_env(&format!("{BASE}\n{table}"), "s.toml", dir, &env).map(|config| config.licence)
    }

    #[test]
    fn the_table_is_optional() {
        let dir = dir();
        assert_eq!(parse(dir.path(), "").expect("no table"), None);
    }

    #[test]
    fn the_shipped_example_table_is_valid() {
        // The example's [licence] table, on its own after a minimal config.
        let start = super::super::EXAMPLE.find("\n[licence]\n").expect("the example has a [licence] table");
        let rest = &super::super::EXAMPLE[start + 1..];
        let end = rest[1..].find("\n[").map_or(rest.len(), |i| i + 2);
        let dir = dir();
        let config = parse(dir.path(), &rest[..end]).expect("example table").expect("a licence provider");
        let LicenceConfig::Manage2 { url, user, password } = config else {
            panic!("the example uses Manage2: {config:?}");
        };
        assert_eq!(url.as_str(), MANAGE2_URL);
        assert_eq!(user, "licences@example.fi");
        assert_eq!(password.expose(), "MANAGE2PASSWORD");
    }

    #[test]
    fn manage2_and_webhook_tables_are_read() {
        let dir = dir();
        let manage2 = parse(
            dir.path(),
            "[licence]\nprovider = \"manage2\"\nuser = \"licences@example.fi\"\npassword_env = \"SIIRTO_MANAGE2_PASSWORD\"\n",
        )
        .expect("manage2")
        .expect("a provider");
        assert_eq!(manage2.provider(), "manage2");
        let LicenceConfig::Manage2 { url, password, .. } = &manage2 else { panic!("{manage2:?}") };
        assert_eq!(url.as_str(), MANAGE2_URL);
        assert_eq!(password.expose(), "FROMENV");
        assert_eq!(password.origin(), Some("password_env (SIIRTO_MANAGE2_PASSWORD)"));
        assert!(!format!("{manage2:?}").contains("FROMENV"));

        let sim = parse(
            dir.path(),
            "[licence]\nprovider = \"manage2\"\nurl = \"http://127.0.0.1:4321/\"\nuser = \"u\"\npassword_file = \"secrets/manage2.password\"\n",
        )
        .expect("manage2 on loopback")
        .expect("a provider");
        assert!(
            matches!(&sim, LicenceConfig::Manage2 { url, .. } if url.as_str() == "http://127.0.0.1:4321/")
        );

        let webhook = parse(
            dir.path(),
            "[licence]\nprovider = \"webhook\"\nurl = \"https://billing.example.fi/licences\"\nsecret_file = \"secrets/licence-webhook.secret\"\n",
        )
        .expect("webhook")
        .expect("a provider");
        let LicenceConfig::Webhook { url, secret } = &webhook else { panic!("{webhook:?}") };
        assert_eq!(url.as_str(), "https://billing.example.fi/licences");
        assert_eq!(secret.expose(), "LICENCESECRET");
        assert_eq!(webhook.provider(), "webhook");
    }

    #[test]
    fn mistakes_are_refused_at_their_line_and_field() {
        let dir = dir();
        let manage2 = "[licence]\nprovider = \"manage2\"\nuser = \"licences@example.fi\"\npassword_file = \"secrets/manage2.password\"\n";
        let cases = [
            (manage2.replace("\"manage2\"", "\"cpanel\""), 15, "licence.provider: expected \"manage2\" or \"webhook\", got \"cpanel\""),
            (manage2.replace("user = \"licences@example.fi\"\n", ""), 15, "licence.user: expected user"),
            (manage2.replace("licences@example.fi", "a:b"), 16, "licence.user: expected a Manage2 user name without \":\""),
            (manage2.replace("password_file = \"secrets/manage2.password\"", "password = \"hunter2\""), 17, "licence.password: secrets are not written in the config"),
            (manage2.replace("password_file = \"secrets/manage2.password\"\n", ""), 15, "licence.password_file: expected password_file or password_env"),
            (manage2.replace("secrets/manage2.password", "secrets/missing"), 17, "licence.password_file: expected a readable file"),
            (format!("{manage2}url = \"http://manage2.cpanel.net/\"\n"), 18, "licence.url: expected an https:// URL (http:// only to a loopback address)"),
            (format!("{manage2}url = \"manage2\"\n"), 18, "licence.url: expected a URL"),
            (format!("{manage2}secret_file = \"secrets/licence-webhook.secret\"\n"), 18, "licence.secret_file: expected no secret_file with provider = \"manage2\""),
            (format!("{manage2}timeout = \"5s\"\n"), 18, "licence.timeout: unknown field"),
            ("[licence]\nprovider = \"webhook\"\nsecret_file = \"secrets/licence-webhook.secret\"\n".to_owned(), 15, "licence.url: expected url for provider = \"webhook\""),
            ("[licence]\nprovider = \"webhook\"\nurl = \"https://b.example.fi/\"\n".to_owned(), 15, "licence.secret_file: expected secret_file or secret_env"),
            ("[licence]\nprovider = \"webhook\"\nurl = \"https://b.example.fi/\"\nsecret_file = \"secrets/licence-webhook.secret\"\nuser = \"u\"\n".to_owned(), 18, "licence.user: expected no user with provider = \"webhook\""),
        ];
        for (table, line, expected) in cases {
            let err = parse(dir.path(), &table).expect_err(expected);
            let shown = err.to_string();
            assert!(shown.contains(expected), "{table}\n→ {shown}");
            assert!(shown.starts_with(&format!("s.toml:{line}:")), "{table}\n→ {shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
