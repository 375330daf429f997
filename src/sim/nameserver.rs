//! A simulated nameserver: authoritative DNS over UDP/TCP and the PowerDNS HTTP API shape.
//!
//! The demo's stand-in for the company's nameserver when no `pdns_server` is installed. Its
//! HTTP API is the subset of the PowerDNS Authoritative API that [`crate::dns::PowerDns`]
//! uses, with the same status codes and `{"error": ...}` bodies, so the very same client
//! drives it; its DNS side answers authoritatively from the same in-memory zones, so the
//! very same [`crate::dns::Checker`] checks it. The integration tests run one scenario
//! against both this and a real pdns_server to keep the two honest.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use crate::dns::owner_name;
use crate::names::DomainName;

/// The record types the simulator stores and serves.
const SUPPORTED: [RecordType; 7] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::MX,
    RecordType::NS,
    RecordType::TXT,
    RecordType::CNAME,
    RecordType::SOA,
];
/// The UDP payload we accept to send when the query offers EDNS.
const EDNS_PAYLOAD: u16 = 1232;
/// The SOA timers of a new zone (the same as the test pdns_server's `default-soa-content`).
const SOA_TIMERS: (i32, i32, i32, u32) = (10800, 3600, 604800, 3600);
/// The TTL of the NS and SOA rrsets of a new zone.
const DEFAULT_TTL: u32 = 3600;

/// A running simulated nameserver; it stops when dropped or shut down.
pub struct SimNameserver {
    /// Where it answers DNS, on UDP and TCP (the same port).
    pub dns_addr: SocketAddr,
    /// The base URL of its PowerDNS-style HTTP API (`http://127.0.0.1:PORT/`); the server id
    /// is `localhost`.
    pub api_url: reqwest::Url,
    tasks: Vec<JoinHandle<()>>,
}

impl SimNameserver {
    /// Starts the nameserver on loopback: DNS on UDP and TCP of one free port, the HTTP API
    /// on another, accepting requests that carry `X-API-Key: api_key`.
    pub async fn start(api_key: &str) -> Result<SimNameserver> {
        let state = Arc::new(Shared { api_key: api_key.to_owned(), zones: Mutex::new(BTreeMap::new()) });
        let (udp, tcp) = bind_dns().await?;
        let dns_addr = udp.local_addr().context("DNS socket address")?;
        let http = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the simulated PowerDNS API")?;
        let api_addr = http.local_addr().context("API socket address")?;
        let api_url = reqwest::Url::parse(&format!("http://{api_addr}/")).context("building the API URL")?;

        let router = router(state.clone());
        let tasks = vec![
            tokio::spawn(serve_udp(udp, state.clone())),
            tokio::spawn(serve_tcp(tcp, state)),
            tokio::spawn(async move {
                if let Err(err) = axum::serve(http, router).await {
                    tracing::warn!(error = %err, "simulated PowerDNS API stopped");
                }
            }),
        ];
        tracing::info!(%dns_addr, %api_url, "simulated nameserver started");
        Ok(SimNameserver { dns_addr, api_url, tasks })
    }

    /// Stops serving and waits until the listeners are closed.
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SimNameserver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds UDP and TCP on the same free loopback port.
async fn bind_dns() -> Result<(UdpSocket, TcpListener)> {
    let mut last_error = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.context("binding a UDP port for DNS")?;
        let port = udp.local_addr().context("UDP address")?.port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(err) => last_error = Some(err),
        }
    }
    Err(anyhow::anyhow!("no loopback port free for both UDP and TCP: {last_error:?}"))
}

// ---------------------------------------------------------------------------------------------
// Zones

struct Shared {
    api_key: String,
    zones: Mutex<BTreeMap<String, SimZone>>,
}

impl Shared {
    fn zones(&self) -> MutexGuard<'_, BTreeMap<String, SimZone>> {
        // A panic while holding the lock leaves consistent data (every change is built on a
        // copy and swapped in), so a poisoned lock is still usable.
        self.zones.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One zone: its absolute name and rrsets keyed by (owner name, type), both lower/upper-cased.
#[derive(Debug, Clone)]
struct SimZone {
    name: String,
    domain: DomainName,
    rrsets: BTreeMap<(String, RecordType), SimRrset>,
}

#[derive(Debug, Clone)]
struct SimRrset {
    ttl: u32,
    /// Content as given (PowerDNS's presentation format) and parsed.
    records: Vec<(String, RData)>,
}

impl SimZone {
    fn soa(&self) -> Option<(u32, SOA)> {
        let rrset = self.rrsets.get(&(self.name.clone(), RecordType::SOA))?;
        match rrset.records.first() {
            Some((_, RData::SOA(soa))) => Some((rrset.ttl, soa.clone())),
            _ => None,
        }
    }

