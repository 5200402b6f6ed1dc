//! Request rates: each client (an IPv4 address, or an IPv6 /64, since one
//! host can use a whole /64) gets a token bucket, [`RateLimit::burst`]
//! requests at once refilled at [`RateLimit::per_second`]; a request with
//! its bucket empty gets 429 with `Retry-After`. The table of clients is
//! bounded ([`RateLimit::clients`]): idle clients (a full bucket) are
//! dropped to make room, and when every entry is busy, clients without one
//! share a single bucket, so that many addresses do not buy many
//! allowances.
//!
//! The defaults are generous: the page loads with five requests and
//! re-reads the map at most a few times a second while the cluster
//! changes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

/// How fast one client may send requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests a second, sustained.
    pub per_second: f64,
    /// Requests at once, after a pause.
    pub burst: u32,
    /// Clients tracked at most.
    pub clients: usize,
}

impl Default for RateLimit {
    /// 20 requests a second, bursts of 200, 4,096 clients.
    fn default() -> Self {
        RateLimit {
            per_second: 20.0,
            burst: 200,
            clients: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(limit: &RateLimit, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(limit.burst),
            at: now,
        }
    }

    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        self.at = now;
    }

    /// Takes one request's token, or says how long until there is one.
    fn take(&mut self, limit: &RateLimit, now: Instant) -> Result<(), Duration> {
        self.refill(limit, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / limit.per_second.max(f64::MIN_POSITIVE);
        Err(Duration::from_secs_f64(wait.min(3600.0)))
    }
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<IpAddr, Bucket>,
    /// The bucket of clients the table has no room for.
    overflow: Bucket,
    /// When idle entries were last dropped (at most once a second).
    pruned: Instant,
}

/// The buckets of every client, bounded.
#[derive(Debug)]
pub(super) struct Limiter {
    limit: RateLimit,
    table: Mutex<Table>,
}

/// The key a client is counted under: an IPv4 address, or the /64 of an
/// IPv6 one (IPv4-mapped ones as IPv4).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Limiter {
    pub(super) fn new(limit: RateLimit) -> Self {
        let now = Instant::now();
        Limiter {
            limit,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: Bucket::full(&limit, now),
                pruned: now,
            }),
        }
    }

    /// Counts one request from `ip` (`None`: a request that did not come
    /// through a listener, as in tests; all such share one bucket).
    pub(super) fn check(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let limit = &self.limit;
        let key = key(ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)));
        // A panic while holding the lock leaves buckets that still work.
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = table.buckets.get_mut(&key) {
            return bucket.take(limit, now);
        }
        if table.buckets.len() >= limit.clients
            && now.saturating_duration_since(table.pruned) >= Duration::from_secs(1)
        {
            table.pruned = now;
            // A client whose bucket has refilled is as good as new.
            table.buckets.retain(|_, b| {
                b.refill(limit, now);
                b.tokens < f64::from(limit.burst)
            });
        }
        if table.buckets.len() < limit.clients {
            let mut bucket = Bucket::full(limit, now);
            let taken = bucket.take(limit, now);
            table.buckets.insert(key, bucket);
            return taken;
        }
        table.overflow.take(limit, now)
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().unwrap().buckets.len()
    }
}

/// The layer: a request over its client's rate gets 429 with `Retry-After`
/// (whole seconds, at least 1) before anything else is done for it.
pub(super) async fn limit(
    State(limiter): State<Arc<Limiter>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match limiter.check(ip, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(serde_json::json!({
                    "error": format!(
                        "too many requests from this address: at most {} a second \
                         (bursts of {}); try again in {} s",
                        limiter.limit.per_second, limiter.limit.burst, secs.max(1)
                    )
                })),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, clients: usize) -> Limiter {
        Limiter::new(RateLimit {
            per_second,
            burst,
            clients,
        })
    }

    #[test]
    fn a_burst_is_allowed_then_the_rate_and_the_wait_is_told() {
        let l = limiter(2.0, 3, 8);
        let t0 = Instant::now();
        let ip = Some("198.18.0.5".parse().unwrap());
        for _ in 0..3 {
            assert_eq!(l.check(ip, t0), Ok(()));
        }
        assert_eq!(l.check(ip, t0), Err(Duration::from_millis(500)));
        // Another client is not held back by this one.
        assert_eq!(l.check(Some("198.18.0.6".parse().unwrap()), t0), Ok(()));
        // Half a second gives one request back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.check(ip, t1), Ok(()));
        assert!(l.check(ip, t1).is_err());
    }

    #[test]
    fn an_ipv6_client_is_one_client_per_64() {
        let l = limiter(1.0, 1, 8);
        let t0 = Instant::now();
        assert!(l.check(Some("2001:db8::1".parse().unwrap()), t0).is_ok());
        assert!(l.check(Some("2001:db8::2".parse().unwrap()), t0).is_err());
        assert!(
            l.check(Some("2001:db8:0:1::1".parse().unwrap()), t0)
                .is_ok()
        );
        assert!(
            l.check(Some("::ffff:198.18.0.5".parse().unwrap()), t0)
                .is_ok()
        );
        assert!(l.check(Some("198.18.0.5".parse().unwrap()), t0).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_clients_past_it_share_one_bucket() {
        let l = limiter(1.0, 2, 4);
        let t0 = Instant::now();
        let ip = |i: u32| Some(IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + i)));
        for i in 0..4 {
            assert!(l.check(ip(i), t0).is_ok());
        }
        // 1,000 more addresses: two requests between them, not two each.
        let allowed = (4..1004).filter(|i| l.check(ip(*i), t0).is_ok()).count();
        assert_eq!(allowed, 2);
        assert_eq!(l.tracked(), 4);
        // Once the first four are idle (their buckets full again), new
        // clients get entries of their own.
        let later = t0 + Duration::from_secs(5);
        assert!(l.check(ip(2000), later).is_ok());
        assert!(l.check(ip(2000), later).is_ok());
        assert!(l.check(ip(2001), later).is_ok());
        assert!(l.tracked() <= 4);
    }
}
