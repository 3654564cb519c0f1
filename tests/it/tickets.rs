//! WebSocket tickets across replicas (SPEC §9), on the store as two gateways share it: two
//! `Store`s on one SQLite file or one PostgreSQL database. A ticket is redeemed by one
//! statement that also reads its session, and minted by one that also checks it, so a
//! racing redemption opens exactly one socket anywhere, and a session ended on one replica
//! mints nothing on another even when the caller looked it up just before. Also the
//! events socket's closing handshake, which a standard client waits for.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hermes_gateway::auth::sessions::{Session, Sessions, TicketRejection};
use hermes_gateway::clock::{ManualClock, SharedClock};
use hermes_gateway::store::Store;
use secrecy::ExposeSecret;
use tokio_tungstenite::tungstenite::Message;

use crate::dashboard::{connect, next_json};
use crate::support::{TestApp, TestDatabase};

/// Two replicas over one store: each with its own connections, as two processes have.
struct Replicas {
    a: Arc<Sessions>,
    b: Arc<Sessions>,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
    _db: Option<TestDatabase>,
}

async fn replicas(postgres: bool) -> Replicas {
    let clock = ManualClock::new("2026-12-01T09:00:00Z".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = if postgres {
        Some(TestDatabase::create().await)
    } else {
        None
    };
    let open = || async {
        match &db {
            Some(db) => Store::postgres(db.url(), &*clock).await.unwrap(),
            None => Store::sqlite(&dir.path().join("state.db"), &*clock)
                .await
                .unwrap(),
        }
    };
    let (store_a, store_b) = (open().await, open().await);
    let shared: SharedClock = clock.clone();
    let sessions = |store| {
        Arc::new(Sessions::new(
            store,
            shared.clone(),
            Duration::from_secs(3600),
            false,
        ))
    };
    Replicas {
        a: sessions(store_a),
        b: sessions(store_b),
        clock,
        dir,
        _db: db,
    }
}

/// Eight redemptions of each of 20 tickets at once, four on each replica: exactly one of
/// each opens, and every other one finds it used.
async fn one_ticket_opens_once_across_replicas(postgres: bool) {
    let r = replicas(postgres).await;
    let (_, session) = r.a.create("admin", "basic").await.unwrap();
    for _ in 0..20 {
        let ticket = r.a.mint_ticket(&session).await.unwrap().unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let replica = if i % 2 == 0 { &r.a } else { &r.b }.clone();
            let ticket = ticket.clone();
            tasks.push(tokio::spawn(
                async move { replica.redeem_ticket(&ticket).await },
            ));
        }
        let mut opened = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(s) => {
                    assert_eq!(s, session);
                    opened += 1;
                }
                Err(TicketRejection::AlreadyUsed(prefix)) => assert_eq!(prefix, ticket[..8]),
                Err(other) => panic!("postgres={postgres}: {other}"),
            }
        }
        assert_eq!(opened, 1, "postgres={postgres}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_ticket_redeemed_by_eight_sockets_on_two_sqlite_replicas_opens_once() {
    one_ticket_opens_once_across_replicas(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_ticket_redeemed_by_eight_sockets_on_two_postgres_replicas_opens_once() {
    one_ticket_opens_once_across_replicas(true).await;
}

/// A session ended on replica B after replica A looked it up: A mints nothing with what it
/// holds, and a ticket A minted just before is used up, opening nothing, on either.
async fn an_ended_session_mints_nothing_anywhere(postgres: bool) {
    let r = replicas(postgres).await;
    let (cookie, _) = r.a.create("admin", "basic").await.unwrap();
    let looked_up: Session = r.a.lookup(cookie.expose_secret()).await.unwrap().unwrap();
    let minted_before = r.a.mint_ticket(&looked_up).await.unwrap().unwrap();
    assert!(r.b.revoke(cookie.expose_secret()).await.unwrap());
    assert_eq!(r.a.mint_ticket(&looked_up).await.unwrap(), None);
    let ended = r.b.redeem_ticket(&minted_before).await.unwrap_err();
    assert_eq!(
        ended,
        TicketRejection::SessionEnded(minted_before[..8].into())
    );
    let again = r.a.redeem_ticket(&minted_before).await.unwrap_err();
    assert_eq!(
        again,
        TicketRejection::AlreadyUsed(minted_before[..8].into())
    );

    // A session that expires while its ticket is fresh: the ticket opens nothing, and the
    // session, though the caller still holds it, mints nothing more.
    let (_, expiring) = r.a.create("admin", "basic").await.unwrap();
    r.clock.advance(Duration::from_secs(3590));
    let fresh = r.b.mint_ticket(&expiring).await.unwrap().unwrap();
    r.clock.advance(Duration::from_secs(20));
    assert_eq!(
        r.a.redeem_ticket(&fresh).await.unwrap_err(),
        TicketRejection::SessionEnded(fresh[..8].into())
    );
    assert_eq!(r.b.mint_ticket(&expiring).await.unwrap(), None);
}

#[tokio::test]
async fn an_ended_session_mints_nothing_on_sqlite() {
    an_ended_session_mints_nothing_anywhere(false).await;
}

#[tokio::test]
async fn an_ended_session_mints_nothing_on_postgres() {
    an_ended_session_mints_nothing_anywhere(true).await;
}

/// Another connection (another process's, say) holds SQLite's write lock: the mint, whose
/// insert runs inline and never waits on the runtime's thread, is handed to the pool and
/// waits there; the session read beside it is not held up; once the lock is released the
/// ticket is stored and opens once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mint_while_another_connection_holds_the_write_lock_waits_for_it_then_opens_once() {
    let r = replicas(false).await;
    let (cookie, session) = r.a.create("admin", "basic").await.unwrap();
    let holder = rusqlite::Connection::open(r.dir.path().join("state.db")).unwrap();
    holder
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM ws_tickets;")
        .unwrap();

    let minting = tokio::spawn({
        let a = r.a.clone();
        let session = session.clone();
        async move { a.mint_ticket(&session).await }
    });
    let read = tokio::time::timeout(Duration::from_secs(2), r.a.lookup(cookie.expose_secret()))
        .await
        .expect("a session read while the write lock is held");
    assert_eq!(read.unwrap(), Some(session.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!minting.is_finished(), "the mint did not wait for the lock");

    holder.execute_batch("COMMIT").unwrap();
    let ticket = tokio::time::timeout(Duration::from_secs(5), minting)
        .await
        .expect("the mint ends once the lock is released")
        .unwrap()
        .unwrap()
        .expect("the session is live");
    assert_eq!(r.b.redeem_ticket(&ticket).await.unwrap(), session);
    assert_eq!(
        r.a.redeem_ticket(&ticket).await.unwrap_err(),
        TicketRejection::AlreadyUsed(ticket[..8].into())
    );
}

/// Only inline writes arrive (tickets minted and redeemed, nothing else written): their
/// connection never checkpoints, yet the WAL stays bounded, since the checkpoints it asks
/// for run on the pool's connection. Without them 6,000 commits grow it past 20 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_writes_alone_keep_the_sqlite_wal_bounded() {
    let r = replicas(false).await;
    let (_, session) = r.a.create("admin", "basic").await.unwrap();
    for _ in 0..3000 {
        let ticket = r.a.mint_ticket(&session).await.unwrap().unwrap();
        r.a.redeem_ticket(&ticket).await.unwrap();
    }
    let wal = std::fs::metadata(r.dir.path().join("state.db-wal"))
        .unwrap()
        .len();
    assert!(wal < 8 << 20, "the WAL grew to {wal} bytes");
}

/// A client that closes the events socket gets our Close frame back (the closing
/// handshake a standard client waits for) before the connection ends.
#[tokio::test]
async fn the_events_socket_answers_a_close_frame() {
    let app = TestApp::spawn("", &[("HERMES_DASHBOARD_SESSION_TOKEN", "tok-close")]).await;
    let mut socket = connect(&app.dash, "/api/events?token=tok-close", None)
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "status");
    socket.send(Message::Close(None)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(_)) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the connection ended without a Close frame".into())
    })
    .await
    .expect("an answer within 5 s");
    assert_eq!(answer, Ok(()));
}
