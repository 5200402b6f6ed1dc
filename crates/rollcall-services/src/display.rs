//! The `display` service (the notes' `display_driver`): text sent to its
//! input topic goes on a character display, its control topic clears and
//! dims it, and its buttons, if it has any, are published on its output
//! topic. What the screen shows is published retained on its contents topic,
//! so the dashboard can show a display it cannot see.
//!
//! Every topic is configurable, so the notes' `/display`, `/dbuts` and
//! `/dcontrol` work as written. The input's payload is parsed by
//! [`parse_input`], which the fuzz target `display_input` exercises.

use std::sync::Mutex;

use rollcall_hw::display::Display;
use rollcall_hw::gpio::EventWaker;
use rollcall_proto::json::{self, Object};
use rollcall_proto::topic::check_topic;
use rollcall_proto::{
    Body, Description, Health, Interface, Interfaces, ProtoError, Request, ValueType,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Ctx, Outcome, Publish, Service, ServiceError};

/// The display's topics; each defaults to `/{host}/display/{input|buttons|control|contents}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    /// Where text to show arrives (default `/{host}/display/text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Where button changes are published (default `/{host}/display/buttons`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// A further control topic (the notes' `/dcontrol`); `/{host}/display/control` always works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
    /// Where the screen's contents are published retained (default `/{host}/display/contents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<String>,
}

/// The keys of a control body that configure; the rest are commands.
const CONFIG_KEYS: [&str; 4] = ["input", "output", "control", "contents"];

/// What is wrong with the display's topics; each message starts with the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisplayConfigError {
    /// A topic that cannot be used.
    #[error("{key}: {source}")]
    Topic {
        /// The key: `input`, `output`, `control` or `contents`.
        key: &'static str,
        /// What the topic grammar says of it.
        #[source]
        source: ProtoError,
    },
    /// One topic for two keys.
    #[error("{key}: `{topic}` is used for two things")]
    UsedTwice {
        /// The later key.
        key: &'static str,
        /// The topic.
        topic: String,
    },
}

