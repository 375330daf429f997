//! A real OpenSSH `sshd` on loopback, with generated host and client keys, for the ssh tests.
//!
//! Each [`Sshd`] runs its own `/usr/sbin/sshd -D -e -f CONFIG` out of a temporary directory
//! (config, keys, authorized_keys, pid file and log), listening on 127.0.0.1 at a free port, and
//! logging in as the current user with key authentication only. It is killed and its directory
//! removed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use siirto::ssh::SshTarget;
use tokio::io::AsyncReadExt;

const SSHD: &str = "/usr/sbin/sshd";
const INSTALL_HINT: &str = "install Debian package openssh-server (it provides /usr/sbin/sshd; ssh-keygen comes with openssh-client)";

/// A running sshd and the keys to reach it.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    /// Where sshd listens (127.0.0.1, a free port).
    pub address: SocketAddr,
    /// The server's public Ed25519 host key, as an OpenSSH line (what a config pins).
    pub host_key_line: String,
    /// The server's second host key (ECDSA P-256), as an OpenSSH line: real servers have
    /// several, and a pin may name any of them.
    pub ecdsa_host_key_line: String,
    /// The private key whose public half is in authorized_keys.
    pub client_key: PathBuf,
    /// The user sshd lets in (the current user: whoami).
    pub user: String,
}

impl Sshd {
    /// Generates keys, writes a config and starts sshd (`MaxSessions 64`), returning once it
    /// answers with its SSH banner. Panics (failing the test) if sshd or ssh-keygen is missing
    /// or sshd won't start.
    pub async fn start() -> Sshd {
        Sshd::start_with_max_sessions(64).await
    }

    /// [`Sshd::start`] with another `MaxSessions` (channels per connection; OpenSSH's default
    /// is 10).
    pub async fn start_with_max_sessions(max_sessions: u32) -> Sshd {
        assert!(Path::new(SSHD).exists(), "{SSHD} is missing: {INSTALL_HINT}");
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")
            .unwrap_or_else(|error| panic!("cannot create /run/sshd for sshd: {error}"));

        let mut dir = tempfile::tempdir().expect("temp dir for sshd");
        let host_key = dir.path().join("host_ed25519");
        keygen(&host_key, "ed25519");
        let host_key_line = read_public_line(&host_key);
        let ecdsa_host_key = dir.path().join("host_ecdsa");
        keygen(&ecdsa_host_key, "ecdsa");
        let ecdsa_host_key_line = read_public_line(&ecdsa_host_key);
        let client_key = dir.path().join("client_ed25519");
        keygen(&client_key, "ed25519");
        std::fs::write(dir.path().join("authorized_keys"), format!("{}\n", read_public_line(&client_key)))
            .expect("write authorized_keys");
        let user = whoami();

        // A port picked by binding port 0 can be taken by someone else before sshd binds it;
        // retry with a new port when sshd exits early.
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let config = write_config(dir.path(), &[&host_key, &ecdsa_host_key], port, max_sessions);
            let log_path = dir.path().join("sshd.log");
            let log = std::fs::File::create(&log_path).expect("create sshd.log");
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot run {SSHD}: {error}; {INSTALL_HINT}"));
            let mut sshd = Sshd {
                child,
                dir,
                address,
                host_key_line: host_key_line.clone(),
                ecdsa_host_key_line: ecdsa_host_key_line.clone(),
                client_key: client_key.clone(),
                user: user.clone(),
            };
            match sshd.wait_ready(Duration::from_secs(20)).await {
                Ok(()) => return sshd,
                Err(log) => {
                    last_log = log;
                    sshd.stop();
                    // Take the directory back for the next attempt.
                    dir = std::mem::replace(&mut sshd.dir, tempfile::tempdir().expect("temp dir"));
                }
            }
        }
        panic!("sshd did not start; its log:\n{last_log}");
    }

    /// The target that reaches this sshd with the right user, client key and pinned host key.
    pub fn target(&self) -> SshTarget {
        SshTarget {
            address: self.address.to_string(),
            user: self.user.clone(),
            key_file: self.client_key.clone(),
            host_key: self.host_key_line.clone(),
        }
    }

    /// Generates a fresh ed25519 key pair (not authorized, not the host key) in the server's
    /// temp dir; returns the private key path and the public key line.
    pub fn generate_other_key(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.path().join(name);
        keygen(&path, "ed25519");
        let line = read_public_line(&path);
        (path, line)
    }

    /// The temporary directory of this server (a scratch place shared with remote commands,
    /// since both run on this machine).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What sshd has logged so far (it logs to stderr with `-e`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Polls until sshd sends its SSH banner, or fails with its log if it exits or the deadline
    /// passes.
    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("sshd exited with {status}\n{}", self.log()));
            }
            if banner(self.address).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("sshd not ready after {within:?}\n{}", self.log()));
            }
            // Polling interval of the readiness loop (a refused connect returns at once).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn stop(&mut self) {
        // Kill our own child by its pid and reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something at `address` answers with an SSH banner within a short time.
async fn banner(address: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let mut buffer = [0u8; 8];
        stream.read_exact(&mut buffer).await.ok()?;
        Some(buffer.starts_with(b"SSH-2.0-"))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Some(true)))
}

fn write_config(dir: &Path, host_keys: &[&Path], port: u16, max_sessions: u32) -> PathBuf {
    let host_keys: String = host_keys.iter().map(|key| format!("HostKey {}\n", key.display())).collect();
    let config = format!(
        "ListenAddress 127.0.0.1\n\
         Port {port}\n\
         {host_keys}\
         PidFile {pid}\n\
         AuthorizedKeysFile {authorized_keys}\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         UseDNS no\n\
         StrictModes no\n\
         PrintMotd no\n\
         MaxStartups 100:30:200\n\
         MaxSessions {max_sessions}\n\
         LogLevel INFO\n",
        pid = dir.join("sshd.pid").display(),
        authorized_keys = dir.join("authorized_keys").display(),
    );
    let path = dir.join("sshd_config");
    std::fs::write(&path, config).expect("write sshd_config");
    path
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// `ssh-keygen -t KIND -N '' -f PATH`.
fn keygen(path: &Path, kind: &str) {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "siirto-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run ssh-keygen: {error}; {INSTALL_HINT}"));
    assert!(output.status.success(), "ssh-keygen failed: {}", String::from_utf8_lossy(&output.stderr));
}

/// The `.pub` line next to a private key, without its newline.
fn read_public_line(private_key: &Path) -> String {
    let mut public = private_key.as_os_str().to_owned();
    public.push(".pub");
    std::fs::read_to_string(&public).expect("read public key").trim().to_owned()
}

/// The SHA256 fingerprint of a public key line as `ssh-keygen -l -E sha256` prints it.
pub fn ssh_keygen_fingerprint(public_key_line: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("key.pub");
    std::fs::write(&path, format!("{public_key_line}\n")).expect("write key");
    let output = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(&path)
        .output()
        .unwrap_or_else(|error| panic!("cannot run ssh-keygen: {error}; {INSTALL_HINT}"));
    assert!(output.status.success(), "ssh-keygen -l failed");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_owned()
}

fn whoami() -> String {
    let output = Command::new("whoami").output().expect("run whoami");
    assert!(output.status.success(), "whoami failed");
    String::from_utf8(output.stdout).expect("utf-8 user name").trim().to_owned()
}
