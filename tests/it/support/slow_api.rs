//! A slow PowerDNS, as the daemon sees it: an HTTP proxy on loopback in front of a real
//! `pdns_server`'s API that forwards every request at once and holds each PATCH's answer back
//! for a while (the change is made; the answer is late, as from a server busy with a big zone
//! or a database lock). Every PATCH that reached PowerDNS is logged with its zone and body, so
//! a test counts from outside which changes were written, and how often.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use reqwest::Url;

/// One PATCH PowerDNS answered.
#[derive(Debug, Clone)]
pub struct Patch {
    /// The zone, from the path (`kukka-0001.test.`).
    pub zone: String,
    /// The request body (PowerDNS's `{"rrsets": [...]}`).
    pub body: serde_json::Value,
    /// PowerDNS's answer (204 when the change was made).
    pub status: u16,
}

/// The running proxy; stops with the test's runtime.
pub struct SlowApi {
    /// The URL to give siirto as `api_url`.
    pub url: Url,
    patches: Arc<Mutex<Vec<Patch>>>,
    upstream: Arc<Mutex<Option<Url>>>,
}

#[derive(Clone)]
struct Proxy {
    /// PowerDNS's API, once [`SlowApi::forward_to`] named it.
    upstream: Arc<Mutex<Option<Url>>>,
    client: reqwest::Client,
    delay: Duration,
    patches: Arc<Mutex<Vec<Patch>>>,
}

impl SlowApi {
    /// Starts the proxy, answering each PATCH `delay` after PowerDNS did; it forwards once
    /// [`SlowApi::forward_to`] names PowerDNS's API (until then it answers 502), so its URL can
    /// go into a config before PowerDNS runs.
    pub async fn start(delay: Duration) -> SlowApi {
        let patches = Arc::new(Mutex::new(Vec::new()));
        let upstream = Arc::new(Mutex::new(None));
        let proxy = Proxy {
            upstream: Arc::clone(&upstream),
            client: reqwest::Client::new(),
            delay,
            patches: Arc::clone(&patches),
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the slow API proxy");
        let addr = listener.local_addr().expect("proxy address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlowApi { url: Url::parse(&format!("http://{addr}/")).expect("proxy URL"), patches, upstream }
    }

    /// Forwards from now on to `upstream` (PowerDNS's API base URL).
    pub fn forward_to(&self, upstream: Url) {
        *self.upstream.lock().expect("upstream") = Some(upstream);
    }

    /// The PATCHes PowerDNS answered so far, in the order it made them.
    pub fn patches(&self) -> Vec<Patch> {
        self.patches.lock().expect("patch log").clone()
    }
}

async fn forward(
    State(proxy): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).trim_start_matches('/');
    let upstream = proxy.upstream.lock().expect("upstream").clone();
    let Some(Ok(url)) = upstream.map(|u| u.join(path)) else {
        return (StatusCode::BAD_GATEWAY, "no PowerDNS to forward to").into_response();
    };
    let mut request = proxy.client.request(method.clone(), url).body(body.clone());
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    };
    let status = answer.status();
    let content_type = answer.headers().get("content-type").cloned();
    let bytes = answer.bytes().await.unwrap_or_default();
    if method == Method::PATCH {
        let zone = uri.path().rsplit('/').next().unwrap_or_default().to_owned();
        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let patch = Patch { zone, body, status: status.as_u16() };
        proxy.patches.lock().expect("patch log").push(patch);
        tokio::time::sleep(proxy.delay).await;
    }
    let mut response =
        (StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY), bytes).into_response();
    if let Some(content_type) = content_type
        && let Ok(value) = axum::http::HeaderValue::from_bytes(content_type.as_bytes())
    {
        response.headers_mut().insert("content-type", value);
    }
    response
}
