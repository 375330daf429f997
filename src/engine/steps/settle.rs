//! Settling: the migration is cut over once every account arrived or is held.

use tracing::info;

use crate::domain::{AccountState, MigrationEvent, MigrationState};
use crate::engine::context::{Ctx, MigrationCtx, StepResult};
use crate::store::{Lease, account_state};

/// Moves the migration to cut over once every account arrived or is held.
pub async fn settle(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    let now = cx.now_ms();
    let accounts = cx.store.accounts(ctx.id.as_str()).await?;
    let mut arrived = 0u32;
    let mut held = 0u32;
    for row in &accounts {
        match account_state(row)? {
            AccountState::Done { .. } => arrived += 1,
            AccountState::Held { .. } | AccountState::RolledBack { .. } => held += 1,
            _ => {}
        }
    }
    let mut tx = cx.store.begin_leased(lease).await?;
    if (arrived + held) as usize == accounts.len() && matches!(ctx.state, MigrationState::Transferring { .. })
    {
        cx.apply_migration(&mut tx, ctx, &ctx.state, MigrationEvent::AccountsSettled { arrived, held })
            .await?;
        info!(migration = %ctx.id, arrived, held, "every account settled");
    }
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}
