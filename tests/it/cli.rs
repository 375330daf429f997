//! The `siirto` binary as a sysadmin runs it: exit codes, messages and the demo.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn siirto(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args(args)
        .current_dir(dir)
        .env_remove("SIIRTO_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("run siirto")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_demo_moves_every_account_and_says_so_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = siirto(&["demo", "--accounts", "12", "--json", "--dir", "demo"], dir.path());
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the summary is one JSON document");
    assert_eq!(summary["accounts"], 12);
    assert_eq!(summary["arrived"], 12);
    assert_eq!(summary["state"], "cut_over");
    assert_eq!(summary["domains_resolving_to_target"], summary["domains"]);
    assert_eq!(summary["notices"], 12);
    // The notices are real files a person can open: a completion notice per account, a start
    // notice per customer (each demo account is its own customer).
    let outbox = dir.path().join("demo/outbox");
    let notices: Vec<_> = std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().path()).collect();
    let named = |kind: &str| {
        notices
            .iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(kind))
            .collect::<Vec<_>>()
    };
    assert_eq!(named("completion.").len(), 12);
    assert_eq!(named("start.").len(), 12);
    assert_eq!(summary["start_notices"], 12);
    let one = std::fs::read_to_string(named("completion.")[0]).unwrap();
    assert!(one.contains("Message-ID: <completion."), "{one}");
    // And the store the demo left answers `siirto status`.
    let status = siirto(&["status", "demo", "--json", "--config", "demo/siirto.toml"], dir.path());
    assert!(status.status.success(), "{}", text(&status.stderr));
    // One migration named: one object, not a list of one.
    let one: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(one["accounts_by_state"]["done"], 12, "{one}");
    let all = siirto(&["status", "--json", "--config", "demo/siirto.toml"], dir.path());
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(all[0]["id"], "demo", "{all}");

    // A command's log for a file or a pipe: no colours, and each warning once (the config's
    // hosts are plain http, and the command builds their clients more than once). The demo's
    // hosts are gone, so the pre-flight fails; its log is what this looks at.
    let preflight = siirto(&["preflight", "demo", "--config", "demo/siirto.toml"], dir.path());
    let log = text(&preflight.stderr);
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log that is not a terminal: {log:?}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WHM over plain http")).collect();
    assert_eq!(warnings.len(), 2, "once per host: {warnings:#?}");
}

