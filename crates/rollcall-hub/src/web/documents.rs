//! The generated documents the dashboard serves (`/api/docs/*`): each built
//! once per map generation ([`ClusterMap::generation`](crate::ClusterMap::generation))
//! and kept until the map changes, one build at a time, and refused when it
//! would be larger than [`MAX_DOCUMENT_BYTES`]. A 20,000-host map once made
//! a 507 MB AsyncAPI document with a 5.25 GB peak; every request built it
//! anew.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;

use crate::HubShared;
use crate::docs::{Format, TooLarge};

/// The largest document served: a 1,000-host cluster's AsyncAPI document
/// is 24 MB (BENCHMARKS.md). Larger ones are refused before they are
/// built, by their estimated size, or after, by their size.
pub const MAX_DOCUMENT_BYTES: usize = 32 << 20;

/// One document as built for one generation of the map.
#[derive(Debug, Clone)]
struct Built {
    format: Format,
    generation: Generation,
    result: Result<Bytes, TooLarge>,
}

impl Built {
    fn bytes(&self) -> usize {
        self.result.as_ref().map_or(0, Bytes::len)
    }
}

/// The documents built so far, at most [`MAX_DOCUMENT_BYTES`] of them in
/// all.
#[derive(Debug)]
pub(super) struct Documents {
    cap: usize,
    /// Requests wait here for their turn, so that many requests for a
    /// document wait for one build instead of each starting their own. The
    /// build's blocking thread holds the turn until it ends, so a request
    /// that goes away mid-build does not let another build start (clients
    /// that ask and hang up cannot pile builds up on the blocking pool).
    turn: Arc<tokio::sync::Mutex<()>>,
    /// What was built, of the latest generation only; also held while a
    /// document is built.
    built: Arc<Mutex<Vec<Built>>>,
}

/// What a document was built from: the map's generation and, for the
/// documents that show which edges are stale, the step of time it was built
/// in. An edge goes stale with time alone, not with a change to the map, so
/// those are built again at most once a step (a tenth of
/// `edge_stale_after`, between 1 s and a minute); the AsyncAPI document
/// does not show it and stays as long as the generation does.
type Generation = (u64, u64);

fn generation_of(map: &crate::ClusterMap, format: Format, now_ms: u64) -> Generation {
    let step = match format {
        Format::AsyncApi => return (map.generation(), 0),
        _ => (map.config().edge_stale_after_ms / 10).clamp(1_000, 60_000),
    };
    (map.generation(), now_ms / step)
}

fn lock(m: &Mutex<Vec<Built>>) -> std::sync::MutexGuard<'_, Vec<Built>> {
    // Entries are whole or absent: a panic mid-build leaves a usable list.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Documents {
    pub(super) fn new(cap: usize) -> Self {
        Documents {
            cap,
            turn: Arc::new(tokio::sync::Mutex::new(())),
            built: Arc::default(),
        }
    }

    /// `format`'s document of the map now: the one built for this
    /// generation, or built now (on a blocking thread: a large cluster's
    /// AsyncAPI document takes most of a second of CPU).
    pub(super) async fn get(
        &self,
        shared: &Arc<HubShared>,
        format: Format,
    ) -> Result<Result<Bytes, TooLarge>, tokio::task::JoinError> {
        // The turn goes with the build: a request dropped while its build
        // runs does not let the next request start another beside it.
        let turn = Arc::clone(&self.turn).lock_owned().await;
        let generation = generation_of(&shared.lock_map(), format, crate::now_ms());
        // A build still running holds the list; the blocking thread waits
        // for it, never the runtime's.
        if let Ok(built) = self.built.try_lock()
            && let Some(hit) = find(&built, format, generation)
        {
            return Ok(hit);
        }
        let (shared, built, cap) = (Arc::clone(shared), Arc::clone(&self.built), self.cap);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let mut built = lock(&built);
            let (snapshot, generation) = {
                let map = shared.lock_map();
                let now = crate::now_ms();
                (map.snapshot(now), generation_of(&map, format, now))
            };
            if let Some(hit) = find(&built, format, generation) {
                return hit;
            }
            let result = format
                .render_capped(&snapshot, &shared.asyncapi_options(), cap)
                .map(Bytes::from);
            drop(snapshot);
            // Older generations are of no use any more; the newest entries
            // stay within the cap, this one first.
            built.retain(|b| b.generation.0 == generation.0 && b.format != format);
            built.insert(
                0,
                Built {
                    format,
                    generation,
                    result: result.clone(),
                },
            );
            let mut total = 0;
            built.retain(|b| {
                total += b.bytes();
                total <= cap
            });
            result
        })
        .await
    }

    /// How many bytes of documents are kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        lock(&self.built).iter().map(Built::bytes).sum()
    }

    /// How many documents and refusals are kept.
    #[cfg(test)]
    fn entries(&self) -> usize {
        lock(&self.built).len()
    }
}

