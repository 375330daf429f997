//! The simulated WHM API: `/json-api/<function>`, authentication, envelopes, faults and the
//! inventory and account functions (the transfer functions are in `transfer`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use super::serve::ConnKill;
use super::{AccountRecord, Fault, Host, HostState, accounts, checks, transfer};
use crate::names::{AccountName, DomainName};

/// The request parameters (query string and form body; a later value wins).
pub(crate) type Params = BTreeMap<String, String>;

/// What a function answers, before it is put into the API 1 (or API 0) envelope.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) ok: bool,
    pub(crate) reason: String,
    pub(crate) data: Option<Value>,
    /// `metadata.output` (e.g. `{"raw": "..."}` for suspendacct/removeacct).
    pub(crate) output: Option<Value>,
}

impl Reply {
    pub(crate) fn ok(data: Value) -> Self {
        Self { ok: true, reason: "OK".to_owned(), data: Some(data), output: None }
    }

    pub(crate) fn ok_metadata_only(reason: &str) -> Self {
        Self { ok: true, reason: reason.to_owned(), data: None, output: None }
    }

    pub(crate) fn fail(reason: impl Into<String>) -> Self {
        Self { ok: false, reason: reason.into(), data: None, output: None }
    }
}

/// The transfer functions, whose guide samples print `metadata.result` as the string "1".
const STRING_RESULT_FUNCTIONS: &[&str] = &[
    "create_remote_root_transfer_session",
    "enqueue_transfer_item",
    "start_transfer_session",
    "get_transfer_session_state",
    "fetch_transfer_session_log",
    "pause_transfer_session",
    "abort_transfer_session",
];

pub(crate) fn router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/json-api/{function}", any(json_api))
        .fallback(|| async { (StatusCode::NOT_FOUND, html_page("404 Not Found", "Not Found")) })
        .with_state(host)
}