/// Why the display refused what it was sent: a message on its input topic,
/// a control body, a saved state.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// The payload is not text, or not JSON of a usable shape.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// A `row` or `col` that is not a byte.
    #[error("{field}: a number from 0 to 255")]
    Place {
        /// `row` or `col`.
        field: &'static str,
    },
    /// A `clear` that is not a boolean.
    #[error("clear: true or false")]
    Clear,
    /// A field the input does not have.
    #[error("no field `{0}` in display input (text, row, col, clear)")]
    UnknownField(String),
    /// JSON input that is neither text nor an object.
    #[error("display input: text, or {{\"text\":..,\"row\":..,\"col\":..}}")]
    NotText,
    /// A place outside the screen; nothing was written.
    #[error("row {row}, column {col} is outside the {cols}x{rows} display")]
    Outside {
        /// The row asked for.
        row: u8,
        /// The column asked for.
        col: u8,
        /// The display's columns.
        cols: u8,
        /// The display's rows.
        rows: u8,
    },
    /// A control body that is not a JSON object.
    #[error("expected a JSON object: {{\"clear\":true}}, {{\"brightness\":50}}, or topics")]
    NotAnObject,
    /// A brightness that is not 0 to 100.
    #[error("brightness: a whole number from 0 to 100")]
    Brightness,
    /// A control key that is neither a command nor a topic.
    #[error("unknown key `{0}` (clear, brightness, input, output, control, contents)")]
    UnknownKey(String),
    /// Topics of the wrong type.
    #[error("{0}")]
    TopicsShape(#[source] serde_json::Error),
    /// Topics that cannot be used.
    #[error(transparent)]
    Topics(#[from] DisplayConfigError),
    /// A saved state that does not read as one.
    #[error("saved state: {0}")]
    SavedState(#[source] serde_json::Error),
    /// Saved topics that cannot be used.
    #[error("saved state: {0}")]
    SavedTopics(#[source] DisplayConfigError),
    /// A saved brightness above 100.
    #[error("saved state: brightness above 100")]
    SavedBrightness,
}

impl DisplayConfig {
    /// Checks the topics: no wildcards, none used twice.
    pub fn check(&self) -> Result<(), DisplayConfigError> {
        let topics = [
            ("input", &self.input),
            ("output", &self.output),
            ("control", &self.control),
            ("contents", &self.contents),
        ];
        for (key, topic) in topics {
            if let Some(t) = topic {
                check_topic(t, "topic")
                    .map_err(|source| DisplayConfigError::Topic { key, source })?;
            }
        }
        for (i, (key, topic)) in topics.iter().enumerate() {
            if let Some(t) = topic
                && topics[..i].iter().any(|(_, o)| o.as_ref() == Some(t))
            {
                return Err(DisplayConfigError::UsedTwice {
                    key,
                    topic: t.clone(),
                });
            }
        }
        Ok(())
    }
}

/// What a message on the input topic asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShowText {
    /// Plain text: the screen is cleared and the text written from the top
    /// left, each line on the next row.
    Replace(String),
    /// JSON `{"text":..,"row":..,"col":..,"clear":..}`: the text at a place,
    /// later lines on the rows below starting at the same column.
    At {
        /// The text.
        text: String,
        /// The first row (0 is the top).
        row: u8,
        /// The column (0 is the left).
        col: u8,
        /// Whether the screen is cleared first.
        clear: bool,
    },
}

/// Reads a message from the input topic: plain text, a JSON string, or a
/// JSON object with `text` and optional `row`, `col`, `clear`. Control
/// characters other than newlines are dropped.
pub fn parse_input(payload: &[u8]) -> Result<ShowText, DisplayError> {
    let value = match json::parse_value(payload, rollcall_proto::MAX_PAYLOAD) {
        Ok(v) => v,
        Err(ProtoError::Json(_)) => {
            // Not JSON: the text itself (already checked to be UTF-8).
            let text = std::str::from_utf8(payload).map_err(|_| ProtoError::NotUtf8)?;
            return Ok(ShowText::Replace(printable(
                text.trim_end_matches(['\n', '\r']),
            )));
        }
        Err(e) => return Err(e.into()),
    };
    match value {
        Value::String(s) => Ok(ShowText::Replace(printable(&s))),
        Value::Number(n) => Ok(ShowText::Replace(n.to_string())),
        Value::Object(mut map) => {
            let text = json::take_str(&mut map, "text")?;
            let place = |map: &mut Object, field: &'static str| -> Result<u8, DisplayError> {
                match json::take_opt_u64(map, field)? {
                    None => Ok(0),
                    Some(v) => u8::try_from(v).map_err(|_| DisplayError::Place { field }),
                }
            };
            let row = place(&mut map, "row")?;
            let col = place(&mut map, "col")?;
            let clear = match map.remove("clear") {
                None => false,
                Some(Value::Bool(b)) => b,
                Some(_) => return Err(DisplayError::Clear),
            };
            if let Some(key) = map.keys().next() {
                return Err(DisplayError::UnknownField(key.clone()));
            }
            Ok(ShowText::At {
                text: printable(&text),
                row,
                col,
                clear,
            })
        }
        _ => Err(DisplayError::NotText),
    }
}

fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| *c == '\n' || !c.is_control())
        .collect()
}

/// What a control body asks for, checked whole.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRequest {
    /// New topics, replacing the old ones whole, when any was given.
    pub config: Option<DisplayConfig>,
    /// Blank the screen.
    pub clear: bool,
    /// A new brightness, 0 to 100.
    pub brightness: Option<u8>,
}

