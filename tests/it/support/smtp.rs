//! A real SMTP server for tests: Debian's aiosmtpd run by the system Python on loopback.
//!
//! Recipients `reject@…` get a 550 and `tempfail@…` a 451 at RCPT time. Each accepted message
//! is stored as `<n>.json` in the server's mail directory (written to a temporary name, then
//! renamed) before the 250 goes out: the raw message plus the headers, plain-text body and HTML part that
//! Python's `email` package decoded, so tests check what a mail client would show, and when it
//! arrived. [`SmtpServer::start_slow`] makes a slow server: it answers EHLO and QUIT late.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

const SERVER_SCRIPT: &str = r#"
import asyncio, itertools, json, os, sys, time
from email import message_from_bytes, policy
from aiosmtpd.smtp import SMTP

maildir = sys.argv[1]
listen_port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
ehlo_delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
quit_delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
# A restarted server numbers on after the messages stored before (never over one of them).
counter = itertools.count(1 + len([f for f in os.listdir(maildir) if f.endswith(".json")]))

class SlowSMTP(SMTP):
    # A busy server: its greeting after EHLO and its goodbye after QUIT come late.
    async def smtp_EHLO(self, hostname):
        if ehlo_delay:
            await asyncio.sleep(ehlo_delay)
        await super().smtp_EHLO(hostname)

    async def smtp_QUIT(self, arg):
        if quit_delay:
            await asyncio.sleep(quit_delay)
        await super().smtp_QUIT(arg)

class Store:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # Recipients named reject@… / tempfail@… get a permanent / temporary refusal.
        if address.startswith("reject@"):
            return "550 5.1.1 No such user here"
        if address.startswith("tempfail@"):
            return "451 4.3.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        msg = message_from_bytes(raw, policy=policy.default)
        part = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "peer": list(session.peer)[:2],
            "rcpt_tos": list(envelope.rcpt_tos),
            "message_id": str(msg["Message-ID"]),
            "from": str(msg["From"]),
            "to": str(msg["To"]),
            "subject": str(msg["Subject"]),
            "date": str(msg["Date"]),
            "body": part.get_content() if part is not None else None,
            "html": html.get_content() if html is not None else None,
            "raw": raw.decode("utf-8", "replace"),
            "received_at": time.time(),
        }
        n = next(counter)
        tmp = os.path.join(maildir, ".%d.%d.tmp" % (os.getpid(), n))
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(maildir, "%06d.json" % n))
        return "250 Message accepted for delivery"

async def main():
    loop = asyncio.get_running_loop()
    handler = Store()
    server = await loop.create_server(
        lambda: SlowSMTP(handler, enable_SMTPUTF8=True, hostname="smtp.test"),
        host="127.0.0.1", port=listen_port, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print("PORT %d" % port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

/// A running aiosmtpd; killed on drop.
pub struct SmtpServer {
    child: Child,
    /// Where the server listens.
    pub addr: SocketAddr,
    /// Where it stores one `.json` file per accepted message.
    pub maildir: PathBuf,
    _dir: tempfile::TempDir,
    /// The EHLO and QUIT delays it was started with (kept across a restart).
    delays: (Duration, Duration),
}

/// One delivered message as the server decoded it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Delivered {
    pub mail_from: String,
    /// The client's address and port: messages of one SMTP session share it.
    pub peer: (String, u16),
    pub rcpt_tos: Vec<String>,
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub date: String,
    pub body: Option<String>,
    /// The HTML part, if the message has one.
    pub html: Option<String>,
    pub raw: String,
    /// When the server stored it (seconds since the epoch), just before its 250.
    pub received_at: f64,
}

impl SmtpServer {
    /// Starts the server on a free port and waits (with a deadline) until it accepts connections.
    pub fn start() -> SmtpServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let maildir = dir.path().join("mail");
        std::fs::create_dir(&maildir).expect("maildir");
        let (child, addr) = Self::spawn(dir.path(), &maildir, 0, (Duration::ZERO, Duration::ZERO));
        SmtpServer { child, addr, maildir, _dir: dir, delays: (Duration::ZERO, Duration::ZERO) }
    }

    /// A slow server: it answers EHLO after `ehlo_delay` and QUIT after `quit_delay`.
    pub fn start_slow(ehlo_delay: Duration, quit_delay: Duration) -> SmtpServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let maildir = dir.path().join("mail");
        std::fs::create_dir(&maildir).expect("maildir");
        let delays = (ehlo_delay, quit_delay);
        let (child, addr) = Self::spawn(dir.path(), &maildir, 0, delays);
        SmtpServer { child, addr, maildir, _dir: dir, delays }
    }

    /// Stops the server (its port refuses connections until [`SmtpServer::restart`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, keeping the messages stored so far.
    pub fn restart(&mut self) {
        self.stop();
        let (child, addr) = Self::spawn(self._dir.path(), &self.maildir, self.addr.port(), self.delays);
        assert_eq!(addr, self.addr);
        self.child = child;
    }

    fn spawn(dir: &Path, maildir: &Path, port: u16, delays: (Duration, Duration)) -> (Child, SocketAddr) {
        let probe = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(probe, Ok(s) if s.success()) {
            panic!(
                "{PYTHON} cannot import aiosmtpd: install Debian package python3-aiosmtpd \
                 (apt-get install python3-aiosmtpd)"
            );
        }
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SERVER_SCRIPT).expect("write script");
        let mut child = Command::new(PYTHON)
            .arg(&script)
            .arg(maildir)
            .arg(port.to_string())
            .arg(delays.0.as_secs_f64().to_string())
            .arg(delays.1.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd");

        // The script prints its port once bound; read it on a thread so the deadline holds.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("aiosmtpd did not report its port within 20 s");
            }
        };
        let port: u16 = match line.trim().strip_prefix("PORT ").map(str::parse) {
            Some(Ok(port)) => port,
            _ => {
                let _ = child.kill();
                panic!("aiosmtpd printed {line:?} instead of its port");
            }
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Readiness: a TCP connection succeeds.
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("aiosmtpd on {addr} did not accept connections in time");
            }
            std::thread::yield_now();
        }
        (child, addr)
    }

    /// The messages delivered so far, in arrival order.
    pub fn delivered(&self) -> Vec<Delivered> {
        read_delivered(&self.maildir)
    }

    /// Waits until the message with `message_id` is stored, or panics at the deadline.
    pub async fn wait_for_message(&self, message_id: &str, timeout: Duration) -> Delivered {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = self.delivered().into_iter().find(|d| d.message_id == message_id) {
                return found;
            }
            if tokio::time::Instant::now() > deadline {
                let ids: Vec<String> = self.delivered().into_iter().map(|d| d.message_id).collect();
                panic!("no {message_id} within {timeout:?}; arrived: {ids:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `count` messages are stored, or panics at the deadline.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Delivered> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let delivered = self.delivered();
            if delivered.len() >= count {
                return delivered;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("only {} of {count} messages arrived within {timeout:?}", delivered.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn read_delivered(maildir: &Path) -> Vec<Delivered> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(maildir)
        .expect("read maildir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).expect("read message");
            serde_json::from_str(&text).expect("message json")
        })
        .collect()
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
