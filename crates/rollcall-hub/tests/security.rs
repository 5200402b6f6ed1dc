//! Attacks on the dashboard from a web page the user visits, each
//! reproduced against the router and its defence asserted (issue 11,
//! finding 3: a POST with `Origin: http://evil.example` got 200 and the lamp
//! went on; a rebound host name reached the API).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use rollcall_hub::HubShared;
use rollcall_hub::web::{self, Access, MAX_EVENT_STREAMS};
use rollcall_net::Secret;
use rollcall_proto::Topics;
use tower::ServiceExt;

const TOKEN: &str = "a-dashboard-token-of-some-length";

fn shared() -> Arc<HubShared> {
    Arc::new(HubShared::new(Topics::default()))
}

fn with_token(public_read: bool) -> Router {
    web::app_with(
        shared(),
        Access {
            token: Some(Secret::new(TOKEN.into())),
            public_read,
            hosts: vec!["pi.local".into()],
        },
    )
}

async fn status(app: &Router, request: Request<Body>) -> StatusCode {
    app.clone().oneshot(request).await.unwrap().status()
}

fn get(uri: &str, host: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, host)
        .body(Body::empty())
        .unwrap()
}

fn set(origin: Option<&str>) -> Request<Body> {
    let mut r = Request::post("/api/hosts/h9/services/gpio/set/output/lamp")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(origin) = origin {
        r = r.header(header::ORIGIN, origin);
    }
    r.body(Body::from(r#"{"value":true}"#)).unwrap()
}

#[tokio::test]
async fn a_rebound_host_name_is_refused_and_addresses_and_listed_names_are_not() {
    let app = web::app(shared());
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
    ] {
        assert_eq!(
            status(&app, get("/api/map", host)).await,
            StatusCode::MISDIRECTED_REQUEST,
            "{host}"
        );
    }
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "[::1]:8080",
        "198.18.0.5",
    ] {
        assert_eq!(
            status(&app, get("/api/map", host)).await,
            StatusCode::OK,
            "{host}"
        );
    }
    let listed = with_token(true);
    assert_eq!(
        status(&listed, get("/api/map", "pi.local:8080")).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_change_from_another_sites_page_is_refused_before_it_is_routed() {
    let app = web::app(shared());
    assert_eq!(
        status(&app, set(Some("http://evil.example"))).await,
        StatusCode::FORBIDDEN
    );
    // Its own page, or a program sending no Origin, reaches the route
    // (which then finds no such host).
    assert_eq!(
        status(&app, set(Some("http://127.0.0.1:8080"))).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(&app, set(None)).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn with_a_token_nothing_is_read_or_changed_without_it() {
    let app = with_token(false);
    assert_eq!(
        status(&app, get("/api/map", "127.0.0.1")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(&app, set(None)).await, StatusCode::UNAUTHORIZED);
    let wrong = Request::get("/api/map")
        .header(
            header::AUTHORIZATION,
            "Bearer a-dashboard-token-of-some-lengtH",
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(&app, wrong).await, StatusCode::UNAUTHORIZED);
    let bearer = Request::get("/api/map")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(&app, bearer).await, StatusCode::OK);

    // The page opened with ?token= sets a cookie its own requests carry.
    let page = app
        .clone()
        .oneshot(get(&format!("/?token={TOKEN}"), "127.0.0.1:8080"))
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let cookie = page.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = Request::get("/api/map")
        .header(header::COOKIE, pair)
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(&app, with_cookie).await, StatusCode::OK);
}

#[tokio::test]
async fn public_reading_still_needs_the_token_to_change_anything() {
    let app = with_token(true);
    assert_eq!(
        status(&app, get("/api/map", "127.0.0.1")).await,
        StatusCode::OK
    );
    assert_eq!(status(&app, set(None)).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn event_streams_are_bounded() {
    let app = web::app(shared());
    let mut open = Vec::new();
    for _ in 0..MAX_EVENT_STREAMS {
        let response = app
            .clone()
            .oneshot(get("/api/events", "127.0.0.1"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    assert_eq!(
        status(&app, get("/api/events", "127.0.0.1")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A stream that ends makes room.
    open.pop();
    assert_eq!(
        status(&app, get("/api/events", "127.0.0.1")).await,
        StatusCode::OK
    );
}

fn from(ip: &str, uri: &str) -> Request<Body> {
    let mut r = get(uri, "127.0.0.1:8080");
    let addr: std::net::SocketAddr = format!("{ip}:40000").parse().unwrap();
    r.extensions_mut().insert(axum::extract::ConnectInfo(addr));
    r
}

/// Issue 11, item 4: a client that floods the dashboard with requests is
/// slowed to its rate with 429 and `Retry-After`; a person using the page,
/// and other clients, are not.
#[tokio::test(start_paused = true)]
async fn a_burst_past_the_rate_limit_gets_429_and_the_page_does_not() {
    let app = web::app(shared());
    // The page: it loads, then re-reads the map on changes, a few times a
    // second at most, for ten minutes.
    for uri in ["/", "/assets/app.js", "/assets/app.css", "/api/map"] {
        assert_eq!(status(&app, from("198.18.0.5", uri)).await, StatusCode::OK);
    }
    for _ in 0..3000 {
        assert_eq!(
            status(&app, from("198.18.0.5", "/api/map")).await,
            StatusCode::OK
        );
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
    }
    // A flood from one address: the burst allowance, then 429.
    let mut codes = std::collections::BTreeMap::new();
    let mut retry_after = None;
    for _ in 0..1000 {
        let response = app
            .clone()
            .oneshot(from("198.18.0.66", "/api/map"))
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        }
        *codes.entry(response.status()).or_insert(0) += 1;
    }
    let limit = web::RateLimit::default();
    assert_eq!(codes[&StatusCode::OK], limit.burst as usize, "{codes:?}");
    assert_eq!(
        codes[&StatusCode::TOO_MANY_REQUESTS],
        1000 - limit.burst as usize
    );
    assert_eq!(retry_after.unwrap(), "1");
    // Meanwhile the page's own address is served...
    assert_eq!(
        status(&app, from("198.18.0.5", "/api/map")).await,
        StatusCode::OK
    );
    // ...and the flooding one again after waiting as told.
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        status(&app, from("198.18.0.66", "/api/map")).await,
        StatusCode::OK
    );
}

/// Issue 11, finding 7: with 20,000 made-up hosts in the map, one
/// `GET /api/docs/asyncapi.json` returned 507 MB after 19 s with a 5.25 GB
/// peak. Now the map holds what its budget allows, and a document over the
/// cap is refused by its estimate, before it is built.
#[tokio::test]
async fn the_documents_of_a_flooded_map_are_capped_and_built_once() {
    let shared = shared();
    {
        let mut map = shared.lock_map();
        let topics = Topics::default();
        for i in 0..20_000 {
            let host = format!("fake{i:05}");
            map.apply_message(&topics, &format!("/{host}/$state"), b"online", 1);
            let inputs: Vec<serde_json::Value> = (0..8)
                .map(|n| {
                    serde_json::json!({"name": format!("in{n}"), "type": "float",
                        "topic": format!("/{host}/svc/set/in{n}"), "unit": "V",
                        "doc": "an input the attacker made up, with a long doc line"})
                })
                .collect();
            let d = serde_json::json!({"function": "svc", "interfaces": {"inputs": inputs}});
            map.apply_message(
                &topics,
                &format!("/{host}/svc/$description"),
                d.to_string().as_bytes(),
                1,
            );
        }
        assert!(map.bytes() <= map.config().max_bytes);
        assert!(map.counts().evicted > 0);
    }
    let app = web::app(Arc::clone(&shared));
    let started = std::time::Instant::now();
    let response = app
        .clone()
        .oneshot(get("/api/docs/asyncapi.json", "127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("asyncapi.json") && text.contains("rollcall docs"),
        "{text}"
    );
    // Refused from its estimate: in well under the time building it takes.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The small ones are served, the same bytes while the map stays.
    let dot = |app: &Router| {
        let app = app.clone();
        async move {
            let r = app
                .oneshot(get("/api/docs/cluster.dot", "127.0.0.1"))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            http_body_util::BodyExt::collect(r.into_body())
                .await
                .unwrap()
                .to_bytes()
        }
    };
    let first = dot(&app).await;
    assert!(first.len() <= web::MAX_DOCUMENT_BYTES);
    assert_eq!(dot(&app).await, first);
}
