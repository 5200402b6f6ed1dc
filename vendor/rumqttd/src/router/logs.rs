use super::Ack;
use slab::Slab;
use tracing::{info, trace, warn};

use crate::protocol::{
    matches, ConnAck, ConnAckProperties, PingResp, PubAck, PubComp, PubRec, PubRel, Publish,
    PublishProperties, SubAck, UnsubAck,
};
use crate::router::{DataRequest, FilterIdx, SubscriptionMeter, Waiters};
use crate::{ConnectionId, Filter, Offset, RouterConfig, Topic};

use crate::segments::{CommitLog, Position};
use crate::Storage;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::{Duration, Instant};

type PubWithProp = (Publish, Option<PublishProperties>);

#[derive(Clone)]
pub struct PublishData {
    pub publish: Publish,
    pub properties: Option<PublishProperties>,
    pub timestamp: Instant,
}

impl From<PubWithProp> for PublishData {
    fn from((publish, properties): PubWithProp) -> Self {
        PublishData {
            publish,
            properties,
            timestamp: Instant::now(),
        }
    }
}

// TODO: remove this from here
impl Storage for PublishData {
    // TODO: calculate size of publish properties as well!
    fn size(&self) -> usize {
        let publish = &self.publish;
        4 + publish.topic.len() + publish.payload.len()
    }
}

/// Stores 'device' data and 'actions' data in native commitlog
/// organized by subscription filter. Device data is replicated
/// while actions data is not
pub struct DataLog {
    pub config: RouterConfig,
    /// Native commitlog data organized by subscription. Contains
    /// device data and actions data logs.
    ///
    /// Device data is replicated while actions data is not.
    /// Also has waiters used to wake connections/replicator tracker
    /// which are caught up with all the data on 'Filter' and waiting
    /// for new data
    pub native: Slab<Data<PublishData>>,
    /// Map of subscription filter name to filter index
    filter_indexes: HashMap<Filter, FilterIdx>,
    retained_publishes: HashMap<Topic, PublishData>,
    /// List of filters associated with a topic
    publish_filters: HashMap<Topic, Vec<FilterIdx>>,
    /// rollcall patch: bytes of topic names in `publish_filters`
    publish_filters_bytes: usize,
    /// rollcall patch: bytes of topics and payloads in `retained_publishes`
    retained_bytes: usize,
    /// rollcall patch: retained publishes not retained, the store being full
    retained_refused: u64,
    /// rollcall patch: when that was last logged
    retained_warned: Option<Instant>,
}

// rollcall patch: `publish_filters` holds every topic published since it was
// last emptied, so random topics would grow it without end. It keeps at most
// this many topics and this many bytes of topic names (a topic can be 64 KiB).
const MAX_CACHED_TOPICS: usize = 10_000;
const MAX_CACHED_TOPIC_BYTES: usize = 1024 * 1024;

// rollcall patch: `retained_publishes` kept every retained topic published,
// so a client could grow it without end. Unless `RouterConfig` says
// otherwise, it keeps at most this many messages and this many bytes of
// topics and payloads. A publish that would pass a bound is delivered to
// current subscribers but not retained; nothing retained is evicted for it.
pub const DEFAULT_MAX_RETAINED_MESSAGES: usize = 10_000;
pub const DEFAULT_MAX_RETAINED_BYTES: usize = 16 * 1024 * 1024;
// rollcall patch: at most one warning per this long about refused retains.
const RETAINED_WARN_INTERVAL: Duration = Duration::from_secs(10);

// rollcall patch: what a retained message counts for in `retained_bytes`.
fn retained_size(topic: &str, publish: &Publish) -> usize {
    topic.len() + publish.payload.len()
}

