//! The GPIO service as a state machine: it applies a configuration to a chip
//! whole or not at all, drives outputs and PWM on `set`, answers `get`,
//! turns the chip's edge events into debounced input values, scans the
//! inputs that report by scan, and says what the agent must persist.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rollcall_hw::HwError;
use rollcall_hw::gpio::{Bias, Edge, EventWaker, GpioChip, LineConfig, Pin};
use rollcall_hw::pwm::{Polarity as HwPolarity, PwmChannel, PwmSettings};
use rollcall_proto::json::Object;
use rollcall_proto::{Body, Description, Health, Interface, Interfaces, ValueType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{ConfigError, GpioConfig, Polarity, Pull, Report};
use super::text;
use crate::{Ctx, Outcome, Publish, Service, ServiceError};

/// A PWM channel for a pin, and whether it drives the pin's GPIO line itself
/// (software PWM), so that the line must be requested as an output.
pub struct PwmLine {
    /// The channel.
    pub channel: Box<dyn PwmChannel>,
    /// Whether the channel toggles the pin's GPIO line.
    pub on_gpio_line: bool,
}

/// Opens the PWM channel that drives a pin: hardware where the pin has one,
/// software or simulated otherwise. Chosen by whoever builds the service.
pub type PwmOpener = Box<dyn FnMut(Pin) -> Result<PwmLine, HwError> + Send + Sync>;

/// The hardware PWM channel (chip, channel) that drives a pin, where one does:
/// two PWM pins on one channel cannot both be driven.
pub type PwmChannelOf = fn(Pin) -> Option<(u32, u32)>;

/// The shortest tick the service asks for, in ms.
const MIN_TICK_MS: u64 = 10;

/// What survives a restart: the configuration and the last commanded values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// The applied configuration.
    pub config: GpioConfig,
    /// The last commanded level of each output, by name.
    pub levels: BTreeMap<String, bool>,
    /// The last commanded duty of each PWM output, by name, in percent.
    pub duties: BTreeMap<String, f64>,
}

/// An input's reporting state.
#[derive(Debug, Clone, Default)]
struct InputState {
    /// The last value published.
    value: Option<bool>,
    /// When it was published (unix ms): a scanned input publishes again
    /// after its `refresh_ms` without a change.
    published_ms: Option<u64>,
    /// When the last accepted edge happened (chip clock, ns).
    last_edge_ns: Option<u64>,
    /// When the next scan is due (unix ms).
    next_scan_ms: u64,
    /// An edge was ignored as bounce: read the line again at this time (unix
    /// ms), so a level that settled inside the debounce window is not missed.
    recheck_ms: Option<u64>,
}

/// The GPIO service.
pub struct GpioService {
    chip: Box<dyn GpioChip>,
    open_pwm: PwmOpener,
    state: SavedState,
    /// Open PWM channels, by pin.
    pwm: HashMap<Pin, PwmLine>,
    /// Each input's reporting state, in the order of `state.config.inputs`.
    inputs: Vec<InputState>,
    waker: Option<EventWaker>,
    /// What is failing now, by what fails (`input button`, `pwm fan`): one
    /// success clears only its own entry. The errors themselves are kept;
    /// the health and the `alerts` of an answer render them.
    errors: BTreeMap<String, HwError>,
    channel_of: Option<PwmChannelOf>,
}

