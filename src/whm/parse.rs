//! Pure parsing of WHM API 1 and cPanel API 2 answers into the client's types: envelopes,
//! listings (a row that does not parse is rejected with the reason, the rest go on), sizes.

use super::*;

// ---------------------------------------------------------------------------------------------
// Pure parsing

/// Checks the HTTP status and the WHM API 1 envelope of one answer and returns the whole JSON
/// document. `metadata.result` may be `1`/`"1"` (success) or `0`/`"0"` (failure, reason in
/// `metadata.reason`).
pub fn parse_envelope(function: &str, status: u16, body: &[u8]) -> Result<Value, WhmError> {
    if status == 401 || status == 403 {
        return Err(auth(function, status));
    }
    if !(200..300).contains(&status) {
        return Err(http(function, status));
    }
    let json: Value = serde_json::from_slice(body).map_err(|_| not_json(function, body))?;
    let Some(metadata) = json.get("metadata").filter(|m| m.is_object()) else {
        let detail = if json.get("status").is_some() || json.get("statusmsg").is_some() {
            "a WHM API 0 envelope (status/statusmsg) instead of API 1 metadata"
        } else {
            "no metadata object"
        };
        return Err(shape(function, detail));
    };
    let reason = metadata.get("reason").and_then(Value::as_str).unwrap_or("").to_owned();
    match metadata.get("result").and_then(as_flag) {
        Some(true) => Ok(json),
        Some(false) => Err(WhmError::Failed {
            function: function.to_owned(),
            reason: if reason.is_empty() { "no reason given".to_owned() } else { reason },
        }),
        None => Err(shape(
            function,
            format!("metadata.result is {}", metadata.get("result").unwrap_or(&Value::Null)),
        )),
    }
}

/// Checks the HTTP status and the cPanel API 2 envelope of a call made through WHM's
/// `/json-api/cpanel` and returns `cpanelresult.data` as a list (an object is one item).
///
/// The envelope is `{"cpanelresult": {"apiversion", "func", "module", "event": {"result"},
/// "data", "error"?}}` (<https://api.docs.cpanel.net/cpanel-api-2/cpanel-api-2-returdata/>).
/// A failure is `event.result = 0` or an `error` string; WHM itself refuses an unknown
/// `cpanel_jsonapi_user` with only `error` and `data.result = "0"`. A WHM API 1 `metadata`
/// envelope with `result = 0` (WHM refused the call before cPanel saw it) is a failure too.
pub fn parse_cpanel_api2(function: &str, status: u16, body: &[u8]) -> Result<Vec<Value>, WhmError> {
    if status == 401 || status == 403 {
        return Err(auth(function, status));
    }
    if !(200..300).contains(&status) {
        return Err(http(function, status));
    }
    let json: Value = serde_json::from_slice(body).map_err(|_| not_json(function, body))?;
    let failed = |reason: &str| WhmError::Failed {
        function: function.to_owned(),
        reason: if reason.trim().is_empty() {
            "no reason given".to_owned()
        } else {
            reason.trim().to_owned()
        },
    };
    let Some(result) = json.get("cpanelresult").filter(|r| r.is_object()) else {
        if let Some(metadata) = json.get("metadata")
            && metadata.get("result").and_then(as_flag) == Some(false)
        {
            return Err(failed(metadata.get("reason").and_then(Value::as_str).unwrap_or("")));
        }
        return Err(shape(function, "no cpanelresult object (not a cPanel API 2 answer)"));
    };
    let error = result.get("error").and_then(Value::as_str).unwrap_or("");
    let event = result.pointer("/event/result").and_then(as_flag);
    let data_result = result.pointer("/data/result").and_then(as_flag);
    if !error.is_empty() || event == Some(false) || data_result == Some(false) {
        let reason = [
            error,
            result.pointer("/event/reason").and_then(Value::as_str).unwrap_or(""),
            result.pointer("/data/reason").and_then(Value::as_str).unwrap_or(""),
        ]
        .into_iter()
        .find(|r| !r.trim().is_empty())
        .unwrap_or("");
        return Err(failed(reason));
    }
    Ok(match result.get("data") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other.clone()],
    })
}