impl DataLog {
    pub fn new(config: RouterConfig) -> io::Result<DataLog> {
        let mut native = Slab::new();
        let mut filter_indexes = HashMap::new();
        let retained_publishes = HashMap::new();
        let publish_filters = HashMap::new();

        if let Some(warmup_filters) = config.initialized_filters.clone() {
            for filter in warmup_filters {
                let data = Data::new(&filter, &config);

                // Add commitlog to datalog and add datalog index to filter to
                // datalog index map
                let idx = native.insert(data);
                filter_indexes.insert(filter, idx);
            }
        }

        Ok(DataLog {
            config,
            native,
            publish_filters,
            publish_filters_bytes: 0,
            retained_bytes: 0,
            retained_refused: 0,
            retained_warned: None,
            filter_indexes,
            retained_publishes,
        })
    }

    pub fn meter(&mut self, filter: &str) -> Option<&mut SubscriptionMeter> {
        let data = self.native.get_mut(*self.filter_indexes.get(filter)?)?;
        Some(&mut data.meter)
    }

    pub fn waiters(&self, filter: &Filter) -> Option<&Waiters<DataRequest>> {
        self.native
            .get(*self.filter_indexes.get(filter)?)
            .map(|data| &data.waiters)
    }

    pub fn remove_waiters_for_id(
        &mut self,
        id: ConnectionId,
        filter: &Filter,
    ) -> Option<DataRequest> {
        let data = self
            .native
            .get_mut(*self.filter_indexes.get(filter)?)
            .unwrap();
        let waiters = data.waiters.get_mut();

        waiters
            .iter()
            .position(|&(conn_id, _)| conn_id == id)
            .and_then(|index| {
                waiters
                    .swap_remove_back(index)
                    .map(|(_, data_req)| data_req)
            })
    }

    // TODO: Currently returning a Option<Vec> instead of Option<&Vec> due to Rust borrow checker
    // limitation
    pub fn matches(&mut self, topic: &str) -> Option<Vec<usize>> {
        match &self.publish_filters.get(topic) {
            Some(v) => Some(v.to_vec()),
            None => {
                let v: Vec<usize> = self
                    .filter_indexes
                    .iter()
                    .filter(|(filter, _)| matches(topic, filter))
                    .map(|(_, filter_idx)| *filter_idx)
                    .collect();

                // rollcall patch: cache empty lists too. A topic nobody
                // subscribes to was matched against every filter on every
                // publish; `next_native_offset` adds new filters to cached
                // topics, so the cache stays correct.
                self.make_room_in_publish_filters(topic.len());
                self.publish_filters.insert(topic.to_owned(), v.clone());
                self.publish_filters_bytes += topic.len();

                Some(v)
            }
        }
    }

    /// rollcall patch: keeps `publish_filters` within `MAX_CACHED_TOPICS`
    /// and `MAX_CACHED_TOPIC_BYTES` before a topic of `len` bytes is added.
    /// The topics nobody subscribes to go first (random topics are those);
    /// if that leaves the cache more than half full, all go, so that
    /// evictions stay rare. A topic no longer cached is
    /// matched against every filter again at its next publish, so evicting
    /// never changes who receives what.
    fn make_room_in_publish_filters(&mut self, len: usize) {
        if self.publish_filters.len() < MAX_CACHED_TOPICS
            && self.publish_filters_bytes + len <= MAX_CACHED_TOPIC_BYTES
        {
            return;
        }
        self.publish_filters
            .retain(|_, filters| !filters.is_empty());
        self.publish_filters_bytes = self.publish_filters.keys().map(String::len).sum();
        if self.publish_filters.len() > MAX_CACHED_TOPICS / 2
            || self.publish_filters_bytes + len > MAX_CACHED_TOPIC_BYTES / 2
        {
            self.publish_filters.clear();
            self.publish_filters_bytes = 0;
        }
    }

