//! The `system` service: the host's uptime, load, memory and CPU temperature,
//! published retained at an interval and answered on `get`.

use std::time::Duration;

use rollcall_hw::system::{SystemSnapshot, SystemSource};
use rollcall_proto::json::Object;
use rollcall_proto::{Body, Description, Health, Interface, Interfaces, ValueType};
use serde_json::Value;

use crate::{Ctx, Outcome, Publish, Service, ServiceError};

/// The shortest and longest publishing interval `control` accepts, in seconds.
const INTERVAL_RANGE_S: (u64, u64) = (1, 86_400);

/// Why the system service refused a `control`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemError {
    /// A body that is not a JSON object.
    #[error("expected a JSON object such as {{\"interval_s\": 10}}")]
    NotAnObject,
    /// A key other than `interval_s`.
    #[error("unknown key `{0}`")]
    UnknownKey(String),
    /// No `interval_s`.
    #[error("missing `interval_s`")]
    MissingInterval,
    /// An `interval_s` that is not a whole number of seconds in range.
    #[error(
        "`interval_s` must be an integer from {} to {}",
        INTERVAL_RANGE_S.0,
        INTERVAL_RANGE_S.1
    )]
    BadInterval,
}

/// The host's vital signs as a service.
pub struct SystemService {
    source: Box<dyn SystemSource>,
    interval: Duration,
    last_error: Option<String>,
}

/// One item of the service: its topic name, unit, type and how to read it.
struct Item {
    name: &'static str,
    unit: Option<&'static str>,
    value_type: ValueType,
    doc: &'static str,
    read: fn(&SystemSnapshot) -> Option<Value>,
}

const ITEMS: [Item; 5] = [
    Item {
        name: "uptime",
        unit: Some("s"),
        value_type: ValueType::Float,
        doc: "seconds since the host booted",
        read: |s| Some(s.uptime_s.into()),
    },
    Item {
        name: "load",
        unit: None,
        value_type: ValueType::Json,
        doc: "load averages over 1, 5 and 15 minutes",
        read: |s| Some(s.load.to_vec().into()),
    },
    Item {
        name: "mem_total",
        unit: Some("kB"),
        value_type: ValueType::Int,
        doc: "total memory",
        read: |s| Some(s.mem_total_kb.into()),
    },
    Item {
        name: "mem_available",
        unit: Some("kB"),
        value_type: ValueType::Int,
        doc: "memory available to new programs",
        read: |s| Some(s.mem_available_kb.into()),
    },
    Item {
        name: "cpu_temp",
        unit: Some("°C"),
        value_type: ValueType::Float,
        doc: "CPU temperature, where the host has a thermal zone",
        read: |s| s.cpu_temp_c.map(Into::into),
    },
];

impl SystemService {
    /// Publishes readings from `source` every `interval`.
    pub fn new(source: Box<dyn SystemSource>, interval: Duration) -> Self {
        SystemService {
            source,
            interval,
            last_error: None,
        }
    }

    fn snapshot(&mut self, now_ms: u64) -> Result<SystemSnapshot, ServiceError> {
        let result = self.source.read(now_ms);
        self.last_error = result.as_ref().err().map(ToString::to_string);
        Ok(result?)
    }
}

impl Service for SystemService {
    fn health(&self) -> Option<Health> {
        Some(Health::from_alert(self.last_error.as_deref()))
    }

    fn name(&self) -> &str {
        "system"
    }

    fn describe(&self, ctx: &Ctx<'_>) -> Description {
        let topic = |rest: &str| ctx.topics.service(ctx.host, "system", rest);
        let outputs = ITEMS
            .iter()
            .map(|item| {
                let mut i = Interface::new(item.name, topic(item.name), item.value_type)
                    .retained()
                    .doc(item.doc);
                i.unit = item.unit.map(str::to_owned);
                i
            })
            .collect();
        let mut functions =
            vec![Interface::new("all", topic("get"), ValueType::Json).doc("every reading at once")];
        functions.extend(ITEMS.iter().map(|item| {
            Interface::new(
                item.name,
                topic(&format!("get/{}", item.name)),
                item.value_type,
            )
        }));
        Description {
            function: "system".into(),
            doc: Some("the host's uptime, load, memory and CPU temperature".into()),
            interfaces: Interfaces {
                inputs: Vec::new(),
                outputs,
                functions,
                controls: vec![
                    Interface::new("control", topic("control"), ValueType::Json)
                        .doc("{\"interval_s\": N}: how often readings are published"),
                ],
            },
            health: self.health(),
        }
    }

    fn get(&mut self, item: &str, ctx: &Ctx<'_>) -> Result<Value, ServiceError> {
        let snap = self.snapshot(ctx.now_ms)?;
        if item.is_empty() {
            let all: Object = ITEMS
                .iter()
                .filter_map(|i| Some((i.name.to_owned(), (i.read)(&snap)?)))
                .collect();
            return Ok(all.into());
        }
        let found = ITEMS
            .iter()
            .find(|i| i.name == item)
            .ok_or_else(|| ServiceError::UnknownItem(item.to_owned()))?;
        Ok((found.read)(&snap).unwrap_or(Value::Null))
    }

