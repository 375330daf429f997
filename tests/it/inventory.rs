//! The read-only inventory and the target checks against started simulated hosts, and
//! `siirto inventory` through the binary (plain HTTP with its warning, pinned HTTPS with JSON).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::json;
use siirto::inventory::{DomainKind, Inventory, VersionVerdict, check_target, inventory};
use siirto::names::{AccountName, DomainName};
use siirto::secret::Secret;
use siirto::sim::{
    SimAccount, SimHost, SimHostSpec, SimWorld, add_contact_quirks, generate_accounts, start_host,
};
use siirto::whm::{TlsPolicy, WhmClient};

const SOURCE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 40);
const TARGET_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 41);
const DEDICATED: [Ipv4Addr; 3] =
    [Ipv4Addr::new(127, 0, 0, 101), Ipv4Addr::new(127, 0, 0, 102), Ipv4Addr::new(127, 0, 0, 103)];

fn user(name: &str) -> AccountName {
    AccountName::parse(name).unwrap()
}

fn client(host: &SimHost) -> WhmClient {
    let tls = host.cert_sha256.map_or(TlsPolicy::WebPki, TlsPolicy::PinSha256);
    WhmClient::new(host.whm_url.clone(), Secret::new(host.token.clone()), tls, Duration::from_secs(30))
        .unwrap()
}

/// 40 accounts with every kind of domain, three dedicated IPs, missing and invalid
/// contacts, an account with numbers sent as strings and `diskused` "0M", and one whose
/// listaccts entry the WHM client refuses.
fn odd_source_accounts() -> Vec<SimAccount> {
    let mut accounts = generate_accounts(40, "inv");
    add_contact_quirks(&mut accounts);
    accounts[2].listaccts_overrides =
        BTreeMap::from([("uid".to_owned(), json!("1042")), ("suspended".to_owned(), json!("0"))]);
    accounts[5].disk_mb = 0;
    accounts[38].listaccts_overrides = BTreeMap::from([("domain".to_owned(), json!("bad..domain"))]);
    accounts
}

async fn start(spec: SimHostSpec, dir: &std::path::Path, world: &SimWorld) -> SimHost {
    let name = spec.hostname.clone();
    start_host(spec, dir.join(name), world).await.expect("the simulated host starts")
}

async fn odd_source(dir: &std::path::Path, world: &SimWorld, tls: bool) -> SimHost {
    let mut spec = SimHostSpec::new("old.inv.test", SOURCE_IP, "INVSOURCETOKEN");
    spec.accounts = odd_source_accounts();
    spec.dedicated_ips = DEDICATED.to_vec();
    spec.tls = tls;
    start(spec, dir, world).await
}

fn account<'a>(inv: &'a Inventory, name: &str) -> &'a siirto::inventory::Account {
    inv.accounts.iter().find(|a| a.user.as_str() == name).unwrap_or_else(|| panic!("account {name}"))
}

fn flags_of<'a>(inv: &'a Inventory, item: &str) -> Vec<&'a str> {
    inv.flagged.iter().filter(|f| f.item == item).map(|f| f.reason.as_str()).collect()
}

