//! The simulated hosts' mail side: SMTP delivery into Maildirs, the exim-style main log, mail
//! routing through WHM (cPanel API 2 `Email::setmxcheck`), and relaying to the target by MX
//! through a real pdns_server after the account was transferred there.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use siirto::dns::{PowerDns, Rrset};
use siirto::names::{AccountName, DomainName};
use siirto::secret::Secret;
use siirto::sim::{SimAccount, SimHost, SimHostSpec, SimWorld, generate_accounts, start_host};
use siirto::whm::{
    AccountItem, MailRouting, RemoteRootSession, SessionState, TlsPolicy, WhmClient, WhmError, item_outcomes,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::pdns::Pdns;

const SOURCE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 51);
const TARGET_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 52);

fn domain(name: &str) -> DomainName {
    DomainName::parse(name).unwrap()
}

fn user(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

async fn start(
    hostname: &str,
    ip: Ipv4Addr,
    accounts: Vec<SimAccount>,
    resolvers: Vec<SocketAddr>,
    world: &SimWorld,
    dir: &std::path::Path,
) -> SimHost {
    let mut spec = SimHostSpec::new(hostname, ip, &format!("token-{hostname}"));
    spec.accounts = accounts;
    spec.dns_resolvers = resolvers;
    start_host(spec, dir.join(hostname), world).await.expect("sim host starts")
}

fn whm(host: &SimHost) -> WhmClient {
    WhmClient::new(host.whm_url.clone(), Secret::new(&host.token), TlsPolicy::WebPki, Duration::from_secs(10))
        .expect("WHM client")
}

/// A line-based SMTP client on a raw socket: reads one (possibly multi-line) reply.
struct RawSmtp {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl RawSmtp {
    async fn connect(addr: SocketAddr) -> (RawSmtp, String) {
        let stream = TcpStream::connect(addr).await.expect("connect to the sim SMTP listener");
        let (read, writer) = stream.into_split();
        let mut smtp = RawSmtp { reader: BufReader::new(read), writer };
        let greeting = smtp.reply().await;
        (smtp, greeting)
    }

    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).await.expect("read reply");
            assert!(read > 0, "connection closed; so far: {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn command(&mut self, line: &str) -> String {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).await.expect("write command");
        self.reply().await
    }

    /// One whole message; `body` lines are sent as given (the caller dot-stuffs). Returns the
    /// reply to the end of DATA.
    async fn send(&mut self, from: &str, to: &[&str], body: &str) -> String {
        assert!(self.command(&format!("MAIL FROM:<{from}>")).await.starts_with("250"));
        for rcpt in to {
            let reply = self.command(&format!("RCPT TO:<{rcpt}>")).await;
            assert!(reply.starts_with("250"), "RCPT {rcpt}: {reply}");
        }
        assert!(self.command("DATA").await.starts_with("354"));
        self.writer.write_all(body.as_bytes()).await.expect("write body");
        self.command(".").await
    }
}

/// Sends one simple message and expects 250.
async fn send_simple(addr: SocketAddr, to: &str, subject: &str) -> String {
    let (mut smtp, _) = RawSmtp::connect(addr).await;
    assert!(smtp.command("EHLO client.example.test").await.starts_with("250"));
    let body = format!(
        "From: sender@example.test\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nHello.\r\n"
    );
    let reply = smtp.send("sender@example.test", &[to], &body).await;
    assert!(reply.starts_with("250 OK id="), "{reply}");
    smtp.command("QUIT").await;
    reply
}

fn read(path: &std::path::Path) -> String {
    String::from_utf8(std::fs::read(path).expect("read message")).expect("utf-8 message")
}

async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

#[tokio::test]
async fn local_delivery_lands_in_the_maildir_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let source =
        start("old.sim.test", SOURCE_IP, generate_accounts(3, "kukka"), vec![], &world, dir.path()).await;
    assert_eq!(source.smtp_addr.ip(), SOURCE_IP);

    let (mut smtp, greeting) = RawSmtp::connect(source.smtp_addr).await;
    assert!(greeting.starts_with("220 old.sim.test ESMTP"), "{greeting}");
    let ehlo = smtp.command("EHLO client.example.test").await;
    assert!(ehlo.starts_with("250-old.sim.test Hello client.example.test"), "{ehlo}");
    assert!(ehlo.lines().last().unwrap().starts_with("250 "), "{ehlo}");
    assert!(smtp.command("NOOP").await.starts_with("250"));
    // Two recipients on two accounts (one an addon domain), one message.
    let body =
        "From: sender@example.test\r\nSubject: Welcome\r\nMessage-ID: <m1@example.test>\r\n\r\nHi!\r\n";
    let reply =
        smtp.send("sender@example.test", &["Info@kukka-0001.test", "shop@kukka-0003-shop.test"], body).await;
    assert!(reply.starts_with("250 OK id="), "{reply}");
    let id = reply.trim().trim_start_matches("250 OK id=").to_owned();
    // RSET drops a half-made transaction; the next one works.
    assert!(smtp.command("MAIL FROM:<a@example.test>").await.starts_with("250"));
    assert!(smtp.command("RSET").await.starts_with("250"));
    assert!(smtp.command("RCPT TO:<info@kukka-0001.test>").await.starts_with("503"));
    assert!(smtp.command("QUIT").await.starts_with("221"));

    let info = source.maildir_messages(&user("kukka0001"), &domain("kukka-0001.test"), "info");
    assert_eq!(info.len(), 1, "{info:?}");
    assert!(info[0].to_string_lossy().contains("/home/kukka0001/mail/kukka-0001.test/info/new/"), "{info:?}");
    let text = read(&info[0]);
    assert!(text.starts_with("Received: from [127.0.0.1]"), "{text}");
    assert!(text.contains(&format!("id {id}")), "{text}");
    assert!(text.contains("Subject: Welcome\r\nMessage-ID: <m1@example.test>\r\n\r\nHi!\r\n"), "{text}");
    let shop = source.maildir_messages(&user("kukka0003"), &domain("kukka-0003-shop.test"), "shop");
    assert_eq!(shop.len(), 1, "{shop:?}");

    let log = source.mail_log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    let stamp = |line: &str| chrono::NaiveDateTime::parse_from_str(&line[..19], "%Y-%m-%d %H:%M:%S").is_ok();
    assert!(lines.iter().all(|line| stamp(line)), "{log}");
    assert!(
        lines[0][20..]
            .starts_with(&format!("{id} <= sender@example.test H=(client.example.test) [127.0.0.1]:")),
        "{log}"
    );
    assert!(lines[0].contains(" P=esmtp S="), "{log}");
    assert!(
        lines[0]
            .contains(" id=m1@example.test T=\"Welcome\" for info@kukka-0001.test shop@kukka-0003-shop.test"),
        "{log}"
    );
    assert_eq!(
        &lines[1][20..],
        format!("{id} => info <info@kukka-0001.test> R=virtual_user T=dovecot_virtual_delivery")
    );
    assert_eq!(
        &lines[2][20..],
        format!("{id} => shop <shop@kukka-0003-shop.test> R=virtual_user T=dovecot_virtual_delivery")
    );
    assert_eq!(&lines[3][20..], format!("{id} Completed"));
}

