//! The JSON API under `/api/v1/`: everything the page shows and every operator action, with
//! its OpenAPI 3.1 document generated from these handlers and their types (utoipa) and served
//! at `/api/v1/openapi.json`.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::actions::{Action, ActionError, ActionOutcome, perform};
use super::{App, Principal};
use crate::names::{AccountName, MigrationId};
use crate::ops::DecommissionPlan;
use crate::status::{self, LogEntry, MigrationStatus, NoticeEntry, OpenTask, Progress, Timeline};

/// The API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "siirto",
        description = "Where a server move stands, what each customer was told, and the operator actions. \
                       Every request needs `Authorization: Bearer TOKEN` (a viewer's token reads, an operator's also acts).",
        version = "1"
    ),
    paths(
        migrations, migration, progress, events, notices, timeline, search, pause, resume, abort, retry, rollback,
        assign_ip, ack, tasks, decommission, postpone_stage, skip_stage, undo_stage
    ),
    components(schemas(ApiError)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The bearer scheme, and the error answers every operation can give (the guard's 401 and
/// 403, the extractors' 400, 415 and 422, the store's 500), so no handler can forget them.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let answer = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ApiError"))).build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let reads = [&mut item.get];
            let writes = [&mut item.post];
            for operation in reads.into_iter().flatten() {
                for (code, text) in [
                    ("400", "a parameter is not valid"),
                    ("401", "no token, or not one of ours"),
                    ("404", "no such migration or account"),
                    ("500", "the store failed"),
                ] {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| answer(text).into());
                }
            }
            for operation in writes.into_iter().flatten() {
                for (code, text) in [
                    ("400", "a parameter or the body is not valid"),
                    ("401", "no token, or not one of ours"),
                    ("403", "a viewer's token, or a browser form without its CSRF token"),
                    ("404", "no such migration or account"),
                    ("409", "refused in the migration's or account's state"),
                    ("415", "the body is not JSON"),
                    ("422", "the JSON body does not have the documented shape"),
                    ("500", "the store failed"),
                    ("502", "a host did not answer"),
                ] {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| answer(text).into());
                }
            }
        }
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// Why, in words.
    pub error: String,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(ApiError { error: message.into() })).into_response()
}

/// A read's failure: no such migration or account is 404, bad input 400, the rest 500 (logged,
/// not shown).
fn read_failed(err: anyhow::Error) -> Response {
    if super::is_not_found(&err) {
        return error(StatusCode::NOT_FOUND, format!("{err:#}"));
    }
    tracing::error!(error = %format!("{err:#}"), "an API read failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "the store failed; see the daemon's log")
}

/// A path parameter that is not a valid name: 400 with why.
struct BadName(String);

impl IntoResponse for BadName {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, self.0)
    }
}

fn valid_id(id: &str) -> Result<MigrationId, BadName> {
    MigrationId::parse(id).map_err(|e| BadName(e.to_string()))
}

fn valid_user(user: &str) -> Result<AccountName, BadName> {
    AccountName::parse(user).map_err(|e| BadName(e.to_string()))
}

/// A migration's path parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MigrationPath {
    /// The migration's id.
    #[param(pattern = "^[a-z0-9-]{1,64}$")]
    pub id: String,
}

/// An account's path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountPath {
    /// The migration's id.
    #[param(pattern = "^[a-z0-9-]{1,64}$")]
    pub id: String,
    /// The cPanel user.
    #[param(pattern = "^[a-z][a-z0-9]{0,15}$")]
    pub user: String,
}

/// One migration in the list.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationSummary {
    /// Its id.
    pub id: String,
    /// The source host.
    pub source: String,
    /// The target host.
    pub target: String,
    /// Its state name.
    pub state: String,
    /// The earliest cutover (RFC 3339).
    pub cutover_at: String,
}

