//! The live feed: server-sent events of a migration's event log (`GET /live/{id}`), each with
//! its event id, so a browser that lost the connection resumes with `Last-Event-ID` and misses
//! nothing. `?accounts=a,b` narrows it to those accounts (and the migration's own events).
//!
//! The feed reads the store, not the engine: every daemon on the database writes events, and
//! any one of them serves the page. On PostgreSQL two transactions can commit their event ids
//! out of order, so each poll reads again everything above the highest id seen more than a few
//! seconds ago and skips the ones already handled: an event committed late behind a higher id
//! still goes out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;

use super::App;
use crate::names::{AccountName, MigrationId};
use crate::store::EventRow;

/// How often the feed looks for new events.
const POLL: Duration = Duration::from_millis(300);
/// How long an event id stays in the re-read window.
const LATE_COMMIT_WINDOW: Duration = Duration::from_secs(5);

/// The feed's narrowing and starting point.
#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    /// Only these accounts' events (comma-separated), and the migration's own.
    pub accounts: Option<String>,
    /// Start after this event id (a browser resumes with `Last-Event-ID` instead).
    pub after: Option<i64>,
}

/// `GET /live/{id}`.
pub async fn feed(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(query): Query<LiveQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = MigrationId::parse(&id) else {
        return (StatusCode::BAD_REQUEST, "not a migration id\n").into_response();
    };
    match app.store.migration(id.as_str()).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::NOT_FOUND, format!("there is no migration {id}\n")).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "the live feed could not read the store");
            return (StatusCode::SERVICE_UNAVAILABLE, "the store did not answer\n").into_response();
        }
    }
    let mut accounts = BTreeSet::new();
    for user in query.accounts.iter().flat_map(|a| a.split(',')).filter(|u| !u.is_empty()) {
        match AccountName::parse(user) {
            Ok(user) => {
                accounts.insert(user.to_string());
            }
            Err(err) => return (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
        }
    }
    let resume =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    let after = match resume.or(query.after) {
        Some(after) => after.max(0),
        None => match app.store.last_event_id().await {
            Ok(last) => last,
            Err(err) => {
                tracing::error!(error = %err, "the live feed could not read the store");
                return (StatusCode::SERVICE_UNAVAILABLE, "the store did not answer\n").into_response();
            }
        },
    };
    let feed = Feed::new(app, id.to_string(), accounts, after);
    Sse::new(stream(feed)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

struct Feed {
    app: App,
    id: String,
    accounts: BTreeSet<String>,
    /// Every event up to this id was handled (sent, or not wanted).
    floor: i64,
    /// Events above the floor handled already, with when: an id below the highest one that
    /// was not seen yet may still commit; once the highest seen one is older than the window,
    /// the floor moves up to it.
    seen: BTreeMap<i64, Instant>,
    /// Read and not yet sent.
    ready: VecDeque<EventRow>,
}

impl Feed {
    fn new(app: App, id: String, accounts: BTreeSet<String>, floor: i64) -> Feed {
        Feed { app, id, accounts, floor, seen: BTreeMap::new(), ready: VecDeque::new() }
    }

    fn wanted(&self, row: &EventRow) -> bool {
        self.accounts.is_empty() || row.account.as_ref().is_none_or(|a| self.accounts.contains(a))
    }

    /// Reads what is new above the floor, skipping what was seen, then moves the floor up to
    /// the highest id seen longer ago than the window.
    async fn read(&mut self) {
        let now = Instant::now();
        match self.app.store.events_after(&self.id, self.floor).await {
            Ok(rows) => {
                for row in rows {
                    if self.seen.contains_key(&row.id) {
                        continue;
                    }
                    self.seen.insert(row.id, now);
                    if self.wanted(&row) {
                        self.ready.push_back(row);
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "the live feed could not read the store; trying again"),
        }
        let settled = self
            .seen
            .iter()
            .filter(|(_, at)| now.duration_since(**at) > LATE_COMMIT_WINDOW)
            .map(|(id, _)| *id)
            .max();
        if let Some(settled) = settled {
            self.floor = self.floor.max(settled);
            self.seen.retain(|id, _| *id > settled);
        }
    }
}

fn stream(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(row) = feed.ready.pop_front() {
                let entry = crate::status::log_entry(&row);
                let data = serde_json::json!({ "migration": row.migration_id, "entry": entry }).to_string();
                let event = Event::default().id(row.id.to_string()).event("change").data(data);
                return Some((Ok(event), feed));
            }
            tokio::time::sleep(POLL).await;
            feed.read().await;
        }
    })
}
