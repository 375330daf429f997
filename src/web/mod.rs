//! The status page, the JSON API, the metrics and the health checks, served by the daemon on
//! `listen` (loopback by default).
//!
//! Every route is one entry of [`routes`], and the router is built from that table only, with
//! the guard ([`auth::guard`]) in front of all of them: a route is public only when the table
//! says so, and anything but GET needs the operator role and, from a browser, the CSRF token.
//! `tests/it/web.rs` walks the same table with each kind of credential. The page's handlers
//! ([`pages`]) and the API's ([`api`]) read the queries `siirto status` reads and act through
//! the same [`crate::ops`] functions the CLI calls ([`actions`]); [`live`] is the server-sent
//! event feed the pages update from.

pub mod actions;
pub mod api;
pub mod auth;
pub mod i18n;
pub mod live;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use crate::config::Config;
use crate::engine::Clock;
use crate::store::Store;
use crate::world::World;

pub use auth::{Access, Principal};

/// What every handler shares.
#[derive(Clone)]
pub struct App {
    /// The store.
    pub store: Store,
    /// The hosts the operator actions reach.
    pub world: Arc<World>,
    /// Who may do what.
    pub access: Arc<Access>,
    /// The time operator actions are recorded at.
    pub clock: Arc<dyn Clock>,
    /// Where people reach the page, when configured.
    pub public_url: Option<String>,
    /// The page's and the API's reads at once: fewer than the store's connections, so a crowd
    /// of readers cannot keep the engine's steps from the database.
    pub reads: Arc<tokio::sync::Semaphore>,
}

/// How many page and API requests read the store at once (the pool has 8 connections on
/// SQLite, 10 on PostgreSQL).
pub const CONCURRENT_READS: usize = 4;

impl App {
    /// The app of `config`, on `store`.
    pub fn new(config: &Config, store: Store, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
        Ok(App {
            store,
            world: Arc::new(World::from_config(config)?),
            access: Arc::new(Access::from_config(&config.web)),
            clock,
            public_url: config.web.public_url.clone(),
            reads: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_READS)),
        })
    }
}

/// One route: method, path (axum's syntax) and whether it is open without a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path, with `{name}` parameters.
    pub path: &'static str,
    /// Open to anyone (the health checks, the login form, the style sheet and script).
    pub public: bool,
}

/// Every route of the router, with its handler.
fn table() -> Vec<(Route, MethodRouter<App>)> {
    let open = |method: Method, path: &'static str, handler: MethodRouter<App>| {
        (Route { method, path, public: true }, handler)
    };
    let closed = |method: Method, path: &'static str, handler: MethodRouter<App>| {
        (Route { method, path, public: false }, handler)
    };
    vec![
        open(Method::GET, "/healthz", get(healthz)),
        open(Method::GET, "/readyz", get(readyz)),
        open(Method::GET, "/login", get(pages::login_form)),
        open(Method::POST, "/login", post(pages::login)),
        open(Method::GET, "/static/{file}", get(pages::asset)),
        closed(Method::POST, "/logout", post(pages::logout)),
        closed(Method::GET, "/metrics", get(metrics)),
        closed(Method::GET, "/", get(pages::index)),
        closed(Method::GET, "/search", get(pages::search)),
        closed(Method::GET, "/m/{id}", get(pages::overview)),
        closed(Method::GET, "/m/{id}/a/{user}", get(pages::timeline)),
        closed(Method::POST, "/m/{id}/pause", post(pages::pause)),
        closed(Method::POST, "/m/{id}/resume", post(pages::resume)),
        closed(Method::POST, "/m/{id}/abort", post(pages::abort)),
        closed(Method::POST, "/m/{id}/a/{user}/retry", post(pages::retry)),
        closed(Method::POST, "/m/{id}/a/{user}/rollback", post(pages::rollback)),
        closed(Method::POST, "/m/{id}/a/{user}/assign-ip", post(pages::assign_ip)),
        closed(Method::POST, "/m/{id}/tasks/{task}/ack", post(pages::ack)),
        closed(Method::POST, "/m/{id}/decommission/{stage}/postpone", post(pages::postpone_stage)),
        closed(Method::POST, "/m/{id}/decommission/{stage}/skip", post(pages::skip_stage)),
        closed(Method::POST, "/m/{id}/decommission/{stage}/undo", post(pages::undo_stage)),
        closed(Method::GET, "/live/{id}", get(live::feed)),
        closed(Method::GET, "/api/v1/openapi.json", get(api::openapi)),
        closed(Method::GET, "/api/v1/migrations", get(api::migrations)),
        closed(Method::GET, "/api/v1/migrations/{id}", get(api::migration)),
        closed(Method::GET, "/api/v1/migrations/{id}/progress", get(api::progress)),
        closed(Method::GET, "/api/v1/migrations/{id}/events", get(api::events)),
        closed(Method::GET, "/api/v1/migrations/{id}/notices", get(api::notices)),
        closed(Method::GET, "/api/v1/migrations/{id}/accounts/{user}", get(api::timeline)),
        closed(Method::GET, "/api/v1/search", get(api::search)),
        closed(Method::POST, "/api/v1/migrations/{id}/pause", post(api::pause)),
        closed(Method::POST, "/api/v1/migrations/{id}/resume", post(api::resume)),
        closed(Method::POST, "/api/v1/migrations/{id}/abort", post(api::abort)),
        closed(Method::POST, "/api/v1/migrations/{id}/accounts/{user}/retry", post(api::retry)),
        closed(Method::POST, "/api/v1/migrations/{id}/accounts/{user}/rollback", post(api::rollback)),
        closed(Method::POST, "/api/v1/migrations/{id}/accounts/{user}/assign-ip", post(api::assign_ip)),
        closed(Method::POST, "/api/v1/migrations/{id}/tasks/{task}/ack", post(api::ack)),
        closed(Method::GET, "/api/v1/tasks", get(api::tasks)),
        closed(Method::GET, "/api/v1/migrations/{id}/decommission", get(api::decommission)),
        closed(
            Method::POST,
            "/api/v1/migrations/{id}/decommission/{stage}/postpone",
            post(api::postpone_stage),
        ),
        closed(Method::POST, "/api/v1/migrations/{id}/decommission/{stage}/skip", post(api::skip_stage)),
        closed(Method::POST, "/api/v1/migrations/{id}/decommission/{stage}/undo", post(api::undo_stage)),
    ]
}