    pub fn next_native_offset(&mut self, filter: &str) -> (FilterIdx, Offset) {
        let publish_filters = &mut self.publish_filters;
        let filter_indexes = &mut self.filter_indexes;

        let (filter_idx, data) = match filter_indexes.get(filter) {
            Some(idx) => (*idx, self.native.get(*idx).unwrap()),
            None => {
                let data = Data::new(filter, &self.config);

                // Add commitlog to datalog and add datalog index to filter to
                // datalog index map
                let idx = self.native.insert(data);
                self.filter_indexes.insert(filter.to_owned(), idx);

                // Match new filter to existing topics and add to publish_filters if it matches
                for (topic, filters) in publish_filters.iter_mut() {
                    if matches(topic, filter) {
                        filters.push(idx);
                    }
                }

                (idx, self.native.get(idx).unwrap())
            }
        };

        (filter_idx, data.log.next_offset())
    }

    pub fn native_readv(
        &self,
        filter_idx: FilterIdx,
        offset: Offset,
        len: u64,
    ) -> io::Result<(Position, Vec<(PubWithProp, Offset)>)> {
        // unwrap to get index of `self.native` is fine here, because when a new subscribe packet
        // arrives in `Router::handle_device_payload`, it first calls the function
        // `next_native_offset` which creates a new commitlog if one doesn't exist. So any new
        // reads will definitely happen on a valid filter.
        let data = self.native.get(filter_idx).unwrap();
        let mut o = Vec::new();
        // TODO: `readv` is infallible but its current return type does not
        // reflect that. Consequently, this method is also infallible.
        // Encoding this information is important so that calling function
        // has more information on how this method behaves.
        let next = data.log.readv(offset, len, &mut o)?;

        let now = Instant::now();
        o.retain_mut(|(pubdata, _)| {
            // Keep data if no properties exists, which implies no message expiry!
            let Some(properties) = pubdata.properties.as_mut() else {
                return true;
            };

            // Keep data if there is no message_expiry_interval
            let Some(message_expiry_interval) = properties.message_expiry_interval.as_mut() else {
                return true;
            };

            let time_spent = (now - pubdata.timestamp).as_secs() as u32;

            let is_valid = time_spent < *message_expiry_interval;

            // ignore expired messages
            if is_valid {
                // set message_expiry_interval to (original value - time spent waiting in server)
                // ref: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901112
                *message_expiry_interval -= time_spent;
            }

            is_valid
        });

        // no need to include timestamp when returning
        let o = o
            .into_iter()
            .map(|(pubdata, offset)| ((pubdata.publish, pubdata.properties), offset))
            .collect();

        Ok((next, o))
    }

    pub fn shadow(&mut self, filter: &str) -> Option<PubWithProp> {
        let data = self.native.get_mut(*self.filter_indexes.get(filter)?)?;
        data.log.last().map(|p| (p.publish, p.properties))
    }

    /// This method is called when the subscriber has caught up with the commit log. In which case,
    /// instead of actively checking for commits in each `Router::run_inner` iteration, we instead
    /// wait and only try reading again when new messages have been added to the commit log. This
    /// methods converts a `DataRequest` (which actively reads the commit log in `Router::consume`)
    /// to a `Waiter` (which only reads when notified).
    pub fn park(&mut self, id: ConnectionId, request: DataRequest) {
        // calling unwrap on index here is fine, because only place this function is called is in
        // `Router::consume` method, when the status after reading from commit log of the same
        // filter as `request` is "done", that is, the subscriber has caught up. In other words,
        // there has been atleast 1 call to `native_readv` for the same filter, which means if
        // `native_readv` hasn't paniced, so this won't panic either.
        let data = self.native.get_mut(request.filter_idx).unwrap();
        data.waiters.register(id, request);
    }

    /// Cleanup a connection from all the waiters
    pub fn clean(&mut self, id: ConnectionId) -> Vec<DataRequest> {
        let mut inflight = Vec::new();
        for (_, data) in self.native.iter_mut() {
            inflight.append(&mut data.waiters.remove(id));
        }

        inflight
    }

