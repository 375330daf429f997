//! What a failed step's error was, in the bounded labels of the metrics' error counter.

use crate::store::StoreError;
use crate::{dns, mailsync, notify, ssh, whm};

/// The labels of a failed step in the metrics' error counter: the adapter the error came from,
/// when its chain holds an adapter's error (else the caller derives it from the job's kind),
/// and a short class of what went wrong, one of `timeout`, `refused` (no connection: refused,
/// reset, unreachable), `tls`, `auth`, `http_4xx`, `http_5xx`, `rejected` (the remote side said
/// no), `bad_answer`, `invalid` (our data or config), `command` (a remote command failed),
/// `unavailable` (the database), `lease_lost`, `other`. Never a message or a remote name.
pub(super) fn error_labels(err: &anyhow::Error) -> (Option<&'static str>, &'static str) {
    fn of_http(status: u16) -> &'static str {
        if status >= 500 { "http_5xx" } else { "http_4xx" }
    }
    fn of_io(err: &std::io::Error) -> &'static str {
        use std::io::ErrorKind::*;
        match err.kind() {
            TimedOut => "timeout",
            ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe
            | HostUnreachable | NetworkUnreachable | AddrNotAvailable => "refused",
            _ => "other",
        }
    }
    fn of_reqwest(err: &reqwest::Error) -> &'static str {
        match err.status() {
            Some(status) => of_http(status.as_u16()),
            None if err.is_timeout() => "timeout",
            None if err.is_connect() => "refused",
            None => "other",
        }
    }
    fn of_ssh(err: &ssh::SshError) -> &'static str {
        use ssh::SshError::*;
        match err {
            Connect { source, .. } => of_io(source),
            Timeout { .. } => "timeout",
            HostKeyMismatch { .. } | InvalidHostKey { .. } | AuthFailed { .. } | KeyFile { .. } => "auth",
            InvalidCommand { .. } => "invalid",
            ExecRefused { .. } => "rejected",
            Signal { .. } | NoExitStatus { .. } => "command",
            Protocol { .. } => "other",
        }
    }
    for cause in err.chain() {
        if let Some(err) = cause.downcast_ref::<whm::WhmError>() {
            use whm::WhmError::*;
            let class = match err {
                Setup(_) => "invalid",
                Transport { source, .. } => of_reqwest(source),
                Tls { .. } => "tls",
                Auth { .. } => "auth",
                Http { status, .. } => of_http(*status),
                NotJson { .. } | Shape { .. } => "bad_answer",
                Failed { .. } => "rejected",
            };
            return (Some("whm"), class);
        }
        if let Some(err) = cause.downcast_ref::<dns::DnsError>() {
            use dns::DnsError::*;
            let class = match err {
                Transport { source, .. } => of_reqwest(source),
                Api { status, .. } => of_http(*status),
                Unauthorized { .. } => "auth",
                NoSuchZone { .. } => "http_4xx",
                Timeout { .. } => "timeout",
                Io { source, .. } => of_io(source),
                Refused { .. } => "rejected",
                Shape { .. } | Rcode { .. } | BadAnswer { .. } => "bad_answer",
                BadName { .. } | Name(_) | Config(_) | BadRecord { .. } | TooManyRecords { .. } => "invalid",
            };
            return (Some("dns"), class);
        }
        if let Some(err) = cause.downcast_ref::<notify::NotifyError>() {
            use notify::NotifyError::*;
            return match err {
                // Which channel is not the error's to say: the job's kind tells.
                Invalid { .. } | Setup(_) => (None, "invalid"),
                Connect { source, .. } => (Some("smtp"), of_io(source)),
                Timeout { .. } => (Some("smtp"), "timeout"),
                StartTlsUnavailable { .. } => (Some("smtp"), "tls"),
                Smtp { source, .. } if source.is_timeout() => (Some("smtp"), "timeout"),
                Smtp { source, .. } if source.is_tls() => (Some("smtp"), "tls"),
                Smtp { source, .. } if source.is_response() => (Some("smtp"), "rejected"),
                Smtp { source, .. } if source.is_client() => (Some("smtp"), "invalid"),
                Smtp { .. } => (Some("smtp"), "refused"),
                Webhook { status: Some(status), .. } => (Some("webhook"), of_http(*status)),
                Webhook { status: None, .. } => (Some("webhook"), "refused"),
                Io { source, .. } => (Some("other"), of_io(source)),
            };
        }
        if let Some(err) = cause.downcast_ref::<ssh::SshError>() {
            return (Some("ssh"), of_ssh(err));
        }
        if let Some(err) = cause.downcast_ref::<mailsync::MailSyncError>() {
            use mailsync::MailSyncError::*;
            let class = match err {
                Ssh { source, .. } => of_ssh(source),
                Timeout { .. } => "timeout",
                Rsync { .. } | Command { .. } => "command",
                Config(_) => "invalid",
            };
            return (Some("ssh"), class);
        }
        if let Some(err) = cause.downcast_ref::<StoreError>() {
            let class = match err {
                StoreError::LeaseLost { .. } => "lease_lost",
                StoreError::Conflict { .. }
                | StoreError::NotFound { .. }
                | StoreError::NoMigration { .. } => "invalid",
                other if other.is_transient() => "unavailable",
                _ => "other",
            };
            return (Some("store"), class);
        }
    }
    // No adapter's error: a bare transport error still has a class.
    for cause in err.chain() {
        if let Some(err) = cause.downcast_ref::<reqwest::Error>() {
            return (None, of_reqwest(err));
        }
        if let Some(err) = cause.downcast_ref::<std::io::Error>() {
            return (None, of_io(err));
        }
    }
    (None, "other")
}

#[cfg(test)]
mod tests {
    use anyhow::anyhow;

    use super::*;

    #[test]
    fn errors_are_labelled_by_adapter_and_a_bounded_class() {
        let http = whm::WhmError::Http { function: "listaccts".into(), url: "https://h".into(), status: 503 };
        let timeout =
            dns::DnsError::Timeout { server: "127.0.0.1:53".parse().unwrap(), name: "x.test".into() };
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no");
        let cases: Vec<(anyhow::Error, (Option<&str>, &str))> = vec![
            (anyhow::Error::new(http).context("transferring kukka0001"), (Some("whm"), "http_5xx")),
            (timeout.into(), (Some("dns"), "timeout")),
            (
                StoreError::LeaseLost { job_id: 1, reason: "expired".into() }.into(),
                (Some("store"), "lease_lost"),
            ),
            (anyhow::Error::new(refused).context("reading"), (None, "refused")),
            (anyhow!("kukka0001 says: something odd at 10.0.0.1"), (None, "other")),
        ];
        for (err, expected) in cases {
            assert_eq!(error_labels(&err), expected, "{err:#}");
        }
    }
}
