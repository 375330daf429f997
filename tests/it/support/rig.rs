//! Simulated source and target hosts, a real pdns_server holding the accounts' zones, a config
//! and a SQLite store, for tests that drive the real engine tick by tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use siirto::demo::{DnsEndpoint, SOURCE_IP, SimHosts, TARGET_IP, create_zones, write_config};
use siirto::engine::{Engine, SystemClock};
use siirto::names::MigrationId;
use siirto::playbook::Playbook;
use siirto::sim::{SimHostSpec, SimWorld, generate_accounts, start_host};
use siirto::status::{AccountStatus, MigrationStatus, migration_status};
use siirto::store::Store;
use siirto::world::World;

use crate::support::pdns::Pdns;

/// The rig; dropped at the end of the test with everything it started.
pub struct SimRig {
    pub dir: tempfile::TempDir,
    pub hosts: SimHosts,
    pub pdns: Pdns,
    pub config: siirto::config::Config,
    pub store: Store,
    pub id: MigrationId,
}

impl SimRig {
    /// `accounts` accounts (`kukka0001`…) on the source, none on the target; the target
    /// transfers at `bytes_per_sec` (`None`: the sim's default); `extra` is appended to the
    /// config (e.g. `[hosts.old.ssh]`); the migration will be called `id`.
    pub async fn start(id: &str, accounts: usize, bytes_per_sec: Option<u64>, extra: &str) -> SimRig {
        let dir = tempfile::tempdir().unwrap();
        let pdns = Pdns::start().await;
        let world = SimWorld::new();
        let accounts = generate_accounts(accounts, "kukka");
        let mut source_spec = SimHostSpec::new("old.sim.test", SOURCE_IP, "old-token-for-tests");
        source_spec.accounts = accounts.clone();
        let source = start_host(source_spec, dir.path().join("old"), &world).await.unwrap();
        let mut target_spec = SimHostSpec::new("new.sim.test", TARGET_IP, "new-token-for-tests");
        if let Some(rate) = bytes_per_sec {
            target_spec.transfer_bytes_per_sec = rate;
        }
        let target = start_host(target_spec, dir.path().join("new"), &world).await.unwrap();
        let hosts = SimHosts { world, source, target, accounts };
        let endpoint = DnsEndpoint {
            api_url: pdns.api_url.clone(),
            api_key: pdns.api_key.clone(),
            dns_addr: pdns.dns_addr,
        };
        create_zones(&endpoint.client().unwrap(), &hosts.accounts, SOURCE_IP).await.unwrap();
        let database = format!("sqlite://{}", dir.path().join("siirto.db").display());
        let extra = format!(
            "[daemon]\nlease = \"20s\"\nidle_poll = \"100ms\"\n\n[mail]\nfrom = \"Siirto <noreply@siirto.test>\"\nchannel = \"directory\"\npath = \"outbox\"\n\n{extra}"
        );
        let config = write_config(&hosts, &endpoint, dir.path(), &database, &extra).unwrap();
        let store = Store::connect(&config.database).await.unwrap();
        SimRig { dir, hosts, pdns, config, store, id: MigrationId::parse(id).unwrap() }
    }

    /// Plans the migration under `playbook_text` and approves it.
    pub async fn plan_and_approve(&self, playbook_text: &str) {
        let adapters = World::from_config(&self.config).unwrap();
        let playbook = Playbook::parse(playbook_text, "test playbook").unwrap();
        let now = chrono::Utc::now();
        let request = siirto::plan::PlanRequest {
            id: self.id.clone(),
            source: "old",
            target: "new",
            playbook: &playbook,
            cutover_at: now,
            actor: "test",
        };
        siirto::plan::plan(&self.store, &self.config, &adapters, request, now).await.unwrap();
        siirto::ops::approve(&self.store, &self.id, "test-operator", now).await.unwrap();
    }

    /// `siirto start`: pre-flight, then the start unless it found something hard.
    pub async fn start_migration(&self) -> siirto::ops::StartOutcome {
        let adapters = World::from_config(&self.config).unwrap();
        siirto::ops::start(&self.store, &self.config, &adapters, &self.id, "test", chrono::Utc::now())
            .await
            .unwrap()
    }

    /// An engine on the rig's store (8 workers) owned by `owner`.
    pub fn engine(&self, owner: &str) -> Arc<Engine> {
        Arc::new(
            Engine::from_config(&self.config, self.store.clone(), Arc::new(SystemClock))
                .unwrap()
                .with_owner(owner)
                .with_workers(8),
        )
    }

    pub async fn status(&self) -> MigrationStatus {
        migration_status(&self.store, self.id.as_str()).await.unwrap()
    }

    /// Drives `engine` tick by tick until `done` holds (deadline: a hung engine fails the test).
    pub async fn tick_until(
        &self,
        engine: &Arc<Engine>,
        what: &str,
        mut done: impl FnMut(&MigrationStatus) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status = self.status().await;
            if done(&status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status:#?}\n{}",
                self.pdns.log()
            );
            if engine.tick().await.unwrap() == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One account's line of a status.
pub fn account<'s>(status: &'s MigrationStatus, user: &str) -> &'s AccountStatus {
    status.accounts.iter().find(|a| a.user == user).unwrap()
}
