//! Certificates made for a test (rcgen): CAs, and the certificates they
//! sign for 127.0.0.1, written as PEM files. Also compiled into keel's own
//! unit tests (`src/tls/tests.rs`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority, its certificate in `dir/{name}-ca.pem`.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate's file.
    pub(crate) cert: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub(crate) struct Issued {
    /// The certificate's file.
    pub(crate) cert: PathBuf,
    /// The private key's file.
    pub(crate) key: PathBuf,
}

impl Ca {
    /// A new CA named `name`, written under `dir`.
    pub(crate) fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = dir.join(format!("{name}-ca.pem"));
        let pem = params.self_signed(&key).expect("a CA certificate").pem();
        std::fs::write(&cert, pem).expect("writing the CA certificate");
        Ca {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// A certificate with Common Name `name` for 127.0.0.1 and localhost,
    /// good for serving and for connecting, written under `dir` as
    /// `{name}.pem` and `{name}-key.pem` (replacing any earlier ones).
    pub(crate) fn issue(&self, dir: &Path, name: &str) -> Issued {
        let key = KeyPair::generate().expect("a key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("a certificate");
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("writing a key");
        issued
    }
}
