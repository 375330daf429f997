//! Notices: the completion notice and reminders are written to the outbox (one row each, by
//! dedupe key), and each outbox row is sent through the channel.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, anyhow};
use tracing::{debug, warn};

use crate::domain::{AccountEvent, DomainState, MigrationState, RecordChange, reminder_notice_key};
use crate::engine::context::{Ctx, MigrationCtx, SentMark, StepError, StepResult};
use crate::engine::jobs::JobKind;
use crate::names::DomainName;
use crate::notify::{Delivery, OutgoingNotice};
use crate::playbook::{NoticeTemplate, language_of};
use crate::store::{DomainRow, JobRow, Lease, NewJob, NewNotice, OutboxRow, StoreError, Tx};

use super::announce::{
    completion_accounts, completion_accounts_of, domain_context, due_at, too_late, via_reseller,
};

/// How long an accepted notice's sent-mark waits at most for others to share its commit when
/// fewer than [`MARK_GROUP`] are waiting (group commit, see [`record_sent`]): a crash in this
/// window resends the message, with its Message-ID, as a crash before any commit would.
const MARK_LINGER: Duration = Duration::from_millis(5);

/// Sent-marks that are committed at once, without waiting [`MARK_LINGER`] for more.
const MARK_GROUP: usize = 32;

/// How soon a notice waiting for an earlier one to the same recipients looks again.
const ORDER_WAIT: Duration = Duration::from_millis(500);

/// A notice template rendered with `context`: the subject (one line), the text and the HTML
/// part (escaped), if the template has one.
pub(crate) fn rendered(
    template: &NoticeTemplate,
    context: &serde_json::Value,
    kind: &str,
) -> anyhow::Result<(String, String, Option<String>)> {
    let subject = crate::notify::render(&template.subject, context)
        .with_context(|| format!("rendering the {kind} notice's subject"))?;
    let body = crate::notify::render(&template.body, context)
        .with_context(|| format!("rendering the {kind} notice's text"))?;
    let html = template
        .html
        .as_ref()
        .map(|html| crate::notify::render_html(html, context))
        .transpose()
        .with_context(|| format!("rendering the {kind} notice's HTML part"))?;
    Ok((subject.trim().to_owned(), body, html))
}

