//! The live feed: server-sent events of a migration's event log (`GET /live/{id}`), each with
//! an SSE id up to which everything was sent (the log entry's own id is in its data), so a
//! browser that lost the connection resumes with `Last-Event-ID` and misses nothing. `?accounts=a,b` narrows it to those accounts (and the migration's own events).
//!
//! The feed reads the store, not the engine: every daemon on the database writes events, and
//! any one of them serves the page. It reads every migration's new events (indexed by id) and
//! keeps its own, so a gap in the ids is a real one: on PostgreSQL two transactions can commit
//! their event ids out of order, and the feed waits at such a hole (a few seconds at most, for
//! an id a rolled-back transaction took) while it sends what is above it, so an event committed
//! late behind a higher id still goes out, once.

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
    /// Every event (of any migration) up to this id was handled: sent, not wanted, or given up
    /// as never committed.
    floor: i64,
    /// Ids above the floor handled already.
    seen: BTreeSet<i64>,
    /// Ids above the floor not seen while a higher one was, with when that was noticed: an
    /// event still being committed, or an id a rolled-back transaction took.
    holes: BTreeMap<i64, Instant>,
    /// Read and not yet sent.
    ready: VecDeque<EventRow>,
}

/// The most events one read takes; a feed far behind reads again at once.
const PAGE: i64 = 1000;

impl Feed {
    fn new(app: App, id: String, accounts: BTreeSet<String>, floor: i64) -> Feed {
        Feed {
            app,
            id,
            accounts,
            floor,
            seen: BTreeSet::new(),
            holes: BTreeMap::new(),
            ready: VecDeque::new(),
        }
    }

    fn wanted(&self, row: &EventRow) -> bool {
        row.migration_id == self.id
            && (self.accounts.is_empty() || row.account.as_ref().is_none_or(|a| self.accounts.contains(a)))
    }

    /// Reads the store's events above the floor (all migrations', so a gap in the ids is a real
    /// one), keeps this feed's, and moves the floor past everything seen and past holes older
    /// than the window. Returns whether a whole page was read (more may wait).
    async fn read(&mut self) -> bool {
        let now = Instant::now();
        let rows = match self.app.store.events_since(self.floor, PAGE).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(error = %err, "the live feed could not read the store; trying again");
                return false;
            }
        };
        let full = rows.len() as i64 == PAGE;
        for row in rows {
            if !self.seen.insert(row.id) {
                continue;
            }
            self.holes.remove(&row.id);
            if self.wanted(&row) {
                self.ready.push_back(row);
            }
        }
        let top = self.seen.last().copied().unwrap_or(self.floor);
        // A jump of more ids than this is a sequence's, not transactions in flight: no need to
        // wait for each.
        if top - self.floor <= 10 * PAGE {
            for id in self.floor + 1..top {
                if !self.seen.contains(&id) {
                    self.holes.entry(id).or_insert(now);
                }
            }
        }
        loop {
            let next = self.floor + 1;
            let given_up =
                self.holes.get(&next).is_some_and(|at| now.duration_since(*at) > LATE_COMMIT_WINDOW);
            if self.seen.remove(&next) || given_up {
                self.holes.remove(&next);
                self.floor = next;
            } else if self.holes.is_empty() && self.seen.first().is_some_and(|first| *first > next) {
                // Nothing missing below what was seen (a jump too large to track): skip to it.
                self.floor = self.seen.first().copied().unwrap_or(next) - 1;
            } else {
                break;
            }
        }
        full
    }
}

fn stream(feed: Feed) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(row) = feed.ready.pop_front() {
                let entry = crate::status::log_entry(&row);
                let data = serde_json::json!({ "migration": row.migration_id, "entry": entry }).to_string();
                // The event's SSE id is where a resumed feed starts: everything up to it was
                // sent, so nothing is lost; an event above a hole may come twice.
                let cursor = feed.ready.iter().map(|r| r.id - 1).min().unwrap_or(feed.floor).min(feed.floor);
                let event = Event::default().id(cursor.to_string()).event("change").data(data);
                return Some((Ok(event), feed));
            }
            // Read again at once when a whole page came (more may wait); wait a poll when
            // nothing did.
            let full = feed.read().await;
            if feed.ready.is_empty() && !full {
                tokio::time::sleep(POLL).await;
            }
        }
    })
}