/// Every migration in the store, oldest first.
#[utoipa::path(get, path = "/api/v1/migrations", responses((status = 200, body = Vec<MigrationSummary>)))]
pub async fn migrations(State(app): State<App>) -> Response {
    match app.store.migrations().await {
        Ok(rows) => Json(
            rows.into_iter()
                .map(|row| MigrationSummary {
                    id: row.id,
                    source: row.source_host,
                    target: row.target_host,
                    state: row.state,
                    cutover_at: crate::domain::from_millis(row.cutover_at).to_rfc3339(),
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(err) => read_failed(err.into()),
    }
}

/// A migration's full status: as `siirto status --json`.
#[utoipa::path(
    get, path = "/api/v1/migrations/{id}",
    params(MigrationPath),
    responses((status = 200, body = MigrationStatus))
)]
pub async fn migration(State(app): State<App>, Path(MigrationPath { id }): Path<MigrationPath>) -> Response {
    let id = match valid_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad.into_response(),
    };
    match status::migration_status(&app.store, id.as_str()).await {
        Ok(status) => Json(status).into_response(),
        Err(err) => read_failed(err),
    }
}

/// How far a migration is: as `siirto watch --json`.
#[utoipa::path(
    get, path = "/api/v1/migrations/{id}/progress",
    params(MigrationPath),
    responses((status = 200, body = Progress))
)]
pub async fn progress(State(app): State<App>, Path(MigrationPath { id }): Path<MigrationPath>) -> Response {
    let id = match valid_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad.into_response(),
    };
    match status::progress(&app.store, id.as_str()).await {
        Ok(progress) => Json(progress).into_response(),
        Err(err) => read_failed(err),
    }
}

/// Which events to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Only events written after this id (0: from the start).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// At most this many (default and largest 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A migration's events in words, oldest first: as `siirto log --json`.
#[utoipa::path(
    get, path = "/api/v1/migrations/{id}/events",
    params(MigrationPath, EventsQuery),
    responses((status = 200, body = Vec<LogEntry>))
)]
pub async fn events(
    State(app): State<App>,
    Path(MigrationPath { id }): Path<MigrationPath>,
    Query(query): Query<EventsQuery>,
) -> Response {
    let id = match valid_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad.into_response(),
    };
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(1000);
    if after < 0 || !(1..=1000).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "expected after ≥ 0 and limit from 1 to 1000");
    }
    let limit = limit as usize;
    if let Err(err) = app.store.require_migration(id.as_str()).await {
        return read_failed(err.into());
    }
    match status::log_entries(&app.store, id.as_str(), after, &status::LogFilter::default()).await {
        Ok((entries, _)) => Json(entries.into_iter().take(limit).collect::<Vec<_>>()).into_response(),
        Err(err) => read_failed(err),
    }
}

/// Which notices to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct NoticesQuery {
    /// Only notices in this state (`queued`, `sending`, `failing`, `failed`, `sent`,
    /// `bounced`, `skipped_late`).
    pub state: Option<String>,
}

/// A migration's notices and what became of each: as `siirto notices list --json`.
#[utoipa::path(
    get, path = "/api/v1/migrations/{id}/notices",
    params(MigrationPath, NoticesQuery),
    responses((status = 200, body = Vec<NoticeEntry>))
)]
pub async fn notices(
    State(app): State<App>,
    Path(MigrationPath { id }): Path<MigrationPath>,
    Query(query): Query<NoticesQuery>,
) -> Response {
    let id = match valid_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad.into_response(),
    };
    match status::notices(&app.store, id.as_str(), query.state.as_deref()).await {
        Ok(entries) => Json(entries).into_response(),
        Err(err) => read_failed(err),
    }
}

