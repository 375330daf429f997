//! The simulated host's HTTP(S) accept loop, with a way for a handler to drop its connection.

use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// Put into every request's extensions: notifying it closes the request's connection without
/// an answer (the `Drop` fault).
#[derive(Clone, Debug)]
pub(crate) struct ConnKill(pub(crate) Arc<Notify>);

/// A self-signed certificate for `hostname`, 127.0.0.1 and localhost, as a rustls server
/// configuration, and the SHA-256 of the certificate's DER.
pub(crate) fn self_signed_tls(hostname: &str) -> Result<(Arc<rustls::ServerConfig>, [u8; 32])> {
    let names = vec![hostname.to_owned(), "127.0.0.1".to_owned(), "localhost".to_owned()];
    let certified =
        rcgen::generate_simple_self_signed(names).context("generating a self-signed certificate")?;
    let cert_der = certified.cert.der().clone();
    let digest: [u8; 32] = Sha256::digest(cert_der.as_ref()).into();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        certified.key_pair.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key)
        .context("TLS server certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), digest))
}

/// Accepts connections until the task is aborted; aborting it also closes every open
/// connection (they live in a `JoinSet` owned by this future).
pub(crate) async fn serve(listener: TcpListener, router: Router, tls: Option<Arc<rustls::ServerConfig>>) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "simulated host: accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => serve_connection(TokioIo::new(tls_stream), router).await,
                    Err(error) => {
                        tracing::debug!(%error, %peer, "simulated host: TLS handshake failed")
                    }
                },
                None => serve_connection(TokioIo::new(stream), router).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, router: Router)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let kill = Arc::new(Notify::new());
    let handle = ConnKill(kill.clone());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        let mut router = router.clone();
        async move { tower::Service::call(&mut router, request).await }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::trace!(%error, "simulated host: connection ended with an error");
            }
        }
        () = kill.notified() => {}
    }
}
