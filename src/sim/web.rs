//! The simulated host's "Apache": serves each account's sites by `Host` header from the real
//! document roots, with cPanel's default page for unknown hosts and its suspended page. The
//! same router serves plain HTTP and HTTPS (TLS is ended by the accept loop in `serve`).

use std::net::Ipv4Addr;
use std::path::{Component, Path as FsPath};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Host, accounts};
use crate::names::DomainName;

/// The router of the listener on `listen_ip`: a site is served on its account's address only
/// (its dedicated IP, or the host's shared one), as Apache's IP-based virtual hosts do.
/// `https`: the listener is the HTTPS one (where [`super::SimHost::serve_https_page`] applies).
pub(crate) fn router(host: Arc<Host>, listen_ip: Ipv4Addr, https: bool) -> Router {
    Router::new().fallback(site).with_state(Listener { host, ip: listen_ip, https })
}

/// One web listener: the host, the address it listens on, and whether it is the HTTPS one.
#[derive(Clone)]
struct Listener {
    host: Arc<Host>,
    ip: Ipv4Addr,
    https: bool,
}

const DEFAULT_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Default Web Site Page</title></head>\n\
<body><h1>Sorry!</h1><p>If you are the owner of this website, please contact your hosting provider.</p>\n\
<p>It is possible you have reached this page because the domain is not served by this server.</p></body></html>\n";

const SUSPENDED_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Account Suspended</title></head>\n\
<body><h1>Account Suspended</h1><p>This Account has been suspended.</p>\n\
<p>Contact your hosting provider for more information.</p></body></html>\n";

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn content_type(path: &FsPath) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The directory of the per-site access logs, as cPanel keeps them
/// (`/usr/local/apache/domlogs`): `<data_dir>/usr/local/apache/domlogs`.
pub(crate) fn domlogs_dir(data_dir: &FsPath) -> std::path::PathBuf {
    data_dir.join("usr").join("local").join("apache").join("domlogs")
}

/// Serves a request and, when it reached one of the host's sites (suspended ones too), appends
/// it to that site's access log in Apache's combined format, as cPanel's Apache does:
/// `domlogs/<domain>` for HTTP, `domlogs/<domain>-ssl_log` for HTTPS.
async fn site(State(listener): State<Listener>, request: Request) -> Response {
    let method = request.method().to_string();
    let target = request.uri().path().to_owned();
    let agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .replace('"', "'");
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "127.0.0.1".to_owned(), |info| info.0.ip().to_string());
    let (host, https) = (listener.host.clone(), listener.https);
    let (response, served) = respond(listener, request).await;
    if let Some(served) = served {
        let name = if https { format!("{}-ssl_log", served.as_str()) } else { served.as_str().to_owned() };
        let stamp = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S %z");
        let status = response.status().as_u16();
        let line =
            format!("{client} - - [{stamp}] \"{method} {target} HTTP/1.1\" {status} - \"-\" \"{agent}\"\n");
        let dir = domlogs_dir(&host.data_dir);
        let written = async {
            tokio::fs::create_dir_all(&dir).await?;
            let mut file =
                tokio::fs::OpenOptions::new().create(true).append(true).open(dir.join(name)).await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, line.as_bytes()).await
        };
        if let Err(err) = written.await {
            tracing::warn!(error = %err, "simulated host: could not write the access log");
        }
    }
    response
}

/// The response to a request, and the site (domain) it reached, if any.
async fn respond(listener: Listener, request: Request) -> (Response, Option<DomainName>) {
    let host = listener.host;
    let raw_host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = raw_host.rsplit_once(':').map_or(raw_host, |(name, _)| name);
    let Ok(domain) = DomainName::parse(name) else {
        return (html(StatusCode::NOT_FOUND, DEFAULT_PAGE.to_owned()), None);
    };
    let bare = domain
        .as_str()
        .strip_prefix("www.")
        .and_then(|d| DomainName::parse(d).ok())
        .unwrap_or_else(|| domain.clone());

    let (docroot, served) = {
        let state = host.state();
        let found = state
            .accounts
            .values()
            .filter(|r| r.spec.dedicated_ip.unwrap_or(host.ip) == listener.ip)
            .find_map(|record| {
                let spec = &record.spec;
                spec.all_domains()
                    .find(|d| **d == domain || **d == bare)
                    .map(|d| (record.suspended.is_some(), spec.clone(), d.clone()))
            });
        match found {
            None => return (html(StatusCode::NOT_FOUND, DEFAULT_PAGE.to_owned()), None),
            Some((true, _, served)) => {
                return (html(StatusCode::OK, SUSPENDED_PAGE.to_owned()), Some(served));
            }
            Some((false, _, served)) if listener.https && state.https_pages.contains_key(&served) => {
                return (html(StatusCode::OK, state.https_pages[&served].clone()), Some(served));
            }
            Some((false, spec, served)) => {
                let home = accounts::home_dir(&host.data_dir, &spec.user);
                (accounts::docroot_in(&home, &spec, &served), served)
            }
        }
    };

    // Only plain path components: no "..", no absolute jumps, no encoded tricks.
    let path = request.uri().path();
    let mut file = docroot.clone();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let component = FsPath::new(part);
        let plain = matches!(component.components().collect::<Vec<_>>().as_slice(), [Component::Normal(_)]);
        if !plain || part.contains('%') || part.contains('\\') {
            return (html(StatusCode::NOT_FOUND, not_found_page(path)), Some(served));
        }
        file.push(part);
    }
    if path.ends_with('/') || file == docroot {
        file.push("index.html");
    }
    let response = match tokio::fs::read(&file).await {
        Ok(bytes) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type(&file))], bytes).into_response(),
        Err(_) => html(StatusCode::NOT_FOUND, not_found_page(path)),
    };
    (response, Some(served))
}

fn not_found_page(path: &str) -> String {
    let shown: String =
        path.chars().filter(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c)).take(200).collect();
    format!(
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>\
         <p>The requested URL {shown} was not found on this server.</p></body></html>\n"
    )
}
