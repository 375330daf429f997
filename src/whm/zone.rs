//! A zone as the source server's cPanel holds it: WHM API 1 `parse_dns_zone`
//! (<https://api.docs.cpanel.net/openapi/whm/operation/parse_dns_zone>), `data.payload[]`,
//! each entry `{"type": "record", "line_index", "dname_b64", "record_type", "ttl",
//! "data_b64": [...]}` (comments and `$TTL` lines are other `type`s). Names and values are
//! base64; the docs warn that the decoded octets need not be in any character encoding.
//!
//! siirto reads it for a domain on someone else's DNS: the names the account's own zone lists
//! (`shop`, `portal`, besides cPanel's `www`, `ftp`, `webmail`, …) are the names whose public
//! records may still point at the old server, so each is looked up through the resolvers.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::*;

/// One resource record of a zone (`type` `record` of `parse_dns_zone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneRecord {
    /// Its line in the zone file (0-based), as `mass_edit_dns_zone` addresses it.
    pub line_index: u64,
    /// Its owner, validated, absolute (`www.example.fi`).
    pub name: DomainName,
    /// `A`, `MX`, `TXT`, … in upper case.
    pub rtype: String,
    /// Its TTL, when the entry had one.
    pub ttl: Option<u32>,
    /// Its data fields (`["10", "mail.example.fi."]` for an MX), decoded; octets that are not
    /// UTF-8 are replaced, as they are only shown and compared.
    pub data: Vec<String>,
}

/// A zone read with `parse_dns_zone`: its records, and the entries left out with why (a name
/// that is not a host name, such as `_dmarc` or `*`, or one outside the zone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceZone {
    /// The records whose owner is a valid host name inside the zone.
    pub records: Vec<ZoneRecord>,
    /// Entries not used, each with the reason.
    pub skipped: Vec<String>,
}

impl SourceZone {
    /// The host names under `domain` (itself excluded) that have address or alias records
    /// (A, AAAA, CNAME) in the zone, as labels relative to `domain` (`www`, `shop.blog`),
    /// sorted: the names a customer's site or services may be reached at.
    pub fn host_labels_under(&self, domain: &DomainName) -> BTreeSet<String> {
        let suffix = format!(".{}", domain.as_str());
        self.records
            .iter()
            .filter(|r| matches!(r.rtype.as_str(), "A" | "AAAA" | "CNAME"))
            .filter_map(|r| r.name.as_str().strip_suffix(&suffix).map(str::to_owned))
            .collect()
    }
}

/// `data.payload[]` of `parse_dns_zone` for `zone`. Owners are made absolute (`@` is the
/// zone, a name without a trailing dot is relative to it) and validated; an entry whose owner
/// is not a host name inside the zone is put in [`SourceZone::skipped`] and the rest go on. An
/// entry that is a record but lacks its fields, or whose base64 does not decode, is refused:
/// the answer is not what the documentation describes.
pub fn parse_dns_zone(zone: &DomainName, json: &Value) -> Result<SourceZone, WhmError> {
    const FUNCTION: &str = "parse_dns_zone";
    let items = data_array(json, FUNCTION, "payload")?;
    let mut out = SourceZone::default();
    for item in items {
        if item.get("type").and_then(Value::as_str) != Some("record") {
            continue;
        }
        let bad = |what: &str| shape(FUNCTION, format!("zone {zone}: {what}: {}", raw(item)));
        let line_index = item.get("line_index").and_then(as_u64).ok_or_else(|| bad("no line_index"))?;
        let rtype = str_field(item, "record_type")
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| bad("no record_type"))?
            .to_ascii_uppercase();
        let owner = item.get("dname_b64").and_then(Value::as_str).ok_or_else(|| bad("no dname_b64"))?;
        let owner = decode(owner).ok_or_else(|| bad("dname_b64 is not base64"))?;
        let data = match item.get("data_b64") {
            Some(Value::Array(fields)) => fields
                .iter()
                .map(|f| f.as_str().and_then(decode))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| bad("data_b64 holds something that is not base64"))?,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(bad("data_b64 is not an array")),
        };
        let ttl = item.get("ttl").and_then(as_u64).and_then(|t| u32::try_from(t).ok());
        match owner_in_zone(&owner, zone) {
            Ok(name) => out.records.push(ZoneRecord { line_index, name, rtype, ttl, data }),
            Err(reason) => out.skipped.push(format!("line {line_index} {rtype} {owner:?}: {reason}")),
        }
    }
    Ok(out)
}

/// The absolute, validated owner name of a zone entry.
fn owner_in_zone(owner: &str, zone: &DomainName) -> Result<DomainName, String> {
    let owner = owner.trim();
    let absolute = if owner == "@" || owner.is_empty() {
        zone.as_str().to_owned()
    } else if let Some(absolute) = owner.strip_suffix('.') {
        absolute.to_owned()
    } else {
        format!("{owner}.{}", zone.as_str())
    };
    let name = DomainName::parse(&absolute).map_err(|err| format!("not a host name ({err})"))?;
    let inside = name == *zone || name.as_str().ends_with(&format!(".{}", zone.as_str()));
    if inside { Ok(name) } else { Err(format!("outside the zone {zone}")) }
}

