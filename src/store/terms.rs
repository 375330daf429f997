//! The search terms: what customer service may type to find an account (its user name, contact
//! address, customer name, the words of it and pairs of them, contract, reseller and domains),
//! written in the transaction that writes the account or domain, and read by probes that are each
//! an exact or a prefix range lookup of the `search_terms` key, never a scan. `crate::search`
//! turns a query into probes and the hits into accounts.
//!
//! Terms are lowercased here, in Rust, and nowhere in SQL: SQLite's `lower()` knows only ASCII,
//! and a term must be spelled the same whether the plan wrote it, the backfill of migration 0016
//! wrote it, or a query asks for it.

use std::collections::BTreeSet;

use crate::store::{AccountRow, DomainRow, INSERT_CHUNK, Store, StoreError, Tx, placeholders, select};

/// Terms longer than this many characters are cut to it (as queries are), which keeps every key
/// well under PostgreSQL's limit for a B-tree entry.
pub const MAX_TERM_CHARS: usize = 200;

/// Terms per multi-row INSERT: four columns each, so about as many bound values as the account
/// batches' 100 rows of 13.
const TERM_CHUNK: usize = 250;

/// The words of a name paired in [`TermField::NamePair`] terms: at most 4 × 3 = 12 pairs.
pub const MAX_PAIR_WORDS: usize = 4;

/// The last code point there is: `prefix` followed by it sorts after every term starting with
/// `prefix`, byte-wise (SQLite's BINARY, PostgreSQL's "C"), which makes a prefix a key range.
const PAST_EVERY_SUFFIX: char = '\u{10FFFF}';

/// What a term says about its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TermField {
    /// The cPanel user name.
    User,
    /// The contact address.
    Email,
    /// The customer's name: its words joined by single spaces, and each word of two characters
    /// or more on its own.
    Customer,
    /// Two words of the customer's name, in either order, joined by a space (of its first
    /// [`MAX_PAIR_WORDS`] words of two characters or more): "virtanen matti" for Matti Virtanen.
    /// What a query of several words is looked up by, one small key range instead of the
    /// intersection of a large one per word.
    NamePair,
    /// The contract's customer key, `customer-<id>` (keys made from a contact address are not
    /// terms: the address is).
    Contract,
    /// The reseller the account belongs to.
    Reseller,
    /// A domain of the account (as stored: ASCII, IDNs in punycode), its main domain included.
    Domain,
}

impl TermField {
    /// The name stored in `search_terms.field`.
    pub fn as_str(self) -> &'static str {
        match self {
            TermField::User => "user",
            TermField::Email => "email",
            TermField::Customer => "customer",
            TermField::NamePair => "name_pair",
            TermField::Contract => "contract",
            TermField::Reseller => "reseller",
            TermField::Domain => "domain",
        }
    }
}

/// How a probe compares its term with the stored ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// The stored term equals the probe's.
    Exact,
    /// The stored term starts with the probe's.
    Prefix,
}

/// One lookup of [`Store::search_terms`]: terms of one field, equal to or starting with `term`
/// (which is compared as given: callers normalize it with [`normalized_term`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The field looked in.
    pub field: TermField,
    /// The term, or the prefix.
    pub term: String,
    /// Exact or prefix.
    pub kind: ProbeKind,
}

impl Probe {
    /// A probe for terms equal to `term`.
    pub fn exact(field: TermField, term: impl Into<String>) -> Probe {
        Probe { field, term: term.into(), kind: ProbeKind::Exact }
    }

    /// A probe for terms starting with `term`.
    pub fn prefix(field: TermField, term: impl Into<String>) -> Probe {
        Probe { field, term: term.into(), kind: ProbeKind::Prefix }
    }
}

/// A stored term a probe found, and its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermHit {
    /// The index of the probe in the slice given to [`Store::search_terms`].
    pub probe: usize,
    /// The probe's field.
    pub field: TermField,
    /// The stored term.
    pub term: String,
    /// The account's migration.
    pub migration_id: String,
    /// The account's user name.
    pub user: String,
}

