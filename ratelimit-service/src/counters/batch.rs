//! Requests to one Redis sent together: the decisions queued while the
//! batcher waits for its turn on the runtime go to Redis as one script call
//! (`decide.lua` still decides each request atomically, one after another),
//! so Redis runs one script, and the service encodes and parses one command,
//! for many requests. Nothing waits on purpose: under light load a batch
//! holds one request, and batches grow with the load. Each batch's call is
//! bounded by the Redis timeout and answers every request in it.

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::CounterError;

/// One counter as the script takes it: its key and its first seven
/// arguments (the eighth, the request it belongs to, is added per batch).
pub(super) type Counter = (String, [u64; 7]);

/// Most requests per script call: bounds how long one call holds Redis.
const MAX_BATCH: usize = 128;

struct Waiting {
    counters: Vec<Counter>,
    reply: oneshot::Sender<Result<Vec<i64>, CounterError>>,
}

pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Batcher {
    /// Starts batching on the current Tokio runtime.
    pub fn start(
        connection: ConnectionManager,
        script: redis::Script,
        timeout: Duration,
        calls: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        let (queue, mut waiting) = mpsc::unbounded_channel::<Waiting>();
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match waiting.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                calls.inc();
                tokio::spawn(send(connection.clone(), script.clone(), timeout, batch));
            }
        });
        Self { queue }
    }

    /// The script's reply for `counters` (five values per counter).
    pub async fn decide(&self, counters: Vec<Counter>) -> Result<Vec<i64>, CounterError> {
        self.submit(counters).await
    }

    /// Queues `counters` now (so they join the next batch) and answers
    /// with a future of the script's reply that borrows nothing.
    pub fn submit(
        &self,
        counters: Vec<Counter>,
    ) -> impl Future<Output = Result<Vec<i64>, CounterError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.queue.send(Waiting { counters, reply });
        async move {
            queued.map_err(|_| CounterError::Unavailable("Redis batcher stopped".into()))?;
            answer
                .await
                .unwrap_or_else(|_| Err(CounterError::Unavailable("Redis batch dropped".into())))
        }
    }
}

/// Sends one batch and answers each request in it.
async fn send(
    mut connection: ConnectionManager,
    script: Arc<redis::Script>,
    timeout: Duration,
    batch: Vec<Waiting>,
) {
    let mut invocation = script.prepare_invoke();
    for (request, waiting) in batch.iter().enumerate() {
        for (key, args) in &waiting.counters {
            invocation.key(key);
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.arg(request);
        }
    }
    let counters: usize = batch.iter().map(|w| w.counters.len()).sum();
    let reply = match tokio::time::timeout(timeout, invocation.invoke_async(&mut connection)).await
    {
        Ok(Ok(values)) => Ok::<Vec<i64>, CounterError>(values),
        Ok(Err(e)) => Err(CounterError::Unavailable(e.category().to_owned())),
        Err(_) => Err(CounterError::Unavailable(format!(
            "no answer within {timeout:?}"
        ))),
    }
    .and_then(|values| {
        if values.len() == counters * super::redis::REPLY_WIDTH {
            Ok(values)
        } else {
            Err(CounterError::Unavailable("unexpected script reply".into()))
        }
    });
    match reply {
        Ok(values) => {
            let mut rest = values.as_slice();
            for waiting in batch {
                let (mine, others) =
                    rest.split_at(waiting.counters.len() * super::redis::REPLY_WIDTH);
                let _ = waiting.reply.send(Ok(mine.to_vec()));
                rest = others;
            }
        }
        Err(e) => {
            for waiting in batch {
                let _ = waiting.reply.send(Err(e.clone()));
            }
        }
    }
}
