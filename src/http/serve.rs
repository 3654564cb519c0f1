//! Serving a router on a bound listener with the connection limits of SPEC §10: a client
//! that does not finish its request headers within the header timeout is disconnected (the
//! same timer closes a keep-alive connection that stays idle that long), and each listener
//! holds at most `max_per_listener` connections, WebSockets included; a connection over
//! the cap is closed at once. A request's body must then arrive within the same timeout
//! after its headers, so a client trickling a body cannot hold its connection (and a slot
//! under the cap) either: reading it fails, the handler answers 400, and the connection
//! closes.
//!
//! This replaces `axum::serve`, which configures no timer (so hyper's header timeout is off)
//! and no cap. Shutdown is the same as there: on `stop` the listener closes, idle
//! connections close, in-flight requests (streams included) finish, then `listen` returns.
//! Dropping the `listen` future drops every connection it still holds.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How each listener treats its connections (from `gateway.connections`).
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    /// Longest wait for a request's complete headers, counted from the connection's start
    /// or from the end of its previous response: slow headers and idle keep-alive
    /// connections both end there.
    header_timeout: Duration,
    /// Open connections per listener; a WebSocket counts until it closes.
    max_connections: usize,
}

impl ConnLimits {
    fn from_config(c: &crate::config::ConnectionsConfig) -> Self {
        Self {
            header_timeout: Duration::from_secs(c.header_timeout_seconds),
            max_connections: c.max_per_listener,
        }
    }
}

/// Largest request head (request line and headers) and per-connection buffer: a client
/// trickling an endless header is cut off here (431) instead of costing ~400 KiB (hyper's
/// default) for the whole header timeout, so a full cap of slow clients stays small.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Least time between two "connection cap reached" warnings in the log.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop`, then finishes in-flight requests and returns.
pub async fn listen(
    listener: TcpListener,
    router: Router,
    connections: crate::config::ConnectionsConfig,
    stop: CancellationToken,
    what: &'static str,
) {
    let limits = ConnLimits::from_config(&connections);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(error = %e, "{what}: accept failed; retrying in 1 s");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        // Responses and WebSocket frames are written whole: a small write (a 101, then the
        // first frame) must not wait for the client's delayed ACK of the one before.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "{what}: cannot set TCP_NODELAY");
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if warned.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                warned = Some(Instant::now());
                tracing::warn!(
                    max_per_listener = limits.max_connections,
                    %peer,
                    "{what}: connection cap reached; closing new connections until some end"
                );
            }
            drop(stream);
            continue;
        };
        conns.spawn(connection(
            Counted {
                io: stream,
                _permit: permit,
            },
            peer,
            router.clone(),
            limits,
            stop.clone(),
        ));
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// One HTTP/1 connection: hyper with a timer (so the header timeout runs) and upgrades
/// (WebSockets); a graceful close once `stop` fires.
async fn connection(
    io: Counted,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    stop: CancellationToken,
) {
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let deadline = Instant::now() + limits.header_timeout;
        hyper::service::Service::call(
            &router,
            req.map(|body| Body::new(DeadlineBody::new(body, deadline))),
        )
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // A header timeout, a reset, a malformed request: the client's problem, not ours.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// A request body that fails once its deadline has passed before its end arrived.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: Instant) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

/// Why a body read failed at its deadline (shown as the 400's cause).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the time allowed")]
struct BodyTooSlow;

impl hyper::body::Body for DeadlineBody {
    type Data = hyper::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTooSlow.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection holding its slot under the cap. The slot is released when the socket is
/// dropped, which for an upgraded connection (a WebSocket) is when the socket closes.
struct Counted {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
