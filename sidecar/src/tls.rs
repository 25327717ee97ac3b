//! Optional TLS for the HTTP and gRPC servers (`server.tls`), with optional client
//! certificates. The files are read and parsed when the configuration is loaded, so a
//! missing or malformed file is a configuration error, reported before anything is
//! attached.

use std::{path::PathBuf, sync::Arc};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::{Deserialize, Deserializer, de::Error as _};
use tokio_rustls::rustls;

/// The server's certificate chain and key, and the CA that client certificates must chain
/// to (mutual TLS) when given. All PEM.
#[derive(Clone)]
pub struct TlsFiles {
    cert_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
    client_ca_pem: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsPaths {
    cert: PathBuf,
    key: PathBuf,
    #[serde(default)]
    client_ca: Option<PathBuf>,
}

fn read(path: &std::path::Path, what: &str) -> Result<Arc<[u8]>, String> {
    crate::files::read_regular(path, crate::files::MAX_PEM_BYTES)
        .map(Arc::from)
        .map_err(|err| format!("cannot read {what} {}: {err}", path.display()))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|err| format!("{what}: not PEM certificates: {err}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no certificate in it"));
    }
    Ok(certs)
}

impl TlsFiles {
    fn load(paths: &TlsPaths) -> Result<TlsFiles, String> {
        let files = TlsFiles {
            cert_pem: read(&paths.cert, "certificate")?,
            key_pem: read(&paths.key, "key")?,
            client_ca_pem: paths
                .client_ca
                .as_deref()
                .map(|p| read(p, "client CA"))
                .transpose()?,
        };
        // Parse now: errors belong to the configuration, not to the first connection.
        files.rustls_config()?;
        Ok(files)
    }

    /// A rustls server configuration for the HTTP server.
    pub fn rustls_config(&self) -> Result<rustls::ServerConfig, String> {
        let certs = certificates(&self.cert_pem, "tls.cert")?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|err| format!("tls.key: not a PEM private key: {err}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("TLS: {err}"))?;
        let builder = match &self.client_ca_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(pem, "tls.client_ca")? {
                    roots
                        .add(cert)
                        .map_err(|err| format!("tls.client_ca: {err}"))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|err| format!("tls.client_ca: {err}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|err| format!("tls.cert/tls.key: {err}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The same for the gRPC server.
    pub fn tonic_config(&self) -> tonic::transport::ServerTlsConfig {
        let identity = tonic::transport::Identity::from_pem(&*self.cert_pem, &*self.key_pem);
        let config = tonic::transport::ServerTlsConfig::new().identity(identity);
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(tonic::transport::Certificate::from_pem(&**ca)),
            None => config,
        }
    }
}

impl<'de> Deserialize<'de> for TlsFiles {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let paths = TlsPaths::deserialize(deserializer)?;
        TlsFiles::load(&paths).map_err(D::Error::custom)
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves: HTTP/1.1 only, one
/// task per connection; a failed handshake ends that connection and nothing else.
pub async fn serve_https(
    mut listener: crate::conn::GuardedListener,
    router: axum::Router,
    config: rustls::ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::pin!(shutdown);
    loop {
        // The guard bounds the connections and the handshake's time, and waits out accept
        // errors.
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
