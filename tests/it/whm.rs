//! WHM client TLS: the certificate pin against a real TLS handshake on loopback.
//!
//! This tests TLS, not WHM semantics: a tokio-rustls server with an rcgen self-signed
//! certificate answers every request with one `version` envelope. Web PKI verification must
//! refuse it, the right pin must accept it, and a wrong pin must refuse it.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use siirto::secret::Secret;
use siirto::whm::{TlsPolicy, WhmClient, WhmError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A TLS server on 127.0.0.1:0 that answers each HTTP request with a `version` envelope.
/// It stops when dropped.
struct TlsServer {
    port: u16,
    cert_sha256: [u8; 32],
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_tls_server() -> TlsServer {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("generate certificate");
    let cert_der: CertificateDer<'static> = certified.cert.der().clone();
    let cert_sha256: [u8; 32] = Sha256::digest(cert_der.as_ref()).into();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key)
            .expect("server certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake (the client's verifier said no) ends here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"data":{"version":"11.110.0.17"},"metadata":{"command":"version","reason":"OK","result":1,"version":1}}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    TlsServer { port, cert_sha256, task }
}

fn client(port: u16, tls: TlsPolicy) -> WhmClient {
    WhmClient::new(
        format!("https://127.0.0.1:{port}/").parse().expect("url"),
        Secret::new("test-token"),
        tls,
        Duration::from_secs(10),
    )
    .expect("client")
}

#[tokio::test]
async fn web_pki_refuses_a_self_signed_certificate() {
    let server = start_tls_server().await;
    let err = client(server.port, TlsPolicy::WebPki)
        .version()
        .await
        .expect_err("a self-signed certificate must not pass web PKI verification");
    assert!(matches!(err, WhmError::Tls { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn the_right_pin_accepts_the_certificate() {
    let server = start_tls_server().await;
    let version = client(server.port, TlsPolicy::PinSha256(server.cert_sha256))
        .version()
        .await
        .expect("the pinned certificate is accepted");
    assert_eq!(version, "11.110.0.17");
}

#[tokio::test]
async fn a_wrong_pin_refuses_the_certificate() {
    let server = start_tls_server().await;
    let mut wrong = server.cert_sha256;
    wrong[0] ^= 0xff;
    let err = client(server.port, TlsPolicy::PinSha256(wrong))
        .version()
        .await
        .expect_err("a different certificate must be refused");
    match &err {
        WhmError::Tls { detail, .. } => assert!(detail.contains("does not match"), "{detail}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Bind and drop to get a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
    let err = client(port, TlsPolicy::WebPki).version().await.expect_err("nobody listens");
    assert!(matches!(err, WhmError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
}

/// The client against the simulated WHM host over HTTPS with its self-signed certificate: the
/// pin is the way to trust it, web PKI refuses it, and the token must be right.
#[tokio::test]
async fn the_client_talks_to_a_simulated_host_over_pinned_https() {
    use siirto::sim::{SimHostSpec, SimWorld, generate_accounts, start_host};
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let mut spec = SimHostSpec::new("tls.sim.test", std::net::Ipv4Addr::new(127, 0, 0, 9), "sim-token");
    spec.tls = true;
    spec.accounts = generate_accounts(5, "pin");
    let host = start_host(spec, dir.path().to_owned(), &world).await.unwrap();
    assert_eq!(host.whm_url.scheme(), "https");
    let pin = host.cert_sha256.expect("an HTTPS sim host has a certificate fingerprint");
    let timeout = Duration::from_secs(10);

    let pinned =
        WhmClient::new(host.whm_url.clone(), Secret::new("sim-token"), TlsPolicy::PinSha256(pin), timeout)
            .unwrap();
    assert!(!pinned.version().await.unwrap().is_empty());
    let accounts = pinned.list_accounts().await.unwrap();
    assert_eq!(accounts.items.len(), 5);
    assert!(accounts.rejected.is_empty(), "{:?}", accounts.rejected);

    let web_pki =
        WhmClient::new(host.whm_url.clone(), Secret::new("sim-token"), TlsPolicy::WebPki, timeout).unwrap();
    let err = web_pki.version().await.unwrap_err();
    assert!(matches!(err, WhmError::Tls { .. }) && !err.is_transient(), "{err:?}");

    let wrong_token =
        WhmClient::new(host.whm_url.clone(), Secret::new("nope"), TlsPolicy::PinSha256(pin), timeout)
            .unwrap();
    let err = wrong_token.version().await.unwrap_err();
    assert!(matches!(err, WhmError::Auth { .. }) && !err.is_transient(), "{err:?}");
    assert!(!format!("{err:?} {err}").contains("sim-token"));
}

/// A config whose token file holds the wrong token, against the simulated WHM host: the
/// refusal names the URL called (without its query) and the file to fix, never the token,
/// for WHM API 1 calls and cPanel API 2 calls through WHM alike.
#[tokio::test]
async fn a_refused_token_names_the_url_and_the_token_file() {
    use siirto::sim::{SimHostSpec, SimWorld, generate_accounts, start_host};
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let mut spec = SimHostSpec::new("old.sim.test", std::net::Ipv4Addr::new(127, 0, 0, 2), "right-token");
    spec.accounts = generate_accounts(1, "tok");
    let host = start_host(spec, dir.path().join("old"), &world).await.unwrap();
    let token_file = dir.path().join("old.token");
    std::fs::write(&token_file, "wrong-whm-token\n").unwrap();
    std::fs::write(dir.path().join("pdns.key"), "key").unwrap();
    let text = format!(
        "database = \"sqlite:s.db\"\n\
         [hosts.old]\nwhm_url = \"{}\"\ntoken_file = \"old.token\"\nip = \"127.0.0.2\"\n\
         [dns]\nprovider = \"powerdns\"\napi_url = \"http://127.0.0.1:9\"\napi_key_file = \"pdns.key\"\nnameservers = [\"127.0.0.1:9\"]\n\
         [mail]\nfrom = \"support@example.fi\"\nchannel = \"directory\"\npath = \"outbox\"\n",
        host.whm_url
    );
    let config = siirto::config::Config::parse(&text, "siirto.toml", dir.path()).expect("config");
    let adapters = siirto::world::World::from_config(&config).expect("world");
    let whm = &adapters.hosts["old"].whm;
    let user = siirto::names::AccountName::parse("tok0000").unwrap();
    let domain = siirto::names::DomainName::parse("tok0000.fi").unwrap();
    let expected_end = format!(
        "it rejected the token in token_file ({}); check the token and its ACL",
        token_file.display()
    );
    for (err, path) in [
        (whm.list_accounts().await.unwrap_err(), "json-api/listaccts"),
        (whm.mail_routing(&user, &domain).await.unwrap_err(), "json-api/cpanel"),
    ] {
        assert!(matches!(err, WhmError::Auth { status: 403, .. }) && !err.is_transient(), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains(&format!(" {}{path}: ", host.whm_url)), "{shown}");
        assert!(shown.ends_with(&expected_end), "{shown}");
        assert!(!shown.contains('?'), "no query in the message: {shown}");
        assert!(!format!("{shown}{err:?}").contains("wrong-whm-token"), "{shown}");
    }
}

/// `parse_dns_zone` through the client against the simulated host: the account's zone as cPanel
/// keeps it (template names, the account's own extra names, its subdomains), base64 decoded,
/// owners absolute and validated; names that are not host names are set aside with the line;
/// an unknown zone is WHM's failure naming it.
#[tokio::test]
async fn parse_dns_zone_reads_the_accounts_zone_from_the_simulated_host() {
    use siirto::names::DomainName;
    use siirto::sim::{SimHostSpec, SimWorld, generate_accounts, start_host};
    let dir = tempfile::tempdir().unwrap();
    let world = SimWorld::new();
    let mut spec = SimHostSpec::new("zone.sim.test", std::net::Ipv4Addr::new(127, 0, 0, 2), "sim-token");
    let mut accounts = generate_accounts(3, "zone");
    accounts[0].extra_hosts = vec!["shop".into(), "portal.intra".into()];
    accounts[0].sub_domains = vec![DomainName::parse(&format!("blog.{}", accounts[0].domain)).unwrap()];
    spec.accounts = accounts.clone();
    let host = start_host(spec, dir.path().to_owned(), &world).await.unwrap();
    let client = WhmClient::new(
        host.whm_url.clone(),
        Secret::new("sim-token"),
        TlsPolicy::WebPki,
        Duration::from_secs(10),
    )
    .unwrap();
    let domain = accounts[0].domain.clone();
    let zone = client.parse_dns_zone(&domain).await.unwrap();
    let labels: Vec<String> = zone.host_labels_under(&domain).into_iter().collect();
    for expected in ["www", "mail", "ftp", "webmail", "cpanel", "shop", "portal.intra", "blog", "www.blog"] {
        assert!(labels.iter().any(|l| l == expected), "{expected} missing from {labels:?}");
    }
    let apex_a = zone.records.iter().find(|r| r.name == domain && r.rtype == "A").expect("the site's A");
    assert_eq!(apex_a.data, ["127.0.0.2"]);
    let mx = zone.records.iter().find(|r| r.rtype == "MX").expect("an MX");
    assert_eq!(mx.data, ["0".to_owned(), domain.fqdn()]);
    assert!(zone.skipped.iter().any(|s| s.contains("_cpanel-dcv-test-record")), "{:?}", zone.skipped);
    // The blog's names are under the subdomain, read from its parent's zone.
    let blog = DomainName::parse(&format!("blog.{domain}")).unwrap();
    assert_eq!(zone.host_labels_under(&blog).into_iter().collect::<Vec<_>>(), ["www"]);
    // Another account's zone has none of the first one's extra names.
    let other = client.parse_dns_zone(&accounts[1].domain).await.unwrap();
    assert!(!other.host_labels_under(&accounts[1].domain).contains("shop"));

    let missing = DomainName::parse("not-here.test").unwrap();
    let err = client.parse_dns_zone(&missing).await.unwrap_err();
    assert!(matches!(err, WhmError::Failed { .. }), "{err:?}");
    assert!(err.to_string().contains("not-here.test"), "{err}");
}
