//! The simulated cPanel host, exercised with plain HTTP requests: WHM API 1 shapes, auth,
//! transfers that really move files, faults, and the Host-header web listener.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use siirto::names::AccountName;
use siirto::sim::{Fault, SimAccount, SimHost, SimHostSpec, SimWorld, generate_accounts, start_host};

const SOURCE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TARGET_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// A started pair (or single host) with its temporary data directory.
struct Hosts {
    _dir: tempfile::TempDir,
    world: SimWorld,
    source: SimHost,
    target: Option<SimHost>,
}

async fn start_source(accounts: Vec<SimAccount>, rate: u64, with_target: bool) -> Hosts {
    let dir = tempfile::tempdir().expect("temp dir");
    let world = SimWorld::new();
    let mut spec = SimHostSpec::new("old.sim.test", SOURCE_IP, "SOURCETOKEN123");
    spec.accounts = accounts;
    spec.transfer_bytes_per_sec = rate;
    let source = start_host(spec, dir.path().join("old"), &world).await.expect("source host starts");
    let target = if with_target {
        let mut spec = SimHostSpec::new("new.sim.test", TARGET_IP, "TARGETTOKEN456");
        spec.transfer_bytes_per_sec = rate;
        Some(start_host(spec, dir.path().join("new"), &world).await.expect("target host starts"))
    } else {
        None
    };
    Hosts { _dir: dir, world, source, target }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

/// GET /json-api/<function>?api.version=1&... with the host's token.
async fn call(host: &SimHost, function: &str, params: &[(&str, &str)]) -> Value {
    let mut query: Vec<(&str, &str)> = vec![("api.version", "1")];
    query.extend_from_slice(params);
    let response = client()
        .get(host.whm_url.join(&format!("json-api/{function}")).unwrap())
        .header("Authorization", format!("whm root:{}", host.token))
        .query(&query)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200, "{function}");
    response.json().await.expect("JSON body")
}

fn assert_ok(reply: &Value, function: &str) {
    let metadata = &reply["metadata"];
    assert_eq!(metadata["command"], function, "{reply}");
    assert_eq!(metadata["version"], 1, "{reply}");
    let result = &metadata["result"];
    assert!(result == 1 || result == "1", "{function}: {reply}");
}

fn assert_result_zero(reply: &Value) -> String {
    let result = &reply["metadata"]["result"];
    assert!(result == 0 || result == "0", "{reply}");
    reply["metadata"]["reason"].as_str().expect("a reason").to_owned()
}

/// Fetches a page from a host's web listener with the given Host header.
async fn web_get(host: &SimHost, site: &str, path: &str) -> (u16, String) {
    let response = client()
        .get(format!("http://{}{path}", host.web_addr))
        .header("Host", site)
        .send()
        .await
        .expect("web request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("web body"))
}

/// Polls a condition with a deadline (no fixed sleeps).
async fn wait_for<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

async fn session_state(target: &SimHost, session: &str) -> String {
    let reply = call(target, "get_transfer_session_state", &[("transfer_session_id", session)]).await;
    assert_ok(&reply, "get_transfer_session_state");
    assert_eq!(reply["metadata"]["result"], "1", "string result on transfer functions");
    reply["data"]["state_name"].as_str().unwrap().to_owned()
}

async fn wait_state(target: &SimHost, session: &str, wanted: &str) {
    wait_for(&format!("session state {wanted}"), || async { session_state(target, session).await == wanted })
        .await;
}

/// Creates a session on the target pulling from the source and enqueues `users`.
async fn transfer_session(hosts: &Hosts, users: &[&SimAccount], threads: &str) -> String {
    let target = hosts.target.as_ref().unwrap();
    let created = call(
        target,
        "create_remote_root_transfer_session",
        &[
            ("host", "old.sim.test"),
            ("user", "root"),
            ("password", &hosts.source.token),
            ("port", "22"),
            ("transfer_threads", threads),
            ("restore_threads", threads),
            ("comm_transport", "ssh"),
            ("unrestricted_restore", "0"),
        ],
    )
    .await;
    assert_ok(&created, "create_remote_root_transfer_session");
    let session = created["data"]["transfer_session_id"].as_str().unwrap().to_owned();
    assert!(created["data"]["analyze_rawout"].is_string());
    for account in users {
        let size = (account.disk_mb * 1024 * 1024).to_string();
        let reply = call(
            target,
            "enqueue_transfer_item",
            &[
                ("transfer_session_id", &session),
                ("module", "AccountRemoteRoot"),
                ("user", account.user.as_str()),
                ("localuser", account.user.as_str()),
                ("domain", account.domain.as_str()),
                ("size", &size),
            ],
        )
        .await;
        assert_ok(&reply, "enqueue_transfer_item");
        assert!(reply.get("data").is_none(), "metadata only: {reply}");
    }
    session
}

async fn master_log(target: &SimHost, session: &str) -> Vec<Value> {
    let reply = call(
        target,
        "fetch_transfer_session_log",
        &[("transfer_session_id", session), ("logfile", "master.log")],
    )
    .await;
    assert_ok(&reply, "fetch_transfer_session_log");
    reply["data"]["log"]
        .as_str()
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
        .collect()
}

fn item_lines<'a>(log: &'a [Value], action: &str, queue: &str, item: &str) -> Vec<&'a Value> {
    log.iter()
        .filter(|l| {
            l["contents"]["action"] == action
                && l["contents"]["queue"] == queue
                && l["contents"]["item"] == item
        })
        .collect()
}

