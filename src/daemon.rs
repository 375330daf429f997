//! `siirto daemon`: one orchestrator process. It takes its owner name's lock file (so two
//! daemons of one name cannot run on one host), takes back at once the jobs that name held when
//! it last stopped (a killed daemon's leases would otherwise block them until they expire), runs
//! the engine until SIGTERM or SIGINT, and then stops gracefully: nothing more is claimed, the
//! steps in flight finish within `daemon.stop_timeout`, the rest are cancelled and given back.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use tracing::info;

use crate::config::Config;
use crate::engine::{Engine, SystemClock, default_owner};
use crate::store::Store;

/// The owner name this config's daemon runs under: `[daemon] owner`, or the host's name.
pub fn owner(config: &Config) -> String {
    config.daemon.owner.clone().unwrap_or_else(default_owner)
}

/// Runs the daemon of `config` until `shutdown` completes, then stops gracefully. With
/// `exit_when_settled`, it also stops once no migration has a job left to do now (decommission
/// stages due later do not count), and says how they stand ([`until_settled`]).
pub async fn run(
    config: &Config,
    shutdown: impl Future<Output = ()>,
    exit_when_settled: bool,
) -> anyhow::Result<Option<Outcome>> {
    let owner = owner(config);
    let lock = OwnerLock::acquire(&config.daemon.lock_dir, &owner)?;
    let store = Store::connect(&config.database).await.context("opening the store")?;
    // The lock proves no other process of this name runs: every lease the name holds belongs to
    // a daemon that is gone.
    let released = store.release_owner_leases(&owner).await.context("taking back this owner's jobs")?;
    if released > 0 {
        info!(owner, released, "took back at once the jobs this owner held when it stopped");
    }
    let engine =
        Arc::new(Engine::from_config(config, store.clone(), Arc::new(SystemClock))?.with_owner(&owner));
    let web = serve_page(config, &store).await?;
    let found = std::sync::Mutex::new(None);
    let stop = async {
        if !exit_when_settled {
            return shutdown.await;
        }
        tokio::select! {
            () = shutdown => {}
            outcome = until_settled(store.clone(), std::time::Duration::from_millis(500)) => {
                info!(?outcome, "no job left; stopping");
                *found.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outcome);
            }
        }
    };
    let ran = engine.run(stop).await;
    web.stop().await;
    ran?;
    store.close().await;
    drop(lock);
    Ok(found.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// The status page being served.
struct Page {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Binds `listen` (refusing to start when it cannot: the address is taken or not ours) and
/// serves the status page, the API and the metrics there.
async fn serve_page(config: &Config, store: &Store) -> anyhow::Result<Page> {
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
        format!("listening on {} for the status page (the config's `listen`)", config.listen)
    })?;
    let addr = listener.local_addr()?;
    info!(%addr, tokens = config.web.tokens.len(), "serving the status page and the API");
    crate::output::line(&format!("status page and API at http://{addr}/"));
    let app = crate::web::App::new(config, store.clone(), Arc::new(SystemClock))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(crate::web::serve(listener, app, async {
        let _ = stopped.await;
    }));
    Ok(Page { stop, task })
}

impl Page {
    /// Stops taking connections; open live feeds get two seconds, then are cut.
    async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        match tokio::time::timeout(std::time::Duration::from_secs(2), self.task).await {
            Ok(Ok(Err(err))) => {
                tracing::warn!(error = %format!("{err:#}"), "the status page stopped with an error")
            }
            Ok(_) => {}
            Err(_) => abort.abort(),
        }
    }
}

/// Where the migrations in the store stand once the daemon has nothing left to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every migration is settled (or aborted) and no job is left.
    Settled(Vec<String>),
    /// No job is left, but these migrations are not settled: each needs an operator (approve,
    /// start, resume, assign an IP, retry a held account), with where it stands.
    NeedsOperator(Vec<(String, String)>),
}

