//! Retiring the old server: each migration's decommission stages and what each stage did to
//! each account. The store keeps names and JSON; what they mean is the engine's and `ops`'.

use super::{Store, StoreError, Tx, select};

/// One decommission stage of a migration.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StageRow {
    /// The migration.
    pub migration_id: String,
    /// Its place among the playbook's stages, from 0.
    pub stage: i64,
    /// What people call it.
    pub name: String,
    /// What it does (`suspend_accounts`, …).
    pub action: String,
    /// 1 when a person does it and confirms it.
    pub manual: i64,
    /// When it is due (unix ms); a postponement moves it.
    pub due_at: i64,
    /// `pending`, `running`, `ran`, `waiting`, `done`, `skipped` or `undone`.
    pub state: String,
    /// JSON: who postponed, skipped or undid it and why; its tasks; the last traffic evidence.
    pub detail: String,
    /// When it last changed.
    pub updated_at: i64,
}

/// What one stage did to one account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StageAccountRow {
    /// The migration.
    pub migration_id: String,
    /// The stage's place.
    pub stage: i64,
    /// The cPanel user.
    #[sqlx(rename = "user_name")]
    pub user: String,
    /// `done`, `held`, `undone` or `excluded`.
    pub state: String,
    /// JSON: the gate's evidence, or the operator's reason.
    pub evidence: String,
    /// When it was recorded.
    pub at: i64,
}

impl Store {
    /// A migration's stages, in order.
    pub async fn stages(&self, migration_id: &str) -> Result<Vec<StageRow>, StoreError> {
        select(
            &self.pool,
            "SELECT * FROM decommission_stages WHERE migration_id = $1 ORDER BY stage",
            &[migration_id],
        )
        .await
    }

    /// What the stages of a migration did to its accounts, by stage and user.
    pub async fn stage_accounts(&self, migration_id: &str) -> Result<Vec<StageAccountRow>, StoreError> {
        select(
            &self.pool,
            "SELECT * FROM decommission_accounts WHERE migration_id = $1 ORDER BY stage, user_name",
            &[migration_id],
        )
        .await
    }
}

impl Tx<'_> {
    /// Records a migration's stages; those recorded already stay as they are. Returns how many
    /// were new.
    pub async fn insert_stages(&mut self, stages: &[StageRow]) -> Result<u64, StoreError> {
        let mut new = 0;
        for s in stages {
            new += sqlx::query(
                "INSERT INTO decommission_stages \
                 (migration_id, stage, name, action, manual, due_at, state, detail, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (migration_id, stage) DO NOTHING",
            )
            .bind(&s.migration_id)
            .bind(s.stage)
            .bind(&s.name)
            .bind(&s.action)
            .bind(s.manual)
            .bind(s.due_at)
            .bind(&s.state)
            .bind(&s.detail)
            .bind(s.updated_at)
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        }
        Ok(new)
    }

    /// A stage, read inside the transaction (on PostgreSQL locked until it ends, so two
    /// operators or an operator and the daemon change it one after the other).
    pub async fn stage_for_update(
        &mut self,
        migration_id: &str,
        stage: i64,
    ) -> Result<Option<StageRow>, StoreError> {
        let lock = match self.backend {
            super::Backend::Postgres => " FOR UPDATE",
            super::Backend::Sqlite => "",
        };
        let sql = format!("SELECT * FROM decommission_stages WHERE migration_id = $1 AND stage = $2{lock}");
        Ok(sqlx::query_as(&sql).bind(migration_id).bind(stage).fetch_optional(&mut *self.tx).await?)
    }

    /// Writes a stage's state, detail and due time.
    pub async fn update_stage(&mut self, row: &StageRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE decommission_stages SET state = $3, detail = $4, due_at = $5, updated_at = $6 \
             WHERE migration_id = $1 AND stage = $2",
        )
        .bind(&row.migration_id)
        .bind(row.stage)
        .bind(&row.state)
        .bind(&row.detail)
        .bind(row.due_at)
        .bind(row.updated_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records what a stage did to an account, replacing what it recorded before.
    pub async fn record_stage_account(&mut self, row: &StageAccountRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO decommission_accounts (migration_id, stage, user_name, state, evidence, at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (migration_id, stage, user_name) \
             DO UPDATE SET state = excluded.state, evidence = excluded.evidence, at = excluded.at",
        )
        .bind(&row.migration_id)
        .bind(row.stage)
        .bind(&row.user)
        .bind(&row.state)
        .bind(&row.evidence)
        .bind(row.at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
