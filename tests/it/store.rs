//! The store's conformance suite: every test runs against a fresh SQLite file and a fresh
//! PostgreSQL database, so both backends keep the same promises.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use siirto::store::{
    AccountRow, Backend, DomainRow, MigrationRow, NewEvent, NewJob, NewNotice, Store, StoreError,
};

use crate::support::pg::PgDatabase;

/// A fresh database for one test.
enum TestDb {
    Sqlite {
        // Held so the directory (and the database file in it) lives as long as the test.
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres(PgDatabase),
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        // The file does not exist yet: connect must create it.
        let url = format!("sqlite:{}", dir.path().join("siirto.db").display());
        TestDb::Sqlite { _dir: dir, url }
    }

    async fn postgres() -> TestDb {
        TestDb::Postgres(PgDatabase::create().await)
    }

    fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } => url,
            TestDb::Postgres(db) => db.url(),
        }
    }

    fn backend(&self) -> Backend {
        match self {
            TestDb::Sqlite { .. } => Backend::Sqlite,
            TestDb::Postgres(_) => Backend::Postgres,
        }
    }

    /// Opens a new store (a pool of its own) on this database.
    async fn store(&self) -> Store {
        let store = Store::connect(self.url()).await.expect("connect the store");
        assert_eq!(store.backend(), self.backend());
        store
    }
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = Arc::new(TestDb::sqlite());
    test(db).await;
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = Arc::new(TestDb::postgres().await);
    test(db.clone()).await;
}

/// Runs each listed `async fn(Arc<TestDb>)` as two tests, `<name>::sqlite` and `<name>::postgres`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::on_sqlite(super::$name).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::on_postgres(super::$name).await;
                }
            }
        )*
    };
}

conformance!(
    migrations_apply_twice,
    inserts_and_reads_back_rows,
    duplicate_inserts_conflict,
    updates_states,
    a_transaction_reads_its_own_account_writes,
    accounts_are_read_by_state_and_by_name,
    unknown_rows_are_not_found,
    events_come_back_in_order,
    the_event_chain_names_the_first_row_edited_removed_or_cut_off,
    events_of_an_earlier_version_are_chained_once_at_connect,
    schedule_job_dedupes,
    enqueue_notice_dedupes,
    notices_are_marked_sent_and_failed,
    a_batch_of_notices_is_written_read_and_marked_together,
    claims_only_due_jobs,
    a_batch_claim_takes_one_kind_of_one_migration_and_finishes_only_live_leases,
    claimed_job_is_not_claimed_again_until_its_lease_expires,
    expired_lease_is_lost_to_the_next_claimer,
    retry_counts_an_attempt_and_delays,
    reschedule_delays_without_an_attempt,
    requeue_makes_a_done_job_pending_again,
    renew_and_release_lease,
    next_due_at_follows_pending_jobs,
    dropped_transaction_rolls_back,
    concurrent_claimers_finish_every_job_exactly_once,
    batch_inserts_conflict_on_existing_rows,
    holds_a_migration_of_10000_accounts_and_50000_domains,
    plan_documents_are_found_by_source,
    account_dns_lock_excludes_other_jobs,
    domains_to_lower_come_a_few_zones_at_a_time,
);

const MIG: &str = "old1-2026";
/// A lease no test outlives.
const LONG: Duration = Duration::from_secs(600);
/// A lease a test waits out.
const SHORT: Duration = Duration::from_millis(50);

