//! A watch stream's queue of responses, bounded in bytes as well as in
//! count, so that a client that stops reading holds at most a small, fixed
//! amount of the member's memory however large its responses are (a
//! catch-up response can carry a thousand revisions).
//!
//! The hub offers responses without waiting ([`QueueSender::try_send_all`]):
//! a full queue moves the stream's watchers off the live path. The stream's
//! own answers (created, canceled, progress) wait for a free slot instead
//! and are not held to the byte budget: they are small and one per request.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use keel_api::etcdserverpb::WatchResponse;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::Stream;

/// Batches a queue holds at most, whatever their size.
const MAX_BATCHES: usize = 1024;

/// Why responses were not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No room now: too many responses or bytes are waiting.
    Full,
    /// The stream is gone.
    Closed,
}

/// Responses queued together (one slot of the channel, one wake-up of the
/// stream), with their encoded size.
#[derive(Debug)]
struct Batch {
    bytes: usize,
    responses: Vec<WatchResponse>,
}

/// A queue for one stream, holding about `budget` bytes of responses (a
/// single batch larger than that is let in when the queue is empty).
pub(crate) fn queue(budget: usize) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = mpsc::channel(MAX_BATCHES);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        QueueSender {
            tx,
            queued: queued.clone(),
            budget,
        },
        QueueReceiver {
            rx,
            queued,
            taken: Vec::new().into_iter(),
        },
    )
}

/// The sending side of a stream's queue.
#[derive(Clone, Debug)]
pub(crate) struct QueueSender {
    tx: mpsc::Sender<Batch>,
    /// Bytes waiting in the queue.
    queued: Arc<AtomicUsize>,
    budget: usize,
}

impl QueueSender {
    /// Whether a batch of `bytes` would fit now.
    fn fits(&self, bytes: usize) -> bool {
        let queued = self.queued.load(Ordering::Acquire);
        queued == 0 || queued.saturating_add(bytes) <= self.budget
    }

    /// The bytes a catch-up read may fill now: `None` until the queue is
    /// at most half full, so that a read is not wasted on a queue it would
    /// not fit in.
    pub(crate) fn room(&self) -> Option<usize> {
        let queued = self.queued.load(Ordering::Acquire);
        (self.tx.capacity() > 0 && queued <= self.budget / 2).then(|| self.budget - queued)
    }

    /// Queues all of `responses` or none (a revision is never half sent),
    /// in one slot: the stream wakes once for them.
    pub(crate) fn try_send_all(&self, responses: Vec<WatchResponse>) -> Result<(), Refused> {
        let bytes = responses.iter().map(Message::encoded_len).sum();
        if !self.fits(bytes) {
            return Err(if self.tx.is_closed() {
                Refused::Closed
            } else {
                Refused::Full
            });
        }
        let permit = self.tx.try_reserve().map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => Refused::Full,
            mpsc::error::TrySendError::Closed(()) => Refused::Closed,
        })?;
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        permit.send(Batch { bytes, responses });
        Ok(())
    }

    /// Queues one response, if there is room now.
    pub(crate) fn try_send(&self, response: WatchResponse) -> Result<(), Refused> {
        self.try_send_all(vec![response])
    }

    /// Queues one of the stream's own answers, waiting for a slot (not for
    /// the byte budget); fails once the stream is gone.
    pub(crate) async fn send(&self, response: WatchResponse) -> Result<(), Refused> {
        let bytes = response.encoded_len();
        let permit = self.tx.reserve().await.map_err(|_| Refused::Closed)?;
        self.queued.fetch_add(bytes, Ordering::AcqRel);
        permit.send(Batch {
            bytes,
            responses: vec![response],
        });
        Ok(())
    }

    /// Whether the stream is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves once the stream is gone.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The receiving side of a stream's queue: the responses, in order. A
/// batch's bytes leave the budget when the batch is taken off the channel,
/// so beyond the budget at most one batch is held here while the stream
/// hands its responses out.
#[derive(Debug)]
pub(crate) struct QueueReceiver {
    rx: mpsc::Receiver<Batch>,
    queued: Arc<AtomicUsize>,
    /// The rest of the batch taken last.
    taken: std::vec::IntoIter<WatchResponse>,
}

impl QueueReceiver {
    /// The next response without waiting, if one is queued.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<WatchResponse> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(self).poll_next(&mut cx) {
            Poll::Ready(next) => next,
            Poll::Pending => None,
        }
    }

    /// The next response, once one is queued; `None` once the stream is
    /// gone and the queue empty.
    #[cfg(test)]
    pub(crate) async fn recv(&mut self) -> Option<WatchResponse> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for QueueReceiver {
    type Item = WatchResponse;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        loop {
            if let Some(response) = self.taken.next() {
                return Poll::Ready(Some(response));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    self.queued.fetch_sub(batch.bytes, Ordering::AcqRel);
                    self.taken = batch.responses.into_iter();
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use keel_api::mvccpb::{Event, KeyValue};

    fn response(value_bytes: usize) -> WatchResponse {
        WatchResponse {
            events: vec![Event {
                kv: Some(KeyValue {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from(vec![b'v'; value_bytes]),
                    ..KeyValue::default()
                }),
                ..Event::default()
            }],
            ..WatchResponse::default()
        }
    }

    #[tokio::test]
    async fn the_budget_bounds_the_bytes_waiting_and_frees_as_they_are_read() {
        let (tx, mut rx) = queue(10_000);
        // One response larger than the budget still goes into an empty
        // queue; then nothing more until it is read.
        assert_eq!(tx.room(), Some(10_000));
        tx.try_send(response(50_000)).unwrap();
        assert_eq!(tx.room(), None);
        assert_eq!(tx.try_send(response(10)), Err(Refused::Full));
        assert_eq!(
            rx.recv().await.unwrap().events[0]
                .kv
                .as_ref()
                .unwrap()
                .value
                .len(),
            50_000
        );
        assert_eq!(tx.room(), Some(10_000));
        // Small ones fill it up to the budget, all or none at a time.
        let mut sent = 0;
        while tx.try_send_all(vec![response(900), response(900)]).is_ok() {
            sent += 2;
        }
        assert!(
            (8..=12).contains(&sent),
            "{sent} responses of ~1 kB in 10 kB"
        );
        assert_eq!(tx.try_send(response(900)), Err(Refused::Full));
        // The stream's own answers wait for a slot, not for bytes.
        tx.send(response(10)).await.unwrap();
        for _ in 0..=sent {
            rx.try_recv().unwrap();
        }
        assert!(rx.try_recv().is_none());
        assert_eq!(tx.room(), Some(10_000));
        drop(rx);
        assert_eq!(tx.try_send(response(1)), Err(Refused::Closed));
        assert!(tx.is_closed());
    }
}
