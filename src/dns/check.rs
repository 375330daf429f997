//! Propagation checks: asks each authoritative nameserver directly what it serves right now.
//!
//! We build the query with hickory-proto and send it ourselves over UDP (TCP when the answer
//! is truncated) instead of going through hickory-resolver: a resolver caches by default, and
//! measured on this kind of machine it answered some lookups without reaching the server even
//! with its cache turned off. A propagation check must see the server's current answer, and
//! must see it from *each* server, so each server gets its own query and its answer must carry
//! the authoritative-answer flag.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::DnsError;
use crate::names::DomainName;

/// How long to wait for one UDP answer before sending the query again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How many times a UDP query is sent before the server counts as not answering.
const ATTEMPTS: u32 = 3;
/// The EDNS payload size we offer (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

/// Asks a fixed set of authoritative nameservers for A and AAAA records, each one separately, with no
/// cache anywhere in between.
#[derive(Debug, Clone)]
pub struct Checker {
    nameservers: Vec<SocketAddr>,
}

/// Whether every nameserver serves the expected address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every nameserver answers with exactly the expected address (and nothing else).
    Served,
    /// This nameserver (the first one found) answers something else: `got` is its answer,
    /// sorted; empty for NXDOMAIN or no A records.
    Stale {
        /// The nameserver that answered differently.
        server: SocketAddr,
        /// What it answered.
        got: Vec<Ipv4Addr>,
    },
}

impl Checker {
    /// A checker for these authoritative nameservers (address and port each).
    pub fn new(nameservers: Vec<SocketAddr>) -> Result<Self, DnsError> {
        if nameservers.is_empty() {
            return Err(DnsError::Config("at least one nameserver is needed for DNS checks".into()));
        }
        Ok(Self { nameservers })
    }

    /// The nameservers asked, in order.
    pub fn nameservers(&self) -> &[SocketAddr] {
        &self.nameservers
    }

    /// The A records of `name` as EACH nameserver serves it now (sorted, deduplicated; empty
    /// for NXDOMAIN or a name without A records), in the order the servers were configured.
    /// CNAMEs inside the answer are followed.
    #[tracing::instrument(skip_all, fields(name = %name))]
    pub async fn a_records(&self, name: &DomainName) -> Result<Vec<(SocketAddr, Vec<Ipv4Addr>)>, DnsError> {
        let v4 = |a: IpAddr| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        };
        self.addresses(name, RecordType::A, v4).await
    }

    /// The AAAA records of `name` as EACH nameserver serves it now, like [`Checker::a_records`].
    #[tracing::instrument(skip_all, fields(name = %name))]
    pub async fn aaaa_records(
        &self,
        name: &DomainName,
    ) -> Result<Vec<(SocketAddr, Vec<Ipv6Addr>)>, DnsError> {
        let v6 = |a: IpAddr| match a {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        };
        self.addresses(name, RecordType::AAAA, v6).await
    }

    /// The addresses of type `rtype` each nameserver answers for `name`, kept by `keep`.
    async fn addresses<T>(
        &self,
        name: &DomainName,
        rtype: RecordType,
        keep: impl Fn(IpAddr) -> Option<T> + Copy,
    ) -> Result<Vec<(SocketAddr, Vec<T>)>, DnsError> {
        let qname = Name::from_ascii(name.fqdn()).map_err(|_| DnsError::BadName {
            name: name.to_string(),
            reason: "hickory-proto refused it as a DNS name",
        })?;
        let answers = futures::future::join_all(
            self.nameservers.iter().map(|server| query(*server, &qname, name, rtype)),
        )
        .await;
        self.nameservers
            .iter()
            .zip(answers)
            .map(|(server, answer)| {
                answer.map(|addresses| (*server, addresses.into_iter().filter_map(keep).collect()))
            })
            .collect()
    }

    /// [`Verification::Served`] when every nameserver answers exactly `expected`, else
    /// [`Verification::Stale`] naming the first server that does not and what it answered.
    #[tracing::instrument(skip_all, fields(name = %name, expected = %expected))]
    pub async fn verify_a(&self, name: &DomainName, expected: Ipv4Addr) -> Result<Verification, DnsError> {
        let answers = self.a_records(name).await?;
        Ok(verification(answers, expected))
    }
}

