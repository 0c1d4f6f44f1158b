//! `/v2`: the WebSocket tunnel of `@neondatabase/serverless`'s `Pool` and
//! `Client`. Binary frames carry raw protocol bytes in both directions,
//! split or joined anywhere; they are pumped through an in-process pipe
//! into [`crate::client::serve_stream`], so a WebSocket client is a TCP
//! client in every other respect (its pipelined startup included: the
//! driver sends StartupMessage, password and first query before any
//! reply, and startup keeps what follows the password).

use super::{App, Peer};
use crate::client::serve_stream;
use crate::metrics;
use crate::wire::stream::Stream;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes the pipe buffers in each direction.
const PIPE_BUFFER: usize = 64 * 1024;

/// How long the inbound side may linger once the session has ended (a
/// peer that never answers our Close).
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Close code for a text frame: "unsupported data" (RFC 6455 7.4.1).
const UNSUPPORTED_DATA: u16 = 1003;

/// The handler: upgrades, then tunnels.
pub async fn handle(
    State(app): State<Arc<App>>,
    Extension(peer): Extension<Peer>,
    ws: WebSocketUpgrade,
) -> Response {
    metrics::incr("rowgate_http_requests_total", "ws");
    let shared = app.shared.clone();
    ws.on_upgrade(move |socket| tunnel(socket, peer, shared))
}

async fn tunnel(socket: WebSocket, peer: Peer, shared: Arc<crate::client::Shared>) {
    let (mine, theirs) = tokio::io::duplex(PIPE_BUFFER);
    tokio::spawn(serve_stream(
        Stream::Duplex(theirs),
        peer.addr,
        peer.secure,
        shared,
    ));
    let (mut from_session, mut to_session) = tokio::io::split(mine);
    let (mut tx, mut rx) = socket.split();
    let (refused, mut why) = tokio::sync::oneshot::channel::<&'static str>();

    // Frames in, bytes to the session. The two directions run apart so a
    // session blocked writing a large result never stops its input.
    let inbound = tokio::spawn(async move {
        while let Some(msg) = rx.next().await {
            match msg {
                Ok(Message::Binary(bytes)) => {
                    if to_session.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Text(_)) => {
                    let _ = refused.send(
                        "rowgate: text frames are not accepted; send the PostgreSQL protocol in binary frames",
                    );
                    break;
                }
                // Pings are answered by the WebSocket layer.
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                Ok(Message::Close(_)) | Err(_) => break,
            }
        }
        // EOF for the session: it rolls back anything open and ends.
        let _ = to_session.shutdown().await;
    });

    // Bytes from the session, frames out, until the session ends.
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        if buf.capacity() < 4096 {
            buf.reserve(16 * 1024);
        }
        match from_session.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if tx
                    .send(Message::Binary(buf.split().freeze()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let frame = why.try_recv().ok().map(|reason| CloseFrame {
        code: UNSUPPORTED_DATA,
        reason: reason.into(),
    });
    let _ = tx.send(Message::Close(frame)).await;
    drop(from_session);
    let abort = inbound.abort_handle();
    if tokio::time::timeout(CLOSE_GRACE, inbound).await.is_err() {
        abort.abort();
    }
}
