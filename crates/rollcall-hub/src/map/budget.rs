//! The map's byte budget: an estimate of the memory each host holds, and
//! the order in which hosts are given up when the budget is full.
//!
//! Retained `$state`s and `$description`s can be published by anyone who can
//! reach the broker, so the map cannot bound itself by counting hosts alone:
//! 20,000 made-up hosts took a hub to 460 MB. Every host therefore carries
//! an estimate of its bytes (its strings' capacities, the inline size of
//! each record, a fixed overhead per allocation and per map entry), kept
//! current as it changes; the map's total never exceeds
//! [`MapConfig::max_bytes`](super::MapConfig::max_bytes).
//!
//! Hosts that answered one of the hub's roll-calls are *proven*; the others
//! (heard of only through retained state or values) are not, and are the
//! only ones ever evicted, least recently heard from first. A change that
//! does not fit even after every other unproven host is gone is refused.

use std::collections::BTreeSet;
use std::mem::size_of;

use rollcall_proto::{Description, Health, Interface, Interfaces};

use super::{HostRecord, ServiceRecord, ValueRecord, subscription_filters};
use crate::ServiceSeen;

/// What the allocator adds to each heap allocation (its header and the
/// rounding up to a size class), on average.
pub(super) const ALLOC: usize = 16;
/// What a `BTreeMap` or `HashMap` spends per entry beyond the key and value
/// themselves (node slack, hash and control bytes).
pub(super) const ENTRY: usize = 32;

/// Bytes on the heap that a value owns, beyond its own inline size.
pub(super) trait Heap {
    fn heap(&self) -> usize;
}

impl Heap for String {
    fn heap(&self) -> usize {
        match self.capacity() {
            0 => 0,
            n => n + ALLOC,
        }
    }
}

impl<T: Heap> Heap for Option<T> {
    fn heap(&self) -> usize {
        self.as_ref().map_or(0, Heap::heap)
    }
}

impl<T: Heap> Heap for Vec<T> {
    fn heap(&self) -> usize {
        if self.capacity() == 0 {
            return 0;
        }
        self.capacity() * size_of::<T>() + ALLOC + self.iter().map(Heap::heap).sum::<usize>()
    }
}

impl Heap for Interface {
    fn heap(&self) -> usize {
        self.name.heap() + self.topic.heap() + self.unit.heap() + self.doc.heap()
    }
}

impl Heap for Interfaces {
    fn heap(&self) -> usize {
        self.inputs.heap() + self.outputs.heap() + self.functions.heap() + self.controls.heap()
    }
}

impl Heap for Health {
    fn heap(&self) -> usize {
        match self {
            Health::Ok => 0,
            Health::Alert { reason } => reason.heap(),
        }
    }
}

impl Heap for Description {
    fn heap(&self) -> usize {
        self.function.heap() + self.doc.heap() + self.interfaces.heap() + self.health.heap()
    }
}

impl Heap for ServiceSeen {
    fn heap(&self) -> usize {
        self.function.heap()
            + self.inputs.heap()
            + self.outputs.heap()
            + self.control.heap()
            + self.interfaces.heap()
            + self.health.heap()
    }
}

impl Heap for serde_json::Value {
    fn heap(&self) -> usize {
        use serde_json::Value;
        match self {
            Value::Null | Value::Bool(_) | Value::Number(_) => 0,
            Value::String(s) => s.heap(),
            Value::Array(a) => a.heap(),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    size_of::<String>() + k.heap() + size_of::<Value>() + v.heap() + ENTRY
                })
                .sum(),
        }
    }
}

impl Heap for ValueRecord {
    fn heap(&self) -> usize {
        self.value.heap() + self.unit.heap()
    }
}

/// One value in a service's `values`: the topic key and the record.
pub(super) fn value_bytes(topic: &str, record: &ValueRecord) -> usize {
    size_of::<String>() + topic.len() + ALLOC + size_of::<ValueRecord>() + record.heap() + ENTRY
}

/// A string as the map stores a copy of it.
fn owned(s: &str) -> usize {
    size_of::<String>() + s.len() + ALLOC
}

/// A service's bytes, everything but its values: the record, its key in
/// the host's map, its description and answer, and what the output index
/// and the subscription table hold for its output topics. A pure function
/// of the parts, so a change can be weighed before it is made.
pub(super) fn service_bytes(
    host: &str,
    name: &str,
    description: Option<&Description>,
    answered: Option<&ServiceSeen>,
) -> usize {
    let outputs = super::topics_of(description, answered, |i| &i.outputs, |a| &a.outputs);
    let subscribed = subscription_filters(&outputs);
    // Each output is listed in the record and keyed in the index, which
    // holds a copy of the host and service names for it.
    let per_output: usize = outputs
        .iter()
        .map(|t| 2 * owned(t) + owned(host) + owned(name) + size_of::<Vec<()>>() + ENTRY)
        .sum();
    let per_filter: usize = subscribed
        .iter()
        .map(|f| 2 * owned(f) + size_of::<usize>() + ENTRY)
        .sum();
    size_of::<ServiceRecord>()
        + ENTRY
        + 2 * owned(name)
        + description.map_or(0, Heap::heap)
        + answered.map_or(0, Heap::heap)
        + per_output
        + per_filter
}

/// A host's own bytes, without its services: the record, its key, its
/// place in the eviction order, and what its answers told.
pub(super) fn host_bytes(
    name: &str,
    ipaddr: &Option<String>,
    extaddr: &Option<String>,
    version: &Option<String>,
    apps: &Option<Vec<String>>,
) -> usize {
    size_of::<HostRecord>()
        + ENTRY
        + 3 * owned(name)
        + size_of::<u64>()
        + ENTRY
        + ipaddr.heap()
        + extaddr.heap()
        + version.heap()
        + apps.heap()
}

/// The hosts that may be evicted, least recently heard from first, and the
/// totals the budget is checked against.
#[derive(Debug, Clone, Default)]
pub(super) struct Budget {
    /// Every host's bytes together.
    pub bytes: usize,
    /// The unproven hosts' bytes together.
    pub unproven_bytes: usize,
    /// Unproven hosts by when they were last heard from.
    pub order: BTreeSet<(u64, String)>,
    /// Hosts evicted to make room.
    pub evicted: u64,
}
