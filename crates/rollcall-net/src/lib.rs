//! Every socket of rollcall, and nothing else: the MQTT session, the
//! embedded MQTT broker, the UDP roll-call sockets, STUN address discovery,
//! the dashboard's HTTP listener and shutdown signals. Payloads are plain bytes here; what they mean is
//! `rollcall-proto`'s business.

mod broker;
mod error;
mod http;
mod login;
mod mqtt;
mod passwords;
mod secret;
mod shutdown;
pub mod stun;
mod udp;
mod url;

pub use broker::{
    BrokerOptions, DEFAULT_EMBEDDED_BROKER, EMBEDDED_BROKER_BUILT_IN, EmbeddedBroker,
    MAX_RETAINED_BYTES, MAX_RETAINED_MESSAGES, ServerTls,
};
pub use error::NetError;
pub use http::http_listener;
pub use login::{Credentials, Login, LoginSettings, TlsFiles};
pub use mqtt::{
    MAX_INCOMING_PACKET, Message, Qos, Session, SessionConfig, SessionHandle, SessionStats, Will,
};
pub use passwords::PasswordFile;
pub use secret::Secret;
pub use shutdown::{ctrl_c_token, wait_for_signal};
pub use stun::{StunResponder, decode_binding_response, discover_external_addr};
pub use udp::{RollCallSocket, interface_broadcasts, local_addr_towards};
pub use url::{BrokerList, BrokerUrl, MQTT_PORT, MQTTS_PORT};
