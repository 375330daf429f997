//! The PowerDNS Authoritative HTTP API as a [`DnsProvider`].

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::{DnsError, DnsProvider, Rrset, RrsetChange, Zone, owner_name};
use crate::names::DomainName;
use crate::secret::Secret;

/// How long one API request may take. A PATCH on a 2,000-record zone takes a few ms; a much
/// longer wait means the server is stuck, and the caller retries.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of one PowerDNS Authoritative server's HTTP API (`/api/v1/servers/{server_id}`).
///
/// Every call is one HTTP request; the API answers with `Connection: close`, so there is no
/// pool to share. Concurrency is the caller's business: on a sqlite-backed PowerDNS, use one
/// write at a time (concurrent writers get HTTP 500 from its writer lock, which
/// [`DnsError::is_transient`] reports as transient), and keep all requests in flight at or
/// below 8 (its listen backlog is 10).
#[derive(Debug, Clone)]
pub struct PowerDns {
    http: reqwest::Client,
    /// `{api_url}/api/v1/servers/{server_id}/`, always with the trailing slash.
    server_url: Url,
    /// Where zones are read by AXFR instead of `GET zones/{zone}` (see [`Self::with_axfr_reads`]).
    axfr: Option<SocketAddr>,
    /// Where the API key was read from, for the error when PowerDNS refuses it.
    key_origin: Option<String>,
    /// Zones seen with a SOA-EDIT-API setting (PowerDNS raises their serial itself): a write
    /// to one needs no extra request for its SOA. Filled by every zone read through the API.
    self_bumping: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl PowerDns {
    /// A client for the API at `api_url` (e.g. `http://127.0.0.1:8081/`), authenticating with
    /// `api_key` (sent as `X-API-Key`, marked sensitive, never logged) on server `server_id`
    /// (normally `localhost`).
    pub fn new(api_url: Url, api_key: Secret, server_id: String) -> Result<Self, DnsError> {
        let server_url = server_url(&api_url, &server_id)?;
        let mut key = HeaderValue::from_str(api_key.expose())
            .map_err(|_| DnsError::Config("the API key is not a valid header value".into()))?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("X-API-Key", key);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|err| DnsError::Config(format!("HTTP client: {err}")))?;
        Ok(Self {
            http,
            server_url,
            axfr: None,
            key_origin: api_key.origin().map(str::to_owned),
            self_bumping: Default::default(),
        })
    }

    /// Reads zones by an unsigned AXFR from PowerDNS's own DNS port at `server` instead of
    /// through the API; writes still go through the API. PowerDNS serves a transfer for much
    /// less than the JSON of a `GET zones/{zone}` (about half the cost of a read-then-PATCH
    /// on one-record zones, measured in `examples/dns_scale.rs`). PowerDNS must allow this
    /// address to transfer (`allow-axfr-ips`; loopback by default); disabled records are
    /// left out either way.
    pub fn with_axfr_reads(mut self, server: SocketAddr) -> Self {
        self.axfr = Some(server);
        self
    }

    /// Creates a native zone with these nameservers (absolute names, for its NS rrset) and
    /// initial rrsets, with SOA-EDIT-API `DEFAULT`. PowerDNS makes the SOA itself (from its
    /// `default-soa-content`).
    #[tracing::instrument(skip_all, fields(zone = %zone))]
    pub async fn create_zone(
        &self,
        zone: &DomainName,
        nameservers: &[String],
        rrsets: &[Rrset],
    ) -> Result<(), DnsError> {
        let rrsets = rrsets
            .iter()
            .map(|r| {
                Ok(ApiRrset {
                    name: owner_name(&r.name, zone)?,
                    rtype: r.rtype.to_ascii_uppercase(),
                    ttl: Some(r.ttl),
                    changetype: None,
                    records: Some(api_records(&r.records)),
                })
            })
            .collect::<Result<Vec<_>, DnsError>>()?;
        // SOA-EDIT-API DEFAULT: every API change bumps the serial (to today's YYYYMMDDnn, or by
        // one past it), so secondaries and our checks see each change. It is PowerDNS's own
        // default for zones made through the API since 4.2; said here so that no server's
        // setting can make a zone whose serial stands still.
        let body =
            NewZone { name: zone.fqdn(), kind: "Native", nameservers, soa_edit_api: "DEFAULT", rrsets };
        let url = self.join("zones")?;
        self.send("POST zones", Method::POST, url, Some(&body), None).await?;
        Ok(())
    }

