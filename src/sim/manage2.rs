//! A simulated Manage2, cPanel's licence API, on loopback over plain HTTP: the three functions
//! the decommission uses — `XMLlookup.cgi`, `XMLlicenseExpire.cgi`, `XMLlicenseReActivate.cgi`
//! — answered in the documented JSON shapes (see [`crate::licence`] for the pages), behind HTTP
//! Basic authentication. It holds licences (id, IP, package, group, active or expired) and
//! records every call, so a test can count "expired exactly once, with these parameters".
//!
//! Where the documentation shows no sample we answer as Manage2 most plausibly does: a wrong
//! login is HTTP 401 with a `WWW-Authenticate: Basic` challenge (what makes a browser show the
//! sign-in dialog the documentation describes); an IP without a licence is
//! `{"status": 1, "reason": "OK"}` without `licenseid`; an unknown licence, a second expiry or a
//! reactivation of a licence in force is `{"status": 0, "reason": "…"}`. Without `output=json`
//! it answers a minimal XML element, as Manage2 answers XML by default.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use reqwest::Url;

/// Whether a simulated licence is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimLicenceStatus {
    /// In force.
    Active,
    /// Expired by `XMLlicenseExpire.cgi`.
    Expired {
        /// The `reason` it was expired with.
        reason: String,
        /// The `expcode` it was expired with (`normal` when none was given).
        expcode: String,
    },
}

/// One licence the simulated Manage2 holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimLicence {
    /// Its id (`licenseid`), digits.
    pub id: String,
    /// The server address it is bound to.
    pub ip: IpAddr,
    /// Its package name (`COMPANY-INTERNAL-VPS`).
    pub package: String,
    /// Its group name.
    pub group: String,
    /// Whether it is in force.
    pub status: SimLicenceStatus,
}

impl SimLicence {
    /// An active licence in the group `Servers`.
    pub fn active(id: &str, ip: IpAddr, package: &str) -> SimLicence {
        SimLicence {
            id: id.to_owned(),
            ip,
            package: package.to_owned(),
            group: "Servers".to_owned(),
            status: SimLicenceStatus::Active,
        }
    }
}

/// One request the simulated Manage2 received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimManage2Call {
    /// The function, e.g. `XMLlicenseExpire.cgi`.
    pub endpoint: String,
    /// Its parameters (query string, and a POST's form body), `output` included.
    pub params: BTreeMap<String, String>,
    /// Whether it carried the right Basic credentials.
    pub authorized: bool,
}

struct Manage2State {
    user: String,
    password: String,
    licences: BTreeMap<String, SimLicence>,
    calls: Vec<SimManage2Call>,
    /// Reactivation (and its dry run) refused with this reason, by licence id.
    refuse_reactivation: BTreeMap<String, String>,
    /// Answer the next requests with these HTTP statuses, first first.
    fail_next: Vec<StatusCode>,
}

type Shared = Arc<Mutex<Manage2State>>;

fn lock(state: &Shared) -> MutexGuard<'_, Manage2State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running simulated Manage2; stopped when dropped.
pub struct SimManage2 {
    url: Url,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SimManage2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimManage2").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl SimManage2 {
    /// Starts on 127.0.0.1 at a free port, accepting `user` and `password` and holding
    /// `licences`.
    pub async fn start(user: &str, password: &str, licences: Vec<SimLicence>) -> Result<SimManage2> {
        let state = Arc::new(Mutex::new(Manage2State {
            user: user.to_owned(),
            password: password.to_owned(),
            licences: licences.into_iter().map(|licence| (licence.id.clone(), licence)).collect(),
            calls: Vec::new(),
            refuse_reactivation: BTreeMap::new(),
            fail_next: Vec::new(),
        }));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the simulated Manage2 listener")?;
        let addr = listener.local_addr()?;
        let router = Router::new().route("/{function}", get(answer).post(answer)).with_state(state.clone());
        let task = tokio::spawn(super::serve::serve(listener, router, None));
        let url = Url::parse(&format!("http://{addr}/")).context("the simulated Manage2's URL")?;
        tracing::debug!(%url, "simulated Manage2 started");
        Ok(SimManage2 { url, state, task })
    }

    /// Its base URL (`http://127.0.0.1:PORT/`), what [`crate::licence::Manage2::new`] takes.
    pub fn url(&self) -> Url {
        self.url.clone()
    }

    /// Every request received, in order.
    pub fn calls(&self) -> Vec<SimManage2Call> {
        lock(&self.state).calls.clone()
    }

    /// The requests to one function (`XMLlicenseExpire.cgi`), in order.
    pub fn calls_to(&self, endpoint: &str) -> Vec<SimManage2Call> {
        lock(&self.state).calls.iter().filter(|call| call.endpoint == endpoint).cloned().collect()
    }

    /// The licence `id` as it stands now.
    pub fn licence(&self, id: &str) -> Option<SimLicence> {
        lock(&self.state).licences.get(id).cloned()
    }

    /// Adds a licence, or replaces the one with its id.
    pub fn add_licence(&self, licence: SimLicence) {
        lock(&self.state).licences.insert(licence.id.clone(), licence);
    }

    /// From now on refuses to reactivate licence `id` (the dry run too), with `reason`.
    pub fn refuse_reactivation(&self, id: &str, reason: &str) {
        lock(&self.state).refuse_reactivation.insert(id.to_owned(), reason.to_owned());
    }