/// Sends a batch of outbox rows (the send jobs one worker took at once, see
/// `Engine::send_notices`) through the channel, each with its stable Message-ID, exactly as the
/// code map's "Notices" guarantee says, and returns each job's outcome in the batch's order:
///
/// 1. the attempts are recorded (committed, one transaction for the batch) before anything is
///    handed over; when an earlier attempt's end was never recorded, this one is a resend,
///    logged as `notice_resent`. With a rate limit, each message waits for its slot first and
///    its attempt is recorded alone, right before it goes out;
/// 2. the channel connects (greeting, TLS, login) before any attempt is on record, so a
///    server that is down records none; each job's lease is checked right before its message
///    goes out;
/// 3. as soon as the server accepts a message (SMTP: the 250 after DATA), its sent-mark is
///    handed to the batch's recorder, which commits it with the job's completion and the
///    accounts' transitions — together with the marks accepted meanwhile, while the next
///    message goes out (group commit: one transaction for what was accepted during the
///    previous one); a job whose lease was lost meanwhile gets its sent-mark alone (the fact
///    stands whoever holds the job);
/// 4. only when every mark is committed is the session closed (or kept for the next batch),
///    however slowly the server answers QUIT.
///
/// The notices go out in the order they were written: one behind an earlier notice to the
/// same recipients that is not out yet waits for it (and so does every later one to them in
/// this batch).
pub async fn send_notices(cx: &Ctx, ctx: &MigrationCtx, batch: &[(JobRow, Lease)]) -> Vec<StepResult> {
    let mut outcomes: Vec<Option<StepResult>> = batch.iter().map(|_| None).collect();
    let ids: Vec<Option<i64>> = batch.iter().map(|(job, _)| job.subject.parse().ok()).collect();
    let known: Vec<i64> = ids.iter().flatten().copied().collect();
    let read = async {
        // What the batch decides by; the texts are read with the attempts.
        let rows = cx.store.notices_without_texts(&known).await?;
        let behind = cx.store.notices_behind_earlier(ctx.id.as_str(), &known).await?;
        Ok::<_, StoreError>((rows, behind))
    };
    let (rows, behind) = match read.await {
        Ok(read) => read,
        Err(err) => {
            let message = err.to_string();
            return batch
                .iter()
                .map(|_| Err(StepError::Transient(anyhow!("reading the outbox: {message}"))))
                .collect();
        }
    };
    let rows: HashMap<i64, OutboxRow> = rows.into_iter().map(|row| (row.id, row)).collect();
    let behind: HashSet<i64> = behind.into_iter().collect();
    // In the order the notices were written.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| ids[i].unwrap_or(i64::MAX));
    // Recipients with a notice that does not go out in this batch: their later ones wait too.
    let mut waiting: HashSet<&str> = HashSet::new();
    let mut already = Vec::new();
    let mut to_send = Vec::new();
    for i in order {
        let (job, lease) = &batch[i];
        let Some(id) = ids[i] else {
            outcomes[i] = Some(Err(StepError::Permanent(anyhow!(
                "send job {}: bad notice id {:?}",
                job.id,
                job.subject
            ))));
            continue;
        };
        let Some(notice) = rows.get(&id) else {
            outcomes[i] = Some(Err(StepError::Permanent(anyhow!("notice {id} is not in the outbox"))));
            continue;
        };
        let blocked = behind.contains(&id) || waiting.contains(notice.recipients.as_str());
        match prepare(cx, ctx, notice, lease, blocked).await {
            Prepared::Done(outcome) => outcomes[i] = Some(outcome),
            Prepared::Waits(outcome) => {
                waiting.insert(notice.recipients.as_str());
                outcomes[i] = Some(outcome);
            }
            Prepared::Recorded => already.push((i, notice.clone())),
            Prepared::Send(to) => to_send.push((i, notice.clone(), to)),
        }
    }
    // Accepted by the server in an earlier run: what is left is the bookkeeping.
    if !already.is_empty() {
        let replies = already.into_iter().map(|(i, notice)| push_mark(cx, ctx, batch, i, notice)).collect();
        for (i, outcome) in record_sent(cx, ctx, replies, None).await {
            outcomes[i] = Some(outcome);
        }
    }
    for (i, outcome) in deliver(cx, ctx, batch, to_send).await {
        outcomes[i] = Some(outcome);
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                Err(StepError::Transient(anyhow!("the batch ended without this notice's outcome")))
            })
        })
        .collect()
}

/// What becomes of one notice of a batch before anything is sent.
enum Prepared {
    /// Its run ended (recorded, or an error to record).
    Done(StepResult),
    /// Rescheduled behind an earlier notice to its recipients.
    Waits(StepResult),
    /// Sent in an earlier run: its sent-mark and the job's end are to be recorded.
    Recorded,
    /// To be sent, to these recipients.
    Send(Vec<String>),
}

