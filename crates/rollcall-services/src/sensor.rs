//! What the reading services (`ain`, `dht22`, `sonar`) share: one
//! [`SensorService`] that reads its items at an interval and on `get`,
//! publishes each reading retained as `{"value","unit","ts"}`, retries a
//! failed read sooner (doubling up to the interval), reports each failure on
//! its error topic and shows it as its health until a read succeeds. A
//! [`Spec`] (in `ain.rs`, `dht22.rs`, `sonar.rs`) says what differs: the
//! name, the items and their ranges, the intervals the sensor allows.

use std::collections::BTreeMap;
use std::time::Duration;

use rollcall_hw::HwError;
use rollcall_hw::gpio::EventWaker;
use rollcall_hw::iio::{Channel, Quantity, Sample, Sensor};
use rollcall_proto::json::Object;
use rollcall_proto::topic::check_topic;
use rollcall_proto::{Body, Description, Health, Interface, Interfaces, ProtoError, ValueType};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Ctx, Outcome, Publish, Service, ServiceError, ShapeError};

/// The longest interval any reading service takes: a day.
const MAX_INTERVAL_MS: u64 = 86_400_000;
pub use crate::channels::MAX_CHANNELS;

/// A fixed item of a sensor: DHT22's temperature, the sonar's distance.
#[derive(Debug, Clone, Copy)]
pub struct FixedItem {
    /// Its name in topics.
    pub name: &'static str,
    /// What it measures.
    pub quantity: Quantity,
    /// The smallest and largest value the sensor gives.
    pub range: (f64, f64),
    /// One line for a person.
    pub doc: &'static str,
}

/// What one reading service is.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Its name in topics and answers.
    pub name: &'static str,
    /// One line for a person.
    pub doc: &'static str,
    /// Its items when it has no configured channels; empty for `ain`.
    pub fixed: &'static [FixedItem],
    /// Whether items are configured as channels (`ain`).
    pub channels: bool,
    /// The shortest interval the sensor can be read at.
    pub min_interval_ms: u64,
    /// The interval when none is configured.
    pub default_interval_ms: u64,
    /// The first retry after a failed read, when none is configured.
    pub default_retry_ms: u64,
}

/// One configured channel of an analog input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Its name in topics (`/{host}/ain/{name}`).
    pub name: String,
    /// The converter's channel (`in_voltage{channel}_raw`).
    pub channel: u32,
    /// The lowest voltage it is expected to read, for the description.
    #[serde(default)]
    pub min_v: f64,
    /// The highest voltage it is expected to read, for the description.
    #[serde(default = "default_max_v")]
    pub max_v: f64,
}

fn default_max_v() -> f64 {
    3.3
}

/// A reading service's configuration, the same on `/{host}/{service}/control`,
/// in the agent's TOML and in its saved state. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Milliseconds between reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Milliseconds before the first retry after a failed read; each
    /// further failure doubles it, up to the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_ms: Option<u64>,
    /// `ain` only: the channels read, each an item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<ChannelConfig>>,
    /// Topics instead of the defaults, by item name, and `error`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, String>,
}

