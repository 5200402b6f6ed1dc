//! The `dac` service: outputs of a digital-to-analog converter (an MCP4725
//! on the kernel's `mcp4725` IIO driver, or simulated) set in volts on
//! `/{host}/dac/set/{channel}`. A value is checked against the converter's
//! range, turned into the nearest code, and what that code gives is
//! reported retained on `/{host}/dac/{channel}` and kept across restarts.

use std::collections::BTreeMap;

use rollcall_hw::iio::Dac;
use rollcall_proto::json::Object;
use rollcall_proto::topic::check_topic;
use rollcall_proto::{Body, Description, Health, Interface, Interfaces, ProtoError, ValueType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channels::{ChannelListError, check_channels};
use crate::{Ctx, Outcome, Publish, Service, ServiceError, ShapeError};

/// One output channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DacChannel {
    /// Its name in topics.
    pub name: String,
    /// The converter's channel (`out_voltage{channel}_raw`).
    pub channel: u32,
}

/// What is wrong with a `dac` configuration; each message starts with the
/// key it is about.
#[derive(Debug, thiserror::Error)]
pub enum DacConfigError {
    /// An unknown key, or a value of the wrong type.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// A channel list that is not acceptable.
    #[error(transparent)]
    Channels(#[from] ChannelListError),
    /// A name of digits, which `set/{channel number}` would mistake.
    #[error("channels[{index}].name: `{name}` reads as a channel number; names need a letter")]
    NumericName {
        /// The channel's place in `channels`.
        index: usize,
        /// The name.
        name: String,
    },
    /// Two names for one converter channel.
    #[error("channels[{index}].channel: {channel} is used twice")]
    ChannelUsedTwice {
        /// The later channel's place in `channels`.
        index: usize,
        /// The converter channel.
        channel: u32,
    },
    /// A topic for something that is not a channel.
    #[error("topics.{key}: not a channel name (or error)")]
    NotAChannelName {
        /// The key.
        key: String,
    },
    /// A topic that cannot be published to.
    #[error("topics.{key}: {source}")]
    Topic {
        /// The key.
        key: String,
        /// What the topic grammar says of it.
        #[source]
        source: ProtoError,
    },
}

/// Why the `dac` service refused a value, a configuration or a saved state.
#[derive(Debug, thiserror::Error)]
pub enum DacError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] DacConfigError),
    /// A voltage the channel cannot give.
    #[error("{volts} V is out of range for `{channel}`: 0 to {max:.4} V")]
    OutOfRange {
        /// The voltage asked for.
        volts: f64,
        /// The channel's name.
        channel: String,
        /// The most it gives, in volts.
        max: f64,
    },
    /// A body that is not a number of volts.
    #[error("a voltage is a number of volts, such as 1.25")]
    NotVolts,
    /// A `control` body that is not a JSON object.
    #[error(
        "expected a configuration: a JSON object such as {{\"channels\":[{{\"name\":\"pump_speed\",\"channel\":0}}]}}"
    )]
    NotAConfiguration,
    /// A saved state that is not a JSON object.
    #[error("saved state: not an object")]
    SavedNotAnObject,
    /// A saved configuration that is wrong.
    #[error("saved state: {0}")]
    SavedConfig(#[source] DacConfigError),
    /// Saved volts that do not read as a map of channel to volts.
    #[error("saved state: volts: {0}")]
    SavedVolts(#[source] serde_json::Error),
    /// A saved state with a key it does not have.
    #[error("saved state: unknown key `{0}`")]
    SavedUnknownKey(String),
}

/// The `dac` service's configuration; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DacConfig {
    /// The outputs (default: `out0` on channel 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<DacChannel>>,
    /// Topics instead of the defaults, by channel name, and `error`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, String>,
}

impl DacConfig {
    /// The configured channels, or the default one.
    pub fn channels(&self) -> Vec<DacChannel> {
        self.channels.clone().unwrap_or_else(|| {
            vec![DacChannel {
                name: "out0".into(),
                channel: 0,
            }]
        })
    }