/// `text` as a term: trimmed, lowercased (Unicode), cut to [`MAX_TERM_CHARS`] characters.
pub fn normalized_term(text: &str) -> String {
    text.trim().to_lowercase().chars().take(MAX_TERM_CHARS).collect()
}

/// The words of a name, lowercased: the runs of letters and digits between anything else
/// (spaces, punctuation), so "Virtanen, Matti (Oy)" is `virtanen`, `matti`, `oy`.
pub fn name_words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The term of a whole customer name: its [`name_words`] joined by single spaces.
pub fn name_term(name: &str) -> String {
    normalized_term(&name_words(name).join(" "))
}

/// One row of `search_terms`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Term {
    field: TermField,
    term: String,
    migration_id: String,
    user: String,
}

/// The terms of accounts: user, contact address, customer name and its words, contract key,
/// reseller and main domain (which is usually among its domains too; the key takes it once).
fn account_terms(rows: &[AccountRow]) -> Vec<Term> {
    let mut terms = BTreeSet::new();
    for row in rows {
        let mut add = |field: TermField, text: &str| {
            let term = normalized_term(text);
            if !term.is_empty() {
                terms.insert(Term {
                    field,
                    term,
                    migration_id: row.migration_id.clone(),
                    user: row.user.clone(),
                });
            }
        };
        add(TermField::User, &row.user);
        add(TermField::Domain, &row.main_domain);
        if let Some(email) = &row.contact_email {
            add(TermField::Email, email);
        }
        if let Some(name) = &row.customer_name {
            add(TermField::Customer, &name_term(name));
            let mut words: Vec<String> = Vec::new();
            for word in name_words(name).into_iter().filter(|w| w.chars().count() >= 2) {
                add(TermField::Customer, &word);
                if words.len() < MAX_PAIR_WORDS && !words.contains(&word) {
                    words.push(word);
                }
            }
            for first in &words {
                for second in words.iter().filter(|w| *w != first) {
                    add(TermField::NamePair, &format!("{first} {second}"));
                }
            }
        }
        if let Some(key) = row.customer_key.as_deref().filter(|k| k.starts_with("customer-")) {
            add(TermField::Contract, key);
        }
        if let Some(reseller) = &row.reseller {
            add(TermField::Reseller, reseller);
        }
    }
    terms.into_iter().collect()
}

/// The terms of domains: each domain, for its account.
fn domain_terms(rows: &[DomainRow]) -> Vec<Term> {
    let terms: BTreeSet<Term> = rows
        .iter()
        .map(|row| Term {
            field: TermField::Domain,
            term: normalized_term(&row.domain),
            migration_id: row.migration_id.clone(),
            user: row.user.clone(),
        })
        .collect();
    terms.into_iter().collect()
}

