//! Validated names from remote hosts: cPanel users, DNS names and migration ids.
//!
//! Every user or domain name that comes from a WHM answer, a config or the command line is
//! parsed into one of these types before it reaches a path, a URL, a command or a zone. The
//! rules are deliberately strict: a name we cannot vouch for is refused with the reason.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:?} is not valid: {reason}")]
pub struct NameError {
    /// What kind of name it was meant to be ("cPanel user", "domain", "migration id").
    pub kind: &'static str,
    /// The refused input, as given (Debug-escaped when shown, so control characters stay visible).
    pub value: String,
    /// The rule it broke.
    pub reason: &'static str,
}

fn refuse(kind: &'static str, value: &str, reason: &'static str) -> NameError {
    NameError { kind, value: value.chars().take(300).collect(), reason }
}

/// A cPanel account name: 1–16 characters, lowercase ASCII letters and digits, starting with a
/// letter. cPanel itself allows a little more on some versions (hyphens in old accounts); we
/// refuse what we cannot safely put into a path, a URL or a command.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    /// Parses and validates a cPanel user name.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const KIND: &str = "cPanel user";
        if value.is_empty() {
            return Err(refuse(KIND, value, "it is empty"));
        }
        if value.len() > 16 {
            return Err(refuse(KIND, value, "it is longer than 16 characters"));
        }
        if !value.as_bytes()[0].is_ascii_lowercase() {
            return Err(refuse(KIND, value, "it must start with a lowercase letter"));
        }
        if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(refuse(KIND, value, "only lowercase letters and digits are allowed"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AccountName> for String {
    fn from(value: AccountName) -> Self {
        value.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS host name in canonical form: lowercase, without the trailing dot, at most 253
/// characters, labels of 1–63 letters, digits and hyphens (no leading or trailing hyphen),
/// at least two labels. Underscore labels (`_dmarc`) and wildcards are not host names and
/// are refused here; record owner names inside zones are handled by the `dns` module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    /// Parses and validates a domain name; a trailing dot and uppercase letters are accepted
    /// and canonicalised away.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const KIND: &str = "domain";
        let trimmed = value.strip_suffix('.').unwrap_or(value);
        if trimmed.is_empty() {
            return Err(refuse(KIND, value, "it is empty"));
        }
        if trimmed.len() > 253 {
            return Err(refuse(KIND, value, "it is longer than 253 characters"));
        }
        if !trimmed.is_ascii() {
            return Err(refuse(KIND, value, "it is not ASCII (IDNs must be given in punycode)"));
        }
        let lower = trimmed.to_ascii_lowercase();
        let mut labels = 0;
        for label in lower.split('.') {
            labels += 1;
            if label.is_empty() {
                return Err(refuse(KIND, value, "it has an empty label"));
            }
            if label.len() > 63 {
                return Err(refuse(KIND, value, "a label is longer than 63 characters"));
            }
            if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                return Err(refuse(KIND, value, "only letters, digits, hyphens and dots are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(refuse(KIND, value, "a label starts or ends with a hyphen"));
            }
        }
        if labels < 2 {
            return Err(refuse(KIND, value, "it needs at least two labels"));
        }
        Ok(Self(lower))
    }

    /// The name without the trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute form with the trailing dot, as PowerDNS and zone files want it.
    pub fn fqdn(&self) -> String {
        format!("{}.", self.0)
    }

    /// True if `self` equals `zone` or lies below it.
    pub fn is_in(&self, zone: &DomainName) -> bool {
        self.0 == zone.0 || self.0.ends_with(&format!(".{}", zone.0))
    }
}

impl TryFrom<String> for DomainName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DomainName> for String {
    fn from(value: DomainName) -> Self {
        value.0
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a migration: `[a-z0-9-]{1,64}`, chosen by the operator or generated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MigrationId(String);

impl MigrationId {
    /// Parses and validates a migration id.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        const KIND: &str = "migration id";
        if value.is_empty() || value.len() > 64 {
            return Err(refuse(KIND, value, "it must be 1 to 64 characters long"));
        }
        if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(refuse(KIND, value, "only lowercase letters, digits and hyphens are allowed"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MigrationId {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<MigrationId> for String {
    fn from(value: MigrationId) -> Self {
        value.0
    }
}

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        let table: &[(&str, bool)] = &[
            ("kukka", true),
            ("a1234567890abcde", true),
            ("a1234567890abcdef", false),
            ("", false),
            ("1abc", false),
            ("Abc", false),
            ("ab-c", false),
            ("../etc", false),
            ("a b", false),
            ("ab;rm", false),
        ];
        for (input, ok) in table {
            assert_eq!(AccountName::parse(input).is_ok(), *ok, "{input:?}");
        }
    }

    #[test]
    fn domain_names() {
        let table: &[(&str, Option<&str>)] = &[
            ("example.fi", Some("example.fi")),
            ("Example.FI.", Some("example.fi")),
            ("www.kukka-1.test", Some("www.kukka-1.test")),
            ("localhost", None),
            ("-bad.fi", None),
            ("bad-.fi", None),
            ("a..fi", None),
            ("ex ample.fi", None),
            ("ex/ample.fi", None),
            ("äänekoski.fi", None),
            ("_dmarc.example.fi", None),
            (".", None),
        ];
        for (input, expected) in table {
            let got = DomainName::parse(input).ok();
            assert_eq!(got.as_ref().map(DomainName::as_str), *expected, "{input:?}");
        }
        let long_label = format!("{}.fi", "a".repeat(64));
        assert!(DomainName::parse(&long_label).is_err());
    }

    #[test]
    fn domain_membership() {
        let zone = DomainName::parse("example.fi").unwrap();
        assert!(DomainName::parse("www.example.fi").unwrap().is_in(&zone));
        assert!(DomainName::parse("example.fi").unwrap().is_in(&zone));
        assert!(!DomainName::parse("badexample.fi").unwrap().is_in(&zone));
    }
}