/// Reads a control body: any of the configuration keys (`input`, `output`,
/// `control`, `contents`) and the commands `clear` and `brightness`.
pub fn parse_control(body: &Body) -> Result<ControlRequest, DisplayError> {
    let Body::Json(Value::Object(map)) = body else {
        return Err(DisplayError::NotAnObject);
    };
    let mut map = map.clone();
    let clear = match map.remove("clear") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(DisplayError::Clear),
    };
    let brightness = match map.remove("brightness") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|p| *p <= 100)
                .map(|p| p as u8)
                .ok_or(DisplayError::Brightness)?,
        ),
    };
    let config = if map.is_empty() {
        None
    } else {
        if let Some(key) = map.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
            return Err(DisplayError::UnknownKey(key.clone()));
        }
        let config: DisplayConfig =
            serde_json::from_value(Value::Object(map)).map_err(DisplayError::TopicsShape)?;
        config.check()?;
        Some(config)
    };
    Ok(ControlRequest {
        config,
        clear,
        brightness,
    })
}

/// What survives a restart: the topics and the brightness.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    #[serde(default)]
    config: DisplayConfig,
    #[serde(default = "full")]
    brightness: u8,
}

fn full() -> u8 {
    100
}

/// A character display as a service.
pub struct DisplayService {
    /// Behind a lock only because a service must be `Sync`; one task uses it.
    display: Mutex<Box<dyn Display>>,
    config: DisplayConfig,
    brightness: u8,
    alert: Option<String>,
}

impl DisplayService {
    /// The service on `display`, with the default topics, at full brightness.
    pub fn new(display: Box<dyn Display>) -> Self {
        DisplayService {
            display: Mutex::new(display),
            config: DisplayConfig::default(),
            brightness: 100,
            alert: None,
        }
    }

    fn screen(&self) -> std::sync::MutexGuard<'_, Box<dyn Display>> {
        self.display.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn topic(&self, configured: &Option<String>, rest: &str, ctx: &Ctx<'_>) -> String {
        configured
            .clone()
            .unwrap_or_else(|| ctx.topics.service(ctx.host, "display", rest))
    }

    fn input_topic(&self, ctx: &Ctx<'_>) -> String {
        self.topic(&self.config.input, "text", ctx)
    }

    fn contents_publish(&self, ctx: &Ctx<'_>) -> Publish {
        let mut map = Object::new();
        map.insert("rows".into(), self.screen().contents().into());
        map.insert("brightness".into(), self.brightness.into());
        map.insert("ts".into(), ctx.now_ms.into());
        Publish {
            topic: self.topic(&self.config.contents, "contents", ctx),
            payload: serde_json::to_vec(&map).unwrap_or_default(),
            retain: true,
        }
    }

    /// A hardware result, remembered as the health.
    fn hw<T>(&mut self, result: Result<T, rollcall_hw::HwError>) -> Result<T, ServiceError> {
        match result {
            Ok(v) => {
                self.alert = None;
                Ok(v)
            }
            Err(e) => {
                self.alert = Some(e.to_string());
                Err(e.into())
            }
        }
    }

    /// Shows `what`, checked against the screen's size before anything is written.
    fn show(&mut self, what: ShowText, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let (cols, rows) = self.screen().size();
        let (text, row, col, clear) = match what {
            ShowText::Replace(text) => (text, 0, 0, true),
            ShowText::At {
                text,
                row,
                col,
                clear,
            } => (text, row, col, clear),
        };
        if row >= rows || col >= cols {
            return Err(DisplayError::Outside {
                row,
                col,
                cols,
                rows,
            }
            .into());
        }
        let health_before = self.alert.clone();
        let result = {
            let mut screen = self.screen();
            let mut result = if clear { screen.clear() } else { Ok(()) };
            // Lines past the last row are clipped, as characters past the last column are.
            for (i, line) in text.split('\n').enumerate().take(usize::from(rows - row)) {
                if result.is_err() {
                    break;
                }
                if !line.is_empty() {
                    result = screen.write_at(row + i as u8, col, line);
                }
            }
            result
        };
        let written = self.hw(result);
        let description_changed = health_before != self.alert;
        written?;
        Ok(Outcome {
            publish: vec![self.contents_publish(ctx)],
            description_changed,
            ..Outcome::default()
        })
    }

    fn set_brightness(&mut self, percent: u8) -> Result<(), ServiceError> {
        let result = self.screen().set_brightness(percent);
        self.hw(result)?;
        self.brightness = percent;
        Ok(())
    }
}

