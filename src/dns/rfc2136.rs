//! RFC 2136 dynamic updates with TSIG (RFC 8945) as a [`DnsProvider`]: BIND, Knot and
//! PowerDNS all speak it.
//!
//! A zone is read by a TSIG-signed AXFR over TCP, and a batch of changes is ONE TSIG-signed
//! UPDATE message over TCP, which the server applies atomically (all or nothing, one SOA serial
//! bump). Messages are built, signed and verified with hickory-proto's own TSIG signer
//! (`TSigner`, `Message::finalize`, `TSigVerifier`, feature `dnssec-ring`): it handles the
//! chained MACs of a multi-message AXFR, so there is no reason to hand-roll RFC 8945.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigAlgorithm as WireAlgorithm, TsigError};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{DnsError, DnsProvider, Rrset, RrsetChange, Zone, owner_name};
pub use crate::config::{DEFAULT_MAX_RECORDS_PER_TYPE, TsigAlgorithm, TsigKey};
use crate::names::DomainName;

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one whole exchange (an UPDATE and its answer, or a whole AXFR) may take. A
/// 2,000-record zone transfers in milliseconds on loopback; a much longer wait means the
/// server is stuck, and the caller retries.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The TSIG fudge: how far the server's clock may be from ours (RFC 8945 recommends 300 s).
const FUDGE: u16 = 300;
/// The wire name of a key's algorithm.
fn wire(algorithm: TsigAlgorithm) -> WireAlgorithm {
    match algorithm {
        TsigAlgorithm::HmacSha256 => WireAlgorithm::HmacSha256,
        TsigAlgorithm::HmacSha512 => WireAlgorithm::HmacSha512,
    }
}

/// A client of one primary nameserver that accepts TSIG-signed RFC 2136 updates and zone
/// transfers for a fixed list of zones.
///
/// Every call is one TCP connection: one AXFR, or one UPDATE and its answer. The server
/// serialises updates to a zone itself; concurrency across zones is the caller's business.
#[derive(Clone)]
pub struct Rfc2136 {
    server: SocketAddr,
    signing: Signing,
    zones: Vec<DomainName>,
    max_records_per_type: usize,
}

/// A TSIG key ready to sign messages and verify answers.
#[derive(Clone)]
pub(crate) struct Signing {
    signer: TSigner,
    key_name: String,
    algorithm: TsigAlgorithm,
}

impl std::fmt::Debug for Rfc2136 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // TSigner holds the key bytes and has no Debug of its own; keep it out.
        f.debug_struct("Rfc2136")
            .field("server", &self.server)
            .field("key_name", &self.signing.key_name)
            .field("algorithm", &self.signing.algorithm)
            .field("zones", &self.zones)
            .field("max_records_per_type", &self.max_records_per_type)
            .finish_non_exhaustive()
    }
}

impl Rfc2136 {
    /// A client for the primary at `server`, signing with `tsig`, serving `zones` (RFC 2136
    /// has no zone listing, so [`DnsProvider::zones`] returns this list). Fails when the key
    /// name is not a DNS name or the secret is not base64.
    pub fn new(server: SocketAddr, tsig: TsigKey, zones: Vec<DomainName>) -> Result<Self, DnsError> {
        let key_name = tsig.name.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = Name::from_ascii(format!("{key_name}."))
            .ok()
            .filter(|_| !key_name.is_empty())
            .ok_or_else(|| DnsError::Config(format!("TSIG key name {:?} is not a DNS name", tsig.name)))?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(tsig.secret.expose().trim())
            .map_err(|_| DnsError::Config(format!("the secret of TSIG key {key_name} is not base64")))?;
        if secret.is_empty() {
            return Err(DnsError::Config(format!("the secret of TSIG key {key_name} is empty")));
        }
        let signer = TSigner::new(secret, wire(tsig.algorithm), name, FUDGE)
            .map_err(|err| DnsError::Config(format!("TSIG key {key_name}: {err}")))?;
        Ok(Self {
            server,
            signing: Signing { signer, key_name, algorithm: tsig.algorithm },
            zones,
            max_records_per_type: DEFAULT_MAX_RECORDS_PER_TYPE,
        })
    }