fn html_page(title: &str, text: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("whm") {
        return false;
    }
    match credentials.trim().split_once(':') {
        Some((user, given)) => user == "root" && given.as_bytes() == token.as_bytes(),
        None => false,
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs (the URL parser does exactly that).
fn parse_pairs(encoded: &str, into: &mut Params) {
    if encoded.is_empty() {
        return;
    }
    let Ok(mut url) = reqwest::Url::parse("http://sim.invalid/") else {
        return;
    };
    url.set_query(Some(encoded));
    for (key, value) in url.query_pairs() {
        into.insert(key.into_owned(), value.into_owned());
    }
}

async fn json_api(State(host): State<Arc<Host>>, Path(function): Path<String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if !authorized(&parts.headers, &host.token) {
        // cPanel answers a bad or missing token with 403 and a short page, not JSON.
        let mut response =
            html_page("Access denied", "The request could not be authenticated. Check the API token.");
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    }
    let mut params = Params::new();
    parse_pairs(parts.uri.query().unwrap_or(""), &mut params);
    if parts.method == Method::POST {
        match axum::body::to_bytes(body, 1 << 20).await {
            Ok(bytes) => parse_pairs(&String::from_utf8_lossy(&bytes), &mut params),
            Err(_) => return (StatusCode::BAD_REQUEST, "request body too large").into_response(),
        }
    }
    let api1 = params.get("api.version").map(String::as_str) == Some("1");

    if let Some(fault) = host.take_fault(&function) {
        match fault {
            Fault::Delay { millis, .. } => {
                tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
                let reply = dispatch(&host, &function, &params).await;
                return render(&function, api1, reply);
            }
            Fault::ResultZero { reason, .. } => {
                return render(&function, api1, Reply::fail(reason));
            }
            Fault::NotJson { .. } => {
                return html_page(
                    "cPanel &amp; WHM - Internal Error",
                    "The system experienced an internal error while processing your request.",
                );
            }
            Fault::Http500 { .. } => {
                let mut response =
                    html_page("500 Internal Server Error", "The server encountered an internal error.");
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return response;
            }
            Fault::Drop { .. } => {
                if let Some(kill) = parts.extensions.get::<ConnKill>() {
                    kill.0.notify_one();
                    std::future::pending::<()>().await;
                }
                return (StatusCode::INTERNAL_SERVER_ERROR, Body::empty()).into_response();
            }
        }
    }

    // cPanel API 2 through WHM answers in its own envelope (`cpanelresult`), not API 1's.
    if function == "cpanel" {
        return super::mail::cpanel_api(&host, &params);
    }
    let reply = dispatch(&host, &function, &params).await;
    render(&function, api1, reply)
}

async fn dispatch(host: &Arc<Host>, function: &str, params: &Params) -> Reply {
    if matches!(function, "suspendacct" | "unsuspendacct" | "removeacct") {
        let user = params.get("username").or_else(|| params.get("user")).cloned().unwrap_or_default();
        host.state().account_changes.push((function.to_owned(), user));
    }
    match function {
        "version" => Reply::ok(json!({ "version": host.version })),
        "listaccts" => listaccts(host, params),
        "accountsummary" => accountsummary(host, params),
        "get_domain_info" => get_domain_info(host),
        "listresellers" => listresellers(host),
        "listpkgs" => listpkgs(host),
        "listips" => listips(host),
        "getdiskusage" => getdiskusage(host),
        "suspendacct" => suspendacct(host, params),
        "unsuspendacct" => unsuspendacct(host, params),
        "removeacct" => removeacct(host, params).await,
        "create_remote_root_transfer_session" => transfer::create_session(host, params),
        "enqueue_transfer_item" => transfer::enqueue_item(host, params),
        "start_transfer_session" => transfer::start_session(host, params),
        "get_transfer_session_state" => transfer::session_state(host, params),
        "fetch_transfer_session_log" => transfer::session_log(host, params),
        "pause_transfer_session" => transfer::pause_session(host, params),
        "abort_transfer_session" => transfer::abort_session(host, params),
        "analyze_transfer_session_remote" => transfer::analyze_session(host, params),
        "remote_basic_credential_check" => checks::remote_basic_credential_check(host, params),
        "setsiteip" => checks::setsiteip(host, params),
        "list_pops_for" => checks::list_pops_for(host, params),
        "parse_dns_zone" => checks::parse_dns_zone(host, params),
        other => Reply::fail(format!("Unknown app (“{other}”) requested for this version (1) of the API.")),
    }
}

fn render(function: &str, api1: bool, reply: Reply) -> Response {
    let body = if api1 {
        let string_result = STRING_RESULT_FUNCTIONS.contains(&function);
        let result = match (reply.ok, string_result) {
            (true, true) => json!("1"),
            (false, true) => json!("0"),
            (true, false) => json!(1),
            (false, false) => json!(0),
        };
        let mut metadata = json!({
            "command": function,
            "reason": reply.reason,
            "result": result,
            "version": 1,
        });
        if let Some(output) = reply.output {
            metadata["output"] = output;
        }
        let mut envelope = json!({ "metadata": metadata });
        if let Some(data) = reply.data {
            envelope["data"] = data;
        }
        envelope
    } else {
        // WHM API 0: no metadata, `status`/`statusmsg`, the data's keys at the top level.
        let mut envelope = json!({
            "status": if reply.ok { 1 } else { 0 },
            "statusmsg": reply.reason,
        });
        match reply.data {
            Some(Value::Object(map)) => {
                for (key, value) in map {
                    envelope[key] = value;
                }
            }
            Some(other) => envelope["data"] = other,
            None => {}
        }
        envelope
    };
    ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], body.to_string()).into_response()
}

/// Reads and validates a user-name parameter.
pub(crate) fn user_param(params: &Params, key: &str) -> Result<AccountName, Reply> {
    let Some(raw) = params.get(key).filter(|v| !v.is_empty()) else {
        return Err(Reply::fail(format!("No “{key}” parameter was specified.")));
    };
    AccountName::parse(raw).map_err(|e| Reply::fail(format!("Invalid value for “{key}”: {e}")))
}

/// Reads and validates a domain parameter.
pub(crate) fn domain_param(params: &Params, key: &str) -> Result<DomainName, Reply> {
    let Some(raw) = params.get(key).filter(|v| !v.is_empty()) else {
        return Err(Reply::fail(format!("No “{key}” parameter was specified.")));
    };
    DomainName::parse(raw).map_err(|e| Reply::fail(format!("Invalid value for “{key}”: {e}")))
}