async fn prepare(cx: &Ctx, ctx: &MigrationCtx, notice: &OutboxRow, lease: &Lease, blocked: bool) -> Prepared {
    if notice.sent_at.is_some() {
        return Prepared::Recorded;
    }
    if notice.skipped_at.is_some() {
        return Prepared::Done(cx.finish(lease).await);
    }
    // A notice that could not go out in time (the server was down, the daemon stopped) is not
    // sent in a burst later: too late is skipped, on record.
    let due = due_at(ctx, &notice.kind, notice.created_at);
    let now = cx.now_ms();
    if let Some(reason) = too_late(ctx, &notice.kind, due, now) {
        return Prepared::Done(skip_late(cx, ctx, notice, lease, reason, now).await);
    }
    // Notices to one reader go out in the order they were written (a start notice waiting out
    // a mail server's outage goes before the completion notice written meanwhile).
    if blocked {
        debug!(notice = notice.id, "an earlier notice to the same recipients is not out yet; waiting for it");
        let rescheduled = async {
            let mut tx = cx.store.begin_leased(lease).await?;
            tx.reschedule_job(lease, now + ORDER_WAIT.as_millis() as i64).await?;
            Ok(tx.commit().await?)
        };
        return Prepared::Waits(rescheduled.await);
    }
    let to: Vec<String> = match serde_json::from_str(&notice.recipients) {
        Ok(to) => to,
        Err(err) => {
            return Prepared::Done(Err(StepError::Permanent(anyhow!(
                "notice {}: stored recipients: {err}",
                notice.id
            ))));
        }
    };
    if to.is_empty() {
        return Prepared::Done(Err(StepError::Permanent(anyhow!(
            "the account has no contact e-mail address"
        ))));
    }
    Prepared::Send(to)
}

