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
use serde_json::{Value, json};

use super::ApiError;
use crate::agent::{Message, TurnRequest};
use crate::auth::access::{SocketRefusal, SocketRequest};
use crate::auth::sessions::Session;
use crate::lifecycle::{DrainDetail, StatusRecord};
use crate::sessions::{RecordedTurn, SessionError};
use crate::state::AppState;
use crate::turn::{End, Interruption, Step};

/// The WebSocket paths (the gate lets them through; they authenticate themselves).
pub const PATHS: [&str; 2] = ["/api/events", "/api/ws"];
/// Least time between two status messages (a busy gateway changes state constantly).
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// Least time between two history messages (the charts move by the minute).
const HISTORY_EVERY: Duration = Duration::from_secs(1);
/// Largest frame and message a client may send on either socket (SPEC §10). The frame
/// limit is checked on the frame's header, before its payload is buffered.
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest chat message accepted: any text this long fits in one frame (at most 4 bytes a
/// character); a longer one that still fits gets an error frame, a bigger frame closes.
const MAX_CHAT_CHARS: usize = 16_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events))
        .route("/api/ws", get(chat))
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

/// Decides who opens the socket, before the upgrade (`auth::Access` decides and audits); a
/// refusal answers the HTTP request: 403 for a foreign Origin, else 401.
async fn authorize(
    s: &AppState,
    auth: &WsAuth,
    headers: &HeaderMap,
    ip: &str,
) -> Result<Session, Box<Response>> {
    let request = SocketRequest {
        origin: super::origin::browser_origin(s, headers),
        ticket: auth.ticket.as_deref(),
        token: auth.token.as_deref(),
        ip,
    };
    s.access.open_socket(&request).await.map_err(|refusal| {
        let status = match refusal {
            SocketRefusal::ForeignOrigin(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        Box::new(refuse(status, refusal.reason(), refusal.to_string()))
    })
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
    let ip = super::origin::client_addr(&s, peer, &headers).to_string();
    match authorize(&s, &auth, &headers, &ip).await {
        Ok(session) => {
            small_buffers(ws).on_upgrade(move |socket| events_socket(socket, s, session))
        }
        Err(r) => *r,
    }
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
    if socket.feed(WsMessage::Text(first.into())).await.is_err()
        || socket.send(WsMessage::Text(second.into())).await.is_err()
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

/// Chat with the agent: each text frame is a turn (WebSocket upgrade).
#[utoipa::path(get, path = "/api/ws", tag = "dashboard",
    params(("ticket" = Option<String>, Query, description = "single-use ticket from POST /api/auth/ws-ticket"),
           ("token" = Option<String>, Query, description = "loopback mode only: the session token"),
           ("Connection" = String, Header, pattern = "^[Uu]pgrade$", description = "a WebSocket upgrade"),
           ("Upgrade" = String, Header, pattern = "^websocket$"),
           ("Sec-WebSocket-Version" = String, Header, pattern = "^13$"),
           ("Sec-WebSocket-Key" = String, Header, pattern = "^[A-Za-z0-9+/]{22}==$")),
    responses((status = 101, description = "WebSocket: send {\"message\", \"session_id\"?} (a stored session to continue); receive start (with the session_id that holds the conversation), delta…, done or error"),
              (status = 400, description = "not a WebSocket upgrade (the Connection/Upgrade/Sec-WebSocket-* headers are missing or wrong), or a malformed query", content_type = "text/plain", body = String),
              (status = 401, description = "no valid ticket or token", body = super::schemas::DashboardError),
              (status = 403, description = "foreign Origin", body = super::schemas::DashboardError)))]
pub async fn chat(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(auth): Query<WsAuth>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let ip = super::origin::client_addr(&s, peer, &headers).to_string();
    match authorize(&s, &auth, &headers, &ip).await {
        Ok(session) => small_buffers(ws).on_upgrade(move |socket| chat_socket(socket, s, session)),
        Err(r) => *r,
    }
}

fn frame(v: Value) -> WsMessage {
    WsMessage::Text(v.to_string().into())
}

/// The text of a chat message — `{"message": "..."}` or plain text — and the stored
/// session it names (`"session_id"`), if any.
fn chat_text(raw: &str) -> Result<(String, Option<String>), String> {
    let (text, session) = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(m)) => {
            let session = match m.get("session_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(id)) => Some(id.clone()),
                Some(_) => return Err("session_id: expected a string".into()),
            };
            match m.get("message").or_else(|| m.get("content")) {
                Some(Value::String(t)) => (t.clone(), session),
                _ => return Err(r#"expected {"message": "..."} or plain text"#.into()),
            }
        }
        _ => (raw.to_owned(), None),
    };
    let text = text.trim().to_owned();
    if text.is_empty() {
        return Err("the message is empty".into());
    }
    if text.chars().count() > MAX_CHAT_CHARS {
        return Err(format!(
            "the message is longer than {MAX_CHAT_CHARS} characters"
        ));
    }
    Ok((text, session))
}

