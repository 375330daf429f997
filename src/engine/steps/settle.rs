//! Settling: the migration is cut over once every account arrived or is held, and settled once
//! every account arrived and every domain is in a final state.

use anyhow::anyhow;
use tracing::info;

use crate::domain::{DomainState, MigrationEvent, MigrationState};
use crate::engine::context::{Ctx, MigrationCtx, StepResult};
use crate::store::{Lease, migration_state};

/// Moves the migration to cut over once every account arrived or is held, then to settled
/// once every account arrived and every domain is final (TTL restored, propagated, or not
/// repointed). Scheduled whenever an account settles, a domain's TTL is restored or a
/// domain is seen propagated.
pub async fn settle(cx: &Ctx, ctx: &MigrationCtx, lease: &Lease) -> StepResult {
    let now = cx.now_ms();
    // Counted and decided inside the transaction, with the migration's row locked: every
    // account that settles schedules a settle, and two of them running at once must not both
    // see the migration still transferring.
    let mut tx = cx.store.begin_leased(lease).await?;
    let row = tx
        .migration_for_update(ctx.id.as_str())
        .await?
        .ok_or_else(|| anyhow!("migration {} is not in the store", ctx.id))?;
    let mut state = migration_state(&row)?;
    let counts = tx.account_counts(ctx.id.as_str()).await?;
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    let arrived = count("done");
    let held = count("held") + count("rolled_back");
    let total: u64 = counts.values().sum();
    if arrived + held == total && matches!(state, MigrationState::Transferring { .. }) {
        let (arrived, held) = (arrived as u32, held as u32);
        state = cx
            .apply_migration(&mut tx, ctx, &state, MigrationEvent::AccountsSettled { arrived, held })
            .await?;
        // The old server's retirement is dated from the cutover and begins once every
        // account arrived or is held (a domain still on the customer's DNS does not wait for
        // the settle: the stages' DNS gate holds its account instead).
        super::decommission::schedule_stages(cx, &mut tx, ctx).await?;
        if held == 0 {
            info!(migration = %ctx.id, arrived, "cut over: every account arrived");
        } else {
            info!(migration = %ctx.id, arrived, held, "cut over: every account arrived or is held for an operator");
        }
    }
    if arrived == total && matches!(state, MigrationState::CutOver { .. }) {
        let domains = tx.domain_counts(ctx.id.as_str()).await?;
        let all: u64 = domains.values().sum();
        let final_: u64 = DomainState::FINAL.iter().map(|s| domains.get(*s).copied().unwrap_or(0)).sum();
        if final_ == all {
            let event = MigrationEvent::Settled { accounts: arrived as u32, domains: all as u32 };
            cx.apply_migration(&mut tx, ctx, &state, event).await?;
            info!(migration = %ctx.id, accounts = arrived, domains = all, "settled: every account arrived and every domain is final");
        }
    }
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}