    /// Reads and checks a whole configuration; errors name the field.
    pub fn from_json(value: Value) -> Result<Self, DacConfigError> {
        let config: DacConfig = crate::config_from_json(value)?;
        let channels = config.channels();
        // As for `ain`: more than any DAC has, and a description that fits.
        let pairs: Vec<(&str, u32)> = channels
            .iter()
            .map(|c| (c.name.as_str(), c.channel))
            .collect();
        check_channels(&pairs)?;
        for (i, c) in channels.iter().enumerate() {
            // `set/0` means channel 0: a name of digits would be ambiguous.
            if c.name.bytes().all(|b| b.is_ascii_digit()) {
                return Err(DacConfigError::NumericName {
                    index: i,
                    name: c.name.clone(),
                });
            }
            if channels[..i].iter().any(|o| o.channel == c.channel) {
                return Err(DacConfigError::ChannelUsedTwice {
                    index: i,
                    channel: c.channel,
                });
            }
        }
        for (key, topic) in &config.topics {
            if key != "error" && !channels.iter().any(|c| &c.name == key) {
                return Err(DacConfigError::NotAChannelName { key: key.clone() });
            }
            check_topic(topic, "topic").map_err(|source| DacConfigError::Topic {
                key: key.clone(),
                source,
            })?;
        }
        Ok(config)
    }
}

/// What survives a restart: the configuration and the volts last set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DacSaved {
    /// The configuration.
    #[serde(default)]
    pub config: DacConfig,
    /// The volts last set, by channel name.
    #[serde(default)]
    pub volts: BTreeMap<String, f64>,
}

/// The DAC as a service.
pub struct DacService {
    dac: Box<dyn Dac>,
    saved: DacSaved,
    /// Volts per code of each channel, once read from the converter.
    scale: BTreeMap<u32, f64>,
    alert: Option<String>,
}

impl DacService {
    /// The service on `dac`, with one channel, `out0`.
    pub fn new(dac: Box<dyn Dac>) -> Self {
        DacService {
            dac,
            saved: DacSaved::default(),
            scale: BTreeMap::new(),
            alert: None,
        }
    }

    fn topic(&self, name: &str, ctx: &Ctx<'_>) -> String {
        self.saved
            .config
            .topics
            .get(name)
            .cloned()
            .unwrap_or_else(|| ctx.topics.service(ctx.host, "dac", name))
    }

    fn find(&self, item: &str) -> Result<DacChannel, ServiceError> {
        self.saved
            .config
            .channels()
            .into_iter()
            .find(|c| c.name == item || item.parse() == Ok(c.channel))
            .ok_or_else(|| ServiceError::UnknownItem(item.to_owned()))
    }

    /// The result of setting a channel, remembered as the health: a set
    /// that fails is an alert until one succeeds. A `get` leaves the health
    /// alone.
    fn hw<T>(&mut self, result: Result<T, rollcall_hw::HwError>) -> Result<T, ServiceError> {
        match result {
            Ok(v) => Ok(v),
            Err(e) => {
                self.alert = Some(e.to_string());
                Err(e.into())
            }
        }
    }

    fn volts_per_code(&mut self, channel: u32) -> Result<f64, rollcall_hw::HwError> {
        if let Some(v) = self.scale.get(&channel) {
            return Ok(*v);
        }
        let v = self.dac.volts_per_code(channel)?;
        self.scale.insert(channel, v);
        Ok(v)
    }

    fn state_json(volts: f64, code: u32, ts: u64) -> Value {
        let mut map = Object::new();
        map.insert("value".into(), ((volts * 1e6).round() / 1e6).into());
        map.insert("unit".into(), "V".into());
        map.insert("raw".into(), code.into());
        map.insert("ts".into(), ts.into());
        map.into()
    }

    /// Sets `ch` to `volts` after checking the range: the state to publish.
    fn drive(&mut self, ch: &DacChannel, volts: f64, ctx: &Ctx<'_>) -> Result<Value, ServiceError> {
        let result = self.volts_per_code(ch.channel);
        let per_code = self.hw(result)?;
        let max = f64::from(self.dac.max_code()) * per_code;
        if !(volts.is_finite() && (0.0..=max + 1e-9).contains(&volts)) {
            return Err(DacError::OutOfRange {
                volts,
                channel: ch.name.clone(),
                max,
            }
            .into());
        }
        let code = ((volts / per_code).round() as u32).min(self.dac.max_code());
        let result = self.dac.write_code(ch.channel, code);
        self.hw(result)?;
        self.alert = None;
        let actual = f64::from(code) * per_code;
        self.saved.volts.insert(ch.name.clone(), actual);
        Ok(Self::state_json(actual, code, ctx.now_ms))
    }
}

