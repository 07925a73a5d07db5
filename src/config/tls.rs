//! The TLS listener's configuration: certificates, keys and tokens read and
//! checked when the configuration is, so that a bad one stops xenithd with
//! the key named (exit 2), not later.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The shortest bearer token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// `[tls]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients presenting a certificate signed by this CA need no login.
    pub client_ca: Option<PathBuf>,
    /// Bearer tokens for `session.login`, one per line.
    pub tokens_file: Option<PathBuf>,
}

/// What the listener runs with.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    pub listen: SocketAddr,
    pub server: Arc<rustls::ServerConfig>,
    pub tokens: Arc<Vec<String>>,
}

/// A problem with one key of `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsKeyError {
    pub key: &'static str,
    pub message: String,
}

fn bad(key: &'static str, message: impl Into<String>) -> TlsKeyError {
    TlsKeyError {
        key,
        message: message.into(),
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsKeyError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(bad(
            key,
            format!("{}: no PEM certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

/// Reads a tokens file: one per line, `#` comments; it must not be
/// readable by others.
fn tokens(path: &Path) -> Result<Vec<String>, TlsKeyError> {
    let key = "tls.tokens_file";
    let meta = std::fs::metadata(path).map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(bad(
            key,
            format!(
                "{} is readable or writable by others (chmod o-rwx)",
                path.display()
            ),
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(key, format!("{}: {e}", path.display())))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if let Some(short) = tokens.iter().position(|t| t.len() < MIN_TOKEN_LEN) {
        return Err(bad(
            key,
            format!(
                "token on non-comment line {} is shorter than {MIN_TOKEN_LEN} characters",
                short + 1
            ),
        ));
    }
    if tokens.is_empty() {
        return Err(bad(key, format!("{}: no token in it", path.display())));
    }
    Ok(tokens)
}

impl TlsConfig {
    /// Reads the certificates, key and tokens and builds the server side.
    pub fn load(&self) -> Result<TlsSetup, TlsKeyError> {
        let chain = certs("tls.cert", &self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| bad("tls.key", format!("{}: {e}", self.key.display())))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| bad("tls.cert", e.to_string()))?;
        let tokens = match &self.tokens_file {
            Some(p) => tokens(p)?,
            None => Vec::new(),
        };
        let builder =
            match &self.client_ca {
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for c in certs("tls.client_ca", ca)? {
                        roots
                            .add(c)
                            .map_err(|e| bad("tls.client_ca", e.to_string()))?;
                    }
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    );
                    // With tokens, a client may come without a certificate and log in.
                    let verifier = if tokens.is_empty() {
                        verifier
                    } else {
                        verifier.allow_unauthenticated()
                    };
                    builder.with_client_cert_verifier(
                        verifier
                            .build()
                            .map_err(|e| bad("tls.client_ca", e.to_string()))?,
                    )
                }
                None if tokens.is_empty() => return Err(bad(
                    "tls.client_ca",
                    "neither client_ca nor tokens_file is set: no client could be authenticated",
                )),
                None => builder.with_no_client_auth(),
            };
        let server = builder
            .with_single_cert(chain, key)
            .map_err(|e| bad("tls.key", format!("{}: {e}", self.key.display())))?;
        Ok(TlsSetup {
            listen: self.listen,
            server: Arc::new(server),
            tokens: Arc::new(tokens),
        })
    }
}

/// Compares a presented token with the configured ones in time that does
/// not depend on where they differ.
pub fn token_matches(tokens: &[String], presented: &str) -> bool {
    token_index(tokens, presented).is_some()
}

/// Which configured token (1 for the first) `presented` is, compared with
/// every one in time that does not depend on where they differ: what the
/// audit log names a token login by (never the token itself).
pub fn token_index(tokens: &[String], presented: &str) -> Option<usize> {
    let mut found = None;
    for (i, t) in tokens.iter().enumerate() {
        let (a, b) = (t.as_bytes(), presented.as_bytes());
        let mut diff = a.len() ^ b.len();
        for j in 0..a.len().max(b.len()) {
            diff |= usize::from(a.get(j).copied().unwrap_or(0) ^ b.get(j).copied().unwrap_or(0));
        }
        if diff == 0 && found.is_none() {
            found = Some(i + 1);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::{token_index, token_matches};

    #[test]
    fn tokens_match_exactly() {
        let t = vec!["0123456789abcdef".to_owned(), "fedcba9876543210".to_owned()];
        assert!(token_matches(&t, "fedcba9876543210"));
        assert!(!token_matches(&t, "fedcba987654321"));
        assert!(!token_matches(&t, "fedcba98765432100"));
        assert!(!token_matches(&t, ""));
        assert!(!token_matches(&[], "x"));
        assert_eq!(token_index(&t, "fedcba9876543210"), Some(2));
    }
}