#[tokio::test]
async fn every_kind_of_domain_reseller_package_and_dedicated_ip() {
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let source = odd_source(dir.path(), &world, false).await;
    let inv = inventory(&client(&source)).await.expect("inventory goes on despite odd items");

    assert_eq!(inv.host.version, "11.118.0.5");
    assert_eq!(inv.host.shared_ip, Some(SOURCE_IP));
    assert_eq!(inv.host.dedicated_ips, DEDICATED.to_vec());

    // 40 accounts, one refused by the client (its main domain is not a DNS name).
    assert_eq!(inv.counts.accounts, 39);
    assert!(inv.accounts.iter().all(|a| a.user.as_str() != "inv0039"));
    let kinds = &inv.counts.domains_by_kind;
    assert_eq!(kinds["main"], 39);
    assert_eq!(kinds["addon"], 12, "every third account, less the refused inv0039");
    assert_eq!(kinds["parked"], 10);
    assert_eq!(kinds["sub"], 8);
    assert_eq!(inv.counts.domains, 39 + 12 + 10 + 8);

    // Every kind, with its document root and parent.
    let a = account(&inv, "inv0020");
    let by_kind = |kind: DomainKind| a.domains.iter().find(|d| d.kind == kind).unwrap();
    assert_eq!(a.domains[0].kind, DomainKind::Main, "main domain first");
    assert_eq!(by_kind(DomainKind::Main).docroot.as_deref(), Some("/home/inv0020/public_html"));
    let parked = by_kind(DomainKind::Parked);
    assert_eq!(parked.domain.as_str(), "inv-0020-alias.test");
    assert_eq!(parked.docroot.as_deref(), Some("/home/inv0020/public_html"), "an alias serves the main site");
    assert_eq!(parked.parent_domain.as_ref().map(DomainName::as_str), Some("inv-0020.test"));
    let sub = by_kind(DomainKind::Sub);
    assert_eq!(sub.domain.as_str(), "blog.inv-0020.test");
    assert_eq!(sub.docroot.as_deref(), Some("/home/inv0020/public_html/blog.inv-0020.test"));
    let addon = account(&inv, "inv0003").domains.iter().find(|d| d.kind == DomainKind::Addon).unwrap();
    assert_eq!(addon.domain.as_str(), "inv-0003-shop.test");
    assert_eq!(addon.docroot.as_deref(), Some("/home/inv0003/public_html/inv-0003-shop.test"));

    // Resellers own the accounts listaccts says they own.
    assert_eq!(inv.resellers.len(), 1);
    let reseller = &inv.resellers[0];
    assert_eq!(reseller.user, "inv0001");
    let owned: Vec<&str> = reseller.accounts.iter().map(AccountName::as_str).collect();
    assert_eq!(
        owned,
        ["inv0005", "inv0010", "inv0015", "inv0020", "inv0025", "inv0030", "inv0035", "inv0040"]
    );
    assert_eq!(account(&inv, "inv0005").owner, "inv0001");

    // Packages with their limits and users.
    let names: Vec<&str> = inv.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "inv0001_basic", "pro"]);
    let pro = inv.packages.iter().find(|p| p.name == "pro").unwrap();
    assert_eq!(pro.quota_mb, Some(10240));
    assert_eq!(inv.packages.iter().map(|p| p.accounts).sum::<usize>(), 39);
    assert_eq!(account(&inv, "inv0002").package, "pro");

    // Every 7th account is on a dedicated IP, as long as there are addresses.
    let dedicated: Vec<(&str, Option<Ipv4Addr>)> =
        inv.accounts.iter().filter(|a| a.on_dedicated_ip).map(|a| (a.user.as_str(), a.ip)).collect();
    assert_eq!(
        dedicated,
        [("inv0007", Some(DEDICATED[0])), ("inv0014", Some(DEDICATED[1])), ("inv0021", Some(DEDICATED[2]))]
    );
    assert_eq!(inv.counts.dedicated_ip_accounts, 3);
    assert_eq!(account(&inv, "inv0001").ip, Some(SOURCE_IP));
    assert!(!account(&inv, "inv0028").on_dedicated_ip);
    let on_dedicated = account(&inv, "inv0007");
    assert!(on_dedicated.domains.iter().all(|d| d.docroot.is_some()));

    // Odd fields are flagged on their item; the account is still inventoried.
    let missing = account(&inv, "inv0010");
    assert_eq!(missing.contact_email, None);
    assert!(!missing.contact_email_valid);
    assert_eq!(flags_of(&inv, "account inv0010"), ["no contact e-mail address"]);
    let invalid = account(&inv, "inv0020");
    assert_eq!(invalid.contact_email.as_deref(), Some("owner.at.inv-0020.test"));
    assert!(!invalid.contact_email_valid);
    assert_eq!(
        flags_of(&inv, "account inv0020"),
        ["contact e-mail \"owner.at.inv-0020.test\" is not a valid address"]
    );
    let strings = flags_of(&inv, "account inv0003");
    assert!(strings.contains(&"uid is a number sent as a string (\"1042\")"), "{strings:?}");
    assert!(strings.contains(&"suspended is a number sent as a string (\"0\")"), "{strings:?}");
    assert!(!account(&inv, "inv0003").suspended);
    assert_eq!(account(&inv, "inv0006").disk_used_mb, 0, "diskused \"0M\"");
    assert!(flags_of(&inv, "account inv0006").is_empty());
    assert!(account(&inv, "inv0001").flags.is_empty());
    assert!(account(&inv, "inv0001").contact_email_valid);

    // The refused listaccts entry is flagged with the reason, and so are its domains.
    let refused = flags_of(&inv, "listaccts entry");
    assert_eq!(refused.len(), 1);
    assert!(refused[0].starts_with("user \"inv0039\": domain \"bad..domain\" is not valid"), "{refused:?}");
    let orphan = flags_of(&inv, "domain inv-0039.test");
    assert_eq!(orphan, ["owned by inv0039, which listaccts does not list"]);
    assert_eq!(inv.counts.flagged, inv.flagged.len());
}

