//! Notice channels against a real SMTP server (aiosmtpd on loopback) and a directory.

use std::collections::BTreeSet;
use std::time::Duration;

use siirto::notify::{
    Channel, DirectoryChannel, NotifyError, OutgoingNotice, SmtpChannel, SmtpSecurity, SmtpSettings,
};

use crate::support::smtp::SmtpServer;

fn notice(n: usize) -> OutgoingNotice {
    OutgoingNotice {
        message_id: format!("<notice-{n}.mig-test@siirto>"),
        from: "Siirto <siirto@hosting.test>".into(),
        to: vec![format!("asiakas{n}@kukka-{n:04}.test")],
        subject: format!("Sivustosi kukka-{n:04}.test on siirretty – Äänekoski"),
        body: format!(
            "Hei Äänekosken Kukka Oy,\n\nsivustosi kukka-{n:04}.test toimii nyt uudella palvelimella.\n"
        ),
        html: None,
        return_path: None,
    }
}

fn smtp_channel(port: u16) -> SmtpChannel {
    SmtpChannel::new(SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        timeout: Duration::from_secs(10),
    })
    .expect("smtp channel")
}

/// The channel keeps an SMTP session for the next message: three notices in a row go over one
/// session (one client port at the server). A kept session the server dropped meanwhile (it
/// restarted) is replaced, not failed: the next notice arrives over a new one.
#[tokio::test]
async fn a_kept_session_carries_the_next_notices_and_one_the_server_dropped_is_replaced() {
    let mut smtp = SmtpServer::start();
    let channel = smtp_channel(smtp.addr.port());
    for n in 1..=3 {
        channel.send(&notice(n)).await.expect("sent");
    }
    let delivered = smtp.wait_for(3, Duration::from_secs(10)).await;
    assert!(delivered.iter().all(|d| d.peer == delivered[0].peer), "one session: {delivered:#?}");
    smtp.restart();
    channel.send(&notice(4)).await.expect("sent over a new session");
    let delivered = smtp.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(delivered[3].message_id, notice(4).message_id);
    assert_ne!(delivered[3].peer, delivered[0].peer, "a new session");
}

#[tokio::test]
async fn twenty_notices_arrive_with_their_headers_and_utf8_body() {
    let server = SmtpServer::start();
    let channel = smtp_channel(server.addr.port());
    assert_eq!(channel.name(), "smtp");
    for n in 1..=20 {
        channel.send(&notice(n)).await.expect("send");
    }
    let delivered = server.wait_for(20, Duration::from_secs(20)).await;
    assert_eq!(delivered.len(), 20);

    let ids: BTreeSet<&str> = delivered.iter().map(|d| d.message_id.as_str()).collect();
    assert_eq!(ids.len(), 20, "every notice exactly once");
    for n in 1..=20 {
        let expected = notice(n);
        let got = delivered
            .iter()
            .find(|d| d.message_id == expected.message_id)
            .unwrap_or_else(|| panic!("notice {n} missing"));
        assert_eq!(got.subject, expected.subject);
        assert_eq!(got.to, expected.to[0]);
        assert_eq!(got.rcpt_tos, expected.to);
        assert_eq!(got.mail_from, "siirto@hosting.test");
        assert_eq!(got.from, "Siirto <siirto@hosting.test>");
        assert!(!got.date.is_empty());
        assert!(
            got.raw.contains(&format!("Message-ID: {}\r\n", expected.message_id)),
            "raw message keeps the Message-ID verbatim"
        );
        let body = got.body.as_deref().expect("plain-text body");
        // The transfer encoding may add a final line break; the text itself is exact.
        assert_eq!(body.replace("\r\n", "\n").trim_end(), expected.body.trim_end());
        assert!(body.contains("Äänekosken Kukka Oy"));
    }
}

#[tokio::test]
async fn smtp_server_down_is_a_transient_error() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let err = smtp_channel(port).send(&notice(1)).await.expect_err("nobody listens");
    assert!(matches!(err, NotifyError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn smtp_5xx_is_permanent_and_4xx_is_transient() {
    let server = SmtpServer::start();
    let channel = smtp_channel(server.addr.port());

    let mut rejected = notice(1);
    rejected.to = vec!["reject@kukka-0001.test".into()];
    let err = channel.send(&rejected).await.expect_err("550");
    assert!(matches!(err, NotifyError::Smtp { .. }), "{err:?}");
    assert_eq!(err.smtp_code().as_deref(), Some("550"));
    assert!(!err.is_transient());

    let mut deferred = notice(2);
    deferred.to = vec!["tempfail@kukka-0002.test".into()];
    let err = channel.send(&deferred).await.expect_err("451");
    assert_eq!(err.smtp_code().as_deref(), Some("451"));
    assert!(err.is_transient());

    // The connection handling stays sound: the next notice goes through.
    channel.send(&notice(3)).await.expect("send");
    let delivered = server.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].message_id, notice(3).message_id);
}

