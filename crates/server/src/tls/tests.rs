//! The TLS layer in-process: a verified client certificate's Common Name
//! reaches the request, reloaded files take effect on the next connection,
//! and unusable files are named.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::extract::Request;
use tonic::service::Routes;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server};

use super::*;

#[path = "../../tests/common/certs.rs"]
mod certs;
use certs::{Ca, Issued};

/// Serves `GET /who` (the request's Common Name, `-` without one, and
/// whether its remote address is known) on a port with `tls`.
async fn serve(tls: &TlsFiles) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let who = |request: Request| async move {
        let name = request.extensions().get::<ClientCommonName>();
        let remote = request.extensions().get::<TcpConnectInfo>();
        format!(
            "{} {}",
            name.map_or("-", |n| n.0.as_str()),
            remote.and_then(|r| r.remote_addr()).is_some()
        )
    };
    let routes = Routes::from(axum::Router::new().route("/who", axum::routing::get(who)));
    let serving = PortTls::load(Some(tls)).unwrap().serving;
    let incoming = accept(TcpIncoming::from(listener), serving);
    let server = Server::builder()
        .accept_http1(true)
        .layer(ConnectionInfoLayer)
        .add_routes(routes)
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    address
}

/// Asks `GET /who` over TLS trusting `ca`, presenting `identity`.
async fn who(address: SocketAddr, ca: &Path, identity: Option<&Issued>) -> Result<String, String> {
    let pem = |path: &Path| std::fs::read(path).unwrap();
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem(ca)));
    if let Some(issued) = identity {
        tls = tls.identity(Identity::from_pem(pem(&issued.cert), pem(&issued.key)));
    }
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let request = http::Request::get("/who")
        .body(tonic::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(channel, request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 1024)
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_verified_client_certificates_common_name_reaches_each_request() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue(dir.path(), "server");
    let alice = ca.issue(dir.path(), "alice");
    let address = serve(&TlsFiles {
        cert: server.cert,
        key: server.key,
        trusted_ca: Some(ca.cert.clone()),
        client_cert_auth: true,
    })
    .await;
    assert_eq!(
        who(address, &ca.cert, Some(&alice)).await.unwrap(),
        "alice true"
    );
    assert_eq!(
        who(address, &ca.cert, Some(&alice)).await.unwrap(),
        "alice true"
    );

    // Without a certificate, or with one of another CA: refused.
    assert!(who(address, &ca.cert, None).await.is_err());
    let mallory = Ca::new(dir.path(), "rogue").issue(dir.path(), "mallory");
    assert!(who(address, &ca.cert, Some(&mallory)).await.is_err());
    assert_eq!(
        who(address, &ca.cert, Some(&alice)).await.unwrap(),
        "alice true"
    );
}

#[tokio::test]
async fn without_client_cert_auth_no_name_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let server = ca.issue(dir.path(), "server");
    let alice = ca.issue(dir.path(), "alice");
    let address = serve(&TlsFiles {
        cert: server.cert,
        key: server.key,
        trusted_ca: None,
        client_cert_auth: false,
    })
    .await;
    assert_eq!(
        who(address, &ca.cert, Some(&alice)).await.unwrap(),
        "- true"
    );
    assert_eq!(who(address, &ca.cert, None).await.unwrap(), "- true");
}

#[tokio::test]
async fn renewed_files_are_used_by_the_next_connection_and_broken_ones_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new(dir.path(), "old"), Ca::new(dir.path(), "new"));
    let server = old_ca.issue(dir.path(), "server");
    let address = serve(&TlsFiles {
        cert: server.cert.clone(),
        key: server.key.clone(),
        trusted_ca: None,
        client_cert_auth: false,
    })
    .await;
    assert!(who(address, &old_ca.cert, None).await.is_ok());
    assert!(who(address, &new_ca.cert, None).await.is_err());

    // The same files, now signed by the new CA.
    new_ca.issue(dir.path(), "server");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(who(address, &new_ca.cert, None).await.is_ok());
    assert!(who(address, &old_ca.cert, None).await.is_err());

    // A broken file keeps the settings in use.
    std::fs::write(&server.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(who(address, &new_ca.cert, None).await.is_ok());
}

#[test]
fn unusable_files_are_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let one = ca.issue(dir.path(), "one");
    let two = ca.issue(dir.path(), "two");
    let files = TlsFiles {
        cert: one.cert.clone(),
        key: one.key.clone(),
        trusted_ca: Some(ca.cert.clone()),
        client_cert_auth: true,
    };
    files.server_config().unwrap();
    files.client_config().unwrap();
    let err = |files: TlsFiles| {
        let server = format!("{:#}", files.server_config().unwrap_err());
        let client = format!("{:#}", files.client_config().unwrap_err());
        assert_eq!(server, client);
        server
    };
    let missing = dir.path().join("missing.pem");
    let e = err(TlsFiles {
        cert: missing.clone(),
        ..files.clone()
    });
    assert!(
        e.contains(&format!("reading certificate file {}", missing.display())),
        "{e}"
    );
    let e = err(TlsFiles {
        key: one.cert.clone(),
        ..files.clone()
    });
    assert!(
        e.contains(&format!("{} holds no PEM private key", one.cert.display())),
        "{e}"
    );
    let e = err(TlsFiles {
        trusted_ca: Some(one.key.clone()),
        ..files.clone()
    });
    assert!(
        e.contains(&format!("{} holds no PEM certificate", one.key.display())),
        "{e}"
    );
    let e = format!(
        "{:#}",
        TlsFiles {
            key: two.key.clone(),
            ..files.clone()
        }
        .server_config()
        .unwrap_err()
    );
    assert!(
        e.contains("do not make a usable certificate and key"),
        "{e}"
    );
}

#[test]
fn the_common_name_is_read_from_the_subject() {
    let dir = tempfile::tempdir().unwrap();
    let issued = Ca::new(dir.path(), "ca").issue(dir.path(), "bob");
    let pem = std::fs::read(&issued.cert).unwrap();
    let der = tokio_rustls::rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let der: tokio_rustls::rustls::pki_types::CertificateDer<'_> = der;
    assert_eq!(
        ClientCommonName::of(&der),
        Some(ClientCommonName("bob".into()))
    );
    assert_eq!(ClientCommonName::of(b"garbage"), None);
}