#[tokio::test]
async fn target_checks_find_clashes_short_disk_and_an_older_version() {
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let mut spec = SimHostSpec::new("old.inv.test", SOURCE_IP, "INVSOURCETOKEN");
    spec.accounts = generate_accounts(6, "chk");
    let source = start(spec, dir.path(), &world).await;
    let source_inv = inventory(&client(&source)).await.unwrap();
    let total: u64 = source_inv.accounts.iter().map(|a| a.disk_used_mb).sum();
    let largest = source_inv.accounts.iter().map(|a| a.disk_used_mb).max().unwrap();

    // A target that already has a chk0002 and one of chk0004's parked domains, is older,
    // and has only 100 MB more than the system's 2 GB on /home.
    let mut clashing = generate_accounts(2, "chk")[1].clone();
    clashing.domain = DomainName::parse("someone-else.test").unwrap();
    clashing.parked_domains.clear();
    clashing.sub_domains.clear();
    let mut other = generate_accounts(1, "taken")[0].clone();
    other.parked_domains = vec![DomainName::parse("chk-0004-alias.test").unwrap()];
    other.disk_mb = 0;
    clashing.disk_mb = 0;
    let mut spec = SimHostSpec::new("new.inv.test", TARGET_IP, "INVTARGETTOKEN");
    spec.accounts = vec![clashing, other];
    spec.version = "11.110.0.30".to_owned();
    spec.disk_total_mb = 2048 + 100;
    let target = start(spec, dir.path(), &world).await;

    let checks = check_target(&source_inv, &client(&target)).await.unwrap();
    assert_eq!(checks.user_clashes.len(), 1);
    assert_eq!(checks.user_clashes[0].user, user("chk0002"));
    assert_eq!(checks.user_clashes[0].target_domain.as_str(), "someone-else.test");
    assert_eq!(checks.domain_clashes.len(), 1, "{:?}", checks.domain_clashes);
    let clash = &checks.domain_clashes[0];
    assert_eq!(clash.domain.as_str(), "chk-0004-alias.test");
    assert_eq!(clash.source_user, user("chk0004"));
    assert_eq!(clash.target_user, user("taken0001"));
    assert_eq!(checks.disk.accounts_total_mb, total);
    assert_eq!(checks.disk.needed_mb, total + 2 * largest + 1024);
    assert_eq!(checks.disk.mount.as_deref(), Some("/home"));
    assert_eq!(checks.disk.available_mb, Some(100));
    assert_eq!(checks.disk.enough, Some(false));
    assert_eq!(checks.version.source, "11.118.0.5");
    assert_eq!(checks.version.target, "11.110.0.30");
    assert_eq!(checks.version.verdict, VersionVerdict::TargetOlder);
    assert!(!checks.all_clear());

    // An empty, roomy target of the same version has nothing to say.
    let spec = SimHostSpec::new("empty.inv.test", TARGET_IP, "INVEMPTYTOKEN");
    let empty = start(spec, dir.path(), &world).await;
    let checks = check_target(&source_inv, &client(&empty)).await.unwrap();
    assert!(checks.user_clashes.is_empty() && checks.domain_clashes.is_empty());
    assert_eq!(checks.disk.enough, Some(true));
    assert_eq!(checks.version.verdict, VersionVerdict::SameMajor);
    assert!(checks.all_clear());
}

