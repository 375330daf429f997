//! The `siirto` binary as a sysadmin runs it: exit codes, messages and the demo.

use std::process::{Command, Output};

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
    // The notices are real files a person can open.
    let outbox = dir.path().join("demo/outbox");
    let notices: Vec<_> = std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(notices.len(), 12);
    let one = std::fs::read_to_string(&notices[0]).unwrap();
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
        assert!(shown.contains("--- completion notice, rendered with sample values ---"), "{shown}");
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
        assert!(shown.contains("--- reminder notice, rendered with sample values ---"), "{shown}");
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
