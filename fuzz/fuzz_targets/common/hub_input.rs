//! The input of the fuzz targets that feed the hub's map (`map`, `docs`): a
//! flags byte, then (topic, payload) messages separated by NUL bytes, as
//! they could arrive on the topics the hub subscribes to. Bit 0 of the flags
//! picks the topic root (none, or `site1`); the other bits are the target's.

use rollcall_hub::ClusterMap;
use rollcall_proto::Topics;

/// The flags byte, the topics it picks, and a map that already knows the
/// service `seed` describes at `{root}/h/s/$description`; `None` for an
/// empty input.
pub fn start<'a>(data: &'a [u8], seed: &[u8]) -> Option<(u8, Topics, ClusterMap, &'a [u8])> {
    let (&flags, rest) = data.split_first()?;
    let topics = if flags & 1 == 0 {
        Topics::default()
    } else {
        Topics::new("site1").unwrap()
    };
    let mut map = ClusterMap::new();
    let description = format!("{}/h/s/$description", topics.root());
    map.apply_message(&topics, &description, seed, 0);
    Some((flags, topics, map, rest))
}

/// The (topic, payload) messages in `data`; a topic that is not UTF-8 is
/// taken lossily, as a broker would not deliver it at all.
pub fn messages(data: &[u8]) -> impl Iterator<Item = (String, &[u8])> {
    let mut parts = data.split(|b| *b == 0);
    std::iter::from_fn(move || {
        let topic = parts.next()?;
        let payload = parts.next()?;
        Some((String::from_utf8_lossy(topic).into_owned(), payload))
    })
}