    fn serial(&self) -> u32 {
        self.soa().map_or(0, |(_, soa)| soa.serial)
    }

    fn bump_serial(&mut self) {
        if let Some(rrset) = self.rrsets.get_mut(&(self.name.clone(), RecordType::SOA))
            && let Some((content, RData::SOA(soa))) = rrset.records.first_mut()
        {
            soa.serial = soa.serial.wrapping_add(1);
            *content = soa.to_string();
        }
    }

    /// True if any rrset is owned by `name` or lies below it (an empty non-terminal).
    fn name_exists(&self, name: &str) -> bool {
        let below = format!(".{name}");
        self.rrsets.keys().any(|(owner, _)| owner == name || owner.ends_with(&below))
    }

    /// The rules PowerDNS enforces on a whole zone after a change.
    fn check(&self) -> Result<(), ApiError> {
        if self.soa().is_none() {
            return Err(ApiError::unprocessable(format!("Zone '{}' has no SOA record", self.name)));
        }
        for ((owner, rtype), rrset) in &self.rrsets {
            if *rtype == RecordType::CNAME {
                if *owner == self.name {
                    return Err(ApiError::unprocessable(format!(
                        "RRset {owner} IN CNAME: CNAME not allowed at the zone apex"
                    )));
                }
                if rrset.records.len() > 1 {
                    return Err(ApiError::unprocessable(format!(
                        "RRset {owner} IN CNAME has more than one record"
                    )));
                }
                let other = self.rrsets.keys().any(|(o, t)| o == owner && *t != RecordType::CNAME);
                if other {
                    return Err(ApiError::unprocessable(format!(
                        "RRset {owner} IN CNAME: Conflicts with pre-existing RRset"
                    )));
                }
            }
            if *rtype == RecordType::SOA && (*owner != self.name || rrset.records.len() != 1) {
                return Err(ApiError::unprocessable(format!(
                    "RRset {owner} IN SOA: only one SOA record at the zone apex is allowed"
                )));
            }
        }
        Ok(())
    }

