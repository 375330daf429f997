//! The status page: server-rendered HTML (minijinja, auto-escaped), readable without
//! JavaScript; the search, a customer's timeline, a migration's overview (with the old
//! server's decommission: its stages, and why an old account is still open), the login, and the
//! operator forms, which post to the same [`super::actions`] the API calls.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use super::actions::{Action, perform};
use super::i18n::{LANG_COOKIE, Lang};
use super::{App, Principal};
use crate::playbook::StageAction;
use crate::status::{self, Progress};

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("index.html", include_str!("templates/index.html")),
    ("search.html", include_str!("templates/search.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("overview_part.html", include_str!("templates/overview_part.html")),
    ("timeline.html", include_str!("templates/timeline.html")),
    ("timeline_part.html", include_str!("templates/timeline_part.html")),
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("the page templates parse");
        }
        env
    })
}

/// What every page gets: the language, its phrases, who is signed in, a message.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// The language switch.
    pub lang: Option<String>,
    /// A message from the action that led here.
    pub msg: Option<String>,
    /// `error` when the message is a refusal.
    pub kind: Option<String>,
    /// Only the live part of the page (what the script swaps in).
    pub part: Option<String>,
    /// `now`: the overview asks public DNS now about the accounts the decommission's pending
    /// stages would take, instead of showing the evidence they recorded.
    pub check: Option<String>,
}

#[derive(Serialize)]
struct Who {
    name: String,
    role: &'static str,
    csrf: String,
}

fn phrases(lang: Lang) -> BTreeMap<String, String> {
    super::i18n::keys().map(|key| (key.to_owned(), lang.t(key))).collect()
}

/// The language of this request, and the cookie that keeps a switch.
fn language(headers: &HeaderMap, query: &PageQuery) -> (Lang, Option<HeaderValue>) {
    match query.lang.as_deref().and_then(Lang::parse) {
        Some(lang) => {
            let cookie = format!("{LANG_COOKIE}={}; Path=/; SameSite=Strict; Max-Age=31536000", lang.code());
            (lang, HeaderValue::from_str(&cookie).ok())
        }
        None => (Lang::of(headers), None),
    }
}

fn render(template: &str, context: minijinja::Value) -> Response {
    match env().get_template(template).and_then(|t| t.render(context)) {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), template, "rendering a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be drawn; see the daemon's log\n")
                .into_response()
        }
    }
}

struct Page<'a> {
    lang: Lang,
    set_lang: Option<HeaderValue>,
    who: Option<&'a Principal>,
    query: &'a PageQuery,
}