#[tokio::test]
async fn an_unknown_domain_or_a_bad_address_is_refused_with_550() {
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let source =
        start("old.sim.test", SOURCE_IP, generate_accounts(2, "kukka"), vec![], &world, dir.path()).await;

    let (mut smtp, _) = RawSmtp::connect(source.smtp_addr).await;
    assert!(smtp.command("MAIL FROM:<a@example.test>").await.starts_with("503"), "HELO first");
    assert!(smtp.command("HELO client.example.test").await.starts_with("250"));
    assert!(smtp.command("DATA").await.starts_with("503"), "no recipients yet");
    assert!(smtp.command("MAIL FROM:<a@example.test>").await.starts_with("250"));
    for rcpt in ["<someone@elsewhere.test>", "<../x@kukka-0001.test>", "<no-at-sign>"] {
        let reply = smtp.command(&format!("RCPT TO:{rcpt}")).await;
        assert_eq!(reply, "550 Unrouteable address\r\n", "{rcpt}");
    }
    assert!(smtp.command("DATA").await.starts_with("503"));
    assert!(smtp.command("BOGUS").await.starts_with("500"));
    smtp.command("QUIT").await;

    let log = source.mail_log();
    assert!(
        log.contains("H=(client.example.test) [127.0.0.1]:")
            && log
                .contains(" F=<a@example.test> rejected RCPT <someone@elsewhere.test>: Unrouteable address"),
        "{log}"
    );
    assert!(!log.contains(" <= "), "no message arrived: {log}");
    assert!(!dir.path().join("old.sim.test/home/kukka0001/mail/kukka-0001.test/x").exists());
}

