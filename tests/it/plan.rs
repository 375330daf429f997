//! Planning through the `siirto plan` command against simulated hosts, a real pdns_server and
//! a contracts CSV: the reviewable report, its JSON, approval, and what changed since the last
//! plan of the same source.

use std::process::{Command, Output};

use siirto::names::AccountName;

use crate::support::rig::{Elsewhere, RigOptions, SimRig};

fn siirto(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_siirto"))
        .args(args)
        .current_dir(dir)
        .env("SIIRTO_CONFIG", dir.join("siirto.toml"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run siirto")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_review_approve_and_replan() {
    // Every account's zone is ours except the last one's: that customer's DNS is elsewhere.
    let mut options = RigOptions::new("first", 6);
    options.zones_elsewhere.insert(5, Elsewhere::Nowhere);
    options.extra_config = "[contracts]\nsource = \"csv\"\npath = \"contracts.csv\"\n\n\
                            [contracts.server_names]\nold = [\"old1.example.fi\"]\n\n\
                            [contracts.fields]\ncustomer_id = \"asiakasnro\"\nname = \"nimi\"\nemail = \"sähköposti\"\nserver = \"palvelin\"\nuser = \"tunnus\"\n"
        .to_owned();
    let rig = SimRig::start(options).await;
    let dir = rig.dir.path();

    // Contracts: every account but kukka0002; one contract names another server.
    let mut csv = String::from("\u{feff}asiakasnro;nimi;sähköposti;palvelin;tunnus\r\n");
    for (i, account) in rig.hosts.accounts.iter().enumerate() {
        match i {
            // One address of the first customer is invalid; the other one is used.
            0 => csv.push_str(&format!(
                "C{i};Asiakas {i};\"ei-osoite, {}\";old1.example.fi;{}\r\n",
                account.email, account.user
            )),
            1 => continue,
            2 => csv.push_str(&format!(
                "C{i};\"Äänekosken Kukka Oy\";{};cp9.example.fi;{}\r\n",
                account.email, account.user
            )),
            _ => csv.push_str(&format!(
                "C{i};Asiakas {i};{};old1.example.fi;{}\r\n",
                account.email, account.user
            )),
        }
    }
    std::fs::write(dir.join("contracts.csv"), csv).unwrap();

    let playbook = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/shared-hosting.toml");
    let plan = |id: &str, json: bool| {
        let mut args = vec![
            "plan",
            "--playbook",
            playbook,
            "--from",
            "old",
            "--to",
            "new",
            "--id",
            id,
            "--cutover",
            "2026-12-01T22:00:00Z",
        ];
        if json {
            args.push("--json");
        }
        siirto(dir, &args)
    };

    // The report a person reviews: counts, flagged items with reasons and actions, the schedule.
    let text = ok(&plan("first", false));
    assert!(text.contains("6 accounts"), "{text}");
    assert!(text.contains("kukka0002: on the server but no contract names it"), "{text}");
    assert!(text.contains("kukka0003: the contract says it is on cp9.example.fi"), "{text}");
    let last = rig.hosts.accounts.last().unwrap();
    // Its zone is nowhere we can see: flagged, moved with the account, never repointed.
    let flagged = format!("{} ({}): DNS lookup failed", last.domain, last.user);
    assert!(text.contains(&flagged) && text.contains("REFUSED → moved; not repointed"), "{text}");
    assert!(text.contains("2 domains moved; not repointed"), "{text}");
    assert!(text.contains("2026-11-30T22:00:00Z  lower the TTLs"), "{text}");
    assert!(text.contains("(manual)"), "{text}");
    assert!(text.contains("target new: no user or domain clashes"), "{text}");
    // The row with the invalid address was used: the flag says to whom notices go instead.
    let first = &rig.hosts.accounts[0];
    let flag = format!(
        "(email): expected an e-mail address like \"name@example.fi\", got \"ei-osoite\" → {} matched to customer \"C0\", but no notice can be sent to the invalid address; notices go to {} (from the contract)",
        first.user, first.email
    );
    assert!(text.contains(&flag), "{text}");
    assert!(!text.contains("that row is not used"), "{text}");

    // The JSON document of a second plan, with what changed since the first.
    rig.source_whm().remove_account(&AccountName::parse("kukka0004").unwrap(), true).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&ok(&plan("second", true))).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["counts"]["accounts"], 5);
    assert_eq!(doc["changes"]["since"], "first");
    assert_eq!(doc["changes"]["accounts_removed"], serde_json::json!(["kukka0004"]));
    let accounts = doc["accounts"].as_array().unwrap();
    let first = accounts.iter().find(|a| a["user"] == "kukka0001").unwrap();
    assert_eq!(first["action"], "move");
    assert_eq!(first["contract"]["bucket"], "matched");
    assert_eq!(first["domains"][0]["action"], "move_and_repoint");
    assert_eq!(first["domains"][0]["dns"]["ns"]["kind"], "own", "{}", first["domains"][0]);
    let outsider = accounts.iter().find(|a| a["user"] == last.user.as_str()).unwrap();
    assert_ne!(outsider["domains"][0]["action"], "move_and_repoint");
    assert_eq!(doc["reconciliation"]["account_counts"]["on_server_no_contract"], 1);
    assert_eq!(doc["target_checks"]["version"]["verdict"], "same_major");
    assert_eq!(doc["target_checks"]["user_clashes"], serde_json::json!([]));
    assert_eq!(doc["resellers"][0]["user"], "kukka0001", "{}", doc["resellers"]);

    // Only an approved plan starts, and the approval says who.
    let refused = siirto(dir, &["start", "second"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not been approved"), "{:?}", refused);
    assert!(ok(&siirto(dir, &["approve", "second", "--by", "maija"])).contains("approved by maija"));
    // The shared-hosting playbook's final mail sync needs SSH on both hosts, and this config
    // has none: pre-flight refuses the start, says why, and the migration stays approved.
    let refused = siirto(dir, &["start", "second"]);
    let report = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{report}");
    assert!(report.contains("FAIL  ssh old: host old has no [hosts.old.ssh]"), "{report}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pre-flight found 2 hard failure(s)"));
    let status: serde_json::Value =
        serde_json::from_str(&ok(&siirto(dir, &["status", "second", "--json"]))).unwrap();
    assert_eq!(status["state"], "approved");
    // Before anything runs, status shows the dates ahead and every domain that will not be
    // repointed, with why.
    let items = status["schedule"].as_array().unwrap();
    assert!(items.iter().any(|i| i["what"].as_str().unwrap().starts_with("lower the TTLs")), "{items:?}");
    assert!(items.iter().any(|i| i["what"].as_str().unwrap().starts_with("decommission: ")), "{items:?}");
    let text = ok(&siirto(dir, &["status", "second"]));
    assert!(text.contains("\n    2026-11-30T22:00:00Z  lower the TTLs"), "{text}");
    assert!(text.contains("2026-12-01T22:00:00Z  cutover begins"), "{text}");
    assert!(text.contains("not repointed (2): moved with the account"), "{text}");
    assert!(text.contains(&format!("{} ({}): DNS lookup failed", last.domain, last.user)), "{text}");

    // Without --id, a migration is named after its cutover's date (not the day it was planned),
    // and a mistyped id is answered with the ids there are, the closest first.
    let text = ok(&siirto(
        dir,
        &[
            "plan",
            "--playbook",
            playbook,
            "--from",
            "old",
            "--to",
            "new",
            "--cutover",
            "2027-01-15T21:00:00Z",
        ],
    ));
    assert!(text.contains("old-to-new-20270115"), "{text}");
    let missing = siirto(dir, &["status", "old-to-new-20270116"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("there is no migration old-to-new-20270116; the migrations are (closest first): old-to-new-20270115, "),
        "{stderr}"
    );
    let missing = siirto(dir, &["approve", "secnd"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("(closest first): second, "), "{missing:?}");

    // A contract file that lost a column: planning finishes and says why.
    std::fs::write(
        dir.join("contracts.csv"),
        "asiakasnro;nimi;palvelin;tunnus\nC1;X;old1.example.fi;kukka0001\n",
    )
    .unwrap();
    let text = ok(&plan("third", false));
    assert!(text.contains("contracts: the contract source could not be read"), "{text}");
    assert!(text.contains("sähköposti"), "the missing column is named: {text}");

    // A contract file with a quote that never closes would lose the rows after it: planning
    // refuses it, names the file, line and column, and makes no migration.
    std::fs::write(
        dir.join("contracts.csv"),
        "asiakasnro;nimi;sähköposti;palvelin;tunnus\n\
         C1;X;x@example.fi;old1.example.fi;kukka0001\n\
         C3;\"Kukka Oy;k@example.fi;old1.example.fi;kukka0003\n\
         C4;Y;y@example.fi;old1.example.fi;kukka0004\n",
    )
    .unwrap();
    let refused = plan("fourth", false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused:?}");
    let expected =
        format!("{}:3:4: \"nimi\": expected a closing quote (\")", dir.join("contracts.csv").display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("fields like the header"), "{stderr}");
    let missing = siirto(dir, &["status", "fourth"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no migration fourth"), "{missing:?}");
}

/// A domain whose mail passes a spam filter needs a change siirto cannot make: the plan puts
/// it on the migration's timeline as an operator task, and status lists it from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spam_filtered_domain_is_an_operator_task_on_the_timeline_and_in_status() {
    let rig = SimRig::start(RigOptions::new("tasks", 2)).await;
    let dir = rig.dir.path();
    let config = std::fs::read_to_string(dir.join("siirto.toml")).unwrap();
    assert!(config.contains("[dns]\n"), "{config}");
    let config = config.replacen("[dns]\n", "[dns]\nspam_filters = [\"filter.example.net\"]\n", 1);
    std::fs::write(dir.join("siirto.toml"), config).unwrap();
    let filtered = rig.domain(0);
    let mx = siirto::dns::RrsetChange::Replace(siirto::dns::Rrset {
        name: filtered.fqdn(),
        rtype: "MX".into(),
        ttl: 3600,
        records: vec!["10 mx1.filter.example.net.".into()],
    });
    siirto::dns::DnsProvider::apply(&rig.dns, &filtered, &[mx]).await.unwrap();

    let playbook = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/shared-hosting.toml");
    let args = ["plan", "--playbook", playbook, "--from", "old", "--to", "new", "--id", "tasks"];
    let report = ok(&siirto(dir, &[&args[..], &["--cutover", "2026-12-01T22:00:00Z"]].concat()));
    assert!(report.contains("spam filter"), "{report}");

    let user = rig.user(0);
    let text = ok(&siirto(dir, &["status", "tasks"]));
    assert!(text.contains("operator tasks (1, listed until acknowledged)"), "{text}");
    let said = format!(
        "{filtered} ({user}): mail for {filtered} passes the spam filter (mx1.filter.example.net): when {user} moves, change the filter's delivery route"
    );
    assert!(text.contains(&said), "{said:?} not in:\n{text}");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&siirto(dir, &["status", "tasks", "--json"]))).unwrap();
    let tasks = status["operator_tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["domain"], filtered.as_str());
    let number = tasks[0]["id"].as_i64().unwrap();
    assert!(
        text.contains(&format!("#{number} {filtered}")) && text.contains(&format!("siirto ack {number}")),
        "{text}"
    );
    // On the timeline, in words.
    let log = ok(&siirto(dir, &["log", "tasks", "--domain", filtered.as_str()]));
    assert!(log.contains(&format!("operator task {number}: mail for")), "{log}");
    // Acknowledged by name, it is no longer listed, and the timeline says who did it.
    let done = ok(&siirto(dir, &["ack", &number.to_string(), "--by", "maija", "--note", "route changed"]));
    assert!(
        done.contains(&format!("operator task {number} of migration tasks acknowledged by maija")),
        "{done}"
    );
    let text = ok(&siirto(dir, &["status", "tasks"]));
    assert!(!text.contains("operator tasks ("), "{text}");
    let log = ok(&siirto(dir, &["log", "tasks", "--domain", filtered.as_str()]));
    assert!(
        log.contains(&format!("operator task {number} done: mail for")) && log.contains("(route changed)"),
        "{log}"
    );
    let log = ok(&siirto(dir, &["log", "tasks", "--json"]));
    assert!(
        log.lines().any(|l| l.contains("operator_task_acknowledged") && l.contains("\"actor\":\"maija\"")),
        "{log}"
    );
}

/// Without `dns.resolvers` there is no way to see delegations as the world does: the plan is
/// refused, naming the field, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_without_resolvers_is_refused_naming_the_field() {
    let rig = SimRig::start(RigOptions::new("no-resolvers", 1)).await;
    let dir = rig.dir.path();
    let config = std::fs::read_to_string(dir.join("siirto.toml")).unwrap();
    let without: String =
        config.lines().filter(|l| !l.starts_with("resolvers = ")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, config, "the rig's config names resolvers");
    std::fs::write(dir.join("siirto.toml"), without).unwrap();
    let playbook = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/shared-hosting.toml");
    let out = siirto(dir, &["plan", "--playbook", playbook, "--from", "old", "--to", "new", "--id", "nr"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dns.resolvers is not set") && err.contains("recursive resolvers"), "{err}");
    let status = siirto(dir, &["status", "nr"]);
    assert!(!status.status.success(), "nothing was recorded");
}