impl<'a> Page<'a> {
    fn new(headers: &HeaderMap, query: &'a PageQuery, who: Option<&'a Principal>) -> Page<'a> {
        let (lang, set_lang) = language(headers, query);
        Page { lang, set_lang, who, query }
    }

    /// Renders `template` with the common context and `extra`.
    fn render(&self, template: &str, title: &str, extra: minijinja::Value) -> Response {
        let who = self.who.map(|p| Who {
            name: p.name.clone(),
            role: p.role.as_str(),
            csrf: p.csrf.clone().unwrap_or_default(),
        });
        let context = minijinja::context! {
            lang => self.lang.code(),
            t => phrases(self.lang),
            title => title,
            who => who,
            operator => self.who.is_some_and(Principal::is_operator),
            msg => self.query.msg.clone(),
            msg_kind => if self.query.kind.as_deref() == Some("error") { "error" } else { "" },
            ..extra
        };
        let mut response = render(template, context);
        if let Some(cookie) = &self.set_lang {
            response.headers_mut().insert(header::SET_COOKIE, cookie.clone());
        }
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The login form (also the body of a 401 for a page).
pub fn login_page(_app: &App, lang: Lang, next: Option<&str>) -> Response {
    let query = PageQuery::default();
    let page = Page { lang, set_lang: None, who: None, query: &query };
    page.render(
        "login.html",
        &lang.t("login"),
        minijinja::context! { next => next.unwrap_or("/"), failed => false },
    )
}

/// `GET /login`.
pub async fn login_form(
    State(_app): State<App>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let page = Page::new(&headers, &query, None);
    page.render("login.html", &page.lang.t("login"), minijinja::context! { next => "/", failed => false })
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login`: a valid token gets a session cookie and goes on; another gets the form again.
pub async fn login(State(app): State<App>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let now = app.clock.now().timestamp();
    match app.access.session_for(form.token.trim(), now) {
        Some((principal, cookie)) => {
            tracing::info!(
                who = principal.name,
                role = principal.role.as_str(),
                "signed in to the status page"
            );
            let next = safe_next(&form.next);
            let mut response = Redirect::to(&next).into_response();
            if let Ok(value) = HeaderValue::from_str(&app.access.set_cookie(&cookie)) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        None => {
            let query = PageQuery::default();
            let page = Page::new(&headers, &query, None);
            let mut response = page.render(
                "login.html",
                &page.lang.t("login"),
                minijinja::context! { next => safe_next(&form.next), failed => true },
            );
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
    }
}

/// Only a path of this site (no scheme, no `//host`) is followed after a login.
fn safe_next(next: &str) -> String {
    let ok =
        next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') && !next.contains("://");
    if ok { next.to_owned() } else { "/".to_owned() }
}

/// `POST /logout`.
pub async fn logout(State(app): State<App>) -> Response {
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&app.access.clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// `GET /static/{file}`: the style sheet and the script.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (include_str!("static/app.css"), "text/css; charset=utf-8"),
        "app.js" => (include_str!("static/app.js"), "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

fn failed(err: anyhow::Error) -> Response {
    let text = format!("{err:#}");
    if super::is_not_found(&err) {
        return (StatusCode::NOT_FOUND, format!("{text}\n")).into_response();
    }
    tracing::error!(error = %text, "a page's read failed");
    (StatusCode::INTERNAL_SERVER_ERROR, "the store failed; see the daemon's log\n").into_response()
}

/// `GET /`: the migrations.
pub async fn index(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    Query(query): Query<PageQuery>,
) -> Response {
    let page = Page::new(&headers, &query, Some(&who));
    let rows = match app.store.migrations().await {
        Ok(rows) => rows,
        Err(err) => return failed(err.into()),
    };
    let migrations: Vec<_> = rows
        .iter()
        .rev()
        .map(|row| {
            minijinja::context! {
                id => row.id, source => row.source_host, target => row.target_host, state => row.state,
                cutover_at => crate::domain::from_millis(row.cutover_at).to_rfc3339(),
            }
        })
        .collect();
    page.render(
        "index.html",
        &page.lang.t("migrations"),
        minijinja::context! { migrations, focus_search => true },
    )
}

/// The search's query.
#[derive(Debug, Deserialize)]
pub struct SearchForm {
    #[serde(default)]
    q: String,
    lang: Option<String>,
}

/// `GET /search?q=`: one customer goes straight to their timeline; several are listed.
pub async fn search(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    Query(form): Query<SearchForm>,
) -> Response {
    let query = PageQuery { lang: form.lang.clone(), ..PageQuery::default() };
    let page = Page::new(&headers, &query, Some(&who));
    let hits = match crate::search::search(&app.store, &form.q, 50).await {
        Ok(hits) => hits,
        Err(err) => return failed(err),
    };
    let customers: std::collections::BTreeSet<(String, String)> = hits
        .iter()
        .map(|h| {
            (h.migration_id.clone(), h.customer_key.clone().unwrap_or_else(|| format!("user-{}", h.user)))
        })
        .collect();
    if customers.len() == 1
        && let Some(hit) = hits.first()
    {
        return Redirect::to(&format!("/m/{}/a/{}", hit.migration_id, hit.user)).into_response();
    }
    page.render(
        "search.html",
        &page.lang.t("search"),
        minijinja::context! { hits, q => form.q, focus_search => true },
    )
}

/// One progress bar.
#[derive(Serialize)]
struct Bar {
    key: &'static str,
    label: String,
    done: usize,
    of: usize,
    percent: usize,
}

fn bars(lang: Lang, progress: &Progress) -> Vec<Bar> {
    let bar = |key: &'static str, done: usize, of: usize| Bar {
        key,
        label: lang.t(key),
        done,
        of,
        percent: (done * 100).checked_div(of).unwrap_or(0),
    };
    vec![
        bar("transferred", progress.transferred, progress.accounts),
        bar("verified", progress.verified, progress.accounts),
        bar("repointed", progress.repointed, progress.domains),
        bar("arrived", progress.arrived, progress.accounts),
        bar("notices_sent", progress.notices_sent, progress.notices),
    ]
}

/// `GET /m/{id}`: a migration's overview (`?part=main`: only what the live view swaps).
pub async fn overview(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let page = Page::new(&headers, &query, Some(&who));
    if crate::names::MigrationId::parse(&id).is_err() {
        return (StatusCode::BAD_REQUEST, "not a migration id\n").into_response();
    }
    let status = match status::overview(&app.store, &id).await {
        Ok(status) => status,
        Err(err) => return failed(err),
    };
    let progress = status.progress.clone();
    let tasks = match status::operator_tasks(&app.store, &id).await {
        Ok(tasks) => tasks,
        Err(err) => return failed(err),
    };
    let events = match app.store.events_latest(&id, 20).await {
        Ok(rows) => rows.iter().map(status::log_entry).collect::<Vec<_>>(),
        Err(err) => return failed(err.into()),
    };
    let now = app.clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let next_stage =
        status.schedule.iter().find(|item| item.what.starts_with("decommission") && item.at > now).cloned();
    let check_now = query.check.as_deref() == Some("now");
    let stages = match decommission(&app, &id, check_now).await {
        Ok(stages) => stages,
        Err(err) => return failed(err),
    };
    let template = if query.part.is_some() { "overview_part.html" } else { "overview.html" };
    // A view checked through public DNS just now is a snapshot: its live updates would swap the
    // answers for the recorded ones (and asking again at every change would be slow).
    let live = (!check_now).then(|| format!("/live/{id}"));
    page.render(
        template,
        &format!("{} {id}", page.lang.t("migration")),
        minijinja::context! {
            bars => bars(page.lang, &progress),
            tasks,
            held => progress.held,
            events,
            next_stage,
            kept_open => stages.iter().any(|stage| !stage.held.is_empty()),
            stages,
            checked_now => check_now,
            can_check => app.world.public_dns.is_some(),
            s => status,
            live,
            every => 1000,
            part => format!("/m/{id}?part=main"),
        },
    )
}

/// Who postponed, skipped or undid a decommission stage, when and why (from its detail).
#[derive(Debug, Default, Serialize, Deserialize)]
struct StageChange {
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    at: String,
    /// The date a postponement moved it from.
    #[serde(default)]
    from: Option<String>,
}

/// One decommission stage as the overview shows it.
#[derive(Debug, Serialize)]
struct StageView {
    place: i64,
    name: String,
    action: String,
    manual: bool,
    due: String,
    /// The date as a browser's `datetime-local` value in UTC: the postponement's least.
    due_local: String,
    state: String,
    postponed: Option<StageChange>,
    skipped: Option<StageChange>,
    undone: Option<StageChange>,
    /// Whether it acts on accounts (suspends or removes them), so its counts mean something.
    account_stage: bool,
    done: usize,
    held: Vec<crate::ops::HeldAccount>,
    /// Accounts it has still to do and does not hold (with the live check: those clear now).
    to_do: usize,
    /// What keeps a blocked stage from running, in lines (its detail's `blocked`).
    blocked: Vec<String>,
    can_postpone: bool,
    can_skip: bool,
    can_undo: bool,
}

/// Whether a stage of this action can be undone at all (a removal and destroyed disks cannot).
fn undoable(action: StageAction) -> bool {
    match action {
        StageAction::SuspendAccounts | StageAction::CancelLicence | StageAction::PowerOff => true,
        StageAction::RemoveAccounts | StageAction::DestroyDisks => false,
    }
}

impl StageView {
    fn of(stage: crate::ops::StagePlan) -> StageView {
        let change = |key: &str| {
            let found =
                stage.detail.get(key).and_then(|v| serde_json::from_value::<StageChange>(v.clone()).ok());
            found.map(|c| StageChange { at: to_seconds(&c.at), from: c.from.as_deref().map(to_seconds), ..c })
        };
        let due_local = chrono::DateTime::parse_from_rfc3339(&stage.due)
            .map(|due| due.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M").to_string())
            .unwrap_or_default();
        let action = serde_json::from_value::<StageAction>(serde_json::json!(stage.action)).ok();
        // Which forms the page offers: the operator functions decide, and refuse with their
        // reason whatever slips through (a suspension after a removal, a date not later).
        let open = !matches!(stage.state.as_str(), "done" | "skipped" | "undone");
        let ran = !matches!(stage.state.as_str(), "pending" | "skipped" | "undone");
        // Without the live check the preview lists every account the stage has still to take,
        // those it holds included; they are counted once, as held.
        let to_do =
            stage.would_touch.iter().filter(|user| !stage.held.iter().any(|h| &h.account == *user)).count();
        let account_stage = !stage.manual
            && matches!(action, Some(StageAction::SuspendAccounts | StageAction::RemoveAccounts));
        let blocked =
            if stage.state == "blocked" { blocked_lines(&stage.detail["blocked"]) } else { Vec::new() };
        StageView {
            place: stage.stage,
            account_stage,
            blocked,
            to_do,
            postponed: change("postponed"),
            skipped: change("skipped"),
            undone: change("undone"),
            done: stage.done.len(),
            can_postpone: open,
            can_skip: open,
            can_undo: ran && action.is_some_and(undoable),
            name: stage.name,
            action: stage.action,
            manual: stage.manual,
            due: to_seconds(&stage.due),
            due_local,
            // A skipped or undone stage holds nothing any more: what it recorded is history
            // (the API's plan keeps it), not a reason an account is open.
            held: if open || stage.state == "done" { stage.held } else { Vec::new() },
            state: stage.state,
        }
    }
}

/// What blocks a stage, one line each: the accounts it waits for and why, the traffic still
/// reaching the old server, and any other reason the stage recorded (a licence's refusal).
fn blocked_lines(blocked: &serde_json::Value) -> Vec<String> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let mut lines = Vec::new();
    let Some(map) = blocked.as_object() else {
        return lines;
    };
    for (key, value) in map {
        match (key.as_str(), value.as_array()) {
            ("accounts", Some(accounts)) => {
                lines.extend(accounts.iter().map(|a| format!("{}: {}", text(&a["account"]), text(&a["why"]))))
            }
            ("traffic", Some(seen)) => lines.extend(
                seen.iter()
                    .map(|e| format!("{} {}: {}", text(&e["name"]), text(&e["rtype"]), text(&e["answer"]))),
            ),
            _ => lines.push(format!("{key}: {}", text(value))),
        }
    }
    lines
}

/// An RFC 3339 time to the second, in UTC (`2027-01-05T07:56:21Z`), as the page shows times;
/// anything else as it is.
fn to_seconds(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|_| at.to_owned())
}

/// The decommission's stages through the operator function the CLI's `--plan` calls, with the
/// stored evidence, or with public DNS asked now (`check_now`). Nothing before the cutover,
/// which records the stages: a migration still moving, refreshed live, skips the reads.
async fn decommission(app: &App, id: &str, check_now: bool) -> anyhow::Result<Vec<StageView>> {
    if app.store.stages(id).await?.is_empty() {
        return Ok(Vec::new());
    }
    let id = crate::names::MigrationId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let world = check_now.then_some(app.world.as_ref());
    let plan = crate::ops::decommission_plan(&app.store, world, &id).await?;
    // Once the disks are destroyed nothing can be undone: no stage offers it.
    let destroyed =
        plan.stages.iter().any(|s| s.action == StageAction::DestroyDisks.as_str() && s.state == "done");
    let mut stages: Vec<StageView> = plan.stages.into_iter().map(StageView::of).collect();
    if destroyed {
        stages.iter_mut().for_each(|stage| stage.can_undo = false);
    }
    Ok(stages)
}

/// `GET /m/{id}/a/{user}`: the timeline of the customer who owns the account.
pub async fn timeline(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    Path((id, user)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Response {
    let page = Page::new(&headers, &query, Some(&who));
    if crate::names::MigrationId::parse(&id).is_err() || crate::names::AccountName::parse(&user).is_err() {
        return (StatusCode::BAD_REQUEST, "not a migration id or a cPanel user name\n").into_response();
    }
    let timeline = match status::timeline(&app.store, &id, &user).await {
        Ok(timeline) => timeline,
        Err(err) => return failed(err),
    };
    let users: Vec<&str> = timeline.accounts.iter().map(|a| a.user.as_str()).collect();
    let title = timeline.customer.name.clone().unwrap_or_else(|| user.clone());
    let template = if query.part.is_some() { "timeline_part.html" } else { "timeline.html" };
    page.render(
        template,
        &title,
        minijinja::context! {
            live => format!("/live/{id}?accounts={}", users.join(",")),
            every => 300,
            part => format!("/m/{id}/a/{user}?part=main"),
            c => timeline,
        },
    )
}

/// Where an operator form goes back to, with what happened.
fn back(to: &str, result: Result<super::actions::ActionOutcome, super::actions::ActionError>) -> Response {
    let (msg, kind) = match result {
        Ok(outcome) => (outcome.message, "ok"),
        Err(err) => (err.error, "error"),
    };
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("msg", &msg)
        .append_pair("kind", kind)
        .finish();
    Redirect::to(&format!("{to}?{encoded}")).into_response()
}

/// An operator form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    until: String,
}

/// `POST /m/{id}/pause`.
pub async fn pause(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    back(&format!("/m/{id}"), perform(&app, &who, &id, Action::Pause).await)
}

/// `POST /m/{id}/resume`.
pub async fn resume(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    back(&format!("/m/{id}"), perform(&app, &who, &id, Action::Resume).await)
}

/// `POST /m/{id}/abort`.
pub async fn abort(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    back(&format!("/m/{id}"), perform(&app, &who, &id, Action::Abort { reason: form.reason }).await)
}

/// `POST /m/{id}/a/{user}/retry`.
pub async fn retry(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((id, user)): Path<(String, String)>,
) -> Response {
    let to = format!("/m/{id}/a/{user}");
    back(&to, perform(&app, &who, &id, Action::Retry { user }).await)
}

/// `POST /m/{id}/a/{user}/rollback`.
pub async fn rollback(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((id, user)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let to = format!("/m/{id}/a/{user}");
    let domain = Some(form.domain).filter(|d| !d.trim().is_empty());
    back(&to, perform(&app, &who, &id, Action::Rollback { user, domain, reason: form.reason }).await)
}

/// `POST /m/{id}/a/{user}/assign-ip`.
pub async fn assign_ip(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((id, user)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let to = format!("/m/{id}/a/{user}");
    back(&to, perform(&app, &who, &id, Action::AssignIp { user, ip: form.ip }).await)
}

/// `POST /m/{id}/tasks/{task}/ack`.
pub async fn ack(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((id, task)): Path<(String, i64)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let note = Some(form.note).filter(|n| !n.trim().is_empty());
    back(&format!("/m/{id}"), perform(&app, &who, &id, Action::Ack { task, note }).await)
}

/// `POST /m/{id}/decommission/{stage}/postpone`.
pub async fn postpone_stage(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((id, stage)): Path<(String, i64)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let action = Action::PostponeStage { stage, until: form.until, reason: form.reason };
    back(&format!("/m/{id}"), perform(&app, &who, &id, action).await)
}

/// `POST /m/{id}/decommission/{stage}/skip`.
pub async fn skip_stage(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((id, stage)): Path<(String, i64)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let action = Action::SkipStage { stage, reason: form.reason };
    back(&format!("/m/{id}"), perform(&app, &who, &id, action).await)
}

/// `POST /m/{id}/decommission/{stage}/undo`.
pub async fn undo_stage(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path((id, stage)): Path<(String, i64)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let action = Action::UndoStage { stage, reason: form.reason };
    back(&format!("/m/{id}"), perform(&app, &who, &id, action).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_a_login_page_escapes_what_it_is_given() {
        let env = env();
        for (name, _) in TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
        let html = env
            .get_template("login.html")
            .and_then(|t| {
                t.render(minijinja::context! {
                    lang => "en", t => phrases(Lang::En), title => "x", next => "\"><script>alert(1)</script>", failed => true,
                })
            })
            .expect("renders");
        assert!(html.contains("&quot;&gt;&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>alert"), "{html}");
    }

    #[test]
    fn a_blocked_stage_says_what_blocks_it_line_by_line() {
        let blocked = serde_json::json!({
            "accounts": [{ "account": "kukka0001", "why": "held by \"suspend accounts\"" }],
            "traffic": [{ "resolver": "", "name": "kukka-0001.test", "rtype": "HTTP", "answer": "GET / 200" }],
            "licence": "1234",
        });
        assert_eq!(
            blocked_lines(&blocked),
            ["kukka0001: held by \"suspend accounts\"", "licence: 1234", "kukka-0001.test HTTP: GET / 200",]
        );
        assert!(blocked_lines(&serde_json::Value::Null).is_empty());
    }

    #[test]
    fn only_a_path_of_this_site_is_followed_after_a_login() {
        assert_eq!(safe_next("/m/x/a/y"), "/m/x/a/y");
        for bad in ["https://evil.example/", "//evil.example/", "/\\evil", "javascript:alert(1)", ""] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }
}
