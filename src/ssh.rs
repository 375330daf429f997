//! SSH adapter: one pinned, key-authenticated russh connection per host, with safely quoted remote commands.
//!
//! The engine uses it to drive work on a cPanel host (the final delta sync, reading mail logs).
//! Three guarantees matter more than anything else here:
//!
//! - **The server's host key is pinned.** [`SshSession::connect`] accepts the server only when
//!   its key equals the configured OpenSSH public key line; an unknown or changed key is refused
//!   with [`SshError::HostKeyMismatch`] before authentication, so no command can run on an
//!   impostor. There is no "accept anything" mode.
//! - **Nothing reaches the remote shell unquoted.** SSH transports a command as one string that
//!   the remote login shell parses. [`SshSession::exec`] therefore takes an argument vector and
//!   single-quotes every argument ([`shell_quote_argv`]), so data such as a domain name or a path
//!   is always one literal argument, whatever characters it holds.
//! - **One connection per host.** A new connection costs ~300 ms of key exchange and
//!   authentication; a command on an open connection ~100 ms. A session is cheap to share
//!   (`&self` methods) and several commands may run at once, each on its own channel (at most
//!   [`MAX_CONCURRENT_COMMANDS`]; more wait their turn).
//!
//! Key material is never logged: spans carry only the address, and errors name the key file,
//! never its contents.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use crate::config::SshTarget;
use russh::client;
use russh::keys::{Algorithm, HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Disconnect};
use tracing::{debug, instrument};

/// What a remote command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit status (0 is success).
    pub status: u32,
    /// Everything the command wrote to standard output, byte-exact.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to standard error, byte-exact.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Why an SSH operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The TCP connection could not be made (refused, unreachable, reset, name not resolved).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The `host:port` that was dialled.
        address: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting (TCP, key exchange and authentication together) took longer than allowed.
    #[error("connecting to {address} timed out after {timeout:?}")]
    Timeout {
        /// The `host:port` that was dialled.
        address: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The server presented a host key other than the pinned one. Possibly a man in the middle,
    /// possibly a reinstalled server: either way an operator must look and update the pin.
    #[error(
        "host key of {address} does not match the pinned key: expected {expected_fingerprint}, \
         got {got_fingerprint}; refusing to connect"
    )]
    HostKeyMismatch {
        /// The `host:port` that was dialled.
        address: String,
        /// SHA256 fingerprint of the pinned key (as `ssh-keygen -l` shows it).
        expected_fingerprint: String,
        /// SHA256 fingerprint of the key the server presented.
        got_fingerprint: String,
    },
    /// The server refused our public key for this user.
    #[error("{address} refused public key authentication for user {user:?}")]
    AuthFailed {
        /// The `host:port` that was dialled.
        address: String,
        /// The user we tried to log in as.
        user: String,
    },
    /// The private key file could not be read or parsed (or is passphrase-protected).
    #[error("cannot load private key {}: {source}", path.display())]
    KeyFile {
        /// The key file's path (never its contents).
        path: PathBuf,
        /// Why it could not be loaded.
        #[source]
        source: russh::keys::Error,
    },
    /// The pinned host key is not a valid OpenSSH public key line.
    #[error("invalid pinned host key: {reason}")]
    InvalidHostKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The command cannot be sent: no arguments, or an argument holds a NUL byte, which no
    /// shell can receive.
    #[error("invalid remote command: {reason}")]
    InvalidCommand {
        /// What is wrong with it.
        reason: String,
    },
    /// The remote command was killed by a signal instead of exiting.
    #[error("remote command on {address} was killed by signal {signal}")]
    Signal {
        /// The `host:port` of the session.
        address: String,
        /// The signal's name as the server reported it (e.g. `KILL`).
        signal: String,
    },
    /// The channel closed without the server reporting an exit status.
    #[error("remote command on {address} ended without an exit status")]
    NoExitStatus {
        /// The `host:port` of the session.
        address: String,
    },
    /// The server refused to run the command on a channel it opened.
    #[error("{address} refused to run the command")]
    ExecRefused {
        /// The `host:port` of the session.
        address: String,
    },
    /// An SSH protocol or transport error (disconnects, resets, key exchange failures).
    #[error("ssh to {address}: {source}")]
    Protocol {
        /// The `host:port` of the session.
        address: String,
        /// The underlying russh error.
        #[source]
        source: russh::Error,
    },
}