/// Every route the router serves (what the access test walks).
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(route, _)| route).collect()
}

/// Whether the route at `path` (axum's matched path) answers `method` without a token.
pub fn is_public(method: &Method, path: &str) -> bool {
    // HEAD is answered by a GET route.
    let method = if method == Method::HEAD { Method::GET } else { method.clone() };
    PUBLIC.iter().any(|(m, p)| *m == method.as_str() && *p == path)
}

/// The public routes (checked against [`table`] by a unit test).
const PUBLIC: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/static/{file}"),
];

/// The router: every route of the table behind the guard.
pub fn router(app: App) -> Router {
    let mut router = Router::new();
    for (route, handler) in table() {
        router = router.route(route.path, handler);
    }
    router
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), read_limit))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth::guard))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(app)
}

/// Page and API requests take a turn from [`App::reads`] (the live feed, which holds its
/// connection open and reads a few rows a poll, and the health checks do not).
async fn read_limit(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let free =
        path.starts_with("/live/") || matches!(path, "/healthz" | "/readyz") || path.starts_with("/static/");
    if free {
        return next.run(request).await;
    }
    let Ok(_turn) = app.reads.clone().acquire_owned().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    };
    next.run(request).await
}

/// Headers every answer carries: no framing, no sniffing, scripts and styles only our own.
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    };
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "x-frame-options", "DENY");
    set(headers, "referrer-policy", "same-origin");
    set(
        headers,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    );
    response
}

/// Whether a read failed because what it asked for is not there (no such migration or
/// account): a 404, not the store's failure.
pub fn is_not_found(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<crate::store::StoreError>(),
        Some(crate::store::StoreError::NoMigration { .. } | crate::store::StoreError::NotFound { .. })
    )
}

/// The API answers every error in JSON (`{"error": "…"}`), also those of the guard and of
/// axum's extractors (a body that is not JSON, a missing parameter), as its document says.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || json || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text =
        axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let error = text.unwrap_or_default();
    let error =
        if error.is_empty() { parts.status.canonical_reason().unwrap_or("error").to_owned() } else { error };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    let body = serde_json::json!({ "error": error }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(app).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The store answers and its schema is current.
async fn readyz(State(app): State<App>) -> Response {
    match app.store.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {err}\n")).into_response(),
    }
}

/// The Prometheus text of the daemon's metrics.
async fn metrics(State(app): State<App>) -> Response {
    let now = crate::domain::to_millis(app.clock.now());
    match app.store.gauges(now).await {
        Ok(gauges) => {
            ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::render(&gauges))
                .into_response()
        }
        Err(err) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("the store did not answer: {err}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_routes_are_in_the_table_and_nothing_else_is_public() {
        for (method, path) in PUBLIC {
            assert!(
                routes().iter().any(|r| r.method.as_str() == *method && r.path == *path && r.public),
                "{method} {path}"
            );
        }
        for route in routes() {
            assert_eq!(route.public, is_public(&route.method, route.path), "{} {}", route.method, route.path);
        }
        let mut seen = std::collections::BTreeSet::new();
        for route in routes() {
            assert!(
                seen.insert((route.method.to_string(), route.path)),
                "{} {} twice",
                route.method,
                route.path
            );
        }
    }
}