/// The data of `Email::setmxcheck`: one item whose `status` must not be 0 (the reason is in
/// `statusmsg`).
pub fn parse_setmxcheck(data: &[Value]) -> Result<(), WhmError> {
    let function = "cpanel Email::setmxcheck";
    let Some(item) = data.first() else {
        return Ok(());
    };
    if item.get("status").and_then(as_flag) == Some(false) {
        let reason = item.get("statusmsg").and_then(Value::as_str).unwrap_or("no reason given");
        return Err(WhmError::Failed { function: function.to_owned(), reason: reason.to_owned() });
    }
    Ok(())
}

/// The data of `Email::getmxcheck`: `data[0].mxcheck`, the configured mail exchanger type.
pub fn parse_getmxcheck(data: &[Value]) -> Result<MailRouting, WhmError> {
    let function = "cpanel Email::getmxcheck";
    let raw = data
        .first()
        .and_then(|item| item.get("mxcheck"))
        .and_then(Value::as_str)
        .ok_or_else(|| shape(function, "no data[0].mxcheck string"))?;
    MailRouting::parse(raw).ok_or_else(|| shape(function, format!("unknown mxcheck value {raw:?}")))
}

/// `data.version` of `version`.
pub fn parse_version(json: &Value) -> Result<String, WhmError> {
    json.pointer("/data/version")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| shape("version", "no data.version string"))
}

/// `data.acct[]` of `listaccts` (or `accountsummary`).
pub fn parse_listaccts(json: &Value) -> Result<Listing<WhmAccount>, WhmError> {
    let items = data_array(json, "listaccts", "acct")?;
    Ok(listing(items, parse_account))
}

/// `data.domains[]` of `get_domain_info`.
pub fn parse_domain_info(json: &Value) -> Result<Listing<WhmDomain>, WhmError> {
    let items = data_array(json, "get_domain_info", "domains")?;
    Ok(listing(items, parse_domain))
}

/// `data.acct[]` of `listaccts` with notes on odd fields (see [`account_notes`]).
pub fn parse_listaccts_with_notes(json: &Value) -> Result<Listing<AccountWithNotes>, WhmError> {
    let items = data_array(json, "listaccts", "acct")?;
    Ok(listing(items, |item| {
        // The raw text of a refused entry is shortened, often before its `user` key: name it.
        let account = parse_account(item).map_err(|reason| match str_field(item, "user") {
            Some(user) => format!("user {:?}: {reason}", user.chars().take(64).collect::<String>()),
            None => reason,
        })?;
        let email_raw = str_field(item, "email")
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty() && e != "*unknown*");
        Ok(AccountWithNotes { account, email_raw, notes: account_notes(item) })
    }))
}

/// Fields of a `listaccts` entry that the specification types as integers but that came as
/// strings (the docs' own samples do this for some fields), and `diskused` given as a bare
/// number instead of `"14M"`. One note per field; the value is still used.
pub fn account_notes(item: &Value) -> Vec<String> {
    const INTEGER_FIELDS: &[&str] = &[
        "suspended",
        "uid",
        "unix_startdate",
        "inodesused",
        "is_locked",
        "backup",
        "legacy_backup",
        "temporary",
    ];
    let mut notes = Vec::new();
    for key in INTEGER_FIELDS {
        if let Some(Value::String(text)) = item.get(*key) {
            if text.trim().parse::<f64>().is_ok() {
                notes.push(format!("{key} is a number sent as a string ({text:?})"));
            } else {
                notes.push(format!("{key} is {text:?}, not a number"));
            }
        }
    }
    if let Some(Value::Number(n)) = item.get("diskused") {
        notes.push(format!("diskused is the bare number {n}, not a size like \"{n}M\""));
    }
    notes
}

