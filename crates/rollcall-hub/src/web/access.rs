//! Who may use the dashboard. A web page the user visits can send requests
//! to any address the user's browser reaches (DNS rebinding, cross-site
//! POSTs), so every request is checked before it is routed:
//!
//! - its `Host`, when it has one (a browser always sends it), must be an IP
//!   address, `localhost`, or a name the user listed (`--http-host`): a
//!   rebound name of the attacker's is refused;
//! - a request that changes something and carries an `Origin` must come
//!   from this dashboard's own origin;
//! - with a token (required on any address but loopback), requests that
//!   change something must carry it, and reads too unless reading is public.
//!   The token comes as `Authorization: Bearer TOKEN`, or once as
//!   `?token=TOKEN` on a page's URL, which sets an HTTP-only, same-site
//!   cookie the page's own requests then carry.
//!
//! Tokens are compared by their SHA-256 digests, so the comparison's time
//! says nothing about the token.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rollcall_net::Secret;
use sha2::{Digest, Sha256};

/// The cookie the dashboard's token travels in, once given.
const COOKIE: &str = "rollcall_token";
/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Who may use the dashboard.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The token requests must carry; `None` on loopback only.
    pub token: Option<Secret<String>>,
    /// Reading (the page, the map, events, documents, metrics) needs no
    /// token; changing does.
    pub public_read: bool,
    /// Host names, beside IP addresses and `localhost`, the dashboard
    /// answers to.
    pub hosts: Vec<String>,
}

/// Why an [`Access`] cannot be used for a listener.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    /// A listener that others can reach, without a token.
    #[error(
        "the dashboard on {0} can be reached from other machines: give it a token \
         (--http-token, ROLLCALL_HTTP_TOKEN or --http-token-file), or bind it to 127.0.0.1"
    )]
    NeedsToken(std::net::SocketAddr),
    /// A token that can be guessed.
    #[error("the dashboard's token must have at least {MIN_TOKEN_BYTES} bytes")]
    ShortToken,
}

impl Access {
    /// Checks that this access fits a listener on `addr`: off loopback, a
    /// token of at least [`MIN_TOKEN_BYTES`] is required.
    pub fn check_for(&self, addr: std::net::SocketAddr) -> Result<(), AccessError> {
        if let Some(token) = &self.token
            && token.expose().len() < MIN_TOKEN_BYTES
        {
            return Err(AccessError::ShortToken);
        }
        if self.token.is_none() && !addr.ip().is_loopback() {
            return Err(AccessError::NeedsToken(addr));
        }
        Ok(())
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        // A browser always sends `Host`, so a rebound page cannot leave it
        // out; a request without one is from a program, not a page.
        let Some(host) = headers.get(header::HOST) else {
            return true;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        let name = host_name(host);
        name.parse::<IpAddr>().is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    fn has_token(&self, request: &Request) -> Option<bool> {
        let token = self.token.as_ref()?;
        let want = digest(token.expose());
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='));
        let given = [bearer, cookie, query_token(request)];
        Some(given.into_iter().flatten().any(|t| digest(t) == want))
    }
}

/// `host`, `host:port`, `[v6]:port` or `v6` without the port and brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn query_token(request: &Request) -> Option<&str> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn changes_something(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether `origin` (an `Origin` header) is this dashboard's own, reached
/// as `host` (the `Host` header).
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": reason }))).into_response()
}

/// The check every request passes before it is routed.
pub(super) async fn guard(State(access): State<Access>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if !access.host_allowed(headers) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard does not answer to that Host name; add it with --http-host",
        );
    }
    let writes = changes_something(request.method());
    if writes && let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        if !same_origin(origin, host) {
            return refuse(
                StatusCode::FORBIDDEN,
                "requests from other web sites may not change anything here",
            );
        }
    }
    let from_query = query_token(&request).is_some();
    match access.has_token(&request) {
        Some(false) if writes || !access.public_read => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its token: open it as /?token=TOKEN, or send \
                 Authorization: Bearer TOKEN",
            );
        }
        Some(true) if from_query => {
            let mut response = next.run(request).await;
            if let Some(token) = &access.token
                && let Ok(cookie) = HeaderValue::from_str(&format!(
                    "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                    token.expose()
                ))
            {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            return response;
        }
        _ => {}
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("pi.local:8080"), "pi.local");
        assert_eq!(host_name("198.18.0.5"), "198.18.0.5");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("::1"), "::1");
    }

    #[test]
    fn a_listener_off_loopback_needs_a_token_of_16_bytes() {
        let open = Access::default();
        assert_eq!(open.check_for("127.0.0.1:8080".parse().unwrap()), Ok(()));
        assert!(matches!(
            open.check_for("0.0.0.0:8080".parse().unwrap()),
            Err(AccessError::NeedsToken(_))
        ));
        let short = Access {
            token: Some(Secret::new("short".into())),
            ..Access::default()
        };
        assert_eq!(
            short.check_for("127.0.0.1:8080".parse().unwrap()),
            Err(AccessError::ShortToken)
        );
    }

    #[test]
    fn only_the_dashboards_own_origin_is_the_same() {
        assert!(same_origin("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(!same_origin("http://evil.example", "127.0.0.1:8080"));
        assert!(!same_origin("null", "127.0.0.1:8080"));
    }
}