/// The pure decision behind [`Checker::verify_a`].
fn verification(answers: Vec<(SocketAddr, Vec<Ipv4Addr>)>, expected: Ipv4Addr) -> Verification {
    for (server, got) in answers {
        if got != [expected] {
            tracing::debug!(%server, ?got, "nameserver serves something else");
            return Verification::Stale { server, got };
        }
    }
    Verification::Served
}

/// Sends one A or AAAA query to one server and reads the addresses from its authoritative answer.
async fn query(
    server: SocketAddr,
    qname: &Name,
    name: &DomainName,
    rtype: RecordType,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut query = Message::query();
    query.add_query(Query::query(qname.clone(), rtype));
    query.metadata.recursion_desired = false;
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    query.set_edns(edns);
    let bytes = query.to_vec().map_err(|err| DnsError::BadAnswer {
        server,
        name: name.to_string(),
        detail: format!("could not encode the query: {err}"),
    })?;

    let mut answer = query_udp(server, &bytes, &query, name).await?;
    if answer.metadata.truncation {
        answer = query_tcp(server, &bytes, &query, name).await?;
    }
    addresses(server, name, qname, &answer)
}

async fn query_udp(
    server: SocketAddr,
    bytes: &[u8],
    query: &Message,
    name: &DomainName,
) -> Result<Message, DnsError> {
    let io = |source| DnsError::Io { server, source };
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(server).await.map_err(io)?;
    let mut buffer = vec![0u8; 65_535];
    for _ in 0..ATTEMPTS {
        socket.send(bytes).await.map_err(io)?;
        let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
        // Read until the answer to *this* query arrives; anything else (a late answer to an
        // earlier attempt is fine too, it has the same id) is dropped.
        loop {
            let received = match tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await {
                Err(_elapsed) => break,
                Ok(received) => received.map_err(io)?,
            };
            if let Ok(message) = Message::from_vec(&buffer[..received])
                && answers(query, &message)
            {
                return Ok(message);
            }
        }
    }
    Err(DnsError::Timeout { server, name: name.to_string() })
}

async fn query_tcp(
    server: SocketAddr,
    bytes: &[u8],
    query: &Message,
    name: &DomainName,
) -> Result<Message, DnsError> {
    let io = |source| DnsError::Io { server, source };
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.map_err(io)?;
        let length = u16::try_from(bytes.len()).map_err(|_| DnsError::BadAnswer {
            server,
            name: name.to_string(),
            detail: "query too long for TCP".into(),
        })?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await.map_err(io)?;
        let length = stream.read_u16().await.map_err(io)?;
        let mut buffer = vec![0u8; usize::from(length)];
        stream.read_exact(&mut buffer).await.map_err(io)?;
        Message::from_vec(&buffer).map_err(|err| DnsError::BadAnswer {
            server,
            name: name.to_string(),
            detail: format!("undecodable answer over TCP: {err}"),
        })
    };
    let message = tokio::time::timeout(ATTEMPT_TIMEOUT * ATTEMPTS, exchange)
        .await
        .map_err(|_| DnsError::Timeout { server, name: name.to_string() })??;
    if !answers(query, &message) {
        return Err(DnsError::BadAnswer {
            server,
            name: name.to_string(),
            detail: "the TCP answer does not match the query".into(),
        });
    }
    Ok(message)
}

/// True if `message` is the answer to `query`: same id, a response, the same question.
fn answers(query: &Message, message: &Message) -> bool {
    message.metadata.id == query.metadata.id
        && message.metadata.message_type == MessageType::Response
        && message.queries == query.queries
}