/// `data.partition[]` of `getdiskusage` (operation page "Return server's drive partition
/// information"). Sizes are KiB; numbers sent as strings are accepted.
pub fn parse_getdiskusage(json: &Value) -> Result<Vec<WhmPartition>, WhmError> {
    let items = data_array(json, "getdiskusage", "partition")?;
    items
        .iter()
        .map(|item| {
            let kib = |key: &str| {
                item.get(key).and_then(as_i64).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| {
                    shape("getdiskusage", format!("partition without a numeric {key}: {}", raw(item)))
                })
            };
            Ok(WhmPartition {
                device: str_field(item, "device").unwrap_or_default(),
                mount: str_field(item, "mount").filter(|m| !m.is_empty()).ok_or_else(|| {
                    shape("getdiskusage", format!("partition without a mount: {}", raw(item)))
                })?,
                total_kib: kib("total")?,
                used_kib: kib("used")?,
                available_kib: kib("available")?,
            })
        })
        .collect()
}

/// `data.reseller[]` of `listresellers`. A reseller name that is not a valid account name is
/// left out with a warning (the reseller then just does not get reseller privileges).
pub fn parse_listresellers(json: &Value) -> Result<Vec<AccountName>, WhmError> {
    let items = data_array(json, "listresellers", "reseller")?;
    let mut resellers = Vec::new();
    for item in items {
        match item.as_str().map(AccountName::parse) {
            Some(Ok(name)) => resellers.push(name),
            Some(Err(err)) => tracing::warn!(error = %err, "reseller name refused"),
            None => tracing::warn!(raw = %raw(item), "reseller entry is not a string"),
        }
    }
    Ok(resellers)
}

/// `data.pkg[]` of `listpkgs`.
pub fn parse_listpkgs(json: &Value) -> Result<Vec<WhmPackage>, WhmError> {
    let items = data_array(json, "listpkgs", "pkg")?;
    items
        .iter()
        .map(|item| {
            let name = str_field(item, "name")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| shape("listpkgs", format!("package without a name: {}", raw(item))))?;
            let limit = |key: &str| match item.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    parse_limit_mb(v).map_err(|e| shape("listpkgs", format!("package {name:?}: {key}: {e}")))
                }
            };
            Ok(WhmPackage {
                quota_mb: limit("QUOTA")?,
                bandwidth_mb: limit("BWLIMIT")?,
                feature_list: str_field(item, "FEATURELIST").filter(|f| !f.is_empty()),
                dedicated_ip: str_field(item, "IP").is_some_and(|ip| ip.eq_ignore_ascii_case("y")),
                name,
            })
        })
        .collect()
}

/// `data.ip[]` of `listips`. Entries that are not IPv4 addresses are left out.
pub fn parse_listips(json: &Value) -> Result<Vec<WhmIp>, WhmError> {
    let items = data_array(json, "listips", "ip")?;
    let mut ips = Vec::new();
    for item in items {
        let Some(ip) = str_field(item, "ip").and_then(|s| s.trim().parse::<Ipv4Addr>().ok()) else {
            tracing::debug!(raw = %raw(item), "listips entry without an IPv4 address skipped");
            continue;
        };
        let flag = |key: &str| item.get(key).and_then(as_flag).unwrap_or(false);
        ips.push(WhmIp { ip, dedicated: flag("dedicated"), mainaddr: flag("mainaddr"), used: flag("used") });
    }
    Ok(ips)
}

/// `data.transfer_session_id` of `create_remote_root_transfer_session`.
pub fn parse_create_session(json: &Value) -> Result<TransferSessionId, WhmError> {
    let id = json
        .pointer("/data/transfer_session_id")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("create_remote_root_transfer_session", "no data.transfer_session_id"))?;
    TransferSessionId::parse(id)
}

/// What `remote_basic_credential_check` answered: `data.output` (the check's log) and
/// `data.response` (what the remote server said), both as text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CredentialCheck {
    /// `data.output`.
    pub output: String,
    /// `data.response`.
    pub response: String,
}

/// `data{output, response}` of `remote_basic_credential_check`
/// (<https://api.docs.cpanel.net/openapi/whm/operation/remote_basic_credential_check>).
pub fn parse_credential_check(json: &Value) -> Result<CredentialCheck, WhmError> {
    let data = json
        .get("data")
        .filter(|d| d.is_object())
        .ok_or_else(|| shape("remote_basic_credential_check", "no data object"))?;
    let text = |key: &str| data.get(key).and_then(scalar_text).unwrap_or_default();
    Ok(CredentialCheck { output: text("output"), response: text("response") })
}