    fn join(&self, path: &str) -> Result<Url, DnsError> {
        self.server_url.join(path).map_err(|err| DnsError::Config(format!("API URL: {err}")))
    }

    fn zone_url(&self, zone: &DomainName) -> Result<Url, DnsError> {
        // A validated domain name has only [a-z0-9.-], so its absolute form is the zone id
        // as it is (PowerDNS escapes only unusual characters in ids).
        self.join(&format!("zones/{}", zone.fqdn()))
    }

    /// Sends one request and returns the body of a 2xx answer; maps everything else to a
    /// [`DnsError`]. `zone` names the zone for a 404.
    async fn send<B: Serialize>(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        body: Option<&B>,
        zone: Option<&DomainName>,
    ) -> Result<Vec<u8>, DnsError> {
        let shown = crate::secret::shown_url(&url);
        let transport = |source: reqwest::Error| DnsError::Transport {
            op,
            url: shown.clone(),
            source: source.without_url(),
        };
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let message = error_text(&body);
        tracing::debug!(status = status.as_u16(), url = %shown, %message, "DNS API refused");
        match (status, zone) {
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => Err(DnsError::Unauthorized {
                op,
                url: shown,
                status: status.as_u16(),
                key: match &self.key_origin {
                    Some(origin) => format!("the key in {origin}"),
                    None => "the API key".to_owned(),
                },
            }),
            (StatusCode::NOT_FOUND, Some(zone)) => {
                Err(DnsError::NoSuchZone { op, url: shown, zone: zone.to_string(), message })
            }
            _ => Err(DnsError::Api { op, url: shown, status: status.as_u16(), message }),
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(op: &'static str, body: &[u8]) -> Result<T, DnsError> {
    serde_json::from_slice(body).map_err(|err| DnsError::Shape { op, detail: err.to_string() })
}

#[async_trait]
impl DnsProvider for PowerDns {
    #[tracing::instrument(skip_all, fields(zone = %zone))]
    async fn zone(&self, zone: &DomainName) -> Result<Zone, DnsError> {
        if let Some(server) = self.axfr {
            return super::rfc2136::transfer(server, None, zone).await;
        }
        const OP: &str = "GET zone";
        let url = self.zone_url(zone)?;
        let body = self.send::<()>(OP, Method::GET, url, None, Some(zone)).await?;
        let api: ApiZone = parse(OP, &body)?;
        if !api.soa_edit_api.trim().is_empty() {
            self.remember_self_bumping(zone);
        }
        zone_from_api(zone, api)
    }

    #[tracing::instrument(skip_all)]
    async fn zones(&self) -> Result<Vec<DomainName>, DnsError> {
        const OP: &str = "GET zones";
        let url = self.join("zones")?;
        let body = self.send::<()>(OP, Method::GET, url, None, None).await?;
        let listed: Vec<ApiZoneListing> = parse(OP, &body)?;
        let mut zones = Vec::with_capacity(listed.len());
        for entry in listed {
            match DomainName::parse(&entry.name) {
                Ok(name) => zones.push(name),
                // Zones we could never be asked to touch (classless reverse zones and the
                // like) are skipped, not fatal.
                Err(err) => tracing::warn!(error = %err, "skipping a zone with an unusable name"),
            }
        }
        Ok(zones)
    }

    #[tracing::instrument(skip_all, fields(zone = %zone, changes = changes.len()))]
    async fn apply(&self, zone: &DomainName, changes: &[RrsetChange]) -> Result<(), DnsError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut body = patch_body(zone, changes)?;
        // A batch that sets the SOA itself says what the serial is; otherwise a zone without
        // SOA-EDIT-API would keep its serial and secondaries would never see the change.
        if !body.rrsets.iter().any(|r| r.rtype == "SOA") && !self.is_self_bumping(zone) {
            let soa = self.soa_state(zone).await?;
            if !soa.server_bumps {
                let today = chrono::Utc::now().date_naive();
                let bumped = bump_soa(zone, &soa, today)?;
                tracing::debug!(soa = %bumped.records.as_ref().and_then(|r| r.first()).map_or("", |r| r.content.as_str()), "zone has no SOA-EDIT-API: the serial is raised in the batch");
                body.rrsets.push(bumped);
            }
        }
        let url = self.zone_url(zone)?;
        self.send("PATCH zone", Method::PATCH, url, Some(&body), Some(zone)).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(zone = %zone))]
    async fn server_bumps_serial(&self, zone: &DomainName) -> Result<bool, DnsError> {
        Ok(self.soa_state(zone).await?.server_bumps)
    }
}

/// What [`PowerDns::apply`] needs to know to keep a zone's serial moving.
#[derive(Debug, Clone, PartialEq)]
struct SoaState {
    /// The zone has a `SOA-EDIT-API` setting: PowerDNS raises the serial on every API change.
    server_bumps: bool,
    /// The SOA rrset as the API holds it (`None` if the zone has none, which PowerDNS refuses
    /// to serve anyway).
    soa: Option<ApiRrset>,
}

impl PowerDns {
    fn remember_self_bumping(&self, zone: &DomainName) {
        self.self_bumping.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(zone.fqdn());
    }

