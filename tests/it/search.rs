//! Customer service's search (`siirto::search`) against a fresh SQLite file and a fresh
//! PostgreSQL database: each kind of query finds exactly the accounts it names, in every
//! migration, and a database planned before the search terms existed is searchable once a
//! store connects to it.

use std::future::Future;

use siirto::search::{Hit, search};
use siirto::store::{AccountRow, DomainRow, MigrationRow, Store};
use sqlx::{Connection, Executor};

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
    fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } => url,
            TestDb::Postgres(db) => db.url(),
        }
    }

    /// Runs statements on a connection of their own, outside the store: what an older siirto
    /// (or a person) did to the database.
    async fn execute(&self, statements: &[&str]) {
        match self {
            TestDb::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.expect("connect to SQLite");
                for sql in statements {
                    conn.execute(*sql).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
                }
                conn.close().await.expect("close");
            }
            TestDb::Postgres(db) => {
                let mut conn = sqlx::PgConnection::connect(db.url()).await.expect("connect to PostgreSQL");
                for sql in statements {
                    conn.execute(*sql).await.unwrap_or_else(|err| panic!("{sql}: {err}"));
                }
                conn.close().await.expect("close");
            }
        }
    }
}

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("siirto.db").display());
    test(TestDb::Sqlite { _dir: dir, url }).await;
}

async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    // Panics naming the package to install when no PostgreSQL server answers.
    test(TestDb::Postgres(PgDatabase::create().await)).await;
}

/// Runs each listed `async fn(TestDb)` as two tests, `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_backends {
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

on_both_backends!(
    every_kind_of_query_finds_its_account,
    several_words_find_the_names_having_all_of_them,
    results_are_ranked_limited_and_span_migrations,
    a_database_planned_before_the_search_terms_is_searchable,
);

const MIG: &str = "old1-2026";
const LATER: &str = "old1-2027";

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

/// An account `user` whose main domain is `main_domain`, without contract or reseller.
fn account(migration_id: &str, user: &str, main_domain: &str) -> AccountRow {
    AccountRow {
        migration_id: migration_id.to_owned(),
        user: user.to_owned(),
        main_domain: main_domain.to_owned(),
        contact_email: None,
        disk_mb: 100,
        customer_key: None,
        customer_name: None,
        language: None,
        reseller: None,
        reseller_email: None,
        state: "pending".to_owned(),
        data: r#"{"state":"pending"}"#.to_owned(),
        updated_at: 1_000,
    }
}

fn domain(migration_id: &str, name: &str, user: &str) -> DomainRow {
    DomainRow {
        migration_id: migration_id.to_owned(),
        domain: name.to_owned(),
        user: user.to_owned(),
        zone: name.to_owned(),
        state: "pending".to_owned(),
        data: "{}".to_owned(),
        updated_at: 1_000,
    }
}

/// The accounts of migration `migration_id`, as the plan writes them (in batches, with their
/// domains): a contract customer with a reseller, an IDN, a second customer whose name starts
/// like the first one's, and one nobody searches for.
fn accounts(migration_id: &str) -> (Vec<AccountRow>, Vec<DomainRow>) {
    let accounts = vec![
        AccountRow {
            contact_email: Some("Matti.Virtanen@Example.FI".to_owned()),
            customer_key: Some("customer-1234".to_owned()),
            customer_name: Some("Matti Virtanen".to_owned()),
            reseller: Some("resel1".to_owned()),
            ..account(migration_id, "kukka", "example.fi")
        },
        AccountRow {
            contact_email: Some("info@xn--iti-pla.fi".to_owned()),
            customer_key: Some("contact-info@xn--iti-pla.fi".to_owned()),
            ..account(migration_id, "aiti", "xn--iti-pla.fi")
        },
        AccountRow {
            customer_key: Some("customer-C77".to_owned()),
            customer_name: Some("Virtala Oy".to_owned()),
            ..account(migration_id, "kauppa", "shop.example.fi")
        },
        AccountRow {
            contact_email: Some("liisa@muu.test".to_owned()),
            customer_key: Some("customer-999".to_owned()),
            customer_name: Some("Äijälä-Mäkinen, Liisa".to_owned()),
            ..account(migration_id, "muu", "muu.test")
        },
    ];
    let domains = vec![
        domain(migration_id, "example.fi", "kukka"),
        domain(migration_id, "blog.example.fi", "kukka"),
        domain(migration_id, "xn--iti-pla.fi", "aiti"),
        domain(migration_id, "shop.example.fi", "kauppa"),
        domain(migration_id, "muu.test", "muu"),
    ];
    (accounts, domains)
}