#[tokio::test]
async fn starttls_is_required_when_configured() {
    // aiosmtpd here offers no STARTTLS: the channel refuses to send in clear text.
    let server = SmtpServer::start();
    let channel = SmtpChannel::new(SmtpSettings {
        host: "localhost".into(),
        port: server.addr.port(),
        security: SmtpSecurity::Starttls,
        username: None,
        password: None,
        timeout: Duration::from_secs(10),
    })
    .expect("channel");
    let err = channel.send(&notice(1)).await.expect_err("no STARTTLS");
    assert!(matches!(err, NotifyError::StartTlsUnavailable { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(server.delivered().is_empty());
}

#[tokio::test]
async fn directory_channel_is_idempotent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("outbox");
    let channel = DirectoryChannel::new(&out);
    assert_eq!(channel.name(), "directory");
    for n in 1..=3 {
        channel.send(&notice(n)).await.expect("send");
    }
    // The same notice again, and once more with a changed body: still one file for it.
    channel.send(&notice(2)).await.expect("resend");
    let mut changed = notice(2);
    changed.body = "Päivitetty viesti.\n".into();
    channel.send(&changed).await.expect("resend changed");

    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["notice-1.mig-test@siirto.eml", "notice-2.mig-test@siirto.eml", "notice-3.mig-test@siirto.eml",],
        "one file per notice, no temporary files left"
    );
    let text = std::fs::read_to_string(channel.file_for("<notice-2.mig-test@siirto>")).expect("read eml");
    assert!(text.contains("Message-ID: <notice-2.mig-test@siirto>\r\n"));
    assert!(text.contains("To: asiakas2@kukka-0002.test\r\n"));
    assert!(text.contains("Content-Type: text/plain; charset=utf-8\r\n"));
}

/// The webhook channel against a real HTTP endpoint that verifies the HMAC signature: each
/// notice arrives as JSON with its id as the `Idempotency-Key`; a 503 is retried later
/// (transient), a 400 is not (permanent), and a wrong secret is refused by the receiver.
#[tokio::test]
async fn webhook_notices_are_signed_and_keyed_and_errors_are_classified() {
    use axum::http::StatusCode;
    use siirto::notify::WebhookChannel;
    use siirto::secret::Secret;

    use crate::support::webhook::WebhookReceiver;

    let receiver = WebhookReceiver::start("a shared secret").await;
    let url: reqwest::Url = receiver.url().parse().unwrap();
    let channel =
        WebhookChannel::new(url.clone(), Secret::new("a shared secret"), Duration::from_secs(10)).unwrap();
    for n in 0..3 {
        channel.send(&notice(n)).await.expect("delivered");
    }
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 3);
    for (n, received) in accepted.iter().enumerate() {
        let sent = notice(n);
        assert_eq!(received.idempotency_key, sent.message_id);
        assert_eq!(received.json["id"], sent.message_id.as_str());
        assert_eq!(received.json["to"], serde_json::json!(sent.to));
        assert_eq!(received.json["subject"], sent.subject.as_str());
        assert_eq!(received.json["body"], sent.body.as_str());
    }
    assert_eq!(receiver.refused_signatures(), 0);

    receiver.fail_next(&[StatusCode::SERVICE_UNAVAILABLE]);
    let err = channel.send(&notice(3)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    receiver.fail_next(&[StatusCode::BAD_REQUEST]);
    let err = channel.send(&notice(4)).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");

    let wrong = WebhookChannel::new(url, Secret::new("another secret"), Duration::from_secs(10)).unwrap();
    let err = wrong.send(&notice(5)).await.unwrap_err();
    assert!(!err.is_transient() && err.to_string().contains("HTTP 401"), "{err}");
    assert_eq!(receiver.refused_signatures(), 1);
    assert!(!err.to_string().contains("another secret"));

    // Nobody listening: transient, naming the URL.
    drop(receiver);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = channel.send(&notice(6)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("/hook"), "{err}");
}
