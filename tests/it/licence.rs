//! The licence adapter against real HTTP on loopback: the Manage2 client against the simulated
//! Manage2 (lookup by IP, the reactivation dry run, one expiry with the documented parameters,
//! the reactivation, a refused login, outages), and the licence webhook against a small
//! receiver that checks each request's signature as a company's own system would.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use reqwest::Url;
use siirto::licence::{
    Licence, LicenceError, LicenceId, LicenceProvider, LicenceStatus, LicenceWebhook, Manage2,
};
use siirto::notify::{SIGNATURE_HEADER, verify};
use siirto::secret::Secret;
use siirto::sim::manage2::{SimLicence, SimLicenceStatus, SimManage2};

const USER: &str = "siirto@example.fi";
const PASSWORD: &str = "correct-horse-manage2";
const PASSWORD_ORIGIN: &str = "password_file (/etc/siirto/secrets/manage2.password)";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("ip")
}

fn client(sim: &SimManage2, password: &str) -> Manage2 {
    let password = Secret::new(password).with_origin(PASSWORD_ORIGIN);
    Manage2::new(sim.url(), USER, password, Duration::from_secs(10)).expect("Manage2 client")
}

/// The parameters of a recorded call, as `(name, value)` pairs in name order.
fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn sim_with_licences() -> SimManage2 {
    SimManage2::start(
        USER,
        PASSWORD,
        vec![
            SimLicence::active("7216526", ip("192.0.2.10"), "COMPANY-INTERNAL-VPS"),
            SimLicence::active("5388377", ip("192.0.2.20"), "COMPANY-INTERNAL"),
            SimLicence::active("5388378", ip("192.0.2.20"), "COMPANY-INTERNAL-VPS"),
        ],
    )
    .await
    .expect("simulated Manage2")
}