/// A store with migration `MIG` and its [`accounts`].
async fn seeded(db: &TestDb) -> Store {
    let store = Store::connect(db.url()).await.expect("connect the store");
    plan(&store, MIG).await;
    store
}

/// Records migration `id` with its [`accounts`].
async fn plan(store: &Store, id: &str) {
    let (accounts, domains) = accounts(id);
    let mut tx = store.begin().await.expect("begin");
    tx.insert_migration(&migration_row(id)).await.expect("migration");
    tx.insert_accounts(&accounts).await.expect("accounts");
    tx.insert_domains(&domains).await.expect("domains");
    tx.commit().await.expect("commit");
}

/// The accounts `query` finds, as `migration/user`, in the order found.
async fn found(store: &Store, query: &str) -> Vec<String> {
    found_at_most(store, query, 50).await
}

async fn found_at_most(store: &Store, query: &str, limit: usize) -> Vec<String> {
    hits(store, query, limit).await.iter().map(|h| format!("{}/{}", h.migration_id, h.user)).collect()
}

async fn hits(store: &Store, query: &str, limit: usize) -> Vec<Hit> {
    search(store, query, limit).await.unwrap_or_else(|err| panic!("search {query:?}: {err:#}"))
}

/// In migration `MIG`.
fn ours(users: &[&str]) -> Vec<String> {
    users.iter().map(|user| format!("{MIG}/{user}")).collect()
}

async fn every_kind_of_query_finds_its_account(db: TestDb) {
    let store = seeded(&db).await;
    let cases: &[(&str, &[&str])] = &[
        // Domains: the name, a www. name, a subdomain, a URL, an unknown subdomain of a known one;
        // the owner of a parent domain (who holds the zone) after the owner of the name.
        ("example.fi", &["kukka"]),
        ("blog.example.fi", &["kukka"]),
        ("www.example.fi", &["kukka"]),
        ("WWW.Example.FI.", &["kukka"]),
        ("https://shop.example.fi:8443/cart?x=1", &["kauppa", "kukka"]),
        ("shop.example.fi", &["kauppa", "kukka"]),
        // The nearer parent first.
        ("www.shop.example.fi", &["kauppa", "kukka"]),
        ("kuvat.muu.test", &["muu"]),
        // IDNs, typed in Unicode or punycode.
        ("äiti.fi", &["aiti"]),
        ("www.ÄITI.fi", &["aiti"]),
        ("xn--iti-pla.fi", &["aiti"]),
        // User names, resellers.
        ("kukka", &["kukka"]),
        ("KAUPPA", &["kauppa"]),
        ("resel1", &["kukka"]),
        // Contact addresses, exact and in any case, an IDN's in either form.
        ("matti.virtanen@example.fi", &["kukka"]),
        ("mailto:MATTI.VIRTANEN@EXAMPLE.FI", &["kukka"]),
        ("info@äiti.fi", &["aiti"]),
        ("info@xn--iti-pla.fi", &["aiti"]),
        // Contract ids.
        ("1234", &["kukka"]),
        ("customer-1234", &["kukka"]),
        ("c77", &["kauppa"]),
        ("999", &["muu"]),
        // Customer names: any word, a prefix of three characters or more, any case.
        ("virtanen", &["kukka"]),
        ("Virta", &["kauppa", "kukka"]),
        ("virtal", &["kauppa"]),
        ("matti", &["kukka"]),
        ("liisa", &["muu"]),
        ("mäkinen", &["muu"]),
        ("ÄIJÄ", &["muu"]),
        ("Äijälä-Mäkinen", &["muu"]),
        // Nothing.
        ("", &[]),
        ("vi", &[]),
        ("nothing.example.com", &[]),
        ("example.fi.evil.test", &[]),
        ("example", &[]),
        ("matti.virtanen@example.com", &[]),
        ("12345", &[]),
        ("customer-123", &[]),
        ("zzz", &[]),
        ("' ; DROP TABLE accounts; --", &[]),
        ("%", &[]),
        ("_", &[]),
    ];
    for (query, users) in cases {
        assert_eq!(found(&store, query).await, ours(users), "query {query:?}");
    }
    // The junk above dropped nothing.
    assert_eq!(store.accounts(MIG).await.expect("accounts").len(), 4);

    // A hit carries the account and what matched.
    let hit = hits(&store, "virta", 50).await.into_iter().find(|h| h.user == "kukka").expect("kukka");
    assert_eq!(hit.main_domain, "example.fi");
    assert_eq!(hit.customer_key.as_deref(), Some("customer-1234"));
    assert_eq!(hit.customer_name.as_deref(), Some("Matti Virtanen"));
    assert_eq!(hit.contact_email.as_deref(), Some("Matti.Virtanen@Example.FI"));
    assert_eq!(hit.reseller.as_deref(), Some("resel1"));
    assert_eq!(hit.state, "pending");
    let matched: Vec<(&str, &str)> =
        hit.matched.iter().map(|m| (m.field.as_str(), m.term.as_str())).collect();
    assert_eq!(matched, [("customer", "virtanen")]);
    let json = serde_json::to_value(&hit).expect("json");
    assert_eq!(json["matched"][0]["field"], "customer");
}