/// Waits (deadline 10 s) until the database's clock has passed `lease`'s expiry, which the
/// holder sees as its leased transaction refused.
async fn wait_out(store: &Store, lease: &siirto::store::Lease) -> StoreError {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.begin_leased(lease).await {
            Err(err @ StoreError::LeaseLost { .. }) => return err,
            Err(other) => panic!("{other:?}"),
            Ok(tx) => tx.rollback().await.expect("rollback"),
        }
        assert!(std::time::Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Appends `count` events of `MIG` from `writers` concurrent tasks, a few per transaction.
async fn append_concurrently(store: &Store, writers: usize, count: usize) {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in (writer..count).step_by(writers).collect::<Vec<_>>().chunks(3) {
                let mut tx = store.begin().await.expect("begin");
                for n in n {
                    tx.append_event(&NewEvent {
                        migration_id: MIG.to_owned(),
                        account: Some(format!("user{writer}")),
                        domain: None,
                        kind: "step".to_owned(),
                        detail: format!(r#"{{"n":{n}}}"#),
                        actor: format!("daemon{writer}"),
                        at: *n as i64,
                    })
                    .await
                    .expect("append");
                }
                tx.commit().await.expect("commit");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
}

/// Runs one statement on the database behind the store's back, as someone with its password
/// would.
async fn tamper(db: &TestDb, sql: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(db.url()).await.expect("connect behind the store");
    let done = sqlx::query(sql).execute(&mut conn).await.expect(sql);
    assert!(done.rows_affected() > 0, "{sql} changed nothing");
}

/// `siirto audit verify`: appends from concurrent transactions (on PostgreSQL, several
/// connections) form one intact chain; an edited detail, an edited actor, a removed row and a
/// cut-off tail are each found at the right row.
async fn the_event_chain_names_the_first_row_edited_removed_or_cut_off(db: Arc<TestDb>) {
    sqlx::any::install_default_drivers();
    let store = seeded(&db).await;
    append_concurrently(&store, 4, 40).await;
    let report = store.verify_chain(MIG).await.expect("verify");
    assert_eq!((report.rows, &report.broken), (40, &None), "{report:?}");
    let head = report.head.clone().expect("a head hash");
    assert_eq!(head.len(), 64);
    let events = store.events(MIG).await.expect("events");
    assert_eq!(events.len(), 40);
    // Another store on the same database (the daemon and the CLI) sees the same chain.
    assert_eq!(
        db.store().await.verify_chain(MIG).await.expect("verify").head.as_deref(),
        Some(head.as_str())
    );

    // The chain's order is its places, which follow commits; find the row at place 10.
    let at_place =
        |seq: i64| format!("(SELECT id FROM events WHERE migration_id = '{MIG}' AND chain_seq = {seq})");
    tamper(&db, &format!("UPDATE events SET detail = '{{\"n\":999}}' WHERE id = {}", at_place(10))).await;
    let report = store.verify_chain(MIG).await.expect("verify");
    let broken = report.broken.expect("an edited detail is found");
    assert_eq!((broken.seq, report.rows), (Some(10), 9), "{broken:?}");
    assert!(broken.reason.contains("does not match its hash"), "{}", broken.reason);
    let tampered = store.events(MIG).await.expect("events").into_iter().find(|e| e.detail.contains("999"));
    assert_eq!(broken.event, tampered.map(|e| e.id), "the report names the edited row's event id");

    // Put back exactly, it matches again; an edited actor further on is found at its row.
    let original = events.iter().find(|e| Some(e.id) == broken.event).expect("the row").detail.clone();
    tamper(&db, &format!("UPDATE events SET detail = '{original}' WHERE id = {}", broken.event.unwrap()))
        .await;
    assert_eq!(
        store.verify_chain(MIG).await.expect("verify").broken,
        None,
        "restored exactly, it matches again"
    );
    tamper(&db, &format!("UPDATE events SET actor = 'nobody' WHERE id = {}", at_place(25))).await;
    assert_eq!(store.verify_chain(MIG).await.expect("verify").broken.and_then(|b| b.seq), Some(25));

    // A removed row: the next place is missing.
    let fresh = TestDb::sqlite();
    let store = seeded(&fresh).await;
    append_concurrently(&store, 2, 12).await;
    tamper(&fresh, &format!("DELETE FROM events WHERE id = (SELECT id FROM events WHERE migration_id = '{MIG}' AND chain_seq = 5)")).await;
    let broken = store.verify_chain(MIG).await.expect("verify").broken.expect("a removed row is found");
    assert_eq!(broken.seq, Some(6), "{broken:?}");
    assert!(broken.reason.contains("place 5"), "{}", broken.reason);

    // A cut-off tail: every row left matches, the recorded head does not.
    let fresh = TestDb::sqlite();
    let store = seeded(&fresh).await;
    append_concurrently(&store, 2, 12).await;
    tamper(&fresh, &format!("DELETE FROM events WHERE migration_id = '{MIG}' AND chain_seq > 10")).await;
    let report = store.verify_chain(MIG).await.expect("verify");
    let broken = report.broken.expect("a cut-off tail is found");
    assert_eq!((broken.event, report.rows), (None, 10), "{broken:?}");
    assert!(broken.reason.contains("up to place 12"), "{}", broken.reason);
}

/// A store written by a version before the chain (events without a place or hash, no chain
/// row) is chained when a new version connects, in the order the events were written, and
/// new events continue that chain.
async fn events_of_an_earlier_version_are_chained_once_at_connect(db: Arc<TestDb>) {
    sqlx::any::install_default_drivers();
    let store = seeded(&db).await;
    append_concurrently(&store, 1, 6).await;
    let before: Vec<i64> = store.events(MIG).await.expect("events").iter().map(|e| e.id).collect();
    tamper(&db, "UPDATE events SET chain_seq = NULL, hash = NULL").await;
    tamper(&db, "DELETE FROM event_chain").await;
    let broken = store.verify_chain(MIG).await.expect("verify").broken.expect("unchained rows are found");
    assert!(broken.reason.contains("no place in the chain"), "{}", broken.reason);
    store.close().await;

    let store = db.store().await;
    let report = store.verify_chain(MIG).await.expect("verify");
    assert_eq!((report.rows, &report.broken), (6, &None), "{report:?}");
    append_concurrently(&store, 1, 2).await;
    let report = store.verify_chain(MIG).await.expect("verify");
    assert_eq!((report.rows, &report.broken), (8, &None), "{report:?}");
    // In the order they were written: place 1 is the first event.
    let first: i64 = {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(db.url()).await.expect("connect");
        sqlx::query_scalar(&format!("SELECT id FROM events WHERE migration_id = '{MIG}' AND chain_seq = 1"))
            .fetch_one(&mut conn)
            .await
            .expect("place 1")
    };
    assert_eq!(first, before[0]);
}

fn migration_row(id: &str) -> MigrationRow {
    MigrationRow {
        id: id.to_owned(),
        source_host: "old1".to_owned(),
        target_host: "new1".to_owned(),
        playbook: "name = \"shared-hosting\"\n".to_owned(),
        cutover_at: 5_000_000,
        state: "planned".to_owned(),
        data: r#"{"state":"planned"}"#.to_owned(),
        created_at: 1_000,
        updated_at: 1_000,
    }
}

fn account_row(user: &str, email: Option<&str>) -> AccountRow {
    AccountRow {
        migration_id: MIG.to_owned(),
        user: user.to_owned(),
        main_domain: format!("{user}.test"),
        contact_email: email.map(str::to_owned),
        disk_mb: 1234,
        customer_key: email.map(|e| format!("contact-{e}")),
        customer_name: None,
        language: None,
        reseller: None,
        reseller_email: None,
        state: "pending".to_owned(),
        data: r#"{"state":"pending"}"#.to_owned(),
        updated_at: 1_000,
    }
}

fn domain_row(domain: &str, user: &str) -> DomainRow {
    DomainRow {
        migration_id: MIG.to_owned(),
        domain: domain.to_owned(),
        user: user.to_owned(),
        zone: domain.to_owned(),
        state: "pending".to_owned(),
        data: "{}".to_owned(),
        updated_at: 1_000,
    }
}

fn new_job(key: &str, due_at: i64) -> NewJob {
    NewJob {
        migration_id: MIG.to_owned(),
        kind: "transfer".to_owned(),
        subject: key.to_owned(),
        payload: r#"{"n":1}"#.to_owned(),
        due_at,
        dedupe_key: format!("{MIG}:{key}"),
    }
}

fn new_notice(key: &str) -> NewNotice {
    NewNotice {
        migration_id: MIG.to_owned(),
        account: Some("kukka".to_owned()),
        kind: "completion".to_owned(),
        dedupe_key: format!("completion:{MIG}:{key}"),
        message_id: format!("<notice-{key}.{MIG}@siirto>"),
        recipients: r#"["asiakas@example.fi"]"#.to_owned(),
        subject: "Your site has moved".to_owned(),
        body: "Hello".to_owned(),
        html: None,
        created_at: 2_000,
    }
}

/// A store with one migration in it.
async fn seeded(db: &TestDb) -> Store {
    let store = db.store().await;
    let mut tx = store.begin().await.expect("begin");
    tx.insert_migration(&migration_row(MIG)).await.expect("insert migration");
    tx.commit().await.expect("commit");
    store
}

/// Schedules jobs `(key, due_at)` in one transaction.
async fn schedule(store: &Store, jobs: &[(&str, i64)]) {
    let mut tx = store.begin().await.expect("begin");
    for (key, due_at) in jobs {
        assert!(tx.schedule_job(&new_job(key, *due_at)).await.expect("schedule"));
    }
    tx.commit().await.expect("commit");
}

async fn migrations_apply_twice(db: Arc<TestDb>) {
    let first = seeded(&db).await;
    first.close().await;
    // Connecting again runs the migrator again: nothing to apply, the data is still there.
    let second = db.store().await;
    let third = db.store().await;
    assert_eq!(second.migration(MIG).await.expect("read"), Some(migration_row(MIG)));
    assert_eq!(third.migrations().await.expect("read").len(), 1);
}

async fn inserts_and_reads_back_rows(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    tx.insert_migration(&migration_row("other-2026")).await.expect("second migration");
    tx.insert_account(&account_row("kukka", Some("kukka@example.fi"))).await.expect("account");
    tx.insert_account(&account_row("apila", None)).await.expect("account");
    tx.insert_domain(&domain_row("kukka.test", "kukka")).await.expect("domain");
    tx.insert_domain(&domain_row("addon.test", "kukka")).await.expect("domain");
    tx.insert_domain(&domain_row("apila.test", "apila")).await.expect("domain");
    tx.commit().await.expect("commit");

    let migrations = store.migrations().await.expect("migrations");
    let ids: Vec<&str> = migrations.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [MIG, "other-2026"]);
    assert_eq!(store.migration(MIG).await.expect("read"), Some(migration_row(MIG)));
    assert_eq!(store.migration("nope").await.expect("read"), None);

    let accounts = store.accounts(MIG).await.expect("accounts");
    assert_eq!(accounts, [account_row("apila", None), account_row("kukka", Some("kukka@example.fi"))]);
    assert_eq!(
        store.account(MIG, "kukka").await.expect("account"),
        Some(account_row("kukka", Some("kukka@example.fi")))
    );
    assert_eq!(store.account(MIG, "nobody").await.expect("account"), None);
    assert!(store.accounts("other-2026").await.expect("accounts").is_empty());

    let domains = store.domains(MIG).await.expect("domains");
    let names: Vec<&str> = domains.iter().map(|d| d.domain.as_str()).collect();
    assert_eq!(names, ["addon.test", "apila.test", "kukka.test"]);
    assert_eq!(
        store.domains_of(MIG, "kukka").await.expect("domains"),
        [domain_row("addon.test", "kukka"), domain_row("kukka.test", "kukka")]
    );
}

async fn duplicate_inserts_conflict(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    let err = tx.insert_migration(&migration_row(MIG)).await.expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict { what: "migration", .. }), "{err:?}");
    tx.insert_account(&account_row("kukka", None)).await.expect("account");
    let err = tx.insert_account(&account_row("kukka", None)).await.expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict { what: "account", .. }), "{err:?}");
    tx.insert_domain(&domain_row("kukka.test", "kukka")).await.expect("domain");
    let err = tx.insert_domain(&domain_row("kukka.test", "kukka")).await.expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict { what: "domain", .. }), "{err:?}");
    // A conflict does not spoil the transaction (no failed statement on PostgreSQL).
    tx.commit().await.expect("commit");
    assert_eq!(store.accounts(MIG).await.expect("accounts").len(), 1);
}

