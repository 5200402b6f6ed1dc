//! The dashboard: an axum [`Router`] over the hub's shared state. The page
//! and its assets are compiled into the binary (nothing is fetched from the
//! internet); the JSON API under `/api` serves the map, its changes as
//! server-sent events, settings that become MQTT queries, and the generated
//! documentation; `/metrics` is for Prometheus. [`app`] is tested without a
//! server; [`serve`] runs it on a listener from `rollcall-net`. Every
//! request passes a rate limit per client ([`rate`]) and the access guard
//! ([`access`]); documents are built once per map generation and capped
//! ([`documents`]).

mod access;
mod documents;
mod rate;
mod set;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use rollcall_proto::{Category, Interface};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use access::{Access, AccessError, MIN_TOKEN_BYTES};
pub use documents::MAX_DOCUMENT_BYTES;
pub use rate::RateLimit;
pub use set::{check_value, parse_body};

use crate::docs::Format;
use crate::{HostStatus, HubError, HubShared};

/// How long a setting waits for the service's answer before a 504.
pub const SET_TIMEOUT: Duration = Duration::from_secs(5);
/// Request bodies are small JSON values; the protocol's payload limit.
const BODY_LIMIT: usize = 64 * 1024;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The page may load only what the hub serves.
const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data:; script-src 'self'; \
                        style-src 'self'; connect-src 'self'; frame-ancestors 'none'";
/// Generated SVG carries names from the network: never let it run anything.
const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

#[derive(Clone)]
struct Web {
    shared: Arc<HubShared>,
    /// Ends the server-sent event streams, which would otherwise hold a
    /// graceful shutdown open forever.
    shutdown: CancellationToken,
    /// Room for event streams, one permit each while it is open.
    streams: Arc<tokio::sync::Semaphore>,
    /// The generated documents of the latest map generation.
    documents: Arc<documents::Documents>,
    /// Room for `/api/map` snapshots being built, one permit each.
    snapshots: Arc<tokio::sync::Semaphore>,
}

/// How many `/api/map` documents are built at once; more requests wait.
/// Each is a copy of the whole map and its JSON, tens of MB for a map at
/// its byte budget, so that many at once are what bounds the peak.
pub const MAX_MAP_SNAPSHOTS: usize = 2;

/// How many event streams may be open at once; more get a 503.
pub const MAX_EVENT_STREAMS: usize = 64;
/// How many requests may be answered at once; more wait their turn (an
/// event stream counts until its response starts; [`MAX_EVENT_STREAMS`]
/// bounds the streams themselves).
pub const MAX_REQUESTS: usize = 256;

/// The dashboard and its API over `shared`, open to every request from
/// loopback ([`app_with`] sets who may use it).
pub fn app(shared: Arc<HubShared>) -> Router {
    app_with(shared, Access::default())
}

/// The dashboard and its API over `shared`, used as `access` allows.
pub fn app_with(shared: Arc<HubShared>, access: Access) -> Router {
    app_limited(shared, access, RateLimit::default())
}

/// The dashboard and its API over `shared`, used as `access` allows, each
/// client at most at `rate`.
pub fn app_limited(shared: Arc<HubShared>, access: Access, rate: RateLimit) -> Router {
    router(shared, access, rate, CancellationToken::new())
}

fn router(
    shared: Arc<HubShared>,
    access: Access,
    rate: RateLimit,
    shutdown: CancellationToken,
) -> Router {
    let streams = Arc::new(tokio::sync::Semaphore::new(MAX_EVENT_STREAMS));
    let limiter = Arc::new(rate::Limiter::new(rate));
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/api/map", get(api_map))
        .route("/api/events", get(api_events))
        .route(
            "/api/hosts/{host}/services/{service}/set/{*item}",
            post(api_set),
        )
        .route("/api/docs/{file}", get(api_docs))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_REQUESTS))
        // Outermost: a client over its rate is turned away before it takes
        // one of the requests answered at once.
        .layer(axum::middleware::from_fn_with_state(limiter, rate::limit))
        .with_state(Web {
            shared,
            shutdown,
            streams,
            documents: Arc::new(documents::Documents::new(MAX_DOCUMENT_BYTES)),
            snapshots: Arc::new(tokio::sync::Semaphore::new(MAX_MAP_SNAPSHOTS)),
        })
}

/// Serves [`app`] on `listener` until `shutdown`; open event streams end
/// then too, so this returns once the requests in flight are answered.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<HubShared>,
    access: Access,
    shutdown: CancellationToken,
) -> Result<(), HubError> {
    let app = router(shared, access, RateLimit::default(), shutdown.clone());
    // The client's address, for the rate limit.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| HubError::Net(e.into()))
}

/// A refusal: the status and a reason for a person, as `{"error": ...}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    reason: String,
    /// The service's own answer, when it refused.
    answer: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
            answer: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.reason });
        if let Some(answer) = self.answer {
            body["answer"] = answer;
        }
        (self.status, axum::Json(body)).into_response()
    }
}

fn with_type(content_type: &'static str, body: impl IntoResponse) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn index() -> Response {
    let mut r = with_type("text/html; charset=utf-8", INDEX_HTML);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    r
}

async fn app_js() -> Response {
    with_type("text/javascript; charset=utf-8", APP_JS)
}

async fn app_css() -> Response {
    with_type("text/css; charset=utf-8", APP_CSS)
}