    /// Sets the largest rrset an update may write (the server's `max-records-per-type`; BIND's
    /// default is [`DEFAULT_MAX_RECORDS_PER_TYPE`]); 0 means no limit. A batch holding a bigger
    /// rrset is refused before anything is sent, with [`DnsError::TooManyRecords`] — a
    /// permanent error — because BIND answers such an update with a SERVFAIL that would
    /// otherwise be retried as if the server were briefly unwell.
    pub fn with_max_records_per_type(mut self, max: usize) -> Self {
        self.max_records_per_type = max;
        self
    }

    /// The server this client talks to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }
}

#[async_trait]
impl DnsProvider for Rfc2136 {
    #[tracing::instrument(skip_all, fields(zone = %zone, server = %self.server))]
    async fn zone(&self, zone: &DomainName) -> Result<Zone, DnsError> {
        transfer(self.server, Some(&self.signing), zone).await
    }

    async fn zones(&self) -> Result<Vec<DomainName>, DnsError> {
        Ok(self.zones.clone())
    }

    #[tracing::instrument(skip_all, fields(zone = %zone, server = %self.server, changes = changes.len()))]
    async fn apply(&self, zone: &DomainName, changes: &[RrsetChange]) -> Result<(), DnsError> {
        if changes.is_empty() {
            return Ok(());
        }
        check_rrset_sizes(zone, changes, self.max_records_per_type)?;
        let request = update_message(zone, changes)?;
        match exchange(self.server, Some(&self.signing), "UPDATE", zone, request, |_| true).await {
            Ok(_) => Ok(()),
            Err(DnsError::Rcode { server, name, rcode }) if rcode == "SERVFAIL" => {
                // Say which rrset is the likeliest culprit when a limit is plausible, so an
                // operator whose server has a lower max-records-per-type than ours finds it.
                let biggest = changes
                    .iter()
                    .filter_map(|c| match c {
                        RrsetChange::Replace(r) => Some(r),
                        RrsetChange::Delete { .. } => None,
                    })
                    .max_by_key(|r| r.records.len());
                let rcode = match biggest {
                    Some(r) if r.records.len() > 1 => format!(
                        "SERVFAIL (the batch's biggest rrset, {} {}, has {} records: if the server's max-records-per-type is lower, set dns.max_records_per_type to it)",
                        r.name,
                        r.rtype,
                        r.records.len()
                    ),
                    _ => rcode,
                };
                Err(DnsError::Rcode { server, name, rcode })
            }
            Err(err) => Err(err),
        }
    }
}

/// Reads `zone` by AXFR over TCP from `server` (RFC 5936), signed with `signing` when given.
/// An unsigned transfer is for a server that allows this address to transfer without a key
/// (PowerDNS's `allow-axfr-ips`, loopback by default).
pub(crate) async fn transfer(
    server: SocketAddr,
    signing: Option<&Signing>,
    zone: &DomainName,
) -> Result<Zone, DnsError> {
    let origin = wire_name(&zone.fqdn())?;
    let mut request = Message::query();
    request.metadata.recursion_desired = false;
    request.add_query(Query::query(origin.clone(), RecordType::AXFR));
    // The transfer ends with the second SOA record (RFC 5936 §2.2).
    let mut soas = 0;
    let answers = exchange(server, signing, "AXFR", zone, request, |answer| {
        soas += answer.answers.iter().filter(|r| r.record_type() == RecordType::SOA).count();
        soas >= 2
    })
    .await?;
    zone_from_transfer(server, zone, &origin, answers.iter().flat_map(|a| a.answers.iter()))
}