/// Why the GPIO service refused a request, a configuration or a saved state.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The configuration is wrong: the field, and why.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Two PWM pins of the configuration on one hardware channel.
    #[error(
        "pwm[{index}].pin: pin {pin} shares PWM channel {channel} of pwmchip{chip} with pin {other}"
    )]
    SharedPwmChannel {
        /// The later of the two in `pwm`.
        index: usize,
        /// Its pin.
        pin: Pin,
        /// The PWM chip.
        chip: u32,
        /// The channel on that chip.
        channel: u32,
        /// The earlier pin on the channel.
        other: Pin,
    },
    /// A new PWM output's channel could not be opened; nothing was changed.
    #[error("pwm `{name}` on pin {pin}: {source}")]
    PwmOpen {
        /// The PWM output's name.
        name: String,
        /// Its pin.
        pin: Pin,
        /// Why the channel would not open.
        #[source]
        source: HwError,
    },
    /// The chip refused the new line configuration; nothing was changed.
    #[error("the chip refused the configuration: {0}")]
    ChipRefused(#[source] HwError),
    /// A level that is not one.
    #[error(transparent)]
    Level(#[from] NotALevel),
    /// One entry of `set/outputs` is not a level; none was set.
    #[error("`{key}`: {source}")]
    OutputLevel {
        /// The entry's key: an output's name or pin.
        key: String,
        /// What was wrong with its value.
        #[source]
        source: NotALevel,
    },
    /// A duty cycle that is not a number.
    #[error("a duty cycle is a number of percent, 0 to 100")]
    NotADuty,
    /// A duty cycle outside 0 to 100 %.
    #[error("duty {0} is out of range: 0 to 100")]
    DutyOutOfRange(f64),
    /// `set/outputs` with something other than an object.
    #[error("set/outputs takes an object: {{\"name or pin\": level, ...}}")]
    OutputsNotAnObject,
    /// `set/inputs` with something other than a list.
    #[error("set/inputs takes a list of pins: [17, 22]")]
    InputsNotAList,
    /// `set/inputs` with a list of something other than pin numbers.
    #[error("set/inputs takes a list of pin numbers")]
    InputsNotPins,
    /// A `control` body that is neither JSON nor the text form.
    #[error("expected a configuration: a JSON object, or the text form's output/pwm/input blocks")]
    NotAConfiguration,
    /// The saved state does not read as one.
    #[error("saved state: {0}")]
    SavedState(#[source] serde_json::Error),
}

/// A word that is not a level: the words that are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a level is 1, 0, true, false, on or off")]
pub struct NotALevel;

/// A level as people type it: `1`, `0`, `true`, `false`, `on`, `off`, any
/// case, with or without JSON quotes.
pub fn parse_level(body: &Body) -> Result<bool, ServiceError> {
    level(body).map_err(|e| GpioError::from(e).into())
}

/// [`parse_level`], with its own error, for callers that wrap it.
fn level(body: &Body) -> Result<bool, NotALevel> {
    let word = match body {
        Body::Text(t) => t.clone(),
        Body::Json(Value::String(s)) => s.clone(),
        Body::Json(Value::Bool(b)) => return Ok(*b),
        Body::Json(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    match word.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "high" => Ok(true),
        "0" | "false" | "off" | "low" => Ok(false),
        _ => Err(NotALevel),
    }
}

/// A duty cycle in percent, 0 to 100.
fn parse_duty(body: &Body) -> Result<f64, ServiceError> {
    let duty = match body {
        Body::Json(Value::Number(n)) => n.as_f64(),
        Body::Json(Value::String(s)) | Body::Text(s) => {
            s.trim().trim_end_matches('%').trim().parse().ok()
        }
        _ => None,
    }
    .ok_or(GpioError::NotADuty)?;
    if !(0.0..=100.0).contains(&duty) {
        return Err(GpioError::DutyOutOfRange(duty).into());
    }
    Ok(duty)
}

fn bias(pull: Pull) -> Bias {
    match pull {
        Pull::None => Bias::Disabled,
        Pull::Up => Bias::PullUp,
        Pull::Down => Bias::PullDown,
    }
}

fn pwm_settings(period_us: u64, duty: f64, polarity: Polarity) -> PwmSettings {
    let period_ns = period_us * 1000;
    PwmSettings {
        period_ns,
        duty_ns: (period_ns as f64 * duty / 100.0).round() as u64,
        polarity: match polarity {
            Polarity::Normal => HwPolarity::Normal,
            Polarity::Inversed => HwPolarity::Inversed,
        },
        enabled: true,
    }
}

impl GpioService {
    /// A service with nothing configured on `chip`.
    pub fn new(chip: Box<dyn GpioChip>, open_pwm: PwmOpener) -> Self {
        GpioService {
            chip,
            open_pwm,
            state: SavedState::default(),
            pwm: HashMap::new(),
            inputs: Vec::new(),
            waker: None,
            errors: BTreeMap::new(),
            channel_of: None,
        }
    }

    /// Refuses configurations with two PWM pins on one hardware channel, as
    /// `channel_of` maps pins to channels.
    pub fn with_pwm_channels(mut self, channel_of: PwmChannelOf) -> Self {
        self.channel_of = Some(channel_of);
        self
    }

    /// Whether PWM on pins `a` and `b` is one channel: the same pin, or two
    /// pins of one hardware channel. A PWM moved between such pins keeps its
    /// channel open: a second handle on it, closed with the old pin, would
    /// switch it off.
    fn same_channel(&self, a: Pin, b: Pin) -> bool {
        a == b
            || self
                .channel_of
                .is_some_and(|of| of(a).is_some() && of(a) == of(b))
    }

    /// Two PWM pins of `config` on one hardware channel, as an error.
    fn check_pwm_channels(&self, config: &GpioConfig) -> Result<(), ServiceError> {
        let Some(channel_of) = self.channel_of else {
            return Ok(());
        };
        let mut seen: HashMap<(u32, u32), Pin> = HashMap::new();
        for (i, p) in config.pwm.iter().enumerate() {
            let Some(channel) = channel_of(p.pin) else {
                continue;
            };
            if let Some(other) = seen.insert(channel, p.pin) {
                return Err(GpioError::SharedPwmChannel {
                    index: i,
                    pin: p.pin,
                    chip: channel.0,
                    channel: channel.1,
                    other,
                }
                .into());
            }
        }
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> &GpioConfig {
        &self.state.config
    }

    /// Applies `config` whole or not at all. Outputs keep a level commanded
    /// before (from `levels`) when their name and pin are unchanged, else
    /// start at their `init`.
    fn apply(
        &mut self,
        config: GpioConfig,
        levels: &BTreeMap<String, bool>,
        duties: &BTreeMap<String, f64>,
        ctx: &Ctx<'_>,
    ) -> Result<Vec<Publish>, ServiceError> {
        config
            .validate(self.chip.line_count())
            .map_err(GpioError::from)?;
        self.check_pwm_channels(&config)?;
        let level_of = |name: &str, pin: u32, init: u8| {
            let unchanged = self
                .state
                .config
                .outputs
                .iter()
                .any(|o| o.name == name && o.pin == pin)
                || self.state.config.outputs.is_empty();
            match levels.get(name) {
                Some(level) if unchanged => *level,
                _ => init == 1,
            }
        };
        let mut lines = BTreeMap::new();
        let mut new_levels = BTreeMap::new();
        for o in &config.outputs {
            let level = level_of(&o.name, o.pin, o.init);
            new_levels.insert(o.name.clone(), level);
            lines.insert(
                o.pin,
                LineConfig::Output {
                    initial: level,
                    bias: bias(o.pull),
                },
            );
        }
        for i in &config.inputs {
            lines.insert(
                i.pin,
                LineConfig::Input {
                    bias: bias(i.pull),
                    edges: i.report == Report::Change,
                    debounce: Some(Duration::from_millis(i.debounce_ms)).filter(|d| !d.is_zero()),
                },
            );
        }
        // Channels for new PWM pins open before anything changes, so that a
        // failure leaves all as it was. A pin that stays PWM keeps its open
        // channel: closing it would disable the output it still drives.
        let mut opened = HashMap::new();
        for p in &config.pwm {
            let open = self.pwm.keys().any(|&k| self.same_channel(k, p.pin));
            if !open && !opened.contains_key(&p.pin) {
                let channel = (self.open_pwm)(p.pin).map_err(|source| GpioError::PwmOpen {
                    name: p.name.clone(),
                    pin: p.pin,
                    source,
                })?;
                opened.insert(p.pin, channel);
            }
        }
        // Software PWM toggles its pin's line, which must be an output.
        for p in &config.pwm {
            let line = self
                .pwm
                .iter()
                .find(|(k, _)| self.same_channel(**k, p.pin))
                .map(|(_, l)| l)
                .or_else(|| opened.get(&p.pin));
            if line.is_some_and(|l| l.on_gpio_line) {
                let idle = LineConfig::Output {
                    initial: false,
                    bias: Bias::Disabled,
                };
                lines.insert(p.pin, idle);
            }
        }
        self.chip
            .configure(&lines)
            .map_err(GpioError::ChipRefused)?;
        if let Some(waker) = &self.waker {
            self.chip.set_waker(waker.clone());
        }
        // Committed. Channels of pins no longer PWM close when `old` drops.
        let mut old = std::mem::take(&mut self.pwm);
        let mut new_duties = BTreeMap::new();
        self.errors.clear();
        for p in &config.pwm {
            let kept = old.keys().copied().find(|&k| self.same_channel(k, p.pin));
            let Some(mut line) = kept
                .and_then(|k| old.remove(&k))
                .or_else(|| opened.remove(&p.pin))
            else {
                continue;
            };
            let duty = duties.get(&p.name).copied().unwrap_or(p.init);
            if let Err(e) = line
                .channel
                .apply(&pwm_settings(p.period_us, duty, p.polarity))
            {
                self.errors.insert(format!("pwm `{}`", p.name), e);
            }
            new_duties.insert(p.name.clone(), duty);
            self.pwm.insert(p.pin, line);
        }
        // A software PWM on a pin that is now an output wrote its idle level
        // as it stopped: the output gets its own level back.
        let was_pwm: Vec<Pin> = old.keys().copied().collect();
        drop(old);
        for o in &config.outputs {
            if was_pwm.contains(&o.pin) {
                let level = new_levels.get(&o.name).copied().unwrap_or(false);
                if let Err(e) = self.chip.set(o.pin, level) {
                    self.errors.insert(format!("output `{}`", o.name), e);
                }
            }
        }
        self.inputs = vec![
            InputState {
                next_scan_ms: ctx.now_ms,
                ..InputState::default()
            };
            config.inputs.len()
        ];
        self.state = SavedState {
            config,
            levels: new_levels,
            duties: new_duties,
        };
        let mut out = self.states(ctx);
        let all: Vec<usize> = (0..self.inputs.len()).collect();
        out.extend(self.read_inputs(&all, ctx));
        Ok(out)
    }

    /// Retained states of every output and PWM.
    fn states(&self, ctx: &Ctx<'_>) -> Vec<Publish> {
        let levels = self.state.levels.iter().map(|(name, level)| {
            let topic = ctx
                .topics
                .service(ctx.host, "gpio", &format!("output/{name}"));
            Publish::reading(topic, u8::from(*level).into(), None, ctx.now_ms)
        });
        let duties = self.state.duties.iter().map(|(name, duty)| {
            let topic = ctx.topics.service(ctx.host, "gpio", &format!("pwm/{name}"));
            Publish::reading(topic, (*duty).into(), Some("%"), ctx.now_ms)
        });
        levels.chain(duties).collect()
    }

    /// Where an input's values go.
    fn input_topic(input: &super::config::InputConfig, ctx: &Ctx<'_>) -> String {
        input.on_change.clone().unwrap_or_else(|| {
            ctx.topics
                .service(ctx.host, "gpio", &format!("input/{}", input.name))
        })
    }

    /// Reads the inputs (indices into the configuration's) and publishes
    /// each value.
    fn read_inputs(&mut self, inputs: &[usize], ctx: &Ctx<'_>) -> Vec<Publish> {
        self.read_inputs_where(inputs, ctx, |_, _, _| true)
    }

    /// Reads the inputs (indices into the configuration's) and publishes
    /// the readings `publish` picks,
    /// given the input, its reporting state and the value read. A reading
    /// left out changes nothing: the last published value and time stay.
    fn read_inputs_where(
        &mut self,
        inputs: &[usize],
        ctx: &Ctx<'_>,
        publish: impl Fn(&super::config::InputConfig, &InputState, bool) -> bool,
    ) -> Vec<Publish> {
        let mut out = Vec::new();
        for &index in inputs {
            let (Some(input), Some(state)) = (
                self.state.config.inputs.get(index),
                self.inputs.get_mut(index),
            ) else {
                continue;
            };
            match self.chip.get(input.pin) {
                Ok(value) => {
                    // (Checked first: the key is built only when there are errors.)
                    if !self.errors.is_empty() {
                        self.errors.remove(&format!("input `{}`", input.name));
                    }
                    if !publish(input, state, value) {
                        continue;
                    }
                    state.value = Some(value);
                    state.published_ms = Some(ctx.now_ms);
                    out.push(Self::input_reading(input, value, ctx));
                }
                Err(e) => {
                    self.errors.insert(format!("input `{}`", input.name), e);
                }
            }
        }
        out
    }

    fn input_reading(input: &super::config::InputConfig, value: bool, ctx: &Ctx<'_>) -> Publish {
        let payload = json!({"value": u8::from(value), "ts": ctx.now_ms});
        Publish {
            topic: Self::input_topic(input, ctx),
            payload: payload.to_string().into_bytes(),
            retain: true,
        }
    }

    /// Finds a configured item by name, or by pin number written as text.
    fn output_named(&self, item: &str) -> Option<String> {
        let by_pin = item.parse::<u32>().ok();
        self.state
            .config
            .outputs
            .iter()
            .find(|o| o.name == item || Some(o.pin) == by_pin)
            .map(|o| o.name.clone())
    }

    fn set_output(
        &mut self,
        name: &str,
        level: bool,
        ctx: &Ctx<'_>,
    ) -> Result<Publish, ServiceError> {
        let pin = self
            .state
            .config
            .outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.pin)
            .ok_or_else(|| ServiceError::UnknownItem(name.to_owned()))?;
        self.chip.set(pin, level)?;
        self.state.levels.insert(name.to_owned(), level);
        let topic = ctx
            .topics
            .service(ctx.host, "gpio", &format!("output/{name}"));
        Ok(Publish::reading(
            topic,
            u8::from(level).into(),
            None,
            ctx.now_ms,
        ))
    }

    /// `set/outputs`: `{"pump_drive":1,"23":0}`, all checked before any is set.
    fn set_outputs(&mut self, body: &Body, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let Body::Json(Value::Object(map)) = body else {
            return Err(GpioError::OutputsNotAnObject.into());
        };
        let mut planned = Vec::new();
        for (key, value) in map {
            let name = self
                .output_named(key)
                .ok_or_else(|| ServiceError::UnknownItem(key.clone()))?;
            let level =
                level(&Body::Json(value.clone())).map_err(|source| GpioError::OutputLevel {
                    key: key.clone(),
                    source,
                })?;
            planned.push((name, level));
        }
        let mut publish = Vec::new();
        for (name, level) in planned {
            publish.push(self.set_output(&name, level, ctx)?);
        }
        Ok(Outcome {
            publish,
            persist: true,
            ..Outcome::default()
        })
    }

    /// `set/inputs`: `[17,22]` makes those pins inputs (with no pull,
    /// reporting on change), as a whole new configuration.
    fn set_inputs(&mut self, body: &Body, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let Body::Json(Value::Array(items)) = body else {
            return Err(GpioError::InputsNotAList.into());
        };
        let pins: Vec<u32> = items
            .iter()
            .map(|v| v.as_u64().and_then(|p| u32::try_from(p).ok()))
            .collect::<Option<_>>()
            .ok_or(GpioError::InputsNotPins)?;
        let mut config = self.state.config.clone();
        config.outputs.retain(|o| !pins.contains(&o.pin));
        config.pwm.retain(|p| !pins.contains(&p.pin));
        for pin in pins {
            if !config.inputs.iter().any(|i| i.pin == pin) {
                config.inputs.push(super::config::InputConfig {
                    name: format!("pin{pin}"),
                    pin,
                    pull: Pull::None,
                    report: Report::Change,
                    debounce_ms: 5,
                    scan_ms: None,
                    refresh_ms: None,
                    on_change: None,
                });
            }
        }
        self.replace(config, ctx)
    }

    fn replace(&mut self, config: GpioConfig, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let levels = self.state.levels.clone();
        let duties = self.state.duties.clone();
        let publish = self.apply(config, &levels, &duties, ctx)?;
        // Applied, but the hardware refused part of it (a PWM write): the
        // answer says so, and so does the service's health.
        let mut reply = Object::new();
        if !self.errors.is_empty() {
            let alerts: Vec<String> = self
                .errors
                .iter()
                .map(|(what, error)| format!("{what}: {error}"))
                .collect();
            reply.insert("alerts".into(), alerts.into());
        }
        Ok(Outcome {
            reply,
            publish,
            description_changed: true,
            persist: true,
        })
    }

    fn values(&self) -> Value {
        let inputs: Object = self
            .state
            .config
            .inputs
            .iter()
            .zip(&self.inputs)
            .map(|(input, s)| (input.name.clone(), s.value.map(u8::from).into()))
            .collect();
        let outputs: Object = self
            .state
            .levels
            .iter()
            .map(|(name, l)| (name.clone(), u8::from(*l).into()))
            .collect();
        let pwm: Object = self
            .state
            .duties
            .iter()
            .map(|(name, d)| (name.clone(), (*d).into()))
            .collect();
        json!({"inputs": inputs, "outputs": outputs, "pwm": pwm})
    }
}

impl Service for GpioService {
    fn health(&self) -> Option<Health> {
        Some(match self.errors.iter().next() {
            None => Health::Ok,
            Some((what, error)) => Health::Alert {
                reason: format!("{what}: {error}"),
            },
        })
    }

    fn name(&self) -> &str {
        "gpio"
    }

    fn describe(&self, ctx: &Ctx<'_>) -> Description {
        let t = |rest: &str| ctx.topics.service(ctx.host, "gpio", rest);
        let cfg = &self.state.config;
        let mut inputs = Vec::new();
        for o in &cfg.outputs {
            inputs.push(
                Interface::new(&o.name, t(&format!("set/{}", o.name)), ValueType::Bool)
                    .range(0.0, 1.0)
                    .doc(&format!("drives pin {}", o.pin)),
            );
        }
        for p in &cfg.pwm {
            inputs.push(
                Interface::new(&p.name, t(&format!("set/{}", p.name)), ValueType::Float)
                    .unit("%")
                    .range(0.0, 100.0)
                    .doc(&format!(
                        "duty cycle of pin {}, period {} µs",
                        p.pin, p.period_us
                    )),
            );
        }
        inputs.push(
            Interface::new("outputs", t("set/outputs"), ValueType::Json)
                .doc("several outputs at once"),
        );
        inputs.push(
            Interface::new("inputs", t("set/inputs"), ValueType::Json)
                .doc("makes the listed pins inputs"),
        );
        let mut outputs = Vec::new();
        for i in &cfg.inputs {
            let how = match i.report {
                Report::Change => "on change".to_owned(),
                Report::Scan => match i.refresh_ms {
                    None => format!("on change, read every {} ms", i.scan_ms.unwrap_or_default()),
                    Some(refresh) => format!(
                        "on change, read every {} ms, and every {refresh} ms unchanged",
                        i.scan_ms.unwrap_or_default()
                    ),
                },
            };
            outputs.push(
                Interface::new(&i.name, Self::input_topic(i, ctx), ValueType::Bool)
                    .range(0.0, 1.0)
                    .retained()
                    .doc(&format!("pin {}, reported {how}", i.pin)),
            );
        }
        for o in &cfg.outputs {
            outputs.push(
                Interface::new(&o.name, t(&format!("output/{}", o.name)), ValueType::Bool)
                    .range(0.0, 1.0)
                    .retained()
                    .doc("the output's level after each change"),
            );
        }
        for p in &cfg.pwm {
            outputs.push(
                Interface::new(&p.name, t(&format!("pwm/{}", p.name)), ValueType::Float)
                    .unit("%")
                    .range(0.0, 100.0)
                    .retained(),
            );
        }
        let functions = vec![
            Interface::new("all", t("get"), ValueType::Json).doc("every value"),
            Interface::new("input", t("get/input"), ValueType::Json)
                .doc("every input; get/input/{name or pin} for one"),
            Interface::new("config", t("get/config"), ValueType::Json)
                .doc("the configuration in force"),
        ];
        let controls = vec![
            Interface::new("control", t("control"), ValueType::Json)
                .doc("the whole configuration, as JSON or the notes' text form"),
            Interface::new("setup", t("setup"), ValueType::Json).doc("the same as control"),
        ];
        Description {
            function: "gpio".into(),
            doc: Some("GPIO outputs, PWM and inputs, configured over MQTT".into()),
            interfaces: Interfaces {
                inputs,
                outputs,
                functions,
                controls,
            },
            health: self.health(),
        }
    }

    fn get(&mut self, item: &str, _ctx: &Ctx<'_>) -> Result<Value, ServiceError> {
        let values = self.values();
        let (kind, which) = item.split_once('/').unwrap_or((item, ""));
        let list = match kind {
            "" => return Ok(values),
            "config" => return Ok(serde_json::to_value(&self.state.config).unwrap_or_default()),
            "input" | "inputs" => "inputs",
            "output" | "outputs" => "outputs",
            "pwm" => "pwm",
            _ => return Err(ServiceError::UnknownItem(item.to_owned())),
        };
        if which.is_empty() {
            return Ok(values[list].clone());
        }
        let by_pin = which.parse::<u32>().ok();
        let cfg = &self.state.config;
        let name = match list {
            "inputs" => cfg
                .inputs
                .iter()
                .find(|i| i.name == which || Some(i.pin) == by_pin)
                .map(|i| &i.name),
            "outputs" => cfg
                .outputs
                .iter()
                .find(|o| o.name == which || Some(o.pin) == by_pin)
                .map(|o| &o.name),
            _ => cfg
                .pwm
                .iter()
                .find(|p| p.name == which || Some(p.pin) == by_pin)
                .map(|p| &p.name),
        }
        .ok_or_else(|| ServiceError::UnknownItem(item.to_owned()))?;
        Ok(values[list][name].clone())
    }

    fn set(&mut self, item: &str, body: &Body, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        match item {
            "outputs" => return self.set_outputs(body, ctx),
            "inputs" => return self.set_inputs(body, ctx),
            _ => {}
        }
        if let Some(name) = self.output_named(item) {
            let publish = vec![self.set_output(&name, parse_level(body)?, ctx)?];
            return Ok(Outcome {
                publish,
                persist: true,
                ..Outcome::default()
            });
        }
        let by_pin = item.parse::<u32>().ok();
        let Some(p) = self
            .state
            .config
            .pwm
            .iter()
            .find(|p| p.name == item || Some(p.pin) == by_pin)
            .cloned()
        else {
            return Err(ServiceError::UnknownItem(item.to_owned()));
        };
        let duty = parse_duty(body)?;
        let line = self
            .pwm
            .get_mut(&p.pin)
            .ok_or_else(|| ServiceError::UnknownItem(item.to_owned()))?;
        line.channel
            .apply(&pwm_settings(p.period_us, duty, p.polarity))?;
        self.errors.remove(&format!("pwm `{}`", p.name));
        self.state.duties.insert(p.name.clone(), duty);
        let topic = ctx
            .topics
            .service(ctx.host, "gpio", &format!("pwm/{}", p.name));
        Ok(Outcome {
            publish: vec![Publish::reading(topic, duty.into(), Some("%"), ctx.now_ms)],
            persist: true,
            ..Outcome::default()
        })
    }

    fn control(&mut self, body: &Body, ctx: &Ctx<'_>) -> Result<Outcome, ServiceError> {
        let config = match body {
            Body::Json(value @ Value::Object(_)) => {
                GpioConfig::from_json(value.clone()).map_err(GpioError::from)?
            }
            Body::Text(t) => text::parse(t).map_err(GpioError::from)?,
            Body::Json(_) | Body::Empty => return Err(GpioError::NotAConfiguration.into()),
        };
        self.replace(config, ctx)
    }

    /// The greatest common divisor of the scan intervals, so that every
    /// input is read on its own interval exactly; sooner while a line must
    /// be read again after bounce.
    fn tick_every(&self) -> Option<Duration> {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        let scans = self
            .state
            .config
            .inputs
            .iter()
            .filter(|i| i.report == Report::Scan)
            .filter_map(|i| i.scan_ms)
            .reduce(gcd);
        let rechecks = self
            .state
            .config
            .inputs
            .iter()
            .zip(&self.inputs)
            .filter(|(_, s)| s.recheck_ms.is_some())
            .map(|(i, _)| i.debounce_ms.max(1))
            .min();
        // Intervals like 999 and 1000 ms have a divisor of 1 ms: no tick is
        // sooner than 10 ms, and each input keeps its own schedule.
        scans
            .into_iter()
            .chain(rechecks)
            .min()
            .map(|ms| Duration::from_millis(ms.max(MIN_TICK_MS)))
    }

    fn tick(&mut self, ctx: &Ctx<'_>) -> Vec<Publish> {
        // Runs up to a hundred times a second on an idle agent: it allocates
        // only for inputs that are due.
        let now = ctx.now_ms;
        let mut due = Vec::new();
        let inputs = self.state.config.inputs.iter().zip(&mut self.inputs);
        for (index, (input, s)) in inputs.enumerate() {
            let Some(every) = input.scan_ms.filter(|_| input.report == Report::Scan) else {
                continue;
            };
            if s.next_scan_ms <= now {
                s.next_scan_ms = now + every;
                due.push(index);
            }
        }
        // A scan publishes what changed, and what its `refresh_ms` says is
        // due again: reading ten lines every 100 ms costs little, publishing
        // them all every time was most of an idle agent's CPU.
        let mut out = self.read_inputs_where(&due, ctx, |input, state, value| {
            let changed = state.value != Some(value);
            let refresh_due = input
                .refresh_ms
                .zip(state.published_ms)
                .is_some_and(|(every, at)| now.saturating_sub(at) >= every);
            changed || refresh_due
        });
        // Lines that bounced: publish the level they settled at, if it changed.
        for index in 0..self.inputs.len() {
            let s = &mut self.inputs[index];
            if s.recheck_ms.is_none_or(|at| at > now) {
                continue;
            }
            s.recheck_ms = None;
            let before = s.value;
            let reading = self.read_inputs(&[index], ctx);
            if self.inputs[index].value != before {
                out.extend(reading);
            }
        }
        out
    }

    fn set_waker(&mut self, waker: EventWaker) {
        self.chip.set_waker(waker.clone());
        self.waker = Some(waker);
    }

    /// Turns the chip's edge events into input values: an edge sooner than
    /// `debounce_ms` after the last accepted one on its pin is bounce.
    fn wake(&mut self, ctx: &Ctx<'_>) -> Vec<Publish> {
        let mut out = Vec::new();
        for event in self.chip.take_events() {
            let Some((input, state)) = self
                .state
                .config
                .inputs
                .iter()
                .zip(&mut self.inputs)
                .find(|(i, _)| i.pin == event.pin && i.report == Report::Change)
            else {
                continue;
            };
            let debounce_ns = input.debounce_ms * 1_000_000;
            if state
                .last_edge_ns
                .is_some_and(|last| event.timestamp_ns.saturating_sub(last) < debounce_ns)
            {
                state.recheck_ms = Some(ctx.now_ms + input.debounce_ms);
                continue;
            }
            state.last_edge_ns = Some(event.timestamp_ns);
            let value = event.edge == Edge::Rising;
            if state.value == Some(value) {
                continue;
            }
            state.value = Some(value);
            out.push(Self::input_reading(input, value, ctx));
        }
        out
    }

    fn saved_state(&self) -> Option<Value> {
        serde_json::to_value(&self.state).ok()
    }

    fn restore(&mut self, saved: Value, ctx: &Ctx<'_>) -> Result<Vec<Publish>, ServiceError> {
        let saved: SavedState = serde_json::from_value(saved).map_err(GpioError::SavedState)?;
        self.apply(saved.config, &saved.levels, &saved.duties, ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use rollcall_hw::gpio::sim::{SimChip, SimHandle};
    use rollcall_proto::Topics;

    use super::*;

    /// A PWM channel that remembers what it was told.
    #[derive(Clone, Default)]
    struct FakePwm(Arc<Mutex<Vec<(Pin, PwmSettings)>>>, Pin);

    impl PwmChannel for FakePwm {
        fn apply(&mut self, settings: &PwmSettings) -> Result<(), HwError> {
            self.0.lock().unwrap().push((self.1, *settings));
            Ok(())
        }
        fn settings(&self) -> Option<PwmSettings> {
            self.0.lock().unwrap().last().map(|(_, s)| *s)
        }
    }

    struct Rig {
        svc: GpioService,
        sim: SimHandle,
        clock: Arc<AtomicU64>,
        pwm: Arc<Mutex<Vec<(Pin, PwmSettings)>>>,
        opens: Arc<AtomicU64>,
        topics: Topics,
    }

    impl Rig {
        fn new() -> Rig {
            let clock = Arc::new(AtomicU64::new(0));
            let c = clock.clone();
            let chip = SimChip::with_clock(28, Arc::new(move || c.load(Ordering::SeqCst)));
            let sim = chip.handle();
            let pwm: Arc<Mutex<Vec<(Pin, PwmSettings)>>> = Arc::default();
            let opens = Arc::new(AtomicU64::new(0));
            let (log, count) = (pwm.clone(), opens.clone());
            let opener: PwmOpener = Box::new(move |pin| {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(PwmLine {
                    channel: Box::new(FakePwm(log.clone(), pin)),
                    on_gpio_line: false,
                })
            });
            Rig {
                svc: GpioService::new(Box::new(chip), opener),
                sim,
                clock,
                pwm,
                opens,
                topics: Topics::default(),
            }
        }

        fn ctx(&self, now_ms: u64) -> Ctx<'_> {
            Ctx {
                host: "pizero2",
                topics: &self.topics,
                now_ms,
            }
        }

        fn control(&mut self, config: Value) -> Result<Outcome, ServiceError> {
            let topics = self.topics.clone();
            let ctx = at(&topics, 0);
            self.svc.control(&Body::Json(config), &ctx)
        }
    }

    /// What the service is told at `now_ms` on host pizero2.
    fn at(topics: &Topics, now_ms: u64) -> Ctx<'_> {
        Ctx {
            host: "pizero2",
            topics,
            now_ms,
        }
    }

    fn notes_config() -> Value {
        json!({
            "outputs": [{"name":"pump_drive","pin":25,"init":0,"pull":"down"},
                        {"name":"lamp","pin":23,"init":1}],
            "pwm": [{"name":"sonar_angle","pin":18,"init":20,"period_us":1000}],
            "inputs": [{"name":"button","pin":22,"pull":"down","report":"change","debounce_ms":5},
                       {"name":"float_switch","pin":17,"pull":"up","report":"scan","scan_ms":500}]
        })
    }

    fn find(out: &[Publish], topic: &str) -> Option<Value> {
        out.iter()
            .find(|p| p.topic == topic)
            .map(|p| serde_json::from_slice(&p.payload).unwrap())
    }

    #[test]
    fn the_notes_configuration_drives_the_chip_and_publishes_states() {
        let mut rig = Rig::new();
        let out = rig.control(notes_config()).unwrap();
        assert!(out.description_changed && out.persist);
        assert_eq!(rig.sim.level(25), Some(false));
        assert_eq!(rig.sim.level(23), Some(true));
        // The output's pull reaches the line.
        assert_eq!(
            rig.sim.line_config(25),
            Some(LineConfig::Output {
                initial: false,
                bias: Bias::PullDown
            })
        );
        assert_eq!(
            find(&out.publish, "/pizero2/gpio/output/lamp").unwrap()["value"],
            1
        );
        assert_eq!(
            find(&out.publish, "/pizero2/gpio/pwm/sonar_angle").unwrap()["value"],
            20.0
        );
        // Pull-up, undriven: the float switch reads 1; the button, pulled down, 0.
        assert_eq!(
            find(&out.publish, "/pizero2/gpio/input/float_switch").unwrap()["value"],
            1
        );
        assert_eq!(
            find(&out.publish, "/pizero2/gpio/input/button").unwrap()["value"],
            0
        );
        let (pin, settings) = rig.pwm.lock().unwrap()[0];
        assert_eq!(
            (pin, settings.period_ns, settings.duty_ns),
            (18, 1_000_000, 200_000)
        );
    }

    #[test]
    fn set_by_name_pin_and_many_at_once() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        let topics = rig.topics.clone();
        let ctx = at(&topics, 7);
        for (item, body, level) in [
            ("pump_drive", Body::Text("ON".into()), true),
            ("25", Body::Json(json!("off")), false),
            ("pump_drive", Body::Json(json!(1)), true),
            ("pump_drive", Body::Json(json!(false)), false),
        ] {
            let out = rig.svc.set(item, &body, &ctx).unwrap();
            assert!(out.persist);
            assert_eq!(rig.sim.level(25), Some(level), "{item} {body:?}");
            assert_eq!(out.publish[0].topic, "/pizero2/gpio/output/pump_drive");
            assert!(out.publish[0].retain);
        }
        rig.svc
            .set("outputs", &Body::Json(json!({"pump_drive":1,"23":0})), &ctx)
            .unwrap();
        assert_eq!(
            (rig.sim.level(25), rig.sim.level(23)),
            (Some(true), Some(false))
        );
        // One bad entry: nothing is set.
        let bad = rig.svc.set(
            "outputs",
            &Body::Json(json!({"pump_drive":0,"lamp":"maybe"})),
            &ctx,
        );
        assert!(bad.is_err());
        assert_eq!(rig.sim.level(25), Some(true));
        let out = rig
            .svc
            .set("sonar_angle", &Body::Text("75".into()), &ctx)
            .unwrap();
        assert_eq!(
            find(&out.publish, "/pizero2/gpio/pwm/sonar_angle").unwrap()["value"],
            75.0
        );
        assert!(
            rig.svc
                .set("sonar_angle", &Body::Json(json!(150)), &ctx)
                .is_err()
        );
        assert!(matches!(
            rig.svc.set("nope", &Body::Text("1".into()), &ctx),
            Err(ServiceError::UnknownItem(_))
        ));
        assert!(
            rig.svc
                .set("pump_drive", &Body::Text("maybe".into()), &ctx)
                .is_err()
        );
    }

    #[test]
    fn edges_are_debounced_and_reported_once_per_change() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        let ms = |m: u64| m * 1_000_000;
        rig.clock.store(ms(100), Ordering::SeqCst);
        rig.sim.drive(22, true).unwrap();
        rig.clock.store(ms(101), Ordering::SeqCst); // bounce, 1 ms later
        rig.sim.drive(22, false).unwrap();
        rig.clock.store(ms(102), Ordering::SeqCst);
        rig.sim.drive(22, true).unwrap();
        let topics = rig.topics.clone();
        let ctx = at(&topics, 9);
        let out = rig.svc.wake(&ctx);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            find(&out, "/pizero2/gpio/input/button").unwrap(),
            json!({"value":1,"ts":9})
        );
        rig.clock.store(ms(200), Ordering::SeqCst);
        rig.sim.drive(22, false).unwrap();
        let out = rig.svc.wake(&ctx);
        assert_eq!(
            find(&out, "/pizero2/gpio/input/button").unwrap()["value"],
            0
        );
        assert_eq!(rig.svc.get("input/button", &ctx).unwrap(), json!(0));
        assert_eq!(rig.svc.get("input/22", &ctx).unwrap(), json!(0));
    }

    #[test]
    fn scan_inputs_are_read_at_their_interval() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        assert_eq!(rig.svc.tick_every(), Some(Duration::from_millis(500)));
        let topics = rig.topics.clone();
        let at = |now_ms| at(&topics, now_ms);
        // The configuration published the value; a scan that finds it
        // unchanged publishes nothing (issue 12: quiet when idle).
        assert!(rig.svc.tick(&at(0)).is_empty());
        assert!(rig.svc.tick(&at(499)).is_empty());
        rig.sim.drive(17, false).unwrap();
        // Not read before its interval is up...
        assert!(rig.svc.tick(&at(499)).is_empty());
        // ...and published at the scan that finds it changed.
        let out = rig.svc.tick(&at(500));
        assert_eq!(
            find(&out, "/pizero2/gpio/input/float_switch").unwrap()["value"],
            0
        );
        assert!(rig.svc.tick(&at(1000)).is_empty());
        rig.sim.drive(17, true).unwrap();
        assert_eq!(rig.svc.tick(&at(1500)).len(), 1);
    }

    #[test]
    fn a_scanned_input_with_refresh_ms_is_published_again_when_unchanged() {
        let mut rig = Rig::new();
        rig.control(json!({"inputs":[
            {"name":"tank","pin":17,"report":"scan","scan_ms":100,"refresh_ms":1000}]}))
            .unwrap();
        let topics = rig.topics.clone();
        let at = |now_ms| at(&topics, now_ms);
        // Published at configuration (time 0 in the rig): nothing new
        // until the refresh is due, then once, then again a second later.
        for ms in (100..1000).step_by(100) {
            assert!(rig.svc.tick(&at(ms)).is_empty(), "at {ms} ms");
        }
        let out = rig.svc.tick(&at(1000));
        assert!(find(&out, "/pizero2/gpio/input/tank").is_some(), "{out:?}");
        assert!(rig.svc.tick(&at(1100)).is_empty());
        // A change resets the refresh: published at once, and next only a
        // refresh after it.
        rig.sim.drive(17, true).unwrap();
        assert_eq!(rig.svc.tick(&at(1500)).len(), 1);
        assert!(rig.svc.tick(&at(2000)).is_empty());
        assert_eq!(rig.svc.tick(&at(2500)).len(), 1);
        // The description says how it reports.
        let description = rig.svc.describe(&at(2500));
        let doc = serde_json::to_string(&description).unwrap();
        assert!(doc.contains("every 1000 ms unchanged"), "{doc}");
    }

    #[test]
    fn a_bad_configuration_changes_nothing() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        let before = rig.svc.config().clone();
        for bad in [
            json!({"outputs":[{"name":"a","pin":4},{"name":"b","pin":4}]}),
            json!({"outputs":[{"name":"a","pin":99}]}),
            json!({"pwm":[{"name":"p","pin":18,"init":150}]}),
            json!({"inputs":[{"name":"b","pin":22,"report":"scan"}]}),
            json!({"inputs":[{"name":"b","pin":22,"refresh_ms":5000}]}),
            json!({"inputs":[{"name":"b","pin":22,"report":"scan","scan_ms":100,"refresh_ms":10}]}),
            json!({"outputs":[{"name":"a","pin":4,"colour":"red"}]}),
        ] {
            assert!(rig.control(bad.clone()).is_err(), "{bad}");
            assert_eq!(rig.svc.config(), &before);
            assert_eq!(rig.sim.level(23), Some(true));
        }
    }

    #[test]
    fn set_inputs_turns_outputs_into_inputs() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        let ctx = rig.ctx(0);
        let topics = ctx.topics.clone();
        let ctx = at(&topics, 0);
        let out = rig
            .svc
            .set("inputs", &Body::Json(json!([23, 5])), &ctx)
            .unwrap();
        assert!(out.description_changed);
        let cfg = rig.svc.config();
        assert!(!cfg.outputs.iter().any(|o| o.pin == 23));
        assert!(cfg.inputs.iter().any(|i| i.name == "pin23"));
        assert!(cfg.inputs.iter().any(|i| i.name == "pin5"));
    }

    #[test]
    fn saved_state_restores_configuration_and_commanded_levels() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        let topics = rig.topics.clone();
        let ctx = at(&topics, 0);
        rig.svc
            .set("pump_drive", &Body::Text("1".into()), &ctx)
            .unwrap();
        rig.svc
            .set("sonar_angle", &Body::Text("55".into()), &ctx)
            .unwrap();
        let saved = rig.svc.saved_state().unwrap();

        let mut fresh = Rig::new();
        fresh.svc.restore(saved, &ctx).unwrap();
        assert_eq!(fresh.svc.config(), rig.svc.config());
        // The relay on pump_drive comes back on, not at its init of 0.
        assert_eq!(fresh.sim.level(25), Some(true));
        assert_eq!(fresh.pwm.lock().unwrap()[0].1.duty_ns, 550_000);
    }

    #[test]
    fn the_description_lists_every_pin() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        let d = rig.svc.describe(&rig.ctx(0));
        let topics: Vec<&str> = d
            .interfaces
            .inputs
            .iter()
            .map(|i| i.topic.as_str())
            .collect();
        assert!(topics.contains(&"/pizero2/gpio/set/pump_drive"));
        assert!(topics.contains(&"/pizero2/gpio/set/sonar_angle"));
        let outs: Vec<&str> = d
            .interfaces
            .outputs
            .iter()
            .map(|i| i.topic.as_str())
            .collect();
        assert!(outs.contains(&"/pizero2/gpio/input/button"));
        assert!(outs.contains(&"/pizero2/gpio/output/lamp"));
        let pwm = d
            .interfaces
            .inputs
            .iter()
            .find(|i| i.name == "sonar_angle")
            .unwrap();
        assert_eq!((pwm.unit.as_deref(), pwm.max), (Some("%"), Some(100.0)));
    }

    #[test]
    fn a_pwm_that_stays_keeps_its_channel() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        assert_eq!(rig.opens.load(Ordering::SeqCst), 1);
        // Reconfigured, failed or not, the PWM on 18 is not reopened: closing
        // its channel would switch off the output it still drives.
        let mut changed = notes_config();
        changed["outputs"][1]["init"] = json!(0);
        rig.control(changed).unwrap();
        assert!(
            rig.control(json!({"pwm":[{"name":"p","pin":18,"init":150}]}))
                .is_err()
        );
        assert_eq!(rig.opens.load(Ordering::SeqCst), 1);
        let duties: Vec<u64> = rig
            .pwm
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.duty_ns)
            .collect();
        assert_eq!(duties, [200_000, 200_000]);
    }

    #[test]
    fn a_level_that_settles_inside_the_debounce_window_is_reported() {
        let mut rig = Rig::new();
        let mut config = notes_config();
        config["inputs"][0]["debounce_ms"] = json!(20);
        rig.control(config).unwrap();
        let topics = rig.topics.clone();
        let at = |now_ms| Ctx {
            host: "pizero2",
            topics: &topics,
            now_ms,
        };
        let ms = |m: u64| m * 1_000_000;
        rig.clock.store(ms(100), Ordering::SeqCst);
        rig.sim.drive(22, true).unwrap();
        assert_eq!(rig.svc.wake(&at(1000)).len(), 1);
        // Released 3 ms later: inside the window, ignored for now...
        rig.clock.store(ms(103), Ordering::SeqCst);
        rig.sim.drive(22, false).unwrap();
        assert!(rig.svc.wake(&at(1003)).is_empty());
        assert_eq!(rig.svc.tick_every(), Some(Duration::from_millis(20)));
        // ...and read again once the window has passed.
        let early = rig.svc.tick(&at(1010));
        assert!(find(&early, "/pizero2/gpio/input/button").is_none());
        let out = rig.svc.tick(&at(1023));
        assert_eq!(
            find(&out, "/pizero2/gpio/input/button").unwrap()["value"],
            0
        );
        assert_eq!(rig.svc.tick_every(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn two_pwm_pins_on_one_hardware_channel_are_refused() {
        let mut rig = Rig::new();
        rig.svc.channel_of = Some(rollcall_hw::pwm::pi_pwm_channel);
        let e = rig
            .control(json!({"pwm":[{"name":"a","pin":18},{"name":"b","pin":12}]}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pin 12 shares PWM channel 0 of pwmchip0 with pin 18"),
            "{e}"
        );
        rig.control(json!({"pwm":[{"name":"a","pin":18},{"name":"b","pin":13}]}))
            .unwrap();
    }

    #[test]
    fn a_pi5_has_a_hardware_channel_for_each_pwm_pin() {
        let mut rig = Rig::new();
        rig.svc.channel_of = Some(rollcall_hw::pwm::pi5_pwm_channel);
        // 12 and 18 share a channel on a Pi 4, not on a Pi 5's RP1.
        rig.control(json!({"pwm":[
            {"name":"a","pin":12},{"name":"b","pin":13},
            {"name":"c","pin":18},{"name":"d","pin":19}]}))
            .unwrap();
        assert_eq!(rig.opens.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn software_pwm_gets_its_line_as_an_output() {
        use rollcall_hw::gpio::shared::SharedChip;
        use rollcall_hw::pwm::soft::SoftPwm;
        let sim = SimChip::pi();
        let handle = sim.handle();
        let chip = SharedChip::new(Box::new(sim));
        let lines = chip.clone();
        let opener: PwmOpener = Box::new(move |pin| {
            Ok(PwmLine {
                channel: Box::new(SoftPwm::new(lines.line_setter(pin))),
                on_gpio_line: true,
            })
        });
        let mut svc = GpioService::new(Box::new(chip), opener);
        let topics = Topics::default();
        let ctx = Ctx {
            host: "h",
            topics: &topics,
            now_ms: 0,
        };
        // 100 %: the line is held high, no timing involved.
        let config = json!({"pwm":[{"name":"fan","pin":4,"init":100,"period_us":10000}]});
        svc.control(&Body::Json(config), &ctx).unwrap();
        assert!(handle.line_config(4).is_some_and(|c| c.is_output()));
        svc.set("fan", &Body::Text("0".into()), &ctx).unwrap();
        assert_eq!(svc.get("pwm/fan", &ctx).unwrap(), json!(0.0));
    }

    #[test]
    fn a_pwm_moved_to_the_other_pin_of_its_channel_keeps_the_channel() {
        let mut rig = Rig::new();
        rig.svc.channel_of = Some(rollcall_hw::pwm::pi_pwm_channel);
        rig.control(json!({"pwm":[{"name":"fan","pin":12,"init":10}]}))
            .unwrap();
        rig.control(json!({"pwm":[{"name":"fan","pin":18,"init":10}]}))
            .unwrap();
        assert_eq!(rig.opens.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn levels_as_people_type_them() {
        for (body, level) in [
            (Body::Text("On".into()), true),
            (Body::Text("FALSE".into()), false),
            (Body::Json(json!("1")), true),
            (Body::Json(json!(0)), false),
        ] {
            assert_eq!(parse_level(&body).unwrap(), level);
        }
        assert!(parse_level(&Body::Json(json!(2))).is_err());
        assert!(parse_level(&Body::Empty).is_err());
    }

    /// The error answers are typed: a caller tells a bad value from a bad
    /// configuration by its variant, not by its text, and a PWM channel that
    /// would not open keeps the hardware's error as its source.
    #[test]
    fn refusals_are_typed_and_a_pwm_that_will_not_open_keeps_its_hw_error() {
        let mut rig = Rig::new();
        rig.control(notes_config()).unwrap();
        let topics = rig.topics.clone();
        let ctx = at(&topics, 0);
        assert!(matches!(
            rig.svc.set("sonar_angle", &Body::Json(json!(150)), &ctx),
            Err(ServiceError::Gpio(GpioError::DutyOutOfRange(d))) if d == 150.0
        ));
        assert!(matches!(
            rig.svc.set("outputs", &Body::Json(json!({"lamp": "maybe"})), &ctx),
            Err(ServiceError::Gpio(GpioError::OutputLevel { ref key, .. })) if key == "lamp"
        ));
        assert!(matches!(
            rig.control(json!({"outputs":[{"name":"a","pin":99}]})),
            Err(ServiceError::Gpio(GpioError::Config(ConfigError { ref field, .. })))
                if field == "outputs[0].pin"
        ));

        let opener: PwmOpener = Box::new(|pin| Err(HwError::NoPwmChannel { pin }));
        let mut svc = GpioService::new(Box::new(SimChip::pi()), opener);
        let err = svc
            .control(&Body::Json(json!({"pwm":[{"name":"fan","pin":13}]})), &ctx)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pwm `fan` on pin 13: pin 13 has no hardware PWM channel"
        );
        assert!(matches!(
            err,
            ServiceError::Gpio(GpioError::PwmOpen { pin: 13, .. })
        ));
        let source = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<HwError>());
        assert!(
            matches!(source, Some(HwError::NoPwmChannel { pin: 13 })),
            "{source:?}"
        );
    }
}
