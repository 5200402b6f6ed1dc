//! Test certificates made at test time: a CA, a server certificate it
//! signed for `127.0.0.1`, `::1` and `localhost`, and a client certificate
//! it signed, all as PEM files in a folder the test owns. Nothing is kept
//! in the repository, so nothing expires there, and each test gets its
//! own CA (a certificate from one test's CA is refused by another's).
//!
//! rcgen runs on ring, as rollcall's TLS does: no aws-lc-rs, no cmake.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::SupportError;

/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// The client certificate's common name.
pub const CLIENT_NAME: &str = "rollcall-test-client";

/// PEM files of one test CA and the two certificates it signed. Keys are
/// PKCS#8 (`-----BEGIN PRIVATE KEY-----`, ECDSA P-256), which rustls,
/// Mosquitto (OpenSSL) and rumqttd all read.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate: what a client trusts (`--ca-file`, Mosquitto's
    /// `cafile`).
    pub ca: PathBuf,
    /// The CA's private key (to sign more, or for a broker that checks
    /// client certificates it needs only `ca`).
    pub ca_key: PathBuf,
    /// The server certificate, for [`SERVER_NAMES`].
    pub server_cert: PathBuf,
    /// Its private key.
    pub server_key: PathBuf,
    /// The client certificate, common name [`CLIENT_NAME`].
    pub client_cert: PathBuf,
    /// Its private key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// Makes a CA, a server and a client certificate and writes them into
    /// `dir` (which must exist) as `ca.pem`, `ca.key`, `server.pem`,
    /// `server.key`, `client.pem` and `client.key`.
    pub fn new(dir: &Path) -> Result<TestPki, SupportError> {
        let pki = TestPki {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        };

        let ca_key = KeyPair::generate().map_err(rcgen_error("CA key"))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error("CA parameters"))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rollcall test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)
            .map_err(rcgen_error("CA certificate"))?;
        write(&pki.ca, &ca.pem())?;
        write(&pki.ca_key, &ca.key().serialize_pem())?;

        let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
        let (cert, key) = leaf(names, "localhost", ExtendedKeyUsagePurpose::ServerAuth, &ca)?;
        write(&pki.server_cert, &cert)?;
        write(&pki.server_key, &key)?;

        let (cert, key) = leaf(
            Vec::new(),
            CLIENT_NAME,
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        )?;
        write(&pki.client_cert, &cert)?;
        write(&pki.client_key, &key)?;
        Ok(pki)
    }
}

/// A certificate signed by `ca`, and its new key, both as PEM.
fn leaf(
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> Result<(String, String), SupportError> {
    let key = KeyPair::generate().map_err(rcgen_error("key"))?;
    let mut params = CertificateParams::new(names).map_err(rcgen_error("parameters"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let cert = params
        .signed_by(&key, ca)
        .map_err(rcgen_error(common_name))?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(path: &Path, pem: &str) -> Result<(), SupportError> {
    std::fs::write(path, pem).map_err(SupportError::io(format!("writing {}", path.display())))
}

fn rcgen_error(what: &str) -> impl FnOnce(rcgen::Error) -> SupportError {
    let what = what.to_owned();
    move |e| SupportError::Certificate(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_six_pem_files_that_differ_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let first = TestPki::new(dir.path()).unwrap();
        for (path, label) in [
            (&first.ca, "CERTIFICATE"),
            (&first.server_cert, "CERTIFICATE"),
            (&first.client_cert, "CERTIFICATE"),
            (&first.ca_key, "PRIVATE KEY"),
            (&first.server_key, "PRIVATE KEY"),
            (&first.client_key, "PRIVATE KEY"),
        ] {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(
                text.starts_with(&format!("-----BEGIN {label}-----")),
                "{}: {text}",
                path.display()
            );
        }
        let ca = std::fs::read_to_string(&first.ca).unwrap();
        let other = tempfile::tempdir().unwrap();
        let second = TestPki::new(other.path()).unwrap();
        assert_ne!(ca, std::fs::read_to_string(&second.ca).unwrap());
    }
}