    fn is_self_bumping(&self, zone: &DomainName) -> bool {
        self.self_bumping.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&zone.fqdn())
    }

    /// The zone's `soa_edit_api` and its SOA rrset, in one small request: the API filters the
    /// rrsets to the apex SOA (PowerDNS 4.7 and later; an older server sends them all, and the
    /// SOA is picked out). The metadata endpoint is no help: it refuses `SOA-EDIT-API` as a kind
    /// it does not let clients read.
    async fn soa_state(&self, zone: &DomainName) -> Result<SoaState, DnsError> {
        const OP: &str = "GET zone SOA";
        let mut url = self.zone_url(zone)?;
        url.query_pairs_mut().append_pair("rrset_name", &zone.fqdn()).append_pair("rrset_type", "SOA");
        let body = self.send::<()>(OP, Method::GET, url, None, Some(zone)).await?;
        let api: ApiZoneSoa = parse(OP, &body)?;
        let apex = zone.fqdn();
        if !api.soa_edit_api.trim().is_empty() {
            self.remember_self_bumping(zone);
        }
        Ok(SoaState {
            server_bumps: !api.soa_edit_api.trim().is_empty(),
            soa: api
                .rrsets
                .into_iter()
                .find(|r| r.rtype.eq_ignore_ascii_case("SOA") && r.name.eq_ignore_ascii_case(&apex)),
        })
    }
}

/// The SOA rrset with the next serial (see [`next_serial`]), as a REPLACE for the batch.
fn bump_soa(zone: &DomainName, state: &SoaState, today: chrono::NaiveDate) -> Result<ApiRrset, DnsError> {
    let shape = |detail: String| DnsError::Shape { op: "GET zone SOA", detail };
    let soa = state.soa.as_ref().ok_or_else(|| shape(format!("zone {zone} has no SOA record")))?;
    let record = soa
        .records
        .as_ref()
        .and_then(|records| records.iter().find(|r| !r.disabled))
        .ok_or_else(|| shape(format!("zone {zone} has no enabled SOA record")))?;
    let mut fields: Vec<&str> = record.content.split_whitespace().collect();
    let serial: u32 =
        fields.get(2).and_then(|s| s.parse().ok()).filter(|_| fields.len() == 7).ok_or_else(|| {
            shape(format!(
                "zone {zone}: SOA {:?} is not \"mname rname serial refresh retry expire minimum\"",
                record.content
            ))
        })?;
    let next = next_serial(serial, today).to_string();
    fields[2] = &next;
    Ok(ApiRrset {
        name: soa.name.clone(),
        rtype: "SOA".into(),
        ttl: soa.ttl,
        changetype: Some("REPLACE".into()),
        records: Some(vec![ApiRecord { content: fields.join(" "), disabled: false }]),
    })
}