impl SshError {
    /// Whether retrying later may succeed: lost or refused connections and timeouts are
    /// transient; a wrong host key, refused authentication, bad key files and bad commands are
    /// not (they need an operator).
    pub fn is_transient(&self) -> bool {
        match self {
            SshError::Connect { source, .. } => io_is_transient(source),
            SshError::Timeout { .. } | SshError::NoExitStatus { .. } => true,
            SshError::Protocol { source, .. } => russh_is_transient(source),
            SshError::HostKeyMismatch { .. }
            | SshError::AuthFailed { .. }
            | SshError::KeyFile { .. }
            | SshError::InvalidHostKey { .. }
            | SshError::InvalidCommand { .. }
            | SshError::Signal { .. }
            | SshError::ExecRefused { .. } => false,
        }
    }
}

fn io_is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
            | UnexpectedEof
            | Interrupted
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
            | AddrNotAvailable
            | WouldBlock
    )
}

fn russh_is_transient(error: &russh::Error) -> bool {
    match error {
        russh::Error::IO(io) => io_is_transient(io),
        russh::Error::Disconnect
        | russh::Error::HUP
        | russh::Error::ConnectionTimeout
        | russh::Error::KeepaliveTimeout
        | russh::Error::InactivityTimeout
        | russh::Error::SendError
        | russh::Error::RecvError
        | russh::Error::Elapsed(_)
        | russh::Error::Join(_)
        | russh::Error::ChannelOpenFailure(
            russh::ChannelOpenFailure::ConnectFailed | russh::ChannelOpenFailure::ResourceShortage,
        ) => true,
        _ => false,
    }
}

/// Quotes an argument vector into one command line for a POSIX shell.
///
/// Every argument is wrapped in single quotes, inside which a POSIX shell gives no character a
/// special meaning; a `'` inside an argument becomes `'\''` (close the quote, an escaped quote,
/// reopen). The empty argument becomes `''`. Arguments are separated by one space. The result is
/// therefore parsed back by `sh -c` (and bash, dash, zsh) into exactly the given arguments, with
/// no expansion, substitution or word splitting.
///
/// This assumes the remote user's login shell is a POSIX shell (bash on cPanel hosts); csh
/// treats `!` and newlines inside single quotes differently.
///
/// A NUL byte cannot be carried by a shell command line; [`SshSession::exec`] refuses such
/// arguments before calling this.
pub fn shell_quote_argv(argv: &[&str]) -> String {
    let mut line = String::new();
    for (index, argument) in argv.iter().enumerate() {
        if index > 0 {
            line.push(' ');
        }
        line.push('\'');
        for character in argument.chars() {
            if character == '\'' {
                line.push_str("'\\''");
            } else {
                line.push(character);
            }
        }
        line.push('\'');
    }
    line
}

/// The SHA256 fingerprint of an OpenSSH public key line, as `ssh-keygen -l` shows it
/// (`SHA256:` followed by unpadded base64).
pub fn host_key_fingerprint(openssh_public_key_line: &str) -> Result<String, SshError> {
    let key = parse_pinned_key(openssh_public_key_line)?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

fn parse_pinned_key(openssh_public_key_line: &str) -> Result<PublicKey, SshError> {
    PublicKey::from_openssh(openssh_public_key_line.trim())
        .map_err(|error| SshError::InvalidHostKey { reason: error.to_string() })
}

/// How many commands one session runs at once; more wait for a free channel. This is
/// OpenSSH's default `MaxSessions`: above it the server refuses to open further channels.
pub const MAX_CONCURRENT_COMMANDS: usize = 10;

/// An authenticated SSH connection to one host. Commands run on channels of it, up to
/// [`MAX_CONCURRENT_COMMANDS`] at a time.
pub struct SshSession {
    address: String,
    channels: tokio::sync::Semaphore,
    handle: client::Handle<PinnedHostKey>,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession").field("address", &self.address).finish_non_exhaustive()
    }
}

impl SshSession {
    /// Connects to `target.address`, checks the server's key against the pinned one, and logs
    /// in as `target.user` with the key in `target.key_file`. The whole (TCP, key exchange,
    /// authentication) must finish within `timeout`.
    #[instrument(skip_all, fields(address = %target.address))]
    pub async fn connect(target: &SshTarget, timeout: Duration) -> Result<SshSession, SshError> {
        // Check the local inputs first: a bad pin or key file is an operator error and should
        // not cost a connection.
        let pinned = parse_pinned_key(&target.host_key)?;
        let key = russh::keys::load_secret_key(&target.key_file, None)
            .map_err(|source| SshError::KeyFile { path: target.key_file.clone(), source })?;
        match tokio::time::timeout(timeout, connect_and_authenticate(target, pinned, key)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(SshError::Timeout { address: target.address.clone(), timeout }),
        }
    }