/// Runs the binary off the runtime's threads, so the simulated host keeps answering.
async fn siirto(args: Vec<String>, dir: std::path::PathBuf) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_siirto"))
            .args(&args)
            .current_dir(dir)
            .env_remove("SIIRTO_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .expect("run siirto")
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_inventory_as_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let plain = odd_source(dir.path(), &world, false).await;
    std::fs::write(dir.path().join("plain.token"), format!("{}\n", plain.token)).unwrap();

    // Plain http: the inventory, and a warning on stderr.
    let args = vec![
        "inventory".into(),
        "--whm".into(),
        plain.whm_url.to_string(),
        "--token-file".into(),
        "plain.token".into(),
    ];
    let out = siirto(args, dir.path().to_path_buf()).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("plain http") && stderr.contains("unencrypted"), "{stderr}");
    assert!(stdout.contains("39 accounts (0 suspended, 3 on a dedicated IP), 69 domains"), "{stdout}");
    assert!(stdout.contains("parked  inv-0004-alias.test  /home/inv0004/public_html"), "{stdout}");
    assert!(stdout.contains("sub     blog.inv-0005.test"), "{stdout}");
    assert!(stdout.contains("inv0001          8 accounts: inv0005, inv0010"), "{stdout}");
    assert!(stdout.contains("inv0007          127.0.0.101"), "{stdout}");
    assert!(stdout.contains("account inv0010: no contact e-mail address"), "{stdout}");
    assert!(stdout.contains("listaccts entry: "), "{stdout}");
    assert!(!stdout.contains(&plain.token) && !stderr.contains(&plain.token), "the token is never printed");

    // Pinned https: one JSON document, no warning.
    let pinned = {
        let mut spec = SimHostSpec::new("tls.inv.test", SOURCE_IP, "INVTLSTOKEN");
        spec.accounts = odd_source_accounts();
        spec.dedicated_ips = DEDICATED.to_vec();
        spec.tls = true;
        start(spec, dir.path(), &world).await
    };
    std::fs::write(dir.path().join("tls.token"), &pinned.token).unwrap();
    let pin = hex::encode(pinned.cert_sha256.expect("an https host has a certificate"));
    let args = vec![
        "inventory".into(),
        "--whm".into(),
        pinned.whm_url.to_string(),
        "--token-file".into(),
        "tls.token".into(),
        "--tls-pin-sha256".into(),
        pin,
        "--json".into(),
    ];
    let out = siirto(args, dir.path().to_path_buf()).await;
    assert!(out.status.success(), "stderr:\n{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("plain http"));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["counts"]["accounts"], 39);
    assert_eq!(doc["counts"]["domains_by_kind"]["parked"], 10);
    assert_eq!(doc["host"]["shared_ip"], "127.0.0.40");
    assert_eq!(doc["host"]["dedicated_ips"][2], "127.0.0.103");
    let acct = doc["accounts"].as_array().unwrap().iter().find(|a| a["user"] == "inv0014").unwrap();
    assert_eq!(acct["on_dedicated_ip"], true);
    assert_eq!(acct["ip"], "127.0.0.102");
    assert_eq!(acct["domains"][0]["kind"], "main");
    assert_eq!(acct["contact_email"], "owner@inv-0014.test");
    assert_eq!(doc["resellers"][0]["user"], "inv0001");
    assert!(doc["flagged"].as_array().unwrap().iter().any(|f| f["item"] == "account inv0020"));

    // A wrong pin is refused, without printing an inventory.
    let args = vec![
        "inventory".into(),
        "--whm".into(),
        pinned.whm_url.to_string(),
        "--token-file".into(),
        "tls.token".into(),
        "--tls-pin-sha256".into(),
        "00".repeat(32),
    ];
    let out = siirto(args, dir.path().to_path_buf()).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("TLS"), "{}", text(&out.stderr));
}
