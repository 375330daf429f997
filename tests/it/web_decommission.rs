//! The old server's decommission on the status page and the JSON API, over real HTTP on
//! loopback against a migration cut over by the real daemon (real pdns_server, BIND as public
//! DNS, an SMTP server, the simulated cPanel hosts): the stages and the evidence that keeps an
//! account open, shown to customer service; an operator postponing, skipping and undoing
//! stages through the same operator functions the CLI calls (the source's accounts
//! unsuspended for real); a task that needs two people; and every refusal (a viewer, a form
//! without its CSRF token, bad input, an unknown stage, a stage in the wrong state).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use siirto::demo::SOURCE_IP;
use siirto::engine::Clock;

use crate::decommission::{cut_over, wait_stage};
use crate::web::{client, serve, session, token};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// `GET` `url` with a bearer token: its status and body.
async fn get(http: &reqwest::Client, url: &str, token: &str) -> (StatusCode, String) {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// `POST` a JSON body with a bearer token: its status and JSON answer.
async fn post(http: &reqwest::Client, url: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url}: not JSON: {text}")))
}

/// `POST` a page's form with a browser session: where it sends the browser back to.
async fn form(http: &reqwest::Client, url: &str, cookie: &HeaderValue, fields: &[(&str, &str)]) -> String {
    let response = http.post(url).header("cookie", cookie.clone()).form(fields).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{url}");
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The message a form's redirect carries, decoded, and whether it is a refusal.
fn message(location: &str) -> (String, bool) {
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let value = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    (value("msg"), value("kind") == "error")
}

fn instant(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&chrono::Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_and_the_api_show_the_decommission_and_an_operator_postpones_skips_and_undoes_its_stages() {
    let (rig, daemon, _smtp) = cut_over("web-decommission").await;
    let id = rig.id.to_string();
    let addr = serve(&rig).await;
    let http = client();
    let (viewer, operator) = (token(&rig, "viewer"), token(&rig, "operator"));
    let api = format!("http://{addr}/api/v1/migrations/{id}");
    let page = format!("http://{addr}/m/{id}");
    let held_user = rig.user(0).to_string();
    let domain = rig.hosts.accounts[0].domain.to_string();
    let plan = |check: &'static str| {
        let (http, url, viewer) = (http.clone(), format!("{api}/decommission{check}"), viewer.clone());
        async move {
            let (status, body) = get(&http, &url, &viewer).await;
            assert_eq!(status, StatusCode::OK, "{url}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };

    // The five stages of the playbook, recorded at the cutover, none run.
    let before = plan("").await;
    let stages = before["stages"].as_array().unwrap();
    let states: Vec<(&str, &str)> =
        stages.iter().map(|s| (s["action"].as_str().unwrap(), s["state"].as_str().unwrap())).collect();
    assert_eq!(
        states,
        [
            ("suspend_accounts", "pending"),
            ("remove_accounts", "pending"),
            ("cancel_licence", "pending"),
            ("power_off", "pending"),
            ("destroy_disks", "pending"),
        ]
    );
    let (_, html) = get(&http, &page, &viewer).await;
    assert!(html.contains("data-stage=\"4\"") && html.contains("No old account is kept open."), "{html}");

    // A month on, the suspension runs: two accounts suspended, the one whose domain public DNS
    // still sends to the old server kept open, with the answers that keep it.
    rig.clock.advance(30 * DAY + Duration::from_secs(60));
    wait_stage(&rig, 0, &["ran"], Duration::from_secs(60)).await;
    let after = plan("").await;
    let suspension = &after["stages"][0];
    assert_eq!(suspension["state"], "ran");
    assert_eq!(suspension["done"], json!([rig.user(1).to_string(), rig.user(2).to_string()]));
    let held = suspension["held"].as_array().unwrap();
    assert_eq!(held.len(), 1, "{suspension}");
    assert_eq!(held[0]["account"], held_user.as_str());
    assert_eq!(held[0]["checked_now"], false, "the stored evidence by default");
    let evidence = held[0]["evidence"].as_array().unwrap();
    let shown = evidence
        .iter()
        .find(|e| e["name"] == domain.as_str() && e["rtype"] == "A" && e["answer"] == SOURCE_IP.to_string())
        .unwrap_or_else(|| panic!("{domain} A {SOURCE_IP} in {evidence:#?}"));
    let resolver = shown["resolver"].as_str().unwrap().to_owned();
    assert!(!resolver.is_empty());
    // `?check=now` asks public DNS again, now.
    let live = plan("?check=now").await;
    let now_held = live["stages"][0]["held"].as_array().unwrap();
    assert_eq!(now_held.len(), 1, "{live}");
    assert_eq!((&now_held[0]["account"], &now_held[0]["checked_now"]), (&json!(held_user), &json!(true)));
    // Anything else for `check` is bad input.
    let (status, _) = get(&http, &format!("{api}/decommission?check=later"), &viewer).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The overview shows customer service the account kept open and why, in their language,
    // and no forms to a viewer.
    let (_, html) = get(&http, &page, &viewer).await;
    assert!(html.contains(&format!("data-held=\"{held_user}\"")), "{html}");
    for shown in [resolver.as_str(), domain.as_str(), &SOURCE_IP.to_string(), "ran; the accounts kept open"] {
        assert!(html.contains(shown), "{shown} in the page:\n{html}");
    }
    assert!(!html.contains("/decommission/"), "a viewer gets no decommission forms:\n{html}");
    let row = html.split("<tr data-stage=\"0\">").nth(1).unwrap().split("</tr>").next().unwrap();
    assert!(row.contains("done: <strong>2</strong>, kept open: <strong>1</strong></td>"), "{row}");
    let finnish = http
        .get(&page)
        .bearer_auth(&viewer)
        .header("accept-language", "fi")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        finnish.contains("Auki jätetyt vanhat tilit ja miksi") && finnish.contains(&resolver),
        "{finnish}"
    );
    // The customer's own timeline (what customer service finds by searching their domain)
    // says their old account is still open, which stage keeps it and why.
    let (status, timeline) = get(&http, &format!("{page}/a/{held_user}"), &viewer).await;
    assert_eq!(status, StatusCode::OK);
    let (_, json) = get(&http, &format!("{api}/accounts/{held_user}"), &viewer).await;
    let hold = timeline
        .split(&format!("data-old-server=\"{held_user}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("the hold: {json}\n{timeline}"))
        .split("</div>")
        .next()
        .unwrap();
    assert!(hold.contains("kept open on the old server by the stage \"suspend accounts\""), "{hold}");
    assert!(
        hold.contains(&domain) && hold.contains(&SOURCE_IP.to_string()) && hold.contains(&resolver),
        "{hold}"
    );
    let (_, other) = get(&http, &format!("{page}/a/{}", rig.user(1)), &viewer).await;
    assert!(!other.contains("data-old-server="), "account 1 is not held: {other}");
    let (status, checked) = get(&http, &format!("{page}?check=now"), &viewer).await;
    assert_eq!(status, StatusCode::OK);
    assert!(checked.contains("checked just now") && !checked.contains("data-live="), "{checked}");
    // An operator gets the forms each stage allows: the removal can be postponed or skipped,
    // not undone; the suspension that ran can be undone.
    let (_, html) = get(&http, &page, &operator).await;
    for action in ["0/undo", "1/postpone", "1/skip", "2/skip", "4/postpone"] {
        assert!(html.contains(&format!("action=\"/m/{id}/decommission/{action}\"")), "{action}:\n{html}");
    }
    for action in ["1/undo", "4/undo"] {
        assert!(!html.contains(&format!("action=\"/m/{id}/decommission/{action}\"")), "{action}");
    }

    // Refusals first, none of which changes anything: a viewer, a session without the form's
    // CSRF token, bad input, a stage that is not there.
    let (viewer_cookie, viewer_csrf) = session(addr, &viewer).await;
    let (operator_cookie, operator_csrf) = session(addr, &operator).await;
    let removal = &after["stages"][1];
    let until = (instant(removal["due"].as_str().unwrap()) + chrono::Duration::days(14)).to_rfc3339();
    for action in ["postpone", "skip", "undo"] {
        let url = format!("{api}/decommission/1/{action}");
        let body = json!({ "until": until, "reason": "x" });
        assert_eq!(post(&http, &url, &viewer, body).await.0, StatusCode::FORBIDDEN, "{action}");
        let fields = [("csrf", viewer_csrf.as_str()), ("until", until.as_str()), ("reason", "x")];
        let by_viewer = http
            .post(format!("{page}/decommission/1/{action}"))
            .header("cookie", viewer_cookie.clone())
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(by_viewer.status(), StatusCode::FORBIDDEN, "{action} by a viewer's session");
        for url in [format!("{page}/decommission/1/{action}"), url] {
            let no_csrf = http
                .post(&url)
                .header("cookie", operator_cookie.clone())
                .form(&[("until", until.as_str()), ("reason", "x")])
                .send()
                .await
                .unwrap();
            assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN, "{url} without the CSRF token");
        }
    }
    let (status, blank) =
        post(&http, &format!("{api}/decommission/2/skip"), &operator, json!({"reason": "  "})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{blank}");
    assert!(blank["error"].as_str().unwrap().contains("say why"), "{blank}");
    let bad_date = json!({ "until": "next tuesday", "reason": "customer audit" });
    let (status, bad) = post(&http, &format!("{api}/decommission/1/postpone"), &operator, bad_date).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert!(bad["error"].as_str().unwrap().contains("RFC 3339"), "{bad}");
    let (status, unknown) =
        post(&http, &format!("{api}/decommission/99/skip"), &operator, json!({"reason": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    assert!(unknown["error"].as_str().unwrap().contains("no decommission stage 99"), "{unknown}");
    let (status, _) = post(
        &http,
        &format!("http://{addr}/api/v1/migrations/no-such/decommission/0/skip"),
        &operator,
        json!({"reason": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let back = form(
        &http,
        &format!("{page}/decommission/1/postpone"),
        &operator_cookie,
        &[("csrf", &operator_csrf), ("until", "soon"), ("reason", "audit")],
    )
    .await;
    let (said, refused) = message(&back);
    assert!(refused && said.contains("RFC 3339"), "{back}");
    let unchanged = plan("").await;
    assert_eq!(unchanged["stages"][1]["due"], removal["due"]);
    assert!(!rig.events().await.iter().any(|e| e.actor.starts_with("web:")), "nothing was recorded");

    // The operator postpones the removal by two weeks through the API.
    let url = format!("{api}/decommission/1/postpone");
    let (status, done) =
        post(&http, &url, &operator, json!({ "until": until, "reason": "customer audit" })).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!((&done["actor"], &done["state"]), (&json!("web:yllapito"), &json!("pending")));
    let postponed = plan("").await;
    assert_eq!(instant(postponed["stages"][1]["due"].as_str().unwrap()), instant(&until));
    assert_eq!(postponed["stages"][1]["detail"]["postponed"]["by"], "web:yllapito");
    let event =
        rig.events().await.into_iter().find(|e| e.kind == "decommission_postponed").expect("recorded");
    assert_eq!(event.actor, "web:yllapito");
    assert!(event.detail.contains("customer audit"), "{}", event.detail);
    // Back to a date before the new one: refused in the stage's state, with why.
    let (status, earlier) =
        post(&http, &url, &operator, json!({ "until": removal["due"], "reason": "oops" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{earlier}");
    assert!(earlier["error"].as_str().unwrap().contains("later time"), "{earlier}");

    // It skips the licence stage through the page's form.
    let back = form(
        &http,
        &format!("{page}/decommission/2/skip"),
        &operator_cookie,
        &[("csrf", &operator_csrf), ("reason", "the licence is monthly")],
    )
    .await;
    let (said, refused) = message(&back);
    assert!(!refused && said.contains("skipped"), "{back}");
    let skipped = plan("").await;
    assert_eq!(skipped["stages"][2]["state"], "skipped");
    assert_eq!(skipped["stages"][2]["detail"]["skipped"]["by"], "web:yllapito");
    let (status, again) =
        post(&http, &format!("{api}/decommission/2/skip"), &operator, json!({"reason": "twice"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert!(again["error"].as_str().unwrap().contains("skipped already"), "{again}");

    // It undoes the suspension: the daemon is stopped first, as an operator would, so the
    // stage's own re-check of the account kept open does not run while the accounts are given
    // back.
    daemon.stop().await;
    let (status, removal_undo) =
        post(&http, &format!("{api}/decommission/1/undo"), &operator, json!({"reason": "x"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a removal that has not run: {removal_undo}");
    assert!(removal_undo["error"].as_str().unwrap().contains("has not run"), "{removal_undo}");
    for n in [1, 2] {
        let account = rig.source_whm().account(&rig.user(n)).await.unwrap().unwrap();
        assert!(account.suspended, "account {n} before the undo");
    }
    let (status, undone) = post(
        &http,
        &format!("{api}/decommission/0/undo"),
        &operator,
        json!({"reason": "the wrong server was retired"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{undone}");
    assert_eq!(undone["state"], "undone");
    let said = undone["message"].as_str().unwrap();
    assert!(said.contains("2 account(s) unsuspended") && said.contains(rig.user(1).as_str()), "{said}");
    for n in [1, 2] {
        let account = rig.source_whm().account(&rig.user(n)).await.unwrap().unwrap();
        assert!(!account.suspended, "account {n} serves again on the old server");
    }
    let kinds: Vec<(String, String)> = rig
        .events()
        .await
        .into_iter()
        .filter(|e| e.actor.starts_with("web:"))
        .map(|e| (e.kind, e.actor))
        .collect();
    for kind in ["decommission_postponed", "decommission_skipped", "decommission_undone"] {
        assert!(kinds.contains(&(kind.to_owned(), "web:yllapito".to_owned())), "{kind} in {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|(k, _)| k == "account_unsuspended_on_source").count(), 2, "{kinds:?}");
    // The page says who changed each stage and why.
    let (_, html) = get(&http, &page, &viewer).await;
    for shown in [
        "Postponed by web:yllapito",
        "customer audit",
        "Skipped by web:yllapito",
        "the licence is monthly",
        "Undone by web:yllapito",
        "the wrong server was retired",
    ] {
        assert!(html.contains(shown), "{shown} in the page:\n{html}");
    }
    assert!(html.contains("No old account is kept open."), "an undone stage keeps nothing open:\n{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_needs_two_people_shows_who_confirmed_it_and_refuses_the_same_person_twice() {
    let (rig, daemon, _smtp) = cut_over("web-two-people").await;
    daemon.stop().await;
    let id = rig.id.to_string();
    // The disks' task as the engine opens it three months on (engine/steps/decommission.rs),
    // written here so the test need not wait for the stages before it.
    let mut tx = rig.store.begin().await.unwrap();
    let task = tx
        .append_event(&siirto::store::NewEvent {
            migration_id: id.clone(),
            account: None,
            domain: None,
            kind: "operator_task".to_owned(),
            detail: json!({
                "task": "destroy the old server's disks (two different people confirm)",
                "stage": 4, "stage_name": "destroy disks", "needs": 2,
            })
            .to_string(),
            actor: "siirto".to_owned(),
            at: siirto::domain::to_millis(rig.clock.now()),
        })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let addr = serve(&rig).await;
    let http = client();
    let (viewer, operator) = (token(&rig, "viewer"), token(&rig, "operator"));
    let page = format!("http://{addr}/m/{id}");
    let open_tasks = || {
        let (http, url, viewer) = (http.clone(), format!("http://{addr}/api/v1/tasks"), viewer.clone());
        async move {
            let (status, body) = get(&http, &url, &viewer).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            serde_json::from_str::<Vec<Value>>(&body).unwrap()
        }
    };
    let listed = open_tasks().await;
    let mine = listed.iter().find(|t| t["id"] == task).unwrap_or_else(|| panic!("{task} in {listed:#?}"));
    assert_eq!(
        (&mine["migration"], &mine["needs"], &mine["stage"]),
        (&json!(id), &json!(2), &json!("destroy disks"))
    );
    assert_eq!(mine["confirmed_by"], json!([]));

    // The first person confirms it on the page: one of two, and the page says so.
    let (cookie, csrf) = session(addr, &operator).await;
    let ack = format!("{page}/tasks/{task}/ack");
    let back = form(&http, &ack, &cookie, &[("csrf", &csrf), ("note", "disk 1 of 2 shredded")]).await;
    let (said, refused) = message(&back);
    assert!(!refused && said.contains("confirmation 1 of 2"), "{said}");
    let (_, html) = get(&http, &page, &viewer).await;
    let row = html.split(&format!("data-confirmations=\"{task}\">")).nth(1).expect("the task's row");
    let cell = row.split("</td>").next().unwrap();
    assert_eq!(cell, "needs 2 different people; confirmed by web:yllapito", "{html}");
    assert!(html.contains("Stage: destroy disks"), "{html}");

    // The same person again: refused, and the page shows why as a refusal.
    let back = form(&http, &ack, &cookie, &[("csrf", &csrf)]).await;
    let (said, refused) = message(&back);
    assert!(refused && said.contains("someone else must confirm it"), "{said}");
    let shown =
        http.get(format!("http://{addr}{back}")).header("cookie", cookie.clone()).send().await.unwrap();
    let html = shown.text().await.unwrap();
    assert!(html.contains("class=\"msg error\">web:yllapito acknowledged operator task"), "{html}");
    let (status, again) =
        post(&http, &format!("http://{addr}/api/v1/migrations/{id}/tasks/{task}/ack"), &operator, json!({}))
            .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(open_tasks().await.iter().filter(|t| t["id"] == task).count(), 1, "still open");

    // A second, different person (through the CLI's operator function) closes it.
    let now = rig.clock.now();
    let second = siirto::ops::ack_task(&rig.store, task, "maija", None, now).await.unwrap();
    assert_eq!((second.confirmations, second.needs), (2, 2));
    assert!(open_tasks().await.iter().all(|t| t["id"] != task));
}