#[test]
fn a_broken_playbook_is_refused_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.toml"), "name = \"x\"\n\n[dns]\nshort_ttl = 0\n").unwrap();
    let out = siirto(&["playbook", "check", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml:4:") && err.contains("dns.short_ttl"), "{err}");

    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/shared-hosting.toml");
    let out = siirto(&["playbook", "check", shipped], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn playbook_check_shows_each_notice_as_a_customer_reads_it() {
    // The sample values are the example config's hosts: the notice names the servers by the
    // public names customers know, never the config's table keys.
    let dir = tempfile::tempdir().unwrap();
    let example = text(&siirto(&["config", "example"], dir.path()).stdout);
    assert!(
        example.contains("[hosts.old1]") && example.contains("hostname = \"old1.example.net\""),
        "{example}"
    );
    for shipped in ["shared-hosting.toml", "demo.toml"] {
        let path = format!("{}/playbooks/{shipped}", env!("CARGO_MANIFEST_DIR"));
        let out = siirto(&["playbook", "check", &path], dir.path());
        assert!(out.status.success(), "{}", text(&out.stderr));
        let shown = text(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        // Every kind, the shipped ones in each language: customers', customer service's and
        // the operators'.
        for kind in [
            "advance",
            "reseller",
            "start",
            "completion",
            "reminder",
            "correction",
            "staff",
            "held",
            "notice_failed",
        ] {
            for language in ["en", "fi"] {
                let header = format!("--- {kind} ({language}) notice, rendered with sample values ---");
                assert!(shown.contains(&header), "{header} missing");
            }
        }
        assert!(shown.contains("Subject: Tomorrow: 120 accounts move from old1.example.net"), "{shown}");
        assert!(shown.contains("Subject: kukka-0001.test has moved to a new server"), "{shown}");
        assert!(shown.contains("uses old1.example.net as its incoming or outgoing server"), "{shown}");
        assert!(shown.contains("change it to new1.example.net"), "{shown}");
        assert!(!shown.contains(" old1 ") && !shown.contains("{{"), "{shown}");
        // A domain whose DNS is not ours is named with what its customer must do.
        assert!(
            shown.contains(
                "point their A records (the domain and its www name) at 198.51.100.20: - toinen-0001.test"
            ),
            "{shown}"
        );
        assert!(shown.contains("(and an HTML part of"), "{shown}");
    }
}

#[test]
fn the_example_config_is_printed_and_a_broken_config_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = siirto(&["config", "example"], dir.path());
    assert!(out.status.success());
    let example = text(&out.stdout);
    assert!(example.contains("[hosts.") && example.contains("token_file"), "{example}");

    std::fs::write(dir.path().join("siirto.toml"), "database = \"mysql://x\"\n").unwrap();
    let out = siirto(&["status"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("siirto.toml:1:") && err.contains("dns: expected this required field"), "{err}");
}

/// A `siirto sim` child process and what it printed until it said it serves; killed on drop.
pub(crate) struct SimProcess {
    child: Child,
    /// Its stdout up to and including "press Ctrl-C to stop".
    pub printed: String,
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `siirto sim ARGS` in `dir` and waits (60 s at most) until it says it serves.
pub(crate) fn start_sim(args: &[&str], dir: &Path) -> SimProcess {
    let stderr_path = dir.join(format!("sim-{}.stderr", rand::random::<u32>()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_siirto"))
        .arg("sim")
        .args(args)
        .current_dir(dir)
        .env_remove("SIIRTO_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("sim's stderr file"))
        .spawn()
        .expect("run siirto sim");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut printed = String::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(line)) => {
                printed.push_str(&line);
                printed.push('\n');
                if line.contains("press Ctrl-C to stop") {
                    return SimProcess { child, printed };
                }
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("siirto sim did not come up ({other:?}); it printed:\n{printed}\nits log:\n{log}");
            }
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[test]
fn sim_writes_a_config_that_checks_and_plans_with_its_playbook() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(&["--accounts", "3", "--write-config", "cfg"], dir.path());
    let cfg = dir.path().join("cfg");
    // The secrets are in files only the owner reads, and not on the screen.
    for name in ["old.token", "new.token", "pdns.key"] {
        let file = cfg.join("secrets").join(name);
        assert_eq!(mode(&file), 0o600, "{name}");
        let secret = std::fs::read_to_string(&file).unwrap();
        assert!(secret.trim().len() >= 16, "{name}: {secret:?}");
        assert!(!sim.printed.contains(secret.trim()), "{name} printed:\n{}", sim.printed);
    }
    assert!(sim.printed.contains("cfg/siirto.toml"), "{}", sim.printed);
    assert!(cfg.join("outbox").is_dir());
    let config = std::fs::read_to_string(cfg.join("siirto.toml")).unwrap();
    assert!(
        config.contains("hostname = \"old.sim.test\"") && config.contains("hostname = \"new.sim.test\""),
        "{config}"
    );

    let check = siirto(&["config", "check", "cfg/siirto.toml"], dir.path());
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(text(&check.stdout).contains("2 host(s)"), "{}", text(&check.stdout));
    let playbook = siirto(&["playbook", "check", "cfg/playbook.toml"], dir.path());
    assert!(playbook.status.success(), "{}", text(&playbook.stderr));
    let playbook_text = std::fs::read_to_string(cfg.join("playbook.toml")).unwrap();
    assert!(playbook_text.contains("\nfinal_sync = false"), "{playbook_text}");
    assert!(playbook_text.contains("\ngate_wait_override = "), "{playbook_text}");

    // The config reaches the running hosts and their nameserver.
    let plan = siirto(
        &[
            "plan",
            "--config",
            "cfg/siirto.toml",
            "--playbook",
            "cfg/playbook.toml",
            "--from",
            "old",
            "--to",
            "new",
            "--json",
        ],
        dir.path(),
    );
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["counts"]["accounts"], 3, "{plan}");
    drop(sim);
}

#[test]
fn sim_help_lists_only_what_sim_uses() {
    let dir = tempfile::tempdir().unwrap();
    let out = siirto(&["sim", "--help"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    for option in ["--accounts", "--data-dir", "--one", "--tls", "--write-config"] {
        assert!(help.contains(option), "{option} missing:\n{help}");
    }
    // The global --config is for the commands that read a config; sim reads none.
    assert!(!help.contains("--config "), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_puts_its_zones_in_a_real_powerdns_and_the_written_config_uses_it() {
    let pdns = crate::support::pdns::Pdns::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pdns.key"), format!("{}\n", pdns.api_key)).unwrap();
    let api_url = pdns.api_url.to_string();
    let dns_addr = pdns.dns_addr.to_string();
    let args = |config_dir: &'static str| {
        vec![
            "--accounts",
            "2",
            "--pdns",
            api_url.as_str(),
            "--pdns-key-file",
            "pdns.key",
            "--pdns-dns",
            dns_addr.as_str(),
            "--write-config",
            config_dir,
        ]
    };
    let sim = tokio::task::block_in_place(|| start_sim(&args("cfg"), dir.path()));
    assert!(!sim.printed.contains(&pdns.api_key), "the PowerDNS key printed:\n{}", sim.printed);

    // The zones are in PowerDNS, the serial moving with each API change, at the source.
    let http = reqwest::Client::new();
    let zones: serde_json::Value = http
        .get(pdns.api_url.join("api/v1/servers/localhost/zones").unwrap())
        .header("X-API-Key", &pdns.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<String> =
        zones.as_array().unwrap().iter().map(|z| z["name"].as_str().unwrap().to_owned()).collect();
    assert!(
        names.len() >= 2 && names.iter().all(|n| n.starts_with("kukka-") && n.ends_with(".test.")),
        "{names:?}"
    );
    for name in &names {
        let zone: serde_json::Value = http
            .get(pdns.api_url.join(&format!("api/v1/servers/localhost/zones/{name}")).unwrap())
            .header("X-API-Key", &pdns.api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(zone["soa_edit_api"], "DEFAULT", "{zone}");
        let apex_a = zone["rrsets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name.as_str() && r["type"] == "A")
            .unwrap_or_else(|| panic!("no A at the apex: {zone}"));
        assert_eq!(apex_a["records"][0]["content"], "127.0.0.2", "{zone}");
    }

    // The config names that PowerDNS and the operator's key file (no copy of the key).
    let config = std::fs::read_to_string(dir.path().join("cfg/siirto.toml")).unwrap();
    assert!(config.contains(&format!("api_url = \"{api_url}\"")), "{config}");
    assert!(config.contains(&format!("nameservers = [\"{dns_addr}\"]")), "{config}");
    let key_file = dir.path().canonicalize().unwrap().join("pdns.key");
    assert!(config.contains(&format!("api_key_file = \"{}\"", key_file.display())), "{config}");
    assert!(!dir.path().join("cfg/secrets/pdns.key").exists());
    let check = siirto(&["config", "check", "cfg/siirto.toml"], dir.path());
    assert!(check.status.success(), "{}", text(&check.stderr));

    // Planned through it (every domain ours to repoint), and the pre-flight passes.
    let plan = siirto(
        &[
            "plan",
            "--config",
            "cfg/siirto.toml",
            "--playbook",
            "cfg/playbook.toml",
            "--from",
            "old",
            "--to",
            "new",
            "--id",
            "sim-pdns",
            "--json",
        ],
        dir.path(),
    );
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["counts"]["accounts"], 2, "{plan}");
    assert_eq!(plan["counts"]["move_and_repoint"], plan["counts"]["domains"], "{plan}");
    let preflight = siirto(&["preflight", "sim-pdns", "--config", "cfg/siirto.toml", "--json"], dir.path());
    assert!(
        preflight.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&preflight.stdout),
        text(&preflight.stderr)
    );

    // A second run against the same PowerDNS resets the zones it finds instead of failing.
    drop(sim);
    let again = tokio::task::block_in_place(|| start_sim(&args("cfg2"), dir.path()));
    assert!(again.printed.contains("cfg2/siirto.toml"), "{}", again.printed);
}

/// Lines of `siirto log … --json`, parsed.
/// `siirto args` started in `dir`, its stdout read line by line on a thread of its own: the
/// child, and where its lines arrive.
fn spawn_json_lines(
    args: &[&str],
    dir: &Path,
) -> (Child, std::sync::mpsc::Receiver<std::io::Result<String>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args(args)
        .current_dir(dir)
        .env_remove("SIIRTO_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The next line from [`spawn_json_lines`], as JSON, within 20 s.
fn next_json(lines: &std::sync::mpsc::Receiver<std::io::Result<String>>) -> serde_json::Value {
    let line = lines.recv_timeout(Duration::from_secs(20)).expect("a line within 20 s").unwrap();
    serde_json::from_str(&line).unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_tells_the_demo_in_words_filters_prints_json_lines_and_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let demo = tokio::task::block_in_place(|| siirto(&["demo", "--accounts", "3", "--dir", "demo"], path));
    assert!(demo.status.success(), "{}", text(&demo.stderr));
    let log = |args: &[&str]| {
        let mut all = vec!["log", "demo", "--config", "demo/siirto.toml"];
        all.extend_from_slice(args);
        tokio::task::block_in_place(|| siirto(&all, path))
    };

    // The whole story, one line per event, in words and in order.
    let words = log(&[]);
    assert!(words.status.success(), "{}", text(&words.stderr));
    let words = text(&words.stdout);
    let lines: Vec<&str> = words.lines().collect();
    assert!(lines[0].contains("migration") && lines[0].contains("planned: 3 account(s)"), "{words}");
    let at = |needle: &str| {
        lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in:\n{words}"))
    };
    assert!(at("plan approved by demo") < at("migration started"), "{words}");
    assert!(at("TTL gate open") < at("repointed to the target"), "{words}");
    assert!(at("kukka-0001.test (kukka0001)") > 0, "{words}");
    assert!(lines.last().unwrap().contains("cut over: every account arrived (3)"), "{words}");
    assert!(!words.contains("_"), "a kind not put in words:\n{words}");

    // The same events as JSON, one object per line, in the order written.
    let entries = json_lines(&log(&["--json"]));
    assert_eq!(entries.len(), lines.len());
    assert!(entries.windows(2).all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64()));
    assert_eq!(entries[0]["kind"], "migration_planned");
    assert!(
        entries.iter().all(|e| e["at"].as_str().is_some_and(|t| t.ends_with('Z')) && e["text"].is_string())
    );

    // Filters: an account's events (its domains' included), a domain's (spelt any case).
    let account = json_lines(&log(&["--account", "kukka0001", "--json"]));
    assert!(account.iter().all(|e| e["account"] == "kukka0001"), "{account:#?}");
    for kind in ["account_verified", "domain_repointed", "notice_sent"] {
        assert!(account.iter().any(|e| e["kind"] == kind), "{kind} missing: {account:#?}");
    }
    let domain = json_lines(&log(&["--domain", "KUKKA-0001.test", "--json"]));
    assert!(!domain.is_empty() && domain.iter().all(|e| e["domain"] == "kukka-0001.test"), "{domain:#?}");
    assert!(domain.len() < account.len());

    // A migration that is not there is named, with the ones that are.
    let missing =
        tokio::task::block_in_place(|| siirto(&["log", "dem", "--config", "demo/siirto.toml"], path));
    assert_eq!(missing.status.code(), Some(1));
    let err = text(&missing.stderr);
    assert!(err.contains("there is no migration") && err.contains("demo"), "{err}");

    // --follow prints what was there, then an event written after it started.
    let (mut follow, rx) = spawn_json_lines(
        &["log", "demo", "--config", "demo/siirto.toml", "--follow", "--json", "--account", "kukka0002"],
        path,
    );
    let next_entry = || next_json(&rx);
    let before = json_lines(&log(&["--account", "kukka0002", "--json"])).len();
    for _ in 0..before {
        assert_eq!(next_entry()["account"], "kukka0002");
    }
    let config = siirto::config::Config::load(&path.join("demo/siirto.toml")).unwrap();
    let store = siirto::store::Store::connect(&config.database).await.unwrap();
    let mut txn = store.begin().await.unwrap();
    txn.append_event(&siirto::store::NewEvent {
        migration_id: "demo".into(),
        account: Some("kukka0002".into()),
        domain: None,
        kind: "account_held".into(),
        detail: serde_json::json!({ "event": { "event": "held", "reason": "disk full on the target" }, "state": "held" })
            .to_string(),
        actor: "test".into(),
        at: chrono::Utc::now().timestamp_millis(),
    })
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let appended = next_entry();
    assert_eq!(appended["kind"], "account_held", "{appended}");
    assert_eq!(appended["text"], "held for an operator: disk full on the target", "{appended}");
    let _ = follow.kill();
    let _ = follow.wait();
}

/// `siirto watch` follows a migration until nothing more will move: on the demo's store (cut
/// over, so still to settle) it shows every account arrived, every domain repointed and every
/// notice sent, and it stops when the migration settles; on a finished migration it says so in
/// one line and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_migration_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let demo = tokio::task::block_in_place(|| siirto(&["demo", "--accounts", "3", "--dir", "demo"], path));
    assert!(demo.status.success(), "{}", text(&demo.stderr));

    let (mut watch, rx) = spawn_json_lines(
        &["watch", "demo", "--config", "demo/siirto.toml", "--json", "--interval", "100ms"],
        path,
    );
    let next = || next_json(&rx);
    let first = next();
    assert_eq!(first["state"], "cut_over", "{first}");
    assert_eq!((first["accounts"].as_u64(), first["arrived"].as_u64()), (Some(3), Some(3)), "{first}");
    assert_eq!((first["transferred"].as_u64(), first["verified"].as_u64()), (Some(3), Some(3)), "{first}");
    assert!(first["domains"].as_u64().unwrap() >= 3 && first["repointed"] == first["domains"], "{first}");
    assert_eq!((first["notices"].as_u64(), first["notices_sent"].as_u64()), (Some(6), Some(6)), "{first}");
    assert_eq!(
        (first["held"].as_array().map(Vec::len), &first["finished"]),
        (Some(0), &serde_json::json!(false))
    );

    // Nothing changes: no new line. The migration settles (written here as the daemon's settle
    // step records it once the settle period is over; the demo's hosts are gone): a last
    // line, and the watch ends.
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "a line without a change");
    let config = siirto::config::Config::load(&path.join("demo/siirto.toml")).unwrap();
    let store = siirto::store::Store::connect(&config.database).await.unwrap();
    let settled = siirto::domain::MigrationState::Settled {
        at: chrono::Utc::now(),
        accounts: 3,
        domains: first["domains"].as_u64().unwrap() as u32,
    };
    let mut tx = store.begin().await.unwrap();
    let now = siirto::domain::to_millis(chrono::Utc::now());
    tx.set_migration_state("demo", "settled", &serde_json::to_string(&settled).unwrap(), now).await.unwrap();
    tx.commit().await.unwrap();
    let last = next();
    assert_eq!(
        (&last["state"], &last["finished"]),
        (&serde_json::json!("settled"), &serde_json::json!(true))
    );
    let ended = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = watch.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "the watch did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert!(ended.success());

    // In a pipe, without --json: the progress in words, one line.
    let once =
        tokio::task::block_in_place(|| siirto(&["watch", "demo", "--config", "demo/siirto.toml"], path));
    assert!(once.status.success(), "{}", text(&once.stderr));
    let words = text(&once.stdout);
    assert_eq!(words.lines().count(), 1, "{words}");
    assert!(words.starts_with("settled: accounts 3/3 arrived (3 transferred, 3 verified)"), "{words}");
    assert!(words.contains("notices 6/6 sent"), "{words}");
}