/// The timeline of the customer who owns an account: their accounts and domains, what happens
/// next and when, what they must still do, the events, and every notice with its text.
#[utoipa::path(
    get, path = "/api/v1/migrations/{id}/accounts/{user}",
    params(AccountPath),
    responses((status = 200, body = Timeline))
)]
pub async fn timeline(State(app): State<App>, Path(AccountPath { id, user }): Path<AccountPath>) -> Response {
    let (id, user) = match (valid_id(&id), valid_user(&user)) {
        (Ok(id), Ok(user)) => (id, user),
        (Err(bad), _) | (_, Err(bad)) => return bad.into_response(),
    };
    match status::timeline(&app.store, id.as_str(), user.as_str()).await {
        Ok(timeline) => Json(timeline).into_response(),
        Err(err) => read_failed(err),
    }
}

/// What to look for.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// A domain (a subdomain or `www.` name too, Unicode or punycode), a cPanel user, a
    /// customer's name, an e-mail address, a contract id or a reseller.
    pub q: String,
}

/// The accounts matching a search, over every migration.
#[utoipa::path(
    get, path = "/api/v1/search",
    params(SearchQuery),
    responses((status = 200, body = Vec<crate::search::Hit>))
)]
pub async fn search(State(app): State<App>, Query(query): Query<SearchQuery>) -> Response {
    match crate::search::search(&app.store, &query.q, 50).await {
        Ok(hits) => Json(hits).into_response(),
        Err(err) => read_failed(err),
    }
}

fn acted(result: Result<ActionOutcome, ActionError>) -> Response {
    match result {
        Ok(outcome) => Json(outcome).into_response(),
        Err(err) => (err.status(), Json(ApiError { error: err.error })).into_response(),
    }
}

/// Why (an abort; a decommission stage's skip or undo).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct Reason {
    /// Why, recorded with who asked (not blank).
    #[schema(pattern = "\\S", max_length = 2000)]
    pub reason: String,
}

/// Pauses a migration (then its transfer sessions).
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/pause",
    params(MigrationPath),
    responses((status = 200, body = ActionOutcome))
)]
pub async fn pause(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(MigrationPath { id }): Path<MigrationPath>,
) -> Response {
    acted(perform(&app, &who, &id, Action::Pause).await)
}

/// Resumes a paused migration.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/resume",
    params(MigrationPath),
    responses((status = 200, body = ActionOutcome))
)]
pub async fn resume(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(MigrationPath { id }): Path<MigrationPath>,
) -> Response {
    acted(perform(&app, &who, &id, Action::Resume).await)
}

/// Aborts a migration: nothing further happens to it.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/abort",
    params(MigrationPath),
    request_body = Reason,
    responses((status = 200, body = ActionOutcome))
)]
pub async fn abort(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(MigrationPath { id }): Path<MigrationPath>,
    Json(body): Json<Reason>,
) -> Response {
    acted(perform(&app, &who, &id, Action::Abort { reason: body.reason }).await)
}

/// Retries a held or rolled-back account.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/accounts/{user}/retry",
    params(AccountPath),
    responses((status = 200, body = ActionOutcome))
)]
pub async fn retry(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(AccountPath { id, user }): Path<AccountPath>,
) -> Response {
    acted(perform(&app, &who, &id, Action::Retry { user }).await)
}

/// What to roll back and why.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RollbackBody {
    /// One domain of the account, or all of them when absent.
    #[schema(pattern = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$")]
    pub domain: Option<String>,
    /// Why, recorded with who asked (not blank).
    #[schema(pattern = "\\S", max_length = 2000)]
    pub reason: String,
}

/// Rolls an account (or one of its domains) back to the source.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/accounts/{user}/rollback",
    params(AccountPath),
    request_body = RollbackBody,
    responses((status = 200, body = ActionOutcome))
)]
pub async fn rollback(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(AccountPath { id, user }): Path<AccountPath>,
    Json(body): Json<RollbackBody>,
) -> Response {
    acted(perform(&app, &who, &id, Action::Rollback { user, domain: body.domain, reason: body.reason }).await)
}

/// The target address to give.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AssignIpBody {
    /// A dedicated IPv4 address of the target.
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
    )]
    pub ip: String,
}