/// Sends `request` (signed here when `signing` is given) to `server` and returns the raw
/// answers, verified, until `done` says the last one has arrived. A non-NOERROR answer is
/// mapped to an error before its signature is checked (BADKEY and BADSIG answers are unsigned
/// by design).
async fn exchange(
    server: SocketAddr,
    signing: Option<&Signing>,
    op: &'static str,
    zone: &DomainName,
    mut request: Message,
    mut done: impl FnMut(&Message) -> bool,
) -> Result<Vec<Message>, DnsError> {
    let io = |source: std::io::Error| DnsError::Io { server, source };
    let bad = |detail: String| DnsError::BadAnswer { server, name: zone.fqdn(), detail };
    let mut verifier = match signing {
        Some(signing) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
            let verifier = request
                .finalize(&signing.signer, now)
                .map_err(|err| DnsError::Config(format!("signing the {op} message: {err}")))?
                .ok_or_else(|| {
                    DnsError::Config(format!("hickory-proto did not return a TSIG verifier for {op}"))
                })?;
            Some(verifier)
        }
        None => None,
    };
    let bytes =
        request.to_vec().map_err(|err| DnsError::Config(format!("encoding the {op} message: {err}")))?;
    let length = u16::try_from(bytes.len()).map_err(|_| {
        DnsError::Config(format!(
            "the {op} message for zone {zone} is {} bytes, more than one DNS message over TCP can carry (65,535)",
            bytes.len()
        ))
    })?;

    let conversation = async {
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(server))
            .await
            .map_err(|_| DnsError::Timeout { server, name: zone.fqdn() })?
            .map_err(io)?;
        let _ = stream.set_nodelay(true);
        let mut frame = Vec::with_capacity(bytes.len() + 2);
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(&bytes);
        stream.write_all(&frame).await.map_err(io)?;

        let mut answers = Vec::new();
        loop {
            let length = stream.read_u16().await.map_err(io)?;
            let mut body = vec![0u8; usize::from(length)];
            stream.read_exact(&mut body).await.map_err(io)?;
            let answer = Message::from_vec(&body).map_err(|err| bad(format!("undecodable answer: {err}")))?;
            if answer.metadata.id != request.metadata.id
                || answer.metadata.message_type != MessageType::Response
            {
                return Err(bad("an answer that does not belong to our request".into()));
            }
            if answer.metadata.response_code != ResponseCode::NoError {
                return Err(refusal(server, signing, op, zone, &answer));
            }
            if let (Some(verifier), Some(signing)) = (verifier.as_mut(), signing) {
                verifier.verify(&body).map_err(|err| {
                    bad(format!(
                        "the answer's TSIG signature (key {}) did not verify: {err}",
                        signing.key_name
                    ))
                })?;
            }
            let last = done(&answer);
            answers.push(answer);
            if last {
                return Ok(answers);
            }
        }
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, conversation)
        .await
        .map_err(|_| DnsError::Timeout { server, name: zone.fqdn() })?
}

/// The error for an answer with an error code; TSIG errors are named with what to fix, and
/// so is an unsigned transfer the server does not allow.
fn refusal(
    server: SocketAddr,
    signing: Option<&Signing>,
    op: &'static str,
    zone: &DomainName,
    answer: &Message,
) -> DnsError {
    let refused = |detail: String| DnsError::Refused { op, server, zone: zone.to_string(), detail };
    let verb = if op == "UPDATE" { "update" } else { "transfer" };
    let Some(Signing { key_name: key, algorithm, .. }) = signing else {
        return match answer.metadata.response_code {
            ResponseCode::NotAuth | ResponseCode::Refused => refused(format!(
                "the server does not serve zone {zone}, or does not allow a transfer from this address without a TSIG key ({}; on PowerDNS, allow-axfr-ips)",
                rcode_text(answer.metadata.response_code)
            )),
            code => DnsError::Rcode { server, name: zone.fqdn(), rcode: rcode_text(code) },
        };
    };
    let algorithm = algorithm.as_str();
    match answer.signature().and_then(|tsig| tsig.data.error) {
        Some(TsigError::BadKey) => {
            return refused(format!(
                "the server does not know TSIG key {key} with algorithm {algorithm} (BADKEY)"
            ));
        }
        Some(TsigError::BadSig) => {
            return refused(format!(
                "the signature did not verify: the secret of TSIG key {key} is not the server's (BADSIG)"
            ));
        }
        Some(TsigError::BadTime) => {
            return refused(format!(
                "the server's clock and ours differ by more than {FUDGE} seconds (BADTIME)"
            ));
        }
        Some(other) => return refused(format!("TSIG error {}", u16::from(other))),
        None => {}
    }
    match answer.metadata.response_code {
        ResponseCode::NotAuth => {
            refused(format!("the server is not authoritative for zone {zone} (NOTAUTH)"))
        }
        ResponseCode::Refused => refused(format!(
            "the server refused: it does not serve zone {zone}, or does not let TSIG key {key} {verb} it (REFUSED)"
        )),
        code => DnsError::Rcode { server, name: zone.fqdn(), rcode: rcode_text(code) },
    }
}