/// Built and serialised on the runtime's thread: a 1,000-host map is
/// 2.7 MB and about 16 ms (BENCHMARKS.md), short enough not to move it to a
/// blocking thread as the documents are; the page fetches it only when
/// hosts, services or descriptions change.
async fn api_map(State(web): State<Web>) -> Response {
    // The semaphore is never closed; if it were, serving without it is
    // no worse than before it existed.
    let _permit = web.snapshots.acquire().await.ok();
    let map = ApiMap {
        map: web.shared.snapshot(),
        ha_discovery: web.shared.ha_status(),
    };
    let mut r = axum::Json(map).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/api/map`: the map, and what the hub's Home Assistant discovery
/// publishes and skips (only with `--ha-discovery`; an added field).
#[derive(serde::Serialize)]
struct ApiMap {
    #[serde(flatten)]
    map: crate::MapSnapshot,
    #[serde(skip_serializing_if = "Option::is_none")]
    ha_discovery: Option<crate::ha::HaStatus>,
}

/// Every map event as `event: map` with the event as JSON; `event: resync`
/// when this client fell behind and lost some (re-read `/api/map`).
async fn api_events(State(web): State<Web>) -> Response {
    let Ok(permit) = Arc::clone(&web.streams).try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_EVENT_STREAMS} event streams are open already; try again later"),
        )
        .into_response();
    };
    events(web, permit).into_response()
}

/// The stream of [`api_events`], holding its `permit` while it is open.
fn events(
    web: Web,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = web.shared.changes.subscribe();
    let state = (rx, web.shutdown, permit);
    let stream = futures_util::stream::unfold(state, |(mut rx, shutdown, permit)| async {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return None,
            next = rx.recv() => next,
        };
        let event = match next {
            Ok(change) => Event::default()
                .event("map")
                .json_data(&change)
                .unwrap_or_else(|_| Event::default().event("resync").data("{}")),
            Err(RecvError::Lagged(n)) => Event::default()
                .event("resync")
                .data(json!({ "lagged": n }).to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, shutdown, permit)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Whether the request says its body is JSON. Required: an HTML form on
/// another site can POST `text/plain` to this address from a visitor's
/// browser without asking, but not `application/json`, which a browser
/// sends across origins only after a preflight this server never allows.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

async fn api_set(
    State(web): State<Web>,
    Path((host, service, item)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/json",
        ));
    }
    let value = parse_body(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let iface = settable(&web, &host, &service, &item)?;
    let value =
        check_value(&iface, value).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    info!(%host, %service, %item, %value, "set from the dashboard");
    let answer = web
        .shared
        .request(&iface.topic, json!({ "value": value }), SET_TIMEOUT)
        .await
        .map_err(|e| match e {
            HubError::Timeout { topic, after } => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{host}/{service} did not answer on `{topic}` within {after:?}"),
            ),
            HubError::NotConnected => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the hub is not connected to its broker; try again when it is",
            ),
            other => {
                warn!(error = %other, "set from the dashboard failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, other.to_string())
            }
        })?;
    if answer.get("ok") == Some(&Value::Bool(false)) {
        let reason = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the service refused the value")
            .to_owned();
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            reason: format!("{host}/{service}: {reason}"),
            answer: Some(answer),
        });
    }
    Ok(axum::Json(answer).into_response())
}

/// The interface `/{host}/{service}/set/{item}` names, checked against the
/// map: the host and service exist, the host is not known to be offline,
/// and the service describes that topic among its inputs.
fn settable(web: &Web, host: &str, service: &str, item: &str) -> Result<Interface, ApiError> {
    // One host's record, not a snapshot: a snapshot of a large map costs
    // milliseconds (BENCHMARKS.md), and this runs on every setting.
    let map = web.shared.lock_map();
    let not_found = |reason: String| ApiError::new(StatusCode::NOT_FOUND, reason);
    let h = map
        .host(host)
        .ok_or_else(|| not_found(format!("unknown host `{host}`")))?;
    let s = h
        .services
        .get(service)
        .ok_or_else(|| not_found(format!("host `{host}` has no service `{service}`")))?;
    let topic = web
        .shared
        .topics
        .service(host, service, &format!("set/{item}"));
    let inputs = s
        .interfaces()
        .map(|i| i.list(Category::Inputs))
        .unwrap_or_default();
    let iface = inputs.iter().find(|i| i.topic == topic).ok_or_else(|| {
        let known: Vec<&str> = inputs
            .iter()
            .filter_map(|i| i.topic.rsplit_once("/set/").map(|(_, item)| item))
            .collect();
        not_found(format!(
            "`{host}/{service}` has no settable item `{item}` (it has: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ))
    })?;
    if h.status == HostStatus::Offline {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("host `{host}` is offline"),
        ));
    }
    Ok(iface.clone())
}

async fn api_docs(State(web): State<Web>, Path(file): Path<String>) -> Result<Response, ApiError> {
    let Some(format) = Format::ALL.into_iter().find(|f| f.file_name() == file) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no document `{file}`: there are {}",
                Format::ALL.map(Format::file_name).join(", ")
            ),
        ));
    };
    // The same document `rollcall docs` writes (with the broker and the
    // agents' own topics), built off the runtime's threads, once per map
    // generation, and refused when too large.
    let text = web
        .documents
        .get(&web.shared, format)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("generating {file} failed: {e}"),
            )
        })?
        .map_err(|too_large| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, too_large.to_string())
        })?;
    let mut r = with_type(format.media_type(), text);
    if format == Format::Svg {
        r.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SVG_CSP),
        );
    }
    Ok(r)
}

async fn metrics(State(web): State<Web>) -> Response {
    with_type(
        "text/plain; version=0.0.4; charset=utf-8",
        web.shared.render_prometheus(),
    )
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such page or route: {method} {}", uri.path()),
    )
}