/// A notice past its kind's lateness limit: skipped on record, never sent.
async fn skip_late(
    cx: &Ctx,
    ctx: &MigrationCtx,
    notice: &OutboxRow,
    lease: &Lease,
    reason: String,
    now: i64,
) -> StepResult {
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.mark_notice_skipped(notice.id, now, &reason).await?;
    let detail = serde_json::json!({ "notice": notice.id, "kind": notice.kind, "reason": reason });
    tx.append_event(&cx.event(ctx, notice.account.as_deref(), None, "notice_skipped_late", detail)).await?;
    // A completion notice too late to send still ends its accounts' wait for it.
    if notice.kind == "completion"
        && let Some(first) = &notice.account
    {
        for (user, state) in completion_accounts(&mut tx, ctx.id.as_str(), first, notice.id).await? {
            let event = AccountEvent::NoticeFailed { reason: reason.clone() };
            cx.apply_account(&mut tx, ctx, &user, &state, event).await?;
        }
    }
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// A notice of a batch on its way: the job's place in the batch, its row, its recipients.
type Outgoing = (usize, OutboxRow, Vec<String>);

/// Steps 1–4 of [`send_notices`] for the notices to send, in order; the outcome of each.
async fn deliver(
    cx: &Ctx,
    ctx: &MigrationCtx,
    batch: &[(JobRow, Lease)],
    to_send: Vec<Outgoing>,
) -> Vec<(usize, StepResult)> {
    if to_send.is_empty() {
        return Vec::new();
    }
    let (accepted, marks) = tokio::sync::mpsc::unbounded_channel();
    let (sent, marked) = tokio::join!(
        transmit_all(cx, ctx, batch, to_send, accepted),
        record_sent(cx, ctx, Vec::new(), Some(marks))
    );
    let (mut outcomes, session) = sent;
    outcomes.extend(marked);
    // 4. Every mark is on record: only now the polite goodbye (or the session kept).
    if let Some(session) = session {
        session.close().await;
    }
    outcomes
}

/// Sends the notices over one session (opened again after a message that failed), recording
/// each chunk's attempts first, and hands each accepted one to `accepted`; returns the
/// outcomes of those not accepted and the session, still open.
async fn transmit_all(
    cx: &Ctx,
    ctx: &MigrationCtx,
    batch: &[(JobRow, Lease)],
    to_send: Vec<Outgoing>,
    accepted: tokio::sync::mpsc::UnboundedSender<Reply>,
) -> (Vec<(usize, StepResult)>, Option<Box<dyn Delivery>>) {
    let mut outcomes = Vec::new();
    let mut session: Option<Box<dyn Delivery>> = None;
    // Why the channel could not be opened: every notice left fails this run the same way.
    let mut unreachable: Option<(String, bool)> = None;
    // The recipients (as stored) of the notices that did not go out in this batch.
    let mut stalled: HashSet<String> = HashSet::new();
    let chunk = if cx.world.send_interval.is_some() { 1 } else { to_send.len() };
    let mut queue = to_send.into_iter().peekable();
    let mut first = true;
    while queue.peek().is_some() {
        let part: Vec<Outgoing> = queue.by_ref().take(chunk).collect();
        // Paced by a rate limit, a batch takes a while: a pause (or an abort) meanwhile stops
        // it before the next message, which goes back to the queue.
        if !std::mem::take(&mut first) && !still_sending(cx, ctx).await {
            for (i, _, _) in part.into_iter().chain(queue.by_ref()) {
                outcomes.push((i, given_back(cx, &batch[i].1).await));
            }
            break;
        }
        // 2. The session before any attempt is on record.
        if session.is_none() && unreachable.is_none() {
            match cx.world.channel.open().await {
                Ok(open) => session = Some(open),
                Err(err) => unreachable = Some((err.to_string(), err.is_transient())),
            }
        }
        if let Some((message, transient)) = &unreachable {
            for (i, notice, _) in part {
                outcomes.push((i, not_delivered(cx, ctx, &batch[i].1, &notice, message, *transient).await));
            }
            continue;
        }
        // 0. The channel's rate limit, shared by every daemon on the database: this message's
        // slot before its attempt is on record.
        if let Some(interval) = cx.world.send_interval {
            let now = cx.now_ms();
            match cx.store.reserve_send_slot(cx.world.channel.name(), now, interval.as_millis() as i64).await
            {
                Ok(slot) if slot > now => {
                    tokio::time::sleep(Duration::from_millis((slot - now) as u64)).await
                }
                Ok(_) => {}
                Err(err) => {
                    let message = err.to_string();
                    for (i, _, _) in part {
                        outcomes.push((
                            i,
                            Err(StepError::Transient(anyhow!("reserving a send slot: {message}"))),
                        ));
                    }
                    continue;
                }
            }
        }
        // 1. The attempts, on record before the server sees anything; the texts are read after
        // them (a reschedule re-dates a notice only while no attempt is on record).
        let (part, lost): (Vec<Outgoing>, Vec<Outgoing>) =
            part.into_iter().partition(|(i, _, _)| batch[*i].1.check().is_ok());
        for (i, _, _) in lost {
            outcomes.push((i, batch[i].1.check().map_err(StepError::from)));
        }
        let current = match record_attempts(cx, ctx, &part).await {
            Ok(current) => current,
            Err(err) => {
                let message = format!("{err:?}");
                for (i, _, _) in part {
                    outcomes.push((
                        i,
                        Err(StepError::Transient(anyhow!("recording the delivery attempt: {message}"))),
                    ));
                }
                continue;
            }
        };
        let mut current = current;
        for (i, notice, to) in part {
            let lease = &batch[i].1;
            // The row as read with the attempt, texts and all.
            let Some(notice) = current.remove(&notice.id) else {
                outcomes.push((
                    i,
                    Err(StepError::Permanent(anyhow!("notice {} is not in the outbox", notice.id))),
                ));
                continue;
            };
            // An earlier notice to these recipients did not go out in this batch: this one
            // waits for it (its attempt ended unsent), so a reader's notices keep their order.
            if stalled.contains(&notice.recipients) {
                outcomes.push((i, wait_behind(cx, lease, notice.id).await));
                continue;
            }
            if let Some((message, transient)) = &unreachable {
                stalled.insert(notice.recipients.clone());
                outcomes.push((i, not_delivered(cx, ctx, lease, &notice, message, *transient).await));
                continue;
            }
            if session.is_none() {
                match cx.world.channel.open().await {
                    Ok(open) => session = Some(open),
                    Err(err) => {
                        let (message, transient) = (err.to_string(), err.is_transient());
                        stalled.insert(notice.recipients.clone());
                        outcomes.push((i, not_delivered(cx, ctx, lease, &notice, &message, transient).await));
                        unreachable = Some((message, transient));
                        continue;
                    }
                }
            }
            if let Err(lost) = lease.check() {
                stalled.insert(notice.recipients.clone());
                outcomes.push((i, Err(lost.into())));
                continue;
            }
            let outgoing = OutgoingNotice {
                message_id: notice.message_id.clone(),
                from: cx.mail_from.clone(),
                to,
                subject: notice.subject.clone(),
                body: notice.body.clone(),
                html: notice.html.clone(),
                return_path: cx.world.bounces.as_ref().map(|b| b.return_path(notice.id)),
            };
            let Some(open) = session.as_mut() else { continue };
            match open.transmit(&outgoing).await {
                // 3. Accepted: to the recorder at once.
                Ok(()) => {
                    if let Err(unsent) = accepted.send(push_mark(cx, ctx, batch, i, notice)) {
                        let i = unsent.0.i;
                        outcomes.push((
                            i,
                            Err(StepError::Transient(anyhow!("the sent-mark recorder ended early"))),
                        ));
                    }
                }
                Err(err) => {
                    // The session aborted itself; the next message opens a new one.
                    if let Some(failed) = session.take() {
                        failed.close().await;
                    }
                    let (message, transient) = (err.to_string(), err.is_transient());
                    if transient {
                        stalled.insert(notice.recipients.clone());
                    }
                    outcomes.push((i, not_delivered(cx, ctx, lease, &notice, &message, transient).await));
                }
            }
        }
    }
    (outcomes, session)
}

/// Whether migration `ctx` still runs (not paused, aborted or otherwise stopped since the batch
/// began); a store that cannot tell counts as running: the sent-once rule does not depend on it.
async fn still_sending(cx: &Ctx, ctx: &MigrationCtx) -> bool {
    match cx.store.migration(ctx.id.as_str()).await {
        Ok(Some(row)) => !matches!(
            serde_json::from_str::<MigrationState>(&row.data),
            Ok(MigrationState::Paused { .. }
                | MigrationState::Aborted { .. }
                | MigrationState::Planned { .. }
                | MigrationState::Approved { .. })
        ),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// A send job put back in the queue untouched (due now; the engine sees why it cannot run).
async fn given_back(cx: &Ctx, lease: &Lease) -> StepResult {
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.reschedule_job(lease, cx.now_ms()).await?;
    Ok(tx.commit().await?)
}

/// A notice of the batch held back behind an earlier one to its recipients that did not go
/// out: its attempt ends unsent (no resend, no failure counted) and it is due again after
/// [`ORDER_WAIT`], when the earlier one's order check in the next batch decides.
async fn wait_behind(cx: &Ctx, lease: &Lease, id: i64) -> StepResult {
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.notice_not_handed_over(id).await?;
    tx.reschedule_job(lease, cx.now_ms() + ORDER_WAIT.as_millis() as i64).await?;
    Ok(tx.commit().await?)
}

/// The outcome of a notice the channel did not take: refused for good, or to retry.
async fn not_delivered(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    notice: &OutboxRow,
    message: &str,
    transient: bool,
) -> StepResult {
    if transient {
        Err(StepError::Transient(anyhow!("{message}")))
    } else {
        refused(cx, ctx, lease, notice, message).await
    }
}

/// Records the attempts of `part` in one transaction; returns the notices as read after it.
async fn record_attempts(
    cx: &Ctx,
    ctx: &MigrationCtx,
    part: &[Outgoing],
) -> Result<HashMap<i64, OutboxRow>, StepError> {
    let ids: Vec<i64> = part.iter().map(|(_, notice, _)| notice.id).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut tx = cx.store.begin().await?;
    let resends = tx.notices_delivery_started(&ids, cx.now_ms()).await?;
    let current: HashMap<i64, OutboxRow> = tx.notices(&ids).await?.into_iter().map(|n| (n.id, n)).collect();
    for id in resends {
        let Some(notice) = current.get(&id) else { continue };
        let detail = serde_json::json!({
            "notice": id,
            "kind": notice.kind,
            "message_id": notice.message_id,
            "attempt": notice.delivery_attempts,
            "why": "an earlier attempt ended without its outcome on record (the daemon stopped or lost its lease while sending); the server may hold the message already, and the copy carries the same Message-ID",
        });
        tx.append_event(&cx.event(ctx, notice.account.as_deref(), None, "notice_resent", detail)).await?;
        warn!(notice = id, message_id = %notice.message_id, "resending a notice whose earlier attempt has no recorded outcome");
    }
    tx.commit().await?;
    Ok(current)
}

/// Puts the sent-mark of accepted notice `notice` (job `i` of `batch`) with those waiting for
/// the daemon's group commit ([`SentMarks`]) at once; the returned [`Reply`] learns its outcome.
fn push_mark(cx: &Ctx, ctx: &MigrationCtx, batch: &[(JobRow, Lease)], i: usize, notice: OutboxRow) -> Reply {
    let (done, reply) = tokio::sync::oneshot::channel();
    let (job, lease) = &batch[i];
    let id = notice.id;
    let mark = SentMark {
        migration: ctx.id.to_string(),
        notice,
        job_id: job.id,
        lease: lease.clone(),
        at: std::time::Instant::now(),
        done,
    };
    cx.sent_marks.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(mark);
    Reply { i, id, reply, outcome: None }
}

/// Has accepted notices recorded: the sent-marks already pushed for `replies`, and those
/// whose replies arrive on `more` while it runs (until it is closed). Takes a turn of the
/// group commit whenever none is running and a mark of ours waits, else waits for the running
/// turn to end (it may have taken ours); returns the outcome of each.
async fn record_sent(
    cx: &Ctx,
    ctx: &MigrationCtx,
    mut replies: Vec<Reply>,
    mut more: Option<tokio::sync::mpsc::UnboundedReceiver<Reply>>,
) -> Vec<(usize, StepResult)> {
    loop {
        if let Some(channel) = more.as_mut() {
            loop {
                match channel.try_recv() {
                    Ok(reply) => replies.push(reply),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        more = None;
                        break;
                    }
                }
            }
        }
        for reply in replies.iter_mut().filter(|reply| reply.outcome.is_none()) {
            match reply.reply.try_recv() {
                Ok(outcome) => reply.outcome = Some(outcome),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                // The turn that took this mark was cancelled before it told: the fact stands.
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    let marked = cx.store.mark_notice_sent(reply.id, cx.now_ms()).await;
                    reply.outcome = Some(Err(StepError::Transient(anyhow!(
                        "the sent-mark's commit was cancelled; written alone: {marked:?}"
                    ))));
                }
            }
        }
        if replies.iter().all(|reply| reply.outcome.is_some()) {
            match more.as_mut() {
                None => break,
                Some(channel) => match channel.recv().await {
                    Some(reply) => replies.push(reply),
                    None => more = None,
                },
            }
            continue;
        }
        let ended = cx.sent_marks.turn_ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        let turn = cx.sent_marks.committing.try_lock();
        match turn {
            Ok(held) => {
                let _turn = Turn { held: Some(held), ended: &cx.sent_marks.turn_ended };
                commit_turn(cx, ctx).await;
            }
            Err(_) => ended.await,
        }
    }
    replies.into_iter().filter_map(|reply| Some((reply.i, reply.outcome?))).collect()
}

/// A turn of the group commit, held: ending (or cancelled) it releases `committing` first and
/// then wakes the batches waiting, so none of them can find it still held after the wake-up
/// and wait for one that never comes.
struct Turn<'a> {
    held: Option<tokio::sync::MutexGuard<'a, ()>>,
    ended: &'a tokio::sync::Notify,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        self.ended.notify_waiters();
    }
}