/// Volts from a request body: `1.5`, `"1.5"`, `1.5V` as people type them.
fn parse_volts(body: &Body) -> Result<f64, ServiceError> {
    let volts = match body {
        Body::Json(Value::Number(n)) => n.as_f64(),
        Body::Json(Value::String(s)) | Body::Text(s) => {
            s.trim().trim_end_matches(['V', 'v']).trim().parse().ok()
        }
        _ => None,
    };
    Ok(volts.ok_or(DacError::NotVolts)?)
}

impl Service for DacService {
    fn health(&self) -> Option<Health> {
        Some(Health::from_alert(self.alert.as_deref()))
    }

    fn name(&self) -> &str {
        "dac"
    }

    fn describe(&self, ctx: &Ctx<'_>) -> Description {
        let service = |rest: &str| ctx.topics.service(ctx.host, "dac", rest);
        let channels = self.saved.config.channels();
        let max_of = |c: &DacChannel| {
            self.scale
                .get(&c.channel)
                .map(|s| f64::from(self.dac.max_code()) * s)
        };
        let inputs = channels
            .iter()
            .map(|c| {
                let mut i = Interface::new(
                    &c.name,
                    service(&format!("set/{}", c.name)),
                    ValueType::Float,
                )
                .unit("V")
                .doc("volts to output; the nearest the converter can make is reported");
                i.min = Some(0.0);
                i.max = max_of(c);
                i
            })
            .collect();
        let mut outputs: Vec<Interface> = channels
            .iter()
            .map(|c| {
                let mut i = Interface::new(&c.name, self.topic(&c.name, ctx), ValueType::Float)
                    .unit("V")
                    .retained()
                    .doc("the volts the channel is set to, and its code");
                i.min = Some(0.0);
                i.max = max_of(c);
                i
            })
            .collect();
        outputs.push(
            Interface::new("error", self.topic("error", ctx), ValueType::Json)
                .doc("a refused or failed set"),
        );
        Description {
            function: "dac".into(),
            doc: Some("analog outputs of a DAC, set in volts".into()),
            interfaces: Interfaces {
                inputs,
                outputs,
                functions: vec![
                    Interface::new("all", service("get"), ValueType::Json)
                        .doc("every channel's volts"),
                ],
                controls: vec![
                    Interface::new("control", service("control"), ValueType::Json)
                        .doc("the configuration: channels, topics"),
                ],
            },
            health: self.health(),
        }
    }

    fn get(&mut self, item: &str, ctx: &Ctx<'_>) -> Result<Value, ServiceError> {
        if item == "config" {
            return Ok(serde_json::to_value(&self.saved.config).unwrap_or_default());
        }
        let wanted = if item.is_empty() {
            self.saved.config.channels()
        } else {
            vec![self.find(item)?]
        };
        let mut all = Object::new();
        for ch in &wanted {
            let per_code = self.volts_per_code(ch.channel)?;
            let code = self.dac.read_code(ch.channel)?;
            all.insert(
                ch.name.clone(),
                Self::state_json(f64::from(code) * per_code, code, ctx.now_ms),
            );
        }
        Ok(if item.is_empty() {
            all.into()
        } else {
            all.into_iter().next().map(|(_, v)| v).unwrap_or_default()
        })
    }

    fn set(&mut self, item: &str, body: &Body, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let ch = self.find(item)?;
        let volts = parse_volts(body)?;
        let health_before = self.alert.clone();
        let result = self.drive(&ch, volts, ctx);
        let state = result?;
        let mut reply = Object::new();
        reply.insert("channel".into(), ch.name.clone().into());
        reply.insert("value".into(), state["value"].clone());
        reply.insert("raw".into(), state["raw"].clone());
        Ok(Outcome {
            reply,
            publish: vec![Publish {
                topic: self.topic(&ch.name, ctx),
                payload: serde_json::to_vec(&state).unwrap_or_default(),
                retain: true,
            }],
            description_changed: health_before != self.alert,
            persist: true,
        })
    }

