//! PostgreSQL for tests: a fresh database per test on the server at 127.0.0.1:5432, dropped again
//! when the guard drops.
//!
//! The server is the machine's own (trust auth); `tests/run.sh` installs Debian's `postgresql`
//! and starts it where none runs. `SIIRTO_TEST_PG_URL` points the tests at another server (an
//! admin URL whose user may create databases).

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

/// The admin URLs tried in order when `SIIRTO_TEST_PG_URL` is not set.
const DEFAULT_ADMIN_URLS: [&str; 2] =
    ["postgres://postgres@127.0.0.1:5432/postgres", "postgres://root@127.0.0.1:5432/postgres"];

/// A database of its own for one test. Dropping it drops the database, ending any connection
/// still open to it.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates a database `siirto_test_<random>`. Panics, naming what to install, if no
    /// PostgreSQL server answers.
    pub async fn create() -> PgDatabase {
        let (admin_url, mut admin) = connect_admin().await;
        let name = format!("siirto_test_{:016x}", rand::random::<u64>());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|err| panic!("creating test database {name}: {err}"));
        let _ = admin.close().await;
        let url = replace_database(&admin_url, &name);
        PgDatabase { admin_url, name, url }
    }

    /// The URL of the test database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime, which must not be blocked on: do the cleanup on
        // a thread of its own with a small runtime, and wait for it so nothing is left behind.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cleanup runtime");
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
                admin.close().await
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test database {}: {err}", self.name),
            Err(_) => eprintln!("cleanup of test database {} panicked", self.name),
        }
    }
}

async fn connect_admin() -> (String, PgConnection) {
    let candidates: Vec<String> = match std::env::var("SIIRTO_TEST_PG_URL") {
        Ok(url) => vec![url],
        Err(_) => DEFAULT_ADMIN_URLS.iter().map(|url| url.to_string()).collect(),
    };
    let mut errors = Vec::new();
    for url in &candidates {
        let attempt = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url));
        match attempt.await {
            Ok(Ok(conn)) => return (url.clone(), conn),
            Ok(Err(err)) => errors.push(format!("{}: {err}", redact(url))),
            Err(_) => errors.push(format!("{}: timed out", redact(url))),
        }
    }
    panic!(
        "PostgreSQL is not reachable on 127.0.0.1:5432 (tried {}). \
         `tests/run.sh` installs Debian's `postgresql` package and starts it \
         (apt-get install postgresql, then pg_ctlcluster VERSION main start); \
         or set SIIRTO_TEST_PG_URL to an admin URL.",
        errors.join("; ")
    );
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// The admin URL with its database path replaced by `name` (the query string is kept).
fn replace_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}