    /// Answers the next requests with these HTTP statuses (e.g. 503), in order, before
    /// answering normally again. They are recorded as calls, and change nothing.
    pub fn fail_next(&self, statuses: &[u16]) {
        let statuses =
            statuses.iter().map(|s| StatusCode::from_u16(*s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        lock(&self.state).fail_next.extend(statuses);
    }
}

impl Drop for SimManage2 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The valid `expcode`s (the old Manage2 documentation lists them).
const EXPCODES: [&str; 7] = ["normal", "nocomplete", "noverify", "shutoff", "chargeback", "fraud", "other"];

async fn answer(
    State(state): State<Shared>,
    Path(function): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut params: BTreeMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend(form_urlencoded::parse(&body).into_owned());
    }
    let mut state = lock(&state);
    let authorized = basic_credentials(&headers)
        .is_some_and(|(user, password)| user == state.user && password == state.password);
    state.calls.push(SimManage2Call { endpoint: function.clone(), params: params.clone(), authorized });
    if !state.fail_next.is_empty() {
        let status = state.fail_next.remove(0);
        return (status, format!("<html><body>{status}</body></html>")).into_response();
    }
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"Manage2\"")],
            "<html><body>Authorization Required</body></html>",
        )
            .into_response();
    }
    let name = function.trim_end_matches(".cgi").to_owned();
    let reply = match function.as_str() {
        "XMLlookup.cgi" => lookup(&state, &params),
        "XMLlicenseExpire.cgi" => expire(&mut state, &params),
        "XMLlicenseReActivate.cgi" => reactivate(&mut state, &params),
        _ => return (StatusCode::NOT_FOUND, "<html><body>Not Found</body></html>").into_response(),
    };
    if params.get("output").map(String::as_str) != Some("json") {
        // Manage2 answers XML by default; the simulator speaks only JSON, so this is all it says.
        let xml = format!("<{name} status=\"0\" reason=\"the simulator answers output=json only\"/>");
        return ([(header::CONTENT_TYPE, "text/xml")], xml).into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], reply).into_response()
}

/// The user and password of an `Authorization: Basic …` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn refused(reason: &str) -> String {
    serde_json::json!({"status": 0, "reason": reason}).to_string()
}

/// `XMLlookup.cgi?ip=…[&all=1]`: the licences in force on the IP (`all=1`: expired ones too).
/// Several are answered as the documentation's sample does, with the `licenseid` key repeated.
fn lookup(state: &Manage2State, params: &BTreeMap<String, String>) -> String {
    let Some(ip) = params.get("ip").and_then(|ip| ip.trim().parse::<IpAddr>().ok()) else {
        return refused("Invalid IP address");
    };
    let all = params.get("all").is_some_and(|all| all == "1");
    let ids: Vec<&str> = state
        .licences
        .values()
        .filter(|licence| licence.ip == ip && (all || licence.status == SimLicenceStatus::Active))
        .map(|licence| licence.id.as_str())
        .collect();
    let mut json = String::from(r#"{"status":1,"reason":"OK""#);
    for id in ids {
        json.push_str(&format!(r#","licenseid":{}"#, serde_json::Value::from(id)));
    }
    json.push('}');
    json
}

/// `XMLlicenseExpire.cgi?liscid=…&reason=…&expcode=…`.
fn expire(state: &mut Manage2State, params: &BTreeMap<String, String>) -> String {
    let id = params.get("liscid").map(|id| id.trim().to_owned()).unwrap_or_default();
    let reason = params.get("reason").cloned().unwrap_or_default();
    let expcode = params.get("expcode").cloned().unwrap_or_else(|| "normal".to_owned());
    if !EXPCODES.contains(&expcode.as_str()) {
        return refused(&format!("Invalid expcode {expcode:?}"));
    }
    let Some(licence) = state.licences.get_mut(&id) else {
        return refused(&format!("Could not find a license with the ID {id:?}"));
    };
    if licence.status != SimLicenceStatus::Active {
        return refused(&format!("License {id} is already expired"));
    }
    licence.status = SimLicenceStatus::Expired { reason: reason.clone(), expcode };
    serde_json::json!({
        "status": 1,
        "reason": format!(
            "Expired {} license {id} in the '{}' group on {} for reason: {reason}.",
            licence.package, licence.group, licence.ip
        ),
        "result": "OK",
        "licenseid": id,
    })
    .to_string()
}

/// `XMLlicenseReActivate.cgi?liscid=…[&dryrun=1]`. The dry run answers whether the licence
/// could be reactivated, and its price, without changing it — for a licence still in force too,
/// which is how the way back is proven before an expiry.
fn reactivate(state: &mut Manage2State, params: &BTreeMap<String, String>) -> String {
    let id = params.get("liscid").map(|id| id.trim().to_owned()).unwrap_or_default();
    let dryrun = params.get("dryrun").is_some_and(|d| d == "1");
    if let Some(reason) = state.refuse_reactivation.get(&id) {
        return refused(reason);
    }
    let Some(licence) = state.licences.get(&id).cloned() else {
        return refused(&format!("Could not find a license with the ID {id:?}"));
    };
    let taken = state.licences.values().find(|other| {
        other.id != licence.id && other.ip == licence.ip && other.status == SimLicenceStatus::Active
    });
    if let Some(other) = taken {
        return refused(&format!("{} already has an active license ({})", licence.ip, other.id));
    }
    let where_ = format!("{} license on {} in the '{}' group", licence.package, licence.ip, licence.group);
    let reason = if dryrun {
        format!("Dry run: would reactivate {where_}.")
    } else {
        if licence.status == SimLicenceStatus::Active {
            return refused(&format!("License {id} is not expired"));
        }
        if let Some(held) = state.licences.get_mut(&id) {
            held.status = SimLicenceStatus::Active;
        }
        format!("Reactivated {where_}.")
    };
    serde_json::json!({
        "monthly_price": "25.00",
        "status": 1,
        "reason": reason,
        "price": "150.00",
        "licenseid": id,
    })
    .to_string()
}
