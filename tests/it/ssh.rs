//! The ssh adapter against a real OpenSSH sshd on loopback: pinning, authentication, quoting,
//! exit status and output, concurrent channels, and error classification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use siirto::ssh::{SshError, SshSession, SshTarget, host_key_fingerprint};
use tokio::io::AsyncWriteExt;

use crate::support::sshd::{Sshd, ssh_keygen_fingerprint};

const TIMEOUT: Duration = Duration::from_secs(20);

async fn connect(sshd: &Sshd) -> SshSession {
    SshSession::connect(&sshd.target(), TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("connect to sshd: {error}\nsshd log:\n{}", sshd.log()))
}

/// Arguments that break any command line built by concatenation.
const HOSTILE: &[&str] = &[
    "",
    " ",
    "two words",
    "  leading and trailing  ",
    "it's",
    "'",
    "'\\''",
    "\"double\"",
    "${HOME}",
    "$HOME $USER",
    "a;b|c&d>e<f",
    "line1\nline2\n",
    "\r\n",
    "tab\there",
    "back\\slash\\",
    "*",
    "/*",
    "?",
    "~",
    "#not a comment",
    "-n",
    "--",
    "!event",
    "%s%n%%",
    "käyttäjä-ñ-日本-🙂",
    "\u{7f}\u{1b}[31m",
];

