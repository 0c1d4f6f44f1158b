//! A bare protocol client, for cases drivers do not let a test express.

use super::RunningProxy;

pub struct RawClient {
    tcp: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

impl RawClient {
    /// Connects and authenticates with `token`, reading up to ReadyForQuery.
    pub async fn connect(proxy: &RunningProxy, token: &str) -> RawClient {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let mut hello = rowgate::wire::frontend::startup_message(&[
            ("user", "raw"),
            ("database", proxy.dbname()),
        ])
        .to_vec();
        let mut pw = bytes::BytesMut::new();
        rowgate::wire::put_frame(&mut pw, b'p', |b| {
            rowgate::wire::put_cstr(b, token.as_bytes())
        });
        hello.extend_from_slice(&pw);
        tcp.write_all(&hello).await.unwrap();
        let mut c = RawClient {
            tcp,
            buf: bytes::BytesMut::new(),
        };
        c.until_ready().await;
        c
    }

    /// Message tags until ReadyForQuery; errors as `E` + SQLSTATE.
    pub async fn until_ready(&mut self) -> Vec<String> {
        self.until("Z").await
    }

    /// Message tags up to and including the first `stop` tag.
    pub async fn until(&mut self, stop: &str) -> Vec<String> {
        use tokio::io::AsyncReadExt;
        let mut tags = Vec::new();
        loop {
            while let Some(f) = rowgate::wire::next_frame(&mut self.buf, 1 << 24).unwrap() {
                let tag = match f.tag() {
                    b'E' => format!(
                        "E{}",
                        rowgate::wire::backend::parse_error_fields(f.body())
                            .unwrap()
                            .code
                    ),
                    b'R' | b'S' | b'K' | b'N' => continue,
                    t => (t as char).to_string(),
                };
                let done = tag == stop;
                tags.push(tag);
                if done {
                    return tags;
                }
            }
            assert!(
                self.tcp.read_buf(&mut self.buf).await.unwrap() > 0,
                "closed: {tags:?}"
            );
        }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, msgs: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(msgs).await.unwrap();
    }

    /// Sends `msgs`, returns the reply tags up to ReadyForQuery.
    pub async fn exchange(&mut self, msgs: &[u8]) -> Vec<String> {
        use tokio::io::AsyncWriteExt;
        self.tcp.write_all(msgs).await.unwrap();
        self.until_ready().await
    }
}
