//! A byte stream that is plain TCP or TLS on either side of rowgate, so the
//! protocol code is written once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection to a client or an upstream server.
pub enum Stream {
    /// Unencrypted TCP.
    Plain(TcpStream),
    /// TLS that rowgate terminates (client side).
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS that rowgate initiates (upstream side).
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// An in-process pipe: a client that reached rowgate another way
    /// (WebSocket, SQL over HTTP) and speaks the protocol through it.
    Duplex(tokio::io::DuplexStream),
    /// A Unix-domain socket (`[listen] unix_socket_dir`): local, like
    /// loopback, and never encrypted.
    Unix(tokio::net::UnixStream),
}

/// The first read step of an empty buffer.
const FIRST_READ: usize = 2048;

/// Waits until the socket is readable, then takes the first read step and
/// reads. Cancel-safe, like `read_buf`: nothing is read until it returns.
///
/// The read goes through `read_buf`, not `try_read_buf`: tokio's
/// `poll_read` forgets the socket's readiness after a short read, while
/// `try_read_buf` keeps it until a read fails, and the next wait on the
/// client then cost a `recvfrom` that found nothing (one per transaction).
/// After a spurious wake-up the step stays reserved while it waits.
macro_rules! read_when_ready {
    ($socket:expr, $buf:expr) => {{
        $socket.readable().await?;
        if $buf.capacity() == 0 {
            $buf.reserve(FIRST_READ);
        }
        $socket.read_buf($buf).await
    }};
}

impl Stream {
    /// Whether the stream itself is encrypted. An in-process pipe is not;
    /// whether its transport was is for its owner to say.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(_) | Stream::ClientTls(_))
    }

    /// Reads whatever is available into `buf`, growing it in steps large
    /// enough to avoid a system call per small message. Returns 0 at EOF.
    ///
    /// An empty buffer (an idle client's: sessions drop theirs between
    /// transactions) gets a small first step, since it is held for as long
    /// as the client waits: most transactions fit in it, and thousands of
    /// idle clients then do not each pin 16 KiB.
    ///
    /// On a socket an empty buffer gets no memory until bytes are there to
    /// read: an idle client waits with none at all.
    pub async fn read_more(&mut self, buf: &mut bytes::BytesMut) -> io::Result<usize> {
        if buf.capacity() == 0 {
            match self {
                Stream::Plain(s) => return read_when_ready!(s, buf),
                Stream::Unix(s) => return read_when_ready!(s, buf),
                _ => buf.reserve(FIRST_READ),
            }
        } else if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        self.read_buf(buf).await
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Duplex(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
            Stream::Duplex(s) => Pin::new(s).poll_write(cx, b),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Duplex(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Duplex(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