    fn control(&mut self, body: &Body, _ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let value = match body {
            Body::Json(v @ Value::Object(_)) => v.clone(),
            Body::Empty => Value::Object(Object::new()),
            _ => return Err(DacError::NotAConfiguration.into()),
        };
        let config = DacConfig::from_json(value).map_err(DacError::from)?;
        let names: Vec<String> = config.channels().into_iter().map(|c| c.name).collect();
        self.saved.volts.retain(|name, _| names.contains(name));
        self.saved.config = config;
        let mut reply = Object::new();
        reply.insert(
            "config".into(),
            serde_json::to_value(&self.saved.config).unwrap_or_default(),
        );
        Ok(Outcome {
            reply,
            publish: Vec::new(),
            description_changed: true,
            persist: true,
        })
    }

    fn saved_state(&self) -> Option<Value> {
        serde_json::to_value(&self.saved).ok()
    }

    /// Takes the configuration back and sets each channel to its last volts.
    fn restore(&mut self, saved: Value, ctx: &Ctx<'_>) -> Result<Vec<Publish>, ServiceError> {
        let Value::Object(mut map) = saved else {
            return Err(DacError::SavedNotAnObject.into());
        };
        let config =
            DacConfig::from_json(map.remove("config").unwrap_or(Value::Object(Object::new())))
                .map_err(DacError::SavedConfig)?;
        let volts: BTreeMap<String, f64> =
            serde_json::from_value(map.remove("volts").unwrap_or(Value::Object(Object::new())))
                .map_err(DacError::SavedVolts)?;
        if let Some(key) = map.keys().next() {
            return Err(DacError::SavedUnknownKey(key.clone()).into());
        }
        self.saved = DacSaved {
            config,
            volts: BTreeMap::new(),
        };
        let mut out = Vec::new();
        for ch in self.saved.config.channels() {
            let Some(v) = volts.get(&ch.name) else {
                continue;
            };
            // A channel that cannot be set now is left for the next `set`;
            // its failure shows as the health.
            if let Ok(state) = self.drive(&ch, *v, ctx) {
                out.push(Publish {
                    topic: self.topic(&ch.name, ctx),
                    payload: serde_json::to_vec(&state).unwrap_or_default(),
                    retain: true,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use rollcall_hw::iio::sim::SimDac;
    use rollcall_proto::Topics;
    use serde_json::json;

    use super::*;

    fn at(topics: &Topics) -> Ctx<'_> {
        Ctx {
            host: "pizero1",
            topics,
            now_ms: 9,
        }
    }

    #[test]
    fn set_quantises_reports_the_volts_set_and_refuses_out_of_range() {
        let topics = Topics::default();
        let ctx = at(&topics);
        let dac = SimDac::new();
        let mut svc = DacService::new(Box::new(dac));
        let out = svc.set("out0", &Body::Json(json!(1.0)), &ctx).unwrap();
        // 3.3 V / 4096 per code: 1.0 V is code 1241, 0.99983 V.
        assert_eq!(out.reply["raw"], 1241);
        assert_eq!(out.reply["value"], 0.999829);
        assert_eq!(out.publish[0].topic, "/pizero1/dac/out0");
        assert!(out.publish[0].retain && out.persist);
        let by_number = svc.set("0", &Body::Text("2.5V".into()), &ctx).unwrap();
        assert_eq!(by_number.reply["raw"], 3103);
        for bad in [json!(-0.1), json!(3.4), json!("lots"), json!([1])] {
            assert!(svc.set("out0", &Body::Json(bad), &ctx).is_err());
        }
        assert!(matches!(
            svc.set("out7", &Body::Json(json!(1)), &ctx),
            Err(ServiceError::UnknownItem(_))
        ));
        assert_eq!(svc.get("out0", &ctx).unwrap()["raw"], 3103);
        let d = svc.describe(&ctx);
        assert_eq!(d.interfaces.inputs[0].max, Some(4095.0 * 3.3 / 4096.0));
    }

    #[test]
    fn a_failed_write_is_an_alert_until_a_write_succeeds() {
        let topics = Topics::default();
        let ctx = at(&topics);
        let dac = SimDac::new();
        let sim = dac.handle();
        let mut svc = DacService::new(Box::new(dac));
        svc.set("out0", &Body::Json(json!(1)), &ctx).unwrap();
        sim.fail_next(1);
        assert!(svc.set("out0", &Body::Json(json!(2)), &ctx).is_err());
        assert!(matches!(
            svc.describe(&ctx).health,
            Some(Health::Alert { .. })
        ));
        let ok = svc.set("out0", &Body::Json(json!(2)), &ctx).unwrap();
        assert!(ok.description_changed);
        assert_eq!(svc.describe(&ctx).health, Some(Health::Ok));
        // A failed read-back is an error answer; the health stays ok.
        sim.fail_next(1);
        assert!(svc.get("out0", &ctx).is_err());
        assert_eq!(svc.describe(&ctx).health, Some(Health::Ok));
    }

    #[test]
    fn bad_configuration_changes_nothing_and_a_restart_restores_volts() {
        let topics = Topics::default();
        let ctx = at(&topics);
        let mut svc = DacService::new(Box::new(SimDac::new()));
        svc.control(
            &Body::Json(json!({"channels":[{"name":"pump_speed","channel":0}]})),
            &ctx,
        )
        .unwrap();
        svc.set("pump_speed", &Body::Json(json!(1.5)), &ctx)
            .unwrap();
        for (bad, needle) in [
            (json!({"channels": []}), "at least one"),
            (
                json!({"channels": (0..=64)
                    .map(|i| json!({"name": format!("c{i}"), "channel": i}))
                    .collect::<Vec<_>>()}),
                "at most 64",
            ),
            (
                json!({"channels": [{"name": "7", "channel": 0}]}),
                "need a letter",
            ),
            (
                json!({"channels": [{"name": "a", "channel": 0}, {"name": "b", "channel": 0}]}),
                "used twice",
            ),
            (json!({"channels": [{"name": "a"}]}), "channel"),
            (json!({"topics": {"x": "/y"}}), "topics.x"),
            (json!({"speed": 1}), "speed"),
        ] {
            let err = svc.control(&Body::Json(bad), &ctx).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(svc.find("pump_speed").is_ok());
        }
        let saved = svc.saved_state().unwrap();
        let dac = SimDac::new();
        let mut again = DacService::new(Box::new(dac));
        let out = again.restore(saved, &ctx).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(again.get("pump_speed", &ctx).unwrap()["raw"], 1862);
    }

    /// Refusals are variants that say what was wrong; a failed write is a
    /// hardware error whose source is the converter's `HwError`.
    #[test]
    fn refusals_are_typed_and_a_failed_write_keeps_its_hw_error() {
        let topics = Topics::default();
        let ctx = at(&topics);
        let dac = SimDac::new();
        let sim = dac.handle();
        let mut svc = DacService::new(Box::new(dac));
        assert!(matches!(
            svc.set("out0", &Body::Json(json!(9.0)), &ctx),
            Err(ServiceError::Dac(DacError::OutOfRange { ref channel, .. })) if channel == "out0"
        ));
        assert!(matches!(
            svc.set("out0", &Body::Text("lots".into()), &ctx),
            Err(ServiceError::Dac(DacError::NotVolts))
        ));
        assert!(matches!(
            DacConfig::from_json(json!({"channels": [{"name": "7", "channel": 0}]})),
            Err(DacConfigError::NumericName { index: 0, .. })
        ));
        assert!(matches!(
            svc.restore(json!({"volts": 5}), &ctx),
            Err(ServiceError::Dac(DacError::SavedVolts(_)))
        ));
        sim.fail_next(1);
        let err = svc.set("out0", &Body::Json(json!(1.0)), &ctx).unwrap_err();
        let source = std::error::Error::source(&err);
        assert!(
            source.is_some_and(|s| s.is::<rollcall_hw::HwError>()),
            "{err:?}"
        );
    }
}