impl Store {
    /// The stored terms each probe finds, at most `limit` per probe, each with its account; the
    /// rows of one probe in key order (term, migration, user). One statement for all the probes,
    /// each of them an exact or range lookup of the key. A probe with an empty term finds nothing.
    pub async fn search_terms(&self, probes: &[Probe], limit: usize) -> Result<Vec<TermHit>, StoreError> {
        let limit = limit.min(i64::MAX as usize);
        let mut parts = Vec::new();
        let mut values: Vec<String> = Vec::new();
        for (index, probe) in probes.iter().enumerate() {
            if probe.term.is_empty() || limit == 0 {
                continue;
            }
            values.push(probe.field.as_str().to_owned());
            let field = values.len();
            let term = match probe.kind {
                ProbeKind::Exact => {
                    values.push(probe.term.clone());
                    format!("term = ${}", values.len())
                }
                ProbeKind::Prefix => {
                    values.push(probe.term.clone());
                    values.push(format!("{}{PAST_EVERY_SUFFIX}", probe.term));
                    format!("term >= ${} AND term < ${}", values.len() - 1, values.len())
                }
            };
            // The numbers formatted in are the probe's index and the limit, never input.
            parts.push(format!(
                "SELECT * FROM (SELECT CAST({index} AS BIGINT) AS probe, term, migration_id, user_name \
                 FROM search_terms WHERE field = ${field} AND {term} \
                 ORDER BY field, term, migration_id, user_name LIMIT {limit}) AS p{index}"
            ));
        }
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let sql = parts.join(" UNION ALL ");
        let mut query = sqlx::query_as::<_, (i64, String, String, String)>(&sql);
        for value in &values {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(probe, term, migration_id, user)| {
                let probe = usize::try_from(probe).ok()?;
                Some(TermHit { probe, field: probes.get(probe)?.field, term, migration_id, user })
            })
            .collect())
    }

    /// The accounts (migration id, user name) whose customer name has a word starting with each
    /// of `prefixes`, in any order, by migration and user, at most `limit`: a search of several
    /// words. One statement, the intersection of one key range per prefix, so an account is found
    /// however many names share one of its words.
    pub async fn search_customer_words(
        &self,
        prefixes: &[String],
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let prefixes: Vec<&String> = prefixes.iter().filter(|p| !p.is_empty()).collect();
        if prefixes.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let parts: Vec<String> = (0..prefixes.len())
            .map(|n| {
                format!(
                    "SELECT migration_id, user_name FROM search_terms \
                     WHERE field = ${} AND term >= ${} AND term < ${}",
                    3 * n + 1,
                    3 * n + 2,
                    3 * n + 3
                )
            })
            .collect();
        let limit = limit.min(i64::MAX as usize);
        let sql = format!("{} ORDER BY migration_id, user_name LIMIT {limit}", parts.join(" INTERSECT "));
        let mut query = sqlx::query_as::<_, (String, String)>(&sql);
        for prefix in prefixes {
            query = query.bind(TermField::Customer.as_str()).bind(prefix.as_str());
            query = query.bind(format!("{prefix}{PAST_EVERY_SUFFIX}"));
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The accounts with these keys (migration id, user name), any number of migrations in one
    /// statement (a lookup of the primary key per account); a key without an account is left out.
    /// By migration, then user.
    pub async fn accounts_by_key(&self, keys: &[(String, String)]) -> Result<Vec<AccountRow>, StoreError> {
        let mut rows: Vec<AccountRow> = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(INSERT_CHUNK) {
            let wanted: Vec<String> = (0..chunk.len())
                .map(|n| format!("(migration_id = ${} AND user_name = ${})", 2 * n + 1, 2 * n + 2))
                .collect();
            let sql = format!("SELECT * FROM accounts WHERE {}", wanted.join(" OR "));
            let mut query = sqlx::query_as(&sql);
            for (migration_id, user) in chunk {
                query = query.bind(migration_id).bind(user);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        rows.sort_by(|a, b| (&a.migration_id, &a.user).cmp(&(&b.migration_id, &b.user)));
        Ok(rows)
    }

    /// Writes the terms of the migrations recorded before the store had search terms (listed by
    /// migration 0016 in `search_terms_backfill`), one migration per transaction. A migration is
    /// taken off the list in the transaction that writes its terms, so of two daemons starting
    /// at once on one PostgreSQL database one does it and the other finds it done.
    pub(super) async fn backfill_search_terms(&self) -> Result<(), StoreError> {
        let pending: Vec<String> =
            sqlx::query_scalar("SELECT migration_id FROM search_terms_backfill ORDER BY migration_id")
                .fetch_all(&self.pool)
                .await?;
        for migration_id in pending {
            let mut tx = self.begin().await?;
            let taken = sqlx::query("DELETE FROM search_terms_backfill WHERE migration_id = $1")
                .bind(&migration_id)
                .execute(&mut *tx.tx)
                .await?;
            if taken.rows_affected() == 0 {
                tx.rollback().await?;
                continue;
            }
            let accounts: Vec<AccountRow> =
                select(&mut *tx.tx, "SELECT * FROM accounts WHERE migration_id = $1", &[&migration_id])
                    .await?;
            let domains: Vec<DomainRow> =
                select(&mut *tx.tx, "SELECT * FROM domains WHERE migration_id = $1", &[&migration_id])
                    .await?;
            tx.insert_search_terms(&account_terms(&accounts)).await?;
            tx.insert_search_terms(&domain_terms(&domains)).await?;
            tx.commit().await?;
            tracing::info!(migration = %migration_id, "wrote the search terms of an earlier migration");
        }
        Ok(())
    }
}

impl Tx<'_> {
    /// Writes the search terms of accounts just inserted.
    pub(super) async fn insert_account_terms(&mut self, rows: &[AccountRow]) -> Result<(), StoreError> {
        self.insert_search_terms(&account_terms(rows)).await
    }

    /// Writes the search terms of domains just inserted.
    pub(super) async fn insert_domain_terms(&mut self, rows: &[DomainRow]) -> Result<(), StoreError> {
        self.insert_search_terms(&domain_terms(rows)).await
    }

    /// Writes terms in multi-row INSERTs; a term already there (an account's main domain, met
    /// again as a domain) stays as it is.
    async fn insert_search_terms(&mut self, terms: &[Term]) -> Result<(), StoreError> {
        for chunk in terms.chunks(TERM_CHUNK) {
            let sql = format!(
                "INSERT INTO search_terms (field, term, migration_id, user_name) VALUES {} \
                 ON CONFLICT (field, term, migration_id, user_name) DO NOTHING",
                placeholders(chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for term in chunk {
                query = query
                    .bind(term.field.as_str())
                    .bind(&term.term)
                    .bind(&term.migration_id)
                    .bind(&term.user);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountRow {
        AccountRow {
            migration_id: "m".to_owned(),
            user: "Kukka".to_owned(),
            main_domain: "kukka.fi".to_owned(),
            contact_email: Some("Matti.Virtanen@Example.FI".to_owned()),
            disk_mb: 1,
            customer_key: Some("customer-C1234".to_owned()),
            customer_name: Some("  Äijälä-Virtanen, Matti  K. (Oy) ".to_owned()),
            language: None,
            reseller: Some("Jälleen".to_owned()),
            reseller_email: None,
            state: "pending".to_owned(),
            data: "{}".to_owned(),
            updated_at: 0,
        }
    }

    #[test]
    fn an_account_has_a_term_for_each_thing_customer_service_may_type() {
        let terms: Vec<(&str, String)> =
            account_terms(&[account()]).into_iter().map(|t| (t.field.as_str(), t.term)).collect();
        let expected = [
            ("user", "kukka"),
            ("email", "matti.virtanen@example.fi"),
            ("customer", "matti"),
            ("customer", "oy"),
            ("customer", "virtanen"),
            ("customer", "äijälä"),
            ("customer", "äijälä virtanen matti k oy"),
            ("name_pair", "äijälä virtanen"),
            ("name_pair", "äijälä matti"),
            ("name_pair", "äijälä oy"),
            ("name_pair", "virtanen äijälä"),
            ("name_pair", "virtanen matti"),
            ("name_pair", "virtanen oy"),
            ("name_pair", "matti äijälä"),
            ("name_pair", "matti virtanen"),
            ("name_pair", "matti oy"),
            ("name_pair", "oy äijälä"),
            ("name_pair", "oy virtanen"),
            ("name_pair", "oy matti"),
            ("contract", "customer-c1234"),
            ("reseller", "jälleen"),
            ("domain", "kukka.fi"),
        ];
        // "k" is in the full name but no word of its own: words have two characters or more.
        let mut expected: Vec<(&str, String)> = expected.iter().map(|(f, t)| (*f, (*t).to_owned())).collect();
        let mut got = terms;
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
    }

    #[test]
    fn contact_keys_and_missing_values_make_no_terms() {
        let row = AccountRow {
            contact_email: None,
            customer_key: Some("contact-a@b.fi".to_owned()),
            customer_name: Some(" - ".to_owned()),
            reseller: None,
            ..account()
        };
        let fields: Vec<&str> = account_terms(&[row]).iter().map(|t| t.field.as_str()).collect();
        assert_eq!(fields, ["user", "domain"]);
    }

    #[test]
    fn long_terms_are_cut() {
        let long = "a".repeat(1000);
        assert_eq!(normalized_term(&long).chars().count(), MAX_TERM_CHARS);
    }
}
