//! HTTP/1.1 on raw sockets, for tests where framing is the point: a client connection that
//! sends exactly the bytes it is given and reads answers one at a time, and a scripted
//! origin that parses requests the way nginx does (it honours `Content-Length` and chunked
//! bodies on any method, answers before reading the body, then discards the body from the
//! connection) and records every request it parsed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a test waits for bytes that should come.
const PATIENCE: Duration = Duration::from_secs(10);

/// One HTTP message's head and body as read off a socket.
#[derive(Debug, Clone)]
pub struct RawMessage {
    /// The first line: the request line or the status line.
    pub start: String,
    /// Field names in lower case, values as received, in order.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawMessage {
    /// The status code of a response.
    pub fn status(&self) -> u16 {
        self.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The request target of a request.
    pub fn target(&self) -> &str {
        self.start.split_whitespace().nth(1).unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.start.split_whitespace().next().unwrap_or("")
    }

    /// The first value of field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Bytes read from a socket, parsed a message at a time.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection with `left` bytes unparsed.
    Closed {
        left: usize,
    },
    Timeout,
    Malformed(String),
}

impl Reader {
    /// Reads more bytes; Ok(false) at end of stream.
    async fn fill(&mut self) -> Result<bool, ReadError> {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk)).await {
            Err(_) => Err(ReadError::Timeout),
            Ok(Err(_)) | Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }

    async fn more(&mut self) -> Result<(), ReadError> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(ReadError::Closed {
                left: self.buf.len(),
            })
        }
    }

    /// A head, after any empty lines (RFC 9112 §2.2 lets a server skip them).
    async fn head(&mut self) -> Result<(String, Vec<(String, String)>), ReadError> {
        loop {
            let blank = self
                .buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            self.buf.drain(..blank);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = head.split("\r\n");
                let start = lines.next().unwrap_or("").to_owned();
                let fields = lines
                    .map(|line| match line.split_once(':') {
                        Some((n, v)) => (n.to_ascii_lowercase(), v.trim().to_owned()),
                        None => (line.to_ascii_lowercase(), String::new()),
                    })
                    .collect();
                return Ok((start, fields));
            }
            self.more().await?;
        }
    }

    async fn exactly(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            self.more().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> Result<String, ReadError> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            self.more().await?;
        }
    }

    async fn chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| ReadError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.exactly(size).await?);
            self.exactly(2).await?;
        }
    }

    async fn until_closed(&mut self) -> Result<Vec<u8>, ReadError> {
        while self.fill().await? {}
        Ok(std::mem::take(&mut self.buf))
    }
}

fn is_chunked(fields: &[(String, String)]) -> bool {
    fields
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"))
}

fn content_length(fields: &[(String, String)]) -> Option<usize> {
    fields
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
}

/// A client connection that writes raw bytes and reads responses.
pub struct RawConnection {
    reader: Reader,
}

impl RawConnection {
    pub async fn connect(addr: SocketAddr) -> RawConnection {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawConnection {
            reader: Reader {
                stream,
                buf: Vec::new(),
            },
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.reader.stream.write_all(bytes).await.expect("send");
    }

    /// Reads one response to a request that was not HEAD.
    pub async fn response(&mut self) -> Result<RawMessage, ReadError> {
        self.read_response(false).await
    }

    /// Reads one response to a HEAD request.
    pub async fn head_response(&mut self) -> Result<RawMessage, ReadError> {
        self.read_response(true).await
    }

    async fn read_response(&mut self, to_head: bool) -> Result<RawMessage, ReadError> {
        let (start, fields) = self.reader.head().await?;
        let status: u16 = start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ReadError::Malformed(start.clone()))?;
        let body = if to_head || status == 204 || status == 304 || status < 200 {
            Vec::new()
        } else if is_chunked(&fields) {
            self.reader.chunked().await?
        } else if let Some(n) = content_length(&fields) {
            self.reader.exactly(n).await?
        } else {
            self.reader.until_closed().await?
        };
        Ok(RawMessage {
            start,
            fields,
            body,
        })
    }

    /// Whether the other side closes the connection (within the patience of a test),
    /// with nothing more sent.
    pub async fn closed(&mut self) -> bool {
        matches!(self.reader.fill().await, Ok(false)) && self.reader.buf.is_empty()
    }
}

/// What the scripted origin answers a request with: status, fields, body.
pub type Answer = (u16, Vec<(String, String)>, String);

type Script = dyn Fn(&RawMessage) -> Answer + Send + Sync;

/// An origin that parses requests byte by byte as nginx does and answers with a script.
pub struct ScriptedOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<RawMessage>>>,
}

impl ScriptedOrigin {
    pub async fn start(script: impl Fn(&RawMessage) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<RawMessage>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (script, recorded) = (script.clone(), recorded.clone());
                tokio::spawn(serve(stream, script, recorded));
            }
        });
        ScriptedOrigin { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request parsed so far, bodies included.
    pub fn seen(&self) -> Vec<RawMessage> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests asked for `path`.
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|m| m.target() == path).count()
    }
}

/// Answers each request as soon as its head is parsed, then reads its body (as nginx
/// discards a body it does not need) before parsing the next.
async fn serve(stream: TcpStream, script: Arc<Script>, recorded: Arc<Mutex<Vec<RawMessage>>>) {
    let mut reader = Reader {
        stream,
        buf: Vec::new(),
    };
    while let Ok((start, fields)) = reader.head().await {
        let mut request = RawMessage {
            start,
            fields,
            body: Vec::new(),
        };
        let (status, answer_fields, body) = script(&request);
        let mut answer = format!("HTTP/1.1 {status} Scripted\r\n");
        for (name, value) in &answer_fields {
            answer.push_str(&format!("{name}: {value}\r\n"));
        }
        let bodiless = request.method() == "HEAD" || status == 204 || status == 304;
        answer.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        if !bodiless {
            answer.push_str(&body);
        }
        if reader.stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let body = if is_chunked(&request.fields) {
            reader.chunked().await
        } else {
            let n = content_length(&request.fields).unwrap_or(0);
            reader.exactly(n).await
        };
        match body {
            Ok(body) => request.body = body,
            Err(_) => {
                recorded.lock().unwrap().push(request);
                return;
            }
        }
        recorded.lock().unwrap().push(request);
    }
}

/// Fields for an answer, from pairs of text.
pub fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}
