//! The status page, the API, the live feed, the metrics and the health checks, over real HTTP
//! on loopback: every route with every kind of credential, the search and a customer's
//! timeline after a real migration (notices received by a real SMTP server), and the live feed
//! resumed with `Last-Event-ID`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use siirto::domain::MigrationState;

use crate::support::rig::{Daemon, Mail, RigOptions, SimRig};
use crate::support::smtp::SmtpServer;

const PLAYBOOK: &str = include_str!("../../playbooks/demo.toml");

/// The page of `rig`, served in-process on a free loopback port.
pub async fn serve(rig: &SimRig) -> SocketAddr {
    let app = siirto::web::App::new(&rig.config, rig.store.clone(), rig.clock.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(siirto::web::serve(listener, app, std::future::pending()));
    addr
}

/// The token of `role` the rig's config names (`secrets/web-ROLE.token`).
pub fn token(rig: &SimRig, role: &str) -> String {
    std::fs::read_to_string(rig.dir.path().join(format!("secrets/web-{role}.token")))
        .unwrap()
        .trim()
        .to_owned()
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A browser session of the holder of `token`: its cookie header and its CSRF token (read from
/// a page's form).
pub(crate) async fn session(addr: SocketAddr, token: &str) -> (HeaderValue, String) {
    let response = client()
        .post(format!("http://{addr}/login"))
        .form(&[("token", token), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    assert!(!set.contains("Secure"), "no public https address configured: {set}");
    let cookie = HeaderValue::from_str(set.split(';').next().unwrap()).unwrap();
    let page = client().get(format!("http://{addr}/")).header("cookie", cookie.clone()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's logout form carries the CSRF token")
        .to_owned();
    (cookie, csrf)
}

/// A route's path with its parameters filled in (and the search's required query).
fn concrete(path: &str, rig: &SimRig) -> String {
    let path = path
        .replace("{id}", rig.id.as_str())
        .replace("{user}", rig.user(0).as_str())
        .replace("{file}", "app.css")
        .replace("{task}", "1")
        .replace("{stage}", "0");
    if path.ends_with("/search") { format!("{path}?q=kukka") } else { path }
}

async fn planned_rig(id: &'static str) -> SimRig {
    let rig = SimRig::start(RigOptions::new(id, 3)).await;
    rig.plan_and_start(PLAYBOOK).await;
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_needs_a_token_and_only_an_operator_with_the_forms_token_changes_anything() {
    let rig = planned_rig("web-access").await;
    let addr = serve(&rig).await;
    let (viewer, operator) = (token(&rig, "viewer"), token(&rig, "operator"));
    let (viewer_cookie, viewer_csrf) = session(addr, &viewer).await;
    let (operator_cookie, operator_csrf) = session(addr, &operator).await;
    let routes = siirto::web::routes();
    assert!(routes.len() >= 30, "the table lists every route: {}", routes.len());
    let http = client();
    for route in &routes {
        let url = format!("http://{addr}{}", concrete(route.path, &rig));
        let request = |extra: Option<(&str, HeaderValue)>, body: Option<String>| {
            let mut request = http.request(route.method.clone(), &url).timeout(Duration::from_secs(10));
            if let Some((name, value)) = extra {
                request = request.header(name, value);
            }
            if let Some(body) = body {
                request = request.header("content-type", "application/x-www-form-urlencoded").body(body);
            }
            request
        };
        let what = format!("{} {}", route.method, route.path);
        let bare = request(None, None).send().await.unwrap().status();
        if route.public {
            assert!(bare != StatusCode::UNAUTHORIZED && bare != StatusCode::FORBIDDEN, "{what}: {bare}");
            continue;
        }
        assert_eq!(bare, StatusCode::UNAUTHORIZED, "{what} without a credential");
        let forged = HeaderValue::from_static("siirto_session=yllapito.99999999999.00");
        assert_eq!(
            request(Some(("cookie", forged)), None).send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
        let wrong = HeaderValue::from_str("Bearer not-a-token-of-ours-at-all").unwrap();
        assert_eq!(
            request(Some(("authorization", wrong)), None).send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
        let viewer_bearer = HeaderValue::from_str(&format!("Bearer {viewer}")).unwrap();
        if route.method == reqwest::Method::GET {
            let response = request(Some(("authorization", viewer_bearer)), None).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{what} for a viewer");
            continue;
        }
        let form = format!("csrf={viewer_csrf}&reason=test&ip=192.0.2.1");
        let as_viewer =
            request(Some(("authorization", viewer_bearer)), Some("reason=x".into())).send().await.unwrap();
        let with_session = request(Some(("cookie", viewer_cookie.clone())), Some(form)).send().await.unwrap();
        if route.path == "/logout" {
            assert_eq!(with_session.status(), StatusCode::SEE_OTHER, "a viewer logs out");
        } else {
            assert_eq!(as_viewer.status(), StatusCode::FORBIDDEN, "{what} by a viewer's token");
            assert_eq!(with_session.status(), StatusCode::FORBIDDEN, "{what} by a viewer's session");
        }
        // An operator's session without, or with another session's, CSRF token.
        let no_csrf =
            request(Some(("cookie", operator_cookie.clone())), Some("reason=x".into())).send().await.unwrap();
        assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN, "{what} without the CSRF token");
        let other = format!("csrf={viewer_csrf}&reason=x");
        let wrong_csrf =
            request(Some(("cookie", operator_cookie.clone())), Some(other)).send().await.unwrap();
        assert_eq!(wrong_csrf.status(), StatusCode::FORBIDDEN, "{what} with another session's CSRF token");
    }
    // Nothing above changed the migration.
    let row = rig.store.require_migration(rig.id.as_str()).await.unwrap();
    assert_eq!(row.state, "started");
    assert!(!rig.store.events(rig.id.as_str()).await.unwrap().iter().any(|e| e.actor.starts_with("web:")));

    // The operator acts: through the API with the token, and through the page's form.
    let api = format!("http://{addr}/api/v1/migrations/{}", rig.id);
    let paused = http.post(format!("{api}/pause")).bearer_auth(&operator).send().await.unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    let outcome: serde_json::Value = paused.json().await.unwrap();
    assert_eq!(outcome["state"], "paused", "{outcome}");
    assert_eq!(outcome["actor"], "web:yllapito");
    let again = http.post(format!("{api}/pause")).bearer_auth(&operator).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT, "pausing a paused migration is refused");
    assert!(
        again.json::<serde_json::Value>().await.unwrap()["error"].as_str().unwrap().contains(rig.id.as_str())
    );
    let resumed = http
        .post(format!("http://{addr}/m/{}/resume", rig.id))
        .header("cookie", operator_cookie.clone())
        .form(&[("csrf", operator_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), StatusCode::SEE_OTHER);
    let back = resumed.headers()["location"].to_str().unwrap().to_owned();
    assert!(back.starts_with(&format!("/m/{}?msg=", rig.id)) && back.contains("kind=ok"), "{back}");
    let row = rig.store.require_migration(rig.id.as_str()).await.unwrap();
    assert_eq!(row.state, "started");
    let events = rig.store.events(rig.id.as_str()).await.unwrap();
    let actions: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.actor.starts_with("web:"))
        .map(|e| (e.kind.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(actions, [("migration_paused", "web:yllapito"), ("migration_resumed", "web:yllapito")]);
    // An abort without a reason is refused as bad input, and changes nothing.
    let bare_abort = http
        .post(format!("{api}/abort"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({"reason": " "}))
        .send()
        .await
        .unwrap();
    assert_eq!(bare_abort.status(), StatusCode::BAD_REQUEST);
    // An account or migration that is not there is a 404, on the API and on the page.
    for path in [
        format!("/api/v1/migrations/{}/accounts/nosuchuser", rig.id),
        format!("/m/{}/a/nosuchuser", rig.id),
        "/api/v1/migrations/no-such-migration".to_owned(),
        "/m/no-such-migration".to_owned(),
    ] {
        let response = http.get(format!("http://{addr}{path}")).bearer_auth(&viewer).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // A token never appears in a page or an answer.
    let page = http.get(format!("http://{addr}/m/{}", rig.id)).bearer_auth(&operator).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(!html.contains(&operator) && !html.contains(&viewer));
    // Logging out ends the browser's session cookie.
    let out = http
        .post(format!("http://{addr}/logout"))
        .header("cookie", operator_cookie)
        .form(&[("csrf", operator_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_readiness_and_metrics() {
    let rig = planned_rig("web-health").await;
    let addr = serve(&rig).await;
    let http = client();
    let health = http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "{}", ready.text().await.unwrap());
    assert_eq!(
        http.get(format!("http://{addr}/metrics")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let metrics =
        http.get(format!("http://{addr}/metrics")).bearer_auth(token(&rig, "viewer")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    let pending = format!("siirto_accounts{{migration=\"{}\",state=\"pending\"}} 3", rig.id);
    assert!(text.lines().any(|l| l.starts_with(&pending)), "{pending} in:\n{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // Closed store: not ready.
    rig.store.close().await;
    let ready = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// One server-sent event of the live feed.
struct Sse {
    /// Its SSE id: where a resumed feed starts.
    cursor: i64,
    /// The log entry's own id.
    id: i64,
    /// Its data.
    data: String,
}

/// The server-sent events of `url` until `count` have arrived.
async fn read_events(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    last: Option<i64>,
    count: usize,
) -> Vec<Sse> {
    let mut request = http.get(url).bearer_auth(token);
    if let Some(last) = last {
        request = request.header("last-event-id", last.to_string());
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while events.len() < count {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let cursor =
                block.lines().find_map(|l| l.strip_prefix("id:")).map(|v| v.trim().parse::<i64>().unwrap());
            let data = block.lines().filter_map(|l| l.strip_prefix("data:")).collect::<Vec<_>>().join("\n");
            if let Some(cursor) = cursor {
                let value: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
                let id = value["entry"]["id"].as_i64().unwrap();
                events.push(Sse { cursor, id, data });
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_live_feed_resumes_after_a_dropped_connection_without_losing_an_event() {
    let rig = planned_rig("web-live").await;
    let addr = serve(&rig).await;
    let http = client();
    let viewer = token(&rig, "viewer");
    let operator = token(&rig, "operator");
    let url = format!("http://{addr}/live/{}?after=0", rig.id);
    let written = rig.store.events(rig.id.as_str()).await.unwrap();
    assert!(written.len() >= 4, "planning and starting wrote events: {}", written.len());
    // The first three, then the connection drops.
    let first = read_events(&http, &url, &viewer, None, 3).await;
    let ids: Vec<i64> = first.iter().map(|e| e.id).collect();
    assert_eq!(ids, written.iter().take(3).map(|e| e.id).collect::<Vec<_>>());
    assert!(first[0].data.contains(&format!("\"migration\":\"{}\"", rig.id)), "{}", first[0].data);
    let resume_at = first[2].cursor;
    assert!(resume_at >= ids[2], "everything up to the cursor was sent");
    // Meanwhile, more happens.
    let api = format!("http://{addr}/api/v1/migrations/{}", rig.id);
    for action in ["pause", "resume", "pause"] {
        let response = http.post(format!("{api}/{action}")).bearer_auth(&operator).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{action}");
    }
    let written = rig.store.events(rig.id.as_str()).await.unwrap();
    let missed: Vec<i64> = written.iter().map(|e| e.id).filter(|id| *id > ids[2]).collect();
    // The browser reconnects with the last id it saw, and gets exactly what it missed, in order.
    let rest = read_events(&http, &url, &viewer, Some(resume_at), missed.len()).await;
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), missed);
    assert!(rest.last().unwrap().data.contains("migration_paused"), "{}", rest.last().unwrap().data);
    // A feed without a starting point begins with what happens next.
    let fresh = format!("http://{addr}/live/{}", rig.id);
    let next = tokio::spawn({
        let (http, viewer) = (http.clone(), viewer.clone());
        async move { read_events(&http, &fresh, &viewer, None, 1).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resumed = http.post(format!("{api}/resume")).bearer_auth(&operator).send().await.unwrap();
    assert_eq!(resumed.status(), StatusCode::OK);
    let next = next.await.unwrap();
    assert!(next[0].data.contains("migration_resumed"), "{}", next[0].data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customer_service_finds_a_customer_and_reads_what_they_were_told() {
    let smtp = SmtpServer::start();
    let options = RigOptions { mail: Mail::Smtp(smtp.addr), ..RigOptions::new("web-search", 3) };
    let rig = SimRig::start(options).await;
    rig.plan_and_start(PLAYBOOK).await;
    let daemon = Daemon::start(rig.engine("web-daemon", 4));
    rig.wait_for("the migration to cut over", Duration::from_secs(240), |s| {
        matches!(s.detail, MigrationState::CutOver { .. } | MigrationState::Settled { .. })
    })
    .await;
    daemon.stop().await;
    // The overview's progress, read from counts, is the full status's.
    let full = siirto::status::migration_status(&rig.store, rig.id.as_str()).await.unwrap();
    let counted = siirto::status::progress(&rig.store, rig.id.as_str()).await.unwrap();
    assert_eq!(counted, siirto::status::Progress::of(&full));
    assert_eq!(counted.arrived, 3, "{counted:?}");
    let addr = serve(&rig).await;
    let http = client();
    let viewer = token(&rig, "viewer");
    let account = &rig.hosts.accounts[1];
    let user = account.user.as_str();
    let search = |q: String| {
        let http = http.clone();
        let viewer = viewer.clone();
        async move {
            let response = http
                .get(format!("http://{addr}/api/v1/search"))
                .query(&[("q", q.as_str())])
                .bearer_auth(viewer)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Vec<serde_json::Value>>().await.unwrap()
        }
    };
    for q in [
        format!("www.{}", account.domain),
        user.to_owned(),
        account.email.to_uppercase(),
        format!("https://{}/yhteystiedot", account.domain),
    ] {
        let hits = search(q.clone()).await;
        let users: Vec<&str> = hits.iter().map(|h| h["user"].as_str().unwrap()).collect();
        assert_eq!(users, [user], "{q}");
    }
    assert!(search("no-such-customer.example".into()).await.is_empty());
    // The page's search goes straight to the one customer's timeline.
    let found = http
        .get(format!("http://{addr}/search"))
        .query(&[("q", format!("www.{}", account.domain))])
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), StatusCode::SEE_OTHER);
    let timeline_path = found.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(timeline_path, format!("/m/{}/a/{user}", rig.id));
    // The API's timeline: the account moved, and the notices sent, with their text.
    let timeline: serde_json::Value = http
        .get(format!("http://{addr}/api/v1/migrations/{}/accounts/{user}", rig.id))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(timeline["accounts"][0]["user"], user);
    assert_eq!(timeline["accounts"][0]["state"], "done", "{timeline}");
    assert_eq!(timeline["next"][0]["code"], "done");
    let notices = timeline["notices"].as_array().unwrap();
    let completion =
        notices.iter().find(|n| n["notice"]["kind"] == "completion").expect("a completion notice");
    assert_eq!(completion["notice"]["state"], "sent");
    let body = completion["body"].as_str().unwrap();
    assert!(body.contains(account.domain.as_str()), "{body}");
    // The same notice arrived at the SMTP server.
    let subject = completion["notice"]["subject"].as_str().unwrap();
    let message_id = completion["notice"]["message_id"].as_str().unwrap();
    smtp.wait_for_message(message_id, Duration::from_secs(10)).await;
    // The page, in Finnish, shows the state in words and the notice's text.
    let page = http
        .get(format!("http://{addr}{timeline_path}"))
        .header("accept-language", "fi-FI,fi;q=0.9,en;q=0.5")
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<html lang=\"fi\">"));
    assert!(html.contains("siirretty"), "the account's state in Finnish");
    let first_line = body.lines().find(|l| !l.trim().is_empty()).unwrap();
    assert!(html.contains(&escape(first_line)), "{first_line:?} in the page");
    assert!(html.contains(&escape(subject)));
    // The switch to English sticks in a cookie.
    let english =
        http.get(format!("http://{addr}{timeline_path}?lang=en")).bearer_auth(&viewer).send().await.unwrap();
    let set: Vec<&HeaderValue> = english.headers().get_all("set-cookie").iter().collect();
    assert!(set.iter().any(|v| v.to_str().unwrap().starts_with("siirto_lang=en")), "{set:?}");
    assert!(english.text().await.unwrap().contains(">moved<"));
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_static("siirto_lang=en"));
    let overview = http
        .get(format!("http://{addr}/m/{}", rig.id))
        .headers(headers)
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    let html = overview.text().await.unwrap();
    assert!(html.contains("<html lang=\"en\">") && html.contains("Progress"), "{html}");
    let _ = Arc::new(());
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_committed_after_a_higher_one_still_reaches_the_live_feed_once() {
    // PostgreSQL hands out event ids when the rows are written, not when their transactions
    // commit: the feed must not move past an id whose transaction is still open.
    let pg = crate::support::pg::PgDatabase::create().await;
    let options = RigOptions { database: Some(pg.url().to_owned()), ..RigOptions::new("web-late", 2) };
    let rig = SimRig::start(options).await;
    rig.plan_and_start(PLAYBOOK).await;
    let addr = serve(&rig).await;
    let http = client();
    let viewer = token(&rig, "viewer");
    let last = rig.store.events(rig.id.as_str()).await.unwrap().last().unwrap().id;
    let url = format!("http://{addr}/live/{}?after={last}", rig.id);
    let reader = tokio::spawn({
        let (http, viewer, url) = (http.clone(), viewer.clone(), url.clone());
        async move { read_events(&http, &url, &viewer, None, 2).await }
    });
    let event = |kind: &str| siirto::store::NewEvent {
        migration_id: rig.id.to_string(),
        account: None,
        domain: None,
        kind: kind.to_owned(),
        detail: "{}".to_owned(),
        actor: "test".to_owned(),
        at: 0,
    };
    let mut slow = rig.store.begin().await.unwrap();
    let early = slow.append_event(&event("written_first_committed_last")).await.unwrap();
    let mut fast = rig.store.begin().await.unwrap();
    let later = fast.append_event(&event("written_second_committed_first")).await.unwrap();
    fast.commit().await.unwrap();
    assert!(early < later, "ids {early} < {later}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    slow.commit().await.unwrap();
    let got = reader.await.unwrap();
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [later, early]);
    assert!(got[0].cursor < early, "while the early one was not sent, the cursor stays below it");
    assert!(got[1].cursor >= later, "{}", got[1].cursor);
    // Resumed from the last cursor, the feed sends neither again.
    let more = http
        .get(format!("http://{addr}/live/{}", rig.id))
        .bearer_auth(&viewer)
        .header("last-event-id", got[1].cursor.to_string());
    let mut response = more.send().await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(1200), response.chunk()).await;
    assert!(
        quiet.is_err()
            || quiet.unwrap().unwrap().is_none_or(|c| !String::from_utf8_lossy(&c).contains("id:"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_task_is_acknowledged_once_by_name_from_the_page_the_api_or_the_cli() {
    let rig = planned_rig("web-tasks").await;
    let account = rig.user(0);
    let task = |what: &str| siirto::store::NewEvent {
        migration_id: rig.id.to_string(),
        account: Some(account.to_string()),
        domain: Some(rig.hosts.accounts[0].domain.to_string()),
        kind: "operator_task".to_owned(),
        detail: serde_json::json!({ "task": what }).to_string(),
        actor: "test".to_owned(),
        at: 0,
    };
    let mut tx = rig.store.begin().await.unwrap();
    let route =
        tx.append_event(&task("change the spam filter's delivery route to the new server")).await.unwrap();
    let mx = tx.append_event(&task("point the backup MX at the new server")).await.unwrap();
    tx.commit().await.unwrap();
    let open = |rig: &SimRig| {
        let (store, id) = (rig.store.clone(), rig.id.to_string());
        async move {
            siirto::status::operator_tasks(&store, &id)
                .await
                .unwrap()
                .iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(open(&rig).await, [route, mx]);
    let addr = serve(&rig).await;
    let http = client();
    let (viewer, operator) = (token(&rig, "viewer"), token(&rig, "operator"));
    // The overview lists both, with their numbers.
    let page = http.get(format!("http://{addr}/m/{}", rig.id)).bearer_auth(&viewer).send().await.unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("data-task=\"{route}\"")) && html.contains(&format!("data-task=\"{mx}\"")),
        "{html}"
    );
    let url = |task: i64| format!("http://{addr}/api/v1/migrations/{}/tasks/{task}/ack", rig.id);
    let by_viewer =
        http.post(url(route)).bearer_auth(&viewer).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(by_viewer.status(), StatusCode::FORBIDDEN);
    let done = http
        .post(url(route))
        .bearer_auth(&operator)
        .json(&serde_json::json!({ "note": "route changed in the filter's admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let again =
        http.post(url(route)).bearer_auth(&operator).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let why = again.json::<serde_json::Value>().await.unwrap()["error"].as_str().unwrap().to_owned();
    assert!(why.contains("acknowledged already, by web:yllapito"), "{why}");
    let elsewhere =
        http.post(url(999_999)).bearer_auth(&operator).json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(open(&rig).await, [mx]);
    // The CLI: the same operation, by a person's name.
    let config = rig.dir.path().join("siirto.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "ack",
            &mx.to_string(),
            "--by",
            "maija",
            "--note",
            "MX changed",
        ])
        .env_remove("SIIRTO_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("operator task {mx} of migration {}", rig.id))
    );
    assert!(open(&rig).await.is_empty());
    let acks: Vec<(String, String)> = rig
        .store
        .events_of_kinds(rig.id.as_str(), &["operator_task_acknowledged"])
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.actor.clone(), siirto::status::describe_event(&e)))
        .collect();
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert_eq!(acks[0].0, "web:yllapito");
    assert!(acks[0].1.contains("route changed in the filter's admin"), "{acks:?}");
    assert_eq!(acks[1].0, "maija");
}