async fn updates_states(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    tx.insert_account(&account_row("kukka", None)).await.expect("account");
    tx.insert_domain(&domain_row("kukka.test", "kukka")).await.expect("domain");
    tx.commit().await.expect("commit");

    let mut tx = store.begin().await.expect("begin");
    tx.set_migration_state(MIG, "announced", r#"{"state":"announced"}"#, 2_000).await.expect("migration");
    tx.set_account_state(MIG, "kukka", "queued", r#"{"state":"queued"}"#, 2_001).await.expect("account");
    tx.set_domain_state(MIG, "kukka.test", "verified_on_target", r#"{"v":1}"#, 2_002).await.expect("domain");
    tx.commit().await.expect("commit");

    let migration = store.migration(MIG).await.expect("read").expect("exists");
    assert_eq!(
        (migration.state.as_str(), migration.data.as_str()),
        ("announced", r#"{"state":"announced"}"#)
    );
    assert_eq!((migration.created_at, migration.updated_at), (1_000, 2_000));
    let account = store.account(MIG, "kukka").await.expect("read").expect("exists");
    assert_eq!((account.state.as_str(), account.updated_at), ("queued", 2_001));
    let domain = &store.domains(MIG).await.expect("read")[0];
    assert_eq!(
        (domain.state.as_str(), domain.data.as_str(), domain.updated_at),
        ("verified_on_target", r#"{"v":1}"#, 2_002)
    );
}

/// `Tx::account` reads through the transaction (what it wrote, before the commit), so a step
/// holding a transaction never asks the pool for a second connection to read an account.
async fn a_transaction_reads_its_own_account_writes(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    tx.insert_account(&account_row("kukka", None)).await.expect("account");
    tx.commit().await.expect("commit");

    let mut tx = store.begin().await.expect("begin");
    tx.set_account_state(MIG, "kukka", "queued", r#"{"state":"queued"}"#, 2_001).await.expect("account");
    let inside = tx.account(MIG, "kukka").await.expect("read").expect("exists");
    assert_eq!((inside.state.as_str(), inside.updated_at), ("queued", 2_001));
    assert!(tx.account(MIG, "nobody").await.expect("read").is_none());
    drop(tx);
    let after = store.account(MIG, "kukka").await.expect("read").expect("exists");
    assert_ne!(after.state, "queued", "the dropped transaction rolled back");
}

/// The transfer steps' reads: accounts in some states (a few, by user name) and accounts by
/// name, never the whole migration; and the settle step's counts per state.
async fn accounts_are_read_by_state_and_by_name(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    let states = [("a1", "done"), ("a2", "pending"), ("a3", "queued"), ("a4", "failed"), ("a5", "pending")];
    for (user, state) in states {
        tx.insert_account(&AccountRow { state: state.to_owned(), ..account_row(user, None) })
            .await
            .expect("account");
    }
    let counts = tx.account_counts(MIG).await.expect("counts");
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [
            ("done".to_owned(), 1),
            ("failed".to_owned(), 1),
            ("pending".to_owned(), 2),
            ("queued".to_owned(), 1)
        ]
    );
    tx.commit().await.expect("commit");

    let users = |rows: Vec<AccountRow>| rows.into_iter().map(|r| r.user).collect::<Vec<_>>();
    let waiting = store.accounts_in_states(MIG, &["pending", "failed"], 10).await.expect("read");
    assert_eq!(users(waiting), ["a2", "a4", "a5"]);
    let first = store.accounts_in_states(MIG, &["pending", "failed"], 2).await.expect("read");
    assert_eq!(users(first), ["a2", "a4"]);
    let none = store.accounts_in_states(MIG, &["held"], 10).await.expect("read");
    assert!(none.is_empty());
    let named = store.accounts_named(MIG, &["a5".to_owned(), "a1".to_owned(), "nobody".to_owned()]).await;
    assert_eq!(users(named.expect("read")), ["a1", "a5"]);
}

async fn unknown_rows_are_not_found(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    let err = tx.set_migration_state("nope", "x", "{}", 1).await.expect_err("missing");
    assert!(matches!(err, StoreError::NotFound { what: "migration", .. }), "{err:?}");
    let err = tx.set_account_state(MIG, "nobody", "x", "{}", 1).await.expect_err("missing");
    assert!(matches!(err, StoreError::NotFound { what: "account", .. }), "{err:?}");
    let err = tx.set_domain_state(MIG, "no.test", "x", "{}", 1).await.expect_err("missing");
    assert!(matches!(err, StoreError::NotFound { what: "domain", .. }), "{err:?}");
    let err = tx.mark_notice_sent(42, 1).await.expect_err("missing");
    assert!(matches!(err, StoreError::NotFound { what: "notice", .. }), "{err:?}");
    assert!(!tx.requeue_job(MIG, "no-such-key", 1).await.expect("requeue"));
    assert!(!err.is_transient());
}

async fn events_come_back_in_order(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let kinds = ["planned", "announced", "transfer_started", "restored"];
    let mut ids = Vec::new();
    for (n, kind) in kinds.iter().enumerate() {
        let mut tx = store.begin().await.expect("begin");
        let id = tx
            .append_event(&NewEvent {
                migration_id: MIG.to_owned(),
                account: (n > 1).then(|| "kukka".to_owned()),
                domain: (n == 3).then(|| "kukka.test".to_owned()),
                kind: (*kind).to_owned(),
                detail: format!(r#"{{"n":{n}}}"#),
                actor: "scheduler".to_owned(),
                // Deliberately not monotonic: the log is ordered by insertion, not by clock.
                at: 10_000 - n as i64,
            })
            .await
            .expect("append");
        tx.commit().await.expect("commit");
        ids.push(id);
    }
    let events = store.events(MIG).await.expect("events");
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), kinds);
    assert_eq!(events[0].account, None);
    assert_eq!(events[3].account.as_deref(), Some("kukka"));
    assert_eq!(events[3].domain.as_deref(), Some("kukka.test"));
    assert_eq!(
        (events[3].detail.as_str(), events[3].actor.as_str(), events[3].at),
        (r#"{"n":3}"#, "scheduler", 9_997)
    );
    assert!(store.events("other").await.expect("events").is_empty());
    // What `siirto log --follow` asks: the events after one it has shown.
    let after = store.events_after(MIG, ids[1]).await.expect("events after");
    assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..]);
    assert_eq!(store.events_after(MIG, 0).await.expect("events after 0").len(), 4);
    assert!(store.events_after(MIG, ids[3]).await.expect("none after the last").is_empty());
}

async fn schedule_job_dedupes(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.schedule_job(&new_job("kukka", 100)).await.expect("first"));
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    let mut again = new_job("kukka", 999);
    again.payload = r#"{"n":2}"#.to_owned();
    assert!(!tx.schedule_job(&again).await.expect("second"));
    assert!(tx.schedule_job(&new_job("apila", 100)).await.expect("other key"));
    tx.commit().await.expect("commit");

    let jobs = store.jobs(MIG).await.expect("jobs");
    assert_eq!(jobs.len(), 2);
    let kukka = &jobs[0];
    // The first job is untouched by the duplicate.
    assert_eq!(
        (kukka.dedupe_key.as_str(), kukka.due_at, kukka.payload.as_str()),
        ("old1-2026:kukka", 100, r#"{"n":1}"#)
    );
    assert_eq!((kukka.attempts, kukka.last_error.as_deref(), kukka.done_at), (0, None, None));
    assert_eq!(
        (kukka.kind.as_str(), kukka.subject.as_str(), kukka.migration_id.as_str()),
        ("transfer", "kukka", MIG)
    );
}

async fn enqueue_notice_dedupes(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    let id = tx.enqueue_notice(&new_notice("kukka")).await.expect("enqueue").expect("inserted");
    assert_eq!(tx.enqueue_notice(&new_notice("kukka")).await.expect("again"), None);
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    assert_eq!(tx.enqueue_notice(&new_notice("kukka")).await.expect("again"), None);
    let other = tx.enqueue_notice(&new_notice("apila")).await.expect("enqueue").expect("inserted");
    tx.commit().await.expect("commit");
    assert_ne!(id, other);

    let outbox = store.outbox(MIG).await.expect("outbox");
    assert_eq!(outbox.len(), 2);
    let notice = store.notice(id).await.expect("notice").expect("exists");
    assert_eq!(notice, outbox[0]);
    assert_eq!(notice.message_id, "<notice-kukka.old1-2026@siirto>");
    assert_eq!((notice.sent_at, notice.attempts, notice.last_error.as_deref()), (None, 0, None));
    assert_eq!((notice.recipients.as_str(), notice.created_at), (r#"["asiakas@example.fi"]"#, 2_000));
    assert_eq!(store.notice(id + 1000).await.expect("notice"), None);
}

async fn notices_are_marked_sent_and_failed(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    let a = tx.enqueue_notice(&new_notice("a")).await.expect("enqueue").expect("inserted");
    let b = tx.enqueue_notice(&new_notice("b")).await.expect("enqueue").expect("inserted");
    tx.commit().await.expect("commit");
    let unsent: Vec<i64> = store.unsent_notices(10).await.expect("unsent").iter().map(|n| n.id).collect();
    assert_eq!(unsent, [a, b]);

    let mut tx = store.begin().await.expect("begin");
    tx.notice_failed(a, "421 try later").await.expect("failed");
    tx.notice_failed(a, "connection refused").await.expect("failed");
    tx.mark_notice_sent(a, 3_000).await.expect("sent");
    // Marking again keeps the first time.
    tx.mark_notice_sent(a, 4_000).await.expect("sent again");
    // Read through the transaction, the notice already shows its writes.
    let inside = tx.notice(a).await.expect("read").expect("exists");
    assert_eq!((inside.sent_at, inside.attempts), (Some(3_000), 2));
    assert!(tx.notice(a + b + 100).await.expect("read").is_none());
    tx.commit().await.expect("commit");

    let notice = store.notice(a).await.expect("notice").expect("exists");
    assert_eq!(
        (notice.sent_at, notice.attempts, notice.last_error.as_deref()),
        (Some(3_000), 2, Some("connection refused"))
    );
    let unsent: Vec<i64> = store.unsent_notices(10).await.expect("unsent").iter().map(|n| n.id).collect();
    assert_eq!(unsent, [b]);

    // Delivery attempts: recorded before the hand-over; an attempt whose end was never recorded
    // makes the next one a resend; a recorded failure or acceptance ends the attempt.
    let mut tx = store.begin().await.expect("begin");
    assert!(!tx.notice_delivery_started(b, 5_000).await.expect("first attempt"), "not a resend");
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    assert!(tx.notice_delivery_started(b, 6_000).await.expect("after a crash"), "a resend");
    tx.notice_failed(b, "451 try later").await.expect("failed");
    assert!(!tx.notice_delivery_started(b, 7_000).await.expect("after a failure"), "a retry");
    tx.commit().await.expect("commit");
    let notice = store.notice(b).await.expect("notice").expect("exists");
    assert_eq!(
        (notice.delivery_attempts, notice.resends, notice.delivery_started_at, notice.sent_at),
        (3, 1, Some(7_000), None)
    );
    store.mark_notice_sent(b, 7_500).await.expect("accepted");
    let notice = store.notice(b).await.expect("notice").expect("exists");
    assert_eq!((notice.delivery_started_at, notice.sent_at), (None, Some(7_500)));
    let mut tx = store.begin().await.expect("begin");
    assert!(matches!(tx.notice_delivery_started(a + b + 100, 8_000).await, Err(StoreError::NotFound { .. })));
}

/// What a campaign and a batch of send jobs do in a few statements: many notices written at
/// once (a key given twice, or already in the outbox, is written once), their send jobs, the
/// rows read without their texts, the attempts recorded together (a resend named), the
/// sent-marks set together.
async fn a_batch_of_notices_is_written_read_and_marked_together(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    let old = tx.enqueue_notice(&new_notice("old")).await.expect("enqueue").expect("inserted");
    tx.commit().await.expect("commit");
    // 250 notices: more than one multi-row statement.
    let mut notices: Vec<NewNotice> = (0..250).map(|n| new_notice(&format!("n{n}"))).collect();
    notices[7].html = Some("<p>Hei</p>".to_owned());
    notices.push(new_notice("old"));
    notices.push(new_notice("n3"));
    let mut tx = store.begin().await.expect("begin");
    let ids = tx.enqueue_notices(&notices).await.expect("enqueue many");
    assert_eq!(ids.len(), 252);
    assert!(ids[..250].iter().all(Option::is_some), "{ids:?}");
    assert_eq!(&ids[250..], &[None, None], "the key in the outbox, and the key given twice");
    let ids: Vec<i64> = ids.into_iter().flatten().collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 250);
    let jobs: Vec<NewJob> = ids
        .iter()
        .map(|id| NewJob {
            kind: "send_notice".to_owned(),
            subject: id.to_string(),
            dedupe_key: format!("send_notice:{id}"),
            ..new_job("unused", 100)
        })
        .collect();
    assert_eq!(tx.schedule_jobs(&jobs).await.expect("schedule many"), 250);
    assert_eq!(tx.schedule_jobs(&jobs[..10]).await.expect("again"), 0, "keyed: written once");
    tx.commit().await.expect("commit");
    let outbox = store.outbox(MIG).await.expect("outbox");
    assert_eq!(outbox.len(), 251);
    let seventh = outbox.iter().find(|n| n.id == ids[7]).expect("written");
    assert_eq!(
        (seventh.dedupe_key.as_str(), seventh.html.as_deref(), seventh.subject.as_str()),
        ("completion:old1-2026:n7", Some("<p>Hei</p>"), "Your site has moved")
    );
    assert_eq!(store.jobs(MIG).await.expect("jobs").len(), 250);

    // Read for a decision: every field but the texts.
    let batch = [ids[7], ids[1], old, old + 100_000];
    let rows = store.notices_without_texts(&batch).await.expect("read");
    assert_eq!(rows.iter().map(|n| n.id).collect::<Vec<_>>(), [old, ids[1], ids[7]], "in id order");
    let row = &rows[2];
    assert_eq!((row.subject.as_str(), row.body.as_str(), row.html.as_deref()), ("", "", None));
    assert_eq!((row.message_id.as_str(), row.kind.as_str()), (seventh.message_id.as_str(), "completion"));

    // Attempts together: one left open by a crash is a resend.
    let mut tx = store.begin().await.expect("begin");
    assert!(!tx.notice_delivery_started(old, 1_000).await.expect("crashed attempt"));
    tx.commit().await.expect("commit");
    let mut tx = store.begin().await.expect("begin");
    let resends = tx.notices_delivery_started(&[ids[1], ids[7], old], 2_000).await.expect("attempts");
    assert_eq!(resends, [old]);
    let read = tx.notices(&[ids[7], old]).await.expect("read with texts");
    assert_eq!(read.iter().map(|n| n.html.as_deref()).collect::<Vec<_>>(), [None, Some("<p>Hei</p>")]);
    assert!(read.iter().all(|n| n.delivery_started_at == Some(2_000)));
    tx.mark_notices_sent(&[ids[1], old], 3_000).await.expect("marked");
    tx.mark_notices_sent(&[old], 4_000).await.expect("marked again");
    tx.commit().await.expect("commit");
    let after = |id: i64| {
        let store = store.clone();
        async move { store.notice(id).await.expect("notice").expect("exists") }
    };
    let (one, seven, first) = (after(ids[1]).await, after(ids[7]).await, after(old).await);
    assert_eq!((one.sent_at, one.delivery_started_at, one.delivery_attempts), (Some(3_000), None, 1));
    assert_eq!(
        (first.sent_at, first.resends, first.delivery_attempts),
        (Some(3_000), 1, 2),
        "the first time stands"
    );
    assert_eq!((seven.sent_at, seven.delivery_started_at), (None, Some(2_000)), "still in flight");
}

/// A worker sending notices takes more send jobs of its migration only, and records their
/// ends in one statement, which finishes only the jobs whose leases still hold (a lease that
/// expired and was claimed again, even by the same owner, is not finished).
async fn a_batch_claim_takes_one_kind_of_one_migration_and_finishes_only_live_leases(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    tx.insert_migration(&migration_row("other-2026")).await.expect("insert migration");
    let send = |key: &str, migration: &str| NewJob {
        migration_id: migration.to_owned(),
        kind: "send_notice".to_owned(),
        dedupe_key: format!("{migration}:{key}"),
        ..new_job(key, 100)
    };
    let jobs = [
        send("s1", MIG),
        send("s2", MIG),
        send("s3", MIG),
        send("x1", "other-2026"),
        new_job("transfer", 100),
    ];
    assert_eq!(tx.schedule_jobs(&jobs).await.expect("schedule"), 5);
    tx.commit().await.expect("commit");

    let first = store.claim_jobs_of("w1", 1_000, SHORT, 1, "send_notice", MIG).await.expect("claim");
    let rest = store.claim_jobs_of("w1", 1_000, LONG, 10, "send_notice", MIG).await.expect("claim");
    let subjects: Vec<&str> = first.iter().chain(&rest).map(|(job, _)| job.subject.as_str()).collect();
    assert_eq!(subjects, ["s1", "s2", "s3"], "only this migration's send jobs");
    let (_, short) = &first[0];
    // The short lease runs out and its job is claimed again by the same owner.
    wait_out(&store, short).await;
    let again = store.claim_jobs("w1", 1_000, LONG, 10).await.expect("claim");
    let again: Vec<&str> = again.iter().map(|(job, _)| job.subject.as_str()).collect();
    assert_eq!(again, ["s1", "x1", "transfer"]);

    let mut leases: Vec<&siirto::store::Lease> = rest.iter().map(|(_, lease)| lease).collect();
    leases.push(short);
    let mut tx = store.begin().await.expect("begin");
    let mut finished = tx.finish_jobs(&leases, 2_000).await.expect("finish");
    tx.commit().await.expect("commit");
    finished.sort_unstable();
    let mut live: Vec<i64> = rest.iter().map(|(job, _)| job.id).collect();
    live.sort_unstable();
    assert_eq!(finished, live, "the lost lease's job is left to its new holder");
    let jobs = store.jobs(MIG).await.expect("jobs");
    let done: HashMap<&str, Option<i64>> = jobs.iter().map(|j| (j.subject.as_str(), j.done_at)).collect();
    assert_eq!((done["s1"], done["s2"], done["s3"]), (None, Some(2_000), Some(2_000)));
}

async fn claims_only_due_jobs(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    schedule(&store, &[("late", 300), ("early", 100), ("middle", 200)]).await;

    assert!(store.claim_jobs("w1", 99, LONG, 10).await.expect("claim").is_empty());
    let claimed = store.claim_jobs("w1", 200, LONG, 10).await.expect("claim");
    let subjects: Vec<&str> = claimed.iter().map(|(job, _)| job.subject.as_str()).collect();
    assert_eq!(subjects, ["early", "middle"], "due ones, in due order");
    for (job, lease) in &claimed {
        assert_eq!(lease.job_id(), job.id);
        assert_eq!(lease.owner(), "w1");
        assert!(lease.remaining() > Duration::from_secs(590) && lease.check().is_ok());
        assert_eq!(job.attempts, 0, "a claim is not an attempt");
    }
    // The limit holds; w1's leases keep the first two from w2.
    let claimed = store.claim_jobs("w2", 1_100, LONG, 1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0.subject, "late");
}

async fn claimed_job_is_not_claimed_again_until_its_lease_expires(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    schedule(&store, &[("kukka", 100)]).await;
    let first = store.claim_jobs("w1", 1_000, LONG, 10).await.expect("claim");
    assert_eq!(first.len(), 1);
    // Neither another owner nor the same one gets it while the lease holds.
    assert!(store.claim_jobs("w2", 1_000, LONG, 10).await.expect("claim").is_empty());
    assert!(store.claim_jobs("w2", 1_499, LONG, 10).await.expect("claim").is_empty());
    assert!(store.claim_jobs("w1", 1_499, LONG, 10).await.expect("claim").is_empty());
    // Lease times are the database's: a daemon whose clock runs years ahead (due times are
    // its own business) still cannot take a job whose lease holds.
    let years_ahead = 1_000 + 10 * 365 * 24 * 3_600_000;
    assert!(store.claim_jobs("skewed", years_ahead, LONG, 10).await.expect("claim").is_empty());

    // A finished job is never claimed again.
    let (_, lease) = &first[0];
    let mut tx = store.begin_leased(lease).await.expect("lease holds");
    tx.finish_job(lease, 1_100).await.expect("finish");
    tx.commit().await.expect("commit");
    assert!(store.claim_jobs("w2", 1_000_000, LONG, 10).await.expect("claim").is_empty());
    let job = &store.jobs(MIG).await.expect("jobs")[0];
    assert_eq!(job.done_at, Some(1_100));
}

async fn expired_lease_is_lost_to_the_next_claimer(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    schedule(&store, &[("kukka", 100), ("apila", 100)]).await;
    let (_, old) = store.claim_jobs("w1", 1_000, SHORT, 1).await.expect("claim").pop().expect("one job");

    // Past its expiry the lease is free; the first owner cannot use it even before anyone claims.
    let err = wait_out(&store, &old).await;
    assert!(
        matches!(&err, StoreError::LeaseLost { job_id, reason } if *job_id == old.job_id() && reason.contains("expired")),
        "{err:?}"
    );
    assert!(old.check().is_err(), "a lease found lost refuses every effect");

    let (_, new) = store.claim_jobs("w2", 1_000, LONG, 1).await.expect("claim").pop().expect("reclaimed");
    assert_eq!(new.job_id(), old.job_id());
    assert_eq!(new.owner(), "w2");

    // The first owner has lost it, to w2 (and says so): no leased transaction, no finish, retry
    // or reschedule.
    let err = store.begin_leased(&old).await.expect_err("lost");
    assert!(
        matches!(&err, StoreError::LeaseLost { reason, .. } if reason.contains("taken over by daemon w2")),
        "{err:?}"
    );
    assert!(!err.is_transient());
    let mut tx = store.begin().await.expect("begin");
    assert!(matches!(tx.finish_job(&old, 1_600).await, Err(StoreError::LeaseLost { .. })));
    assert!(matches!(tx.retry_job(&old, 2_000, "boom").await, Err(StoreError::LeaseLost { .. })));
    assert!(matches!(tx.reschedule_job(&old, 2_000).await, Err(StoreError::LeaseLost { .. })));
    drop(tx);

    let mut tx = store.begin_leased(&new).await.expect("new lease holds");
    tx.finish_job(&new, 1_600).await.expect("finish");
    tx.commit().await.expect("commit");
    let job = store.jobs(MIG).await.expect("jobs").into_iter().find(|j| j.id == new.job_id()).expect("job");
    assert_eq!((job.done_at, job.attempts), (Some(1_600), 0));

    // The same owner claiming again after expiry gets a new lease; the older one stays dead, and
    // the reason does not blame another daemon.
    let (_, first) = store.claim_jobs("w1", 1_000, SHORT, 1).await.expect("claim").pop().expect("apila");
    wait_out(&store, &first).await;
    let (_, again) = store.claim_jobs("w1", 1_000, LONG, 1).await.expect("claim").pop().expect("again");
    assert_eq!(again.job_id(), first.job_id());
    let err = store.begin_leased(&first).await.expect_err("older lease");
    assert!(
        matches!(&err, StoreError::LeaseLost { reason, .. } if reason.contains("this owner name")),
        "{err:?}"
    );
    store.begin_leased(&again).await.expect("newer lease holds").rollback().await.expect("rollback");
}

async fn retry_counts_an_attempt_and_delays(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    schedule(&store, &[("kukka", 100)]).await;
    for attempt in 1..=2 {
        let now = attempt * 10_000;
        let (_, lease) = store.claim_jobs("w1", now, LONG, 10).await.expect("claim").pop().expect("due");
        let mut tx = store.begin_leased(&lease).await.expect("lease");
        tx.retry_job(&lease, now + 5_000, &format!("boom {attempt}")).await.expect("retry");
        tx.commit().await.expect("commit");

        let job = &store.jobs(MIG).await.expect("jobs")[0];
        assert_eq!(i64::from(job.attempts), attempt);
        assert_eq!(job.last_error.as_deref(), Some(format!("boom {attempt}").as_str()));
        assert_eq!((job.due_at, job.done_at), (now + 5_000, None));
        // The lease was cleared, and the job waits for its new due time.
        assert!(store.claim_jobs("w2", now + 4_999, LONG, 10).await.expect("claim").is_empty());
        assert_eq!(store.next_due_at().await.expect("next"), Some(now + 5_000));
    }
    let claimed = store.claim_jobs("w2", 25_000, LONG, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1, "due again after the delay, for anyone");
}

async fn reschedule_delays_without_an_attempt(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    schedule(&store, &[("kukka", 100)]).await;
    let (_, lease) = store.claim_jobs("w1", 1_000, LONG, 10).await.expect("claim").pop().expect("due");
    let mut tx = store.begin_leased(&lease).await.expect("lease");
    tx.reschedule_job(&lease, 60_000).await.expect("reschedule");
    tx.commit().await.expect("commit");
    let job = &store.jobs(MIG).await.expect("jobs")[0];
    assert_eq!((job.attempts, job.due_at, job.done_at, job.last_error.as_deref()), (0, 60_000, None, None));
    assert!(store.claim_jobs("w2", 59_999, LONG, 10).await.expect("claim").is_empty());
    assert_eq!(store.claim_jobs("w2", 60_000, LONG, 10).await.expect("claim").len(), 1);
}

async fn requeue_makes_a_done_job_pending_again(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    schedule(&store, &[("kukka", 100)]).await;
    let (_, lease) = store.claim_jobs("w1", 1_000, LONG, 10).await.expect("claim").pop().expect("due");
    let mut tx = store.begin_leased(&lease).await.expect("lease");
    tx.retry_job(&lease, 1_100, "boom").await.expect("retry");
    tx.commit().await.expect("commit");
    let (_, lease) = store.claim_jobs("w1", 1_200, LONG, 10).await.expect("claim").pop().expect("due");
    let mut tx = store.begin_leased(&lease).await.expect("lease");
    tx.finish_job(&lease, 1_200).await.expect("give up");
    tx.commit().await.expect("commit");
    assert_eq!(store.next_due_at().await.expect("next"), None);

    let mut tx = store.begin().await.expect("begin");
    assert!(tx.requeue_job(MIG, "old1-2026:kukka", 5_000).await.expect("requeue"));
    tx.commit().await.expect("commit");
    let job = &store.jobs(MIG).await.expect("jobs")[0];
    assert_eq!((job.attempts, job.due_at, job.done_at, job.last_error.as_deref()), (0, 5_000, None, None));
    assert_eq!(store.next_due_at().await.expect("next"), Some(5_000));
    assert_eq!(store.claim_jobs("w2", 5_000, LONG, 10).await.expect("claim").len(), 1);
}

async fn renew_and_release_lease(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    schedule(&store, &[("kukka", 100), ("apila", 100), ("orvokki", 100), ("ruusu", 100)]).await;
    let lease_of = Duration::from_millis(400);
    let (_, lease) = store.claim_jobs("w1", 1_000, lease_of, 1).await.expect("claim").pop().expect("due");
    let first_deadline = std::time::Instant::now() + lease_of;
    // Renewed every 100 ms, the lease outlives its first expiry by far: nobody else gets the
    // job, and its leased transactions keep working.
    let renewed_until = first_deadline + lease_of * 2;
    while std::time::Instant::now() < renewed_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(store.renew_lease(&lease).await.expect("renew"), "renewed");
        assert!(lease.check().is_ok(), "{:?} left", lease.remaining());
        let others = store.claim_jobs("w2", 1_000, LONG, 10).await.expect("claim");
        assert!(others.iter().all(|(job, _)| job.id != lease.job_id()), "taken while renewed");
        for (_, other) in others {
            store.release_lease(&other).await.expect("give back");
        }
    }
    // Roll back explicitly: a dropped transaction still holds the job's row lock on PostgreSQL
    // until its connection gets to run the rollback, and a claim would skip the row.
    store.begin_leased(&lease).await.expect("renewed lease holds").rollback().await.expect("rollback");

    // An expired lease cannot be renewed, and is marked lost with why.
    wait_out(&store, &lease).await;
    let err = store.renew_lease(&lease).await.expect_err("expired");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert!(lease.lost_reason().is_some() && lease.check().is_err());

    // A run that recorded its end has nothing left to renew, and its lease is not lost for it
    // (a step still closing an SMTP session after finishing its job is not cancelled).
    let (_, own) = store.claim_jobs("w1", 1_000, LONG, 1).await.expect("claim").pop().expect("due");
    let mut tx = store.begin_leased(&own).await.expect("lease");
    tx.finish_job(&own, 1_500).await.expect("finish");
    tx.commit().await.expect("commit");
    assert!(!store.renew_lease(&own).await.expect("ended, not lost"));
    assert!(own.lost_reason().is_none(), "{:?}", own.lost_reason());

    // Released: claimable at once, long before its expiry.
    let (_, lease) = store.claim_jobs("w2", 2_000, LONG, 1).await.expect("claim").pop().expect("due");
    let job_id = lease.job_id();
    store.release_lease(&lease).await.expect("release");
    assert!(lease.check().is_err(), "a released lease acts no more");
    let held = store.claim_jobs("w3", 2_001, LONG, 10).await.expect("claim");
    assert_eq!(held.len(), 3, "the released job and the two free ones");
    assert!(held.iter().any(|(job, lease)| job.id == job_id && lease.owner() == "w3"));

    // A daemon restarted under its owner name takes back what that name held, at once; a lost
    // run counts as an attempt, with why.
    assert_eq!(store.release_owner_leases("w3").await.expect("release"), 3);
    assert_eq!(store.release_owner_leases("w3").await.expect("nothing left"), 0);
    store.count_lost_lease(job_id, "taken over by daemon w9").await.expect("count");
    let job = store.jobs(MIG).await.expect("jobs").into_iter().find(|j| j.id == job_id).expect("job");
    assert_eq!((job.attempts, job.last_error.as_deref()), (1, Some("lease lost: taken over by daemon w9")));
    assert_eq!(store.claim_jobs("w4", 2_003, LONG, 10).await.expect("claim").len(), 3);
}

async fn next_due_at_follows_pending_jobs(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    assert_eq!(store.next_due_at().await.expect("next"), None);
    schedule(&store, &[("a", 300), ("b", 200)]).await;
    assert_eq!(store.next_due_at().await.expect("next"), Some(200));
    // A leased job counts from its lease's expiry: a daemon need not wake for it before then.
    let (_, lease) = store.claim_jobs("w1", 250, LONG, 1).await.expect("claim").pop().expect("b");
    assert_eq!(store.next_due_at().await.expect("next"), Some(300));
    let mut tx = store.begin_leased(&lease).await.expect("lease");
    tx.finish_job(&lease, 250).await.expect("finish");
    tx.commit().await.expect("commit");
    assert_eq!(store.next_due_at().await.expect("next"), Some(300));
}

async fn dropped_transaction_rolls_back(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    schedule(&store, &[("kukka", 100)]).await;
    let (_, lease) = store.claim_jobs("w1", 1_000, LONG, 10).await.expect("claim").pop().expect("due");
    {
        let mut tx = store.begin_leased(&lease).await.expect("lease");
        tx.finish_job(&lease, 1_000).await.expect("finish");
        tx.set_migration_state(MIG, "announced", "{}", 1_000).await.expect("state");
        // Dropped without commit.
    }
    let mut tx = store.begin().await.expect("begin");
    tx.set_migration_state(MIG, "ready", "{}", 1_001).await.expect("state");
    tx.rollback().await.expect("rollback");
    assert_eq!(store.migration(MIG).await.expect("read").expect("exists").state, "planned");
    assert_eq!(store.jobs(MIG).await.expect("jobs")[0].done_at, None);
    // The lease survived the rolled-back finish.
    store.begin_leased(&lease).await.expect("lease still holds");
}

/// Two stores (two pools, as two daemons would have) on one database, four workers each, claim
/// and finish 200 due jobs at once: every job is finished exactly once, and no job is ever held
/// by two workers at the same time.
async fn concurrent_claimers_finish_every_job_exactly_once(db: Arc<TestDb>) {
    const JOBS: usize = 200;
    const NOW: i64 = 1_000_000;
    let first = seeded(&db).await;
    let second = db.store().await;
    let keys: Vec<String> = (0..JOBS).map(|n| format!("job{n:03}")).collect();
    let jobs: Vec<(&str, i64)> = keys.iter().enumerate().map(|(n, key)| (key.as_str(), n as i64)).collect();
    schedule(&first, &jobs).await;

    let held: Arc<Mutex<HashMap<i64, String>>> = Arc::default();
    let finished: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for (name, store) in [("a", &first), ("b", &second)] {
        for n in 0..4 {
            let store = store.clone();
            let owner = format!("{name}{n}");
            let held = held.clone();
            let finished = finished.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    // Leases far longer than the test: none expires, so a job seen twice is a bug.
                    let claimed = store.claim_jobs(&owner, NOW, LONG, 3).await.expect("claim");
                    if claimed.is_empty() {
                        // Every job left is done or held by another worker, who will finish it.
                        break;
                    }
                    for (job, lease) in claimed {
                        if let Some(other) = held.lock().expect("lock").insert(job.id, owner.clone()) {
                            panic!("job {} claimed by {owner} while {other} held it", job.id);
                        }
                        let mut tx = store.begin_leased(&lease).await.expect("lease holds");
                        tx.finish_job(&lease, NOW).await.expect("finish");
                        tx.commit().await.expect("commit");
                        held.lock().expect("lock").remove(&job.id);
                        finished.lock().expect("lock").push((job.id, owner.clone()));
                    }
                }
            }));
        }
    }
    let all = futures::future::join_all(workers);
    let results =
        tokio::time::timeout(Duration::from_secs(120), all).await.expect("workers finish within 120 s");
    for result in results {
        result.expect("worker did not panic");
    }

    let finished = finished.lock().expect("lock").clone();
    assert_eq!(finished.len(), JOBS, "one finish per job");
    let ids: HashSet<i64> = finished.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), JOBS, "no job finished twice");
    let rows = first.jobs(MIG).await.expect("jobs");
    assert_eq!(rows.len(), JOBS);
    assert!(rows.iter().all(|job| job.done_at == Some(NOW) && job.attempts == 0));
    assert_eq!(rows.iter().map(|job| job.id).collect::<HashSet<_>>(), ids);
    assert_eq!(second.next_due_at().await.expect("next"), None);
    let owners: HashSet<&str> = finished.iter().map(|(_, owner)| owner.as_str()).collect();
    eprintln!("{} jobs finished by {} workers: {owners:?}", finished.len(), owners.len());
}