impl Service for DisplayService {
    fn health(&self) -> Option<Health> {
        Some(Health::from_alert(self.alert.as_deref()))
    }

    fn name(&self) -> &str {
        "display"
    }

    fn describe(&self, ctx: &Ctx<'_>) -> Description {
        let service = |rest: &str| ctx.topics.service(ctx.host, "display", rest);
        let (cols, rows) = self.screen().size();
        let buttons = self.screen().buttons();
        // A configured control topic (the notes' `/dcontrol`) is the one the
        // description names, so the answer's flat `control` field is it;
        // `/{host}/display/control` keeps working beside it.
        let controls = vec![
            Interface::new(
                "control",
                self.topic(&self.config.control, "control", ctx),
                ValueType::Json,
            )
            .doc("{\"clear\":true}, {\"brightness\":0-100}, or topics: input, output, control, contents"),
        ];
        let mut outputs = vec![
            Interface::new(
                "contents",
                self.topic(&self.config.contents, "contents", ctx),
                ValueType::Json,
            )
            .retained()
            .doc("what the screen shows: {\"rows\":[..],\"brightness\":N,\"ts\":..}"),
        ];
        if !buttons.is_empty() {
            outputs.push(
                Interface::new(
                    "buttons",
                    self.topic(&self.config.output, "buttons", ctx),
                    ValueType::Json,
                )
                .doc(&format!(
                    "{{\"button\":name,\"pressed\":bool,\"ts\":..}} for buttons {}",
                    buttons.join(", ")
                )),
            );
        }
        Description {
            function: "display".into(),
            doc: Some(format!("a {cols}x{rows} character display")),
            interfaces: Interfaces {
                inputs: vec![
                    Interface::new("text", self.input_topic(ctx), ValueType::String).doc(
                        "plain text from the top left (newlines go to the next row), or {\"text\",\"row\",\"col\",\"clear\"}",
                    ),
                ],
                outputs,
                functions: vec![
                    Interface::new("contents", service("get/contents"), ValueType::Json)
                        .doc("what the screen shows"),
                ],
                controls,
            },
            health: self.health(),
        }
    }

    fn get(&mut self, item: &str, _ctx: &Ctx<'_>) -> Result<Value, ServiceError> {
        let screen = self.screen();
        let (cols, rows) = screen.size();
        let mut map = Object::new();
        map.insert("rows".into(), screen.contents().into());
        map.insert("brightness".into(), self.brightness.into());
        map.insert("cols".into(), cols.into());
        map.insert("lines".into(), rows.into());
        map.insert("buttons".into(), screen.buttons().into());
        drop(screen);
        match item {
            "" | "contents" => Ok(map.into()),
            "config" => Ok(serde_json::to_value(&self.config).unwrap_or_default()),
            other => Err(ServiceError::UnknownItem(other.to_owned())),
        }
    }

    /// Configures (any of `input`, `output`, `control`, `contents`: the
    /// topics, replaced whole) and commands (`clear`, `brightness`), all
    /// checked before any is carried out. The commands go first: when the
    /// display fails one, the error is the answer and the topics stay as
    /// they were (an error carries no outcome to re-subscribe and save by).
    fn control(&mut self, body: &Body, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let ControlRequest {
            config,
            clear,
            brightness,
        } = parse_control(body)?;
        let mut outcome = Outcome::default();
        let health_before = self.alert.clone();
        if clear {
            let result = self.screen().clear();
            self.hw(result)?;
        }
        if let Some(p) = brightness {
            self.set_brightness(p)?;
            outcome.persist = true;
        }
        if let Some(config) = config {
            self.config = config;
            outcome.persist = true;
            outcome.description_changed = true;
        }
        outcome.description_changed |= health_before != self.alert;
        outcome.publish.push(self.contents_publish(ctx));
        outcome.reply.insert(
            "config".into(),
            serde_json::to_value(&self.config).unwrap_or_default(),
        );
        Ok(outcome)
    }

