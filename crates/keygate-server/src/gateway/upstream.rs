//! The gateway's own HTTP/1.1 client for its most common call: a request without a body from an
//! HTTP/1 client connection. It runs inside that client connection's task. The request head is
//! written to the upstream connection the client connection keeps, the answer's head is read
//! and parsed here, and the answer's body is read from the upstream by the response body itself
//! as the client connection sends it on. No other task, channel or wake-up is involved.
//! hyper's client drives each connection from a task of its own and passes requests and body
//! chunks over channels; it still carries the requests that have a body (their upload and the
//! answer may have to flow at the same time) and those of HTTP/2 clients.
//!
//! What it implements of RFC 9112: the status line and fields (1xx answers skipped), the
//! body's length (§6.3: none after HEAD, 204 and 304; chunked; Content-Length; otherwise until
//! the upstream closes), chunked decoding with trailers, and persistence (§9.3). A kept
//! connection that the upstream closed while it was idle is noticed before use. If it closes
//! in the moment between, the request goes again on a new connection, but only when it is
//! idempotent (RFC 9110 §9.2.2) or none of it was written.
//!
//! Hot path: one write and (usually) one read per request; the answer's field values and body
//! chunks are slices of the bytes read, not copies. Nothing here blocks or holds a lock across
//! an `.await`.

use std::cmp::min;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{request, response, Method, Response, StatusCode, Version};
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Added, BoxError, Gateway};
use crate::http::client::ConnectionLocal;

/// The most fields an answer's head may have (hyper's client allows 100) and its longest
/// head. Beyond either, the answer is refused with a 502.
const MAX_FIELDS: usize = 100;
const MAX_HEAD: usize = 256 * 1024;
/// The longest chunk-size line (with its extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// How many fields the gateway adds to an answer (see `parse_head`).
const ADDED_FIELDS: usize = 8;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8192;

/// The upstream connection a client connection keeps (in its `ConnectionLocal`) between its
/// requests.
pub(crate) enum Upstream {
    /// Ours: idle, with nothing left unread.
    Raw(RawConnection),
    /// hyper's, driven by a task of its own: kept once a request with a body used it.
    Hyper(hyper::client::conn::http1::SendRequest<Body>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Upstream::Raw(_) => "Upstream::Raw",
            Upstream::Hyper(_) => "Upstream::Hyper",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("upstream connection: {0}")]
    Io(#[from] io::Error),
    #[error("the upstream closed the connection before its answer ended")]
    Closed,
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(&'static str),
}

/// One HTTP/1.1 connection to the upstream and what was read from it but not yet used.
pub(crate) struct RawConnection {
    io: TcpStream,
    buf: BytesMut,
}

/// How a failed exchange ended, which decides whether it may be tried again.
enum Failure {
    /// Nothing of an answer arrived. `written`: the whole request head was sent.
    Unanswered { written: bool, error: UpstreamError },
    /// Part of an answer, or a malformed one: never retried.
    Failed(UpstreamError),
}

impl RawConnection {
    pub(crate) fn new(io: TcpStream) -> Self {
        RawConnection {
            io,
            buf: BytesMut::new(),
        }
    }

    /// The socket, to hand to hyper's client (a kept connection has nothing unread).
    pub(crate) fn into_io(self) -> TcpStream {
        self.io
    }

    /// Whether the idle connection can carry a request: nothing may have arrived since its
    /// last answer (end of stream is the upstream closing it; data would be a protocol
    /// error). It asks the runtime's readiness, so no system call is made unless something
    /// did arrive.
    fn looks_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_SIZE);
        self.io.read_buf(&mut self.buf).await
    }

    /// One read, as a poll: the read future holds no state of its own, so a pending one is
    /// simply made again on the next poll.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        pin!(self.io.read_buf(&mut self.buf)).poll(cx)
    }

    /// Writes the request head and reads the answer's head.
    async fn round_trip(&mut self, head: &[u8], method: &Method) -> Result<AnswerHead, Failure> {
        if let Err(err) = self.io.write_all(head).await {
            return Err(Failure::Unanswered {
                written: false,
                error: err.into(),
            });
        }
        let mut received = false;
        loop {
            while !self.buf.is_empty() {
                match parse_head(&mut self.buf, method).map_err(Failure::Failed)? {
                    Parsed::Final(answer) => return Ok(answer),
                    Parsed::Informational => continue,
                    Parsed::Partial => break,
                }
            }
            let unanswered = |error| {
                if received {
                    Failure::Failed(error)
                } else {
                    Failure::Unanswered {
                        written: true,
                        error,
                    }
                }
            };
            match self.fill().await {
                Ok(0) => return Err(unanswered(UpstreamError::Closed)),
                Ok(_) => received = true,
                Err(err) => return Err(unanswered(err.into())),
            }
        }
    }
}

