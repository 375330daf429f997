//! WHM API 1 client: inventory and transfer-session calls against a cPanel host.

/// How the WHM server's TLS certificate is checked. Verification is never switched off:
/// either the certificate chains to a public root (the default), or it is the one pinned
/// certificate (cPanel hosts often run a self-signed certificate on port 2087).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// Verify against the web PKI roots and the host name.
    #[default]
    WebPki,
    /// Accept exactly the certificate whose DER encoding has this SHA-256 digest.
    PinSha256([u8; 32]),
}