/// Refuses a batch that would write an rrset of more than `max` records (0: no limit).
fn check_rrset_sizes(zone: &DomainName, changes: &[RrsetChange], max: usize) -> Result<(), DnsError> {
    if max == 0 {
        return Ok(());
    }
    for change in changes {
        if let RrsetChange::Replace(rrset) = change
            && rrset.records.len() > max
        {
            return Err(DnsError::TooManyRecords {
                zone: zone.to_string(),
                name: rrset.name.clone(),
                rtype: rrset.rtype.clone(),
                count: rrset.records.len(),
                max,
            });
        }
    }
    Ok(())
}

/// A validated absolute name as hickory's wire name.
fn wire_name(name: &str) -> Result<Name, DnsError> {
    Name::from_ascii(name).map_err(|_| DnsError::BadName {
        name: name.chars().take(300).collect(),
        reason: "hickory-proto refused it as a DNS name",
    })
}

/// ONE prerequisite-free UPDATE for the whole batch: REPLACE deletes the rrset and adds the
/// new records (with the new TTL); DELETE deletes the rrset (RFC 2136 §2.5.2, §2.5.1). The
/// server applies the sections in order and the whole message atomically.
fn update_message(zone: &DomainName, changes: &[RrsetChange]) -> Result<Message, DnsError> {
    let origin = wire_name(&zone.fqdn())?;
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    let mut zone_section = Query::query(origin, RecordType::SOA);
    zone_section.set_query_class(DNSClass::IN);
    message.add_query(zone_section);
    for change in changes {
        let (name, rtype, additions) = match change {
            RrsetChange::Replace(rrset) => (&rrset.name, &rrset.rtype, Some(rrset)),
            RrsetChange::Delete { name, rtype } => (name, rtype, None),
        };
        let owner = wire_name(&owner_name(name, zone)?)?;
        let rtype_upper = rtype.to_ascii_uppercase();
        let record_type = record_type(&rtype_upper)
            .ok_or_else(|| bad_record(&owner, &rtype_upper, "", "not a record type we can send".into()))?;
        let mut delete = Record::update0(owner.clone(), 0, record_type);
        delete.dns_class = DNSClass::ANY;
        message.add_authority(delete);
        for content in additions.iter().flat_map(|r| r.records.iter()) {
            let rdata = RData::try_from_str(record_type, content)
                .map_err(|err| bad_record(&owner, &rtype_upper, content, err.to_string()))?;
            let ttl = additions.map(|r| r.ttl).unwrap_or_default();
            message.add_authority(Record::from_rdata(owner.clone(), ttl, rdata));
        }
    }
    Ok(message)
}

fn bad_record(owner: &Name, rtype: &str, content: &str, reason: String) -> DnsError {
    DnsError::BadRecord {
        name: owner.to_ascii(),
        rtype: rtype.to_owned(),
        content: content.chars().take(300).collect(),
        reason,
    }
}

/// The record types an rrset change may name: the data types, not the meta types (ANY,
/// AXFR, OPT, TSIG…), which would change the meaning of an update record.
fn record_type(rtype: &str) -> Option<RecordType> {
    let parsed: RecordType = rtype.parse().ok()?;
    let meta = matches!(
        parsed,
        RecordType::ANY
            | RecordType::AXFR
            | RecordType::IXFR
            | RecordType::OPT
            | RecordType::TSIG
            | RecordType::SIG
            | RecordType::NULL
            | RecordType::ZERO
    ) || matches!(parsed, RecordType::Unknown(_));
    (!meta).then_some(parsed)
}