    fn to_json(&self, with_rrsets: bool) -> Value {
        let mut zone = json!({
            "id": self.name,
            "name": self.name,
            "kind": "Native",
            "serial": self.serial(),
            // Like a zone made through PowerDNS's API: PowerDNS raises the serial on a change.
            "soa_edit_api": "DEFAULT",
            "url": format!("/api/v1/servers/localhost/zones/{}", self.name),
        });
        if with_rrsets {
            let rrsets: Vec<Value> = self
                .rrsets
                .iter()
                .map(|((owner, rtype), rrset)| {
                    json!({
                        "name": owner,
                        "type": rtype.to_string(),
                        "ttl": rrset.ttl,
                        "records": rrset.records.iter()
                            .map(|(content, _)| json!({"content": content, "disabled": false}))
                            .collect::<Vec<_>>(),
                        "comments": [],
                    })
                })
                .collect();
            zone["rrsets"] = Value::Array(rrsets);
        }
        zone
    }
}

/// Parses and checks one rrset of a request against the zone `zone`.
fn parse_rrset(
    zone: &DomainName,
    name: &str,
    rtype: &str,
    ttl: Option<u32>,
    records: &[ApiRecord],
) -> Result<((String, RecordType), SimRrset), ApiError> {
    let owner = owner_name(name, zone).map_err(|err| {
        ApiError::unprocessable(format!("RRset {name} IN {rtype}: Name is out of zone: {err}"))
    })?;
    let record_type = RecordType::from_str(rtype)
        .ok()
        .filter(|t| SUPPORTED.contains(t) && rtype.bytes().all(|b| b.is_ascii_uppercase()))
        .ok_or_else(|| {
            ApiError::unprocessable(format!("RRset {owner} IN {rtype}: unknown or unsupported record type"))
        })?;
    let ttl =
        ttl.ok_or_else(|| ApiError::unprocessable(format!("RRset {owner} IN {rtype}: TTL is missing")))?;
    let mut parsed: Vec<(String, RData)> = Vec::with_capacity(records.len());
    for record in records.iter().filter(|record| !record.disabled) {
        let content = record.content.trim();
        let bad =
            || ApiError::unprocessable(format!("Record {owner}/{rtype} '{content}': Not in expected format"));
        let rdata = RData::try_from_str(record_type, content).map_err(|_| bad())?;
        if !names_are_absolute(&rdata) {
            return Err(bad());
        }
        if parsed.iter().any(|(_, existing)| *existing == rdata) {
            return Err(ApiError::unprocessable(format!(
                "RRset {owner} IN {rtype} has duplicate record '{content}'"
            )));
        }
        parsed.push((content.to_owned(), rdata));
    }
    Ok(((owner, record_type), SimRrset { ttl, records: parsed }))
}

/// PowerDNS wants names in record content absolute; a relative one is refused.
fn names_are_absolute(rdata: &RData) -> bool {
    match rdata {
        RData::CNAME(name) => name.0.is_fqdn(),
        RData::NS(name) => name.0.is_fqdn(),
        RData::MX(mx) => mx.exchange.is_fqdn(),
        RData::SOA(soa) => soa.mname.is_fqdn() && soa.rname.is_fqdn(),
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP API (PowerDNS subset)

fn router(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/servers", get(list_servers))
        .route("/api/v1/servers/{server}", get(get_server))
        .route("/api/v1/servers/{server}/zones", get(list_zones).post(create_zone))
        .route("/api/v1/servers/{server}/zones/{zone}", get(get_zone).patch(patch_zone))
        .with_state(state)
}

/// An API error: a status and PowerDNS's `{"error": "..."}` body.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    fn no_zone() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            // PowerDNS 4.7 says just this for an unknown zone id.
            "Not Found",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": self.message}))).into_response()
    }
}

/// Checks the API key and the server id, as PowerDNS does before anything else.
fn authorize(state: &Shared, headers: &HeaderMap, server: &str) -> Result<(), ApiError> {
    let given = headers.get("x-api-key").map(|value| value.as_bytes());
    if given != Some(state.api_key.as_bytes()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized"));
    }
    if server != "localhost" {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Not Found"));
    }
    Ok(())
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, format!("Could not parse JSON: {err}")))
}

fn server_json() -> Value {
    json!({
        "type": "Server",
        "id": "localhost",
        "daemon_type": "authoritative",
        "version": concat!("siirto-sim-", env!("CARGO_PKG_VERSION")),
        "url": "/api/v1/servers/localhost",
        "config_url": "/api/v1/servers/localhost/config{/config_setting}",
        "zones_url": "/api/v1/servers/localhost/zones{/zone}",
    })
}

async fn list_servers(
    State(state): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    authorize(&state, &headers, "localhost")?;
    Ok(axum::Json(json!([server_json()])))
}

async fn get_server(
    State(state): State<Arc<Shared>>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    authorize(&state, &headers, &server)?;
    Ok(axum::Json(server_json()))
}

async fn list_zones(
    State(state): State<Arc<Shared>>,
    Path(server): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    authorize(&state, &headers, &server)?;
    let zones = state.zones();
    Ok(axum::Json(Value::Array(zones.values().map(|zone| zone.to_json(false)).collect())))
}

