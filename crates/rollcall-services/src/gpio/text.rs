//! The notes' text form of a GPIO configuration: `output`, `pwm` and `input`
//! blocks of `key value` lines, read into the same shape as the JSON form so
//! that one validation serves both.
//!
//! ```text
//! output
//!      name        pump_drive
//!      pin         25
//!      init        0
//!      pull down
//!      single
//!
//! pwm
//!      name        sonar_angle
//!      pin         18
//!      init        20   (20%)
//!      period      1000
//!      pol         norm
//! ```
//!
//! `#` starts a comment, and so does a `(` after the value, as in the notes'
//! `init 20 (20%)`. `period` is in microseconds; `scan` and `debounce` in
//! milliseconds.

use serde_json::{Map, Value};

use super::config::{ConfigError, GpioConfig};

/// The longest text configuration read, in lines; more is refused.
const MAX_LINES: usize = 2000;

/// One block kind: its header word and its list in [`GpioConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Output,
    Pwm,
    Input,
}

impl Kind {
    fn from_header(word: &str) -> Option<Kind> {
        match word {
            "output" | "outputs" => Some(Kind::Output),
            "pwm" => Some(Kind::Pwm),
            "input" | "inputs" => Some(Kind::Input),
            _ => None,
        }
    }

    fn list(self) -> &'static str {
        match self {
            Kind::Output => "outputs",
            Kind::Pwm => "pwm",
            Kind::Input => "inputs",
        }
    }
}

/// The JSON key a text key stands for, and whether its value is a number.
fn key_of(word: &str) -> (&str, bool) {
    match word {
        "period" | "period_us" => ("period_us", true),
        "pol" | "polarity" => ("polarity", false),
        "scan" | "scan_ms" => ("scan_ms", true),
        "refresh" | "refresh_ms" => ("refresh_ms", true),
        "debounce" | "debounce_ms" => ("debounce_ms", true),
        "pin" | "init" => (word, true),
        other => (other, false),
    }
}

fn line_err(line: usize, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: format!("line {line}"),
        reason: reason.into(),
    }
}

/// The value of a line without its comment: `20 (20%)` is `20`, `20%` is `20`.
fn clean(value: &str) -> &str {
    let value = value.split('#').next().unwrap_or_default();
    let value = value.split('(').next().unwrap_or_default().trim();
    value.strip_suffix('%').unwrap_or(value).trim()
}

/// Reads the text form. Errors name the line, or the block and its line.
pub fn parse(text: &str) -> Result<GpioConfig, ConfigError> {
    let mut lists: Map<String, Value> = Map::new();
    // (kind, index in its list, line of its header), to name blocks in errors.
    let mut blocks: Vec<(Kind, usize, usize)> = Vec::new();
    let mut current: Option<(Kind, Map<String, Value>)> = None;
    let finish = |current: &mut Option<(Kind, Map<String, Value>)>,
                  lists: &mut Map<String, Value>| {
        if let Some((kind, entry)) = current.take() {
            let list = lists
                .entry(kind.list())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(items) = list {
                items.push(Value::Object(entry));
            }
        }
    };
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if line > MAX_LINES {
            return Err(line_err(line, format!("more than {MAX_LINES} lines")));
        }
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let (word, rest) = content
            .split_once(char::is_whitespace)
            .map_or((content, ""), |(w, r)| (w, r.trim()));
        if rest.is_empty()
            && let Some(kind) = Kind::from_header(word)
        {
            finish(&mut current, &mut lists);
            let index = lists
                .get(kind.list())
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            blocks.push((kind, index, line));
            current = Some((kind, Map::new()));
            continue;
        }
        let Some((_, entry)) = current.as_mut() else {
            return Err(line_err(
                line,
                format!("`{word}` outside an output, pwm or input block"),
            ));
        };
        let (key, numeric) = key_of(word);
        let value = clean(rest);
        let value = if value.is_empty() {
            if key != "single" {
                return Err(line_err(line, format!("`{word}` needs a value")));
            }
            Value::Bool(true)
        } else if numeric {
            let number: f64 = value
                .parse()
                .map_err(|_| line_err(line, format!("`{word}` wants a number, not `{value}`")))?;
            // Whole numbers stay integers, so that `pin 25` is a pin.
            if number.fract() == 0.0 && number.abs() < 1e15 {
                Value::from(number as i64)
            } else {
                Value::from(number)
            }
        } else if key == "single" {
            Value::Bool(matches!(value, "yes" | "true" | "1" | "on"))
        } else {
            Value::String(value.to_owned())
        };
        if entry.insert(key.to_owned(), value).is_some() {
            return Err(line_err(line, format!("`{word}` given twice in one block")));
        }
    }
    finish(&mut current, &mut lists);
    if blocks.is_empty() {
        return Err(line_err(0, "no output, pwm or input block"));
    }
    GpioConfig::from_json(Value::Object(lists)).map_err(|mut e| {
        // Name the block by its line: `inputs[1]` means little in text.
        let block = blocks
            .iter()
            .find(|(kind, index, _)| e.field.starts_with(&format!("{}[{index}]", kind.list())));
        if let Some((kind, _, line)) = block {
            e.field = format!("{} ({} block at line {line})", e.field, header(*kind));
        }
        e
    })
}