/// Sends a request that has no body to the upstream over `kept` (the client connection's idle
/// connection) or a new connection, and returns the answer, whose body reads on from the
/// connection and hands it back to `home` once the answer has been read whole.
pub(crate) async fn exchange(
    gw: &Gateway,
    home: &Arc<ConnectionLocal>,
    kept: Option<RawConnection>,
    parts: &request::Parts,
    added: &Added<'_>,
) -> Result<(response::Parts, Body), BoxError> {
    let head = encode_head(parts, added);
    let method = &parts.method;
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let mut kept = kept;
    loop {
        let (mut conn, reused) = match kept.take() {
            Some(conn) if conn.looks_open() => (conn, true),
            _ => (RawConnection::new(super::connect(gw).await?), false),
        };
        match conn.round_trip(&head, method).await {
            Ok(answer) => return Ok(answer.into_response(conn, home)),
            // A kept connection the upstream closed just as the request went: once more, on a
            // new one (the loop opens it, since `kept` is now empty).
            Err(Failure::Unanswered { written, .. }) if reused && (idempotent || !written) => {}
            Err(Failure::Unanswered { error, .. } | Failure::Failed(error)) => {
                return Err(error.into())
            }
        }
    }
}

/// `METHOD target HTTP/1.1`, the fields, the gateway's own fields (`added`), the blank line.
/// Field names go out in lower case, as hyper writes them; their order and repeated fields are
/// kept. The added fields are written straight from their text: they never go through the
/// header map.
fn encode_head(parts: &request::Parts, added: &Added<'_>) -> Vec<u8> {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let fields: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .chain(added.iter().map(|(n, v)| n.as_str().len() + v.len() + 4))
        .sum();
    let mut head = Vec::with_capacity(parts.method.as_str().len() + target.len() + fields + 14);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let fields = parts.headers.iter().map(|(n, v)| (n, v.as_bytes()));
    for (name, value) in fields.chain(added.iter().map(|(n, v)| (n, v.as_bytes()))) {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// How the answer's body ends (RFC 9112 §6.3).
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// At the end of the connection.
    Close,
}

struct AnswerHead {
    parts: response::Parts,
    framing: Framing,
    /// The connection may carry another request once this answer is read whole.
    keep: bool,
}

impl AnswerHead {
    fn into_response(
        self,
        conn: RawConnection,
        home: &Arc<ConnectionLocal>,
    ) -> (response::Parts, Body) {
        let mut body = AnswerBody {
            conn: Some(conn),
            framing: self.framing,
            keep: self.keep,
            home: home.clone(),
        };
        if let Framing::Length(0) = body.framing {
            body.finish();
            return (self.parts, Body::empty());
        }
        (self.parts, Body::new(body))
    }
}

enum Parsed {
    Final(AnswerHead),
    /// A 1xx answer, consumed: the final one follows.
    Informational,
    /// The head is not all here yet.
    Partial,
}

/// Parses the answer's head at the start of `buf` and, when it is whole, takes it out of
/// `buf`: the field values become slices of it.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Parsed, UpstreamError> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(UpstreamError::Malformed("the head is too long"))
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(UpstreamError::Malformed("too many header fields"))
        }
        Err(_) => return Err(UpstreamError::Malformed("not an HTTP/1.x answer")),
    };
    let code = res.code.unwrap_or(0);
    if (100..200).contains(&code) {
        // 101 switches protocols, which only an Upgrade asks for, and the gateway forwards no
        // Upgrade.
        if code == 101 {
            return Err(UpstreamError::Malformed("101 without an upgrade asked for"));
        }
        buf.advance(len);
        return Ok(Parsed::Informational);
    }
    let status =
        StatusCode::from_u16(code).map_err(|_| UpstreamError::Malformed("invalid status"))?;
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each value lies in the head, to slice it out once the head is split off.
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(res.headers.len());
    for field in res.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| UpstreamError::Malformed("invalid field name"))?;
        let start = (field.value.as_ptr() as usize).wrapping_sub(base);
        let span = (start <= len && field.value.len() <= len - start)
            .then_some(start..start + field.value.len());
        spans.push((name, span));
    }
    let head = buf.split_to(len).freeze();
    // Room for the fields the gateway adds on the way out (the request id, the five rate-limit
    // fields, HSTS): the map is not grown, rehashing what it holds, for each of them.
    let mut headers = HeaderMap::with_capacity(spans.len() + ADDED_FIELDS);
    for (name, span) in spans {
        let value = match span {
            Some(span) if !span.is_empty() => HeaderValue::from_maybe_shared(head.slice(span)),
            _ => Ok(HeaderValue::from_static("")),
        }
        .map_err(|_| UpstreamError::Malformed("invalid field value"))?;
        headers.append(name, value);
    }
    let mut keep = persistent(version, &headers);
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length, whose value says nothing then (§6.3).
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep = false;
        }
        if final_coding_is_chunked(&headers) {
            Framing::Chunked(ChunkedDecoder::Size)
        } else {
            keep = false;
            Framing::Close
        }
    } else if headers.contains_key(header::CONTENT_LENGTH) {
        Framing::Length(content_length(&headers)?)
    } else {
        keep = false;
        Framing::Close
    };
    let mut answer = Response::new(());
    *answer.status_mut() = status;
    *answer.version_mut() = version;
    *answer.headers_mut() = headers;
    Ok(Parsed::Final(AnswerHead {
        parts: answer.into_parts().0,
        framing,
        keep,
    }))
}