    /// rollcall patch: returns whether the publish was retained. A new topic
    /// is retained only within both bounds (`max_retained_messages`,
    /// `max_retained_bytes`); a topic already retained is replaced when its
    /// new payload is no bigger, or when the bytes bound allows the growth.
    /// Otherwise the store is left as it was, the refusal is counted, and
    /// logged at most once per `RETAINED_WARN_INTERVAL`.
    pub fn insert_to_retained_publishes(
        &mut self,
        publish: Publish,
        publish_properties: Option<PublishProperties>,
        topic: Topic,
    ) -> bool {
        let max_messages = self
            .config
            .max_retained_messages
            .unwrap_or(DEFAULT_MAX_RETAINED_MESSAGES);
        let max_bytes = self
            .config
            .max_retained_bytes
            .unwrap_or(DEFAULT_MAX_RETAINED_BYTES);
        let size = retained_size(&topic, &publish);
        let old = self
            .retained_publishes
            .get(&topic)
            .map(|old| retained_size(&topic, &old.publish));
        let others = self.retained_bytes - old.unwrap_or(0);
        let accepted = match old {
            Some(old) => size <= old || others + size <= max_bytes,
            None => self.retained_publishes.len() < max_messages && others + size <= max_bytes,
        };
        if !accepted {
            self.refuse_retained(&topic);
            return false;
        }
        self.retained_bytes = others + size;
        let pub_with_props = (publish, publish_properties);
        self.retained_publishes.insert(topic, pub_with_props.into());
        true
    }

    pub fn remove_from_retained_publishes(&mut self, topic: Topic) {
        // rollcall patch: keeps `retained_bytes`
        if let Some(old) = self.retained_publishes.remove(&topic) {
            self.retained_bytes -= retained_size(&topic, &old.publish);
        }
    }

    /// rollcall patch: retained publishes refused so far, the store being full.
    pub fn retained_refused(&self) -> u64 {
        self.retained_refused
    }

    fn refuse_retained(&mut self, topic: &str) {
        self.retained_refused += 1;
        let now = Instant::now();
        let quiet = self
            .retained_warned
            .is_some_and(|last| now.duration_since(last) < RETAINED_WARN_INTERVAL);
        if quiet {
            return;
        }
        self.retained_warned = Some(now);
        let topic: String = topic.chars().take(128).collect();
        warn!(
            topic,
            refused = self.retained_refused,
            retained = self.retained_publishes.len(),
            retained_bytes = self.retained_bytes,
            "Retained store full: publish delivered but not retained"
        );
    }

    pub fn read_retained_messages(&mut self, filter: &str) -> Vec<PubWithProp> {
        trace!(info = "reading retain msg", filter = &filter);
        let now = Instant::now();

        // discard expired retained messages
        // rollcall patch: and count their bytes out of `retained_bytes`
        let mut freed = 0;
        self.retained_publishes.retain(|topic, pubdata| {
            // Keep data if no properties exists, which implies no message expiry!
            let Some(properties) = pubdata.properties.as_mut() else {
                return true;
            };

            // Keep data if there is no message_expiry_interval
            let Some(message_expiry_interval) = properties.message_expiry_interval.as_mut() else {
                return true;
            };

            let time_spent = (now - pubdata.timestamp).as_secs() as u32;

            let is_valid = time_spent < *message_expiry_interval;

            // ignore expired messages
            if is_valid {
                // set message_expiry_interval to (original value - time spent waiting in server)
                // ref: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901112
                *message_expiry_interval -= time_spent;
            } else {
                freed += retained_size(topic, &pubdata.publish);
            }

            is_valid
        });
        self.retained_bytes -= freed;

        // no need to include timestamp when returning
        self.retained_publishes
            .iter()
            .filter(|(topic, _)| matches(topic, filter))
            .map(|(_, p)| (p.publish.clone(), p.properties.clone()))
            .collect()
    }
}

pub struct Data<T> {
    filter: Filter,
    pub log: CommitLog<T>,
    pub waiters: Waiters<DataRequest>,
    meter: SubscriptionMeter,
}