    fn topics_in(&self, ctx: &Ctx<'_>) -> Vec<String> {
        let mut topics = vec![self.input_topic(ctx)];
        topics.extend(self.config.control.clone());
        topics
    }

    fn on_message(
        &mut self,
        topic: &str,
        payload: &[u8],
        ctx: &Ctx<'_>,
    ) -> Result<Outcome, ServiceError> {
        if self.config.control.as_deref() == Some(topic) {
            let request = Request::parse(payload)?;
            return self.control(&request.body, ctx);
        }
        let what = parse_input(payload)?;
        self.show(what, ctx)
    }

    fn set_waker(&mut self, waker: EventWaker) {
        self.screen().set_waker(waker);
    }

    fn wake(&mut self, ctx: &Ctx<'_>) -> Vec<Publish> {
        // Every service is woken on any hardware event: a poll that succeeds
        // says nothing about the screen, so it does not clear an alert that
        // a failed write left.
        let polled = self.screen().poll_buttons();
        let changes = match polled {
            Ok(changes) => changes,
            Err(e) => {
                self.alert = Some(e.to_string());
                return Vec::new();
            }
        };
        let topic = self.topic(&self.config.output, "buttons", ctx);
        changes
            .into_iter()
            .map(|(button, pressed)| {
                let mut map = Object::new();
                map.insert("button".into(), button.into());
                map.insert("pressed".into(), pressed.into());
                map.insert("ts".into(), ctx.now_ms.into());
                Publish {
                    topic: topic.clone(),
                    payload: serde_json::to_vec(&map).unwrap_or_default(),
                    retain: false,
                }
            })
            .collect()
    }

    fn saved_state(&self) -> Option<Value> {
        serde_json::to_value(Saved {
            config: self.config.clone(),
            brightness: self.brightness,
        })
        .ok()
    }

    fn restore(&mut self, saved: Value, ctx: &Ctx<'_>) -> Result<Vec<Publish>, ServiceError> {
        let saved: Saved = serde_json::from_value(saved).map_err(DisplayError::SavedState)?;
        saved.config.check().map_err(DisplayError::SavedTopics)?;
        if saved.brightness > 100 {
            return Err(DisplayError::SavedBrightness.into());
        }
        self.config = saved.config;
        // A display that fails now keeps the saved topics (refusing the
        // state would fall back to the configuration file's); the failure
        // shows as the health, and the brightness stays unset.
        let _ = self.set_brightness(saved.brightness);
        Ok(vec![self.contents_publish(ctx)])
    }
}

#[cfg(test)]
mod tests {
    use rollcall_hw::display::sim::SimDisplay;
    use rollcall_proto::Topics;
    use serde_json::json;

    use super::*;

