//! Delivery-status notifications (RFC 3464) of notices: which notice a bounce is about and what
//! it says.
//!
//! Each notice leaves with the return path `<local>+<notice id>@<domain>` (VERP), so the
//! notification a mail server sends back when the message cannot be delivered is addressed to
//! the notice itself; the mail server that receives it delivers it to a Maildir (the config's
//! `mail.bounce_maildir`). A notification is read with mail-parser: the notice from the address
//! it was delivered to (`Delivered-To`, `X-Original-To`, `To`), else from the Message-ID of the
//! returned message or its headers; the outcome from the `message/delivery-status` part's
//! per-recipient fields (`Action`, `Status`, `Diagnostic-Code`). Only `Action: failed` is a
//! bounce: `delayed`, `delivered`, `relayed` and `expanded` reports change nothing.

use mail_parser::{MessageParser, MimeHeaders};

/// What one delivery-status notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The addresses it was delivered to (the return path it answers), lower-cased.
    pub addressed_to: Vec<String>,
    /// The Message-ID of the message it reports on, when the report carries it (`<…>`).
    pub message_id: Option<String>,
    /// Whether a recipient's `Action` is `failed`.
    pub failed: bool,
    /// The failed recipients' `Final-Recipient`, `Status` and `Diagnostic-Code`, one line each.
    pub reason: String,
}

/// Reads one message from the bounce mailbox; `None` when it is not a delivery-status
/// notification (no `message/delivery-status` part).
pub fn parse_dsn(raw: &[u8]) -> Option<Dsn> {
    let message = MessageParser::default().parse(raw)?;
    let mut addressed_to = Vec::new();
    for header in ["Delivered-To", "X-Original-To"] {
        if let Some(value) = message.header_raw(header) {
            addressed_to.push(bare_address(value));
        }
    }
    if let Some(to) = message.to() {
        addressed_to.extend(to.iter().filter_map(|a| a.address()).map(bare_address));
    }
    let mut status = None;
    let mut message_id = None;
    for part in &message.parts {
        let Some(content_type) = part.content_type() else { continue };
        let (ctype, subtype) = (content_type.ctype(), content_type.subtype().unwrap_or_default());
        match (ctype.to_ascii_lowercase().as_str(), subtype.to_ascii_lowercase().as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                status = part.text_contents().map(str::to_owned);
            }
            ("message", "rfc822" | "global") => {
                if let mail_parser::PartType::Message(returned) = &part.body {
                    message_id = message_id.or(returned.message_id().map(|id| format!("<{id}>")));
                }
            }
            ("text", "rfc822-headers" | "global-headers") => {
                let headers = part.text_contents().unwrap_or_default();
                message_id = message_id.or_else(|| field(headers, "Message-ID").map(|id| bare_id(&id)));
            }
            _ => {}
        }
    }
    let status = status?;
    // The per-message fields come first, then one block per recipient, blank-line separated.
    let mut failed = false;
    let mut reasons = Vec::new();
    for block in status.replace("\r\n", "\n").split("\n\n") {
        let Some(action) = field(block, "Action") else { continue };
        if !action.eq_ignore_ascii_case("failed") {
            continue;
        }
        failed = true;
        let recipient = field(block, "Final-Recipient").map(|r| strip_type(&r)).unwrap_or_default();
        let code = field(block, "Status").unwrap_or_default();
        let diagnostic = field(block, "Diagnostic-Code").map(|d| strip_type(&d)).unwrap_or_default();
        reasons.push(format!("{recipient}: {code} {diagnostic}").trim().to_owned());
    }
    Some(Dsn { addressed_to, message_id, failed, reason: reasons.join("; ") })
}

/// A header-style field's value in `block` (case-insensitive name, folded lines joined).
fn field(block: &str, name: &str) -> Option<String> {
    let mut lines = block.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((key, value)) = line.split_once(':') else { continue };
        if !key.trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = value.trim().to_owned();
        while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
            value.push(' ');
            value.push_str(next.trim());
            lines.next();
        }
        return Some(value);
    }
    None
}

/// `rfc822; someone@example.fi` → `someone@example.fi`; `smtp; 550 5.1.1 …` → `550 5.1.1 …`.
fn strip_type(value: &str) -> String {
    value.split_once(';').map_or(value, |(_, rest)| rest).trim().to_owned()
}

/// `Bounces <bounces+42@example.fi>` → `bounces+42@example.fi`.
fn bare_address(value: &str) -> String {
    let value = value.trim();
    let inner = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    inner.trim().to_ascii_lowercase()
}

/// A Message-ID with its angle brackets.
fn bare_id(value: &str) -> String {
    format!("<{}>", value.trim().trim_start_matches('<').trim_end_matches('>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification as Postfix writes one and delivers it to the return path's mailbox.
    fn postfix_dsn(action: &str) -> String {
        format!(
            "Return-Path: <>\r\n\
             Delivered-To: bounces+42@hosting.test\r\n\
             From: MAILER-DAEMON@mx.customer.test (Mail Delivery System)\r\n\
             To: bounces+42@hosting.test\r\n\
             Subject: Undelivered Mail Returned to Sender\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n\
             \r\n\
             --B1\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             \r\n\
             I'm sorry to have to inform you that your message could not be delivered.\r\n\
             \r\n\
             --B1\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             Reporting-MTA: dns; mx.customer.test\r\n\
             Arrival-Date: Sat,  5 Dec 2026 22:00:00 +0000 (UTC)\r\n\
             \r\n\
             Final-Recipient: rfc822; owner@kukka-0001.test\r\n\
             Original-Recipient: rfc822;owner@kukka-0001.test\r\n\
             Action: {action}\r\n\
             Status: 5.2.2\r\n\
             Diagnostic-Code: smtp; 552 5.2.2 Mailbox full:\r\n \
             quota exceeded\r\n\
             \r\n\
             --B1\r\n\
             Content-Type: text/rfc822-headers\r\n\
             \r\n\
             Message-ID: <completion.kukka0001.mig@siirto>\r\n\
             Subject: kukka-0001.test has moved\r\n\
             \r\n\
             --B1--\r\n"
        )
    }

    #[test]
    fn a_failed_report_names_its_notice_and_the_reason() {
        let dsn = parse_dsn(postfix_dsn("failed").as_bytes()).expect("a DSN");
        assert!(dsn.failed);
        assert!(dsn.addressed_to.contains(&"bounces+42@hosting.test".to_owned()), "{dsn:?}");
        assert_eq!(dsn.message_id.as_deref(), Some("<completion.kukka0001.mig@siirto>"));
        assert_eq!(dsn.reason, "owner@kukka-0001.test: 5.2.2 552 5.2.2 Mailbox full: quota exceeded");
    }

    #[test]
    fn a_delay_report_is_not_a_bounce_and_a_plain_message_is_no_report() {
        let dsn = parse_dsn(postfix_dsn("delayed").as_bytes()).expect("a DSN");
        assert!(!dsn.failed && dsn.reason.is_empty(), "{dsn:?}");
        let plain =
            "From: someone@example.test\r\nTo: bounces+42@hosting.test\r\nSubject: hi\r\n\r\nhello\r\n";
        assert_eq!(parse_dsn(plain.as_bytes()), None);
    }
}