/// One conversation: every message is a turn through the gate, streamed back as
/// `start` (naming the stored session), `delta`…, then `done` or `error`. A message that
/// names a stored session continues it from then on; else the socket's own new session
/// holds the conversation. A client that leaves cancels its turn.
async fn chat_socket(mut socket: WebSocket, s: AppState, session: Session) {
    let mut session_id = s.sessions.mint_id();
    let mut heartbeat = heartbeat(&s);
    while let Some(raw) = next_text(&mut socket, &s, &session, &mut heartbeat).await {
        if !s.access.still_live(&session).await {
            let v = json!({"type": "error", "code": "session_ended", "message": "your session has ended; sign in again"});
            let _ = socket.send(frame(v)).await;
            break;
        }
        let flow = match chat_text(&raw) {
            Ok((_, Some(id))) if !crate::sessions::is_session_id(&id) => {
                let v = json!({"type": "error", "code": "invalid_session_id",
                    "message": SessionError::InvalidId.to_string()});
                send_or_close(&mut socket, v).await
            }
            Ok((text, named)) => {
                session_id = named.unwrap_or(session_id);
                let chat = Chat {
                    s: &s,
                    session: &session,
                    session_id: &session_id,
                };
                chat.answer(&mut socket, text).await
            }
            Err(problem) => {
                let v = json!({"type": "error", "code": "invalid_message", "message": problem});
                send_or_close(&mut socket, v).await
            }
        };
        if flow == Flow::Close {
            break;
        }
    }
    close(socket).await;
}

/// Whether a chat socket goes on after a message.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

async fn send_or_close(socket: &mut WebSocket, v: Value) -> Flow {
    match socket.send(frame(v)).await {
        Ok(()) => Flow::Continue,
        Err(_) => Flow::Close,
    }
}

/// The next text message, answering heartbeats meanwhile; `None` once the socket closes,
/// the session ends or the gateway shuts down.
async fn next_text(
    socket: &mut WebSocket,
    s: &AppState,
    session: &Session,
    heartbeat: &mut tokio::time::Interval,
) -> Option<String> {
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(t))) => return Some(t.to_string()),
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            },
            _ = heartbeat.tick() => {
                if !s.access.still_live(session).await
                    || socket.send(WsMessage::Ping(Vec::new().into())).await.is_err()
                {
                    return None;
                }
            }
            () = s.shutdown.requested() => return None,
        }
    }
}

/// One dashboard chat conversation: whose it is and its stored session.
struct Chat<'a> {
    s: &'a AppState,
    session: &'a Session,
    session_id: &'a str,
}

