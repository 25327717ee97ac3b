//! A test PKI as PEM files: a CA, and a server and a client certificate it signed for
//! `localhost` and 127.0.0.1, in a directory removed on drop. The files are what the
//! sidecar's configuration names (`ca.pem`, `server.pem`, `server.key`, `client.pem`,
//! `client.key`); the PEM text is kept for clients built in the test.

use std::{
    io,
    path::{Path, PathBuf},
};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA's certificate.
    pub ca: String,
    pub server: Pem,
    pub client: Pem,
}

impl TestPki {
    pub fn new() -> io::Result<TestPki> {
        let dir = tempfile::tempdir()?;
        let ca_key = KeyPair::generate().map_err(io::Error::other)?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(io::Error::other)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params
            .self_signed(&ca_key)
            .map_err(io::Error::other)?
            .pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let sign = |name: &str| -> io::Result<Pem> {
            let key = KeyPair::generate().map_err(io::Error::other)?;
            let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(io::Error::other)?
                .signed_by(&key, &issuer)
                .map_err(io::Error::other)?;
            let pem = Pem {
                cert: cert.pem(),
                key: key.serialize_pem(),
            };
            std::fs::write(dir.path().join(format!("{name}.pem")), &pem.cert)?;
            std::fs::write(dir.path().join(format!("{name}.key")), &pem.key)?;
            Ok(pem)
        };
        let server = sign("server")?;
        let client = sign("client")?;
        std::fs::write(dir.path().join("ca.pem"), &ca)?;
        Ok(TestPki {
            dir,
            ca,
            server,
            client,
        })
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// One of the files, such as `server.key`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file() {
        let pki = TestPki::new().expect("pki");
        for name in [
            "ca.pem",
            "server.pem",
            "server.key",
            "client.pem",
            "client.key",
        ] {
            let text = std::fs::read_to_string(pki.path(name)).expect(name);
            assert!(text.starts_with("-----BEGIN "), "{name}");
        }
        assert_eq!(
            std::fs::read_to_string(pki.path("ca.pem")).expect("ca"),
            pki.ca
        );
    }
}