fn acct_json(host: &Host, record: &AccountRecord) -> Value {
    let spec = &record.spec;
    let started = chrono::DateTime::from_timestamp(record.unix_startdate, 0).unwrap_or_default();
    // Some real servers answer "*unknown*" for these limits; so do some sim accounts.
    let unknown_limits = record.uid.is_multiple_of(4);
    let limit = |known: Value| {
        if unknown_limits { json!("*unknown*") } else { known }
    };
    let mut acct = json!({
        "user": spec.user.as_str(),
        "domain": spec.domain.as_str(),
        "ip": account_ip(host, record).to_string(),
        "ipv6": [],
        "owner": spec.owner,
        "plan": spec.plan,
        "email": spec.email,
        "partition": "home",
        "diskused": format!("{}M", spec.disk_mb),
        "disklimit": "unlimited",
        "inodesused": 40 + spec.disk_mb * 25,
        "inodeslimit": "unlimited",
        "suspended": if record.suspended.is_some() { 1 } else { 0 },
        "suspendreason": record.suspended.clone().unwrap_or_else(|| "not suspended".to_owned()),
        "suspendtime": record.suspend_time,
        "is_locked": 0,
        "startdate": started.format("%d %b %y %H:%M").to_string(),
        "unix_startdate": record.unix_startdate,
        "uid": record.uid,
        "shell": "/usr/local/cpanel/bin/noshell",
        "theme": "jupiter",
        "mailbox_format": "maildir",
        "outgoing_mail_hold": 0,
        "outgoing_mail_suspended": 0,
        "max_email_per_hour": "unlimited",
        "max_defer_fail_percentage": "unlimited",
        "min_defer_fail_to_trigger_protection": 5,
        "max_emailacct_quota": "unlimited",
        "maxaddons": limit(json!("unlimited")),
        "maxparked": limit(json!("unlimited")),
        "maxsub": limit(json!("unlimited")),
        "maxftp": "unlimited",
        "maxlst": "unlimited",
        "maxpop": "unlimited",
        "maxsql": "unlimited",
        "backup": 1,
        "legacy_backup": 0,
        "has_backup": 0,
        "temporary": 0,
        "is_temporary_domain": 0,
        "child_nodes": [],
    });
    if let Value::Object(map) = &mut acct {
        for (key, value) in &spec.listaccts_overrides {
            map.insert(key.clone(), value.clone());
        }
    }
    acct
}

/// The account's address: its dedicated IP, or the host's shared one.
pub(crate) fn account_ip(host: &Host, record: &AccountRecord) -> std::net::Ipv4Addr {
    record.spec.dedicated_ip.unwrap_or(host.ip)
}

fn matches_search(record: &AccountRecord, host: &Host, params: &Params) -> bool {
    let Some(search) = params.get("search").filter(|s| !s.is_empty()) else {
        return true;
    };
    let field = match params.get("searchtype").map(String::as_str) {
        Some("domain") => record.spec.domain.to_string(),
        Some("owner") => record.spec.owner.clone(),
        Some("ip") => account_ip(host, record).to_string(),
        Some("package") => record.spec.plan.clone(),
        _ => record.spec.user.to_string(),
    };
    // The sim has no PCRE: "regex" (the default) is a substring match, "exact" is exact.
    if params.get("searchmethod").map(String::as_str) == Some("exact") {
        field == *search
    } else {
        field.contains(search.as_str())
    }
}

fn listaccts(host: &Host, params: &Params) -> Reply {
    let state = host.state();
    let accts: Vec<Value> = state
        .accounts
        .values()
        .filter(|r| matches_search(r, host, params))
        .map(|r| acct_json(host, r))
        .collect();
    Reply::ok(json!({ "acct": accts }))
}

fn accountsummary(host: &Host, params: &Params) -> Reply {
    let state = host.state();
    let found = if params.contains_key("user") {
        let user = match user_param(params, "user") {
            Ok(user) => user,
            Err(reply) => return reply,
        };
        state.accounts.get(&user)
    } else if params.contains_key("domain") {
        let domain = match domain_param(params, "domain") {
            Ok(domain) => domain,
            Err(reply) => return reply,
        };
        state.accounts.values().find(|r| r.spec.domain == domain)
    } else {
        return Reply::fail("You must specify either the “user” or the “domain” parameter.");
    };
    match found {
        Some(record) => {
            let mut acct = acct_json(host, record);
            if let Value::Object(map) = &mut acct {
                map.remove("has_backup");
            }
            Reply::ok(json!({ "acct": [acct] }))
        }
        None => Reply::fail("Account does not exist."),
    }
}