async fn get_zone(
    State(state): State<Arc<Shared>>,
    Path((server, zone_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    authorize(&state, &headers, &server)?;
    let key = zone_key(&zone_id);
    let zones = state.zones();
    let zone = zones.get(&key).ok_or_else(ApiError::no_zone)?;
    Ok(axum::Json(zone.to_json(true)))
}

#[derive(Debug, Deserialize)]
struct NewZone {
    name: String,
    #[serde(default)]
    nameservers: Vec<String>,
    #[serde(default)]
    rrsets: Vec<ApiRrset>,
}

#[derive(Debug, Deserialize)]
struct ApiRrset {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    #[serde(default)]
    ttl: Option<u32>,
    #[serde(default)]
    changetype: Option<String>,
    #[serde(default)]
    records: Vec<ApiRecord>,
}

#[derive(Debug, Deserialize)]
struct ApiRecord {
    content: String,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Deserialize)]
struct Patch {
    rrsets: Vec<ApiRrset>,
}

async fn create_zone(
    State(state): State<Arc<Shared>>,
    Path(server): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, &server)?;
    let request: NewZone = json_body(&body)?;
    if !request.name.ends_with('.') {
        return Err(ApiError::unprocessable(format!("DNS Name '{}' is not canonical", request.name)));
    }
    let domain = DomainName::parse(&request.name).map_err(|err| ApiError::unprocessable(err.to_string()))?;
    let name = domain.fqdn();
    let mut zone = SimZone { name: name.clone(), domain: domain.clone(), rrsets: BTreeMap::new() };
    let root = |label: &str| {
        Name::from_ascii(format!("{label}.{name}"))
            .map_err(|err| ApiError::unprocessable(format!("SOA names: {err}")))
    };
    let (refresh, retry, expire, minimum) = SOA_TIMERS;
    let soa = SOA::new(root("ns1")?, root("hostmaster")?, 1, refresh, retry, expire, minimum);
    zone.rrsets.insert(
        (name.clone(), RecordType::SOA),
        SimRrset { ttl: DEFAULT_TTL, records: vec![(soa.to_string(), RData::SOA(soa))] },
    );
    if !request.nameservers.is_empty() {
        let records: Vec<ApiRecord> =
            request.nameservers.iter().map(|ns| ApiRecord { content: ns.clone(), disabled: false }).collect();
        let (key, rrset) = parse_rrset(&domain, &name, "NS", Some(DEFAULT_TTL), &records)?;
        zone.rrsets.insert(key, rrset);
    }
    for api in &request.rrsets {
        let (key, rrset) = parse_rrset(&domain, &api.name, &api.rtype, api.ttl, &api.records)?;
        if zone.rrsets.contains_key(&key) && key.1 != RecordType::SOA {
            return Err(ApiError::unprocessable(format!("RRset {} IN {} given twice", key.0, key.1)));
        }
        if !rrset.records.is_empty() {
            zone.rrsets.insert(key, rrset);
        }
    }
    zone.check()?;

    let mut zones = state.zones();
    if zones.contains_key(&name) {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("Domain '{name}' already exists")));
    }
    let body = zone.to_json(true);
    zones.insert(name, zone);
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

