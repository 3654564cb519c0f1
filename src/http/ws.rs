//! The dashboard's WebSockets (SPEC §9): `/api/events` (live status, drain changes, turns,
//! cron runs, audit events and the last hour's history) and `/api/ws` (chat: each message
//! is a turn through the gate, in a stored session — `sessions` — that the client may name
//! to continue it).
//!
//! Browsers cannot set headers on an upgrade, so these endpoints authenticate themselves:
//! gated mode accepts only `?ticket=` (single use, 30 s, bound to a live session) and refuses
//! `?token=`; loopback mode also accepts the process's session token as `?token=`. A browser's
//! Origin must be the dashboard's own or in `dashboard.allowed_origins`. Idle sockets get a
//! ping every `dashboard.ws_heartbeat_seconds` (20) so proxies keep them open.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt as _;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use crate::auth::access::{SocketRefusal, SocketRequest};
use crate::auth::sessions::Session;
use crate::lifecycle::{DrainDetail, StatusRecord};
use crate::state::AppState;

pub mod chat;

/// The WebSocket paths (the gate lets them through; they authenticate themselves).
pub const PATHS: [&str; 2] = ["/api/events", "/api/ws"];
/// Least time between two status messages (a busy gateway changes state constantly).
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// Least time between two history messages (the charts move by the minute).
const HISTORY_EVERY: Duration = Duration::from_secs(1);
/// Largest frame and message a client may send on either socket (SPEC §10). The frame
/// limit is checked on the frame's header, before its payload is buffered.
const MAX_FRAME_BYTES: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events))
        .route("/api/ws", get(chat::chat))
}

/// How a socket authenticates (query parameters: browsers cannot set upgrade headers).
#[derive(Deserialize)]
pub struct WsAuth {
    ticket: Option<String>,
    token: Option<String>,
}

fn refuse(status: StatusCode, reason: &'static str, detail: String) -> Response {
    ApiError::Socket {
        status,
        reason,
        detail,
    }
    .into_response()
}

/// Decides who opens the socket, before the upgrade (`auth::Access` decides and audits),
/// then hands the upgraded socket to `run`; a refusal answers the HTTP request: 403 for a
/// foreign Origin, else 401.
async fn open<F, Fut>(
    s: AppState,
    peer: SocketAddr,
    auth: &WsAuth,
    headers: &HeaderMap,
    ws: WebSocketUpgrade,
    run: F,
) -> Response
where
    F: FnOnce(WebSocket, AppState, Session) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let ip = super::origin::client_addr(&s, peer, headers).to_string();
    let request = SocketRequest {
        origin: super::origin::browser_origin(&s, headers),
        ticket: auth.ticket.as_deref(),
        token: auth.token.as_deref(),
        ip: &ip,
    };
    match s.access.open_socket(&request).await {
        Ok(session) => small_buffers(ws).on_upgrade(move |socket| run(socket, s, session)),
        Err(refusal) => {
            let status = match refusal {
                SocketRefusal::ForeignOrigin(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            refuse(status, refusal.reason(), refusal.to_string())
        }
    }
}

/// Live status, drain changes, turn and run events, audit events, the last hour's history
/// (WebSocket upgrade).
#[utoipa::path(get, path = "/api/events", tag = "dashboard",
    params(("ticket" = Option<String>, Query, description = "single-use ticket from POST /api/auth/ws-ticket"),
           ("token" = Option<String>, Query, description = "loopback mode only: the session token"),
           ("Connection" = String, Header, pattern = "^[Uu]pgrade$", description = "a WebSocket upgrade"),
           ("Upgrade" = String, Header, pattern = "^websocket$"),
           ("Sec-WebSocket-Version" = String, Header, pattern = "^13$"),
           ("Sec-WebSocket-Key" = String, Header, pattern = "^[A-Za-z0-9+/]{22}==$")),
    responses((status = 101, description = "WebSocket: JSON frames with a `type`"),
              (status = 400, description = "not a WebSocket upgrade (the Connection/Upgrade/Sec-WebSocket-* headers are missing or wrong), or a malformed query", content_type = "text/plain", body = String),
              (status = 401, description = "no valid ticket or token", body = super::schemas::DashboardError),
              (status = 403, description = "foreign Origin", body = super::schemas::DashboardError)))]
pub async fn events(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(auth): Query<WsAuth>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    open(s, peer, &auth, &headers, ws, events_socket).await
}

