//! Home Assistant MQTT discovery from the hub (`rollcall hub
//! --ha-discovery`): the hub keeps one retained config per entity on
//! `PREFIX/<component>/<node_id>/<object_id>/config` for every interface of
//! the map Home Assistant can show or drive, and each host's availability
//! beside them. [`discovery`] (pure) says what should be retained;
//! [`Published`] (pure) remembers what is, learned from the broker's
//! retained messages so that a restarted hub neither duplicates nor
//! orphans anything; [`run_ha`] diffs the two whenever the map changes and
//! publishes or clears the difference, and announces everything again when
//! Home Assistant's birth message arrives. See docs/home-assistant.md.

mod check;
mod discovery;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rollcall_net::{Message, Qos, SessionHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use check::{check_config, device_class_for};
pub use discovery::{
    BOOL_TEMPLATE, BUTTON_TEMPLATE, Discovery, HUB_IDENTIFIER, HaOptions, MAX_CONFIG, MAX_ID,
    ORIGIN_NAME, STATE_TEMPLATE, Skipped, VALUE_TEMPLATE, clean_id, discovery, object_id, step_for,
};

use crate::{HubError, HubShared, MapEvent};

/// Home Assistant's default discovery prefix.
pub const DEFAULT_PREFIX: &str = "homeassistant";

/// At most this many retained topics are remembered as the hub's own: what
/// it publishes (bounded by the map's budget) and what it learns from the
/// broker at start. Past it, configs someone else publishes with rollcall's
/// origin are ignored (and counted), not held.
pub const MAX_OWNED: usize = 100_000;

/// The largest retained message the hub's Home Assistant session takes: its
/// own configs are about 1 KB.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// How many messages the Home Assistant session buffers: the retained
/// configs of every integration on the broker arrive at once.
pub const BUFFER: usize = 8192;

/// How the hub publishes discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// The prefix and the deployment's topics.
    pub options: HaOptions,
    /// How long after a change of the map the configs are brought up to
    /// date (changes within it are taken together).
    pub debounce: Duration,
    /// How long after start what an earlier run published is left as it
    /// is (not changed, not cleared): until then the map may not yet know
    /// every host that is there, nor each host's version.
    pub orphan_grace: Duration,
    /// Home Assistant's birth message is answered after a random delay up
    /// to this (so that many publishers do not all answer at once).
    pub birth_delay_max: Duration,
}

impl HaConfig {
    /// Discovery under `prefix` (`homeassistant`), with the default delays:
    /// 250 ms debounce, 15 s grace, up to 2 s after a birth.
    pub fn new(prefix: impl Into<String>) -> Self {
        HaConfig {
            options: HaOptions::new(prefix),
            debounce: Duration::from_millis(250),
            orphan_grace: Duration::from_secs(15),
            birth_delay_max: Duration::from_secs(2),
        }
    }

    /// Checks the prefix: one or more topic levels, no wildcards, no empty
    /// level, no `$` at its start.
    pub fn check(&self) -> Result<(), HubError> {
        let p = &self.options.prefix;
        let bad = |why: &str| Err(HubError::Invalid(format!("discovery prefix `{p}`: {why}")));
        if p.is_empty() || p.len() > 256 {
            return bad("must have 1 to 256 bytes");
        }
        if p.contains(['+', '#', '\0']) {
            return bad("must not contain a wildcard or NUL");
        }
        if p.split('/').any(str::is_empty) {
            return bad("must not have an empty level (a leading, trailing or double `/`)");
        }
        if p.starts_with('$') {
            return bad("must not start with `$`");
        }
        Ok(())
    }
}

/// What `/api/map` shows of discovery, in its `ha_discovery` field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    /// The discovery prefix.
    pub prefix: String,
    /// Entity configs wanted now (the hub's own included).
    pub entities: usize,
    /// Interfaces without an entity, and why.
    pub skipped: Vec<Skipped>,
    /// Configs bearing rollcall's origin the hub ignored because it held
    /// [`MAX_OWNED`] topics already.
    pub refused: u64,
}

/// One retained topic the hub owns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// SHA-256 of the payload: enough to tell whether the broker retains
    /// what the hub wants, without holding up to 100,000 payloads of up to
    /// 64 KiB that anyone who can publish under the prefix could send.
    digest: [u8; 32],
    /// Published by this run (else learned from the broker).
    this_run: bool,
}

/// What the broker retains of the hub's, as far as the hub knows: what it
/// published, and what it read back from the broker (its own from an
/// earlier run, recognised by [`ORIGIN_NAME`]).
#[derive(Debug, Default)]
pub struct Published {
    entries: BTreeMap<String, Entry>,
    refused: u64,
}