impl<T> Data<T>
where
    T: Storage + Clone,
{
    pub fn new(filter: &str, router_config: &RouterConfig) -> Data<T> {
        let mut max_segment_size = router_config.max_segment_size;
        let mut max_mem_segments = router_config.max_segment_count;

        // Override segment config for selected filter
        if let Some(config) = &router_config.custom_segment {
            for (f, segment_config) in config {
                if matches(filter, f) {
                    info!("Overriding segment config for filter: {}", filter);
                    max_segment_size = segment_config.max_segment_size;
                    max_mem_segments = segment_config.max_segment_count;
                }
            }
        }

        // max_segment_size: usize, max_mem_segments: usize
        let log = CommitLog::new(max_segment_size, max_mem_segments).unwrap();

        let waiters = Waiters::with_capacity(10);
        let metrics = SubscriptionMeter::default();
        Data {
            filter: filter.to_owned(),
            log,
            waiters,
            meter: metrics,
        }
    }

    /// Writes to all the filters that are mapped to this publish topic
    /// and wakes up consumers that are matching this topic (if they exist)
    pub fn append(
        &mut self,
        item: T,
        notifications: &mut VecDeque<(ConnectionId, DataRequest)>,
    ) -> (Offset, &Filter) {
        let size = item.size();
        let offset = self.log.append(item);
        if let Some(mut parked) = self.waiters.take() {
            notifications.append(&mut parked);
        }

        self.meter.count += 1;
        self.meter.total_size += size;

        (offset, &self.filter)
    }
}

/// Acks log for a subscription
#[derive(Debug)]
pub struct AckLog {
    // Committed acks per connection. First pkid, last pkid, data
    committed: VecDeque<Ack>,
    // Recorded qos 2 publishes
    recorded: VecDeque<(Publish, Option<PublishProperties>)>,
}

impl AckLog {
    /// New log
    pub fn new() -> AckLog {
        AckLog {
            committed: VecDeque::with_capacity(100),
            recorded: VecDeque::with_capacity(100),
        }
    }

    pub fn connack(&mut self, id: ConnectionId, ack: ConnAck, props: Option<ConnAckProperties>) {
        let ack = Ack::ConnAck(id, ack, props);
        self.committed.push_back(ack);
    }

    pub fn suback(&mut self, ack: SubAck) {
        let ack = Ack::SubAck(ack);
        self.committed.push_back(ack);
    }

    pub fn puback(&mut self, ack: PubAck) {
        let ack = Ack::PubAck(ack);
        self.committed.push_back(ack);
    }

    pub fn pubrec(&mut self, publish: Publish, props: Option<PublishProperties>, ack: PubRec) {
        let ack = Ack::PubRec(ack);
        self.recorded.push_back((publish, props));
        self.committed.push_back(ack);
    }

    pub fn pubrel(&mut self, ack: PubRel) {
        let ack = Ack::PubRel(ack);
        self.committed.push_back(ack);
    }

    pub fn pubcomp(&mut self, ack: PubComp) -> Option<(Publish, Option<PublishProperties>)> {
        let ack = Ack::PubComp(ack);
        self.committed.push_back(ack);
        self.recorded.pop_front()
    }

    pub fn pingresp(&mut self, ack: PingResp) {
        let ack = Ack::PingResp(ack);
        self.committed.push_back(ack);
    }

    pub fn unsuback(&mut self, ack: UnsubAck) {
        let ack = Ack::UnsubAck(ack);
        self.committed.push_back(ack);
    }

    pub fn readv(&mut self) -> &mut VecDeque<Ack> {
        &mut self.committed
    }
}

#[cfg(test)]
mod test {
    use super::{
        DataLog, DEFAULT_MAX_RETAINED_BYTES, DEFAULT_MAX_RETAINED_MESSAGES, MAX_CACHED_TOPICS,
        MAX_CACHED_TOPIC_BYTES,
    };
    use crate::protocol::Publish;
    use crate::router::shared_subs::Strategy;
    use crate::RouterConfig;

