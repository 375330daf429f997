//! The simulated host's pre-flight and account-level functions: `remote_basic_credential_check`
//! (can this host, as a transfer target, log in to a source?), `setsiteip` (move an account
//! to another of the host's addresses), `list_pops_for` (an account's mailboxes, read from
//! its real Maildirs), and `parse_dns_zone` (a zone as cPanel keeps it, base64 as documented).

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::json;

use super::api::{Params, Reply, account_ip, domain_param, user_param};
use super::{Host, accounts};
use crate::names::DomainName;

/// Logs in to the source named by `host`/`user`/`password`/`sshkey_name` the way a target does
/// before a transfer. The sim's root credentials: the source's API token stands in for its
/// root password; every key installed under "Manage root's SSH Keys" is trusted, unless the
/// source refuses root logins (`SimHost::refuse_root_login`).
pub(crate) fn root_login(target: &Host, params: &Params) -> Result<Arc<Host>, Reply> {
    let Some(remote) = params.get("host").filter(|v| !v.is_empty()) else {
        return Err(Reply::fail("No “host” parameter was specified."));
    };
    let remote_valid =
        remote.len() <= 253 && remote.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !remote_valid {
        return Err(Reply::fail(format!("“{remote}” is not a valid hostname or IP address.")));
    }
    let user = params.get("user").map(String::as_str).unwrap_or("");
    let port = params.get("port").map(String::as_str).unwrap_or("22");
    let Some(source) = target.world.lookup(remote) else {
        return Err(Reply::fail(format!(
            "The system failed to connect to “{remote}” on port {port}: No route to host"
        )));
    };
    let password_ok = params.get("password").map(String::as_str) == Some(source.token.as_str());
    let key_ok = params.get("sshkey_name").is_some_and(|k| !k.is_empty());
    let refused = source.state().refuse_root_login;
    if user != "root" || !(password_ok || key_ok) || refused {
        return Err(Reply::fail(format!(
            "Login to “{remote}” as “{user}” failed: Permission denied (publickey,password)."
        )));
    }
    Ok(source)
}

/// `remote_basic_credential_check`: `data{output, response}` on success, `metadata.result` 0
/// with the SSH error otherwise.
pub(crate) fn remote_basic_credential_check(host: &Host, params: &Params) -> Reply {
    match root_login(host, params) {
        Ok(source) => Reply::ok(json!({
            "output": format!(
                "Connecting to “{}” ({}) on port {} as “root”…\nAuthenticated.\n",
                source.hostname,
                source.ip,
                params.get("port").map(String::as_str).unwrap_or("22")
            ),
            "response": format!("cPanel & WHM {} on {}", source.version, source.hostname),
        })),
        Err(reply) => reply,
    }
}

/// `setsiteip` with `user` (the `domain` form is not simulated): the address must be the
/// host's shared IP or one of its dedicated IPs that no other account uses.
pub(crate) fn setsiteip(host: &Host, params: &Params) -> Reply {
    let Some(raw_ip) = params.get("ip").filter(|v| !v.is_empty()) else {
        return Reply::fail("No “ip” parameter was specified.");
    };
    let Ok(ip) = raw_ip.parse::<Ipv4Addr>() else {
        return Reply::fail(format!("“{raw_ip}” is not a valid IPv4 address."));
    };
    if !params.contains_key("user") {
        return Reply::fail("You must specify either the “user” or the “domain” parameter.");
    }
    let user = match user_param(params, "user") {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    if ip != host.ip && !host.dedicated_ips.contains(&ip) {
        return Reply::fail(format!("The IP address “{ip}” is not configured on this server."));
    }
    let mut state = host.state();
    if ip != host.ip {
        let taken = state.accounts.values().find(|r| r.spec.user != user && r.spec.dedicated_ip == Some(ip));
        if let Some(other) = taken {
            return Reply::fail(format!(
                "The IP address “{ip}” is already dedicated to “{}”.",
                other.spec.user
            ));
        }
    }
    let Some(record) = state.accounts.get_mut(&user) else {
        return Reply::fail(format!("The user “{user}” does not exist."));
    };
    record.spec.dedicated_ip = if ip == host.ip { None } else { Some(ip) };
    Reply::ok_metadata_only("OK")
}

/// `list_pops_for`: `data.pops[]`, every `local@domain` whose Maildir
/// (`~/mail/<domain>/<local>/cur`) exists in the account's home, for its domains.
pub(crate) fn list_pops_for(host: &Host, params: &Params) -> Reply {
    let user = match user_param(params, "user") {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    let spec = match host.state().accounts.get(&user) {
        Some(record) => record.spec.clone(),
        None => return Reply::fail(format!("The user “{user}” does not exist.")),
    };
    let mail = accounts::home_dir(&host.data_dir, &user).join("mail");
    let mut pops = Vec::new();
    let domains: Vec<&DomainName> = spec.all_domains().collect();
    for domain in domains {
        let Ok(entries) = std::fs::read_dir(mail.join(domain.as_str())) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // The domain's own cur/new/tmp are not mailboxes.
            if matches!(name.as_str(), "cur" | "new" | "tmp") || name.starts_with('.') {
                continue;
            }
            if entry.path().join("cur").is_dir() {
                pops.push(format!("{name}@{domain}"));
            }
        }
    }
    pops.sort();
    Reply::ok(json!({ "pops": pops }))
}

/// `parse_dns_zone` (`zone`): the zone as the host keeps it ([`super::zones::cpanel_zone`]),
/// `data.payload[]` in the documented shape: a comment and the `$TTL` line, then each record
/// with its name and data base64-encoded.
pub(crate) fn parse_dns_zone(host: &Host, params: &Params) -> Reply {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let zone = match domain_param(params, "zone") {
        Ok(zone) => zone,
        Err(reply) => return reply,
    };
    let state = host.state();
    let Some(lines) = state
        .accounts
        .values()
        .find_map(|record| super::zones::cpanel_zone(&record.spec, &zone, account_ip(host, record)))
    else {
        return Reply::fail(format!("The zone “{zone}” does not exist."));
    };
    let mut payload = vec![
        json!({"type": "comment", "line_index": 0, "text_b64": STANDARD.encode("; cPanel first:11.110.0.17")}),
        json!({"type": "control", "line_index": 1, "text_b64": STANDARD.encode("$TTL 14400")}),
    ];
    for (n, line) in lines.iter().enumerate() {
        payload.push(json!({
            "type": "record",
            "line_index": n + 2,
            "dname_b64": STANDARD.encode(&line.owner),
            "record_type": line.rtype,
            "ttl": line.ttl,
            "data_b64": line.data.iter().map(|d| STANDARD.encode(d)).collect::<Vec<_>>(),
        }));
    }
    Reply::ok(json!({ "payload": payload }))
}