fn payload_digest(payload: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(payload).into()
}

/// Whether a payload on an owned topic is one the hub publishes: a config
/// with rollcall's origin, or a host's `online`/`offline`.
fn is_ours(topic: &str, payload: &[u8]) -> bool {
    if topic.ends_with("/config") {
        // Cheap test first: most configs on a busy broker are others'.
        let quoted = format!("\"{ORIGIN_NAME}\"");
        if !payload
            .windows(quoted.len())
            .any(|w| w == quoted.as_bytes())
        {
            return false;
        }
        let Ok(value) = rollcall_proto::json::parse_value(payload, MAX_MESSAGE) else {
            return false;
        };
        let origin = value.get("origin").or_else(|| value.get("o"));
        origin
            .and_then(|o| o.get("name"))
            .and_then(serde_json::Value::as_str)
            == Some(ORIGIN_NAME)
    } else {
        payload == b"online" || payload == b"offline"
    }
}

impl Published {
    /// Takes in a message seen on one of `options`' owned topics (other
    /// topics are ignored). Returns whether what the hub believes retained
    /// changed.
    pub fn observe(&mut self, options: &HaOptions, topic: &str, payload: &[u8]) -> bool {
        if !options.is_owned_topic(topic) {
            return false;
        }
        if payload.is_empty() || !is_ours(topic, payload) {
            // Cleared, or someone else's now: not ours to keep or clear.
            return self.entries.remove(topic).is_some();
        }
        let full = self.entries.len() >= MAX_OWNED;
        let digest = payload_digest(payload);
        match self.entries.get_mut(topic) {
            Some(e) if e.digest == digest => false,
            Some(e) => {
                e.digest = digest;
                true
            }
            None if full => {
                self.refused += 1;
                false
            }
            None => {
                self.entries.insert(
                    topic.to_owned(),
                    Entry {
                        digest,
                        this_run: false,
                    },
                );
                true
            }
        }
    }

    /// What to publish to make the broker retain `desired`: each desired
    /// payload not retained as it is (every one with `all`), then an empty
    /// payload for each owned topic no longer desired.
    ///
    /// What an earlier run left is changed or cleared only once `settled`:
    /// until then the map may not know every host, or a host's version
    /// (that comes with its first answer), and a restart would churn
    /// configs that end up as they were.
    pub fn plan(
        &self,
        desired: &BTreeMap<String, Vec<u8>>,
        settled: bool,
        all: bool,
    ) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = desired
            .iter()
            .filter(|(t, p)| {
                all || match self.entries.get(*t) {
                    None => true,
                    Some(e) => e.digest != payload_digest(p) && (e.this_run || settled),
                }
            })
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect();
        out.extend(
            self.entries
                .iter()
                .filter(|(t, e)| !desired.contains_key(*t) && (e.this_run || settled))
                .map(|(t, _)| (t.clone(), Vec::new())),
        );
        out
    }

    /// Records a publish of this run (an empty payload clears).
    pub fn record(&mut self, topic: &str, payload: &[u8]) {
        if payload.is_empty() {
            self.entries.remove(topic);
        } else {
            self.entries.insert(
                topic.to_owned(),
                Entry {
                    digest: payload_digest(payload),
                    this_run: true,
                },
            );
        }
    }

    /// How many topics it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Owned configs ignored because it was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// Whether a map event can change the configs: values and health do not.
fn changes_discovery(event: &MapEvent) -> bool {
    !matches!(
        event,
        MapEvent::ValueChanged { .. } | MapEvent::HealthChanged { .. }
    )
}

