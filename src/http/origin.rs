//! Which names and origins are ours: the defence against DNS rebinding (the dashboard in
//! loopback mode and the keyless API server answer only to their own names) and against
//! cross-site requests (a browser's Origin must be ours or listed in
//! `dashboard.allowed_origins`), and who a dashboard client is (the peer, or the address a
//! trusted proxy forwards).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::thread::LocalKey;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::auth::access::Origin;
use crate::state::{AppState, PublicUrl};

/// The `Host` header and the name in it (port, IPv6 brackets and a final dot removed);
/// `None` when absent, repeated, or not just a host and port (no userinfo, no path).
fn host_name(headers: &HeaderMap) -> Option<(&str, String)> {
    let mut all = headers.get_all(header::HOST).iter();
    let (host, None) = (all.next()?.to_str().ok()?, all.next()) else {
        return None;
    };
    thread_local!(static LAST: Last<Option<String>> = const { RefCell::new(None) });
    let name = remembered(&LAST, host, |host| {
        let url = reqwest::Url::parse(&format!("http://{host}")).ok()?;
        if !url.username().is_empty() || url.password().is_some() || url.path() != "/" {
            return None;
        }
        if url.query().is_some() || url.fragment().is_some() {
            return None;
        }
        let name = url.host_str()?.trim_matches(['[', ']']);
        Some(name.strip_suffix('.').unwrap_or(name).to_owned())
    })?;
    Some((host, name))
}

/// `dashboard.public_url` parsed, once, for [`PublicUrl`].
pub fn public_url(url: &str) -> PublicUrl {
    let Ok(url) = reqwest::Url::parse(url) else {
        return PublicUrl::default();
    };
    PublicUrl {
        host: url.host_str().map(str::to_owned),
        origin: Some(url.origin().ascii_serialization()),
        prefix: url.path().trim_end_matches('/').to_owned(),
    }
}

/// The last key a thread parsed, and what it gave.
type Last<T> = RefCell<Option<(String, T)>>;

/// `parse(key)`, remembered for the last key on this thread: nearly every request names
/// the same `Host`, and parsing it as a URL was most of what the checks cost (with the
/// public URL parsed per request too, 3 % of a ticket round trip's CPU).
fn remembered<T: Clone>(
    last: &'static LocalKey<Last<T>>,
    key: &str,
    parse: impl FnOnce(&str) -> T,
) -> T {
    last.with_borrow_mut(|last| match last {
        Some((k, v)) if k == key => v.clone(),
        _ => {
            let v = parse(key);
            *last = Some((key.to_owned(), v.clone()));
            v
        }
    })
}

/// A loopback name or address, or `configured` (the listener's own `host` setting).
fn is_local_name(name: &str, configured: &str) -> bool {
    crate::config::is_loopback_host(name)
        || name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case(configured.trim_matches(['[', ']']))
}

/// The `Host` a request was sent to, if it names this dashboard: a loopback name or
/// address, the bound `dashboard.host`, or the host of `dashboard.public_url`.
pub fn own_host<'h>(s: &AppState, headers: &'h HeaderMap) -> Option<&'h str> {
    let (host, name) = host_name(headers)?;
    let dash = &s.config.dashboard;
    let ours = is_local_name(&name, &dash.host)
        || s.public_url
            .host
            .as_ref()
            .is_some_and(|p| p.eq_ignore_ascii_case(&name));
    ours.then_some(host)
}

/// Without `API_SERVER_KEY` (so bound to loopback) the API server answers only requests
/// sent to a loopback name or its configured host: a page on a rebound DNS name cannot
/// drive the agent or read its answers. Requests without `Host` (HTTP/1.0, not a browser)
/// pass. With a key, the key is the guard.
pub async fn api_host_guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let foreign = s.config.secrets.api_server_key.is_none()
        && req.headers().contains_key(header::HOST)
        && !host_name(req.headers())
            .is_some_and(|(_, name)| is_local_name(&name, &s.config.api_server.host));
    if foreign {
        return ApiError::OpenAi {
            status: StatusCode::FORBIDDEN,
            message: "this API server has no API_SERVER_KEY, so it answers only requests sent to localhost or its configured host; set API_SERVER_KEY to serve other names".into(),
            kind: "invalid_request_error",
            code: Some("host_not_allowed"),
            retry_after: false,
        }
        .into_response();
    }
    next.run(req).await
}

/// Whether a browser on `origin` may call this dashboard: the public URL's origin, one in
/// `dashboard.allowed_origins`, or the origin of the (own) host it was reached at.
pub fn origin_allowed(s: &AppState, headers: &HeaderMap, origin: &str) -> bool {
    let dash = &s.config.dashboard;
    if dash.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    if s.public_url.origin.as_deref() == Some(origin) {
        return true;
    }
    own_host(s, headers).is_some_and(|host| {
        [format!("http://{host}"), format!("https://{host}")]
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    })
}

/// A browser's `Origin` (non-browser clients send none) and whether this dashboard accepts
/// it, as `auth::Access` takes it.
pub fn browser_origin<'h>(s: &AppState, headers: &'h HeaderMap) -> Option<Origin<'h>> {
    let value = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())?;
    Some(Origin {
        value,
        allowed: origin_allowed(s, headers, value),
    })
}

/// Who sent a dashboard request: the TCP peer, or, when the peer is one of
/// `dashboard.trusted_proxies`, the client its `X-Forwarded-For` names.
pub fn client_addr(s: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        // An unreadable value stays in the chain as garbage, which ends the walk there.
        .map(|v| v.to_str().unwrap_or(""));
    crate::auth::proxy::client_ip(peer.ip(), forwarded, &s.config.dashboard.trusted_proxies)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn name_in(host: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        host_name(&headers).map(|(_, name)| name)
    }

    #[test]
    fn each_host_is_read_for_itself_though_the_last_one_is_remembered() {
        for _ in 0..2 {
            assert_eq!(name_in("localhost:9119").as_deref(), Some("localhost"));
            assert_eq!(name_in("gw.example.").as_deref(), Some("gw.example"));
            assert_eq!(name_in("[::1]:80").as_deref(), Some("::1"));
            assert_eq!(name_in("user@gw.example"), None);
            assert_eq!(name_in("gw.example/path"), None);
            // The same name again: the remembered answer, a refusal too.
            assert_eq!(name_in("gw.example/path"), None);
            assert_eq!(name_in("127.1").as_deref(), Some("127.0.0.1"));
        }
    }

    #[test]
    fn the_public_url_gives_its_host_origin_and_prefix() {
        assert_eq!(
            public_url("https://gw.example:8443/hermes/"),
            PublicUrl {
                host: Some("gw.example".into()),
                origin: Some("https://gw.example:8443".into()),
                prefix: "/hermes".into(),
            }
        );
        assert_eq!(public_url("not a url"), PublicUrl::default());
        let other = public_url("http://other.example");
        assert_eq!(other.host.as_deref(), Some("other.example"));
        assert_eq!(other.prefix, "");
    }
}