fn get_domain_info(host: &Host) -> Reply {
    let state = host.state();
    let mut domains = Vec::new();
    for record in state.accounts.values() {
        let spec = &record.spec;
        let ip = account_ip(host, record).to_string();
        let dedicated = if spec.dedicated_ip.is_some() { 1 } else { 0 };
        // get_domain_info "only includes domains that you manually created": an addon
        // domain's automatically created subdomain (`addon.main`) is not listed on its own.
        let main = std::iter::once((&spec.domain, "main"));
        let addons = spec.addon_domains.iter().map(|d| (d, "addon"));
        let parked = spec.parked_domains.iter().map(|d| (d, "parked"));
        let subs = spec.sub_domains.iter().map(|d| (d, "sub"));
        for (domain, domain_type) in main.chain(addons).chain(parked).chain(subs) {
            domains.push(json!({
                "domain": domain.as_str(),
                "domain_type": domain_type,
                "user": spec.user.as_str(),
                "user_owner": spec.owner,
                "docroot": accounts::cpanel_docroot(spec, domain),
                "ipv4": ip,
                "ipv4_ssl": ip,
                "ipv6": null,
                "ipv6_is_dedicated": dedicated,
                "parent_domain": spec.domain.as_str(),
                "php_version": "ea-php81",
                "port": "80",
                "port_ssl": "443",
                "modsecurity_enabled": 1,
            }));
        }
    }
    Reply::ok(json!({ "domains": domains }))
}

fn listresellers(host: &Host) -> Reply {
    let state = host.state();
    let resellers: BTreeSet<&str> =
        state.accounts.values().map(|r| r.spec.owner.as_str()).filter(|owner| *owner != "root").collect();
    Reply::ok(json!({ "reseller": resellers }))
}

/// The packages a host has: its accounts' plans, `default`, and those a transfer created.
pub(crate) fn package_names(state: &HostState) -> Vec<String> {
    let mut plans: BTreeSet<String> = state.accounts.values().map(|r| r.spec.plan.clone()).collect();
    plans.insert("default".to_owned());
    plans.extend(state.packages.iter().cloned());
    plans.into_iter().collect()
}

fn listpkgs(host: &Host) -> Reply {
    let plans = package_names(&host.state());
    let pkgs: Vec<Value> = plans
        .iter()
        .map(String::as_str)
        .map(|name| {
            // A few sizes so the packages differ, as on a real host.
            let quota = match name {
                "default" => json!("unlimited"),
                "pro" => json!(10240),
                _ => json!("1024"),
            };
            json!({
                "name": name,
                "QUOTA": quota,
                "BWLIMIT": "unlimited",
                "CGI": "y",
                "CPMOD": "jupiter",
                "DIGESTAUTH": "n",
                "FEATURELIST": "default",
                "HASSHELL": "n",
                "IP": "n",
                "LANG": "en",
                "MAXADDON": "unlimited",
                "MAXFTP": "unlimited",
                "MAXLST": "unlimited",
                "MAXPARK": "unlimited",
                "MAXPOP": "unlimited",
                "MAXSQL": "unlimited",
                "MAXSUB": "unlimited",
                "MAX_DEFER_FAIL_PERCENTAGE": "unlimited",
                "MAX_EMAILACCT_QUOTA": "unlimited",
                "MAX_EMAIL_PER_HOUR": "unlimited",
                "MAX_TEAM_USERS": 7,
                "_PACKAGE_EXTENSIONS": "",
            })
        })
        .collect();
    Reply::ok(json!({ "pkg": pkgs }))
}

fn listips(host: &Host) -> Reply {
    let state = host.state();
    let used = if state.accounts.values().any(|r| r.spec.dedicated_ip.is_none()) { 1 } else { 0 };
    let mut ips = vec![json!({
        "active": 1,
        "dedicated": 0,
        "if": "lo",
        "ip": host.ip.to_string(),
        "mainaddr": 1,
        "netmask": "255.0.0.0",
        "network": "127.0.0.0",
        "public_ip": host.ip.to_string(),
        "removable": 0,
        "used": used,
    })];
    for ip in &host.dedicated_ips {
        let used = state.accounts.values().any(|r| r.spec.dedicated_ip == Some(*ip));
        ips.push(json!({
            "active": 1,
            "dedicated": 1,
            "if": "lo:1",
            "ip": ip.to_string(),
            "mainaddr": 0,
            "netmask": "255.0.0.0",
            "network": "127.0.0.0",
            "public_ip": ip.to_string(),
            "removable": 1,
            "used": if used { 1 } else { 0 },
        }));
    }
    Reply::ok(json!({ "ip": ips }))
}

