//! How every command logs in to its broker: the user name and password
//! (flag, environment or file) and, for `mqtts://`, the TLS files. One set
//! of flags, flattened into each subcommand, so `hub`, `scan`, `docs`,
//! `get`, `set`, `demo` and `agent` all spell them alike.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rollcall_agent::RawConfig;
use rollcall_net::{
    BrokerList, BrokerUrl, Login, LoginSettings, Qos, Secret, SessionConfig, TlsFiles,
};

/// The login flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoginArgs {
    /// MQTT user name.
    #[arg(long, env = "ROLLCALL_USERNAME")]
    pub username: Option<String>,
    /// MQTT password. Prefer the environment variable or --password-file:
    /// other users of the machine can read a command line.
    #[arg(long, env = "ROLLCALL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Read the MQTT password from this file (its first line). It takes the
    /// place of --password and ROLLCALL_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// For an mqtts:// broker: the CA certificates (PEM) to trust instead
    /// of the system's. The broker's certificate must name the host in the URL.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// For an mqtts:// broker that asks for one: the client certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// The highest QoS to subscribe with: 1 (the default) or 0, for a NATS
    /// cluster, where a QoS 1 subscription is a JetStream consumer that is
    /// slow to set up again after a node dies (docs/deploying.md).
    #[arg(long, value_name = "0|1", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub subscribe_qos: Option<u8>,
}

impl LoginArgs {
    /// The login for `broker`, its files read and checked now so that a
    /// mistake is reported before anything connects.
    pub fn login(&self, broker: &BrokerUrl) -> Result<Login> {
        LoginSettings {
            username: self.username.clone(),
            password: self.password().map(Secret::new),
            password_file: self.password_file.clone(),
            tls: self.tls_files(),
        }
        .resolve(broker)
        .with_context(|| format!("logging in to {broker}"))
    }

    /// A session to `brokers` (tried in turn) as `client_id`, logged in as
    /// these flags say: the same login to each of them, and to no other.
    pub fn session(&self, brokers: &BrokerList, client_id: String) -> Result<SessionConfig> {
        Ok(SessionConfig {
            login: self.login(brokers.first())?,
            max_subscribe_qos: self.max_subscribe_qos(),
            ..SessionConfig::for_brokers(brokers, client_id)
        })
    }

    /// `--subscribe-qos`, QoS 1 unless 0 is given.
    pub fn max_subscribe_qos(&self) -> Qos {
        match self.subscribe_qos {
            Some(0) => Qos::AtMostOnce,
            _ => Qos::AtLeastOnce,
        }
    }

    /// Puts each flag given over the same key of an agent's configuration.
    pub fn apply_to(&self, raw: &mut RawConfig) {
        let given = self.clone();
        raw.username = given.username.or(raw.username.take());
        // One password source: a flag's replaces the file's, either kind.
        if given.password.is_some() || given.password_file.is_some() {
            raw.password = self.password();
            raw.password_file = given.password_file;
        }
        raw.ca_file = given.ca_file.or(raw.ca_file.take());
        raw.client_cert = given.client_cert.or(raw.client_cert.take());
        raw.client_key = given.client_key.or(raw.client_key.take());
        raw.subscribe_qos = given.subscribe_qos.or(raw.subscribe_qos.take());
    }

    /// The password given as such, unless a file is given: a file named
    /// on the command line wins over a password in the environment.
    fn password(&self) -> Option<String> {
        match self.password_file {
            Some(_) => None,
            None => self.password.clone(),
        }
    }

    fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        }
    }
}