#[tokio::test]
async fn a_lone_dot_line_survives_dot_stuffing() {
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let source =
        start("old.sim.test", SOURCE_IP, generate_accounts(1, "kukka"), vec![], &world, dir.path()).await;

    // Raw: the client stuffs "." to ".." and ".x" to "..x"; the server must undo it.
    let (mut smtp, _) = RawSmtp::connect(source.smtp_addr).await;
    smtp.command("EHLO client.example.test").await;
    let body = "Subject: dots\r\n\r\nbefore\r\n..\r\n..dotted\r\nafter\r\n";
    let reply = smtp.send("a@example.test", &["dots@kukka-0001.test"], body).await;
    assert!(reply.starts_with("250"), "{reply}");
    smtp.command("QUIT").await;

    // lettre (a real client) with a lone dot line in the body.
    let message = Message::builder()
        .from("Sender <sender@example.test>".parse::<Mailbox>().unwrap())
        .to("dots@kukka-0001.test".parse::<Mailbox>().unwrap())
        .subject("lettre dots")
        .body("first\n.\nlast\n".to_owned())
        .unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(SOURCE_IP.to_string())
        .port(source.smtp_addr.port())
        .build();
    transport.send(message).await.expect("lettre delivers to the sim");

    let messages = source.maildir_messages(&user("kukka0001"), &domain("kukka-0001.test"), "dots");
    assert_eq!(messages.len(), 2, "{messages:?}");
    let texts: Vec<String> = messages.iter().map(|p| read(p)).collect();
    let raw = texts.iter().find(|t| t.contains("Subject: dots")).expect("the raw message");
    assert!(raw.ends_with("\r\n\r\nbefore\r\n.\r\n.dotted\r\nafter\r\n"), "{raw:?}");
    let via_lettre = texts.iter().find(|t| t.contains("Subject: lettre dots")).expect("the lettre message");
    assert!(via_lettre.contains("first\r\n.\r\nlast"), "{via_lettre:?}");
}

/// MX and A of the account's domain at the target, in a real pdns_server.
async fn zone_at_target(pdns: &Pdns, zone: &str) {
    let provider =
        PowerDns::new(pdns.api_url.clone(), Secret::new(&pdns.api_key), "localhost".into()).unwrap();
    let rrset = |name: &str, rtype: &str, records: &[&str]| Rrset {
        name: name.into(),
        rtype: rtype.into(),
        ttl: 60,
        records: records.iter().map(|s| s.to_string()).collect(),
    };
    provider
        .create_zone(
            &domain(zone),
            &["ns1.hosting.test.".to_owned()],
            &[
                rrset(&format!("{zone}."), "A", &[&TARGET_IP.to_string()]),
                rrset(&format!("{zone}."), "MX", &[&format!("10 mail.{zone}.")]),
                rrset(&format!("mail.{zone}."), "A", &[&TARGET_IP.to_string()]),
            ],
        )
        .await
        .unwrap_or_else(|err| panic!("creating {zone}: {err}\n{}", pdns.log()));
}

/// Transfers `account` from `source` to `target` through the WHM client and waits for it.
async fn transfer(source: &SimHost, target: &SimHost, account: &SimAccount) {
    let client = whm(target);
    let session = client
        .create_remote_root_transfer_session(&RemoteRootSession {
            host: source.ip.to_string(),
            user: "root".into(),
            sshkey_name: None,
            password: Some(Secret::new(&source.token)),
            port: 22,
            transfer_threads: 1,
            restore_threads: 1,
        })
        .await
        .expect("transfer session");
    client
        .enqueue_account(
            &session,
            &AccountItem {
                user: account.user.clone(),
                localuser: account.user.clone(),
                domain: account.domain.clone(),
                size_bytes: account.disk_mb * 1024 * 1024,
            },
        )
        .await
        .expect("enqueue");
    client.start_transfer_session(&session).await.expect("start");
    wait_for("the transfer session to complete", || async {
        client.transfer_session_state(&session).await.expect("state") == SessionState::Completed
    })
    .await;
    let outcomes = item_outcomes(&client.transfer_session_log(&session).await.expect("log"));
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(target.has_account(&account.user));
}