/// Every option of every Connection field, trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
}

/// RFC 9112 §9.3: HTTP/1.1 persists unless `close`; HTTP/1.0 only with `keep-alive`.
fn persistent(version: Version, headers: &HeaderMap) -> bool {
    if version == Version::HTTP_11 {
        !connection_options(headers).any(|o| o.eq_ignore_ascii_case(b"close"))
    } else {
        connection_options(headers).any(|o| o.eq_ignore_ascii_case(b"keep-alive"))
    }
}

fn final_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .rfind(|c| !c.is_empty())
        .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
}

/// The one length every Content-Length value agrees on; differing or invalid values are an
/// error the answer cannot be forwarded with (RFC 9112 §6.3, point 5).
fn content_length(headers: &HeaderMap) -> Result<u64, UpstreamError> {
    let mut length = None;
    for value in headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
    {
        let digits = value.trim_ascii();
        let n = (!digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit))
            .then(|| {
                digits
                    .iter()
                    .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
            })
            .ok_or(UpstreamError::Malformed("invalid Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(UpstreamError::Malformed(
                "conflicting Content-Length values",
            ));
        }
        length = Some(n);
    }
    length.ok_or(UpstreamError::Malformed("invalid Content-Length"))
}

/// The answer's body, read from the upstream connection as it is polled. When the answer has
/// been read whole and the connection may persist, the connection goes back to the client
/// connection's keeping, before the last frame is handed on, so that the client's next request
/// finds it. Dropped before that, it closes the connection.
struct AnswerBody {
    conn: Option<RawConnection>,
    framing: Framing,
    keep: bool,
    home: Arc<ConnectionLocal>,
}

enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    Read,
}