fn find(
    built: &[Built],
    format: Format,
    generation: Generation,
) -> Option<Result<Bytes, TooLarge>> {
    built
        .iter()
        .find(|b| b.format == format && b.generation == generation)
        .map(|b| b.result.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_proto::Topics;

    fn shared_with_hosts(n: usize) -> Arc<HubShared> {
        let shared = Arc::new(HubShared::new(Topics::default()));
        {
            let mut map = shared.lock_map();
            for i in 0..n {
                let d = format!(
                    r#"{{"function":"svc","interfaces":{{"inputs":[{{"name":"a","topic":"/h{i}/svc/set/a","type":"bool"}}]}}}}"#
                );
                map.apply_message(
                    &Topics::default(),
                    &format!("/h{i}/svc/$description"),
                    d.as_bytes(),
                    1,
                );
            }
        }
        shared
    }

    #[tokio::test]
    async fn a_document_is_built_once_per_generation() {
        let shared = shared_with_hosts(3);
        let docs = Documents::new(MAX_DOCUMENT_BYTES);
        let first = docs.get(&shared, Format::AsyncApi).await.unwrap().unwrap();
        let again = docs.get(&shared, Format::AsyncApi).await.unwrap().unwrap();
        // The very same buffer: served from the cache, not built again.
        assert_eq!(first.as_ptr(), again.as_ptr());
        // An `online` from a host already online changes nothing shown:
        // anyone may publish one, and it must not force a rebuild.
        let online = |at| {
            shared
                .lock_map()
                .apply_message(&Topics::default(), "/h1/$state", b"online", at)
        };
        online(2);
        let online_once = docs.get(&shared, Format::AsyncApi).await.unwrap().unwrap();
        assert!(online(3).is_empty());
        let online_twice = docs.get(&shared, Format::AsyncApi).await.unwrap().unwrap();
        assert_eq!(online_once.as_ptr(), online_twice.as_ptr());
        shared
            .lock_map()
            .apply_message(&Topics::default(), "/h9/$state", b"online", 2);
        let changed = docs.get(&shared, Format::AsyncApi).await.unwrap().unwrap();
        assert_ne!(first.as_ptr(), changed.as_ptr());
        assert!(String::from_utf8_lossy(&changed).contains("h9"));
        assert_eq!(docs.kept(), changed.len());
    }

    #[tokio::test]
    async fn a_document_over_the_cap_is_refused_and_the_refusal_kept() {
        let shared = shared_with_hosts(50);
        let docs = Documents::new(4096);
        let refused = docs
            .get(&shared, Format::AsyncApi)
            .await
            .unwrap()
            .unwrap_err();
        assert!(refused.estimated, "{refused}");
        assert!(refused.to_string().contains("rollcall docs"), "{refused}");
        // The refusal is kept (no bytes), so asking again builds nothing.
        assert_eq!((docs.kept(), docs.entries()), (0, 1));
        let again = docs
            .get(&shared, Format::AsyncApi)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(again.to_string(), refused.to_string());
        assert_eq!(docs.entries(), 1);
        // A small one is served beside it.
        let small = Arc::new(HubShared::new(Topics::default()));
        assert!(docs.get(&small, Format::Dot).await.unwrap().is_ok());
    }
}