/// Completes once no migration has a job left (due or not): with [`Outcome::Settled`] when
/// every migration is settled or aborted, else with the ones that wait for an operator. Polls
/// the store every `poll`; a job and the one it schedules are written in one transaction, so
/// "no job left" is never seen between two steps.
pub async fn until_settled(store: Store, poll: std::time::Duration) -> Outcome {
    loop {
        match settledness(&store).await {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "checking whether the migrations are settled")
            }
        }
        tokio::time::sleep(poll).await;
    }
}

async fn settledness(store: &Store) -> anyhow::Result<Option<Outcome>> {
    use crate::domain::MigrationState;
    let mut settled = Vec::new();
    let mut waiting = Vec::new();
    for row in store.migrations().await? {
        // The decommission stages wait months after the cutover: a settled migration whose
        // only jobs left are stages not due yet has nothing to do now.
        let now = crate::domain::to_millis(chrono::Utc::now());
        if store.open_jobs(&row.id, crate::engine::JobKind::Decommission.as_str(), now).await? > 0 {
            return Ok(None);
        }
        match crate::store::migration_state(&row)? {
            MigrationState::Settled { .. } | MigrationState::Aborted { .. } => settled.push(row.id),
            state => {
                let status = crate::status::migration_status(store, &row.id).await?;
                let others: Vec<String> = status
                    .accounts_by_state
                    .iter()
                    .filter(|(name, _)| name.as_str() != "done")
                    .map(|(name, n)| format!("{n} {name}"))
                    .collect();
                let mut why = state.name().to_owned();
                if !others.is_empty() {
                    why.push_str(&format!(", accounts: {}", others.join(", ")));
                }
                if let Some(reason) = status.accounts.iter().find_map(|a| a.reason.clone()) {
                    why.push_str(&format!(" (first: {reason})"));
                }
                waiting.push((row.id, why));
            }
        }
    }
    Ok(Some(if waiting.is_empty() { Outcome::Settled(settled) } else { Outcome::NeedsOperator(waiting) }))
}

/// Completes at the first SIGTERM (what systemd and `kill` send) or SIGINT (Ctrl-C).
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the daemon can only be killed; say so and run on.
        tracing::warn!("cannot listen for SIGTERM/SIGINT; the daemon stops only when killed");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    info!(signal = name, "stopping");
}

/// The lock file of one owner name on this host, held (an OS file lock, released by the kernel
/// when the process dies, however it dies) for as long as the daemon runs.
#[derive(Debug)]
pub struct OwnerLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl OwnerLock {
    /// Takes `<dir>/siirto-daemon-<owner>.lock`; an error naming the file when another process
    /// holds it.
    pub fn acquire(dir: &Path, owner: &str) -> anyhow::Result<OwnerLock> {
        let name: String = owner
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .collect();
        let path = dir.join(format!("siirto-daemon-{name}.lock"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the daemon's lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(anyhow!(
                    "another siirto daemon runs as owner {owner:?} on this host (it holds {}); give this one another name with [daemon] owner",
                    path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("locking {}", path.display()));
            }
        }
        // For whoever looks at the file: which process holds it.
        let _ = file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(OwnerLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_owner_is_refused_and_the_first_one_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = OwnerLock::acquire(dir.path(), "siirto-1").unwrap();
        assert!(first.path().ends_with("siirto-daemon-siirto-1.lock"));
        let err = format!("{:#}", OwnerLock::acquire(dir.path(), "siirto-1").unwrap_err());
        assert!(err.contains("another siirto daemon runs as owner \"siirto-1\""), "{err}");
        assert!(err.contains("siirto-daemon-siirto-1.lock"), "{err}");
        // Another name is another lock.
        let other = OwnerLock::acquire(dir.path(), "host:2").unwrap();
        assert!(other.path().ends_with("siirto-daemon-host_2.lock"));
        drop(first);
        OwnerLock::acquire(dir.path(), "siirto-1").unwrap();
    }
}
