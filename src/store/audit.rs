//! The event log's hash chain: `siirto audit verify`.
//!
//! Every event gets, when its transaction commits, its place in its migration's chain
//! (`chain_seq`) and a hash: SHA-256 over the previous event's hash and its own content
//! (migration, account, domain, kind, detail, actor, time). `event_chain` keeps each
//! migration's last place and hash. Recomputing the chain from the first row finds an edited
//! row (its own hash no longer matches), a removed or reordered row (the next one no longer
//! follows), and a cut-off tail (the chain's head no longer matches the last row). Whoever can
//! rewrite the database can also recompute every hash after the row they edit; the head hash
//! [`ChainReport::head`] prints is what to keep elsewhere (a ticket, the operators' log) to
//! catch that too.
//!
//! Chaining at commit keeps the chain in commit order, which is the order readers see, and
//! takes the chain row as the transaction's last lock: a transaction holding it waits for
//! nothing else, so it cannot be part of a deadlock.

use sha2::{Digest, Sha256};

use super::{EventRow, NewEvent, Store, StoreError, Tx, select};

/// How many rows one read of [`Store::verify_chain`] takes.
const VERIFY_PAGE: i64 = 5000;

/// The hash of an event whose predecessor in its migration's chain has hash `previous` (empty
/// before the first event): hex SHA-256 over the JSON array of the previous hash and the
/// event's fields, so no two different contents share an encoding.
pub fn event_hash(previous: &str, e: &NewEvent) -> String {
    let content =
        serde_json::json!([previous, e.migration_id, e.account, e.domain, e.kind, e.detail, e.actor, e.at]);
    hex::encode(Sha256::digest(content.to_string().as_bytes()))
}

/// What [`Store::verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The migration.
    pub migration: String,
    /// The rows checked.
    pub rows: u64,
    /// The last row's hash (what to keep elsewhere), when there are rows.
    pub head: Option<String>,
    /// The first row that does not match, and how, if any.
    pub broken: Option<ChainBreak>,
}

/// Where and how a chain does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The event id of the first row that does not match (`None` when the rows all match but
    /// the chain's recorded head does not: rows were cut off the end).
    pub event: Option<i64>,
    /// Its place in the chain.
    pub seq: Option<i64>,
    /// What is wrong, in words.
    pub reason: String,
}

/// An event as the chain covers it.
#[derive(sqlx::FromRow)]
struct ChainedRow {
    id: i64,
    chain_seq: i64,
    account: Option<String>,
    domain: Option<String>,
    kind: String,
    detail: String,
    actor: String,
    at: i64,
    hash: String,
}

impl Store {
    /// Recomputes a migration's hash chain from its first row and names the first row that does
    /// not match.
    pub async fn verify_chain(&self, migration_id: &str) -> Result<ChainReport, StoreError> {
        let mut report =
            ChainReport { migration: migration_id.to_owned(), rows: 0, head: None, broken: None };
        let unchained: Vec<EventRow> = select(
            &self.pool,
            "SELECT * FROM events WHERE migration_id = $1 AND hash IS NULL LIMIT 1",
            &[migration_id],
        )
        .await?;
        if let Some(row) = unchained.first() {
            report.broken = Some(ChainBreak {
                event: Some(row.id),
                seq: None,
                reason: "it has no place in the chain (its hash was removed)".to_owned(),
            });
            return Ok(report);
        }
        let mut previous = String::new();
        let mut expected_seq = 1_i64;
        loop {
            let rows: Vec<ChainedRow> = sqlx::query_as(
                "SELECT id, chain_seq, account, domain, kind, detail, actor, at, hash FROM events \
                     WHERE migration_id = $1 AND chain_seq >= $2 ORDER BY chain_seq LIMIT $3",
            )
            .bind(migration_id)
            .bind(expected_seq)
            .bind(VERIFY_PAGE)
            .fetch_all(&self.pool)
            .await?;
            let page = rows.len();
            for ChainedRow { id, chain_seq: seq, account, domain, kind, detail, actor, at, hash } in rows {
                if seq != expected_seq {
                    report.broken = Some(ChainBreak {
                        event: Some(id),
                        seq: Some(seq),
                        reason: format!("place {expected_seq} of the chain is missing before it"),
                    });
                    return Ok(report);
                }
                let event = NewEvent {
                    migration_id: migration_id.to_owned(),
                    account,
                    domain,
                    kind,
                    detail,
                    actor,
                    at,
                };
                let computed = event_hash(&previous, &event);
                if computed != hash {
                    report.broken = Some(ChainBreak {
                        event: Some(id),
                        seq: Some(seq),
                        reason: if seq == 1 {
                            "its content does not match its hash".to_owned()
                        } else {
                            "its content, or the row before it, does not match its hash".to_owned()
                        },
                    });
                    return Ok(report);
                }
                report.rows += 1;
                previous = hash;
                expected_seq += 1;
            }
            if (page as i64) < VERIFY_PAGE {
                break;
            }
        }
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT last_seq, last_hash FROM event_chain WHERE migration_id = $1")
                .bind(migration_id)
                .fetch_optional(&self.pool)
                .await?;
        let (last_seq, last_hash) = head.unwrap_or((0, String::new()));
        if last_seq != expected_seq - 1 || last_hash != previous {
            report.broken = Some(ChainBreak {
                event: None,
                seq: Some(last_seq),
                reason: format!(
                    "the chain was recorded up to place {last_seq}, but its rows end at place {}",
                    expected_seq - 1
                ),
            });
            return Ok(report);
        }
        report.head = (!previous.is_empty()).then_some(previous);
        Ok(report)
    }