/// Pings an idle socket every `dashboard.ws_heartbeat_seconds` (default 20), the first
/// one period from now. (Not `interval`'s immediate first tick: the timer rounds "now" up
/// to its next millisecond, so awaiting it held every new socket up to 1 ms before it
/// read its first frame — a client closing at once waited that long for our reply.)
fn heartbeat(s: &AppState) -> tokio::time::Interval {
    let every = Duration::from_secs(s.config.dashboard.ws_heartbeat_seconds);
    tokio::time::interval_at(tokio::time::Instant::now() + every, every)
}

/// Ends the closing handshake: answers a client's Close frame (tungstenite only queues
/// the answer; a send after it fails without writing it), or sends ours. Either way the
/// connection closes when the socket is dropped, without waiting for the client.
async fn close(mut socket: WebSocket) {
    let _ = socket.close().await;
}

/// Dashboard frames are small: the library's default 128 KiB read buffer per socket would
/// make a thousand idle sockets cost over 100 MiB. Every `send` flushes, so writes go out as
/// they are sent; frames only `feed` to the socket wait for the next flush (the first two
/// leave in one write, one TCP segment instead of two). The write buffer holds what is
/// queued, whatever its size setting, which only says how much may wait. A client frame or
/// message over 64 KiB closes the socket (the default would buffer 16 MiB frames).
fn small_buffers(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(4096)
        .write_buffer_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .max_message_size(MAX_FRAME_BYTES)
}

/// A frame's JSON: `"type"` and the fields of `body`, serialized straight from the
/// structs (no `Value` tree on the way: these are built for every socket that opens).
#[derive(serde::Serialize)]
struct Typed<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: T,
}

fn typed(kind: &'static str, body: impl serde::Serialize) -> String {
    serde_json::to_string(&Typed { kind, body }).unwrap_or_default()
}

fn status_message(s: &AppState) -> String {
    #[derive(serde::Serialize)]
    struct Status {
        status: StatusRecord,
        drain: DrainDetail,
    }
    let snap = s.gate.snapshot();
    let body = Status {
        status: StatusRecord::build(&snap, &s.info),
        drain: DrainDetail::build(&snap, &s.info),
    };
    typed("status", body)
}

/// The last hour per minute (`history::HistorySnapshot`), for the page's charts.
fn history_message(s: &AppState) -> String {
    let history = s.metrics.history();
    history.rendered(|h| typed("history", h)).to_string()
}

/// Sends the status now and whenever it changes (at most every 100 ms), then the history
/// now and whenever it changes (at most every second), every live event, and a ping when
/// idle; ends when the client leaves or the gateway stops.
async fn events_socket(mut socket: WebSocket, s: AppState, session: Session) {
    let mut status = s.gate.subscribe();
    let mut history = s.metrics.history().subscribe();
    let mut feed = s.events.subscribe();
    // The first frame is always the status, whatever else is going on.
    status.borrow_and_update();
    history.borrow_and_update();
    let (first, second) = (status_message(&s), history_message(&s));
    let third = s.events.activity_message();
    if socket.feed(WsMessage::Text(first.into())).await.is_err()
        || socket.feed(WsMessage::Text(second.into())).await.is_err()
        || socket.send(WsMessage::Text(third.into())).await.is_err()
    {
        return;
    }
    let (mut dirty, mut history_dirty) = (false, false);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let mut history_tick = tokio::time::interval(HISTORY_EVERY);
    // After a quiet spell, one message at once, then one a second (not a burst).
    history_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = heartbeat(&s);
    loop {
        let out = tokio::select! {
            changed = status.changed() => {
                if changed.is_err() { break; }
                dirty = true;
                continue;
            }
            _ = status_tick.tick(), if dirty => {
                dirty = false;
                WsMessage::Text(status_message(&s).into())
            }
            changed = history.changed() => {
                if changed.is_err() { break; }
                history_dirty = true;
                continue;
            }
            _ = history_tick.tick(), if history_dirty => {
                history_dirty = false;
                WsMessage::Text(history_message(&s).into())
            }
            event = feed.recv() => match event {
                Ok(text) => WsMessage::Text(text.as_ref().into()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    WsMessage::Text(json!({"type": "lagged", "skipped": n}).to_string().into())
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = heartbeat.tick() => {
                // A socket lives no longer than the session that opened it.
                if !s.access.still_live(&session).await { break; }
                WsMessage::Ping(Vec::new().into())
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => continue,
            },
            () = s.shutdown.requested() => break,
        };
        if socket.send(out).await.is_err() {
            break;
        }
    }
    close(socket).await;
}