#[tokio::test]
async fn manage2_finds_the_licence_proves_the_way_back_expires_it_once_and_reactivates_it() {
    let sim = sim_with_licences().await;
    let manage2 = client(&sim, PASSWORD);
    assert_eq!(manage2.name(), "manage2");

    // Lookup by IP: the server's licence; an IP without one is None; two are refused.
    let licence = manage2.lookup(ip("192.0.2.10")).await.expect("lookup").expect("a licence");
    assert_eq!(
        licence,
        Licence {
            id: LicenceId::parse("7216526").expect("id"),
            ip: ip("192.0.2.10"),
            status: LicenceStatus::Active,
            package: None,
        }
    );
    assert_eq!(sim.calls_to("XMLlookup.cgi")[0].params, params(&[("ip", "192.0.2.10"), ("output", "json")]));
    assert_eq!(manage2.lookup(ip("192.0.2.99")).await.expect("lookup"), None);
    let err = manage2.require(ip("192.0.2.99")).await.expect_err("no licence");
    assert!(matches!(err, LicenceError::NoLicence { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(err.to_string(), "licence provider manage2: there is no licence for 192.0.2.99");
    let err = manage2.lookup(ip("192.0.2.20")).await.expect_err("two licences");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("192.0.2.20 has 2 licences (5388377, 5388378)"), "{err}");

    // The dry run proves the way back and changes nothing.
    manage2.check_reactivation(&licence).await.expect("dry run");
    assert_eq!(sim.licence("7216526").expect("held").status, SimLicenceStatus::Active);
    let dry_runs = sim.calls_to("XMLlicenseReActivate.cgi");
    assert_eq!(dry_runs.len(), 1);
    assert_eq!(dry_runs[0].params, params(&[("dryrun", "1"), ("liscid", "7216526"), ("output", "json")]));

    // The expiry: once, with the documented parameters.
    let reason = "Server old1.example.net retired after its migration (siirto)";
    manage2.expire(&licence, reason).await.expect("expire");
    let expiries = sim.calls_to("XMLlicenseExpire.cgi");
    assert_eq!(expiries.len(), 1, "{expiries:?}");
    assert_eq!(
        expiries[0].params,
        params(&[("expcode", "normal"), ("liscid", "7216526"), ("output", "json"), ("reason", reason)])
    );
    assert_eq!(
        sim.licence("7216526").expect("held").status,
        SimLicenceStatus::Expired { reason: reason.to_owned(), expcode: "normal".to_owned() }
    );
    // An expired licence is no longer the IP's licence, and a second expiry is refused.
    assert_eq!(manage2.lookup(ip("192.0.2.10")).await.expect("lookup"), None);
    let err = manage2.expire(&licence, reason).await.expect_err("already expired");
    assert!(matches!(err, LicenceError::Refused { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("expire refused: License 7216526 is already expired"), "{err}");

    // The undo.
    manage2.reactivate(&licence).await.expect("reactivate");
    assert_eq!(sim.licence("7216526").expect("held").status, SimLicenceStatus::Active);
    let reactivations = sim.calls_to("XMLlicenseReActivate.cgi");
    assert_eq!(reactivations.len(), 2);
    assert_eq!(reactivations[1].params, params(&[("liscid", "7216526"), ("output", "json")]));
    let err = manage2.reactivate(&licence).await.expect_err("in force");
    assert!(err.to_string().contains("reactivate refused: License 7216526 is not expired"), "{err}");
    assert!(sim.calls().iter().all(|call| call.authorized), "{:?}", sim.calls());
}

#[tokio::test]
async fn manage2_refusing_the_reactivation_dry_run_is_permanent_and_expires_nothing() {
    let sim = sim_with_licences().await;
    let manage2 = client(&sim, PASSWORD);
    sim.refuse_reactivation("7216526", "This license cannot be reactivated by your account");
    let licence = manage2.require(ip("192.0.2.10")).await.expect("licence");
    let err = manage2.check_reactivation(&licence).await.expect_err("refused");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "licence provider manage2: check_reactivation refused: This license cannot be reactivated by your account"
    );
    assert_eq!(sim.licence("7216526").expect("held").status, SimLicenceStatus::Active);
    assert!(sim.calls_to("XMLlicenseExpire.cgi").is_empty());
}

#[tokio::test]
async fn a_wrong_manage2_password_is_permanent_names_the_provider_and_never_the_password() {
    let sim = sim_with_licences().await;
    let wrong = "wrong-password-never-printed";
    let manage2 = client(&sim, wrong);
    let licence = Licence {
        id: LicenceId::parse("7216526").expect("id"),
        ip: ip("192.0.2.10"),
        status: LicenceStatus::Active,
        package: None,
    };
    let lookup = manage2.lookup(ip("192.0.2.10")).await.expect_err("refused login");
    let expiry = manage2.expire(&licence, "retired").await.expect_err("refused login");
    for err in [lookup, expiry] {
        assert!(matches!(err, LicenceError::Auth { status: 401, .. }), "{err:?}");
        assert!(!err.is_transient());
        assert_eq!(err.provider(), "manage2");
        let shown = format!("{err} {err:?}");
        assert!(shown.starts_with("licence provider manage2: "), "{shown}");
        assert!(shown.contains(USER) && shown.contains(PASSWORD_ORIGIN), "{shown}");
        assert!(shown.contains("access IP"), "{shown}");
        assert!(!shown.contains(wrong) && !shown.contains(PASSWORD), "{shown}");
    }
    assert!(!format!("{manage2:?}").contains(wrong));
    let calls = sim.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|call| !call.authorized));
    assert_eq!(sim.licence("7216526").expect("held").status, SimLicenceStatus::Active);
}

#[tokio::test]
async fn manage2_outages_are_transient() {
    let sim = sim_with_licences().await;
    let manage2 = client(&sim, PASSWORD);
    sim.fail_next(&[503, 502]);
    for status in [503, 502] {
        let err = manage2.lookup(ip("192.0.2.10")).await.expect_err("outage");
        assert!(matches!(err, LicenceError::Http { status: s, .. } if s == status), "{err:?}");
        assert!(err.is_transient(), "{err}");
    }
    assert!(manage2.lookup(ip("192.0.2.10")).await.expect("after the outage").is_some());

    // Nobody listening: no answer at all.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = Url::parse(&format!("http://{}/", closed.local_addr().expect("addr"))).expect("url");
    drop(closed);
    let gone = Manage2::new(url, USER, Secret::new(PASSWORD), Duration::from_secs(5)).expect("client");
    let err = gone.lookup(ip("192.0.2.10")).await.expect_err("refused connection");
    assert!(matches!(err, LicenceError::Transport { .. }), "{err:?}");
    assert!(err.is_transient(), "{err}");
    assert!(!err.to_string().contains(PASSWORD));
}

// ---------------------------------------------------------------------------------------------
// The webhook

/// A company's licence system on loopback: verifies each request's signature (401 otherwise),
/// keeps the bodies it accepted, and answers from one licence it holds.
struct LicenceReceiver {
    url: Url,
    inner: Arc<Mutex<ReceiverState>>,
    task: tokio::task::JoinHandle<()>,
}

struct ReceiverState {
    accepted: Vec<serde_json::Value>,
    refused_signatures: usize,
    licence: serde_json::Value,
}

impl Drop for LicenceReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LicenceReceiver {
    async fn start(secret: &str, licence: serde_json::Value) -> LicenceReceiver {
        let inner =
            Arc::new(Mutex::new(ReceiverState { accepted: Vec::new(), refused_signatures: 0, licence }));
        let app = axum::Router::new()
            .route("/licences", post(receive))
            .with_state((Arc::clone(&inner), Secret::new(secret)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url =
            Url::parse(&format!("http://{}/licences", listener.local_addr().expect("addr"))).expect("url");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        LicenceReceiver { url, inner, task }
    }

    fn accepted(&self) -> Vec<serde_json::Value> {
        self.inner.lock().expect("lock").accepted.clone()
    }
}

async fn receive(
    State((inner, secret)): State<(Arc<Mutex<ReceiverState>>, Secret)>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut state = inner.lock().expect("lock");
    if !verify(&secret, &body, signature) {
        state.refused_signatures += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let request: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    state.accepted.push(request.clone());
    let answer = match request["action"].as_str() {
        Some("lookup") if request["ip"] == state.licence["ip"] => {
            serde_json::json!({"licence": state.licence})
        }
        Some("lookup") => serde_json::json!({"licence": null}),
        Some("check_reactivation") => serde_json::json!({"ok": true}),
        Some("expire") if state.licence["status"] == "expired" => {
            serde_json::json!({"ok": false, "reason": "already expired"})
        }
        Some("expire") => {
            state.licence["status"] = "expired".into();
            serde_json::json!({"ok": true})
        }
        Some("reactivate") => {
            state.licence["status"] = "active".into();
            serde_json::json!({"ok": true})
        }
        _ => return StatusCode::BAD_REQUEST.into_response(),
    };
    axum::Json(answer).into_response()
}

#[tokio::test]
async fn the_licence_webhook_posts_signed_actions_and_reads_the_answers() {
    let secret = "licence-webhook-shared-secret";
    let receiver = LicenceReceiver::start(
        secret,
        serde_json::json!({"id": "4921062", "ip": "192.0.2.10", "status": "active", "package": "VPS"}),
    )
    .await;
    let origin = "secret_file (/etc/siirto/secrets/licence-webhook.secret)";
    let webhook = LicenceWebhook::new(
        receiver.url.clone(),
        Secret::new(secret).with_origin(origin),
        Duration::from_secs(10),
    )
    .expect("webhook");
    assert_eq!(webhook.name(), "webhook");

    let licence = webhook.require(ip("192.0.2.10")).await.expect("licence");
    assert_eq!(
        licence,
        Licence {
            id: LicenceId::parse("4921062").expect("id"),
            ip: ip("192.0.2.10"),
            status: LicenceStatus::Active,
            package: Some("VPS".to_owned()),
        }
    );
    assert_eq!(webhook.lookup(ip("192.0.2.99")).await.expect("lookup"), None);
    webhook.check_reactivation(&licence).await.expect("dry run");
    webhook.expire(&licence, "Server retired").await.expect("expire");
    let err = webhook.expire(&licence, "Server retired").await.expect_err("second expiry");
    assert!(!err.is_transient());
    assert_eq!(err.to_string(), "licence provider webhook: expire refused: already expired");
    webhook.reactivate(&licence).await.expect("reactivate");

    let licence_json =
        serde_json::json!({"id": "4921062", "ip": "192.0.2.10", "status": "active", "package": "VPS"});
    let expected = [
        serde_json::json!({"action": "lookup", "ip": "192.0.2.10", "licence": null, "reason": null}),
        serde_json::json!({"action": "lookup", "ip": "192.0.2.99", "licence": null, "reason": null}),
        serde_json::json!({"action": "check_reactivation", "ip": "192.0.2.10", "licence": licence_json, "reason": null}),
        serde_json::json!({"action": "expire", "ip": "192.0.2.10", "licence": licence_json, "reason": "Server retired"}),
        serde_json::json!({"action": "expire", "ip": "192.0.2.10", "licence": licence_json, "reason": "Server retired"}),
        serde_json::json!({"action": "reactivate", "ip": "192.0.2.10", "licence": licence_json, "reason": null}),
    ];
    assert_eq!(receiver.accepted(), expected);
    assert_eq!(receiver.inner.lock().expect("lock").refused_signatures, 0);

    // Signed with another secret: the receiver refuses it, and the error says which secret.
    let wrong = "not-the-shared-secret";
    let stranger = LicenceWebhook::new(
        receiver.url.clone(),
        Secret::new(wrong).with_origin(origin),
        Duration::from_secs(10),
    )
    .expect("webhook");
    let err = stranger.lookup(ip("192.0.2.10")).await.expect_err("bad signature");
    assert!(matches!(err, LicenceError::Auth { status: 401, .. }), "{err:?}");
    assert!(!err.is_transient());
    let shown = format!("{err} {err:?}");
    assert!(shown.starts_with("licence provider webhook: lookup: "), "{shown}");
    assert!(shown.contains(origin), "{shown}");
    assert!(!shown.contains(wrong) && !shown.contains(secret), "{shown}");
    assert_eq!(receiver.inner.lock().expect("lock").refused_signatures, 1);
    assert_eq!(receiver.accepted().len(), expected.len());
}

#[tokio::test]
async fn the_world_builds_the_provider_its_config_names() {
    let sim = sim_with_licences().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("secrets")).expect("secrets");
    std::fs::write(dir.path().join("secrets/pdns.key"), "PDNSKEY").expect("write");
    std::fs::write(dir.path().join("secrets/manage2.password"), format!("{PASSWORD}\n")).expect("write");
    let text = format!(
        r#"database = "sqlite:s.db"

[dns]
provider = "powerdns"
api_url = "http://127.0.0.1:8081"
api_key_file = "secrets/pdns.key"
nameservers = ["127.0.0.1:5300"]

[mail]
from = "support@example.fi"
channel = "directory"
path = "outbox"

[licence]
provider = "manage2"
url = "{}"
user = "{USER}"
password_file = "secrets/manage2.password"
"#,
        sim.url()
    );
    let config = siirto::config::Config::parse(&text, "siirto.toml", dir.path()).expect("config");
    let world = siirto::world::World::from_config(&config).expect("world");
    let provider = world.licence.as_ref().expect("a licence provider");
    assert_eq!(provider.name(), "manage2");
    assert!(format!("{world:?}").contains("licence: Some(\"manage2\")"), "{world:?}");
    let licence = provider.require(ip("192.0.2.10")).await.expect("licence");
    assert_eq!(licence.id.as_str(), "7216526");
    assert!(sim.calls().iter().all(|call| call.authorized));

    let without = text.split("\n[licence]").next().expect("before the table");
    let config = siirto::config::Config::parse(without, "siirto.toml", dir.path()).expect("config");
    assert!(siirto::world::World::from_config(&config).expect("world").licence.is_none());
}
