//! Which names and origins are the dashboard's own: the defence against DNS rebinding
//! (loopback mode answers only to its own names) and against cross-site requests (a
//! browser's Origin must be ours or listed in `dashboard.allowed_origins`).

use axum::http::{HeaderMap, header};

use crate::app::AppState;

/// The `Host` a request was sent to, if it names this dashboard: a loopback name or
/// address, the bound `dashboard.host`, or the host of `dashboard.public_url`.
pub fn own_host<'h>(s: &AppState, headers: &'h HeaderMap) -> Option<&'h str> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let url = reqwest::Url::parse(&format!("http://{host}")).ok()?;
    let name = url.host_str()?.trim_matches(['[', ']']);
    let dash = &s.config.dashboard;
    let public = reqwest::Url::parse(&dash.public_url).ok();
    let ours = crate::config::is_loopback_host(name)
        || name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case(&dash.host)
        || public
            .as_ref()
            .and_then(|u| u.host_str())
            .is_some_and(|p| p.eq_ignore_ascii_case(name));
    ours.then_some(host)
}

/// Whether a browser on `origin` may call this dashboard: the public URL's origin, one in
/// `dashboard.allowed_origins`, or the origin of the (own) host it was reached at.
pub fn origin_allowed(s: &AppState, headers: &HeaderMap, origin: &str) -> bool {
    let dash = &s.config.dashboard;
    if dash.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    if let Ok(public) = reqwest::Url::parse(&dash.public_url)
        && public.origin().ascii_serialization() == origin
    {
        return true;
    }
    own_host(s, headers).is_some_and(|host| {
        [format!("http://{host}"), format!("https://{host}")]
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    })
}