#[tokio::test]
async fn hostile_arguments_come_back_byte_exact() {
    let sshd = Sshd::start().await;
    let session = connect(&sshd).await;

    // printf re-emits each argument NUL-terminated, so the output shows exactly what the
    // remote program received as its argv.
    // Plus command substitutions that would leave a file behind if a shell ever ran them.
    let pwned = sshd.dir().join("pwned");
    let substitutions = [
        format!("$(touch {})", pwned.display()),
        format!("`touch {}`", pwned.display()),
        format!("'; touch {}; '", pwned.display()),
    ];
    let mut hostile: Vec<&str> = HOSTILE.to_vec();
    hostile.extend(substitutions.iter().map(String::as_str));
    let mut argv = vec!["printf", "%s\\0"];
    argv.extend_from_slice(&hostile);
    let output = session.exec(&argv).await.expect("exec printf");
    assert_eq!(output.status, 0, "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let mut expected = Vec::new();
    for argument in &hostile {
        expected.extend_from_slice(argument.as_bytes());
        expected.push(0);
    }
    assert_eq!(output.stdout, expected);
    assert!(output.stderr.is_empty());

    // echo joins its arguments with spaces and adds a newline.
    let output = session.exec(&["echo", "a  b", "$(id)", "it's", "pää"]).await.expect("exec echo");
    assert_eq!(output.stdout, "a  b $(id) it's pää\n".as_bytes());
    assert!(output.success());

    // Nothing in there was ever run by a shell.
    assert!(!pwned.exists(), "a shell ran an argument");
    session.close().await.expect("close");
}

#[tokio::test]
async fn exit_status_and_stderr_are_propagated() {
    let sshd = Sshd::start().await;
    let session = connect(&sshd).await;

    let output =
        session.exec(&["sh", "-c", "printf out; printf 'err\\n' >&2; exit 3"]).await.expect("exec sh");
    assert_eq!(output.status, 3);
    assert_eq!(output.stdout, b"out");
    assert_eq!(output.stderr, b"err\n");
    assert!(!output.success());

    let output = session.exec(&["false"]).await.expect("exec false");
    assert_eq!(output.status, 1);

    // A program that does not exist: the remote shell reports 127, as an outcome.
    let output = session.exec(&["siirto-no-such-program-here"]).await.expect("exec missing program");
    assert_eq!(output.status, 127);
    assert!(!output.stderr.is_empty());

    // The session stays usable after failures.
    let output = session.exec(&["true"]).await.expect("exec true");
    assert_eq!(output.status, 0);

    // Refused locally, before anything is sent.
    assert!(matches!(session.exec(&[]).await, Err(SshError::InvalidCommand { .. })));
    assert!(matches!(session.exec(&["echo", "nul\0byte"]).await, Err(SshError::InvalidCommand { .. })));
    session.close().await.expect("close");
}

#[tokio::test]
async fn ten_commands_run_concurrently_on_one_session() {
    let sshd = Sshd::start().await;
    let session = Arc::new(connect(&sshd).await);

    // Each remote command blocks reading its own FIFO. The test writes to the FIFOs only after
    // it could open all ten for writing, which is possible only while all ten readers are
    // running at once: a session that ran commands one after another would never get there.
    let count = 10;
    let mut fifos = Vec::new();
    for index in 0..count {
        let fifo = sshd.dir().join(format!("fifo-{index}"));
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
        assert!(status.success(), "mkfifo failed");
        fifos.push(fifo);
    }
    let mut commands = Vec::new();
    for fifo in &fifos {
        let session = Arc::clone(&session);
        let fifo = fifo.to_str().expect("utf-8 path").to_owned();
        commands.push(tokio::spawn(async move {
            session.exec(&["sh", "-c", "read line < \"$1\"; printf '%s' \"$line\"", "sh", &fifo]).await
        }));
    }

    let deadline = Instant::now() + TIMEOUT;
    let mut writers: Vec<Option<tokio::net::unix::pipe::Sender>> = (0..count).map(|_| None).collect();
    while writers.iter().any(Option::is_none) {
        for (index, writer) in writers.iter_mut().enumerate() {
            if writer.is_some() {
                continue;
            }
            match tokio::net::unix::pipe::OpenOptions::new().open_sender(&fifos[index]) {
                Ok(sender) => *writer = Some(sender),
                // ENXIO (6 on Linux): no reader has the FIFO open yet.
                Err(error) if error.raw_os_error() == Some(6) => {}
                Err(error) => panic!("open fifo {index}: {error}"),
            }
        }
        assert!(Instant::now() < deadline, "not all {count} remote commands were running at the same time");
        // Polling interval while waiting for the remote readers to appear.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (index, writer) in writers.into_iter().enumerate() {
        let mut writer = writer.expect("opened");
        writer.write_all(format!("reply-{index}\n").as_bytes()).await.expect("write fifo");
        // Dropping the writer closes the FIFO.
    }

    for (index, command) in commands.into_iter().enumerate() {
        let output = tokio::time::timeout(TIMEOUT, command)
            .await
            .expect("command finishes")
            .expect("task")
            .expect("exec");
        assert_eq!(output.status, 0, "stderr: {}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.stdout, format!("reply-{index}").as_bytes());
    }
    session.close().await.expect("close");
}

#[tokio::test]
async fn more_commands_than_channels_queue_and_all_finish() {
    // A server with OpenSSH's default channel limit refuses an 11th channel; the session keeps
    // the extra commands waiting instead.
    let sshd = Sshd::start_with_max_sessions(10).await;
    let session = connect(&sshd).await;
    let count = siirto::ssh::MAX_CONCURRENT_COMMANDS + 5;
    let labels: Vec<String> = (0..count).map(|index| format!("command {index}")).collect();
    let session = &session;
    let outputs = futures::future::join_all(
        labels.iter().map(|label| async move { session.exec(&["printf", "%s", label.as_str()]).await }),
    )
    .await;
    for (label, output) in labels.iter().zip(outputs) {
        let output = output.expect("exec");
        assert_eq!(output.status, 0);
        assert_eq!(output.stdout, label.as_bytes());
    }
    session.close().await.expect("close");
}

#[tokio::test]
async fn a_wrong_pinned_host_key_is_refused_before_login() {
    let sshd = Sshd::start().await;
    let (_other_private, other_public) = sshd.generate_other_key("not_the_host_key");
    let target = SshTarget { host_key: other_public.clone(), ..sshd.target() };

    let error = SshSession::connect(&target, TIMEOUT).await.expect_err("a wrong host key must be refused");
    match &error {
        SshError::HostKeyMismatch { address, expected_fingerprint, got_fingerprint } => {
            assert_eq!(address, &sshd.address.to_string());
            assert_eq!(expected_fingerprint, &ssh_keygen_fingerprint(&other_public));
            assert_eq!(got_fingerprint, &ssh_keygen_fingerprint(&sshd.host_key_line));
        }
        other => panic!("expected HostKeyMismatch, got {other:?}"),
    }
    assert!(!error.is_transient());
    let message = error.to_string();
    assert!(message.contains("does not match the pinned key"), "{message}");

    // The client never authenticated, so nothing can have run. sshd logs each login.
    assert!(!sshd.log().contains("Accepted publickey"), "sshd saw a login:\n{}", sshd.log());

    // The right key still works (the refusal was about the key, not the server).
    let session = connect(&sshd).await;
    assert_eq!(session.exec(&["true"]).await.expect("exec").status, 0);
    assert!(sshd.log().contains("Accepted publickey"));
}

#[tokio::test]
async fn any_of_the_servers_host_keys_can_be_pinned() {
    // The server has an Ed25519 and an ECDSA host key; pinning the ECDSA one must work (the
    // client asks for the pinned key's type instead of its own favourite).
    let sshd = Sshd::start().await;
    let target = SshTarget { host_key: sshd.ecdsa_host_key_line.clone(), ..sshd.target() };
    let session = SshSession::connect(&target, TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("connect pinning ECDSA key: {error}\n{}", sshd.log()));
    assert_eq!(session.exec(&["true"]).await.expect("exec").status, 0);
    session.close().await.expect("close");
}

#[tokio::test]
async fn the_fingerprint_is_the_one_ssh_keygen_shows() {
    let sshd = Sshd::start().await;
    assert_eq!(
        host_key_fingerprint(&sshd.host_key_line).expect("valid host key line"),
        ssh_keygen_fingerprint(&sshd.host_key_line)
    );
}

#[tokio::test]
async fn a_wrong_client_key_is_an_authentication_failure() {
    let sshd = Sshd::start().await;
    let (other_private, _other_public) = sshd.generate_other_key("unauthorized_client_key");
    let target = SshTarget { key_file: other_private, ..sshd.target() };
    let error = SshSession::connect(&target, TIMEOUT).await.expect_err("an unauthorized key must be refused");
    assert!(
        matches!(&error, SshError::AuthFailed { user, .. } if user == &sshd.user),
        "expected AuthFailed, got {error:?}"
    );
    assert!(!error.is_transient());

    // A key file that does not exist is a local error, found before connecting.
    let target = SshTarget { key_file: sshd.dir().join("no-such-key"), ..sshd.target() };
    let error = SshSession::connect(&target, TIMEOUT).await.expect_err("missing key");
    assert!(matches!(error, SshError::KeyFile { .. }), "{error:?}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // A port nobody listens on: bind one, then close it.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let target = SshTarget {
        address: address.to_string(),
        user: "root".to_owned(),
        key_file: "/nonexistent-is-not-read-first".into(),
        host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"
            .to_owned(),
    };
    // The key file is checked before connecting, so give it a real one.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("run ssh-keygen (Debian package openssh-client)");
    assert!(status.success());
    let target = SshTarget { key_file: key, ..target };

    let error = SshSession::connect(&target, TIMEOUT).await.expect_err("nobody listens");
    assert!(
        matches!(&error, SshError::Connect { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "expected connection refused, got {error:?}"
    );
    assert!(error.is_transient());

    // A server that accepts TCP but never speaks SSH: the connect timeout fires, transient.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = SshTarget { address: silent.local_addr().expect("addr").to_string(), ..target };
    let error = SshSession::connect(&target, Duration::from_millis(300)).await.expect_err("silent server");
    assert!(matches!(error, SshError::Timeout { .. }), "{error:?}");
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_closed_session_refuses_further_commands() {
    let sshd = Sshd::start().await;
    let session = connect(&sshd).await;
    assert_eq!(session.exec(&["true"]).await.expect("exec").status, 0);
    session.close().await.expect("close");
    let error = session.exec(&["true"]).await.expect_err("closed session");
    assert!(error.is_transient(), "a lost session is worth a reconnect: {error:?}");
}
