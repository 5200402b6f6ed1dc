//! Simulated hardware that a person or a test drives over MQTT, under
//! `--sim`: `/{host}/sim/{service}/...`. A built-in service's registry entry
//! hands the core one [`SimControl`] for its simulated device; the core
//! subscribes to its filter and hands it what arrives there.

use rollcall_hw::display::sim::SimDisplayHandle;
use rollcall_hw::gpio::sim::SimHandle;
use rollcall_hw::iio::sim::SimHandle as IioSimHandle;
use rollcall_proto::Body;
use rollcall_services::gpio::service::parse_level;
use rollcall_services::{ServiceError, SimError};
use serde_json::Value;

/// The controls of one service's simulated device.
pub trait SimControl: Send + Sync {
    /// The levels under `/{host}/sim/{service}/` it listens to, as a filter
    /// (`+`, `button/+`).
    fn filter_suffix(&self) -> &'static str;

    /// Acts on a message whose topic has `levels` under
    /// `/{host}/sim/{service}/`; an error is answered on the service's
    /// error topic.
    fn drive(&self, levels: &[&str], body: &Body) -> Result<(), ServiceError>;
}

/// `/{host}/sim/gpio/{pin}`: drives a simulated input (1 or 0), where a
/// person presses a virtual button.
pub struct SimGpio(pub SimHandle);

impl SimControl for SimGpio {
    fn filter_suffix(&self) -> &'static str {
        "+"
    }

    fn drive(&self, levels: &[&str], body: &Body) -> Result<(), ServiceError> {
        let [pin] = levels else {
            return Err(ServiceError::UnknownItem(levels.join("/")));
        };
        let Ok(line) = pin.parse() else {
            return Err(SimError::NotAPin((*pin).to_owned()).into());
        };
        Ok(self.0.drive(line, parse_level(body)?)?)
    }
}

/// `/{host}/sim/{service}/fail` (the next N reads fail) and
/// `/{host}/sim/{service}/missing` (1: the device is gone, 0: back), for
/// the sensors and the DAC.
pub struct SimIio(pub IioSimHandle);

impl SimControl for SimIio {
    fn filter_suffix(&self) -> &'static str {
        "+"
    }

    fn drive(&self, levels: &[&str], body: &Body) -> Result<(), ServiceError> {
        match levels {
            ["fail"] => fail_count(body).map(|n| self.0.fail_next(n)),
            ["missing"] => parse_level(body).map(|gone| self.0.set_missing(gone)),
            _ => Err(ServiceError::UnknownItem(levels.join("/"))),
        }
    }
}

/// `/{host}/sim/display/button/{name}` (1: pressed, 0: released).
pub struct SimButtons(pub SimDisplayHandle);

impl SimControl for SimButtons {
    fn filter_suffix(&self) -> &'static str {
        "button/+"
    }

    fn drive(&self, levels: &[&str], body: &Body) -> Result<(), ServiceError> {
        let ["button", name] = levels else {
            return Err(ServiceError::UnknownItem(levels.join("/")));
        };
        let pressed = parse_level(body)?;
        Ok(self.0.set_button(name, pressed)?)
    }
}

/// How many reads `/{host}/sim/{service}/fail` makes fail: a count, 1 to 1000.
fn fail_count(body: &Body) -> Result<u32, ServiceError> {
    let n = match body {
        Body::Json(Value::Number(n)) => n.as_u64(),
        Body::Text(t) => t.trim().parse().ok(),
        Body::Empty => Some(1),
        _ => None,
    };
    n.filter(|n| (1..=1000).contains(n))
        .map(|n| n as u32)
        .ok_or(SimError::FailCount.into())
}
