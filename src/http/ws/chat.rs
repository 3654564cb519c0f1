//! `/api/ws`: chat with the agent. Each text frame is a turn through the gate, in a stored
//! session (`sessions`) the client may name to continue it; the answer streams back as
//! `start`, `delta`… and `done` or `error` frames. The socket authenticates itself as
//! `/api/events` does (see the parent module).

use std::net::SocketAddr;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{WsAuth, close, heartbeat};
use crate::agent::{Message, TurnRequest};
use crate::auth::sessions::Session;
use crate::sessions::{RecordedTurn, SessionError};
use crate::state::AppState;
use crate::turn::{End, Interruption, Step};

/// Longest chat message accepted: any text this long fits in one frame (at most 4 bytes a
/// character); a longer one that still fits gets an error frame, a bigger frame closes.
const MAX_CHAT_CHARS: usize = 16_000;

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
              (status = 401, description = "no valid ticket or token", body = crate::http::schemas::DashboardError),
              (status = 403, description = "foreign Origin", body = crate::http::schemas::DashboardError)))]
pub async fn chat(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(auth): Query<WsAuth>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    super::open(s, peer, &auth, &headers, ws, chat_socket).await
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
        assert!(
            framed.len() <= super::super::MAX_FRAME_BYTES,
            "{}",
            framed.len()
        );
        assert!(chat_text(&framed).is_ok());
        assert!(
            chat_text(&"a".repeat(super::MAX_CHAT_CHARS + 1))
                .unwrap_err()
                .contains("longer than 16000")
        );
    }
}
