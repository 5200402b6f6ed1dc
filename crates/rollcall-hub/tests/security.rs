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