/// The rrsets of a transfer, in the order the server sent them, with the closing SOA left out
/// and every owner checked to lie inside the zone.
fn zone_from_transfer<'a>(
    server: SocketAddr,
    zone: &DomainName,
    origin: &Name,
    records: impl Iterator<Item = &'a Record>,
) -> Result<Zone, DnsError> {
    let bad = |detail: String| DnsError::BadAnswer { server, name: zone.fqdn(), detail };
    let mut rrsets: Vec<Rrset> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut soa_seen = false;
    let mut records = records.peekable();
    match records.peek() {
        Some(first) if first_soa(first, origin) => {}
        _ => return Err(bad("the transfer does not start with the zone's SOA".into())),
    }
    for record in records {
        let rtype = record.record_type();
        // A signed zone's keys, signatures and denial-of-existence records are the signer's,
        // made again on every change: not rrsets siirto reads or writes (PowerDNS's API does
        // not list them either), and counting them would dilute the share of a zone a change
        // may touch. DS records (a delegation's) are the zone's own and stay.
        if matches!(
            rtype,
            RecordType::RRSIG
                | RecordType::NSEC
                | RecordType::NSEC3
                | RecordType::NSEC3PARAM
                | RecordType::DNSKEY
                | RecordType::CDS
                | RecordType::CDNSKEY
        ) {
            continue;
        }
        if rtype == RecordType::SOA {
            if soa_seen {
                continue; // the closing SOA repeats the opening one
            }
            soa_seen = true;
        }
        let name = owner_name(&record.name.to_ascii(), zone)
            .map_err(|err| bad(format!("a record outside the zone: {err}")))?;
        let key = (name.clone(), type_name(rtype));
        let content = presentation(&record.data);
        match index.get(&key) {
            Some(&at) => {
                let rrset = &mut rrsets[at];
                if !rrset.records.contains(&content) {
                    rrset.records.push(content);
                }
            }
            None => {
                index.insert(key.clone(), rrsets.len());
                rrsets.push(Rrset { name, rtype: key.1, ttl: record.ttl, records: vec![content] });
            }
        }
    }
    Ok(Zone { name: zone.clone(), rrsets })
}

fn first_soa(record: &Record, origin: &Name) -> bool {
    record.record_type() == RecordType::SOA && record.name.to_ascii().eq_ignore_ascii_case(&origin.to_ascii())
}

/// A record type's name as PowerDNS writes it: hickory's, except SPF (type 99, which hickory
/// does not know) and other unknown types, named `TYPE{n}` (RFC 3597 §5).
fn type_name(rtype: RecordType) -> String {
    match rtype {
        RecordType::Unknown(99) => "SPF".to_owned(),
        RecordType::Unknown(code) => format!("TYPE{code}"),
        known => known.to_string().to_ascii_uppercase(),
    }
}

/// Record content in presentation format as PowerDNS writes it: hickory's own format, except
/// for the types whose text hickory writes differently: TXT, SPF and HINFO (character-strings,
/// which hickory runs together unquoted), DS and CDS (digests, which hickory writes in upper
/// case), and types hickory does not know (RFC 3597's `\# length hex`).
fn presentation(rdata: &RData) -> String {
    match rdata {
        RData::TXT(txt) => {
            let strings: Vec<String> = txt.txt_data.iter().map(|bytes| quoted(bytes)).collect();
            strings.join(" ")
        }
        RData::HINFO(hinfo) => format!("{} {}", quoted(&hinfo.cpu), quoted(&hinfo.os)),
        RData::Unknown { code: RecordType::Unknown(99), rdata } => match character_strings(&rdata.anything) {
            Some(strings) => strings.iter().map(|bytes| quoted(bytes)).collect::<Vec<_>>().join(" "),
            None => generic(&rdata.anything),
        },
        RData::Unknown { rdata, .. } => generic(&rdata.anything),
        other if matches!(other.record_type(), RecordType::DS | RecordType::CDS) => {
            other.to_string().to_ascii_lowercase()
        }
        other => other.to_string(),
    }
}

/// The character-strings of an rdata made of them (RFC 1035 §3.3), or None when the lengths do
/// not add up.
fn character_strings(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut strings = Vec::new();
    while let Some((&length, rest)) = bytes.split_first() {
        let length = usize::from(length);
        if rest.len() < length {
            return None;
        }
        strings.push(&rest[..length]);
        bytes = &rest[length..];
    }
    Some(strings)
}

/// RFC 3597 §5's generic rdata: `\# length hex`.
fn generic(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() { "\\# 0".to_owned() } else { format!("\\# {} {hex}", bytes.len()) }
}

/// One character-string in quotes, with `"` and `\` escaped and bytes outside printable
/// ASCII as `\DDD` (RFC 1035 §5.1).
fn quoted(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &byte in bytes {
        match byte {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            0x20..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\{byte:03}")),
        }
    }
    out.push('"');
    out
}