/// Gives an account waiting for a dedicated IP its address on the target.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/accounts/{user}/assign-ip",
    params(AccountPath),
    request_body = AssignIpBody,
    responses((status = 200, body = ActionOutcome))
)]
pub async fn assign_ip(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(AccountPath { id, user }): Path<AccountPath>,
    Json(body): Json<AssignIpBody>,
) -> Response {
    acted(perform(&app, &who, &id, Action::AssignIp { user, ip: body.ip }).await)
}

/// A task's path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TaskPath {
    /// The migration's id.
    #[param(pattern = "^[a-z0-9-]{1,64}$")]
    pub id: String,
    /// The task's number, as the status lists it.
    #[param(minimum = 1)]
    pub task: i64,
}

/// What was done about an operator task.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AckBody {
    /// What was done, for the timeline.
    #[schema(max_length = 2000)]
    pub note: Option<String>,
}

/// Acknowledges an operator task: the change siirto cannot make was made.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/tasks/{task}/ack",
    params(TaskPath),
    request_body = AckBody,
    responses((status = 200, body = ActionOutcome))
)]
pub async fn ack(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(TaskPath { id, task }): Path<TaskPath>,
    Json(body): Json<AckBody>,
) -> Response {
    acted(perform(&app, &who, &id, Action::Ack { task, note: body.note }).await)
}

/// An open operator task and the migration it belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationTask {
    /// The migration.
    pub migration: String,
    /// The task.
    #[serde(flatten)]
    pub task: OpenTask,
}

/// Every open operator task of every migration (manual decommission stages, spam-filter
/// routes), oldest migration first: as `siirto tasks --json`.
#[utoipa::path(get, path = "/api/v1/tasks", responses((status = 200, body = Vec<MigrationTask>)))]
pub async fn tasks(State(app): State<App>) -> Response {
    let migrations = match app.store.migrations().await {
        Ok(rows) => rows,
        Err(err) => return read_failed(err.into()),
    };
    let mut all = Vec::new();
    for row in migrations {
        match status::operator_tasks(&app.store, &row.id).await {
            Ok(tasks) => {
                all.extend(tasks.into_iter().map(|task| MigrationTask { migration: row.id.clone(), task }))
            }
            Err(err) => return read_failed(err),
        }
    }
    Json(all).into_response()
}

/// Whose evidence the decommission's preview shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// Ask public DNS now about every account a pending stage would take (slow with many).
    Now,
}

/// How to read the decommission.
#[derive(Debug, Deserialize, IntoParams)]
pub struct DecommissionQuery {
    /// `now`: ask public DNS now about every account a pending stage would take (one query per
    /// resolver, name and type: slow with many accounts); without it, the evidence the stages
    /// recorded when they last looked.
    #[param(inline)]
    pub check: Option<Check>,
}

/// The old server's decommission: each stage with its date and state, who postponed, skipped
/// or undid it and why, the accounts it did and those it holds with the evidence (resolver,
/// name, type, answer), and those it would take now: as `siirto decommission MIGRATION --plan
/// --json` (which checks now).
#[utoipa::path(
    get, path = "/api/v1/migrations/{id}/decommission",
    params(MigrationPath, DecommissionQuery),
    responses((status = 200, body = DecommissionPlan))
)]
pub async fn decommission(
    State(app): State<App>,
    Path(MigrationPath { id }): Path<MigrationPath>,
    Query(query): Query<DecommissionQuery>,
) -> Response {
    let id = match valid_id(&id) {
        Ok(id) => id,
        Err(bad) => return bad.into_response(),
    };
    let world = (query.check == Some(Check::Now)).then_some(app.world.as_ref());
    match crate::ops::decommission_plan(&app.store, world, &id).await {
        Ok(plan) => Json(plan).into_response(),
        Err(err) => read_failed(err),
    }
}