async fn patch_zone(
    State(state): State<Arc<Shared>>,
    Path((server, zone_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, &server)?;
    let key = zone_key(&zone_id);
    let patch: Patch = json_body(&body)?;
    let mut zones = state.zones();
    let current = zones.get(&key).ok_or_else(ApiError::no_zone)?;
    // The whole batch is applied to a copy and swapped in only when all of it is good, as
    // PowerDNS applies a PATCH in one transaction.
    let mut zone = current.clone();
    let mut soa_touched = false;
    for change in &patch.rrsets {
        let changetype = change.changetype.as_deref().unwrap_or("");
        match changetype.to_ascii_uppercase().as_str() {
            "REPLACE" => {
                let (rrset_key, rrset) =
                    parse_rrset(&zone.domain, &change.name, &change.rtype, change.ttl, &change.records)?;
                soa_touched |= rrset_key.1 == RecordType::SOA;
                if rrset.records.is_empty() {
                    zone.rrsets.remove(&rrset_key);
                } else {
                    zone.rrsets.insert(rrset_key, rrset);
                }
            }
            "DELETE" => {
                let (rrset_key, _) = parse_rrset(&zone.domain, &change.name, &change.rtype, Some(0), &[])?;
                if rrset_key.1 == RecordType::SOA {
                    return Err(ApiError::unprocessable("The SOA of a zone cannot be deleted"));
                }
                zone.rrsets.remove(&rrset_key);
            }
            other => {
                return Err(ApiError::unprocessable(format!("Changetype '{other}' not understood")));
            }
        }
    }
    zone.check()?;
    if !soa_touched {
        zone.bump_serial();
    }
    zones.insert(key, zone);
    Ok(StatusCode::NO_CONTENT)
}

/// The map key of a zone id from a URL: lower case, absolute.
fn zone_key(zone_id: &str) -> String {
    let lower = zone_id.to_ascii_lowercase();
    if lower.ends_with('.') { lower } else { format!("{lower}.") }
}

// ---------------------------------------------------------------------------------------------
// DNS

async fn serve_udp(socket: UdpSocket, state: Arc<Shared>) {
    let mut buffer = vec![0u8; 65_535];
    loop {
        let (received, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(err) => {
                // ICMP port-unreachable from an earlier answer shows up here on some systems;
                // it concerns one peer only, so keep serving.
                tracing::debug!(error = %err, "simulated nameserver: UDP receive failed");
                continue;
            }
        };
        let Ok(request) = Message::from_vec(&buffer[..received]) else {
            continue;
        };
        let limit = request.edns.as_ref().map_or(512, |edns| edns.max_payload().clamp(512, EDNS_PAYLOAD));
        let response = respond(&state, &request);
        let Some(mut bytes) = encode(&response) else {
            continue;
        };
        if bytes.len() > usize::from(limit) {
            let Some(truncated) = encode(&truncated(&response)) else {
                continue;
            };
            bytes = truncated;
        }
        if let Err(err) = socket.send_to(&bytes, peer).await {
            tracing::debug!(error = %err, %peer, "simulated nameserver: UDP send failed");
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<Shared>) {
    // Connections live in this set, so aborting the server task closes them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_tcp_connection(stream, state.clone()));
                }
                Err(err) => tracing::debug!(error = %err, "simulated nameserver: accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, state: Arc<Shared>) {
    loop {
        let Ok(length) = stream.read_u16().await else {
            return;
        };
        let mut buffer = vec![0u8; usize::from(length)];
        if stream.read_exact(&mut buffer).await.is_err() {
            return;
        }
        let Ok(request) = Message::from_vec(&buffer) else {
            return;
        };
        let Some(bytes) = encode(&respond(&state, &request)) else {
            return;
        };
        let Ok(length) = u16::try_from(bytes.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            tracing::warn!(error = %err, "simulated nameserver: could not encode an answer");
            None
        }
    }
}

/// The header and question of `response` with the TC flag: "ask again over TCP".
fn truncated(response: &Message) -> Message {
    let mut message = Message::new(response.metadata.id, MessageType::Response, response.metadata.op_code);
    message.metadata = response.metadata;
    message.metadata.truncation = true;
    message.add_queries(response.queries.iter().cloned());
    message.edns = response.edns.clone();
    message
}

/// The authoritative answer to one query from the current zones.
fn respond(state: &Shared, request: &Message) -> Message {
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    if request.metadata.message_type != MessageType::Query {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    }
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return response;
    }
    let [query] = request.queries.as_slice() else {
        response.metadata.response_code = ResponseCode::FormErr;
        return response;
    };
    let qname = absolute_lower(query.name());
    let qtype = query.query_type();

    let zones = state.zones();
    let Some(zone) =
        zones.values().filter(|zone| in_zone(&qname, &zone.name)).max_by_key(|zone| zone.name.len())
    else {
        response.metadata.response_code = ResponseCode::Refused;
        return response;
    };
    response.metadata.authoritative = true;

    // Follow CNAMEs inside this zone, a few steps at most (loops are the zone's problem).
    let mut current = qname.clone();
    for _ in 0..8 {
        if let Some(rrset) = lookup(zone, &current, qtype) {
            response.add_answers(records(&current, rrset));
            return response;
        }
        let cname = zone.rrsets.get(&(current.clone(), RecordType::CNAME));
        match (cname, qtype) {
            (Some(rrset), qtype) if qtype != RecordType::CNAME => {
                response.add_answers(records(&current, rrset));
                let target = match rrset.records.first() {
                    Some((_, RData::CNAME(target))) => absolute_lower(&target.0),
                    _ => return response,
                };
                if !in_zone(&target, &zone.name) {
                    return response;
                }
                current = target;
            }
            _ => break,
        }
    }
    if !zone.name_exists(&current) {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    // No data: the SOA in the authority section tells how long to cache the negative answer.
    if let Some((ttl, soa)) = zone.soa()
        && let Ok(owner) = Name::from_ascii(&zone.name)
    {
        let negative_ttl = ttl.min(soa.minimum);
        response.add_authority(Record::from_rdata(owner, negative_ttl, RData::SOA(soa)));
    }
    response
}

fn lookup<'z>(zone: &'z SimZone, name: &str, qtype: RecordType) -> Option<&'z SimRrset> {
    zone.rrsets.get(&(name.to_owned(), qtype))
}

fn records(owner: &str, rrset: &SimRrset) -> Vec<Record> {
    let Ok(name) = Name::from_ascii(owner) else {
        return Vec::new();
    };
    rrset
        .records
        .iter()
        .map(|(_, rdata)| Record::from_rdata(name.clone(), rrset.ttl, rdata.clone()))
        .collect()
}

fn absolute_lower(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

fn in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.ends_with(&format!(".{zone}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn state_with_zone() -> Shared {
        let domain = DomainName::parse("example.fi").unwrap();
        let rrset = |name: &str, rtype: &str, ttl: u32, records: &[&str]| {
            let records: Vec<ApiRecord> = records
                .iter()
                .map(|content| ApiRecord { content: content.to_string(), disabled: false })
                .collect();
            parse_rrset(&domain, name, rtype, Some(ttl), &records).unwrap()
        };
        let mut zone =
            SimZone { name: "example.fi.".into(), domain: domain.clone(), rrsets: BTreeMap::new() };
        for (key, value) in [
            rrset(
                "example.fi.",
                "SOA",
                3600,
                &["ns1.example.fi. hostmaster.example.fi. 7 10800 3600 604800 300"],
            ),
            rrset("www.example.fi.", "A", 60, &["192.0.2.1"]),
            rrset("ftp.example.fi.", "CNAME", 60, &["www.example.fi."]),
            rrset("a.b.example.fi.", "TXT", 60, &["\"deep\""]),
        ] {
            zone.rrsets.insert(key, value);
        }
        zone.check().unwrap();
        Shared { api_key: "k".into(), zones: Mutex::new(BTreeMap::from([("example.fi.".to_string(), zone)])) }
    }

    fn ask(state: &Shared, name: &str, rtype: RecordType) -> Message {
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        respond(state, &query)
    }

    #[test]
    fn answers_authoritatively() {
        let state = state_with_zone();
        let answer = ask(&state, "WWW.example.fi.", RecordType::A);
        assert!(answer.metadata.authoritative);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 1);
        assert_eq!(answer.answers[0].ttl, 60);

        let answer = ask(&state, "ftp.example.fi.", RecordType::A);
        assert_eq!(answer.answers.len(), 2, "CNAME and the A it points at");
    }

    #[test]
    fn negative_answers_carry_the_soa() {
        let state = state_with_zone();
        let nx = ask(&state, "nothing.example.fi.", RecordType::A);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(nx.metadata.authoritative);
        assert_eq!(nx.authorities.len(), 1);
        assert_eq!(nx.authorities[0].ttl, 300, "min(SOA TTL, SOA minimum)");

        let nodata = ask(&state, "www.example.fi.", RecordType::MX);
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities.len(), 1);

        let empty_non_terminal = ask(&state, "b.example.fi.", RecordType::A);
        assert_eq!(empty_non_terminal.metadata.response_code, ResponseCode::NoError);
    }

    #[test]
    fn refuses_names_outside_its_zones() {
        let state = state_with_zone();
        let answer = ask(&state, "www.example.com.", RecordType::A);
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
        assert!(!answer.metadata.authoritative);
        let answer = ask(&state, "badexample.fi.", RecordType::A);
        assert_eq!(answer.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn record_content_is_checked() {
        let domain = DomainName::parse("example.fi").unwrap();
        let check = |rtype: &str, content: &str| {
            let records = [ApiRecord { content: content.into(), disabled: false }];
            parse_rrset(&domain, "x.example.fi.", rtype, Some(60), &records).is_ok()
        };
        assert!(check("A", "192.0.2.1"));
        assert!(!check("A", "300.1.1.1"));
        assert!(!check("A", "not-an-address"));
        assert!(check("AAAA", "2001:db8::1"));
        assert!(check("MX", "10 mail.example.fi."));
        assert!(!check("MX", "10 mail.example.fi"));
        assert!(check("TXT", "\"v=spf1 -all\""));
        assert!(check("CNAME", "www.example.fi."));
        assert!(!check("CNAME", "www"));
        assert!(!check("SRV", "0 5 5060 sip.example.fi."));
        assert!(!check("a", "192.0.2.1"));
    }

    #[test]
    fn cname_conflicts_are_refused() {
        let state = state_with_zone();
        let mut zone = state.zones().get("example.fi.").unwrap().clone();
        let records = [ApiRecord { content: "192.0.2.1".into(), disabled: false }];
        let (key, rrset) = parse_rrset(&zone.domain, "ftp.example.fi.", "A", Some(60), &records).unwrap();
        zone.rrsets.insert(key, rrset);
        assert_eq!(zone.check().unwrap_err().status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