fn header(kind: Kind) -> &'static str {
    match kind {
        Kind::Output => "output",
        Kind::Pwm => "pwm",
        Kind::Input => "input",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpio::config::{PI_LINES, Polarity, Pull, Report};

    /// The notes' example, as written there (with the pwm on a PWM-capable pin).
    const NOTES: &str = "
output
     name        pump_drive
     pin         25
     init        0
     pull down
     single

pwm
     name        sonar_angle
     pin         18
     init        20   (20%)
     period      1000
     pol         norm

input
     name        sonar_echo
     pin         22
     on_change   /pizero1/gpio/input/sonar_echo
";

    #[test]
    fn the_notes_text_reads_as_the_json_form() {
        let cfg = parse(NOTES).unwrap();
        cfg.validate(PI_LINES).unwrap();
        assert_eq!(cfg.outputs[0].name, "pump_drive");
        assert_eq!(cfg.outputs[0].pull, Pull::Down);
        assert!(cfg.outputs[0].single);
        assert_eq!(cfg.pwm[0].init, 20.0);
        assert_eq!(cfg.pwm[0].period_us, 1000);
        assert_eq!(cfg.pwm[0].polarity, Polarity::Normal);
        assert_eq!(cfg.inputs[0].report, Report::Change);
        assert_eq!(
            cfg.inputs[0].on_change.as_deref(),
            Some("/pizero1/gpio/input/sonar_echo")
        );
    }

    #[test]
    fn scan_inputs_and_comments() {
        let cfg = parse(
            "# the float switch\ninput\n name float # tank\n pin 17\n pull up\n report scan\n scan 500\n refresh 60000\n",
        )
        .unwrap();
        assert_eq!(cfg.inputs[0].scan_ms, Some(500));
        assert_eq!(cfg.inputs[0].refresh_ms, Some(60_000));
        assert_eq!(cfg.inputs[0].report, Report::Scan);
    }

    #[test]
    fn errors_name_the_line_or_the_block() {
        for (text, needle) in [
            ("name x\n", "line 1: `name` outside"),
            ("output\n pin twenty\n", "line 2: `pin` wants a number"),
            ("output\n name a\n name b\n", "line 3: `name` given twice"),
            ("output\n name\n", "line 2: `name` needs a value"),
            ("", "no output, pwm or input block"),
            ("# nothing\n", "no output, pwm or input block"),
            (
                "output\n name a\n pin 4\n colour red\n",
                "output block at line 1",
            ),
            (
                "input\n name a\n pin 4\ninput\n name b\n pin 5\n pull sideways\n",
                "input block at line 4",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn validation_is_the_json_forms() {
        let cfg = parse("output\n name a\n pin 40\n").unwrap();
        assert!(
            cfg.validate(PI_LINES)
                .unwrap_err()
                .to_string()
                .contains("40")
        );
    }
}
