//! Reading spanned TOML values into validated ones, and the error that names file, line,
//! column, field and what was expected: shared by the config and [`crate::playbook`].

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;

/// A config or playbook refused: where, which field, and what was expected.
///
/// Displays as `FILE:LINE:COLUMN: FIELD: MESSAGE`, e.g.
/// `playbooks/x.toml:12:13: dns.short_ttl: expected a TTL of 1..=86400 seconds, got 0`.
/// The position is absent only when the file could not be read at all; the field is empty
/// for TOML syntax errors, which belong to no field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file (or other origin) the text came from, as given by the caller.
    pub origin: String,
    /// 1-based line and column (in characters) of the offending text, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the offending field (`hosts.old.token_file`, `schedule.decommission[1].after`).
    pub field: String,
    /// What was wrong, phrased as what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if let Some((line, column)) = self.position {
            write!(f, "{line}:{column}:")?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)
    }
}

/// The text being parsed and where it came from; turns byte spans into error positions.
pub(crate) struct Source<'a> {
    pub(crate) text: &'a str,
    pub(crate) origin: &'a str,
}

impl Source<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// An error at a byte span of the text.
    pub(crate) fn error(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            origin: self.origin.to_owned(),
            position: Some(self.position(span.start)),
            field: field.into(),
            message: message.into(),
        }
    }

    /// An error at a spanned value.
    pub(crate) fn at<T>(
        &self,
        value: &Spanned<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error(value.span(), field, message)
    }

    /// A command as an argument vector (never a shell string): 1-32 words of at most 256
    /// characters, none empty or with control characters; `default` when not given.
    pub(crate) fn argv(
        &self,
        value: Option<&Spanned<Vec<String>>>,
        field: String,
        default: &[&str],
    ) -> Result<Vec<String>, ConfigError> {
        let Some(argv) = value else {
            return Ok(default.iter().map(|w| (*w).to_owned()).collect());
        };
        let words = argv.get_ref();
        let bad = words.iter().any(|w| w.is_empty() || w.len() > 256 || w.contains(char::is_control));
        if words.is_empty() || words.len() > 32 || bad {
            return Err(self.at(
                argv,
                field,
                "expected a command as a list of 1-32 words without control characters, like [\"systemctl\", \"poweroff\"]",
            ));
        }
        Ok(words.clone())
    }

    /// Deserializes the raw structs, turning serde's errors into positioned [`ConfigError`]s
    /// with the dotted field path.
    pub(crate) fn deserialize<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let deserializer = toml::Deserializer::new(self.text);
        serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let mut field = field_path(err.path());
            let inner = err.into_inner();
            let mut message = inner.message().trim().replace('\n', "; ");
            // serde says "missing field `x`" at the table that lacks it; name the field itself.
            if let Some(missing) =
                message.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`'))
            {
                field = join_field(&field, missing);
                message = "expected this required field, but it is missing".to_owned();
            } else if let Some(rest) = message.strip_prefix("unknown field `") {
                // The path already names the unknown key; say what would have been accepted.
                message = match rest.split_once("`, ") {
                    Some((_, expected)) => format!("unknown field, {expected}"),
                    None => "unknown field, there are no fields here".to_owned(),
                };
            }
            let position = Some(self.position(inner.span().map_or(0, |span| span.start)));
            ConfigError { origin: self.origin.to_owned(), position, field, message }
        })
    }

    /// Parses a human duration ("90s", "15m", "14d").
    pub(crate) fn duration(&self, value: &Spanned<String>, field: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(value.get_ref().trim()).map_err(|err| {
            self.at(
                value,
                field,
                format!(
                    "expected a duration like \"90s\", \"15m\" or \"14d\", got {:?} ({err})",
                    value.get_ref()
                ),
            )
        })
    }

    /// Parses a human duration and checks it lies in `min..=max`.
    pub(crate) fn duration_in(
        &self,
        value: &Spanned<String>,
        field: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let duration = self.duration(value, field)?;
        if duration < min || duration > max {
            return Err(self.at(
                value,
                field,
                format!(
                    "expected a duration of {}..={}, got {:?}",
                    as_written(min),
                    as_written(max),
                    value.get_ref()
                ),
            ));
        }
        Ok(duration)
    }

    /// An optional duration with a default, checked against `min..=max`.
    pub(crate) fn duration_or(
        &self,
        value: Option<&Spanned<String>>,
        field: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(value) => self.duration_in(value, field, min, max),
            None => Ok(default),
        }
    }

    /// An integer checked against `min..=max`; `what` names it ("a TTL"), `unit` follows the range.
    pub(crate) fn integer(
        &self,
        value: &Spanned<i64>,
        field: &str,
        min: i64,
        max: i64,
        what: &str,
        unit: &str,
    ) -> Result<i64, ConfigError> {
        let got = *value.get_ref();
        if got < min || got > max {
            return Err(self.at(value, field, format!("expected {what} of {min}..={max}{unit}, got {got}")));
        }
        Ok(got)
    }

    /// An optional `u32` with a default, checked against `min..=max`.
    pub(crate) fn count_or(
        &self,
        value: Option<&Spanned<i64>>,
        field: &str,
        default: u32,
        (min, max): (u32, u32),
        what: &str,
    ) -> Result<u32, ConfigError> {
        match value {
            Some(value) => {
                let got = self.integer(value, field, i64::from(min), i64::from(max), what, "")?;
                // In range of two u32 bounds, so the conversion cannot fail; map it anyway.
                u32::try_from(got).map_err(|_| self.at(value, field, "expected a u32"))
            }
            None => Ok(default),
        }
    }
}

pub(crate) fn join_field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
}

/// `dns.nameservers[1]` from serde_path_to_error's path, without toml's private Spanned keys.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            serde_path_to_error::Segment::Map { key } if key.starts_with("$__") => {}
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out
}

/// A duration as a config or playbook writes it ("90d", "90s", "250ms"), in its largest whole
/// unit, for messages (humantime would say "2months 29days 2h 52m 48s" for 90 days).
pub(crate) fn as_written(duration: Duration) -> String {
    let ms = duration.as_millis();
    let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")];
    match units.iter().find(|(size, _)| ms > 0 && ms.is_multiple_of(*size)) {
        Some((size, unit)) => format!("{}{unit}", ms / size),
        None => format!("{ms}ms"),
    }
}
