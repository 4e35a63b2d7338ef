//! The one body type the data path sends either way: a body streamed from the other side, or
//! one held in memory (a request kept for retries, a response the proxy made itself). An enum
//! rather than a boxed body: no allocation per request.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// Streamed from the peer as it arrives.
    Incoming(Incoming),
    /// Complete in memory; `None` once sent.
    Full(Option<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Incoming(incoming) => Pin::new(incoming).poll_frame(cx),
            ProxyBody::Full(data) => Poll::Ready(
                data.take()
                    .filter(|data| !data.is_empty())
                    .map(|data| Ok(Frame::data(data))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Incoming(incoming) => incoming.is_end_stream(),
            ProxyBody::Full(data) => data.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Incoming(incoming) => incoming.size_hint(),
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}
