//! Verification's site comparison: one domain's site fetched from the source and from the
//! target by address, with the domain as `Host` (and, over HTTPS, as SNI), comparing the status
//! code and the `<title>`. Plain HTTP uses the engine's client; HTTPS uses a client of its own
//! that does not verify certificates ([`unverified_site_client`]) and is used for nothing else.

use std::error::Error as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use tracing::warn;

use crate::names::DomainName;

/// What a site answered: the evidence compared between source and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SiteAnswer {
    pub(crate) status: u16,
    pub(crate) title: Option<String>,
}

/// `GET http://ip:port/` with `Host: domain`.
pub(crate) async fn fetch_site(
    http: &reqwest::Client,
    ip: Ipv4Addr,
    port: u16,
    domain: &DomainName,
    timeout: Duration,
) -> anyhow::Result<SiteAnswer> {
    let url = format!("http://{ip}:{port}/");
    let response = http
        .get(&url)
        .header(reqwest::header::HOST, domain.as_str())
        .timeout(timeout)
        .send()
        .await
        .with_context(|| format!("GET {url} (Host: {domain})"))?;
    let status = response.status().as_u16();
    let body = response.text().await.with_context(|| format!("reading {url} (Host: {domain})"))?;
    Ok(SiteAnswer { status, title: html_title(&body) })
}

/// The text of the first `<title>` element, whitespace folded.
pub(crate) fn html_title(body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    let start = lower.find("<title")?;
    let open_end = lower[start..].find('>')? + start + 1;
    let close = lower[open_end..].find("</title>")? + open_end;
    Some(body[open_end..close].split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The client for one HTTPS comparison fetch: `domain` resolves to `addr` (so the request
/// carries the domain as SNI and `Host` while reaching the host we name), redirects are not
/// followed, and **the certificate is not verified**.
///
/// Why not verified: the check asks whether the target serves the same site as the source
/// (issue 5: "HTTPS without trusting the certificate for this check"). Before the cutover the
/// target's certificate for the domain is often not issued yet (AutoSSL runs once DNS points
/// at it), and the source's may be self-signed or expired; neither says anything about the
/// site. This client is built here, used for that one comparison fetch and dropped: nothing
/// else (no API, no credential) ever goes through it.
fn unverified_site_client(
    domain: &DomainName,
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(domain.as_str(), addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .context("building the HTTPS comparison client")
}

/// How one HTTPS fetch went.
#[derive(Debug)]
enum HttpsFetch {
    Answered(SiteAnswer),
    /// The connection was refused: nothing listens for HTTPS there.
    Refused(anyhow::Error),
    Failed(anyhow::Error),
}

/// `GET https://domain:port/` reaching `ip`, certificate not verified.
async fn fetch_site_https(ip: Ipv4Addr, port: u16, domain: &DomainName, timeout: Duration) -> HttpsFetch {
    let url = format!("https://{domain}:{port}/");
    let client = match unverified_site_client(domain, SocketAddr::from((ip, port)), timeout) {
        Ok(client) => client,
        Err(err) => return HttpsFetch::Failed(err),
    };
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(err) => {
            let refused = connection_refused(&err);
            let err = anyhow::Error::new(err).context(format!("GET {url} at {ip}"));
            return if refused { HttpsFetch::Refused(err) } else { HttpsFetch::Failed(err) };
        }
    };
    let status = response.status().as_u16();
    match response.text().await {
        Ok(body) => HttpsFetch::Answered(SiteAnswer { status, title: html_title(&body) }),
        Err(err) => HttpsFetch::Failed(anyhow::Error::new(err).context(format!("reading {url} at {ip}"))),
    }
}

/// True if the error's cause is a refused TCP connection.
fn connection_refused(err: &reqwest::Error) -> bool {
    let mut cause = err.source();
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Compares `domain` over HTTPS at the source and at the target; `Some(evidence)` on a
/// mismatch, naming both answers. A source that refuses HTTPS has no HTTPS site to compare
/// with: skipped, with a warning. A source that fails otherwise is no reason to keep the
/// customer on it when the target answers with a success (as over HTTP).
pub(crate) async fn compare_https(
    source: (Ipv4Addr, u16),
    target: (Ipv4Addr, u16),
    domain: &DomainName,
    timeout: Duration,
) -> Option<String> {
    let source_answer = fetch_site_https(source.0, source.1, domain, timeout).await;
    if let HttpsFetch::Refused(err) = &source_answer {
        warn!(%domain, error = %format!("{err:#}"), "source does not answer HTTPS; HTTPS comparison skipped");
        return None;
    }
    let target_answer = fetch_site_https(target.0, target.1, domain, timeout).await;
    match (source_answer, target_answer) {
        (HttpsFetch::Answered(s), HttpsFetch::Answered(t)) if s == t => None,
        (HttpsFetch::Answered(s), HttpsFetch::Answered(t)) => Some(format!(
            "{domain} over HTTPS: source answered {} {:?}, target answered {} {:?}",
            s.status, s.title, t.status, t.title
        )),
        (HttpsFetch::Answered(s), HttpsFetch::Refused(err) | HttpsFetch::Failed(err)) => Some(format!(
            "{domain} over HTTPS: source answered {} {:?}, target failed ({err:#})",
            s.status, s.title
        )),
        (HttpsFetch::Failed(err), HttpsFetch::Answered(t)) if (200..400).contains(&t.status) => {
            warn!(%domain, error = %format!("{err:#}"), "source did not answer HTTPS; target answers");
            None
        }
        (HttpsFetch::Failed(err), HttpsFetch::Answered(t)) => {
            Some(format!("{domain} over HTTPS: source unreachable ({err:#}), target answered {}", t.status))
        }
        (
            HttpsFetch::Failed(source_err),
            HttpsFetch::Refused(target_err) | HttpsFetch::Failed(target_err),
        ) => Some(format!(
            "{domain} over HTTPS: source unreachable ({source_err:#}), target failed ({target_err:#})"
        )),
        (HttpsFetch::Refused(_), _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles() {
        assert_eq!(html_title("<html><head><TITLE>\n Kukka  Oy </title>"), Some("Kukka Oy".into()));
        assert_eq!(html_title("<p>no title</p>"), None);
    }

    #[tokio::test]
    async fn a_closed_port_is_told_apart_as_refused() {
        // Bind then drop a listener: its port on loopback refuses connections.
        let port = {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let domain = DomainName::parse("kukka.example").expect("domain");
        let fetched = fetch_site_https(Ipv4Addr::LOCALHOST, port, &domain, Duration::from_secs(5)).await;
        assert!(matches!(fetched, HttpsFetch::Refused(_)), "{fetched:?}");
    }
}