    #[test]
    fn publish_filters_updating_correctly_on_new_topic_subscription() {
        let config = RouterConfig {
            max_segment_size: 1024,
            max_connections: 10,
            max_segment_count: 10,
            max_outgoing_packet_count: 1024,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Strategy::RoundRobin,
            max_retained_messages: None,
            max_retained_bytes: None,
        };
        let mut data = DataLog::new(config).unwrap();
        data.next_native_offset("topic/a");
        data.matches("topic/a");

        data.next_native_offset("topic/+");

        assert_eq!(data.publish_filters.get("topic/a").unwrap().len(), 2);
    }

    #[test]
    fn publish_filters_updating_correctly_on_new_publish() {
        let config = RouterConfig {
            max_segment_size: 1024,
            max_connections: 10,
            max_segment_count: 10,
            max_outgoing_packet_count: 1024,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Strategy::RoundRobin,
            max_retained_messages: None,
            max_retained_bytes: None,
        };
        let mut data = DataLog::new(config).unwrap();
        data.next_native_offset("+/+");

        data.matches("topic/a");

        assert_eq!(data.publish_filters.get("topic/a").unwrap().len(), 1);
    }

    // rollcall patch: the cache stays within its bounds however many topics
    // are published, and evicting a topic never changes what it matches.
    fn bounded_config() -> RouterConfig {
        RouterConfig {
            max_segment_size: 1024,
            max_connections: 10,
            max_segment_count: 10,
            max_outgoing_packet_count: 1024,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Strategy::RoundRobin,
            max_retained_messages: None,
            max_retained_bytes: None,
        }
    }

    fn assert_within_bounds(data: &DataLog) {
        assert!(data.publish_filters.len() <= MAX_CACHED_TOPICS);
        assert!(data.publish_filters_bytes <= MAX_CACHED_TOPIC_BYTES);
    }

    fn assert_bytes_counted(data: &DataLog) {
        let bytes: usize = data.publish_filters.keys().map(String::len).sum();
        assert_eq!(data.publish_filters_bytes, bytes);
    }

    #[test]
    fn publish_filters_stay_bounded_with_many_distinct_topics() {
        let mut data = DataLog::new(bounded_config()).unwrap();
        let (subscribed, _) = data.next_native_offset("rollcall/+");
        for i in 0..5 * MAX_CACHED_TOPICS {
            assert_eq!(data.matches(&format!("random/{i}")), Some(vec![]));
            assert_within_bounds(&data);
            if i % 100 == 0 {
                let topic = format!("rollcall/{i}");
                assert_eq!(data.matches(&topic), Some(vec![subscribed]));
                assert_within_bounds(&data);
                assert_bytes_counted(&data);
            }
        }
        assert!(!data.publish_filters.is_empty());
    }

    #[test]
    fn publish_filters_stay_bounded_with_long_topics() {
        let mut data = DataLog::new(bounded_config()).unwrap();
        let (all, _) = data.next_native_offset("#");
        let long = "x".repeat(u16::MAX as usize - 8);
        for i in 0..100 {
            assert_eq!(data.matches(&format!("{long}/{i}")), Some(vec![all]));
            assert_within_bounds(&data);
            assert_bytes_counted(&data);
        }
    }

