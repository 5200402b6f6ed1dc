//! Every built-in service as a state machine that does no I/O: it describes
//! itself, answers `get`, `set` and `control` requests, and on each tick says
//! what to publish. The agent owns the sockets and the clock and feeds them in.
//!
//! One trait, [`Service`], is all the agent knows of a service, so a new
//! service is a new implementation and nothing else changes.

use std::time::Duration;

use rollcall_proto::json::Object;
use rollcall_proto::{Body, Description, Health, ProtoError, Topics};
use serde_json::Value;
use thiserror::Error;

pub mod ain;
pub mod announce;
pub mod bme280;
pub mod channels;
pub mod dac;
pub mod dht22;
pub mod display;
pub mod gpio;
pub mod sensor;
pub mod sonar;
pub mod system;

/// What a service knows of where it runs, handed in with every call.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The host's name.
    pub host: &'a str,
    /// The deployment's topics.
    pub topics: &'a Topics,
    /// Wall-clock time, unix milliseconds.
    pub now_ms: u64,
}

/// One MQTT message a service wants sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Publish {
    /// Where.
    pub topic: String,
    /// What.
    pub payload: Vec<u8>,
    /// Whether the broker keeps it for late subscribers.
    pub retain: bool,
}

impl Publish {
    /// A retained reading `{"value":..,"unit":..,"ts":..}`, the shape every sensor value has.
    pub fn reading(topic: String, value: Value, unit: Option<&str>, ts: u64) -> Self {
        let mut map = Object::new();
        map.insert("value".into(), value);
        if let Some(unit) = unit {
            map.insert("unit".into(), unit.into());
        }
        map.insert("ts".into(), ts.into());
        Publish {
            topic,
            payload: serde_json::to_vec(&map).unwrap_or_default(),
            retain: true,
        }
    }
}

/// What a `set` or `control` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Fields for the `{"ok":true,...}` answer.
    pub reply: Object,
    /// Messages to send because of it (new states).
    pub publish: Vec<Publish>,
    /// The self-description changed and must be re-published.
    pub description_changed: bool,
    /// The service's saved state changed and must be persisted.
    pub persist: bool,
}

/// Why a request was refused. The message goes to the requester verbatim
/// (`err.to_string()` is the MQTT error answer), so each variant renders the
/// same text the service has always sent; the variants, and the errors they
/// wrap, are for callers that need to tell one refusal from another, and a
/// hardware failure keeps its [`rollcall_hw::HwError`] as its source.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The payload itself was malformed.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The item named in the topic does not exist.
    #[error("unknown item `{0}`")]
    UnknownItem(String),
    /// A `set` whose topic names no item: the topic it should have used.
    #[error("name the item to set: {topic}")]
    NoItem {
        /// The topic with its `{item}` placeholder, `/{host}/{app}/set/{item}`.
        topic: String,
    },
    /// The service has nothing that can be set this way.
    #[error("`{0}` is not supported by this service")]
    Unsupported(&'static str),
    /// The hardware failed.
    #[error("hardware: {0}")]
    Hardware(#[from] rollcall_hw::HwError),
    /// The GPIO service refused a request or a configuration.
    #[error(transparent)]
    Gpio(#[from] gpio::GpioError),
    /// A reading service refused a configuration, or a read failed.
    #[error(transparent)]
    Sensor(#[from] sensor::SensorError),
    /// The DAC service refused a value or a configuration.
    #[error(transparent)]
    Dac(#[from] dac::DacError),
    /// The display service refused what it was sent.
    #[error(transparent)]
    Display(#[from] display::DisplayError),
    /// The system service refused a configuration.
    #[error(transparent)]
    System(#[from] system::SystemError),
    /// A request to the agent's simulated hardware that it cannot act on.
    #[error(transparent)]
    Sim(#[from] SimError),
}

/// A request on the agent's simulated hardware (`/{host}/sim/...`, under
/// `--sim`) that it cannot act on. The simulator answers on the service's
/// error topic, so its refusals are [`ServiceError`]s too.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SimError {
    /// A pin in the topic that is not a pin number.
    #[error("`{0}`: not a pin")]
    NotAPin(String),
    /// A count of reads to fail that is not 1 to 1000.
    #[error("a count of reads to fail, 1 to 1000")]
    FailCount,
}

/// A configuration that does not fit its type (an unknown key, a value of
/// the wrong type), with where: the path in it, `configuration` for the
/// whole of it.
#[derive(Debug, Error)]
#[error("{path}: {source}")]
pub struct ShapeError {
    /// Where, as `channels[1].channel`.
    pub path: String,
    /// What `serde` found there.
    #[source]
    pub source: serde_json::Error,
}

/// Reads a configuration from JSON with `serde_path_to_error`, so that an
/// error says where.
pub(crate) fn config_from_json<T: serde::de::DeserializeOwned>(
    value: Value,
) -> Result<T, ShapeError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "configuration".to_owned()
        } else {
            path
        };
        ShapeError {
            path,
            source: e.into_inner(),
        }
    })
}

/// A built-in service.
pub trait Service: Send + Sync {
    /// Its name in topics (`/{host}/{name}/...`) and in `getapps`.
    fn name(&self) -> &str;

    /// Its self-description, as it is now.
    fn describe(&self, ctx: &Ctx<'_>) -> Description;

    /// Its health now: what its description carries. The agent compares it
    /// before and after every call, and re-publishes the description when
    /// it changed.
    fn health(&self) -> Option<Health>;

    /// The current value(s) of `item`; an empty item means everything.
    fn get(&mut self, item: &str, ctx: &Ctx<'_>) -> Result<Value, ServiceError>;

    /// Sets `item`. Services with nothing to set keep this default.
    fn set(&mut self, _item: &str, _body: &Body, _ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        Err(ServiceError::Unsupported("set"))
    }

    /// Replaces the configuration, whole or not at all.
    fn control(&mut self, _body: &Body, _ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        Err(ServiceError::Unsupported("control"))
    }

    /// How often [`Service::tick`] wants to run; `None` for never.
    fn tick_every(&self) -> Option<Duration> {
        None
    }

    /// Periodic work: readings to publish.
    fn tick(&mut self, _ctx: &Ctx<'_>) -> Vec<Publish> {
        Vec::new()
    }

    /// Installs what the service's hardware calls when it has events.
    fn set_waker(&mut self, _waker: rollcall_hw::gpio::EventWaker) {}

    /// Handles what the hardware has waiting after the waker was called.
    fn wake(&mut self, _ctx: &Ctx<'_>) -> Vec<Publish> {
        Vec::new()
    }

    /// Topics outside its own `/{host}/{name}/...` queries that the service
    /// consumes (the display's input, the notes' `/display`): the agent
    /// subscribes to them and hands what arrives to [`Service::on_message`].
    fn topics_in(&self, _ctx: &Ctx<'_>) -> Vec<String> {
        Vec::new()
    }

    /// A message on one of [`Service::topics_in`]; an error is answered on
    /// the service's error topic.
    fn on_message(
        &mut self,
        _topic: &str,
        _payload: &[u8],
        _ctx: &Ctx<'_>,
    ) -> Result<Outcome, ServiceError> {
        Err(ServiceError::Unsupported("messages"))
    }

    /// What must survive a restart, if anything.
    fn saved_state(&self) -> Option<Value> {
        None
    }

    /// Takes back what [`Service::saved_state`] gave before a restart.
    fn restore(&mut self, _saved: Value, _ctx: &Ctx<'_>) -> Result<Vec<Publish>, ServiceError> {
        Ok(Vec::new())
    }
}