/// A mark of ours waiting to be told its outcome.
struct Reply {
    i: usize,
    id: i64,
    reply: tokio::sync::oneshot::Receiver<StepResult>,
    outcome: Option<StepResult>,
}

/// A turn of the group commit (the caller holds `committing`): when fewer than
/// [`MARK_GROUP`] marks wait, it lets the oldest wait up to [`MARK_LINGER`] for more (every
/// commit is a write to disk, an fsync with SQLite's `synchronous=full`, and a commit per
/// message or two would bound the rate), then commits them.
async fn commit_turn(cx: &Ctx, ctx: &MigrationCtx) {
    let (count, oldest) = {
        let waiting = cx.sent_marks.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (waiting.len(), waiting.iter().map(|mark| mark.at).min())
    };
    let Some(oldest) = oldest else { return };
    if count < MARK_GROUP {
        tokio::time::sleep_until((oldest + MARK_LINGER).into()).await;
    }
    commit_marks(cx, ctx).await;
}

/// One turn of the group commit (the caller holds `committing`): once the transaction holds
/// the store's write lock, takes every mark of migration `ctx` waiting and records them in it:
/// the sent-marks (the first time stands), the jobs done whose leases still hold,
/// `notice_sent` for each account a completion notice of those jobs concerns. A job whose
/// lease was lost gets its sent-mark alone; if the transaction fails, the sent-marks are
/// written one by one outside it.
async fn commit_marks(cx: &Ctx, ctx: &MigrationCtx) {
    let begun = cx.store.begin().await;
    let marks: Vec<SentMark> = {
        let mut waiting = cx.sent_marks.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (mine, others): (Vec<SentMark>, Vec<SentMark>) =
            std::mem::take(&mut *waiting).into_iter().partition(|mark| mark.migration == ctx.id.as_str());
        *waiting = others;
        mine
    };
    if marks.is_empty() {
        return;
    }
    let now = cx.now_ms();
    let ids: Vec<i64> = marks.iter().map(|mark| mark.notice.id).collect();
    let leases: Vec<&Lease> = marks.iter().map(|mark| &mark.lease).collect();
    let recorded = async {
        let mut tx = begun?;
        tx.mark_notices_sent(&ids, now).await?;
        let finished: HashSet<i64> = tx.finish_jobs(&leases, now).await?.into_iter().collect();
        // The accounts waiting for a completion notice of a finished job, read through the
        // transaction (never a second pool connection, see `Tx::account`).
        let completions: Vec<(&str, i64)> = marks
            .iter()
            .filter(|mark| mark.notice.kind == "completion" && finished.contains(&mark.job_id))
            .filter_map(|mark| Some((mark.notice.account.as_deref()?, mark.notice.id)))
            .collect();
        for (user, state) in completion_accounts_of(&mut tx, ctx.id.as_str(), &completions).await? {
            cx.apply_account(&mut tx, ctx, &user, &state, AccountEvent::NoticeSent).await?;
        }
        tx.commit().await?;
        Ok::<_, StepError>(finished)
    };
    match recorded.await {
        Ok(finished) => {
            for mark in marks {
                let outcome = if finished.contains(&mark.job_id) {
                    Ok(())
                } else {
                    Err(StepError::LeaseLost(cx.store.lease_lost_reason(&mark.lease).await))
                };
                let _ = mark.done.send(outcome);
            }
        }
        Err(err) => {
            let message = format!("{err:?}");
            for mark in marks {
                if let Err(err) = cx.store.mark_notice_sent(mark.notice.id, now).await {
                    warn!(notice = mark.notice.id, error = %err, "could not record a sent-mark; the notice is resent with its Message-ID");
                }
                let _ =
                    mark.done.send(Err(StepError::Transient(anyhow!("recording the sent-mark: {message}"))));
            }
        }
    }
}