#[tokio::test]
async fn inventory_functions_have_the_documented_shapes() {
    let hosts = start_source(generate_accounts(6, "kukka"), 0, false).await;
    let host = &hosts.source;

    let reply = call(host, "listaccts", &[]).await;
    assert_ok(&reply, "listaccts");
    assert_eq!(reply["metadata"]["result"], 1, "integer result outside transfers");
    assert_eq!(reply["metadata"]["reason"], "OK");
    let accts = reply["data"]["acct"].as_array().unwrap();
    assert_eq!(accts.len(), 6);
    let first = &accts[0];
    for key in [
        "user",
        "domain",
        "ip",
        "owner",
        "plan",
        "email",
        "partition",
        "diskused",
        "disklimit",
        "suspended",
        "suspendreason",
        "startdate",
        "unix_startdate",
        "maxaddons",
        "maxparked",
        "maxsub",
        "uid",
        "shell",
        "theme",
        "mailbox_format",
        "inodesused",
        "is_locked",
    ] {
        assert!(first.get(key).is_some(), "listaccts has {key}: {first}");
    }
    assert_eq!(first["user"], "kukka0001");
    assert_eq!(first["domain"], "kukka-0001.test");
    assert_eq!(first["ip"], "127.0.0.2");
    assert_eq!(first["email"], "owner@kukka-0001.test");
    assert_eq!(first["partition"], "home");
    assert_eq!(first["disklimit"], "unlimited");
    assert_eq!(first["suspended"], 0);
    assert_eq!(first["suspendreason"], "not suspended");
    assert!(first["unix_startdate"].is_i64());
    for acct in accts {
        let used = acct["diskused"].as_str().unwrap();
        assert!(used.ends_with('M') && used[..used.len() - 1].parse::<u64>().is_ok(), "{used}");
        let maxaddons = &acct["maxaddons"];
        assert!(maxaddons == "unlimited" || maxaddons == "*unknown*", "{maxaddons}");
    }
    assert!(accts.iter().any(|a| a["maxaddons"] == "*unknown*"), "some accounts show the *unknown* quirk");
    assert_eq!(accts[4]["owner"], "kukka0001", "account 5 is owned by the reseller");

    let filtered = call(
        host,
        "listaccts",
        &[("search", "kukka0002"), ("searchtype", "user"), ("searchmethod", "exact")],
    )
    .await;
    assert_eq!(filtered["data"]["acct"].as_array().unwrap().len(), 1);

    let summary = call(host, "accountsummary", &[("user", "kukka0003")]).await;
    assert_ok(&summary, "accountsummary");
    assert_eq!(summary["data"]["acct"][0]["domain"], "kukka-0003.test");
    let missing = call(host, "accountsummary", &[("user", "nosuchuser")]).await;
    assert_result_zero(&missing);

    let domains = call(host, "get_domain_info", &[]).await;
    assert_ok(&domains, "get_domain_info");
    let domains = domains["data"]["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 6 + 2 + 1 + 1, "six main domains, two addons, one parked, one sub");
    let addon = domains.iter().find(|d| d["domain"] == "kukka-0003-shop.test").expect("the addon domain");
    assert_eq!(addon["domain_type"], "addon");
    assert_eq!(addon["user"], "kukka0003");
    assert_eq!(addon["user_owner"], "root");
    assert_eq!(addon["parent_domain"], "kukka-0003.test");
    assert_eq!(addon["docroot"], "/home/kukka0003/public_html/kukka-0003-shop.test");
    assert_eq!(addon["ipv4"], "127.0.0.2");
    assert_eq!(addon["ipv4_ssl"], "127.0.0.2");
    assert!(addon["ipv6"].is_null());
    assert_eq!(addon["port"], "80");
    assert_eq!(addon["port_ssl"], "443");
    assert!(addon["php_version"].as_str().unwrap().starts_with("ea-php"));
    assert!(addon.get("modsecurity_enabled").is_some());
    let main = domains.iter().find(|d| d["domain"] == "kukka-0001.test").unwrap();
    assert_eq!(main["domain_type"], "main");
    assert_eq!(main["docroot"], "/home/kukka0001/public_html");

    let resellers = call(host, "listresellers", &[]).await;
    assert_ok(&resellers, "listresellers");
    assert_eq!(resellers["data"]["reseller"], serde_json::json!(["kukka0001"]));

    let pkgs = call(host, "listpkgs", &[]).await;
    assert_ok(&pkgs, "listpkgs");
    let names: Vec<&str> =
        pkgs["data"]["pkg"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"default") && names.contains(&"pro"), "{names:?}");

    let ips = call(host, "listips", &[]).await;
    assert_ok(&ips, "listips");
    let ip = &ips["data"]["ip"][0];
    assert_eq!(ip["ip"], "127.0.0.2");
    assert_eq!(ip["mainaddr"], 1);
    assert_eq!(ip["dedicated"], 0);

    let version = call(host, "version", &[]).await;
    assert_ok(&version, "version");
    assert_eq!(version["data"]["version"], "11.118.0.5");

    // POST with a form body works like GET.
    let posted: Value = client()
        .post(host.whm_url.join("json-api/accountsummary").unwrap())
        .header("Authorization", format!("whm root:{}", host.token))
        .form(&[("api.version", "1"), ("domain", "kukka-0002.test")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ok(&posted, "accountsummary");
    assert_eq!(posted["data"]["acct"][0]["user"], "kukka0002");

    let unknown = call(host, "no_such_function", &[]).await;
    assert!(assert_result_zero(&unknown).contains("Unknown app"));
}

#[tokio::test]
async fn account_files_exist_and_sites_are_served_by_host_header() {
    let hosts = start_source(generate_accounts(3, "kukka"), 0, false).await;
    let host = &hosts.source;
    let user = AccountName::parse("kukka0003").unwrap();
    let home = host.account_dir(&user);
    let index = std::fs::read_to_string(home.join("public_html/index.html")).unwrap();
    assert!(index.contains("<title>kukka-0003.test</title>") && index.contains("kukka0003"));
    assert!(home.join("public_html/kukka-0003-shop.test/index.html").is_file());
    assert!(home.join("mail/kukka-0003.test/new").is_dir());
    assert!(home.join("mail/kukka-0003-shop.test/cur").is_dir());

    assert_eq!(host.web_addr.ip(), SOURCE_IP);
    let (status, body) = web_get(host, "kukka-0003.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>kukka-0003.test</title>") && body.contains("kukka0003"));
    let (status, body) = web_get(host, "www.kukka-0003-shop.test", "/index.html").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>kukka-0003-shop.test</title>"));
    let (status, body) = web_get(host, "unknown.test", "/").await;
    assert_eq!(status, 404);
    assert!(body.contains("Sorry!"));
    let (status, _) = web_get(host, "kukka-0001.test", "/missing.html").await;
    assert_eq!(status, 404);
    let (status, _) = web_get(host, "kukka-0001.test", "/../../etc/passwd").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_bad_or_missing_token_gets_403_and_no_api_version_gets_api_0() {
    let hosts = start_source(generate_accounts(2, "kukka"), 0, false).await;
    let host = &hosts.source;
    let url = host.whm_url.join("json-api/listaccts?api.version=1").unwrap();
    for auth in [Some("whm root:WRONG"), Some("Basic cm9vdDp4"), Some("whm bob:SOURCETOKEN123"), None] {
        let mut request = client().get(url.clone());
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 403, "{auth:?}");
        let body = response.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&body).is_err(), "not JSON: {body}");
        assert!(body.len() < 1000);
    }

    let api0: Value = client()
        .get(host.whm_url.join("json-api/listaccts").unwrap())
        .header("Authorization", format!("whm root:{}", host.token))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(api0.get("metadata").is_none(), "{api0}");
    assert_eq!(api0["status"], 1);
    assert!(api0["statusmsg"].is_string());
    assert_eq!(api0["acct"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn invalid_names_are_refused_before_they_touch_a_path() {
    let hosts = start_source(generate_accounts(2, "kukka"), 0, false).await;
    let host = &hosts.source;
    for bad in ["../etc", "Kukka0001", "", "a/b", "kukka0001;rm"] {
        let reply = call(host, "suspendacct", &[("user", bad), ("reason", "x")]).await;
        assert_result_zero(&reply);
        let reply = call(host, "removeacct", &[("username", bad)]).await;
        assert_result_zero(&reply);
    }
    let reply = call(host, "accountsummary", &[("domain", "../bad..test")]).await;
    assert_result_zero(&reply);
    assert!(host.account_dir(&AccountName::parse("kukka0001").unwrap()).is_dir());
}

#[tokio::test]
async fn suspend_unsuspend_and_remove_accounts() {
    let hosts = start_source(generate_accounts(2, "kukka"), 0, false).await;
    let host = &hosts.source;
    let user = AccountName::parse("kukka0002").unwrap();

    let reply = call(host, "suspendacct", &[("user", "kukka0002"), ("reason", "moved")]).await;
    assert_ok(&reply, "suspendacct");
    assert!(reply["metadata"]["output"]["raw"].as_str().unwrap().contains("suspended"));
    let summary = call(host, "accountsummary", &[("user", "kukka0002")]).await;
    assert_eq!(summary["data"]["acct"][0]["suspended"], 1);
    assert_eq!(summary["data"]["acct"][0]["suspendreason"], "moved");
    assert!(host.is_suspended(&user));
    let (status, body) = web_get(host, "kukka-0002.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("Account Suspended"));

    let reply = call(host, "unsuspendacct", &[("user", "kukka0002")]).await;
    assert_ok(&reply, "unsuspendacct");
    let (_, body) = web_get(host, "kukka-0002.test", "/").await;
    assert!(body.contains("kukka0002"));

    let reply = call(host, "removeacct", &[("username", "kukka0002")]).await;
    assert_ok(&reply, "removeacct");
    assert_eq!(reply["metadata"]["reason"], "kukka0002 account removed");
    assert!(reply["metadata"]["output"]["raw"].as_str().unwrap().contains("Removing DNS Entries"));
    assert!(!host.has_account(&user));
    assert!(!host.account_dir(&user).exists());
    let (status, _) = web_get(host, "kukka-0002.test", "/").await;
    assert_eq!(status, 404);
    let again = call(host, "removeacct", &[("username", "kukka0002")]).await;
    assert_result_zero(&again);
    let listed = call(host, "listaccts", &[]).await;
    assert_eq!(listed["data"]["acct"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_transfer_moves_the_files_and_logs_success_in_both_queues() {
    let accounts = generate_accounts(4, "kukka");
    // 100 MiB/s: the 1..50 MB accounts take a fraction of a second each, really.
    let hosts = start_source(accounts.clone(), 100 * 1024 * 1024, true).await;
    let target = hosts.target.as_ref().unwrap();
    let moving: Vec<&SimAccount> = accounts.iter().take(3).collect();

    // Before: the source serves the site, the target does not know it.
    let (status, _) = web_get(&hosts.source, "kukka-0003.test", "/").await;
    assert_eq!(status, 200);
    let (status, _) = web_get(target, "kukka-0003.test", "/").await;
    assert_eq!(status, 404);

    let session = transfer_session(&hosts, &moving, "2").await;
    assert!(session.starts_with("oldsimtestcopya"), "{session}");
    assert_eq!(session_state(target, &session).await, "PENDING");
    let started = call(target, "start_transfer_session", &[("transfer_session_id", &session)]).await;
    assert_ok(&started, "start_transfer_session");
    assert!(started["data"]["pid"].is_u64());
    let state = session_state(target, &session).await;
    assert!(["TRANSFER_INPROGRESS", "RESTORE_INPROGRESS", "COMPLETED"].contains(&state.as_str()), "{state}");
    wait_state(target, &session, "COMPLETED").await;

    let log = master_log(target, &session).await;
    for line in &log {
        assert!(line["pid"].is_string(), "pid is a string as in the guide: {line}");
        assert_eq!(line["partial"], 0);
        assert!(["out", "success", "failure", "control", "warn"].contains(&line["type"].as_str().unwrap()));
    }
    let actions: Vec<&str> = log.iter().map(|l| l["contents"]["action"].as_str().unwrap()).collect();
    for action in ["start", "version", "queue_count", "remotehost", "complete"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
    assert_eq!(log.last().unwrap()["contents"]["action"], "complete");
    for account in &moving {
        let user = account.user.as_str();
        for queue in ["TRANSFER", "RESTORE"] {
            let success = item_lines(&log, "success-item", queue, user);
            assert_eq!(success.len(), 1, "{queue} success for {user}");
            let contents = &success[0]["contents"];
            assert_eq!(success[0]["type"], "success");
            assert_eq!(contents["item_name"], "Account");
            assert_eq!(contents["item_type"], "AccountRemoteRoot");
            assert_eq!(contents["local_item"], user);
            assert_eq!(contents["logfile"], format!("item-{queue}_AccountRemoteRoot_{user}"));
            assert!(contents["time"].is_i64());
            assert_eq!(item_lines(&log, "start-item", queue, user).len(), 1);
            assert_eq!(item_lines(&log, "process-item", queue, user).len(), 1);
            assert!(item_lines(&log, "failed-item", queue, user).is_empty());
        }
        // The files really arrived, byte for byte.
        let on_source = hosts.source.account_dir(&account.user).join("public_html/index.html");
        let on_target = target.account_dir(&account.user).join("public_html/index.html");
        assert_eq!(std::fs::read(on_source).unwrap(), std::fs::read(&on_target).unwrap());
        assert!(target.account_dir(&account.user).join(format!("mail/{}/new", account.domain)).is_dir());
    }
    assert!(
        target.account_dir(&accounts[2].user).join("public_html/kukka-0003-shop.test/index.html").is_file()
    );

    // An item log named in master.log can be fetched too.
    let item_log = call(
        target,
        "fetch_transfer_session_log",
        &[("transfer_session_id", &session), ("logfile", "item-RESTORE_AccountRemoteRoot_kukka0001")],
    )
    .await;
    assert_ok(&item_log, "fetch_transfer_session_log");
    assert!(item_log["data"]["log"].as_str().unwrap().contains("Restore Complete"));

    // The target lists and serves the restored accounts; the untouched one stays behind.
    let listed = call(target, "listaccts", &[]).await;
    let users: Vec<&str> =
        listed["data"]["acct"].as_array().unwrap().iter().map(|a| a["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["kukka0001", "kukka0002", "kukka0003"]);
    assert_eq!(listed["data"]["acct"][0]["ip"], "127.0.0.3");
    let domains = call(target, "get_domain_info", &[]).await;
    assert_eq!(domains["data"]["domains"].as_array().unwrap().len(), 4);
    let (status, body) = web_get(target, "kukka-0003.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("kukka0003"));
    let (status, body) = web_get(target, "kukka-0003-shop.test", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>kukka-0003-shop.test</title>"));
    let (status, _) = web_get(target, "kukka-0004.test", "/").await;
    assert_eq!(status, 404);
    // The source still has everything (a transfer copies).
    assert_eq!(hosts.source.accounts().len(), 4);

    // A finished session cannot be restarted or take new items.
    let restart = call(target, "start_transfer_session", &[("transfer_session_id", &session)]).await;
    assert_result_zero(&restart);
    drop(hosts.world);
}

#[tokio::test]
async fn a_failing_restore_and_an_existing_account_give_failed_items_and_a_completed_session() {
    let accounts = generate_accounts(3, "kukka");
    let hosts = start_source(accounts.clone(), 0, true).await;
    let target = hosts.target.as_ref().unwrap();
    assert!(hosts.source.set_fail_restore(
        &accounts[1].user,
        Some("Restore failed: sim says the quota is exceeded.".to_owned()),
    ));

    // kukka0003 is already on the target from an earlier session.
    let first = transfer_session(&hosts, &[&accounts[2]], "1").await;
    call(target, "start_transfer_session", &[("transfer_session_id", &first)]).await;
    wait_state(target, &first, "COMPLETED").await;

    let session = transfer_session(&hosts, &accounts.iter().collect::<Vec<_>>(), "3").await;
    call(target, "start_transfer_session", &[("transfer_session_id", &session)]).await;
    wait_state(target, &session, "COMPLETED").await;
    let log = master_log(target, &session).await;

    assert_eq!(item_lines(&log, "success-item", "RESTORE", "kukka0001").len(), 1);

    assert_eq!(item_lines(&log, "success-item", "TRANSFER", "kukka0002").len(), 1);
    let failed = item_lines(&log, "failed-item", "RESTORE", "kukka0002");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["type"], "failure");
    assert_eq!(failed[0]["contents"]["msg"]["failure"], "Restore failed: sim says the quota is exceeded.");
    assert!(!target.has_account(&accounts[1].user));
    assert!(!target.account_dir(&accounts[1].user).exists());

    let exists = item_lines(&log, "failed-item", "RESTORE", "kukka0003");
    assert_eq!(exists.len(), 1);
    assert_eq!(
        exists[0]["contents"]["msg"]["failure"],
        "The account “kukka0003” already exists on “new.sim.test”."
    );

    // Switched back at run time, the account transfers.
    hosts.source.set_fail_restore(&accounts[1].user, None);
    let retry = transfer_session(&hosts, &[&accounts[1]], "1").await;
    call(target, "start_transfer_session", &[("transfer_session_id", &retry)]).await;
    wait_state(target, &retry, "COMPLETED").await;
    assert!(target.has_account(&accounts[1].user));
}

#[tokio::test]
async fn session_creation_checks_the_remote_host_and_credentials() {
    let hosts = start_source(generate_accounts(1, "kukka"), 0, true).await;
    let target = hosts.target.as_ref().unwrap();
    let cases: &[&[(&str, &str)]] = &[
        &[("host", "nowhere.sim.test"), ("user", "root"), ("password", "SOURCETOKEN123")],
        &[("host", "old.sim.test"), ("user", "root"), ("password", "wrong")],
        &[("host", "old.sim.test"), ("user", "bob"), ("password", "SOURCETOKEN123")],
        &[("host", "old.sim.test; rm -rf /"), ("user", "root"), ("password", "x")],
        &[("user", "root"), ("password", "SOURCETOKEN123")],
    ];
    for params in cases {
        let reply = call(target, "create_remote_root_transfer_session", params).await;
        let reason = assert_result_zero(&reply);
        assert!(!reason.is_empty(), "{params:?}");
        assert_eq!(reply["metadata"]["result"], "0");
    }
    // By IP, and with a root SSH key instead of a password.
    for params in [
        [("host", "127.0.0.2"), ("user", "root"), ("password", "SOURCETOKEN123")],
        [("host", "old.sim.test"), ("user", "root"), ("sshkey_name", "siirto")],
    ] {
        let reply = call(target, "create_remote_root_transfer_session", &params).await;
        assert_ok(&reply, "create_remote_root_transfer_session");
    }
    let bad_item = call(
        target,
        "enqueue_transfer_item",
        &[
            ("transfer_session_id", "nosuchsession"),
            ("module", "AccountRemoteRoot"),
            ("user", "kukka0001"),
            ("localuser", "kukka0001"),
        ],
    )
    .await;
    assert_result_zero(&bad_item);
    let bad_id = call(target, "get_transfer_session_state", &[("transfer_session_id", "../../x")]).await;
    assert_result_zero(&bad_id);
}

#[tokio::test]
async fn pause_resume_and_abort() {
    let accounts = generate_accounts(6, "kukka");
    // 50 MiB/s with one thread: the session runs for a few seconds.
    let hosts = start_source(accounts.clone(), 50 * 1024 * 1024, true).await;
    let target = hosts.target.as_ref().unwrap();
    let all: Vec<&SimAccount> = accounts.iter().collect();

    let session = transfer_session(&hosts, &all, "1").await;
    call(target, "start_transfer_session", &[("transfer_session_id", &session)]).await;
    let paused = call(target, "pause_transfer_session", &[("transfer_session_id", &session)]).await;
    assert_ok(&paused, "pause_transfer_session");
    assert_eq!(session_state(target, &session).await, "PAUSED");
    let resumed = call(target, "start_transfer_session", &[("transfer_session_id", &session)]).await;
    assert_ok(&resumed, "start_transfer_session");
    wait_state(target, &session, "COMPLETED").await;
    assert_eq!(target.accounts().len(), 6);

    // A second target-side session (moving nothing new) is aborted at once.
    let other = transfer_session(&hosts, &[&accounts[0]], "1").await;
    call(target, "start_transfer_session", &[("transfer_session_id", &other)]).await;
    let aborted = call(target, "abort_transfer_session", &[("transfer_session_id", &other)]).await;
    assert_ok(&aborted, "abort_transfer_session");
    assert_eq!(session_state(target, &other).await, "ABORTED");
}

#[tokio::test]
async fn injected_faults_fail_the_named_function_the_given_number_of_times() {
    let hosts = start_source(generate_accounts(2, "kukka"), 0, false).await;
    let host = &hosts.source;
    let url = host.whm_url.join("json-api/listaccts?api.version=1").unwrap();
    let send =
        || client().get(url.clone()).header("Authorization", format!("whm root:{}", host.token)).send();

    host.inject(Fault::ResultZero {
        function: "listaccts".into(),
        reason: "Temporary failure: the sim is busy.".into(),
        times: 2,
    });
    for _ in 0..2 {
        let reply: Value = send().await.unwrap().json().await.unwrap();
        assert_eq!(assert_result_zero(&reply), "Temporary failure: the sim is busy.");
        assert_eq!(reply["metadata"]["command"], "listaccts");
    }
    let reply: Value = send().await.unwrap().json().await.unwrap();
    assert_ok(&reply, "listaccts");

    host.inject(Fault::NotJson { function: "listaccts".into(), times: 1 });
    let response = send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let body = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_err() && body.contains("<html>"));

    host.inject(Fault::Http500 { function: "listaccts".into(), times: 1 });
    assert_eq!(send().await.unwrap().status(), 500);

    host.inject(Fault::Drop { function: "listaccts".into(), times: 1 });
    let dropped = send().await;
    let error = dropped.expect_err("the connection is closed without an answer");
    assert!(!error.is_timeout(), "{error:?}");

    // Faults apply to their function only, and are used up.
    host.inject(Fault::Http500 { function: "version".into(), times: 1 });
    let reply: Value = send().await.unwrap().json().await.unwrap();
    assert_ok(&reply, "listaccts");
    host.clear_faults();
    assert_ok(&call(host, "version", &[]).await, "version");
}

#[tokio::test]
async fn https_mode_serves_a_self_signed_certificate_with_the_advertised_digest() {
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let mut spec = SimHostSpec::new("tls.sim.test", SOURCE_IP, "TLSTOKEN");
    spec.accounts = generate_accounts(1, "tls");
    spec.tls = true;
    let host = start_host(spec, dir.path().to_path_buf(), &world).await.unwrap();
    assert_eq!(host.whm_url.scheme(), "https");
    let digest = host.cert_sha256.expect("a certificate digest");

    // The lead's client pins the digest; here the test only looks at what the server sent.
    let client = reqwest::Client::builder().danger_accept_invalid_certs(true).tls_info(true).build().unwrap();
    let response = client
        .get(host.whm_url.join("json-api/version?api.version=1").unwrap())
        .header("Authorization", "whm root:TLSTOKEN")
        .send()
        .await
        .unwrap();
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().expect("TLS info").clone();
    let der = info.peer_certificate().expect("a peer certificate");
    let got: [u8; 32] = Sha256::digest(der).into();
    assert_eq!(got, digest);
    let reply: Value = response.json().await.unwrap();
    assert_ok(&reply, "version");

    // Plain HTTP on the TLS port does not get an answer.
    let plain = format!("http://{}/json-api/version", host.whm_url.authority());
    let refused = reqwest::Client::new().get(plain).send().await;
    assert!(refused.is_err() || !refused.unwrap().status().is_success());

    // A plain host has no digest; a stopped host stops answering.
    let url = host.whm_url.clone();
    host.shutdown();
    assert!(client.get(url).send().await.is_err());
}