async fn several_words_find_the_names_having_all_of_them(db: TestDb) {
    let store = seeded(&db).await;
    let cases: &[(&str, &[&str])] = &[
        ("Matti Virtanen", &["kukka"]),
        ("virtanen matti", &["kukka"]),
        ("matti virt", &["kukka"]),
        ("virtala oy", &["kauppa"]),
        // A word of two characters counts only in the whole name typed in order.
        ("virt oy", &["kauppa", "kukka"]),
        ("VIRTALA, Oy", &["kauppa"]),
        ("liisa äijälä", &["muu"]),
        ("Mäkinen, Liisa", &["muu"]),
        // Every word cut short: the words' ranges intersected.
        ("mat virt", &["kukka"]),
        ("äij mäk lii", &["muu"]),
        // Three words: a pair of them, the name checked for the third.
        ("liisa mäkinen äijälä", &["muu"]),
        ("liisa mäkinen virtanen", &[]),
        ("matti virtanen kauppa", &[]),
        // Every word must match: no Matti is a Virtala.
        ("matti virtala", &[]),
        ("matti nobody", &[]),
    ];
    for (query, users) in cases {
        assert_eq!(found(&store, query).await, ours(users), "query {query:?}");
    }
}

async fn results_are_ranked_limited_and_span_migrations(db: TestDb) {
    let store = seeded(&db).await;
    plan(&store, LATER).await;
    let both = |user: &str| vec![format!("{MIG}/{user}"), format!("{LATER}/{user}")];
    assert_eq!(found(&store, "kukka").await, both("kukka"));
    assert_eq!(found(&store, "äiti.fi").await, both("aiti"));
    // Exact matches before prefix matches: user `virta` equals the query, the names of the
    // others only start with it.
    let mut tx = store.begin().await.expect("begin");
    tx.insert_account(&account(LATER, "virta", "virta.test")).await.expect("account");
    tx.commit().await.expect("commit");
    let later = |user: &str| format!("{LATER}/{user}");
    let prefixed = [ours(&["kauppa", "kukka"]), vec![later("kauppa"), later("kukka")]].concat();
    assert_eq!(found(&store, "virta").await, [vec![later("virta")], prefixed].concat());
    // The nearer parent domain first, in every migration; then the next one up.
    assert_eq!(found(&store, "www.shop.example.fi").await, [both("kauppa"), both("kukka")].concat());
    // One hit per account, however many terms matched.
    let hit = hits(&store, "example.fi", 50).await;
    assert_eq!(hit.len(), 2, "{hit:?}");
    // The limit.
    assert_eq!(found_at_most(&store, "virta", 2).await, [later("virta"), format!("{MIG}/kauppa")]);
    assert_eq!(hits(&store, "virta", 0).await.len(), 0);
}

async fn a_database_planned_before_the_search_terms_is_searchable(db: TestDb) {
    let store = seeded(&db).await;
    store.close().await;
    // The database as siirto left it before migration 0016: no search terms, and the migration
    // not applied.
    db.execute(&[
        "DROP TABLE search_terms",
        "DROP TABLE search_terms_backfill",
        "DELETE FROM _sqlx_migrations WHERE version = 16",
    ])
    .await;
    // Connecting applies 0016, which lists the migrations there are, and writes their terms.
    let store = Store::connect(db.url()).await.expect("connect the store");
    assert_eq!(found(&store, "www.example.fi").await, ours(&["kukka"]));
    assert_eq!(found(&store, "virta").await, ours(&["kauppa", "kukka"]));
    assert_eq!(found(&store, "mäkinen").await, ours(&["muu"]));
    assert_eq!(found(&store, "1234").await, ours(&["kukka"]));
    assert_eq!(found(&store, "matti.virtanen@example.fi").await, ours(&["kukka"]));
    // Once: a second store finds nothing left to do, and a migration planned now is searchable
    // at once.
    let again = Store::connect(db.url()).await.expect("connect again");
    plan(&again, LATER).await;
    assert_eq!(found(&again, "kukka").await, [format!("{MIG}/kukka"), format!("{LATER}/kukka")]);
}