    /// The `host:port` this session is connected to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether the connection has been closed (by [`SshSession::close`], the server, or an
    /// error); a closed session cannot run commands and should be replaced.
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Runs `argv` on the remote host and collects its exit status and output.
    ///
    /// Every argument is quoted ([`shell_quote_argv`]) so the remote shell sees exactly these
    /// arguments. The remote login shell still runs (that is how SSH executes commands), so its
    /// rc files apply. A non-zero exit status is an outcome, not an error. Output is collected in
    /// memory: use this for commands with bounded output. There is no time limit here: wrap the
    /// call in `tokio::time::timeout` where a command may hang (dropping the future abandons
    /// the channel).
    #[instrument(skip_all, fields(address = %self.address))]
    pub async fn exec(&self, argv: &[&str]) -> Result<ExecOutput, SshError> {
        self.exec_with_input(argv, &[]).await
    }

    /// [`SshSession::exec`] with `input` written to the command's standard input, which is then
    /// closed (a list of files for `rsync --files-from=-`, say).
    #[instrument(skip_all, fields(address = %self.address, input_bytes = input.len()))]
    pub async fn exec_with_input(&self, argv: &[&str], input: &[u8]) -> Result<ExecOutput, SshError> {
        if argv.is_empty() {
            return Err(SshError::InvalidCommand { reason: "no program given".to_owned() });
        }
        if argv.iter().any(|argument| argument.contains('\0')) {
            return Err(SshError::InvalidCommand { reason: "an argument contains a NUL byte".to_owned() });
        }
        let command_line = shell_quote_argv(argv);
        let protocol = |source| SshError::Protocol { address: self.address.clone(), source };

        // Wait for a free channel slot; the semaphore is never closed.
        let _slot = self.channels.acquire().await.map_err(|_closed| protocol(russh::Error::Disconnect))?;
        let mut channel = self.open_channel().await.map_err(protocol)?;
        channel.exec(true, command_line.into_bytes()).await.map_err(protocol)?;
        if !input.is_empty() {
            channel.data(input).await.map_err(protocol)?;
        }
        // End of input: a command reading its standard input sees it end, not hang.
        channel.eof().await.map_err(protocol)?;

        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut status = None;
        let mut signal = None;
        // Read until the server closes the channel: the exit status may come after EOF.
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                // Extended data type 1 is SSH_EXTENDED_DATA_STDERR (RFC 4254 §5.2).
                ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    signal = Some(format!("{signal_name:?}"));
                }
                ChannelMsg::Failure => {
                    return Err(SshError::ExecRefused { address: self.address.clone() });
                }
                _ => {}
            }
        }
        debug!(?status, stdout_bytes = stdout.len(), stderr_bytes = stderr.len(), "remote command finished");
        match (status, signal) {
            (Some(status), _) => Ok(ExecOutput { status, stdout, stderr }),
            (None, Some(signal)) => Err(SshError::Signal { address: self.address.clone(), signal }),
            (None, None) => Err(SshError::NoExitStatus { address: self.address.clone() }),
        }
    }

    /// Opens a session channel, retrying briefly when the server is out of channels.
    ///
    /// OpenSSH frees a channel's session slot only in the main-loop pass after the channel was
    /// closed, so an open sent right after a close can still find all `MaxSessions` slots taken
    /// (it answers "connect failed"): against a real sshd with `MaxSessions 10`, fifteen
    /// commands queued ten at a time failed this way without the retry. Retrying is safe: no
    /// command runs on a channel that was never opened.
    async fn open_channel(&self) -> Result<russh::Channel<client::Msg>, russh::Error> {
        const ATTEMPTS: u32 = 10;
        let mut attempt = 1;
        loop {
            match self.handle.channel_open_session().await {
                Err(russh::Error::ChannelOpenFailure(
                    russh::ChannelOpenFailure::ConnectFailed | russh::ChannelOpenFailure::ResourceShortage,
                )) if attempt < ATTEMPTS => {
                    debug!(attempt, "server out of channels, retrying");
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Closes the connection politely. Commands still running on it are cut off.
    #[instrument(skip_all, fields(address = %self.address))]
    pub async fn close(&self) -> Result<(), SshError> {
        if self.handle.is_closed() {
            return Ok(());
        }
        self.handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await
            .map_err(|source| SshError::Protocol { address: self.address.clone(), source })
    }
}

async fn connect_and_authenticate(
    target: &SshTarget,
    pinned: PublicKey,
    key: russh::keys::PrivateKey,
) -> Result<SshSession, SshError> {
    let address = target.address.clone();
    let socket = tokio::net::TcpStream::connect(target.address.as_str())
        .await
        .map_err(|source| SshError::Connect { address: address.clone(), source })?;
    // Commands are small request/response exchanges: Nagle's algorithm only adds latency.
    if let Err(error) = socket.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
    let config = Arc::new(client::Config {
        // Ask only for the pinned key's algorithm: a server has several host keys (a cPanel
        // host has RSA, ECDSA and Ed25519 ones) and would otherwise present whichever our
        // default order prefers, which need not be the pinned one. OpenSSH does the same with
        // the key types it finds in known_hosts.
        preferred: russh::Preferred {
            key: host_key_algorithms(&pinned).into(),
            ..russh::Preferred::default()
        },
        // Notice a dead peer on an otherwise idle session instead of waiting forever.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        ..client::Config::default()
    });
    let verified = Arc::new(AtomicBool::new(false));
    let handler = PinnedHostKey { pinned: pinned.clone(), verified: Arc::clone(&verified) };
    let mut handle = client::connect_stream(config, socket, handler).await.map_err(|error| match error {
        HandlerError::HostKeyMismatch { got_fingerprint } => SshError::HostKeyMismatch {
            address: address.clone(),
            expected_fingerprint: pinned.fingerprint(HashAlg::Sha256).to_string(),
            got_fingerprint,
        },
        HandlerError::Russh(source) => SshError::Protocol { address: address.clone(), source },
    })?;

    // Defence in depth: russh skips the host key check for the non-standard "none" key
    // exchange. Our config never offers it, but make sure the check really ran.
    if !verified.load(Ordering::SeqCst) {
        return Err(SshError::HostKeyMismatch {
            address,
            expected_fingerprint: pinned.fingerprint(HashAlg::Sha256).to_string(),
            got_fingerprint: "(the server presented no host key)".to_owned(),
        });
    }

    // For RSA keys pick the strongest signature hash the server accepts; other key types
    // ignore it.
    let hash_alg = handle
        .best_supported_rsa_hash()
        .await
        .map_err(|source| SshError::Protocol { address: address.clone(), source })?
        .flatten();
    let auth = handle
        .authenticate_publickey(target.user.clone(), PrivateKeyWithHashAlg::new(Arc::new(key), hash_alg))
        .await
        .map_err(|source| SshError::Protocol { address: address.clone(), source })?;
    if !auth.success() {
        return Err(SshError::AuthFailed { address, user: target.user.clone() });
    }
    debug!("ssh session authenticated");
    Ok(SshSession { address, channels: tokio::sync::Semaphore::new(MAX_CONCURRENT_COMMANDS), handle })
}

/// The host key algorithms to offer for a pinned key: its own, and for RSA the SHA-2 signature
/// variants (OpenSSH 8.8+ servers no longer sign with SHA-1 `ssh-rsa`).
fn host_key_algorithms(pinned: &PublicKey) -> Vec<Algorithm> {
    match pinned.algorithm() {
        Algorithm::Rsa { .. } => vec![
            Algorithm::Rsa { hash: Some(HashAlg::Sha512) },
            Algorithm::Rsa { hash: Some(HashAlg::Sha256) },
        ],
        algorithm => vec![algorithm],
    }
}

/// The russh client handler: accepts the server only if its key is the pinned one.
struct PinnedHostKey {
    pinned: PublicKey,
    /// Set once the server's key has been compared and found equal to the pinned one.
    verified: Arc<AtomicBool>,
}

/// The handler's error: russh's own, or our refusal of the server's key (which carries the
/// presented key's fingerprint out of the handshake).
#[derive(Debug)]
enum HandlerError {
    Russh(russh::Error),
    HostKeyMismatch { got_fingerprint: String },
}

impl From<russh::Error> for HandlerError {
    fn from(error: russh::Error) -> Self {
        HandlerError::Russh(error)
    }
}

impl client::Handler for PinnedHostKey {
    type Error = HandlerError;

    async fn check_server_key(&mut self, server_public_key: &PublicKey) -> Result<bool, Self::Error> {
        // Compare the key itself, not the comment (the pinned line may carry one, the wire key
        // never does).
        if server_public_key.key_data() == self.pinned.key_data() {
            self.verified.store(true, Ordering::SeqCst);
            Ok(true)
        } else {
            Err(HandlerError::HostKeyMismatch {
                got_fingerprint: server_public_key.fingerprint(HashAlg::Sha256).to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a command line the way `sh -c` would, by running it with a real `/bin/sh` and
    /// having each argument printed NUL-terminated.
    fn sh_parse(command_line: &str) -> Vec<String> {
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s\\0' {command_line}"))
            .output()
            .expect("run /bin/sh");
        assert!(output.status.success(), "sh failed: {output:?}");
        let mut parts: Vec<String> = output
            .stdout
            .split(|byte| *byte == 0)
            .map(|part| String::from_utf8(part.to_vec()).expect("utf-8"))
            .collect();
        // The output ends with a NUL, so the last split part is empty.
        assert_eq!(parts.pop().as_deref(), Some(""));
        parts
    }

    #[test]
    fn quotes_plain_words() {
        assert_eq!(shell_quote_argv(&["echo", "hello"]), "'echo' 'hello'");
    }

    #[test]
    fn quotes_empty_argument_and_empty_argv() {
        assert_eq!(shell_quote_argv(&["printf", ""]), "'printf' ''");
        assert_eq!(shell_quote_argv(&[]), "");
    }

    #[test]
    fn escapes_single_quotes() {
        assert_eq!(shell_quote_argv(&["it's"]), r"'it'\''s'");
        assert_eq!(shell_quote_argv(&["'"]), r"''\'''");
        assert_eq!(shell_quote_argv(&["''"]), r"''\'''\'''");
    }

    #[test]
    fn leaves_everything_else_literal() {
        assert_eq!(shell_quote_argv(&["a b"]), "'a b'");
        assert_eq!(shell_quote_argv(&["$(rm -rf /)"]), "'$(rm -rf /)'");
        assert_eq!(shell_quote_argv(&["`id`"]), "'`id`'");
        assert_eq!(shell_quote_argv(&["a\nb"]), "'a\nb'");
        assert_eq!(shell_quote_argv(&["\"$HOME\""]), "'\"$HOME\"'");
        assert_eq!(shell_quote_argv(&["\\"]), "'\\'");
        assert_eq!(shell_quote_argv(&["pää.fi"]), "'pää.fi'");
    }

    #[test]
    fn a_real_shell_parses_hostile_arguments_back_exactly() {
        let hostile = [
            "",
            " ",
            "two words",
            "it's",
            "'",
            "''",
            "\"double\"",
            "$(echo substituted)",
            "`echo substituted`",
            "${HOME}",
            "$HOME",
            "a;b|c&d>e<f",
            "line1\nline2\n",
            "tab\there",
            "back\\slash\\",
            "*",
            "?",
            "~",
            "#comment",
            "-n",
            "!event",
            "käyttäjä-ñ-日本-🙂",
            "\u{7f}\u{1b}[31m",
        ];
        assert_eq!(sh_parse(&shell_quote_argv(&hostile)), hostile);
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // `ssh-keygen -l -E sha256 -f` printed this fingerprint for this key line.
        let line =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ some comment";
        assert_eq!(
            host_key_fingerprint(line).expect("valid key"),
            "SHA256:T7SvZ2cslqpPj6nKzitCBHHlpVF3r3MvLwmFL0fk0IE"
        );
    }

    #[test]
    fn invalid_pinned_keys_are_refused() {
        for line in ["", "ssh-ed25519", "ssh-ed25519 not-base64!", "hello world"] {
            let error = host_key_fingerprint(line).expect_err(line);
            assert!(matches!(error, SshError::InvalidHostKey { .. }), "{line}: {error}");
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn transient_classification() {
        let refused = SshError::Connect {
            address: "x:22".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(refused.is_transient());
        let not_found = SshError::Connect {
            address: "x:22".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(!not_found.is_transient());
        assert!(SshError::Timeout { address: "x:22".into(), timeout: Duration::from_secs(1) }.is_transient());
        assert!(SshError::Protocol { address: "x:22".into(), source: russh::Error::HUP }.is_transient());
        assert!(
            !SshError::HostKeyMismatch {
                address: "x:22".into(),
                expected_fingerprint: "a".into(),
                got_fingerprint: "b".into()
            }
            .is_transient()
        );
        assert!(!SshError::AuthFailed { address: "x:22".into(), user: "root".into() }.is_transient());
    }
}
