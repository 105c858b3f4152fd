//! Group concurrent requests into one write.
//!
//! A [`Batcher`] owns a task that takes requests from a channel and hands them to a
//! flush function in groups: everything queued when the task wakes up, plus whatever
//! arrives within `window` of the first one, up to `max` requests. Each caller awaits the
//! answer to its own request. While one flush is running the next requests queue up, so
//! the busier the store, the larger the batches; an idle notifier pays at most `window`
//! of extra latency per write.

use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How requests are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Requests per flush at most.
    pub max: usize,
    /// How long the first request of a batch waits for company (zero: only what is
    /// already queued joins it).
    pub window: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max: 128,
            window: Duration::from_millis(1),
        }
    }
}

type Envelope<Req, Resp> = (Req, oneshot::Sender<Resp>);

/// The submitting side; cheap to clone. The task ends when every handle is dropped.
pub struct Batcher<Req, Resp> {
    requests: mpsc::Sender<Envelope<Req, Resp>>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Spawns the task on the current Tokio runtime. `flush` must answer every request,
    /// in order (one response per request).
    pub fn spawn<F, Fut>(config: BatchConfig, mut flush: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let max = config.max.max(1);
        // Bounded by what may be in flight anyway (one request per mail being handled);
        // the bound only keeps a runaway caller from queueing without limit.
        let (requests, mut queue) = mpsc::channel::<Envelope<Req, Resp>>(max * 8);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let deadline = Instant::now() + config.window;
                let mut batch = vec![first];
                while batch.len() < max {
                    match queue.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                while batch.len() < max && !config.window.is_zero() {
                    match tokio::time::timeout_at(deadline, queue.recv()).await {
                        Ok(Some(next)) => batch.push(next),
                        Ok(None) | Err(_) => break,
                    }
                }
                let (items, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                    batch.into_iter().unzip();
                let answers = flush(items).await;
                debug_assert_eq!(answers.len(), replies.len());
                for (reply, answer) in replies.into_iter().zip(answers) {
                    // The caller may have given up (hard shutdown); nothing to tell it.
                    let _ = reply.send(answer);
                }
            }
        });
        Self { requests }
    }

    /// Queues `request` and waits for its answer; `None` if the task is gone (the
    /// runtime is shutting down) or dropped the request without answering.
    pub async fn submit(&self, request: Req) -> Option<Resp> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((request, reply)).await.ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn concurrent_requests_share_a_flush_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(
            BatchConfig {
                max: 4,
                window: Duration::from_millis(20),
            },
            move |items: Vec<u32>| {
                seen.lock().expect("lock").push(items.len());
                async move { items.into_iter().map(|i| i * 10).collect() }
            },
        );
        let answers = futures::future::join_all((0..10).map(|i| batcher.submit(i))).await;
        assert_eq!(
            answers,
            (0..10).map(|i| Some(i * 10)).collect::<Vec<_>>(),
            "answers come back to their own callers"
        );
        let sizes = sizes.lock().expect("lock").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 10);
        assert!(sizes.iter().all(|&n| n <= 4), "never above max: {sizes:?}");
        assert!(sizes.len() <= 4, "grouped, not one by one: {sizes:?}");
    }

    #[tokio::test]
    async fn a_lone_request_is_flushed_after_the_window_without_company() {
        let batcher = Batcher::spawn(
            BatchConfig {
                max: 100,
                window: Duration::from_millis(2),
            },
            |items: Vec<&'static str>| async move { items },
        );
        let started = std::time::Instant::now();
        assert_eq!(batcher.submit("alone").await, Some("alone"));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