/// `data.pops[]` of `list_pops_for`: the account's email addresses, validated
/// (<https://api.docs.cpanel.net/openapi/whm/operation/list_pops_for>). An address whose
/// domain is not a valid domain name is refused with the account named.
pub fn parse_list_pops(user: &AccountName, json: &Value) -> Result<Vec<String>, WhmError> {
    let pops = json
        .pointer("/data/pops")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("list_pops_for", format!("account {user}: no data.pops array")))?;
    let mut addresses = Vec::new();
    for pop in pops {
        let Some(address) = pop.as_str() else {
            return Err(shape(
                "list_pops_for",
                format!("account {user}: a pop is not a string: {}", raw(pop)),
            ));
        };
        let valid = address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-=".contains(&b))
                && DomainName::parse(domain).is_ok()
        });
        if !valid {
            return Err(shape(
                "list_pops_for",
                format!(
                    "account {user}: {:?} is not an email address",
                    address.chars().take(80).collect::<String>()
                ),
            ));
        }
        addresses.push(address.to_ascii_lowercase());
    }
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// `data.state_name` of `get_transfer_session_state`.
pub fn parse_session_state(json: &Value) -> Result<SessionState, WhmError> {
    let name = json
        .pointer("/data/state_name")
        .and_then(Value::as_str)
        .ok_or_else(|| shape("get_transfer_session_state", "no data.state_name"))?;
    SessionState::parse(name)
        .ok_or_else(|| shape("get_transfer_session_state", format!("unknown state {name:?}")))
}

/// `data.log` of `fetch_transfer_session_log`: line-delimited JSON. Lines that are not JSON
/// objects (a line being written while we read) are skipped.
pub fn parse_transfer_log(json: &Value) -> Result<Vec<LogLine>, WhmError> {
    let log = match json.pointer("/data/log") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Null) | None => "",
        Some(other) => {
            return Err(shape(
                "fetch_transfer_session_log",
                format!("data.log is not a string: {}", raw(other)),
            ));
        }
    };
    Ok(log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => Some(parse_log_line(&v)),
            _ => {
                tracing::debug!("master.log line is not a JSON object; skipped");
                None
            }
        })
        .collect())
}

/// Parses one master.log JSON object.
pub fn parse_log_line(v: &Value) -> LogLine {
    let contents = v.get("contents").cloned().unwrap_or(Value::Null);
    let text = |key: &str| contents.get(key).and_then(scalar_text);
    let msg_value = contents.get("msg").cloned().unwrap_or(Value::Null);
    let msg = match &msg_value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("message").and_then(scalar_text).unwrap_or_else(|| msg_value.to_string()),
        other => scalar_text(other).unwrap_or_else(|| other.to_string()),
    };
    LogLine {
        line_type: v.get("type").and_then(scalar_text).unwrap_or_default(),
        action: text("action").unwrap_or_default(),
        queue: text("queue"),
        item: text("item"),
        item_name: text("item_name"),
        item_type: text("item_type"),
        failure: msg_value.get("failure").and_then(scalar_text),
        msg,
        time: contents.get("time").and_then(as_i64),
        pid: v.get("pid").and_then(as_i64).and_then(|p| u64::try_from(p).ok()),
    }
}

/// Parses a size such as `diskused`: `"14M"`, `"0M"`, `"none"`, `""`, a number (MB),
/// `"512K"`, `"1.5G"`. Fractions round up to whole MB.
pub fn parse_size_mb(value: &Value) -> Result<u64, String> {
    match value {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0 && f.is_finite())
            .map(|f| f.ceil() as u64)
            .ok_or_else(|| format!("size {n} is not a non-negative number")),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() || t.eq_ignore_ascii_case("none") {
                return Ok(0);
            }
            let (digits, factor) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
                Some('K') => (&t[..t.len() - 1], 1.0 / 1024.0),
                Some('M') => (&t[..t.len() - 1], 1.0),
                Some('G') => (&t[..t.len() - 1], 1024.0),
                Some('T') => (&t[..t.len() - 1], 1024.0 * 1024.0),
                _ => (t, 1.0),
            };
            digits
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| *f >= 0.0 && f.is_finite())
                .map(|f| (f * factor).ceil() as u64)
                .ok_or_else(|| format!("size {s:?} is not understood"))
        }
        other => Err(format!("size {} is not understood", raw(other))),
    }
}