#[tokio::test]
async fn remote_routing_relays_to_the_target_by_mx_after_the_transfer() {
    let pdns = Pdns::start().await;
    zone_at_target(&pdns, "kukka-0001.test").await;
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let accounts = generate_accounts(2, "kukka");
    let account = accounts[0].clone();
    let (owner, zone) = (account.user.clone(), account.domain.clone());
    let source = start("old.sim.test", SOURCE_IP, accounts, vec![pdns.dns_addr], &world, dir.path()).await;
    let target = start("new.sim.test", TARGET_IP, vec![], vec![pdns.dns_addr], &world, dir.path()).await;

    // Before the move: delivered on the source; the transfer carries the Maildir along.
    send_simple(source.smtp_addr, "info@kukka-0001.test", "before").await;
    transfer(&source, &target, &account).await;
    let at_target = target.maildir_messages(&owner, &zone, "info");
    assert_eq!(at_target.len(), 1, "the transfer carried the Maildir: {at_target:?}");
    assert!(read(&at_target[0]).contains("Subject: before"));

    // Routing through WHM: auto by default, then remote.
    let source_whm = whm(&source);
    assert_eq!(source_whm.mail_routing(&owner, &zone).await.unwrap(), MailRouting::Auto);
    source_whm.set_mail_routing(&owner, &zone, MailRouting::Remote).await.expect("setmxcheck remote");
    source_whm.set_mail_routing(&owner, &zone, MailRouting::Remote).await.expect("again: idempotent");
    assert_eq!(source_whm.mail_routing(&owner, &zone).await.unwrap(), MailRouting::Remote);
    assert_eq!(source.mail_routing(&zone), "remote");

    // Mail that still reaches the old server is relayed to the new one.
    let reply = send_simple(source.smtp_addr, "info@kukka-0001.test", "during").await;
    let id = reply.trim().trim_start_matches("250 OK id=").to_owned();
    assert_eq!(source.maildir_messages(&owner, &zone, "info").len(), 1, "nothing new stays on the source");
    let at_target = target.maildir_messages(&owner, &zone, "info");
    assert_eq!(at_target.len(), 2, "{at_target:?}");
    let relayed =
        at_target.iter().map(|p| read(p)).find(|t| t.contains("Subject: during")).expect("relayed message");
    assert!(relayed.contains("by new.sim.test") && relayed.contains("by old.sim.test"), "{relayed}");

    let source_log = source.mail_log();
    let relay_line = format!(
        "{id} => info@kukka-0001.test R=dkim_lookuphost T=remote_smtp H=mail.kukka-0001.test [{TARGET_IP}] C=\"250 OK id="
    );
    assert!(source_log.contains(&relay_line), "{source_log}");
    assert!(source_log.contains(&format!("{id} Completed")), "{source_log}");
    let target_log = target.mail_log();
    assert!(target_log.contains(" <= sender@example.test H=(old.sim.test) [127.0.0.51]:"), "{target_log}");
    assert!(target_log.contains(" => info <info@kukka-0001.test> R=virtual_user"), "{target_log}");

    // The other account's domain still delivers locally on the source.
    send_simple(source.smtp_addr, "info@kukka-0002.test", "unaffected").await;
    assert_eq!(source.maildir_messages(&user("kukka0002"), &domain("kukka-0002.test"), "info").len(), 1);

    // Back to local: delivered on the source again.
    source_whm.set_mail_routing(&owner, &zone, MailRouting::Local).await.expect("setmxcheck local");
    send_simple(source.smtp_addr, "info@kukka-0001.test", "after").await;
    assert_eq!(source.maildir_messages(&owner, &zone, "info").len(), 2);

    // Refusals: an unknown cPanel user, a domain the user does not own.
    let err = source_whm.set_mail_routing(&user("nobody"), &zone, MailRouting::Remote).await.unwrap_err();
    assert!(matches!(&err, WhmError::Failed { reason, .. } if reason.starts_with("User parameter")), "{err}");
    let err = source_whm
        .set_mail_routing(&owner, &domain("kukka-0002.test"), MailRouting::Remote)
        .await
        .unwrap_err();
    assert!(matches!(&err, WhmError::Failed { reason, .. } if reason.contains("do not own")), "{err}");
    assert_eq!(source.mail_routing(&domain("kukka-0002.test")), "auto");

    // Remote routing on the host the MX points at is a loop: deferred (451), logged as ==.
    whm(&target).set_mail_routing(&owner, &zone, MailRouting::Remote).await.expect("setmxcheck on target");
    let (mut smtp, _) = RawSmtp::connect(target.smtp_addr).await;
    smtp.command("EHLO client.example.test").await;
    let reply =
        smtp.send("sender@example.test", &["info@kukka-0001.test"], "Subject: loop\r\n\r\nx\r\n").await;
    assert!(reply.starts_with("451 "), "{reply}");
    let target_log = target.mail_log();
    assert!(
        target_log.contains("== info@kukka-0001.test R=dkim_lookuphost T=remote_smtp defer (-1): lowest numbered MX record points to local host"),
        "{target_log}"
    );
}
