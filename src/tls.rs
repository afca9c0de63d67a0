//! Which certificate authorities origin-watch trusts, for probes, discovery
//! and API calls alike: the Mozilla roots (webpki-roots), the system's store
//! (`rustls-native-certs`, which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`,
//! so a TLS-intercepting corporate proxy's CA installed on the host works),
//! and the one optional PEM bundle of `ca_file:`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why `ca_file:` cannot be used. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("ca_file: cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("ca_file: {path} is not a PEM bundle: {cause}")]
    Pem { path: PathBuf, cause: String },
    #[error("ca_file: {path} holds no certificate (expected `-----BEGIN CERTIFICATE-----` blocks)")]
    Empty { path: PathBuf },
    #[error("cannot build the TLS settings: {0}")]
    Tls(String),
}

/// Why an HTTP client (probes, discovery, the API, the webhook) could not
/// be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// reqwest's error, boxed so that its type stays with the client that
    /// uses it.
    #[error("cannot build the HTTP client")]
    Build(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Build(Box::new(e))
    }
}

/// The extra trust of a config: the certificates of `ca_file:`, if any.
/// The Mozilla roots and the system store are always trusted too.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    extra: Arc<Vec<CertificateDer<'static>>>,
}

/// The system store, read once per process (it does not change under us,
/// and reading a big `/etc/ssl/certs` for every client would be slow).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in found.errors.iter().take(3) {
            tracing::debug!(error = %e, "a system CA certificate could not be read; the Mozilla roots still apply");
        }
        found.certs
    })
}

impl Trust {
    /// The Mozilla roots and the system store only.
    pub fn system() -> Trust {
        Trust::default()
    }

    /// Also trusts the certificates of the PEM bundle at `path`.
    pub fn with_ca_file(path: &Path) -> Result<Trust, TrustError> {
        let bytes =
            crate::files::read_text(path, 16 * 1024 * 1024).map_err(|cause| TrustError::Read {
                path: path.to_owned(),
                cause,
            })?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bytes.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TrustError::Pem {
                path: path.to_owned(),
                cause: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TrustError::Empty {
                path: path.to_owned(),
            });
        }
        let mut store = rustls::RootCertStore::empty();
        for c in &certs {
            store.add(c.clone()).map_err(|e| TrustError::Pem {
                path: path.to_owned(),
                cause: e.to_string(),
            })?;
        }
        Ok(Trust {
            extra: Arc::new(certs),
        })
    }

    /// Trusts `certs` too (tests: a self-signed certificate).
    pub fn with_certs(certs: Vec<CertificateDer<'static>>) -> Trust {
        Trust {
            extra: Arc::new(certs),
        }
    }

    /// Every root trusted: Mozilla's, the system's and the extra ones.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // A system certificate rustls cannot parse is skipped, not fatal.
        roots.add_parsable_certificates(system_roots().iter().cloned());
        roots.add_parsable_certificates(self.extra.iter().cloned());
        roots
    }

    /// A rustls client config over [`Trust::roots`], offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TrustError> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Tls(e.to_string()))?
        .with_root_certificates(self.roots())
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// A reqwest builder that trusts these roots (HTTP/2 and HTTP/1.1 offered).
    pub fn reqwest_builder(&self) -> Result<reqwest::ClientBuilder, TrustError> {
        let config = self.client_config(&[b"h2", b"http/1.1"])?;
        Ok(reqwest::Client::builder().use_preconfigured_tls(config))
    }
}
