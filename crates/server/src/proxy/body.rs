//! Request bodies on their way upstream and discarded response bodies.
//!
//! A request body is read up to the replay limit before it is sent: when it ends within the
//! limit it is kept ([`ReplayBuffer`]) so the request can be sent again after a refresh; when it
//! is longer, the part already read is sent first and the rest streams through
//! ([`OutgoingBody`]), without any further buffering.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// How much of a discarded response body is read so its connection can be reused.
const DRAIN_LIMIT: usize = 64 * 1024;
/// How long draining a discarded response body may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A request body that was read completely and can be sent any number of times.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayBuffer {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    len: u64,
}

impl ReplayBuffer {
    /// The body's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// A fresh body with the same content (the chunks are shared, not copied).
    pub(crate) fn body(&self) -> OutgoingBody {
        OutgoingBody {
            chunks: self.chunks.iter().cloned().collect(),
            buffered: self.len,
            trailers: self.trailers.clone(),
            rest: None,
        }
    }
}

/// A request body as read by [`read_for_replay`].
#[derive(Debug)]
pub(crate) enum RequestBody {
    /// Complete within the replay limit.
    Replayable(ReplayBuffer),
    /// Longer than the limit: sent once, streaming.
    Streaming(OutgoingBody),
}

/// The body of a request sent upstream: buffered chunks, then (when streaming) the rest of the
/// caller's body.
#[derive(Debug)]
pub(crate) struct OutgoingBody {
    chunks: VecDeque<Bytes>,
    /// Bytes left in `chunks`.
    buffered: u64,
    trailers: Option<HeaderMap>,
    rest: Option<Body>,
}

impl http_body::Body for OutgoingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.chunks.pop_front() {
            this.buffered = this.buffered.saturating_sub(chunk.len() as u64);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(rest) = this.rest.as_mut() {
            return Pin::new(rest).poll_frame(cx);
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let Some(rest) = &self.rest else {
            return SizeHint::with_exact(self.buffered);
        };
        let hint = rest.size_hint();
        let mut sum = SizeHint::new();
        sum.set_lower(hint.lower().saturating_add(self.buffered));
        if let Some(upper) = hint.upper() {
            sum.set_upper(upper.saturating_add(self.buffered));
        }
        sum
    }
}

/// Reads `body` until it ends or exceeds `limit` bytes. A body declared longer than the limit
/// (`declared_len`, from `Content-Length`) is not read at all: it streams from the first byte.
pub(crate) async fn read_for_replay(
    mut body: Body,
    limit: usize,
    declared_len: Option<u64>,
) -> Result<RequestBody, axum::Error> {
    let limit = limit as u64;
    if declared_len.is_some_and(|len| len > limit) {
        return Ok(RequestBody::Streaming(OutgoingBody {
            chunks: VecDeque::new(),
            buffered: 0,
            trailers: None,
            rest: Some(body),
        }));
    }
    let mut buffer = ReplayBuffer::default();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                buffer.len += data.len() as u64;
                buffer.chunks.push(data);
                if buffer.len > limit {
                    return Ok(RequestBody::Streaming(OutgoingBody {
                        chunks: buffer.chunks.into(),
                        buffered: buffer.len,
                        trailers: None,
                        rest: Some(body),
                    }));
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    buffer
                        .trailers
                        .get_or_insert_with(HeaderMap::new)
                        .extend(trailers);
                }
            }
        }
    }
    Ok(RequestBody::Replayable(buffer))
}

/// Reads and discards (a bounded part of) a response body in the background, so a small error
/// body does not cost its pooled connection; a long or slow one is simply dropped.
pub(crate) fn drain<B>(mut body: B)
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async move {
            let mut read = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    read += bytes::Buf::remaining(data);
                    if read > DRAIN_LIMIT {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body::Body as _;

    fn chunked(parts: &[&'static [u8]]) -> Body {
        let items: Vec<Result<Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Body::from_stream(stream::iter(items))
    }

    async fn collect(body: OutgoingBody) -> Vec<u8> {
        body.collect().await.expect("body").to_bytes().to_vec()
    }

    #[tokio::test]
    async fn small_bodies_replay_identically() {
        let read = read_for_replay(chunked(&[b"hello ", b"world"]), 11, None)
            .await
            .expect("read");
        let RequestBody::Replayable(buffer) = read else {
            panic!("expected a replayable body");
        };
        assert_eq!(buffer.len(), 11);
        assert_eq!(buffer.body().size_hint().exact(), Some(11));
        assert_eq!(collect(buffer.body()).await, b"hello world");
        assert_eq!(collect(buffer.body()).await, b"hello world");
    }

    #[tokio::test]
    async fn long_bodies_stream_after_the_prefix() {
        let read = read_for_replay(chunked(&[b"hello ", b"big ", b"world"]), 8, None)
            .await
            .expect("read");
        let RequestBody::Streaming(body) = read else {
            panic!("expected a streaming body");
        };
        assert_eq!(collect(body).await, b"hello big world");
    }

    #[tokio::test]
    async fn declared_long_bodies_are_not_read() {
        let read = read_for_replay(Body::from("0123456789"), 4, Some(10))
            .await
            .expect("read");
        let RequestBody::Streaming(body) = read else {
            panic!("expected a streaming body");
        };
        assert_eq!(body.size_hint().exact(), Some(10));
        assert_eq!(collect(body).await, b"0123456789");
    }
}
