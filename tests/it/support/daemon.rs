//! The real `siirto daemon` as a child process, as systemd runs it: started on a config file,
//! killed with SIGKILL (no shutdown path runs) or stopped with SIGTERM (the graceful stop),
//! its log kept in a file beside the config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `siirto daemon` child process, killed if the test ends while it runs.
pub struct DaemonProcess {
    child: Child,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

impl DaemonProcess {
    /// Starts `siirto daemon --config <config>` in `dir`, logging at debug level to `log` (a
    /// restarted daemon appends to the same log).
    pub fn start(dir: &Path, config: &str, log: &str) -> DaemonProcess {
        let log = dir.join(log);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_siirto"))
            .args(["daemon", "--config", config])
            .current_dir(dir)
            .env("RUST_LOG", "siirto=debug")
            .env("NO_COLOR", "1")
            .env_remove("SIIRTO_CONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start siirto daemon");
        DaemonProcess { child, log }
    }

    /// SIGKILL: no shutdown path runs, leases stay taken. Returns the log so far.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "the daemon was killed, not stopped: {status:?}");
        self.log_text()
    }

    /// SIGTERM (what systemd sends), then waits (deadline `within`) for the process to exit;
    /// returns its exit status and the log.
    pub async fn stop(mut self, within: Duration) -> (ExitStatus, String) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        assert!(matches!(sent, Ok(s) if s.success()), "kill -TERM failed: {sent:?}");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {within:?} of SIGTERM; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The exit status, once the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Panics with the daemon's log if it exited on its own.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("siirto daemon exited with {status:?}:\n{}", self.log_text());
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