/// A notice refused for good (5xx: no such mailbox; a webhook's 4xx), in one leased
/// transaction: its attempt ended with the server's words, the notice marked failed, customer
/// service told to call the customer, a completion notice's account moved on (the move itself
/// succeeded: it is not held), the job done.
async fn refused(
    cx: &Ctx,
    ctx: &MigrationCtx,
    lease: &Lease,
    notice: &OutboxRow,
    message: &str,
) -> StepResult {
    warn!(notice = notice.id, error = %message, "notice refused for good; marked failed, customer service told");
    let now = cx.now_ms();
    let mut tx = cx.store.begin_leased(lease).await?;
    tx.notice_failed(notice.id, message).await?;
    tx.mark_notice_failed(notice.id, now).await?;
    super::staff::queue_failed_notice(cx, &mut tx, ctx, notice, message, false).await?;
    if let (Some(first), "completion") = (&notice.account, notice.kind.as_str()) {
        for (user, state) in completion_accounts(&mut tx, ctx.id.as_str(), first, notice.id).await? {
            let event = AccountEvent::NoticeFailed { reason: message.to_owned() };
            cx.apply_account(&mut tx, ctx, &user, &state, event).await?;
        }
    }
    tx.finish_job(lease, now).await?;
    Ok(tx.commit().await?)
}