fn rcode_text(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        other => format!("{} ({})", other.to_str(), u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::rdata::tsig::TSIG;
    use hickory_proto::rr::rdata::{A, SOA, TXT};

    use super::*;
    use crate::secret::Secret;

    fn zone() -> DomainName {
        DomainName::parse("example.fi").unwrap()
    }

    fn rrset(name: &str, rtype: &str, ttl: u32, records: &[&str]) -> Rrset {
        Rrset {
            name: name.into(),
            rtype: rtype.into(),
            ttl,
            records: records.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn client() -> Rfc2136 {
        let key = TsigKey {
            name: "Siirto-Key.".into(),
            algorithm: TsigAlgorithm::HmacSha512,
            secret: Secret::new("c2VjcmV0"),
        };
        Rfc2136::new("127.0.0.1:53".parse().unwrap(), key, vec![zone()]).unwrap()
    }

    #[test]
    fn algorithms() {
        assert_eq!(TsigAlgorithm::parse("hmac-sha256"), Some(TsigAlgorithm::HmacSha256));
        assert_eq!(TsigAlgorithm::parse("HMAC-SHA512."), Some(TsigAlgorithm::HmacSha512));
        assert_eq!(TsigAlgorithm::parse("hmac-md5"), None);
        assert_eq!(TsigAlgorithm::default().as_str(), "hmac-sha256");
    }

    #[test]
    fn settings() {
        let client = client();
        assert_eq!(client.signing.key_name, "siirto-key");
        let debug = format!("{client:?}");
        assert!(debug.contains("siirto-key") && !debug.contains("c2VjcmV0"), "{debug}");
        let key = |name: &str, secret: &str| TsigKey {
            name: name.into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: Secret::new(secret),
        };
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        for (name, secret) in [("k", "***"), ("", "c2VjcmV0"), (".", "c2VjcmV0"), ("k", " ")] {
            let err = Rfc2136::new(server, key(name, secret), vec![]).unwrap_err();
            assert!(matches!(err, DnsError::Config(_)), "{name:?} {secret:?}: {err:?}");
            assert!(!err.to_string().contains("c2VjcmV0"));
        }
    }

    /// One message: the zone in the zone section, no prerequisites, and per change a delete of
    /// the rrset (class ANY, TTL 0, no data) followed by the new records.
    #[test]
    fn oversized_rrsets_are_refused_before_sending() {
        let addresses: Vec<String> = (1..=4).map(|i| format!("192.0.2.{i}")).collect();
        let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
        let changes = [
            RrsetChange::Delete { name: "old.example.fi.".into(), rtype: "TXT".into() },
            RrsetChange::Replace(rrset("www.example.fi.", "A", 60, &addresses)),
        ];
        assert!(check_rrset_sizes(&zone(), &changes, 4).is_ok());
        assert!(check_rrset_sizes(&zone(), &changes, 0).is_ok(), "0 is no limit");
        let err = check_rrset_sizes(&zone(), &changes, 3).unwrap_err();
        assert!(!err.is_transient());
        let text = err.to_string();
        for part in ["zone example.fi", "www.example.fi. A", "4 records", "limit of 3"] {
            assert!(text.contains(part), "{part:?} missing in {text}");
        }
        assert_eq!(client().max_records_per_type, DEFAULT_MAX_RECORDS_PER_TYPE);
    }

    #[test]
    fn one_update_message_per_batch() {
        let changes = [
            RrsetChange::Replace(rrset("WWW.example.fi.", "a", 60, &["192.0.2.1", "192.0.2.2"])),
            RrsetChange::Delete { name: "old.example.fi.".into(), rtype: "TXT".into() },
            RrsetChange::Replace(rrset("example.fi.", "TXT", 300, &["\"v=spf1 -all\""])),
            RrsetChange::Replace(rrset("gone.example.fi.", "A", 60, &[])),
        ];
        let message = update_message(&zone(), &changes).unwrap();
        assert_eq!(message.metadata.op_code, OpCode::Update);
        assert_eq!(message.queries.len(), 1);
        assert_eq!(message.queries[0].name().to_ascii(), "example.fi.");
        assert_eq!(message.queries[0].query_type(), RecordType::SOA);
        assert!(message.answers.is_empty(), "no prerequisites");
        let updates: Vec<(String, DNSClass, u32, String)> = message
            .authorities
            .iter()
            .map(|r| {
                let data = match &r.data {
                    RData::Update0(rtype) => format!("delete {rtype}"),
                    other => presentation(other),
                };
                (r.name.to_ascii(), r.dns_class, r.ttl, data)
            })
            .collect();
        let row = |name: &str, class, ttl, data: &str| (name.to_owned(), class, ttl, data.to_owned());
        assert_eq!(
            updates,
            vec![
                row("www.example.fi.", DNSClass::ANY, 0, "delete A"),
                row("www.example.fi.", DNSClass::IN, 60, "192.0.2.1"),
                row("www.example.fi.", DNSClass::IN, 60, "192.0.2.2"),
                row("old.example.fi.", DNSClass::ANY, 0, "delete TXT"),
                row("example.fi.", DNSClass::ANY, 0, "delete TXT"),
                row("example.fi.", DNSClass::IN, 300, "\"v=spf1 -all\""),
                row("gone.example.fi.", DNSClass::ANY, 0, "delete A"),
            ]
        );
        // It encodes (and decodes back to the same sections).
        let bytes = message.to_vec().unwrap();
        assert_eq!(Message::from_vec(&bytes).unwrap().authorities.len(), 7);
    }

    #[test]
    fn refused_changes() {
        let bad = |change: RrsetChange| update_message(&zone(), &[change]).unwrap_err();
        let err = bad(RrsetChange::Replace(rrset("www.example.fi.", "A", 60, &["300.1.1.1"])));
        assert!(matches!(&err, DnsError::BadRecord { content, .. } if content == "300.1.1.1"), "{err:?}");
        assert!(matches!(
            bad(RrsetChange::Delete { name: "x.other.fi.".into(), rtype: "A".into() }),
            DnsError::BadName { .. }
        ));
        for rtype in ["ANY", "AXFR", "TSIG", "OPT", "BOGUS", "TYPE65280"] {
            let err = bad(RrsetChange::Delete { name: "www.example.fi.".into(), rtype: rtype.into() });
            assert!(matches!(err, DnsError::BadRecord { .. }), "{rtype}: {err:?}");
        }
    }

    #[test]
    fn txt_strings_are_quoted_and_escaped() {
        let txt = TXT::from_bytes(vec![b"say \"hi\"".as_slice(), b"back\\slash", b"tab\there"]);
        assert_eq!(presentation(&RData::TXT(txt)), r#""say \"hi\"" "back\\slash" "tab\009here""#);
        // And the quoted form parses back to the same strings.
        let parsed = RData::try_from_str(RecordType::TXT, r#""say \"hi\"" "second""#).unwrap();
        assert_eq!(presentation(&parsed), r#""say \"hi\"" "second""#);
    }

    fn soa(origin: &Name, serial: u32) -> Record {
        let mname = Name::from_ascii("ns1.example.fi.").unwrap();
        let rname = Name::from_ascii("hostmaster.example.fi.").unwrap();
        Record::from_rdata(
            origin.clone(),
            3600,
            RData::SOA(SOA::new(mname, rname, serial, 10800, 3600, 604800, 3600)),
        )
    }

    #[test]
    fn transfers_become_rrsets() {
        let origin = Name::from_ascii("example.fi.").unwrap();
        let www = Name::from_ascii("WWW.example.fi.").unwrap();
        let a =
            |name: &Name, ttl, last| Record::from_rdata(name.clone(), ttl, RData::A(A::new(192, 0, 2, last)));
        let records = [
            soa(&origin, 7),
            a(&www, 60, 1),
            a(&origin, 300, 9),
            a(&www, 60, 2),
            a(&www, 60, 2),
            soa(&origin, 7),
        ];
        let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let got = zone_from_transfer(server, &zone(), &origin, records.iter()).unwrap();
        assert_eq!(
            got.rrsets,
            vec![
                rrset(
                    "example.fi.",
                    "SOA",
                    3600,
                    &["ns1.example.fi. hostmaster.example.fi. 7 10800 3600 604800 3600"]
                ),
                rrset("www.example.fi.", "A", 60, &["192.0.2.1", "192.0.2.2"]),
                rrset("example.fi.", "A", 300, &["192.0.2.9"]),
            ]
        );

        let outside = Name::from_ascii("www.other.fi.").unwrap();
        let records = [soa(&origin, 7), a(&outside, 60, 1), soa(&origin, 7)];
        assert!(matches!(
            zone_from_transfer(server, &zone(), &origin, records.iter()),
            Err(DnsError::BadAnswer { .. })
        ));
        let records = [a(&www, 60, 1), soa(&origin, 7)];
        assert!(matches!(
            zone_from_transfer(server, &zone(), &origin, records.iter()),
            Err(DnsError::BadAnswer { .. })
        ));
    }

    #[test]
    fn types_hickory_does_not_know_keep_their_data() {
        use hickory_proto::rr::rdata::NULL;
        let unknown = |code: u16, bytes: &[u8]| RData::Unknown {
            code: RecordType::Unknown(code),
            rdata: NULL::with(bytes.to_vec()),
        };
        assert_eq!(type_name(RecordType::Unknown(99)), "SPF");
        assert_eq!(type_name(RecordType::Unknown(29)), "TYPE29");
        assert_eq!(type_name(RecordType::MX), "MX");
        assert_eq!(presentation(&unknown(99, b"\x0bv=spf1 -all\x02ok")), "\"v=spf1 -all\" \"ok\"");
        // Lengths that do not add up: not character-strings, so the generic form.
        assert_eq!(presentation(&unknown(99, b"\x09v=spf1")), "\\# 7 09763d73706631");
        assert_eq!(
            presentation(&RData::Unknown { code: RecordType::Unknown(29), rdata: NULL::new() }),
            "\\# 0"
        );
        assert_eq!(presentation(&unknown(29, &[0, 0x12, 0xab])), "\\# 3 0012ab");
    }

    #[test]
    fn refusals_say_what_to_fix() {
        let client = client();
        let answer = |code: ResponseCode, tsig_error: Option<TsigError>| {
            let mut message = Message::response(1, OpCode::Update);
            message.metadata.response_code = code;
            if let Some(error) = tsig_error {
                let tsig = TSIG::new(WireAlgorithm::HmacSha512, 0, FUDGE, vec![], 1, Some(error), vec![]);
                let name = Name::from_ascii("siirto-key.").unwrap();
                message.set_signature(Box::new(Record::from_rdata(name, 0, tsig)));
            }
            message
        };
        let text = |code, error| {
            refusal(client.server, Some(&client.signing), "UPDATE", &zone(), &answer(code, error))
        };
        let err = text(ResponseCode::NotAuth, Some(TsigError::BadKey));
        assert!(
            err.to_string().contains("does not know TSIG key siirto-key with algorithm hmac-sha512"),
            "{err}"
        );
        let err = text(ResponseCode::NotAuth, Some(TsigError::BadSig));
        assert!(err.to_string().contains("BADSIG"), "{err}");
        let err = text(ResponseCode::NotAuth, Some(TsigError::BadTime));
        assert!(err.to_string().contains("clock"), "{err}");
        let err = text(ResponseCode::NotAuth, None);
        assert_eq!(
            err.to_string(),
            "UPDATE of zone example.fi at 127.0.0.1:53: the server is not authoritative for zone example.fi (NOTAUTH)"
        );
        let err = text(ResponseCode::Refused, None);
        assert!(err.to_string().contains("does not let TSIG key siirto-key update it (REFUSED)"), "{err}");
        for code in [ResponseCode::NotAuth, ResponseCode::Refused, ResponseCode::FormErr] {
            assert!(!text(code, None).is_transient(), "{code:?}");
        }
        let err = text(ResponseCode::ServFail, None);
        assert!(matches!(&err, DnsError::Rcode { rcode, .. } if rcode == "SERVFAIL"), "{err:?}");
        assert!(err.is_transient());

        // Unsigned (PowerDNS's AXFR reads): no key to blame, the server's transfer ACL instead.
        let unsigned = |code| refusal(client.server, None, "AXFR", &zone(), &answer(code, None));
        for code in [ResponseCode::NotAuth, ResponseCode::Refused] {
            let err = unsigned(code);
            assert!(!err.is_transient(), "{code:?}");
            let text = err.to_string();
            assert!(text.contains("allow-axfr-ips") && !text.contains("TSIG key siirto-key"), "{text}");
        }
        assert!(unsigned(ResponseCode::ServFail).is_transient());
    }
}