    fn control(&mut self, body: &Body, _ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let Body::Json(Value::Object(map)) = body else {
            return Err(SystemError::NotAnObject.into());
        };
        if let Some(key) = map.keys().find(|k| *k != "interval_s") {
            return Err(SystemError::UnknownKey(key.clone()).into());
        }
        let secs = map
            .get("interval_s")
            .ok_or(SystemError::MissingInterval)?
            .as_u64()
            .filter(|s| (INTERVAL_RANGE_S.0..=INTERVAL_RANGE_S.1).contains(s))
            .ok_or(SystemError::BadInterval)?;
        self.interval = Duration::from_secs(secs);
        let mut reply = Object::new();
        reply.insert("interval_s".into(), secs.into());
        Ok(Outcome {
            reply,
            ..Outcome::default()
        })
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn tick(&mut self, ctx: &Ctx<'_>) -> Vec<Publish> {
        let Ok(snap) = self.snapshot(ctx.now_ms) else {
            return Vec::new();
        };
        ITEMS
            .iter()
            .filter_map(|item| {
                let value = (item.read)(&snap)?;
                let topic = ctx.topics.service(ctx.host, "system", item.name);
                Some(Publish::reading(topic, value, item.unit, ctx.now_ms))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_hw::HwError;
    use rollcall_hw::system::SimSystem;
    use rollcall_proto::Topics;

    struct Broken;
    impl SystemSource for Broken {
        fn read(&mut self, _: u64) -> Result<SystemSnapshot, HwError> {
            Err(HwError::io(
                "/proc/uptime",
                std::io::ErrorKind::NotFound.into(),
            ))
        }
    }

    fn ctx(topics: &Topics) -> Ctx<'_> {
        Ctx {
            host: "pizero1",
            topics,
            now_ms: 5_000,
        }
    }

    #[test]
    fn describes_each_reading_with_its_unit() {
        let topics = Topics::default();
        let svc = SystemService::new(Box::new(SimSystem::new(0)), Duration::from_secs(10));
        let d = svc.describe(&ctx(&topics));
        let temp = d
            .interfaces
            .outputs
            .iter()
            .find(|i| i.name == "cpu_temp")
            .unwrap();
        assert_eq!(temp.topic, "/pizero1/system/cpu_temp");
        assert_eq!(temp.unit.as_deref(), Some("°C"));
        assert_eq!(d.interfaces.controls[0].topic, "/pizero1/system/control");
        assert_eq!(d.health, Some(Health::Ok));
    }

    #[test]
    fn tick_publishes_retained_readings() {
        let topics = Topics::default();
        let mut svc = SystemService::new(Box::new(SimSystem::new(0)), Duration::from_secs(10));
        let out = svc.tick(&ctx(&topics));
        assert_eq!(out.len(), ITEMS.len());
        let temp = out.iter().find(|p| p.topic.ends_with("/cpu_temp")).unwrap();
        assert!(temp.retain);
        let v: Value = serde_json::from_slice(&temp.payload).unwrap();
        assert_eq!(v["unit"], "°C");
        assert_eq!(v["ts"], 5_000);
    }

    #[test]
    fn get_answers_one_item_or_all_and_refuses_unknown_ones() {
        let topics = Topics::default();
        let mut svc = SystemService::new(Box::new(SimSystem::new(0)), Duration::from_secs(10));
        assert!(svc.get("", &ctx(&topics)).unwrap()["mem_total"].is_u64());
        assert!(svc.get("uptime", &ctx(&topics)).unwrap().is_f64());
        assert!(matches!(
            svc.get("nope", &ctx(&topics)),
            Err(ServiceError::UnknownItem(_))
        ));
    }

    #[test]
    fn control_validates_before_applying() {
        let topics = Topics::default();
        let mut svc = SystemService::new(Box::new(SimSystem::new(0)), Duration::from_secs(10));
        for bad in [
            serde_json::json!({"interval_s": 0}),
            serde_json::json!({"interval_s": "5"}),
            serde_json::json!({"interval_s": 5, "extra": 1}),
            serde_json::json!({}),
        ] {
            assert!(svc.control(&Body::Json(bad), &ctx(&topics)).is_err());
            assert_eq!(svc.tick_every(), Some(Duration::from_secs(10)));
        }
        svc.control(
            &Body::Json(serde_json::json!({"interval_s": 3})),
            &ctx(&topics),
        )
        .unwrap();
        assert_eq!(svc.tick_every(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_failing_source_shows_as_alert_health() {
        let topics = Topics::default();
        let mut svc = SystemService::new(Box::new(Broken), Duration::from_secs(10));
        assert!(svc.tick(&ctx(&topics)).is_empty());
        assert!(matches!(
            svc.describe(&ctx(&topics)).health,
            Some(Health::Alert { .. })
        ));
        assert!(svc.get("uptime", &ctx(&topics)).is_err());
    }

    /// Each refusal of `control` is its own variant, its text unchanged.
    #[test]
    fn control_refusals_are_typed() {
        let topics = Topics::default();
        let mut svc = SystemService::new(Box::new(SimSystem::new(0)), Duration::from_secs(10));
        let body = Body::Json(serde_json::json!({"interval_s": 5, "extra": 1}));
        let err = svc.control(&body, &ctx(&topics)).unwrap_err();
        assert!(matches!(
            &err,
            ServiceError::System(SystemError::UnknownKey(key)) if key == "extra"
        ));
        assert_eq!(err.to_string(), "unknown key `extra`");
        assert!(matches!(
            svc.control(&Body::Json(serde_json::json!({})), &ctx(&topics)),
            Err(ServiceError::System(SystemError::MissingInterval))
        ));
    }
}