impl Chat<'_> {
    /// Answers one user message as a turn of the driver, in the stored session (whose
    /// history the turn runs on, and which records it when it completes).
    async fn answer(&self, socket: &mut WebSocket, text: String) -> Flow {
        let message = Message {
            role: "user".into(),
            content: text,
        };
        let opened = match self
            .s
            .sessions
            .open(Some(self.session_id), vec![message])
            .await
        {
            Ok(opened) => opened,
            Err(e) => {
                let code = match e {
                    SessionError::InvalidId => "invalid_session_id",
                    SessionError::Unknown | SessionError::NoNewMessage => "session_refused",
                    SessionError::Store(_) => "store_unavailable",
                };
                let v = json!({"type": "error", "code": code, "message": e.to_string()});
                return send_or_close(socket, v).await;
            }
        };
        let admission = match self.s.turns.admit(self.session_id) {
            Ok(a) => a,
            Err(refusal) => {
                let v = json!({"type": "error", "code": "gateway_draining",
                    "message": format!("The gateway is {}: it is finishing the turns in flight and not starting new ones. Try again later.",
                        if matches!(refusal, crate::lifecycle::Refusal::NotReady) { "starting" } else { "draining" })});
                return send_or_close(socket, v).await;
            }
        };
        let turn_id = format!("turn_{}", &crate::ids::random_hex128()[..16]);
        let running = opened.recording.around(admission.start(TurnRequest {
            messages: opened.messages,
            model: self.s.config.api_server.model_name.clone(),
            session_id: opened.id.clone(),
            turn_id: turn_id.clone(),
        }));
        tracing::debug!(principal = %self.session.principal, turn = %turn_id, "dashboard chat turn");
        let start = json!({"type": "start", "turn_id": turn_id, "session_id": opened.id});
        if send_or_close(socket, start).await == Flow::Close {
            return Flow::Close;
        }
        relay(socket, running, &turn_id).await
    }
}

/// Sends the turn's steps as frames until its end; [`Flow::Close`] when the socket must
/// close (the client left, which drops and so cancels the turn, or the shutdown deadline
/// cut it).
async fn relay(socket: &mut WebSocket, mut running: RecordedTurn, turn_id: &str) -> Flow {
    loop {
        let step = tokio::select! {
            step = running.next() => step,
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return Flow::Close,
                Some(Ok(WsMessage::Text(_))) => {
                    let v = json!({"type": "error", "code": "turn_in_progress",
                        "message": "the previous message is still being answered; send this one when it is done"});
                    if send_or_close(socket, v).await == Flow::Close { return Flow::Close; }
                    continue;
                }
                Some(Ok(_)) => continue,
            },
        };
        let (msg, done) = match step {
            Step::Delta(t) => (json!({"type": "delta", "text": t}), false),
            Step::End(End::Completed) => (json!({"type": "done", "turn_id": turn_id}), true),
            Step::End(End::Failed(m)) => (
                json!({"type": "error", "code": "turn_failed", "message": m}),
                true,
            ),
            Step::End(End::Interrupted(Interruption::Cancelled)) => return Flow::Close,
            Step::End(End::Interrupted(Interruption::NoOutcome)) => (
                json!({"type": "error", "code": "turn_interrupted", "message": "the turn ended without an answer"}),
                true,
            ),
        };
        if send_or_close(socket, msg).await == Flow::Close {
            return Flow::Close;
        }
        if done {
            return Flow::Continue;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chat_text;

    #[test]
    fn chat_messages() {
        assert_eq!(
            chat_text(r#"{"message": " hi "}"#).unwrap(),
            ("hi".into(), None)
        );
        assert_eq!(chat_text("plain words").unwrap().0, "plain words");
        assert_eq!(
            chat_text(r#"{"message": "go on", "session_id": "api-0123456789abcdef"}"#).unwrap(),
            ("go on".into(), Some("api-0123456789abcdef".into()))
        );
        assert!(
            chat_text(r#"{"message": "x", "session_id": 5}"#)
                .unwrap_err()
                .contains("session_id")
        );
        assert!(chat_text("   ").unwrap_err().contains("empty"));
        assert!(
            chat_text(r#"{"message": 5}"#)
                .unwrap_err()
                .contains("expected")
        );
        // The longest message, in 4-byte characters and wrapped in JSON, fits in a frame.
        let longest = "😀".repeat(super::MAX_CHAT_CHARS);
        let framed = serde_json::json!({ "message": longest }).to_string();
        assert!(framed.len() <= super::MAX_FRAME_BYTES, "{}", framed.len());
        assert!(chat_text(&framed).is_ok());
        assert!(
            chat_text(&"a".repeat(super::MAX_CHAT_CHARS + 1))
                .unwrap_err()
                .contains("longer than 16000")
        );
    }
}