/// The serial after `current`, keeping its style: a date serial `YYYYMMDDnn` moves to today's
/// `YYYYMMDD01` when that is larger, else by one; any other serial goes up by one. Serial
/// arithmetic is RFC 1982's: it wraps modulo 2^32, and 0 is skipped (some secondaries treat a
/// zero serial as "unset").
pub(crate) fn next_serial(current: u32, today: chrono::NaiveDate) -> u32 {
    use chrono::Datelike;
    let looks_like_a_date = {
        let date = current / 100;
        let (year, month, day) = (date / 10_000, date / 100 % 100, date % 100);
        chrono::NaiveDate::from_ymd_opt(i32::try_from(year).unwrap_or(0), month, day)
            .is_some_and(|d| (1990..=2100).contains(&d.year()))
    };
    if looks_like_a_date {
        let today_first = u32::try_from(today.year()).ok().and_then(|year| {
            year.checked_mul(1_000_000)?.checked_add(today.month() * 10_000 + today.day() * 100 + 1)
        });
        if let Some(candidate) = today_first.filter(|c| *c > current) {
            return candidate;
        }
    }
    match current.wrapping_add(1) {
        0 => 1,
        next => next,
    }
}

/// `{api_url}/api/v1/servers/{server_id}/` (an `api_url` that already ends in `/api/v1` gets
/// it once); the server id must be a plain word.
fn server_url(api_url: &Url, server_id: &str) -> Result<Url, DnsError> {
    if server_id.is_empty()
        || !server_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || server_id.starts_with('.')
    {
        return Err(DnsError::Config(format!(
            "server id {server_id:?} must be letters, digits, '-', '_' or '.'"
        )));
    }
    if !matches!(api_url.scheme(), "http" | "https") || api_url.cannot_be_a_base() {
        return Err(DnsError::Config(format!("API URL {api_url} must be an http:// or https:// URL")));
    }
    // The URL may be given with the API's own `/api/v1` path or without.
    let base = crate::config::powerdns_base_url(api_url);
    base.join(&format!("api/v1/servers/{server_id}/"))
        .map_err(|err| DnsError::Config(format!("API URL: {err}")))
}

/// The API's `{"error": "..."}` text, or the start of the body when it is not that.
fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        error: String,
    }
    match serde_json::from_slice::<ApiError>(body) {
        Ok(err) => err.error,
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

fn api_records(records: &[String]) -> Vec<ApiRecord> {
    records.iter().map(|content| ApiRecord { content: content.clone(), disabled: false }).collect()
}

/// The PATCH body for one batch; owner names are checked to lie inside the zone.
fn patch_body(zone: &DomainName, changes: &[RrsetChange]) -> Result<PatchBody, DnsError> {
    let rrsets = changes
        .iter()
        .map(|change| {
            Ok(match change {
                RrsetChange::Replace(r) => ApiRrset {
                    name: owner_name(&r.name, zone)?,
                    rtype: r.rtype.to_ascii_uppercase(),
                    ttl: Some(r.ttl),
                    changetype: Some("REPLACE".into()),
                    records: Some(api_records(&r.records)),
                },
                RrsetChange::Delete { name, rtype } => ApiRrset {
                    name: owner_name(name, zone)?,
                    rtype: rtype.to_ascii_uppercase(),
                    ttl: None,
                    changetype: Some("DELETE".into()),
                    records: None,
                },
            })
        })
        .collect::<Result<Vec<_>, DnsError>>()?;
    Ok(PatchBody { rrsets })
}

fn zone_from_api(zone: &DomainName, api: ApiZone) -> Result<Zone, DnsError> {
    let answered = DomainName::parse(&api.name)?;
    if answered != *zone {
        return Err(DnsError::Shape {
            op: "GET zone",
            detail: format!("asked for zone {zone}, got {answered}"),
        });
    }
    let rrsets = api
        .rrsets
        .into_iter()
        .map(|r| Rrset {
            name: r.name.to_ascii_lowercase(),
            rtype: r.rtype.to_ascii_uppercase(),
            ttl: r.ttl.unwrap_or(0),
            records: r
                .records
                .unwrap_or_default()
                .into_iter()
                .filter(|record| !record.disabled)
                .map(|record| record.content)
                .collect(),
        })
        .collect();
    Ok(Zone { name: answered, rrsets })
}

/// An rrset as the API reads and writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApiRrset {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) rtype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ttl: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) changetype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) records: Option<Vec<ApiRecord>>,
}

