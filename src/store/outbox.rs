//! The outbox: notices written once by their dedupe key, sent under the sent-once rule (each
//! attempt on record before the message, the sent-mark on the server's acceptance), skipped
//! when too late, failed or bounced with the server's words; one at a time or a batch at once
//! (a campaign's rows and jobs in multi-row statements, a batch of send jobs read, attempted and
//! marked in one statement each). What `engine::steps::notices` and `announce` write and read.

use sqlx::Any;

use crate::store::{
    INSERT_CHUNK, NewNotice, OUTBOX_COLUMNS, OutboxRow, Store, StoreError, Tx, expect_one, numbered,
    placeholders, select,
};

/// [`OUTBOX_COLUMNS`] with the texts left out (`subject`, `body` empty, `html` none).
const OUTBOX_COLUMNS_WITHOUT_TEXTS: &str = "id, migration_id, account, kind, dedupe_key, message_id, \
     recipients, '' AS subject, '' AS body, created_at, sent_at, attempts, last_error, \
     delivery_attempts, delivery_started_at, resends, skipped_at, skip_reason, failed_at, \
     NULL AS html, bounced_at, bounce_reason";

impl Store {
    /// Reserves the next send slot of `channel` for a limit of one message per `interval_ms`,
    /// shared by every daemon on this database: the time (ms) the caller may send at, `now` or
    /// one interval after the slot reserved before it, whichever is later.
    pub async fn reserve_send_slot(
        &self,
        channel: &str,
        now: i64,
        interval_ms: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO send_slots (channel, next_at) VALUES ($1, $2) ON CONFLICT (channel) DO NOTHING",
        )
        .bind(channel)
        .bind(now)
        .execute(&mut *tx.tx)
        .await?;
        let next: i64 = sqlx::query_scalar(
            "UPDATE send_slots SET next_at = CASE WHEN next_at > $2 THEN next_at ELSE $2 END + $3 \
             WHERE channel = $1 RETURNING next_at",
        )
        .bind(channel)
        .bind(now)
        .bind(interval_ms)
        .fetch_one(&mut *tx.tx)
        .await?;
        tx.commit().await?;
        Ok(next - interval_ms)
    }

    /// Records that a notice's message was accepted by the server, outside any lease: the fact
    /// stands whoever holds the job, and losing it would resend the message. Keeps the first
    /// time; clears the attempt in flight.
    pub async fn mark_notice_sent(&self, id: i64, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.mark_notice_sent(id, now).await?;
        tx.commit().await
    }

    /// All notices of a migration, by id.
    pub async fn outbox(&self, migration_id: &str) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE migration_id = $1 ORDER BY id");
        select(&self.pool, &sql, &[migration_id]).await
    }

    /// Up to `limit` notices not sent yet, of every migration, oldest first (the sender's scan).
    pub async fn unsent_notices(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE sent_at IS NULL AND skipped_at IS NULL ORDER BY id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One notice by id.
    pub async fn notice(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// An earlier notice of the same migration to the same recipients as `notice` that is still
    /// to be sent (not sent, skipped or failed, its send job open), if any: notices to one
    /// reader go out in the order they were written.
    pub async fn earlier_unsent_notice(&self, notice: &OutboxRow) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT o.id FROM outbox o JOIN jobs j ON j.dedupe_key = 'send_notice:' || o.id \
             WHERE o.migration_id = $1 AND o.recipients = $2 AND o.id < $3 \
               AND o.sent_at IS NULL AND o.skipped_at IS NULL AND o.failed_at IS NULL \
               AND j.done_at IS NULL \
             ORDER BY o.id LIMIT 1",
        )
        .bind(&notice.migration_id)
        .bind(&notice.recipients)
        .bind(notice.id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The notices of a migration about these accounts or addressed to exactly `recipients` (a
    /// JSON array, as stored), oldest first: what one customer was told.
    pub async fn notices_to_customer(
        &self,
        migration_id: &str,
        users: &[String],
        recipients: Option<&str>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut rows: Vec<OutboxRow> = Vec::new();
        for chunk in users.chunks(500) {
            let list = (0..chunk.len()).map(|n| format!("${}", n + 2)).collect::<Vec<_>>().join(", ");
            let sql = format!("SELECT * FROM outbox WHERE migration_id = $1 AND account IN ({list})");
            let mut query = sqlx::query_as(&sql).bind(migration_id);
            for user in chunk {
                query = query.bind(user);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        if let Some(recipients) = recipients {
            let more: Vec<OutboxRow> =
                sqlx::query_as("SELECT * FROM outbox WHERE migration_id = $1 AND recipients = $2")
                    .bind(migration_id)
                    .bind(recipients)
                    .fetch_all(&self.pool)
                    .await?;
            rows.extend(more);
        }
        rows.sort_by_key(|row| row.id);
        rows.dedup_by_key(|row| row.id);
        Ok(rows)
    }

    /// The notices with these ids, in id order, without their texts (`subject` and `body`
    /// empty, `html` none): what a batch of send jobs decides by before it reads the texts
    /// with the attempts.
    pub async fn notices_without_texts(&self, ids: &[i64]) -> Result<Vec<OutboxRow>, StoreError> {
        // What a batch of 128 notices would carry over from the database in texts: ~250 KB.
        notices_by_id(&self.pool, OUTBOX_COLUMNS_WITHOUT_TEXTS, ids).await
    }

    /// Those of `ids` (notices of migration `migration_id`) behind an earlier notice to the
    /// same recipients that is still to be sent (see [`Store::earlier_unsent_notice`]) and is
    /// not among `ids` itself: one query for a batch of notices about to be sent in id order.
    pub async fn notices_behind_earlier(
        &self,
        migration_id: &str,
        ids: &[i64],
    ) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = numbered(2, ids.len());
        let sql = format!(
            "SELECT o.id FROM outbox o WHERE o.id IN ({list}) AND EXISTS (\
                 SELECT 1 FROM outbox e JOIN jobs j ON j.dedupe_key = 'send_notice:' || e.id \
                 WHERE e.migration_id = $1 AND e.recipients = o.recipients AND e.id < o.id \
                   AND e.sent_at IS NULL AND e.skipped_at IS NULL AND e.failed_at IS NULL \
                   AND j.done_at IS NULL AND e.id NOT IN ({list}))"
        );
        let mut query = sqlx::query_scalar(&sql).bind(migration_id);
        for id in ids {
            query = query.bind(*id);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The notice sent with Message-ID `message_id` (`<…>`), if any.
    pub async fn notice_by_message_id(&self, message_id: &str) -> Result<Option<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE message_id = $1 ORDER BY id LIMIT 1"
        ))
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?)
    }
}

impl Tx<'_> {
    /// Marks a notice the server refused for good failed at `now` (its error is `last_error`).
    pub async fn mark_notice_failed(&mut self, id: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET failed_at = COALESCE(failed_at, $2) WHERE id = $1 AND sent_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Replaces the text of a notice not sent and with no attempt under way (a reschedule
    /// re-dates it; an attempt the server refused delivered nothing); false when it was sent,
    /// skipped, or an attempt has no recorded end (the server may hold it).
    pub async fn rewrite_unsent_notice(
        &mut self,
        id: i64,
        subject: &str,
        body: &str,
        html: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET subject = $2, body = $3, html = $4 WHERE id = $1 AND sent_at IS NULL \
             AND skipped_at IS NULL AND delivery_started_at IS NULL",
        )
        .bind(id)
        .bind(subject)
        .bind(body)
        .bind(html)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a sent notice bounced (a delivery-status notification said it did not arrive);
    /// `false` when it was marked already or was never sent.
    pub async fn mark_notice_bounced(&mut self, id: i64, now: i64, reason: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET bounced_at = $2, bounce_reason = $3 WHERE id = $1 AND bounced_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// An outbox row, read through this transaction (so it sees the transaction's own writes
    /// and takes no second pool connection while this one holds a write lock).
    pub async fn notice(&mut self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        Ok(sqlx::query_as(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    /// The notices with these ids, in id order, read through this transaction.
    pub async fn notices(&mut self, ids: &[i64]) -> Result<Vec<OutboxRow>, StoreError> {
        notices_by_id(&mut *self.tx, OUTBOX_COLUMNS, ids).await
    }

    /// [`Tx::enqueue_notice`] for many notices, in multi-row INSERTs (a campaign's advance
    /// notices): the id of each, in order, or `None` for one whose dedupe key exists (or
    /// repeats an earlier one's in `notices`).
    pub async fn enqueue_notices(&mut self, notices: &[NewNotice]) -> Result<Vec<Option<i64>>, StoreError> {
        let mut ids: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for chunk in notices.chunks(INSERT_CHUNK) {
            let sql = format!(
                "INSERT INTO outbox (migration_id, account, kind, dedupe_key, message_id, recipients, \
                                     subject, body, created_at, html) \
                 VALUES {} ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key",
                placeholders(chunk.len(), 10)
            );
            let mut query = sqlx::query_as::<_, (i64, String)>(&sql);
            for n in chunk {
                query = query.bind(&n.migration_id).bind(&n.account).bind(&n.kind).bind(&n.dedupe_key);
                query = query.bind(&n.message_id).bind(&n.recipients).bind(&n.subject).bind(&n.body);
                query = query.bind(n.created_at).bind(&n.html);
            }
            ids.extend(query.fetch_all(&mut *self.tx).await?.into_iter().map(|(id, key)| (key, id)));
        }
        // A key given twice: the first is the one written.
        Ok(notices.iter().map(|n| ids.remove(&n.dedupe_key)).collect())
    }

    /// Enqueues a notice; returns its id, or `None` (and changes nothing) if a notice with its
    /// dedupe key exists.
    pub async fn enqueue_notice(&mut self, n: &NewNotice) -> Result<Option<i64>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO outbox (migration_id, account, kind, dedupe_key, message_id, recipients, \
                                 subject, body, created_at, html) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(&n.migration_id)
        .bind(&n.account)
        .bind(&n.kind)
        .bind(&n.dedupe_key)
        .bind(&n.message_id)
        .bind(&n.recipients)
        .bind(&n.subject)
        .bind(&n.body)
        .bind(n.created_at)
        .bind(&n.html)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(id)
    }

    /// Marks a notice not sent skipped at `now` with `reason` (too late to be of use; a notice
    /// already sent or skipped keeps what it has).
    pub async fn mark_notice_skipped(&mut self, id: i64, now: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET skipped_at = $2, skip_reason = $3, delivery_started_at = NULL \
             WHERE id = $1 AND sent_at IS NULL AND skipped_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .bind(reason)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Marks a notice sent at `now` (a notice already marked keeps its first time) and ends the
    /// attempt in flight; [`StoreError::NotFound`] if there is no such notice.
    pub async fn mark_notice_sent(&mut self, id: i64, now: i64) -> Result<(), StoreError> {
        let result = sqlx::query(
            "UPDATE outbox SET sent_at = COALESCE(sent_at, $2), delivery_started_at = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        expect_one(result, || StoreError::NotFound { what: "notice", key: id.to_string() })
    }

    /// Records a failed send: attempts + 1, the error, and the attempt in flight ended (the
    /// server did not take the message); [`StoreError::NotFound`] if there is no such notice.
    pub async fn notice_failed(&mut self, id: i64, error: &str) -> Result<(), StoreError> {
        let result = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, delivery_started_at = NULL \
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .execute(&mut *self.tx)
        .await?;
        expect_one(result, || StoreError::NotFound { what: "notice", key: id.to_string() })
    }

    /// [`Tx::mark_notice_sent`] for several notices in one statement.
    pub async fn mark_notices_sent(&mut self, ids: &[i64], now: i64) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE outbox SET sent_at = COALESCE(sent_at, $1), delivery_started_at = NULL WHERE id IN ({})",
            numbered(2, ids.len())
        );
        let mut query = sqlx::query(&sql).bind(now);
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Ends the attempt of notice `id` that never reached the server (held back behind an
    /// earlier notice that failed), without counting a failure: its next attempt is no resend.
    pub async fn notice_not_handed_over(&mut self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET delivery_started_at = NULL WHERE id = $1 AND sent_at IS NULL")
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// [`Tx::notice_delivery_started`] for several notices at once (two statements): returns
    /// the ids whose attempt is a resend.
    pub async fn notices_delivery_started(&mut self, ids: &[i64], now: i64) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = numbered(2, ids.len());
        let sql = format!(
            "SELECT id FROM outbox WHERE delivery_started_at IS NOT NULL AND id IN ({})",
            numbered(1, ids.len())
        );
        let mut query = sqlx::query_scalar(&sql);
        for id in ids {
            query = query.bind(*id);
        }
        let resends: Vec<i64> = query.fetch_all(&mut *self.tx).await?;
        let sql = format!(
            "UPDATE outbox SET delivery_attempts = delivery_attempts + 1, \
                 resends = resends + CASE WHEN delivery_started_at IS NULL THEN 0 ELSE 1 END, \
                 delivery_started_at = $1 WHERE id IN ({list})"
        );
        let mut query = sqlx::query(&sql).bind(now);
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&mut *self.tx).await?;
        Ok(resends)
    }

    /// Records that a delivery attempt of notice `id` starts at `now`, before anything is handed
    /// to the server. Returns whether it is a resend: an earlier attempt started and its end
    /// (accepted or failed) was never recorded, so the server may hold the message already
    /// (counted in `resends`). [`StoreError::NotFound`] if there is no such notice.
    pub async fn notice_delivery_started(&mut self, id: i64, now: i64) -> Result<bool, StoreError> {
        let in_flight: Option<Option<i64>> =
            sqlx::query_scalar("SELECT delivery_started_at FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?;
        let Some(in_flight) = in_flight else {
            return Err(StoreError::NotFound { what: "notice", key: id.to_string() });
        };
        let resend = in_flight.is_some();
        sqlx::query(
            "UPDATE outbox SET delivery_attempts = delivery_attempts + 1, resends = resends + $3, \
                 delivery_started_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .bind(i32::from(resend))
        .execute(&mut *self.tx)
        .await?;
        Ok(resend)
    }
}

/// The outbox rows with these ids, in id order, as `columns` selects them.
async fn notices_by_id<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    columns: &str,
    ids: &[i64],
) -> Result<Vec<OutboxRow>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT {columns} FROM outbox WHERE id IN ({}) ORDER BY id", numbered(1, ids.len()));
    let mut query = sqlx::query_as(&sql);
    for id in ids {
        query = query.bind(*id);
    }
    Ok(query.fetch_all(executor).await?)
}