/// Publishes discovery on `session` until `stop`: subscribes to the owned
/// topics and Home Assistant's status, says the hub is `online` on
/// [`HaOptions::hub_topic`] (the session's will says `offline`), and brings
/// the broker's retained configs to what the map wants after every change
/// of the map, at the grace's end, and (all of them) after Home
/// Assistant's birth. On the way out it says `offline` itself.
pub async fn run_ha(
    session: SessionHandle,
    mut incoming: mpsc::Receiver<Message>,
    config: HaConfig,
    shared: Arc<HubShared>,
    stop: CancellationToken,
) -> Result<(), HubError> {
    let options = &config.options;
    let start = Instant::now();
    let mut changes = shared.changes.subscribe();
    // QoS 0: a broker hands over every retained message (rumqttd gives a
    // QoS 1 subscription at most 100).
    for filter in [
        options.config_filter(),
        options.host_filter(),
        options.status_topic(),
    ] {
        session.subscribe_with_qos(&filter, Qos::AtMostOnce).await?;
    }
    session
        .publish_state(&options.hub_topic(), b"online".to_vec())
        .await?;
    let mut published = Published::default();
    let mut skipped: BTreeSet<Skipped> = BTreeSet::new();
    let mut next_sync = Some(start + config.debounce);
    let mut announce_at: Option<Instant> = None;
    let grace_end = start + config.orphan_grace;
    let mut grace_over = false;
    let far = || Instant::now() + Duration::from_secs(3600);
    loop {
        let all = tokio::select! {
            _ = stop.cancelled() => break,
            msg = incoming.recv() => {
                let Some(msg) = msg else { break };
                if msg.topic == options.status_topic() {
                    if msg.payload.trim_ascii() == b"online" && announce_at.is_none() {
                        let max = config.birth_delay_max.as_millis() as u64;
                        let delay = Duration::from_millis(rand::random::<u64>() % (max + 1));
                        info!(?delay, "Home Assistant started: announcing again");
                        announce_at = Some(Instant::now() + delay);
                    }
                } else if published.observe(options, &msg.topic, &msg.payload) {
                    next_sync.get_or_insert(Instant::now() + config.debounce);
                }
                continue;
            }
            event = changes.recv() => {
                match event {
                    Ok(e) if !changes_discovery(&e) => {}
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        next_sync.get_or_insert(Instant::now() + config.debounce);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
                continue;
            }
            () = tokio::time::sleep_until(next_sync.unwrap_or_else(far)), if next_sync.is_some() => false,
            () = tokio::time::sleep_until(announce_at.unwrap_or_else(far)), if announce_at.is_some() => true,
            () = tokio::time::sleep_until(grace_end), if !grace_over => {
                grace_over = true;
                false
            }
        };
        if !session.is_connected() {
            // A publish while disconnected may be lost: try again soon,
            // from what the broker is known to hold.
            let soon = Instant::now() + Duration::from_secs(1);
            if all {
                announce_at = Some(soon);
            } else {
                next_sync = Some(soon);
            }
            continue;
        }
        // The first round waits for the first roll-call (or the grace's
        // end): before it the map knows no host's version, and each config
        // would be published twice, without it and then with it. The
        // roll-call's changes bring the round on.
        let rollcalls = shared.metrics.rollcalls.load(Ordering::Relaxed);
        if !all && !grace_over && rollcalls == 0 {
            next_sync = None;
            continue;
        }
        next_sync = None;
        if all {
            announce_at = None;
        }
        sync(
            &session,
            &shared,
            options,
            &mut published,
            &mut skipped,
            grace_over,
            all,
        )
        .await?;
    }
    // A clean stop says so; a crash leaves it to the will.
    let _ = session
        .publish_written(
            &options.hub_topic(),
            b"offline".to_vec(),
            Qos::AtLeastOnce,
            true,
            Duration::from_secs(1),
        )
        .await;
    Ok(())
}

/// One round: what the map wants, against what is retained.
async fn sync(
    session: &SessionHandle,
    shared: &HubShared,
    options: &HaOptions,
    published: &mut Published,
    skipped: &mut BTreeSet<Skipped>,
    settled: bool,
    all: bool,
) -> Result<(), HubError> {
    let wanted = discovery(&shared.snapshot(), options);
    let now: BTreeSet<Skipped> = wanted.skipped.iter().cloned().collect();
    for s in now.difference(skipped) {
        info!(host = %s.host, service = %s.service, list = %s.list, interface = %s.interface,
            reason = %s.reason, "no Home Assistant entity");
    }
    *skipped = now;
    shared.set_ha_status(HaStatus {
        prefix: options.prefix.clone(),
        entities: wanted.entities,
        skipped: wanted.skipped,
        refused: published.refused(),
    });
    let plan = published.plan(&wanted.messages, settled, all);
    let (mut set, mut cleared) = (0, 0);
    for (topic, payload) in plan {
        match session
            .publish(&topic, payload.clone(), Qos::AtLeastOnce, true)
            .await
        {
            Ok(()) => {}
            Err(rollcall_net::NetError::SessionClosed) => {
                return Err(rollcall_net::NetError::SessionClosed.into());
            }
            // One message refused is not a reason to stop the hub: what
            // made it came from a description, and the rest go on.
            Err(error) => {
                warn!(%error, %topic, "a discovery message could not be published");
                continue;
            }
        }
        debug!(%topic, cleared = payload.is_empty(), "discovery message published");
        if payload.is_empty() {
            cleared += 1;
        } else {
            set += 1;
        }
        published.record(&topic, &payload);
    }
    if set + cleared > 0 {
        info!(
            published = set,
            cleared,
            entities = wanted.entities,
            "Home Assistant discovery updated"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