/// A decommission stage's path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StagePath {
    /// The migration's id.
    #[param(pattern = "^[a-z0-9-]{1,64}$")]
    pub id: String,
    /// The stage's place, from 0, as the decommission lists it.
    #[param(minimum = 0)]
    pub stage: i64,
}

/// A postponement.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PostponeBody {
    /// The stage's new date (RFC 3339; a time without an offset is read as UTC), later than
    /// its date now and than now.
    #[schema(format = DateTime)]
    pub until: String,
    /// Why, recorded with who asked (not blank).
    #[schema(pattern = "\\S", max_length = 2000)]
    pub reason: String,
}

/// Postpones a decommission stage that has not finished to a later date.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/decommission/{stage}/postpone",
    params(StagePath),
    request_body = PostponeBody,
    responses(
        (status = 200, body = ActionOutcome),
        (status = 404, description = "no such migration or stage", body = ApiError),
        (status = 409, description = "the stage is done, skipped or undone already, or the date is not later", body = ApiError),
        (status = 422, description = "a blank or too long reason, or a date that is not RFC 3339", body = ApiError),
    )
)]
pub async fn postpone_stage(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(StagePath { id, stage }): Path<StagePath>,
    Json(body): Json<PostponeBody>,
) -> Response {
    let action = Action::PostponeStage { stage, until: body.until, reason: body.reason };
    acted(perform(&app, &who, &id, action).await)
}

/// Skips a decommission stage that has not finished: it never runs, and the next one may.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/decommission/{stage}/skip",
    params(StagePath),
    request_body = Reason,
    responses(
        (status = 200, body = ActionOutcome),
        (status = 404, description = "no such migration or stage", body = ApiError),
        (status = 409, description = "the stage is done, skipped or undone already", body = ApiError),
        (status = 422, description = "a blank or too long reason", body = ApiError),
    )
)]
pub async fn skip_stage(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(StagePath { id, stage }): Path<StagePath>,
    Json(body): Json<Reason>,
) -> Response {
    acted(perform(&app, &who, &id, Action::SkipStage { stage, reason: body.reason }).await)
}

/// Undoes a decommission stage that ran: a suspension's accounts are unsuspended on the old
/// server; a manual stage (the licence, the power) gets a task for its inverse. A removal and
/// the disks' destruction cannot be undone.
#[utoipa::path(
    post, path = "/api/v1/migrations/{id}/decommission/{stage}/undo",
    params(StagePath),
    request_body = Reason,
    responses(
        (status = 200, body = ActionOutcome),
        (status = 404, description = "no such migration or stage", body = ApiError),
        (status = 409, description = "the stage has not run, is skipped or undone already, or cannot be undone", body = ApiError),
        (status = 422, description = "a blank or too long reason", body = ApiError),
    )
)]
pub async fn undo_stage(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    Path(StagePath { id, stage }): Path<StagePath>,
    Json(body): Json<Reason>,
) -> Response {
    acted(perform(&app, &who, &id, Action::UndoStage { stage, reason: body.reason }).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_api_route_of_the_table_and_nothing_else() {
        let document = ApiDoc::openapi();
        let json = serde_json::to_value(&document).expect("serializes");
        assert_eq!(json["openapi"], "3.1.0");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in &document.paths.paths {
            if item.get.is_some() {
                documented.push(("GET".into(), path.clone()));
            }
            if item.post.is_some() {
                documented.push(("POST".into(), path.clone()));
            }
        }
        documented.sort();
        let mut routed: Vec<(String, String)> = super::super::routes()
            .into_iter()
            .filter(|r| r.path.starts_with("/api/v1/") && r.path != "/api/v1/openapi.json")
            .map(|r| (r.method.to_string(), r.path.to_owned()))
            .collect();
        routed.sort();
        assert_eq!(documented, routed);
        // Every operation says what a missing token gets.
        for item in document.paths.paths.values() {
            for operation in [&item.get, &item.post].into_iter().flatten() {
                assert!(operation.responses.responses.contains_key("401"));
            }
        }
    }
}