async fn batch_inserts_conflict_on_existing_rows(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    tx.insert_account(&account_row("kukka", None)).await.expect("account");
    let err = tx
        .insert_accounts(&[account_row("apila", None), account_row("kukka", None)])
        .await
        .expect_err("kukka exists");
    assert!(
        matches!(&err, StoreError::Conflict { what: "account", key } if key == "old1-2026/kukka"),
        "{err:?}"
    );
    tx.insert_domain(&domain_row("kukka.test", "kukka")).await.expect("domain");
    let err = tx.insert_domains(&[domain_row("kukka.test", "kukka")]).await.expect_err("kukka.test exists");
    assert!(
        matches!(&err, StoreError::Conflict { what: "domain", key } if key == "old1-2026/kukka.test"),
        "{err:?}"
    );
}

/// The size the store is designed for: one migration of 10,000 accounts with 50,000 domains and
/// a job per account. Planning, per-account reads and a claim stay quick on both backends.
async fn holds_a_migration_of_10000_accounts_and_50000_domains(db: Arc<TestDb>) {
    const ACCOUNTS: usize = 10_000;
    let store = seeded(&db).await;
    let started = std::time::Instant::now();
    let accounts: Vec<AccountRow> =
        (0..ACCOUNTS).map(|n| account_row(&format!("kukka{n:05}"), Some("asiakas@example.fi"))).collect();
    let domains: Vec<DomainRow> = accounts
        .iter()
        .flat_map(|account| {
            (0..5).map(move |d| domain_row(&format!("d{d}.{}", account.main_domain), &account.user))
        })
        .collect();
    let mut tx = store.begin().await.expect("begin");
    tx.insert_accounts(&accounts).await.expect("accounts");
    tx.insert_domains(&domains).await.expect("domains");
    for account in &accounts {
        tx.schedule_job(&new_job(&account.user, 1_000)).await.expect("job");
    }

    tx.commit().await.expect("commit");
    let planned = started.elapsed();

    let started = std::time::Instant::now();
    assert_eq!(store.accounts(MIG).await.expect("accounts").len(), ACCOUNTS);
    assert_eq!(store.domains(MIG).await.expect("domains").len(), 5 * ACCOUNTS);
    let mine = store.domains_of(MIG, "kukka04321").await.expect("domains of");
    assert_eq!(mine.len(), 5);
    assert!(mine.iter().all(|d| d.domain.ends_with(".kukka04321.test")));
    let claimed = store.claim_jobs("w1", 2_000, LONG, 100).await.expect("claim");
    assert_eq!(claimed.len(), 100);
    assert_eq!(store.next_due_at().await.expect("next"), Some(1_000));
    let read = started.elapsed();
    eprintln!(
        "{:?}: planned 10k accounts, 50k domains, 10k jobs in {planned:?}; read back in {read:?}",
        db.backend()
    );
}