impl AnswerBody {
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Bytes beyond the answer mean the upstream and we disagree on where it ended.
            if self.keep && conn.buf.is_empty() {
                *self.home.upstream.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Upstream::Raw(conn));
            }
        }
    }

    fn fail(&mut self, error: UpstreamError) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl hyper::body::Body for AnswerBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match &mut this.framing {
                Framing::Length(0) => Step::End,
                Framing::Length(_) | Framing::Close if conn.buf.is_empty() => Step::Read,
                Framing::Length(rest) => {
                    let n = min(*rest, conn.buf.len() as u64);
                    *rest -= n;
                    Step::Data(conn.buf.split_to(n as usize).freeze())
                }
                Framing::Close => Step::Data(conn.buf.split().freeze()),
                Framing::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => Step::Data(data),
                    Ok(Decoded::Trailers(trailers)) => Step::Trailers(trailers),
                    Ok(Decoded::End) => Step::End,
                    Ok(Decoded::NeedMore) => Step::Read,
                    Err(err) => return this.fail(err),
                },
            };
            match step {
                Step::Data(data) => {
                    if let Framing::Length(0) = this.framing {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::Trailers(trailers) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Step::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Step::Read => match ready!(conn.poll_fill(cx)) {
                    Ok(0) if matches!(this.framing, Framing::Close) => {
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    Ok(0) => return this.fail(UpstreamError::Closed),
                    Ok(_) => {}
                    Err(err) => return this.fail(err.into()),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(rest) => SizeHint::with_exact(rest),
            _ => SizeHint::default(),
        }
    }
}

/// Where a chunked body's decoding stands (RFC 9112 §7.1).
#[derive(Debug, PartialEq)]
enum ChunkedDecoder {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes left.
    Data(u64),
    /// At the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section, if any, and the final CRLF.
    Trailers,
    Done,
}

#[derive(Debug, PartialEq)]
enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    NeedMore,
}

impl ChunkedDecoder {
    /// Decodes what it can from the front of `buf`, taking out what it used.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, UpstreamError> {
        loop {
            match *self {
                ChunkedDecoder::Size => {
                    let Some(eol) = find(buf, b"\r\n") else {
                        return if buf.len() > MAX_CHUNK_LINE {
                            Err(UpstreamError::Malformed("chunk-size line too long"))
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    let size = chunk_size(&buf[..eol])?;
                    buf.advance(eol + 2);
                    *self = match size {
                        0 => ChunkedDecoder::Trailers,
                        n => ChunkedDecoder::Data(n),
                    };
                }
                ChunkedDecoder::Data(rest) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = min(rest, buf.len() as u64);
                    *self = match rest - n {
                        0 => ChunkedDecoder::DataEnd,
                        left => ChunkedDecoder::Data(left),
                    };
                    return Ok(Decoded::Data(buf.split_to(n as usize).freeze()));
                }
                ChunkedDecoder::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(UpstreamError::Malformed("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    *self = ChunkedDecoder::Size;
                }
                ChunkedDecoder::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = ChunkedDecoder::Done;
                        return Ok(Decoded::End);
                    }
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    let Some(end) = find(buf, b"\r\n\r\n") else {
                        return if buf.len() > MAX_HEAD {
                            Err(UpstreamError::Malformed("trailer section too long"))
                        } else {
                            Ok(Decoded::NeedMore)
                        };
                    };
                    let section = buf.split_to(end + 4);
                    *self = ChunkedDecoder::Done;
                    return Ok(Decoded::Trailers(trailers(&section)?));
                }
                ChunkedDecoder::Done => return Ok(Decoded::End),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `1a`, `1A;name=value`, `1a ; name`: the hexadecimal size before any extension.
fn chunk_size(line: &[u8]) -> Result<u64, UpstreamError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    if digits == 0 || digits > 16 || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return Err(UpstreamError::Malformed("invalid chunk size"));
    }
    let hex = std::str::from_utf8(&line[..digits])
        .map_err(|_| UpstreamError::Malformed("invalid chunk size"))?;
    u64::from_str_radix(hex, 16).map_err(|_| UpstreamError::Malformed("invalid chunk size"))
}

fn trailers(section: &[u8]) -> Result<HeaderMap, UpstreamError> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let malformed = || UpstreamError::Malformed("invalid trailer section");
    let httparse::Status::Complete((_, fields)) =
        httparse::parse_headers(section, &mut fields).map_err(|_| malformed())?
    else {
        return Err(malformed());
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        map.append(
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| malformed())?,
            HeaderValue::from_bytes(field.value).map_err(|_| malformed())?,
        );
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `encoded` to a decoder split at `at` (two reads), returning the data and the
    /// trailers decoded.
    fn decode_split(encoded: &[u8], at: usize) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut decoder = ChunkedDecoder::Size;
        let mut buf = BytesMut::from(&encoded[..at]);
        let mut rest = Some(&encoded[at..]);
        let mut data = Vec::new();
        let mut trailers = None;
        loop {
            match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => {
                    assert!(buf.is_empty(), "nothing past the end is consumed or left");
                    return Ok((data, trailers));
                }
                Decoded::NeedMore => match rest.take() {
                    Some(more) => buf.extend_from_slice(more),
                    None => return Err("ran out of input".into()),
                },
            }
        }
    }

    #[test]
    fn a_chunked_body_decodes_the_same_however_it_arrives() {
        let encoded = b"5\r\nhello\r\n6;name=value\r\n world\r\nA \r\n, chunked!\r\n0\r\nx-sum: 42\r\nx-more: a b\r\n\r\n";
        for at in 0..=encoded.len() {
            let (data, trailers) = decode_split(encoded, at).expect("decodes");
            assert_eq!(data, b"hello world, chunked!", "split at {at}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-sum"], "42");
            assert_eq!(trailers["x-more"], "a b");
        }
        let (data, trailers) = decode_split(b"3\r\nabc\r\n0\r\n\r\n", 4).expect("decodes");
        assert_eq!(data, b"abc");
        assert!(trailers.is_none());
    }

    #[test]
    fn a_malformed_chunked_body_is_an_error_not_a_guess() {
        for bad in [
            &b"5\r\nhello world\r\n0\r\n\r\n"[..],
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"5x\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\nhello\r\n0\r\n\r\n",
            b"0\r\nnot a field\r\n\r\n",
        ] {
            assert!(
                decode_split(bad, bad.len()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn head_of(raw: &[u8], method: Method) -> Result<AnswerHead, String> {
        let mut buf = BytesMut::from(raw);
        loop {
            match parse_head(&mut buf, &method).map_err(|e| e.to_string())? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Informational => {}
                Parsed::Partial => return Err("partial".into()),
            }
        }
    }

    #[test]
    fn the_answer_head_decides_the_body_length_and_persistence() {
        let h = head_of(
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-a: 1\r\nx-a: 2\r\n\r\n",
            Method::GET,
        )
        .expect("head");
        assert_eq!(h.parts.status, 200);
        assert!(matches!(h.framing, Framing::Length(12)));
        assert!(h.keep);
        assert_eq!(h.parts.headers.get_all("x-a").iter().count(), 2);
        assert!(!h.parts.headers.contains_key("link"), "the 1xx's fields");

        let h = head_of(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
            Method::GET,
        )
        .expect("head");
        assert!(matches!(h.framing, Framing::Chunked(_)));
        assert!(!h.parts.headers.contains_key("content-length"));
        assert!(!h.keep, "both framings sent: not trusted again");

        let h = head_of(
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
            Method::HEAD,
        )
        .expect("head");
        assert!(matches!(h.framing, Framing::Length(0)));
        assert_eq!(h.parts.headers["content-length"], "7");

        for (raw, keep) in [
            (&b"HTTP/1.1 304 Not Modified\r\n\r\n"[..], true),
            (
                b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n",
                true,
            ),
        ] {
            let h = head_of(raw, Method::GET).expect("head");
            assert!(matches!(h.framing, Framing::Length(0)));
            assert_eq!(h.keep, keep, "{:?}", String::from_utf8_lossy(raw));
        }

        let h = head_of(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n", Method::GET).expect("head");
        assert!(matches!(h.framing, Framing::Close));
        assert!(!h.keep);

        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                head_of(bad, Method::GET).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            head_of(b"HTTP/1.1 200 OK\r\ncontent-le", Method::GET),
            Err(e) if e == "partial"
        ));
    }

    #[test]
    fn the_request_head_keeps_the_fields_in_order() {
        let req = axum::http::Request::builder()
            .method(Method::DELETE)
            .uri("/api/posts/7?force=1")
            .header("host", "up:80")
            .header("x-a", "1")
            .header("x-a", "2")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        let mut added = Added::default();
        added.push(HeaderName::from_static("x-keygate-scope"), "read");
        added.push(
            HeaderName::from_static("x-forwarded-for"),
            "10.0.0.1, 127.0.0.1",
        );
        assert_eq!(
            String::from_utf8(encode_head(&parts, &added)).expect("utf-8"),
            "DELETE /api/posts/7?force=1 HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\nx-a: 2\r\n\
             x-keygate-scope: read\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\n\r\n"
        );
        let mut refused = Added::default();
        refused.push(HeaderName::from_static("x-request-id"), "a\r\nx-evil: 1");
        assert_eq!(
            refused.iter().count(),
            0,
            "no field value with a line break is sent"
        );
    }
}