fn decode(text: &str) -> Option<String> {
    let bytes = STANDARD.decode(text.trim()).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl WhmClient {
    /// `parse_dns_zone`: the zone `zone` as the server holds it.
    #[tracing::instrument(skip_all, fields(function = "parse_dns_zone", zone = %zone))]
    pub async fn parse_dns_zone(&self, zone: &DomainName) -> Result<SourceZone, WhmError> {
        parse_dns_zone(zone, &self.call("parse_dns_zone", &[("zone", zone.as_str())]).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(text: &str) -> String {
        STANDARD.encode(text)
    }

    fn zone() -> DomainName {
        DomainName::parse("example.fi").unwrap()
    }

    #[test]
    fn the_documented_sample_and_relative_names() {
        // The docs' sample entry (an MX at the apex, absolute), and what a cPanel zone has.
        let json = json!({"data": {"payload": [
            {"type": "comment", "line_index": 0, "text_b64": b64("; cPanel first:11.110")},
            {"type": "control", "line_index": 1, "text_b64": b64("$TTL 14400")},
            {"line_index": 22, "type": "record", "data_b64": [b64("0"), b64("example.fi.")],
             "dname_b64": b64("example.fi."), "record_type": "MX", "ttl": 14400},
            {"line_index": 23, "type": "record", "data_b64": [b64("192.0.2.10")],
             "dname_b64": b64("@"), "record_type": "A", "ttl": "14400"},
            {"line_index": 24, "type": "record", "data_b64": [b64("example.fi")],
             "dname_b64": b64("www"), "record_type": "CNAME", "ttl": 14400},
            {"line_index": 25, "type": "record", "data_b64": [b64("192.0.2.10")],
             "dname_b64": b64("shop.example.fi."), "record_type": "a", "ttl": 300},
            {"line_index": 26, "type": "record", "data_b64": [b64("v=DMARC1; p=none")],
             "dname_b64": b64("_dmarc"), "record_type": "TXT", "ttl": 14400},
            {"line_index": 27, "type": "record", "data_b64": [b64("192.0.2.10")],
             "dname_b64": b64("*"), "record_type": "A", "ttl": 14400},
            {"line_index": 28, "type": "record", "data_b64": [b64("192.0.2.10")],
             "dname_b64": b64("evil.example.com."), "record_type": "A", "ttl": 14400},
            {"line_index": 29, "type": "record", "data_b64": [b64("2001:db8::1")],
             "dname_b64": b64("v6.blog"), "record_type": "AAAA", "ttl": 14400},
        ]}});
        let parsed = parse_dns_zone(&zone(), &json).unwrap();
        let owners: Vec<(&str, &str)> =
            parsed.records.iter().map(|r| (r.name.as_str(), r.rtype.as_str())).collect();
        assert_eq!(
            owners,
            [
                ("example.fi", "MX"),
                ("example.fi", "A"),
                ("www.example.fi", "CNAME"),
                ("shop.example.fi", "A"),
                ("v6.blog.example.fi", "AAAA"),
            ]
        );
        assert_eq!(parsed.records[0].data, ["0", "example.fi."]);
        assert_eq!(parsed.records[1].ttl, Some(14400), "a TTL sent as a string is read");
        assert_eq!(parsed.skipped.len(), 3, "{:?}", parsed.skipped);
        assert!(parsed.skipped[0].starts_with("line 26 TXT \"_dmarc\""), "{:?}", parsed.skipped);
        assert!(parsed.skipped[2].contains("outside the zone example.fi"), "{:?}", parsed.skipped);
        let labels: Vec<String> = parsed.host_labels_under(&zone()).into_iter().collect();
        assert_eq!(labels, ["shop", "v6.blog", "www"]);
    }

    #[test]
    fn an_answer_not_in_the_documented_shape_is_refused_with_the_zone() {
        let no_payload = json!({"data": {}});
        assert!(parse_dns_zone(&zone(), &no_payload).unwrap_err().to_string().contains("data.payload"));
        let not_base64 = json!({"data": {"payload": [
            {"line_index": 3, "type": "record", "data_b64": ["%%%"], "dname_b64": b64("www"),
             "record_type": "A", "ttl": 1}
        ]}});
        let err = parse_dns_zone(&zone(), &not_base64).unwrap_err().to_string();
        assert!(err.contains("zone example.fi") && err.contains("not base64"), "{err}");
        let no_type = json!({"data": {"payload": [
            {"line_index": 3, "type": "record", "data_b64": [], "dname_b64": b64("www")}
        ]}});
        assert!(parse_dns_zone(&zone(), &no_type).unwrap_err().to_string().contains("record_type"));
    }

    #[test]
    fn octets_in_no_encoding_are_kept_readable() {
        let json = json!({"data": {"payload": [
            {"line_index": 3, "type": "record", "data_b64": [STANDARD.encode([0xff, b'a'])],
             "dname_b64": b64("@"), "record_type": "TXT", "ttl": 1}
        ]}});
        let parsed = parse_dns_zone(&zone(), &json).unwrap();
        assert_eq!(parsed.records[0].data, ["\u{fffd}a"]);
    }
}
