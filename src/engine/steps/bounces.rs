//! Bounces: the delivery-status notifications in the bounce Maildir (config
//! `mail.bounce_maildir`), each matched to its notice by the return path it was sent to
//! (`bounces+<notice id>@…`, VERP) or the Message-ID it reports on. A `failed` report marks a
//! sent notice `bounced` with what the report says and tells customer service, so that someone
//! calls the customer; each message read is moved from `new/` to `cur/` afterwards (a daemon
//! stopped in between reads it again, and marking is idempotent). Every daemon may read the
//! mailbox: the mark and customer service's notice are once per notice.

use std::path::Path;

use anyhow::Context;
use tracing::{info, warn};

use crate::engine::context::Ctx;
use crate::notify::bounce::parse_dsn;
use crate::store::OutboxRow;

/// Reads the messages waiting in the bounce Maildir's `new/`; how many bounces it recorded.
/// Nothing when the config names no bounce mailbox.
pub async fn read_bounces(cx: &Ctx) -> anyhow::Result<usize> {
    let Some(config) = &cx.world.bounces else { return Ok(0) };
    let new = config.maildir.join("new");
    let mut entries = match tokio::fs::read_dir(&new).await {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err).with_context(|| format!("reading the bounce Maildir {}", new.display())),
    };
    let mut recorded = 0;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Maildir writers put half-written messages in tmp/, never in new/; dot files are not mail.
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let raw = match tokio::fs::read(&path).await {
            Ok(raw) => raw,
            // Another daemon moved it meanwhile.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        if record(cx, &raw, &name).await? {
            recorded += 1;
        }
        seen(&config.maildir, &name).await?;
    }
    Ok(recorded)
}

/// Records one message of the mailbox: `true` when it marked a notice bounced now.
async fn record(cx: &Ctx, raw: &[u8], name: &str) -> anyhow::Result<bool> {
    let Some(config) = &cx.world.bounces else { return Ok(false) };
    let Some(dsn) = parse_dsn(raw) else {
        info!(file = name, "a message in the bounce mailbox is no delivery-status notification; set aside");
        return Ok(false);
    };
    if !dsn.failed {
        return Ok(false);
    }
    let mut notice: Option<OutboxRow> = None;
    for address in &dsn.addressed_to {
        if let Some(id) = config.notice_of(address) {
            notice = cx.store.notice(id).await?;
            break;
        }
    }
    if notice.is_none()
        && let Some(message_id) = &dsn.message_id
    {
        notice = cx.store.notice_by_message_id(message_id).await?;
    }
    let Some(notice) = notice.filter(|n| n.sent_at.is_some()) else {
        warn!(file = name, to = ?dsn.addressed_to, "a bounce names no notice that was sent; set aside");
        return Ok(false);
    };
    let ctx = cx.migration_ctx(&notice.migration_id).await.map_err(|err| err.into_error())?;
    let reason = if dsn.reason.is_empty() { "returned undeliverable".to_owned() } else { dsn.reason.clone() };
    let mut tx = cx.store.begin().await?;
    let marked = tx.mark_notice_bounced(notice.id, cx.now_ms(), &reason).await?;
    if marked {
        let detail = serde_json::json!({ "notice": notice.id, "kind": notice.kind, "reason": reason });
        tx.append_event(&cx.event(&ctx, notice.account.as_deref(), None, "notice_bounced", detail)).await?;
        super::staff::queue_failed_notice(cx, &mut tx, &ctx, &notice, &reason, true)
            .await
            .map_err(|err| err.into_error())?;
    }
    tx.commit().await?;
    if marked {
        warn!(notice = notice.id, kind = %notice.kind, %reason, "a notice bounced; customer service told");
    }
    Ok(marked)
}

/// Moves a read message from `new/` to `cur/`, flagged seen (`:2,S`), as a mail client would.
async fn seen(maildir: &Path, name: &str) -> anyhow::Result<()> {
    let cur = maildir.join("cur");
    tokio::fs::create_dir_all(&cur).await.with_context(|| format!("creating {}", cur.display()))?;
    let base = name.split_once(":2,").map_or(name, |(base, _)| base);
    match tokio::fs::rename(maildir.join("new").join(name), cur.join(format!("{base}:2,S"))).await {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("moving {name} to {}", cur.display())),
    }
}
