//! A host's GPIO pin map, read from its services' descriptions, with pins
//! that two entries claim flagged as conflicts.
//!
//! Descriptions have no pin field: the GPIO service names the pin in each
//! entry's `doc` ("drives pin 25", "pin 22, reported on change"), and so can
//! a foreign service. So a pin is the number after the word `pin` in a doc.
//! An entry is one (service, name): the GPIO service describes an output
//! twice (its `set` topic among inputs, its state among outputs) under one
//! name, which is one claim, not two.

use std::collections::BTreeMap;

use rollcall_proto::{Category, Interfaces};
use serde::{Deserialize, Serialize};

/// One entry using one pin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PinUse {
    /// The GPIO (BCM) number.
    pub pin: u32,
    /// The service that claims it.
    pub service: String,
    /// The entry's name in the service's description.
    pub name: String,
    /// `driven` when the service writes the pin (an entry among its inputs:
    /// the topic that sets it), `read` when it reads it (among its outputs).
    pub direction: String,
    /// The entry's topic.
    pub topic: String,
}

/// Who claims a pin that more than one entry claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinConflict {
    /// The GPIO (BCM) number.
    pub pin: u32,
    /// Every claim, `service/name`, sorted.
    pub claimed_by: Vec<String>,
}

/// A host's pins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinMap {
    /// Every pin use, by pin, then service and name.
    pub pins: Vec<PinUse>,
    /// Pins claimed by two or more entries.
    pub conflicts: Vec<PinConflict>,
}

/// The pin a doc line names: the digits after a word `pin`.
pub(crate) fn pin_in_doc(doc: &str) -> Option<u32> {
    let lower = doc.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(at) = lower[from..].find("pin") {
        let start = from + at;
        from = start + 3;
        let word_start = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let rest = &lower[start + 3..];
        let digits_from = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        if !word_start || digits_from == 0 {
            continue;
        }
        let digits: String = rest[digits_from..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let after = rest[digits_from + digits.len()..].chars().next();
        if (1..=4).contains(&digits.len()) && !after.is_some_and(|c| c.is_alphanumeric()) {
            return digits.parse().ok();
        }
    }
    None
}

/// The pins one service's interfaces name.
pub(crate) fn uses(service: &str, interfaces: &Interfaces) -> Vec<PinUse> {
    let mut out: Vec<PinUse> = Vec::new();
    for (category, direction) in [(Category::Inputs, "driven"), (Category::Outputs, "read")] {
        for entry in interfaces.list(category) {
            let Some(pin) = entry.doc.as_deref().and_then(pin_in_doc) else {
                continue;
            };
            // The same entry named in both lists is one claim.
            if out.iter().any(|u| u.pin == pin && u.name == entry.name) {
                continue;
            }
            out.push(PinUse {
                pin,
                service: service.to_owned(),
                name: entry.name.clone(),
                direction: direction.to_owned(),
                topic: entry.topic.clone(),
            });
        }
    }
    out
}

/// Sorts uses and finds the pins claimed more than once.
pub(crate) fn map_of(mut pins: Vec<PinUse>) -> PinMap {
    pins.sort();
    let mut by_pin: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for u in &pins {
        by_pin
            .entry(u.pin)
            .or_default()
            .push(format!("{}/{}", u.service, u.name));
    }
    let conflicts = by_pin
        .into_iter()
        .filter(|(_, users)| users.len() > 1)
        .map(|(pin, claimed_by)| PinConflict { pin, claimed_by })
        .collect();
    PinMap { pins, conflicts }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_the_number_after_the_word_pin() {
        assert_eq!(pin_in_doc("drives pin 25"), Some(25));
        assert_eq!(pin_in_doc("pin 22, reported on change"), Some(22));
        assert_eq!(pin_in_doc("duty cycle of pin 18, period 1000 µs"), Some(18));
        assert_eq!(pin_in_doc("Pin 4"), Some(4));
        assert_eq!(pin_in_doc("spin 4 times, then pin 7"), Some(7));
        assert_eq!(pin_in_doc("pins 4"), None);
        assert_eq!(pin_in_doc("pin 4x"), None);
        assert_eq!(pin_in_doc("pin"), None);
        assert_eq!(pin_in_doc("pin 123456"), None);
        assert_eq!(pin_in_doc("the output's level after each change"), None);
    }
}
