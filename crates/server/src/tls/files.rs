//! One port's certificate, key and trusted CA, read from PEM files, and the
//! rustls (serving) and tonic (dialing) settings built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The ALPN protocols a port offers: gRPC and the gateway over HTTP/2,
/// the gateway, metrics and the admin API over HTTP/1.1 too.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// One port's TLS files, as etcd's flags name them (`--cert-file`,
/// `--key-file`, `--trusted-ca-file`, `--client-cert-auth`, and their
/// `--peer-` forms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    /// The certificate chain this member presents (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates (PEM) that sign the other side's certificates.
    pub trusted_ca: Option<PathBuf>,
    /// Whether connecting clients must present a certificate the trusted
    /// CA signed (checked at the handshake).
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// The files the settings are built from, to watch for changes.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.cert), Some(&self.key), self.trusted_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// The serving side: this certificate, ALPN `h2` and `http/1.1`, and
    /// with `client_cert_auth`, a client certificate signed by the trusted
    /// CA required at the handshake.
    pub(crate) fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("choosing TLS protocol versions")?;
        let builder = if self.client_cert_auth {
            let Some(ca) = &self.trusted_ca else {
                bail!("client certificate auth needs a trusted CA file");
            };
            let roots = Arc::new(roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .with_context(|| format!("trusting the CA certificates of {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let certs = certificates(&self.cert, &read(&self.cert, "certificate file")?)?;
        let key = private_key(&self.key, &read(&self.key, "key file")?)?;
        let mut config = builder.with_single_cert(certs, key).with_context(|| {
            format!(
                "{} and {} do not make a usable certificate and key",
                self.cert.display(),
                self.key.display()
            )
        })?;
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The dialing side (tonic), for reaching other members: this
    /// certificate as the client's, the trusted CA as the only roots
    /// (without one, no server certificate is trusted).
    pub(crate) fn client_config(&self) -> anyhow::Result<ClientTlsConfig> {
        let cert = read(&self.cert, "certificate file")?;
        let key = read(&self.key, "key file")?;
        // Parsed here for a clear error now; tonic parses them again.
        certificates(&self.cert, &cert)?;
        private_key(&self.key, &key)?;
        let mut config = ClientTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.trusted_ca {
            let pem = read(ca, "trusted CA file")?;
            roots_in(ca, &pem)?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        Ok(config)
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// The certificates of a PEM file's contents; at least one.
fn certificates(path: &Path, pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// The first private key of a PEM file's contents.
fn private_key(path: &Path, pem: &[u8]) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .with_context(|| format!("{} holds no PEM private key", path.display()))
}

/// The trusted CA certificates of the file at `path`.
fn roots(path: &Path) -> anyhow::Result<RootCertStore> {
    roots_in(path, &read(path, "trusted CA file")?)
}

fn roots_in(path: &Path, pem: &[u8]) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates(path, pem)?);
    if added == 0 {
        bail!("{} holds no usable CA certificate", path.display());
    }
    Ok(roots)
}