/// Writes reminder `n` of an external domain to the outbox (its dedupe key makes it one
/// row however often this runs) and schedules its sending, inside `tx`.
pub async fn queue_reminder(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    row: &DomainRow,
    state: &DomainState,
    n: u32,
) -> Result<(), StepError> {
    let user = row.user.as_str();
    let account = cx
        .store
        .account(ctx.id.as_str(), user)
        .await?
        .ok_or_else(|| anyhow!("account {user} is not in migration {}", ctx.id))?;
    let context = domain_context(cx, ctx, &account, row, state).await?;
    let language = language_of(account.language.as_deref(), &cx.world.language);
    let template = ctx.playbook.notices.reminder.for_language(&language);
    let (subject, body, html) = rendered(template, &context, "reminder")?;
    let mode = ctx.playbook.notices.reseller_customers;
    let recipients: Vec<String> = via_reseller(mode, &account)
        .map(str::to_owned)
        .or_else(|| account.contact_email.clone())
        .into_iter()
        .collect();
    let domain = DomainName::parse(&row.domain).context("stored domain")?;
    let now = cx.now_ms();
    let notice = NewNotice {
        migration_id: ctx.id.to_string(),
        account: Some(user.to_owned()),
        kind: "reminder".to_owned(),
        message_id: format!("<reminder.{n}.{}.{}@siirto>", row.domain, ctx.id),
        dedupe_key: reminder_notice_key(&ctx.id, &domain, n),
        recipients: serde_json::to_string(&recipients).context("recipients")?,
        subject,
        body,
        html,
        created_at: now,
    };
    // Already queued by an earlier run that crashed before recording: the row stands and
    // its send job was scheduled in the same transaction.
    if let Some(id) = tx.enqueue_notice(&notice).await? {
        schedule_send(cx, tx, ctx, id, now).await?;
    }
    Ok(())
}

/// Schedules the sending of outbox row `id` now, inside `tx` (one job per row, by its key).
pub async fn schedule_send(
    cx: &Ctx,
    tx: &mut Tx<'_>,
    ctx: &MigrationCtx,
    id: i64,
    now: i64,
) -> Result<(), StepError> {
    tx.schedule_job(&send_job(cx, ctx, id, now)).await?;
    Ok(())
}

/// The job that sends outbox row `id`, due `now` (keyed by the row: one per row).
pub fn send_job(cx: &Ctx, ctx: &MigrationCtx, id: i64, now: i64) -> NewJob {
    cx.job(ctx, JobKind::SendNotice, &id.to_string(), serde_json::json!({}), now, format!("send_notice:{id}"))
}

/// The notice variable `external_records`: one entry per record the customer must change.
pub fn external_records_of(domain: &str, changes: &[RecordChange]) -> Vec<serde_json::Value> {
    changes
        .iter()
        .map(|c| {
            serde_json::json!({
                "domain": domain,
                "name": c.name,
                "type": c.rtype,
                "old_value": c.old_value,
                "new_value": c.new_value,
            })
        })
        .collect()
}