/// One record of an rrset as the API reads and writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApiRecord {
    pub(crate) content: String,
    #[serde(default)]
    pub(crate) disabled: bool,
}

#[derive(Debug, Serialize)]
struct PatchBody {
    rrsets: Vec<ApiRrset>,
}

#[derive(Debug, Serialize)]
struct NewZone<'a> {
    name: String,
    kind: &'static str,
    nameservers: &'a [String],
    /// How PowerDNS changes the SOA serial on each API edit.
    soa_edit_api: &'static str,
    rrsets: Vec<ApiRrset>,
}

#[derive(Debug, Deserialize)]
struct ApiZone {
    name: String,
    #[serde(default)]
    rrsets: Vec<ApiRrset>,
    /// Empty or absent when the zone has no SOA-EDIT-API metadata.
    #[serde(default)]
    soa_edit_api: String,
}

/// A zone as the API gives it for [`PowerDns::soa_state`].
#[derive(Debug, Deserialize)]
struct ApiZoneSoa {
    /// Empty or absent when the zone has no SOA-EDIT-API metadata.
    #[serde(default)]
    soa_edit_api: String,
    #[serde(default)]
    rrsets: Vec<ApiRrset>,
}

#[derive(Debug, Deserialize)]
struct ApiZoneListing {
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            server_url(&url("http://127.0.0.1:8081"), "localhost").unwrap().as_str(),
            "http://127.0.0.1:8081/api/v1/servers/localhost/"
        );
        assert_eq!(
            server_url(&url("https://dns.example.fi/pdns"), "localhost").unwrap().as_str(),
            "https://dns.example.fi/pdns/api/v1/servers/localhost/"
        );
        assert_eq!(
            server_url(&url("https://dns.example.fi/pdns/api/v1/"), "localhost").unwrap().as_str(),
            "https://dns.example.fi/pdns/api/v1/servers/localhost/"
        );
        assert!(server_url(&url("http://x/"), "../admin").is_err());
        assert!(server_url(&url("http://x/"), "").is_err());
        assert!(server_url(&url("ftp://x/"), "localhost").is_err());
    }

    #[test]
    fn zone_urls_use_the_absolute_name() {
        let pdns = PowerDns::new(
            Url::parse("http://127.0.0.1:8081/").unwrap(),
            Secret::new("k"),
            "localhost".into(),
        )
        .unwrap();
        let zone = DomainName::parse("Example.FI").unwrap();
        assert_eq!(
            pdns.zone_url(&zone).unwrap().as_str(),
            "http://127.0.0.1:8081/api/v1/servers/localhost/zones/example.fi."
        );
    }

    #[test]
    fn patch_bodies() {
        let zone = DomainName::parse("example.fi").unwrap();
        let changes = vec![
            RrsetChange::Replace(Rrset {
                name: "www.example.fi.".into(),
                rtype: "a".into(),
                ttl: 60,
                records: vec!["192.0.2.1".into()],
            }),
            RrsetChange::Delete { name: "old.example.fi.".into(), rtype: "TXT".into() },
        ];
        let body = serde_json::to_value(patch_body(&zone, &changes).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"rrsets": [
                {"name": "www.example.fi.", "type": "A", "ttl": 60, "changetype": "REPLACE",
                 "records": [{"content": "192.0.2.1", "disabled": false}]},
                {"name": "old.example.fi.", "type": "TXT", "changetype": "DELETE"},
            ]})
        );
        let outside = [RrsetChange::Delete { name: "www.other.fi.".into(), rtype: "A".into() }];
        assert!(matches!(patch_body(&zone, &outside), Err(DnsError::BadName { .. })));
    }

    #[test]
    fn serials_move_forward_in_their_own_style() {
        let day = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let today = day(2026, 12, 4);
        let table: &[(u32, u32, &str)] = &[
            (2026120101, 2026120401, "an older date serial jumps to today's first"),
            (2026120401, 2026120402, "today's serial counts on"),
            (2026120499, 2026120500, "the 100th change of a day borrows from tomorrow"),
            (2026120510, 2026120511, "a serial dated ahead of today only counts on"),
            (1, 2, "a counter counts"),
            (0, 1, "zero, as PowerDNS's default SOA has it, counts"),
            (1733300000, 1733300001, "a Unix time counts (not a date)"),
            (4294967295, 1, "2^32 - 1 wraps past 0 (RFC 1982), which is skipped"),
            (2026139901, 2026139902, "month 13 is no date"),
        ];
        for (current, expected, why) in table {
            assert_eq!(next_serial(*current, today), *expected, "{current}: {why}");
        }
        // RFC 1982: the next serial is always "greater" than the current one.
        for (current, _, _) in table {
            let next = next_serial(*current, today);
            let ahead = next.wrapping_sub(*current);
            assert!(ahead > 0 && ahead < 1 << 31, "{current} -> {next}");
        }
    }

    #[test]
    fn the_bumped_soa_keeps_everything_but_the_serial() {
        let zone = DomainName::parse("example.fi").unwrap();
        let soa = |content: &str| SoaState {
            server_bumps: false,
            soa: Some(ApiRrset {
                name: "example.fi.".into(),
                rtype: "SOA".into(),
                ttl: Some(3600),
                changetype: None,
                records: Some(vec![ApiRecord { content: content.into(), disabled: false }]),
            }),
        };
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 4).unwrap();
        let bumped =
            bump_soa(&zone, &soa("ns1.example.fi. hostmaster.example.fi. 7 10800 3600 604800 3600"), today)
                .unwrap();
        assert_eq!(
            serde_json::to_value(&bumped).unwrap(),
            serde_json::json!({"name": "example.fi.", "type": "SOA", "ttl": 3600, "changetype": "REPLACE",
                "records": [{"content": "ns1.example.fi. hostmaster.example.fi. 8 10800 3600 604800 3600", "disabled": false}]})
        );
        assert!(bump_soa(&zone, &soa("ns1.example.fi. hostmaster.example.fi."), today).is_err());
        assert!(bump_soa(&zone, &SoaState { server_bumps: false, soa: None }, today).is_err());
    }

    #[test]
    fn error_texts() {
        assert_eq!(error_text(br#"{"error": "RRset x. IN A: bad"}"#), "RRset x. IN A: bad");
        assert_eq!(error_text(b"Unauthorized"), "Unauthorized");
    }

    #[test]
    fn zones_from_the_api_drop_disabled_records() {
        let zone = DomainName::parse("example.fi").unwrap();
        let api: ApiZone = serde_json::from_value(serde_json::json!({
            "name": "example.fi.", "kind": "Native", "serial": 3,
            "rrsets": [{"name": "WWW.example.fi.", "type": "A", "ttl": 300, "comments": [],
                        "records": [{"content": "192.0.2.1", "disabled": false},
                                    {"content": "192.0.2.2", "disabled": true}]}]
        }))
        .unwrap();
        let got = zone_from_api(&zone, api).unwrap();
        assert_eq!(
            got.rrsets,
            vec![Rrset {
                name: "www.example.fi.".into(),
                rtype: "A".into(),
                ttl: 300,
                records: vec!["192.0.2.1".into()]
            }]
        );
    }
}
