//! How a session logs in to its broker: user name and password, and for
//! `mqtts://` the TLS files (the CA to trust, an optional client
//! certificate). The TLS client is rustls on the `ring` provider, chosen
//! because it cross-compiles for every Raspberry Pi without cmake
//! (aws-lc-rs, rustls' default, needs it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::{BrokerUrl, NetError, Secret};

/// A user name and its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The MQTT user name.
    pub username: String,
    /// The password; never printed.
    pub password: Secret<String>,
}

impl Credentials {
    /// `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: Secret::new(password.into()),
        }
    }
}

/// The files of a TLS connection, read when a session to an `mqtts://`
/// broker starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates to trust; without it, the system's trusted roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that require one.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any file is named.
    pub fn is_empty(&self) -> bool {
        self == &TlsFiles::default()
    }

    /// Checks what can be checked before connecting: the client certificate
    /// and key come together, and every file named can be read and holds
    /// what it should.
    pub fn check(&self) -> Result<(), NetError> {
        self.client_config().map(drop)
    }

    /// The rustls client configuration these files make. The broker's
    /// name (or IP address) is checked against its certificate by rustls.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, NetError> {
        let client_auth = match (&self.client_cert, &self.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((certificates(cert)?, private_key(key)?)),
            _ => {
                return Err(NetError::InvalidConfig(
                    "a client certificate needs its key, and a key its certificate",
                ));
            }
        };
        let roots = match &self.ca_file {
            Some(path) => roots_from(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match client_auth {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| NetError::Tls(format!("client certificate and key: {e}")))?,
        };
        Ok(Arc::new(config))
    }
}

/// How to log in: everything but the broker's address and the client id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Login {
    /// User name and password, if the broker wants them.
    pub credentials: Option<Credentials>,
    /// TLS files, used for `mqtts://` brokers only.
    pub tls: TlsFiles,
}

impl Login {
    /// What may go with a connection to a broker other than our own (a
    /// relay): the CA to trust, and no credential at all, neither password
    /// nor client certificate.
    pub fn for_another_broker(&self) -> Login {
        Login {
            credentials: None,
            tls: TlsFiles {
                ca_file: self.tls.ca_file.clone(),
                client_cert: None,
                client_key: None,
            },
        }
    }
}

/// A login as a user writes it, in a configuration file or on the command
/// line, before it is checked against the broker it is for.
#[derive(Debug, Clone, Default)]
pub struct LoginSettings {
    /// The user name.
    pub username: Option<String>,
    /// The password itself...
    pub password: Option<Secret<String>>,
    /// ...or a file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// TLS files, for an `mqtts://` broker.
    pub tls: TlsFiles,
}

impl LoginSettings {
    /// The login for `broker`: the password read from its file, and the TLS
    /// files read and checked if the broker is `mqtts://`. Settings that
    /// could never be used are refused rather than ignored: a password with
    /// no user name, two passwords, a client certificate for a broker
    /// without TLS.
    pub fn resolve(self, broker: &BrokerUrl) -> Result<Login, NetError> {
        let refuse = |key: &'static str, reason: &str| NetError::Login {
            key,
            reason: reason.to_owned(),
        };
        let password = match (self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(refuse(
                    "password_file",
                    "give a password or a password file, not both",
                ));
            }
            (Some(password), None) => Some(password),
            (None, Some(path)) => Some(Secret::from_file(path)?),
            (None, None) => None,
        };
        let credentials = match (self.username, password) {
            (Some(username), password) => Some(Credentials {
                username,
                password: password.unwrap_or_else(|| Secret::new(String::new())),
            }),
            (None, Some(_)) => return Err(refuse("password", "given without a user name")),
            (None, None) => None,
        };
        if broker.tls {
            self.tls.check()?;
        } else if self.tls.client_cert.is_some() || self.tls.client_key.is_some() {
            return Err(refuse(
                "client_cert",
                "a client certificate is for an mqtts:// broker, and this broker is not one",
            ));
        }
        Ok(Login {
            credentials,
            tls: self.tls,
        })
    }
}

pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let bad = |reason: String| NetError::TlsFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, NetError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| NetError::TlsFile {
        path: path.to_owned(),
        reason: format!("no PEM private key: {e}"),
    })
}

fn roots_from(path: &Path) -> Result<RootCertStore, NetError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots.add(cert).map_err(|e| NetError::TlsFile {
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, NetError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(NetError::Tls(
            "no trusted CA certificates on this system; give a CA file".into(),
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_get_the_ca_and_no_credential() {
        let ours = Login {
            credentials: Some(Credentials::new("agent", "secret")),
            tls: TlsFiles {
                ca_file: Some("/ca.pem".into()),
                client_cert: Some("/me.pem".into()),
                client_key: Some("/me.key".into()),
            },
        };
        let relay = ours.for_another_broker();
        assert_eq!(relay.credentials, None);
        assert_eq!(relay.tls.ca_file, ours.tls.ca_file);
        assert_eq!((relay.tls.client_cert, relay.tls.client_key), (None, None));
    }

    #[test]
    fn settings_that_could_never_be_used_are_refused() {
        let plain = BrokerUrl::new("127.0.0.1", 1883);
        let both = LoginSettings {
            username: Some("u".into()),
            password: Some(Secret::new("p".into())),
            password_file: Some("/p".into()),
            ..LoginSettings::default()
        };
        let no_user = LoginSettings {
            password: Some(Secret::new("p".into())),
            ..LoginSettings::default()
        };
        let cert_without_tls = LoginSettings {
            tls: TlsFiles {
                client_cert: Some("/c.pem".into()),
                client_key: Some("/c.key".into()),
                ..TlsFiles::default()
            },
            ..LoginSettings::default()
        };
        for (settings, needle) in [
            (both, "not both"),
            (no_user, "without a user name"),
            (cert_without_tls, "mqtts://"),
        ] {
            let error = settings.resolve(&plain).unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
        }
        let user_only = LoginSettings {
            username: Some("u".into()),
            ..LoginSettings::default()
        };
        let login = user_only.resolve(&plain).unwrap();
        assert_eq!(login.credentials, Some(Credentials::new("u", "")));
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("rollcall-login-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let missing = dir.join("missing.pem");
        for (files, needle) in [
            (
                TlsFiles {
                    ca_file: Some(not_pem.clone()),
                    ..TlsFiles::default()
                },
                "ca.pem",
            ),
            (
                TlsFiles {
                    ca_file: Some(missing.clone()),
                    ..TlsFiles::default()
                },
                "missing.pem",
            ),
            (
                TlsFiles {
                    client_cert: Some(not_pem.clone()),
                    ..TlsFiles::default()
                },
                "needs its key",
            ),
        ] {
            let error = files.check().unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