    #[test]
    fn matching_stays_correct_after_eviction() {
        let mut data = DataLog::new(bounded_config()).unwrap();
        let (a, _) = data.next_native_offset("topic/a");
        assert_eq!(data.matches("topic/a"), Some(vec![a]));
        assert_eq!(data.matches("quiet/b"), Some(vec![]));

        // Enough topics nobody subscribes to for the cache to evict at least
        // once: the empty `quiet/b` goes, the subscribed `topic/a` stays.
        for i in 0..MAX_CACHED_TOPICS {
            data.matches(&format!("random/{i}"));
        }
        assert_within_bounds(&data);
        assert_bytes_counted(&data);
        assert!(!data.publish_filters.contains_key("quiet/b"));
        assert!(data.publish_filters.contains_key("topic/a"));
        assert!(!data.publish_filters.contains_key("random/0"));
        let last = format!("random/{}", MAX_CACHED_TOPICS - 1);
        assert!(data.publish_filters.contains_key(&last));

        // A subscription made after the eviction reaches the evicted topic,
        // the kept one and the one cached since, exactly as before.
        let (plus, _) = data.next_native_offset("+/b");
        let (any, _) = data.next_native_offset("#");
        assert_eq!(
            data.matches("quiet/b").map(sorted),
            Some(sorted(vec![plus, any]))
        );
        assert_eq!(
            data.matches("topic/a").map(sorted),
            Some(sorted(vec![a, any]))
        );
        assert_eq!(data.matches(&last), Some(vec![any]));
        assert_eq!(data.matches("random/0"), Some(vec![any]));

        // With every topic subscribed, the cache empties whole when full and
        // still answers right.
        for i in 0..2 * MAX_CACHED_TOPICS {
            assert_eq!(data.matches(&format!("more/{i}")), Some(vec![any]));
        }
        assert_within_bounds(&data);
        assert_bytes_counted(&data);
        assert_eq!(
            data.matches("quiet/b").map(sorted),
            Some(sorted(vec![plus, any]))
        );
    }

    fn sorted(mut v: Vec<usize>) -> Vec<usize> {
        v.sort_unstable();
        v
    }

    // rollcall patch: the retained store stays within its bounds, replaces
    // and deletes what it holds, and evicts nothing for a new topic.
    fn retained_config(messages: usize, bytes: usize) -> RouterConfig {
        RouterConfig {
            max_retained_messages: Some(messages),
            max_retained_bytes: Some(bytes),
            ..bounded_config()
        }
    }

    fn retain(data: &mut DataLog, topic: &str, payload: &[u8]) -> bool {
        let publish = Publish::new(topic.as_bytes().to_vec(), payload.to_vec(), true);
        data.insert_to_retained_publishes(publish, None, topic.to_owned())
    }

    fn retained(data: &mut DataLog, topic: &str) -> Option<Vec<u8>> {
        let found = data.read_retained_messages(topic);
        assert!(found.len() <= 1);
        found.first().map(|(p, _)| p.payload.to_vec())
    }

    fn assert_retained_bytes_counted(data: &DataLog) {
        let bytes: usize = data
            .retained_publishes
            .iter()
            .map(|(t, p)| t.len() + p.publish.payload.len())
            .sum();
        assert_eq!(data.retained_bytes, bytes);
    }

    #[test]
    fn retained_messages_stay_within_the_count_bound() {
        let mut data = DataLog::new(retained_config(100, 1 << 20)).unwrap();
        for i in 0..100 {
            assert!(retain(&mut data, &format!("host/{i}"), b"up"));
        }
        for i in 100..1000 {
            assert!(!retain(&mut data, &format!("host/{i}"), b"up"));
        }
        assert_eq!(data.retained_publishes.len(), 100);
        assert_eq!(data.retained_refused(), 900);
        assert_eq!(data.read_retained_messages("host/+").len(), 100);
        assert_eq!(retained(&mut data, "host/999"), None);
        // Nothing was evicted, and a retained topic can still be replaced,
        // even with a bigger payload while the bytes allow it.
        assert_eq!(retained(&mut data, "host/0"), Some(b"up".to_vec()));
        assert!(retain(&mut data, "host/0", b"down"));
        assert_eq!(retained(&mut data, "host/0"), Some(b"down".to_vec()));
        // Deleting one makes room for one.
        data.remove_from_retained_publishes("host/1".to_owned());
        assert_eq!(retained(&mut data, "host/1"), None);
        assert!(retain(&mut data, "host/1000", b"up"));
        assert!(!retain(&mut data, "host/1001", b"up"));
        assert_eq!(data.retained_publishes.len(), 100);
        assert_retained_bytes_counted(&data);
    }