async fn plan_documents_are_found_by_source(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut second = migration_row("old1-2027");
    second.created_at += 1;
    let mut tx = store.begin().await.expect("begin");
    tx.insert_migration(&second).await.expect("second migration");
    tx.insert_plan_document(MIG, "old1", 10, r#"{"n":1}"#).await.expect("first plan");
    tx.insert_plan_document("old1-2027", "old1", 20, r#"{"n":2}"#).await.expect("second plan");
    tx.commit().await.expect("commit");

    assert_eq!(store.plan_document(MIG).await.expect("read").as_deref(), Some(r#"{"n":1}"#));
    assert_eq!(store.plan_document("nope").await.expect("read"), None);
    // The newest other plan of the same source: what a new plan is compared with.
    let latest = store.latest_plan_document("old1", "new-one").await.expect("latest");
    assert_eq!(latest, Some(("old1-2027".to_owned(), r#"{"n":2}"#.to_owned())));
    let before = store.latest_plan_document("old1", "old1-2027").await.expect("latest");
    assert_eq!(before.map(|(id, _)| id).as_deref(), Some(MIG));
    assert_eq!(store.latest_plan_document("old2", "x").await.expect("latest"), None);

    let mut tx = store.begin().await.expect("begin");
    let err = tx.insert_plan_document(MIG, "old1", 30, "{}").await.expect_err("a second plan document");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    tx.rollback().await.expect("rollback");
}

/// Two daemons (two pools on one database) with a job each on the same account: only one holds
/// the account's DNS lock; the other gets the holder's job id and expiry. Ending the holder's
/// run (finish, retry or reschedule alike) releases it; an expired lock is taken over.
async fn account_dns_lock_excludes_other_jobs(db: Arc<TestDb>) {
    let (first, second) = (seeded(&db).await, db.store().await);
    let mut tx = first.begin().await.expect("begin");
    tx.insert_account(&account_row("kukka", None)).await.expect("account");
    tx.commit().await.expect("commit");
    schedule(&first, &[("repoint", 100), ("rollback", 100), ("restore", 100)]).await;
    let (_, repoint) = first.claim_jobs("daemon-a", 1_000, LONG, 1).await.expect("claim").pop().expect("one");
    let (_, rollback) =
        second.claim_jobs("daemon-b", 1_000, LONG, 1).await.expect("claim").pop().expect("one");

    assert_eq!(first.lock_account_dns(&repoint, MIG, "kukka").await.expect("lock"), None);
    assert_eq!(first.lock_account_dns(&repoint, MIG, "kukka").await.expect("again"), None, "re-entrant");
    let held = second.lock_account_dns(&rollback, MIG, "kukka").await.expect("try");
    assert_eq!(held, Some(repoint.job_id()));
    let missing = second.lock_account_dns(&rollback, MIG, "nobody").await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");

    // The holder's run ends (here: rescheduled): the lock is free for the other daemon's job.
    let mut tx = first.begin_leased(&repoint).await.expect("lease");
    tx.reschedule_job(&repoint, 5_000).await.expect("reschedule");
    tx.commit().await.expect("commit");
    assert_eq!(second.lock_account_dns(&rollback, MIG, "kukka").await.expect("lock"), None);

    // The lock lasts as long as its job's lease: a holder whose lease expired (its daemon died)
    // loses it to the next job, and its own lease is lost too.
    let (_, restore) =
        first.claim_jobs("daemon-a", 1_000, LONG, 1).await.expect("claim").pop().expect("restore");
    assert_eq!(restore.job_id(), rollback.job_id() + 1);
    let mut tx = second.begin_leased(&rollback).await.expect("lease");
    tx.retry_job(&rollback, 1_000, "boom").await.expect("retry");
    tx.commit().await.expect("commit");
    let (_, dying) =
        second.claim_jobs("daemon-b", 1_000, SHORT, 1).await.expect("claim").pop().expect("rollback");
    assert_eq!(second.lock_account_dns(&dying, MIG, "kukka").await.expect("lock"), None);
    assert_eq!(first.lock_account_dns(&restore, MIG, "kukka").await.expect("held"), Some(dying.job_id()));
    wait_out(&second, &dying).await;
    assert_eq!(first.lock_account_dns(&restore, MIG, "kukka").await.expect("taken over"), None);
    let err = second.lock_account_dns(&dying, MIG, "kukka").await.expect_err("lease lost");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
}

/// The lowering job's query: only domains still to lower (`pending`, `ttl_observed`), whole
/// zones, the first `n` zones by name, never a held account's domains.
async fn domains_to_lower_come_a_few_zones_at_a_time(db: Arc<TestDb>) {
    let store = seeded(&db).await;
    let mut tx = store.begin().await.expect("begin");
    for user in ["aa", "bb", "held"] {
        tx.insert_account(&account_row(user, None)).await.expect("account");
    }
    let in_zone = |domain: &str, user: &str, zone: &str, state: &str| DomainRow {
        zone: zone.to_owned(),
        state: state.to_owned(),
        ..domain_row(domain, user)
    };
    let rows = [
        in_zone("a.test", "aa", "a.test", "pending"),
        in_zone("blog.a.test", "aa", "a.test", "ttl_observed"),
        in_zone("shop.a.test", "bb", "a.test", "ttl_lowered"),
        in_zone("b.test", "bb", "b.test", "pending"),
        in_zone("c.test", "aa", "c.test", "repointed"),
        in_zone("d.test", "held", "d.test", "pending"),
        in_zone("e.test", "bb", "e.test", "pending"),
        in_zone("ext.test", "bb", "ext.test", "external"),
    ];
    tx.insert_domains(&rows).await.expect("domains");
    tx.set_account_state(MIG, "held", "held", r#"{"state":"held"}"#, 2_000).await.expect("hold");
    tx.commit().await.expect("commit");

    let names = |rows: Vec<DomainRow>| rows.into_iter().map(|r| r.domain).collect::<Vec<_>>();
    assert_eq!(
        names(store.domains_to_lower(MIG, 2).await.expect("first")),
        ["a.test", "blog.a.test", "b.test"]
    );
    assert_eq!(
        names(store.domains_to_lower(MIG, 10).await.expect("all")),
        ["a.test", "blog.a.test", "b.test", "e.test"],
        "c.test is past lowering, d.test's account is held, ext.test is not ours"
    );
    let mut tx = store.begin().await.expect("begin");
    for domain in ["a.test", "blog.a.test", "b.test"] {
        tx.set_domain_state(MIG, domain, "ttl_lowered", "{}", 3_000).await.expect("lowered");
    }
    tx.commit().await.expect("commit");
    assert_eq!(names(store.domains_to_lower(MIG, 2).await.expect("next")), ["e.test"]);
}