/// The A and AAAA addresses in an authoritative answer for `qname`, following CNAMEs in the
/// answer (sorted, deduplicated).
fn addresses(
    server: SocketAddr,
    name: &DomainName,
    qname: &Name,
    answer: &Message,
) -> Result<Vec<IpAddr>, DnsError> {
    let bad = |detail: String| DnsError::BadAnswer { server, name: name.to_string(), detail };
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        code => {
            return Err(DnsError::Rcode { server, name: name.to_string(), rcode: rcode_text(code) });
        }
    }
    if !answer.metadata.authoritative {
        return Err(bad("the answer is not authoritative: the server does not serve this zone".into()));
    }
    // The owner names the answer may use: the query name and every CNAME target reached from it.
    let mut owners = vec![qname.clone()];
    loop {
        let before = owners.len();
        for record in &answer.answers {
            if let RData::CNAME(target) = &record.data
                && owners.contains(&record.name)
                && !owners.contains(&target.0)
            {
                owners.push(target.0.clone());
            }
        }
        if owners.len() == before || owners.len() > 16 {
            break;
        }
    }
    let found: BTreeSet<IpAddr> = answer
        .answers
        .iter()
        .filter(|record| owners.contains(&record.name))
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect();
    Ok(found.into_iter().collect())
}

fn rcode_text(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        other => format!("{} ({})", other.to_str(), u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::OpCode;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, CNAME};

    fn server() -> SocketAddr {
        "127.0.0.1:5300".parse().unwrap()
    }

    #[test]
    fn served_only_when_every_server_answers_exactly_the_address() {
        let a: Ipv4Addr = "192.0.2.1".parse().unwrap();
        let b: Ipv4Addr = "192.0.2.2".parse().unwrap();
        let other: SocketAddr = "127.0.0.2:53".parse().unwrap();
        assert_eq!(verification(vec![(server(), vec![a]), (other, vec![a])], a), Verification::Served);
        assert_eq!(
            verification(vec![(server(), vec![a]), (other, vec![b])], a),
            Verification::Stale { server: other, got: vec![b] }
        );
        assert_eq!(
            verification(vec![(server(), vec![a, b])], a),
            Verification::Stale { server: server(), got: vec![a, b] }
        );
        assert_eq!(
            verification(vec![(server(), vec![])], a),
            Verification::Stale { server: server(), got: vec![] }
        );
    }

    fn answer(authoritative: bool, code: ResponseCode, records: Vec<Record>) -> Message {
        let mut message = Message::response(1, OpCode::Query);
        message.metadata.authoritative = authoritative;
        message.metadata.response_code = code;
        message.add_answers(records);
        message
    }

    #[test]
    fn addresses_follow_cnames_and_ignore_other_owners() {
        let name = DomainName::parse("www.example.fi").unwrap();
        let qname = Name::from_ascii("www.example.fi.").unwrap();
        let target = Name::from_ascii("web.example.fi.").unwrap();
        let unrelated = Name::from_ascii("mail.example.fi.").unwrap();
        let message = answer(
            true,
            ResponseCode::NoError,
            vec![
                Record::from_rdata(qname.clone(), 60, RData::CNAME(CNAME(target.clone()))),
                Record::from_rdata(target, 60, RData::A(A::new(192, 0, 2, 9))),
                Record::from_rdata(unrelated, 60, RData::A(A::new(192, 0, 2, 10))),
            ],
        );
        assert_eq!(
            addresses(server(), &name, &qname, &message).unwrap(),
            vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9))]
        );
    }

    #[test]
    fn addresses_refuse_non_authoritative_and_error_answers() {
        let name = DomainName::parse("www.example.fi").unwrap();
        let qname = Name::from_ascii("www.example.fi.").unwrap();
        let nx = answer(true, ResponseCode::NXDomain, vec![]);
        assert_eq!(addresses(server(), &name, &qname, &nx).unwrap(), Vec::<IpAddr>::new());
        let not_aa = answer(false, ResponseCode::NoError, vec![]);
        assert!(matches!(addresses(server(), &name, &qname, &not_aa), Err(DnsError::BadAnswer { .. })));
        let refused = answer(true, ResponseCode::Refused, vec![]);
        let err = addresses(server(), &name, &qname, &refused).unwrap_err();
        assert!(matches!(&err, DnsError::Rcode { rcode, .. } if rcode == "REFUSED"));
        assert!(!err.is_transient());
    }
}