/// What is wrong with a reading service's configuration; each message
/// starts with the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum SensorConfigError {
    /// An unknown key, or a value of the wrong type.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// An interval the sensor cannot be read at.
    #[error("interval_ms: {interval} is out of range: from {min} to {max}", max = MAX_INTERVAL_MS)]
    Interval {
        /// The interval, in ms.
        interval: u64,
        /// The sensor's shortest.
        min: u64,
    },
    /// A retry delay shorter than the sensor allows or longer than the interval.
    #[error("retry_ms: {retry} is out of range: from {min} to the interval, {interval}")]
    Retry {
        /// The delay, in ms.
        retry: u64,
        /// The shortest allowed.
        min: u64,
        /// The interval, the longest.
        interval: u64,
    },
    /// Channels for a sensor whose items are fixed.
    #[error("channels: {service} has no channels to choose")]
    NoChannels {
        /// The service.
        service: &'static str,
    },
    /// A channel list that is not acceptable.
    #[error(transparent)]
    Channels(#[from] crate::channels::ChannelListError),
    /// A voltage range that is empty or not numbers.
    #[error("channels[{index}]: min_v must be below max_v, both numbers")]
    VoltRange {
        /// The channel's place in `channels`.
        index: usize,
    },
    /// A topic for something that is not an item.
    #[error(
        "topics.{key}: not an item of {service} (items: {}, and error)",
        .items.join(", ")
    )]
    NotAnItem {
        /// The key.
        key: String,
        /// The service.
        service: &'static str,
        /// Its items.
        items: Vec<String>,
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

/// Why a reading service refused a request, or what a read that failed hit.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] SensorConfigError),
    /// A `control` body that is not a JSON object.
    #[error("expected a configuration: a JSON object such as {{\"interval_ms\": 5000}}")]
    NotAConfiguration,
    /// Reading an item failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// A read that failed: the item, and the sensor's error.
#[derive(Debug, thiserror::Error)]
#[error("{item}: {source}")]
pub struct ReadError {
    /// The item.
    pub item: String,
    /// What the sensor said.
    #[source]
    pub source: HwError,
}

impl SensorConfig {
    /// Reads a configuration from JSON; errors name the path (`channels[1].channel`).
    pub fn from_json(value: Value) -> Result<Self, SensorConfigError> {
        Ok(crate::config_from_json(value)?)
    }

    /// Checks the whole configuration against what `spec`'s sensor allows.
    pub fn validate(&self, spec: &Spec) -> Result<(), SensorConfigError> {
        let interval = self.interval_ms.unwrap_or(spec.default_interval_ms);
        if !(spec.min_interval_ms..=MAX_INTERVAL_MS).contains(&interval) {
            return Err(SensorConfigError::Interval {
                interval,
                min: spec.min_interval_ms,
            });
        }
        let retry = self.retry_ms.unwrap_or(spec.default_retry_ms.min(interval));
        if !(spec.min_interval_ms.min(100)..=interval).contains(&retry) {
            return Err(SensorConfigError::Retry {
                retry,
                min: spec.min_interval_ms.min(100),
                interval,
            });
        }
        match (&self.channels, spec.channels) {
            (Some(_), false) => {
                return Err(SensorConfigError::NoChannels { service: spec.name });
            }
            (Some(channels), true) => {
                let pairs: Vec<(&str, u32)> = channels
                    .iter()
                    .map(|c| (c.name.as_str(), c.channel))
                    .collect();
                crate::channels::check_channels(&pairs)?;
                for (i, c) in channels.iter().enumerate() {
                    if !(c.min_v.is_finite() && c.max_v.is_finite() && c.min_v < c.max_v) {
                        return Err(SensorConfigError::VoltRange { index: i });
                    }
                }
            }
            (None, _) => {}
        }
        let items: Vec<String> = items(spec, self).into_iter().map(|i| i.name).collect();
        for (key, topic) in &self.topics {
            if key != "error" && !items.contains(key) {
                return Err(SensorConfigError::NotAnItem {
                    key: key.clone(),
                    service: spec.name,
                    items,
                });
            }
            check_topic(topic, "topic").map_err(|source| SensorConfigError::Topic {
                key: key.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// One item read by the service.
#[derive(Debug, Clone)]
struct Item {
    name: String,
    channel: Channel,
    range: (f64, f64),
    doc: String,
}

fn items(spec: &Spec, config: &SensorConfig) -> Vec<Item> {
    if !spec.channels {
        return spec
            .fixed
            .iter()
            .map(|f| Item {
                name: f.name.to_owned(),
                channel: Channel::plain(f.quantity),
                range: f.range,
                doc: f.doc.to_owned(),
            })
            .collect();
    }
    let default = default_channels();
    config
        .channels
        .as_ref()
        .unwrap_or(&default)
        .iter()
        .map(|c| Item {
            name: c.name.clone(),
            channel: Channel::indexed(Quantity::Voltage, c.channel),
            range: (c.min_v, c.max_v),
            doc: format!(
                "channel {}, volts (and the converter's raw code)",
                c.channel
            ),
        })
        .collect()
}

/// `ain`'s channels when none are configured: the four of an ADS1015.
pub fn default_channels() -> Vec<ChannelConfig> {
    (0..4)
        .map(|channel| ChannelConfig {
            name: format!("a{channel}"),
            channel,
            min_v: 0.0,
            max_v: default_max_v(),
        })
        .collect()
}

/// What one round of reads gave: the good readings, and the first failure.
type Readings = (Vec<(Item, Sample)>, Option<ReadError>);

/// A reading service on any [`Sensor`].
pub struct SensorService {
    spec: Spec,
    sensor: Box<dyn Sensor>,
    config: SensorConfig,
    /// Reads failed in a row; 0 after a good one.
    failures: u32,
    /// Why the last read failed, until one succeeds: the failure itself,
    /// rendered where the health is.
    alert: Option<ReadError>,
    /// Readings taken on `get`, published when the agent asks through `wake`.
    pending: Vec<Publish>,
    waker: Option<EventWaker>,
}

/// Rounds away float noise from scaling: a micro-unit is below every
/// sensor's resolution.
fn tidy(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl SensorService {
    /// The service `spec` on `sensor`, with the default configuration.
    pub fn new(spec: Spec, sensor: Box<dyn Sensor>) -> Self {
        SensorService {
            spec,
            sensor,
            config: SensorConfig::default(),
            failures: 0,
            alert: None,
            pending: Vec::new(),
            waker: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &SensorConfig {
        &self.config
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(
            self.config
                .interval_ms
                .unwrap_or(self.spec.default_interval_ms),
        )
    }

    /// How long after the `failures`-th failure in a row the next read is:
    /// the retry delay doubled for each earlier failure, at most the interval.
    fn backoff(&self) -> Duration {
        let interval = self.interval().as_millis() as u64;
        let first = self
            .config
            .retry_ms
            .unwrap_or(self.spec.default_retry_ms.min(interval));
        let doubled = first.saturating_mul(1u64 << (self.failures.saturating_sub(1)).min(32));
        Duration::from_millis(doubled).min(self.interval())
    }

    fn topic(&self, item: &str, ctx: &Ctx<'_>) -> String {
        self.config
            .topics
            .get(item)
            .cloned()
            .unwrap_or_else(|| ctx.topics.service(ctx.host, self.spec.name, item))
    }

    fn error_topic(&self, ctx: &Ctx<'_>) -> String {
        self.topic("error", ctx)
    }

    /// `{"value","unit","ts"}` plus `raw` where the converter gives one.
    fn reading_json(item: &Item, sample: &Sample, ts: u64) -> Value {
        let mut map = Object::new();
        map.insert("value".into(), tidy(sample.value).into());
        map.insert("unit".into(), item.channel.quantity.unit().into());
        if let Some(raw) = sample.raw {
            map.insert("raw".into(), raw.into());
        }
        map.insert("ts".into(), ts.into());
        map.into()
    }

    /// Reads `wanted` (every item when `None`): the readings, or the first
    /// failure with the item it happened on.
    fn read(&mut self, wanted: Option<&str>) -> Readings {
        let mut good = Vec::new();
        for item in items(&self.spec, &self.config) {
            if wanted.is_some_and(|w| w != item.name) {
                continue;
            }
            match self.sensor.read(item.channel) {
                Ok(sample) => good.push((item, sample)),
                Err(source) => {
                    let failed = ReadError {
                        item: item.name,
                        source,
                    };
                    return (good, Some(failed));
                }
            }
        }
        (good, None)
    }

    fn publishes(&self, good: &[(Item, Sample)], ctx: &Ctx<'_>) -> Vec<Publish> {
        good.iter()
            .map(|(item, sample)| Publish {
                topic: self.topic(&item.name, ctx),
                payload: serde_json::to_vec(&Self::reading_json(item, sample, ctx.now_ms))
                    .unwrap_or_default(),
                retain: true,
            })
            .collect()
    }

    /// A scheduled read: readings out, or a failure counted, reported and
    /// shown as the health.
    fn scheduled_read(&mut self, ctx: &Ctx<'_>) -> Vec<Publish> {
        let (good, failed) = self.read(None);
        let mut out = self.publishes(&good, ctx);
        match failed {
            None => {
                self.failures = 0;
                self.alert = None;
            }
            Some(failure) => {
                self.failures = self.failures.saturating_add(1);
                let mut map = Object::new();
                map.insert("error".into(), failure.to_string().into());
                map.insert("item".into(), failure.item.clone().into());
                map.insert("failures".into(), self.failures.into());
                map.insert(
                    "retry_ms".into(),
                    (self.backoff().as_millis() as u64).into(),
                );
                map.insert("ts".into(), ctx.now_ms.into());
                out.push(Publish {
                    topic: self.error_topic(ctx),
                    payload: serde_json::to_vec(&map).unwrap_or_default(),
                    retain: false,
                });
                self.alert = Some(failure);
            }
        }
        out
    }

    fn apply(&mut self, value: Value) -> Result<(), ServiceError> {
        let config = SensorConfig::from_json(value).map_err(SensorError::from)?;
        config.validate(&self.spec).map_err(SensorError::from)?;
        self.config = config;
        Ok(())
    }
}

impl Service for SensorService {
    fn health(&self) -> Option<Health> {
        let alert = self.alert.as_ref().map(ToString::to_string);
        Some(Health::from_alert(alert.as_deref()))
    }

    fn name(&self) -> &str {
        self.spec.name
    }

    fn describe(&self, ctx: &Ctx<'_>) -> Description {
        let service = |rest: &str| ctx.topics.service(ctx.host, self.spec.name, rest);
        let items = items(&self.spec, &self.config);
        let mut outputs: Vec<Interface> = items
            .iter()
            .map(|item| {
                Interface::new(&item.name, self.topic(&item.name, ctx), ValueType::Float)
                    .unit(item.channel.quantity.unit())
                    .range(item.range.0, item.range.1)
                    .retained()
                    .doc(&item.doc)
            })
            .collect();
        outputs.push(
            Interface::new("error", self.error_topic(ctx), ValueType::Json)
                .doc("a failed read: {\"error\",\"item\",\"failures\",\"retry_ms\",\"ts\"}"),
        );
        let mut functions = vec![
            Interface::new("all", service("get"), ValueType::Json).doc("reads every item now"),
        ];
        functions.extend(items.iter().map(|item| {
            Interface::new(
                &item.name,
                service(&format!("get/{}", item.name)),
                ValueType::Json,
            )
            .unit(item.channel.quantity.unit())
            .doc("reads it now")
        }));
        Description {
            function: self.spec.name.into(),
            doc: Some(self.spec.doc.into()),
            interfaces: Interfaces {
                inputs: Vec::new(),
                outputs,
                functions,
                controls: vec![
                    Interface::new("control", service("control"), ValueType::Json).doc(
                        "the configuration: interval_ms, retry_ms, topics (and channels for ain)",
                    ),
                ],
            },
            health: self.health(),
        }
    }

    fn get(&mut self, item: &str, ctx: &Ctx<'_>) -> Result<Value, ServiceError> {
        if item == "config" {
            return Ok(serde_json::to_value(&self.config).unwrap_or_default());
        }
        let wanted = (!item.is_empty()).then_some(item);
        if let Some(w) = wanted
            && !items(&self.spec, &self.config).iter().any(|i| i.name == w)
        {
            return Err(ServiceError::UnknownItem(w.to_owned()));
        }
        let (good, failed) = self.read(wanted);
        if let Some(failure) = failed {
            return Err(SensorError::from(failure).into());
        }
        // What a `get` read is published too; the agent collects it through `wake`.
        self.pending.extend(self.publishes(&good, ctx));
        if let Some(waker) = &self.waker {
            waker();
        }
        let mut all = Object::new();
        for (item, sample) in &good {
            all.insert(
                item.name.clone(),
                Self::reading_json(item, sample, ctx.now_ms),
            );
        }
        Ok(match wanted {
            Some(w) => all.remove(w).unwrap_or_default(),
            None => all.into(),
        })
    }

    fn control(&mut self, body: &Body, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let value = match body {
            Body::Json(v @ Value::Object(_)) => v.clone(),
            Body::Empty => Value::Object(Object::new()),
            _ => return Err(SensorError::NotAConfiguration.into()),
        };
        self.apply(value)?;
        // Read at once, so the new items and topics carry values now.
        self.failures = 0;
        let publish = self.scheduled_read(ctx);
        let mut reply = Object::new();
        reply.insert(
            "config".into(),
            serde_json::to_value(&self.config).unwrap_or_default(),
        );
        Ok(Outcome {
            reply,
            publish,
            description_changed: true,
            persist: true,
        })
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(if self.failures == 0 {
            self.interval()
        } else {
            self.backoff()
        })
    }

    fn tick(&mut self, ctx: &Ctx<'_>) -> Vec<Publish> {
        self.scheduled_read(ctx)
    }

    fn set_waker(&mut self, waker: EventWaker) {
        self.waker = Some(waker);
    }

    fn wake(&mut self, _ctx: &Ctx<'_>) -> Vec<Publish> {
        std::mem::take(&mut self.pending)
    }

    fn saved_state(&self) -> Option<Value> {
        serde_json::to_value(&self.config).ok()
    }

    fn restore(&mut self, saved: Value, _ctx: &Ctx<'_>) -> Result<Vec<Publish>, ServiceError> {
        self.apply(saved)?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use rollcall_hw::iio::sim::{SimHandle, SimSensor};
    use rollcall_proto::Topics;
    use serde_json::json;

    use super::*;
    use crate::{ain, dht22, sonar};

    fn at(topics: &Topics, now_ms: u64) -> Ctx<'_> {
        Ctx {
            host: "pibot01",
            topics,
            now_ms,
        }
    }

    fn rig(spec: Spec) -> (SensorService, SimHandle) {
        let sensor = SimSensor::new(3);
        let handle = sensor.handle();
        (SensorService::new(spec, Box::new(sensor)), handle)
    }

    fn json_of(p: &Publish) -> Value {
        serde_json::from_slice(&p.payload).unwrap()
    }

    #[test]
    fn a_tick_publishes_each_item_retained_with_its_unit() {
        let topics = Topics::default();
        let (mut svc, _) = rig(dht22::SPEC);
        let out = svc.tick(&at(&topics, 1234));
        let topics_out: Vec<&str> = out.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(
            topics_out,
            ["/pibot01/dht22/temperature", "/pibot01/dht22/humidity"]
        );
        assert!(out.iter().all(|p| p.retain));
        let t = json_of(&out[0]);
        assert_eq!(
            (t["unit"].clone(), t["ts"].clone()),
            (json!("°C"), json!(1234))
        );
        assert!(t["value"].as_f64().unwrap() > -40.0);
        assert_eq!(json_of(&out[1])["unit"], "%");
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_interval_and_show_as_health() {
        let topics = Topics::default();
        let (mut svc, sim) = rig(sonar::SPEC);
        let ctx = at(&topics, 10);
        svc.control(
            &Body::Json(json!({"interval_ms": 1000, "retry_ms": 100})),
            &ctx,
        )
        .unwrap();
        assert_eq!(svc.tick_every(), Some(Duration::from_millis(1000)));
        sim.fail_next(5);
        let mut delays = Vec::new();
        for _ in 0..5 {
            let out = svc.tick(&ctx);
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].topic, "/pibot01/sonar/error");
            assert!(!out[0].retain);
            let e = json_of(&out[0]);
            assert!(
                e["error"].as_str().unwrap().starts_with("distance: "),
                "{e}"
            );
            delays.push(svc.tick_every().unwrap().as_millis() as u64);
            assert_eq!(e["retry_ms"], *delays.last().unwrap());
            assert!(matches!(
                svc.describe(&ctx).health,
                Some(Health::Alert { .. })
            ));
        }
        assert_eq!(delays, [100, 200, 400, 800, 1000]);
        let out = svc.tick(&ctx);
        assert_eq!(out[0].topic, "/pibot01/sonar/distance");
        assert_eq!(svc.describe(&ctx).health, Some(Health::Ok));
        assert_eq!(svc.tick_every(), Some(Duration::from_millis(1000)));
    }

    #[test]
    fn ain_reads_configured_channels_with_raw_codes_and_own_topics() {
        let topics = Topics::default();
        let (mut svc, _) = rig(ain::SPEC);
        let ctx = at(&topics, 5);
        let outcome = svc
            .control(
                &Body::Json(json!({
                    "channels": [{"name": "soil", "channel": 2}, {"name": "light", "channel": 0, "max_v": 5.0}],
                    "topics": {"soil": "/garden/soil", "error": "/garden/errors"}
                })),
                &ctx,
            )
            .unwrap();
        assert!(outcome.persist && outcome.description_changed);
        let soil = outcome
            .publish
            .iter()
            .find(|p| p.topic == "/garden/soil")
            .unwrap();
        let v = json_of(soil);
        assert_eq!(v["unit"], "V");
        assert!(v["raw"].is_i64());
        let d = svc.describe(&ctx);
        let light = d
            .interfaces
            .outputs
            .iter()
            .find(|i| i.name == "light")
            .unwrap();
        assert_eq!(light.topic, "/pibot01/ain/light");
        assert_eq!((light.min, light.max), (Some(0.0), Some(5.0)));
        assert!(
            d.interfaces
                .outputs
                .iter()
                .any(|i| i.topic == "/garden/errors")
        );
    }

    #[test]
    fn get_reads_now_answers_and_queues_the_reading_for_publishing() {
        let topics = Topics::default();
        let (mut svc, sim) = rig(dht22::SPEC);
        let woken = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let w = woken.clone();
        svc.set_waker(std::sync::Arc::new(move || {
            w.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let ctx = at(&topics, 77);
        let v = svc.get("humidity", &ctx).unwrap();
        assert_eq!(
            (v["unit"].clone(), v["ts"].clone()),
            (json!("%"), json!(77))
        );
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 1);
        let out = svc.wake(&ctx);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "/pibot01/dht22/humidity");
        assert!(svc.wake(&ctx).is_empty());
        let all = svc.get("", &ctx).unwrap();
        assert!(all["temperature"]["value"].is_f64());
        assert!(matches!(
            svc.get("pressure", &ctx),
            Err(ServiceError::UnknownItem(_))
        ));
        sim.fail_next(1);
        let err = svc.get("temperature", &ctx).unwrap_err().to_string();
        assert!(err.contains("temperature: "), "{err}");
    }

    #[test]
    fn bad_configuration_is_refused_whole_and_changes_nothing() {
        let topics = Topics::default();
        let ctx = at(&topics, 0);
        let cases: Vec<(Spec, Value, &str)> = vec![
            (dht22::SPEC, json!({"interval_ms": 500}), "interval_ms"),
            (dht22::SPEC, json!({"interval_ms": "fast"}), "interval_ms"),
            (dht22::SPEC, json!({"channels": []}), "no channels"),
            (
                dht22::SPEC,
                json!({"topics": {"pressure": "/p"}}),
                "topics.pressure",
            ),
            (
                sonar::SPEC,
                json!({"topics": {"distance": "/a/+"}}),
                "topics.distance",
            ),
            (
                sonar::SPEC,
                json!({"retry_ms": 5000, "interval_ms": 1000}),
                "retry_ms",
            ),
            (sonar::SPEC, json!({"colour": 1}), "colour"),
            (ain::SPEC, json!({"channels": []}), "at least one"),
            (
                ain::SPEC,
                json!({"channels": (0..=MAX_CHANNELS)
                    .map(|i| json!({"name": format!("c{i}"), "channel": i % 8}))
                    .collect::<Vec<_>>()}),
                "at most 64",
            ),
            (
                ain::SPEC,
                json!({"channels": [{"name": "a", "channel": 0}, {"name": "a", "channel": 1}]}),
                "used twice",
            ),
            (
                ain::SPEC,
                json!({"channels": [{"name": "error", "channel": 0}]}),
                "reserved",
            ),
            (
                ain::SPEC,
                json!({"channels": [{"name": "config", "channel": 0}]}),
                "reserved",
            ),
            (
                ain::SPEC,
                json!({"channels": [{"name": "x", "channel": 1, "min_v": 3, "max_v": 1}]}),
                "min_v",
            ),
            (
                ain::SPEC,
                json!({"channels": [{"name": "x", "channel": -1}]}),
                "channels[0].channel",
            ),
        ];
        for (spec, body, needle) in cases {
            let (mut svc, _) = rig(spec);
            svc.control(&Body::Json(json!({"interval_ms": 3000})), &ctx)
                .unwrap();
            let before = svc.config().clone();
            let err = svc
                .control(&Body::Json(body.clone()), &ctx)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{} {body}: {err}", spec.name);
            assert_eq!(svc.config(), &before);
        }
        let (mut svc, _) = rig(sonar::SPEC);
        assert!(svc.control(&Body::Text("fast".into()), &ctx).is_err());
    }

    #[test]
    fn saved_state_round_trips() {
        let topics = Topics::default();
        let ctx = at(&topics, 0);
        let (mut a, _) = rig(ain::SPEC);
        a.control(
            &Body::Json(json!({"channels": [{"name": "x", "channel": 3}]})),
            &ctx,
        )
        .unwrap();
        let (mut b, _) = rig(ain::SPEC);
        b.restore(a.saved_state().unwrap(), &ctx).unwrap();
        assert_eq!(a.config(), b.config());
        assert!(b.restore(json!({"channels": 5}), &ctx).is_err());
        assert_eq!(a.config(), b.config());
    }

    /// A failed read is answered with the item and the sensor's own error,
    /// kept as the source (not flattened to text), and the same failure is
    /// what the health shows.
    #[test]
    fn a_failed_read_keeps_the_hw_error_as_its_source() {
        let topics = Topics::default();
        let ctx = at(&topics, 0);
        let (mut svc, sim) = rig(dht22::SPEC);
        sim.fail_next(1);
        let err = svc.get("temperature", &ctx).unwrap_err();
        assert!(matches!(
            &err,
            ServiceError::Sensor(SensorError::Read(ReadError { item, .. })) if item == "temperature"
        ));
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<HwError>());
        assert!(source.is_some(), "{err:?}");
        assert_eq!(err.to_string(), format!("temperature: {}", source.unwrap()));

        sim.fail_next(1);
        svc.tick(&ctx);
        let failure = svc.alert.as_ref().unwrap();
        assert_eq!(
            svc.health(),
            Some(Health::Alert {
                reason: failure.to_string()
            })
        );
    }

    /// Configuration errors are variants that say what was wrong, and a
    /// JSON shape error keeps serde's error as its source.
    #[test]
    fn configuration_errors_are_typed() {
        use crate::channels::ChannelListError;
        let config = SensorConfig::from_json(
            json!({"channels": [{"name": "a", "channel": 0}, {"name": "a", "channel": 1}]}),
        )
        .unwrap();
        assert!(matches!(
            config.validate(&ain::SPEC),
            Err(SensorConfigError::Channels(ChannelListError::NameUsedTwice { index: 1, ref name }))
                if name == "a"
        ));
        assert!(matches!(
            config.validate(&dht22::SPEC),
            Err(SensorConfigError::NoChannels { service: "dht22" })
        ));
        let err = SensorConfig::from_json(json!({"interval_ms": "fast"})).unwrap_err();
        assert!(
            matches!(&err, SensorConfigError::Shape(ShapeError { path, .. }) if path == "interval_ms")
        );
        let source = std::error::Error::source(&err);
        assert!(
            source.is_some_and(|s| s.is::<serde_json::Error>()),
            "{err:?}"
        );
    }
}