    #[test]
    fn retained_messages_stay_within_the_bytes_bound() {
        // Each message is a 2-byte topic and a 98-byte payload: 100 bytes.
        let mut data = DataLog::new(retained_config(1000, 1000)).unwrap();
        let payload = [b'x'; 98];
        for i in 0..10 {
            assert!(retain(&mut data, &format!("t{i}"), &payload));
        }
        assert_eq!(data.retained_bytes, 1000);
        assert!(!retain(&mut data, "ta", b"y"));
        assert_eq!(retained(&mut data, "ta"), None);
        // A topic's payload can shrink or stay the same size, but not grow
        // past the bound; a refused replacement keeps the old payload.
        assert!(retain(&mut data, "t0", &[b'a'; 98]));
        assert!(!retain(&mut data, "t0", &[b'b'; 99]));
        assert_eq!(retained(&mut data, "t0"), Some(vec![b'a'; 98]));
        assert!(retain(&mut data, "t0", &[b'c'; 48]));
        assert_eq!(data.retained_bytes, 950);
        assert_retained_bytes_counted(&data);
        // The 50 bytes freed take a new topic, or let another grow.
        assert!(!retain(&mut data, "ta", &[b'd'; 49]));
        assert!(retain(&mut data, "t1", &[b'e'; 148]));
        assert_eq!(data.retained_bytes, 1000);
        // A deletion frees its topic's bytes.
        data.remove_from_retained_publishes("t1".to_owned());
        data.remove_from_retained_publishes("not-retained".to_owned());
        assert_eq!(data.retained_bytes, 850);
        assert!(retain(&mut data, "ta", &[b'f'; 148]));
        assert_eq!(data.retained_bytes, 1000);
        assert_retained_bytes_counted(&data);
        assert_eq!(data.retained_refused(), 3);
    }

    #[test]
    fn retained_defaults_fit_a_raspberry_pi() {
        let mut data = DataLog::new(bounded_config()).unwrap();
        for i in 0..DEFAULT_MAX_RETAINED_MESSAGES + 10 {
            retain(&mut data, &format!("h/{i}"), b"x");
        }
        assert_eq!(data.retained_publishes.len(), DEFAULT_MAX_RETAINED_MESSAGES);
        let mut data = DataLog::new(bounded_config()).unwrap();
        let big = vec![b'x'; 64 * 1024];
        for i in 0..1000 {
            retain(&mut data, &format!("big/{i}"), &big);
        }
        assert!(data.retained_bytes <= DEFAULT_MAX_RETAINED_BYTES);
        assert!(data.retained_bytes > DEFAULT_MAX_RETAINED_BYTES - big.len() - 16);
        assert_retained_bytes_counted(&data);
    }

    //     #[test]
    //     fn appends_are_written_to_correct_commitlog() {
    //         pretty_env_logger::init();
    //         let config = RouterConfig {
    //             instant_ack: true,
    //             max_segment_size: 1024,
    //             max_connections: 10,
    //             max_mem_segments: 10,
    //             max_disk_segments: 0,
    //             max_read_len: 1024,
    //             log_dir: None,
    //             dynamic_log: true,
    //         };

    //         let mut data = DataLog::new(config).unwrap();
    //         data.next_native_offset("/devices/2321/actions");
    //         for i in 0..2 {
    //             let publish = Publish::new("/devices/2321/events/imu/jsonarray", QoS::AtLeastOnce, vec![1, 2, 3]);
    //             let v = data.native_append(publish);
    //             dbg!(v);
    //         }

    //         for i in 0..2 {
    //             let publish = Publish::new("/devices/2321/actions", QoS::AtLeastOnce, vec![1, 2, 3]);
    //             let v = data.native_append(publish);
    //             dbg!(v);
    //         }
    //     }
}