/// `getdiskusage`: the server's partitions, sizes in KiB as `df` prints them (the operation
/// page's sample: `available`, `device`, `disk`, `filesystem`, `inodes_*`, `mount`,
/// `percentage`, `total`, `used`). `/home` holds the accounts' declared sizes plus 2 GB.
fn getdiskusage(host: &Host) -> Reply {
    let state = host.state();
    let accounts_mb: u64 = state.accounts.values().map(|r| r.spec.disk_mb).sum();
    let partition = |device: &str, mount: &str, total_mb: u64, used_mb: u64| {
        let used_mb = used_mb.min(total_mb);
        let (total, used) = (total_mb * 1024, used_mb * 1024);
        let percentage = (used * 100).checked_div(total).unwrap_or(100);
        json!({
            "available": total - used,
            "device": device,
            "disk": device.trim_start_matches("/dev/"),
            "filesystem": device,
            "inodes_available": 20_000_000 - 40_000,
            "inodes_ipercentage": 1,
            "inodes_total": 20_000_000,
            "inodes_used": 40_000,
            "mount": mount,
            "percentage": percentage,
            "total": total,
            "used": used,
        })
    };
    let partitions = vec![
        partition("/dev/vda1", "/", 40 * 1024, 12 * 1024),
        partition("/dev/vdb1", "/home", host.disk_total_mb, accounts_mb + 2048),
    ];
    Reply {
        reason: "Successfully retrieved disk usage".to_owned(),
        ..Reply::ok(json!({ "partition": partitions }))
    }
}

fn suspendacct(host: &Host, params: &Params) -> Reply {
    let user = match user_param(params, "user") {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    let reason =
        params.get("reason").filter(|r| !r.is_empty()).cloned().unwrap_or_else(|| "Unknown".to_owned());
    let mut state = host.state();
    let Some(record) = state.accounts.get_mut(&user) else {
        return Reply::fail(format!("The user “{user}” does not exist."));
    };
    record.suspended = Some(reason);
    record.suspend_time = Some(chrono::Utc::now().timestamp());
    let raw = format!(
        "Changing Shell to /bin/false...Done\nLocking Password...Done\n\
         Suspending mysql users\nSuspending FTP accounts...Done\n\
         Suspending email accounts...Done\n{user}'s account has been suspended\n"
    );
    Reply { output: Some(json!({ "raw": raw })), ..Reply::ok_metadata_only("OK") }
}

fn unsuspendacct(host: &Host, params: &Params) -> Reply {
    let user = match user_param(params, "user") {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    let mut state = host.state();
    let Some(record) = state.accounts.get_mut(&user) else {
        return Reply::fail(format!("The user “{user}” does not exist."));
    };
    record.suspended = None;
    record.suspend_time = None;
    Reply::ok_metadata_only("OK")
}

async fn removeacct(host: &Host, params: &Params) -> Reply {
    // `username` is the parameter; `user` is deprecated but still accepted by cPanel.
    let key = if params.contains_key("username") { "username" } else { "user" };
    let user = match user_param(params, key) {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    if host.state().accounts.remove(&user).is_none() {
        return Reply::fail(format!("System user “{user}” does not exist or is not a cPanel user."));
    }
    let home = accounts::home_dir(&host.data_dir, &user);
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&home) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    })
    .await;
    if !matches!(removed, Ok(Ok(()))) {
        tracing::warn!(%user, "simulated host: could not remove the account's files");
    }
    let keepdns = params.get("keepdns").map(String::as_str) == Some("1");
    let dns = if keepdns { "Keeping DNS Entries...Done\n" } else { "Removing DNS Entries...Done\n" };
    let raw = format!(
        "Running pre removal script (/usr/local/cpanel/scripts/prekillacct)......Done\n\
         Killing all processes owned by user......Done\nRemoving Sessions...Done\n\
         Removing Suspended Info...Done\nRemoving User from Group...Done\n\
         Removing Web Logs...Done\n{dns}Removing user's cPanel Databases...Done\n\
         Removing User...Done\n{user} account removed\n"
    );
    Reply {
        output: Some(json!({ "raw": raw })),
        ..Reply::ok_metadata_only(&format!("{user} account removed"))
    }
}