    fn at(topics: &Topics) -> Ctx<'_> {
        Ctx {
            host: "pibot01",
            topics,
            now_ms: 3,
        }
    }

    #[test]
    fn the_input_parser_takes_text_strings_and_placed_json() {
        assert_eq!(
            parse_input(b"Hello\nworld\n").unwrap(),
            ShowText::Replace("Hello\nworld".into())
        );
        assert_eq!(
            parse_input(b"\"hi\"").unwrap(),
            ShowText::Replace("hi".into())
        );
        assert_eq!(parse_input(b"42").unwrap(), ShowText::Replace("42".into()));
        assert_eq!(
            parse_input(br#"{"text":"T=21\u0007C","row":1,"col":3}"#).unwrap(),
            ShowText::At {
                text: "T=21C".into(),
                row: 1,
                col: 3,
                clear: false
            }
        );
        for bad in [
            &br#"{"row":1}"#[..],
            br#"{"text":"x","row":300}"#,
            br#"{"text":"x","row":-1}"#,
            br#"{"text":"x","colour":"red"}"#,
            br#"{"text":"x","clear":"yes"}"#,
            b"[1,2]",
            b"\xff\xfe",
        ] {
            assert!(
                parse_input(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn text_shows_contents_are_published_and_bad_places_change_nothing() {
        let topics = Topics::default();
        let ctx = at(&topics);
        let sim = SimDisplay::new(16, 2, &["A", "B"]);
        let handle = sim.handle();
        let mut svc = DisplayService::new(Box::new(sim));
        let input = svc.topics_in(&ctx)[0].clone();
        assert_eq!(input, "/pibot01/display/text");
        let out = svc
            .on_message(&input, b"Hello\nworld\nthird", &ctx)
            .unwrap();
        assert_eq!(handle.contents()[0].trim_end(), "Hello");
        assert_eq!(handle.contents()[1].trim_end(), "world");
        assert_eq!(out.publish[0].topic, "/pibot01/display/contents");
        assert!(out.publish[0].retain);
        let c: Value = serde_json::from_slice(&out.publish[0].payload).unwrap();
        assert_eq!(c["rows"][0].as_str().unwrap().trim_end(), "Hello");
        svc.on_message(&input, br#"{"text":"21C","row":1,"col":13}"#, &ctx)
            .unwrap();
        assert_eq!(handle.contents()[1], "world        21C");
        let before = handle.contents();
        let err = svc
            .on_message(&input, br#"{"text":"x","row":2}"#, &ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the 16x2"), "{err}");
        assert_eq!(handle.contents(), before);
        svc.control(&Body::Json(json!({"clear": true, "brightness": 30})), &ctx)
            .unwrap();
        assert!(handle.contents().iter().all(|r| r.trim().is_empty()));
        assert_eq!(handle.brightness(), 30);
        assert_eq!(svc.get("", &ctx).unwrap()["brightness"], 30);
    }

    #[test]
    fn the_notes_topics_work_and_buttons_are_published_on_the_output() {
        let topics = Topics::default();
        let ctx = at(&topics);
        let sim = SimDisplay::new(16, 2, &["A"]);
        let handle = sim.handle();
        let mut svc = DisplayService::new(Box::new(sim));
        let out = svc
            .control(
                &Body::Json(
                    json!({"input": "/display", "output": "/dbuts", "control": "/dcontrol"}),
                ),
                &ctx,
            )
            .unwrap();
        assert!(out.persist && out.description_changed);
        assert_eq!(svc.topics_in(&ctx), ["/display", "/dcontrol"]);
        svc.on_message("/display", b"notes", &ctx).unwrap();
        assert_eq!(handle.contents()[0].trim_end(), "notes");
        svc.on_message("/dcontrol", br#"{"brightness":0}"#, &ctx)
            .unwrap();
        assert_eq!(handle.brightness(), 0);
        handle.press("A").unwrap();
        let out = svc.wake(&ctx);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "/dbuts");
        let v: Value = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(
            (v["button"].clone(), v["pressed"].clone()),
            (json!("A"), json!(true))
        );
        let d = svc.describe(&ctx);
        assert_eq!(d.interfaces.inputs[0].topic, "/display");
        assert!(d.interfaces.outputs.iter().any(|i| i.topic == "/dbuts"));
        assert_eq!(d.interfaces.controls[0].topic, "/dcontrol");
    }

    #[test]
    fn bad_control_is_refused_whole() {
        let topics = Topics::default();
        let ctx = at(&topics);
        let sim = SimDisplay::new(16, 2, &[]);
        let handle = sim.handle();
        let mut svc = DisplayService::new(Box::new(sim));
        svc.on_message("/pibot01/display/text", b"keep", &ctx)
            .unwrap();
        for (bad, needle) in [
            (json!({"brightness": 101}), "brightness"),
            (json!({"brightness": 50, "clear": "yes"}), "clear"),
            (json!({"clear": true, "input": "/a/#"}), "input"),
            (json!({"input": "/x", "output": "/x"}), "two things"),
            (json!({"colour": 1}), "colour"),
        ] {
            let err = svc.control(&Body::Json(bad), &ctx).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert_eq!(handle.contents()[0].trim_end(), "keep");
            assert_eq!(handle.brightness(), 100);
            assert_eq!(svc.topics_in(&ctx), ["/pibot01/display/text"]);
        }
        assert!(svc.control(&Body::Text("clear".into()), &ctx).is_err());
    }

    /// A 16x2 display whose every write fails, as an unplugged LCD's do.
    struct Unplugged;

    impl Display for Unplugged {
        fn size(&self) -> (u8, u8) {
            (16, 2)
        }
        fn write_at(&mut self, _: u8, _: u8, _: &str) -> Result<(), rollcall_hw::HwError> {
            Err(gone())
        }
        fn clear(&mut self) -> Result<(), rollcall_hw::HwError> {
            Err(gone())
        }
        fn set_brightness(&mut self, _: u8) -> Result<(), rollcall_hw::HwError> {
            Err(gone())
        }
        fn poll_buttons(&mut self) -> Result<Vec<(String, bool)>, rollcall_hw::HwError> {
            Ok(Vec::new())
        }
        fn buttons(&self) -> Vec<String> {
            Vec::new()
        }
        fn contents(&self) -> Vec<String> {
            vec![" ".repeat(16); 2]
        }
    }

    fn gone() -> rollcall_hw::HwError {
        rollcall_hw::HwError::io("/dev/i2c-1", std::io::Error::other("unplugged"))
    }

    #[test]
    fn a_failing_display_is_an_alert_that_keeps_its_topics_and_survives_a_wake() {
        let topics = Topics::default();
        let ctx = at(&topics);
        let mut svc = DisplayService::new(Box::new(Unplugged));
        let err = svc
            .control(
                &Body::Json(json!({"clear": true, "input": "/display"})),
                &ctx,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("unplugged"), "{err}");
        // Refused: the topics are the old ones, not half-applied.
        assert_eq!(svc.topics_in(&ctx), ["/pibot01/display/text"]);
        assert!(matches!(
            svc.describe(&ctx).health,
            Some(Health::Alert { .. })
        ));
        // Another service's hardware event wakes every service.
        assert!(svc.wake(&ctx).is_empty());
        assert!(matches!(
            svc.describe(&ctx).health,
            Some(Health::Alert { .. })
        ));
        // A restart keeps the saved topics even when the display fails.
        let out = svc
            .restore(json!({"config": {"input": "/x"}, "brightness": 50}), &ctx)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(svc.topics_in(&ctx), ["/x"]);
        assert!(matches!(
            svc.describe(&ctx).health,
            Some(Health::Alert { .. })
        ));
    }

    /// What used to be a string is a variant: a caller tells a bad place
    /// from a bad topic by matching, and a display that fails answers with
    /// its `HwError` as the source.
    #[test]
    fn refusals_are_typed_and_a_failing_display_keeps_its_hw_error() {
        assert!(matches!(
            parse_input(br#"{"text":"x","row":300}"#),
            Err(DisplayError::Place { field: "row" })
        ));
        assert!(matches!(
            parse_input(b"\xff"),
            Err(DisplayError::Proto(ProtoError::NotUtf8))
        ));
        assert!(matches!(
            parse_control(&Body::Json(json!({"input": "/x", "output": "/x"}))),
            Err(DisplayError::Topics(DisplayConfigError::UsedTwice {
                key: "output",
                ..
            }))
        ));
        let topics = Topics::default();
        let ctx = at(&topics);
        let mut svc = DisplayService::new(Box::new(Unplugged));
        assert!(matches!(
            svc.on_message("/pibot01/display/text", br#"{"text":"x","row":2}"#, &ctx),
            Err(ServiceError::Display(DisplayError::Outside {
                row: 2,
                rows: 2,
                ..
            }))
        ));
        let err = svc
            .on_message("/pibot01/display/text", b"hello", &ctx)
            .unwrap_err();
        let source =
            std::error::Error::source(&err).and_then(|s| s.downcast_ref::<rollcall_hw::HwError>());
        assert!(
            matches!(source, Some(rollcall_hw::HwError::Io { .. })),
            "{err:?}"
        );
    }
}