    /// Chains the events written before the chain existed (a store from an earlier version),
    /// once, in id order.
    pub(super) async fn chain_earlier_events(&self) -> Result<(), StoreError> {
        let pending: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT migration_id FROM events WHERE hash IS NULL ORDER BY migration_id",
        )
        .fetch_all(&self.pool)
        .await?;
        for migration_id in pending {
            let mut tx = self.begin().await?;
            let rows: Vec<EventRow> = select(
                &mut *tx.tx,
                "SELECT * FROM events WHERE migration_id = $1 AND hash IS NULL ORDER BY id",
                &[&migration_id],
            )
            .await?;
            tx.chained.extend(rows.into_iter().map(|row| {
                let event = NewEvent {
                    migration_id: row.migration_id,
                    account: row.account,
                    domain: row.domain,
                    kind: row.kind,
                    detail: row.detail,
                    actor: row.actor,
                    at: row.at,
                };
                (row.id, event)
            }));
            tx.commit().await?;
            tracing::info!(migration = %migration_id, "chained the events of an earlier version's log");
        }
        Ok(())
    }
}

impl Tx<'_> {
    /// Gives the events this transaction appended their places and hashes, migration by
    /// migration (in name order, so two transactions take chain rows in the same order).
    pub(super) async fn chain_events(&mut self) -> Result<(), StoreError> {
        if self.chained.is_empty() {
            return Ok(());
        }
        let mut events = std::mem::take(&mut self.chained);
        events.sort_by(|(a_id, a), (b_id, b)| a.migration_id.cmp(&b.migration_id).then(a_id.cmp(b_id)));
        let mut start = 0;
        while start < events.len() {
            let migration_id = events[start].1.migration_id.clone();
            let end =
                start + events[start..].iter().take_while(|(_, e)| e.migration_id == migration_id).count();
            // The upsert takes (and on PostgreSQL locks until commit) the migration's chain row.
            let (mut seq, mut hash): (i64, String) = sqlx::query_as(
                "INSERT INTO event_chain (migration_id, last_seq, last_hash) VALUES ($1, 0, '') \
                 ON CONFLICT (migration_id) DO UPDATE SET last_seq = event_chain.last_seq \
                 RETURNING last_seq, last_hash",
            )
            .bind(&migration_id)
            .fetch_one(&mut *self.tx)
            .await?;
            for (id, event) in &events[start..end] {
                seq += 1;
                hash = event_hash(&hash, event);
                sqlx::query("UPDATE events SET chain_seq = $1, hash = $2 WHERE id = $3")
                    .bind(seq)
                    .bind(&hash)
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await?;
            }
            sqlx::query("UPDATE event_chain SET last_seq = $2, last_hash = $3 WHERE migration_id = $1")
                .bind(&migration_id)
                .bind(seq)
                .bind(&hash)
                .execute(&mut *self.tx)
                .await?;
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(detail: &str) -> NewEvent {
        NewEvent {
            migration_id: "m".into(),
            account: Some("alice".into()),
            domain: None,
            kind: "k".into(),
            detail: detail.into(),
            actor: "siirto".into(),
            at: 1,
        }
    }

    #[test]
    fn a_hash_covers_the_previous_hash_and_every_field() {
        let base = event_hash("", &event("{}"));
        assert_eq!(base.len(), 64);
        assert_eq!(base, event_hash("", &event("{}")));
        assert_ne!(base, event_hash("00", &event("{}")));
        assert_ne!(base, event_hash("", &event("{ }")));
        let mut moved = event("{}");
        moved.account = None;
        moved.domain = Some("alice".into());
        assert_ne!(base, event_hash("", &moved), "a value in another field is another content");
        let mut later = event("{}");
        later.at = 2;
        assert_ne!(base, event_hash("", &later));
    }
}