/// Parses a limit: `"unlimited"` (and `"*unknown*"`, empty, null) → `None`; a number or
/// `"500M"`-style size → `Some(MB)`.
pub fn parse_limit_mb(value: &Value) -> Result<Option<u64>, String> {
    if let Value::String(s) = value {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("unlimited") || t == "*unknown*" {
            return Ok(None);
        }
    }
    if value.is_null() {
        return Ok(None);
    }
    parse_size_mb(value).map(Some)
}

pub(super) fn parse_account(item: &Value) -> Result<WhmAccount, String> {
    let user = str_field(item, "user").ok_or("no user field")?;
    let user = AccountName::parse(&user).map_err(|e| e.to_string())?;
    let domain = str_field(item, "domain").ok_or("no domain field")?;
    let domain = DomainName::parse(&domain).map_err(|e| e.to_string())?;
    let ip = match str_field(item, "ip").map(|s| s.trim().to_owned()) {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| format!("ip {s:?} is not an IPv4 address"))?),
    };
    let disk_used_mb =
        parse_size_mb(item.get("diskused").unwrap_or(&Value::Null)).map_err(|e| format!("diskused: {e}"))?;
    let suspended = match item.get("suspended") {
        None | Some(Value::Null) => false,
        Some(v) => as_flag(v).ok_or_else(|| format!("suspended {} is not 0 or 1", raw(v)))?,
    };
    let email = str_field(item, "email")
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty() && e != "*unknown*" && e.contains('@'));
    Ok(WhmAccount {
        user,
        domain,
        email,
        plan: str_field(item, "plan").unwrap_or_default(),
        owner: str_field(item, "owner").unwrap_or_else(|| "root".to_owned()),
        ip,
        disk_used_mb,
        suspended,
        partition: str_field(item, "partition").unwrap_or_default(),
    })
}

pub(super) fn parse_domain(item: &Value) -> Result<WhmDomain, String> {
    let domain = str_field(item, "domain").ok_or("no domain field")?;
    let domain = DomainName::parse(&domain).map_err(|e| e.to_string())?;
    let user = str_field(item, "user").ok_or("no user field")?;
    let user = AccountName::parse(&user).map_err(|e| e.to_string())?;
    let ipv4 = match str_field(item, "ipv4").map(|s| s.trim().to_owned()) {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s.parse::<Ipv4Addr>().map_err(|_| format!("ipv4 {s:?} is not an IPv4 address"))?),
    };
    let parent_domain = match str_field(item, "parent_domain").map(|s| s.trim().to_owned()) {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(DomainName::parse(&s).map_err(|e| format!("parent_domain: {e}"))?),
    };
    Ok(WhmDomain {
        domain,
        user,
        domain_type: str_field(item, "domain_type").unwrap_or_default(),
        docroot: str_field(item, "docroot").unwrap_or_default(),
        ipv4,
        parent_domain,
    })
}

pub(super) fn data_array<'a>(json: &'a Value, function: &str, key: &str) -> Result<&'a [Value], WhmError> {
    json.get("data")
        .and_then(|d| d.get(key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| shape(function, format!("no data.{key} array")))
}

pub(super) fn listing<T>(items: &[Value], parse: impl Fn(&Value) -> Result<T, String>) -> Listing<T> {
    let mut out = Listing::default();
    for item in items {
        match parse(item) {
            Ok(parsed) => out.items.push(parsed),
            Err(reason) => out.rejected.push(Rejected { raw: raw(item), reason }),
        }
    }
    out
}

/// A string field; numbers are printed (cPanel is loose about types).
pub(super) fn str_field(item: &Value, key: &str) -> Option<String> {
    item.get(key).and_then(scalar_text)
}

pub(super) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A WHM boolean: `1`/`0`, `"1"`/`"0"`, `true`/`false`.
pub(super) fn as_flag(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(super) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn raw(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 500 {
        let mut short: String = text.chars().take(500).collect();
        short.push('…');
        short
    } else {
        text
    }
}

pub(super) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().take(160).collect()
}
