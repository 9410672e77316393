//! Pipelining: concurrent checks on one connection share one write to Redis.

use std::sync::PoisonError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::direct;
use super::loader::{self, Loader};
use crate::Error;

/// The pipelining of one connection: the queue of its batch task, and the checks in flight.
pub(super) struct Batcher {
    /// The queue of the batch task that pipelines concurrent checks (see `Job`).
    queue: Mutex<Option<mpsc::UnboundedSender<Job>>>,
    /// Checks in flight: a check that finds none goes straight to the connection (a batch
    /// would only add a hop); concurrent ones are pipelined by the batch task.
    inflight: AtomicUsize,
}

impl Batcher {
    pub(super) fn new() -> Batcher {
        Batcher {
            queue: Mutex::new(None),
            inflight: AtomicUsize::new(0),
        }
    }

    /// Runs one check: alone, on the connection itself; with others in flight, through the
    /// batch task.
    pub(super) async fn run(
        &self,
        cmd: redis::Cmd,
        conn: ConnectionManager,
        loader: &Arc<Loader>,
    ) -> Result<Vec<i64>, Error> {
        let flight = InFlight::enter(&self.inflight);
        if flight.alone {
            direct(&cmd, conn, loader).await
        } else {
            batched(cmd, conn, loader, &self.queue).await
        }
    }
}

/// One check through the batch task. The task lives on the runtime that first used this
/// limiter; if that runtime is gone (tests, or an application that restarts its runtime),
/// another starts on the current one.
async fn batched(
    cmd: redis::Cmd,
    conn: ConnectionManager,
    loader: &Arc<Loader>,
    batcher: &Mutex<Option<mpsc::UnboundedSender<Job>>>,
) -> Result<Vec<i64>, Error> {
    let (reply, answer) = oneshot::channel();
    let mut job = Job { cmd, reply };
    for _ in 0..2 {
        let sender = {
            let mut slot = batcher.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(run_batches(rx, conn.clone(), Arc::clone(loader)));
                    *slot = Some(tx.clone());
                    tx
                }
            }
        };
        match sender.send(job) {
            Ok(()) => break,
            Err(mpsc::error::SendError(back)) => job = back,
        }
    }
    answer
        .await
        .map_err(|_| Error::Protocol("the batch task ended before answering".to_owned()))?
}

/// Counts a check in flight for as long as it lives (also when its caller gives up).
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// No other check was in flight when this one started.
    alone: bool,
}

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> InFlight<'a> {
        let alone = counter.fetch_add(1, Ordering::AcqRel) == 0;
        InFlight { counter, alone }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One check waiting for the batch task: its `EVALSHA` and where to send Redis' answer.
struct Job {
    cmd: redis::Cmd,
    reply: oneshot::Sender<Result<Vec<i64>, Error>>,
}

/// Most checks sent in one pipeline.
const MAX_BATCH: usize = 256;

/// Sends concurrent checks to Redis as pipelines: one write (and one read on Redis' side) for
/// all the checks queued while the task yielded once, instead of one per check. A pipeline
/// is in flight on its own task, so the next batch forms while Redis answers this one.
async fn run_batches(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    conn: ConnectionManager,
    loader: Arc<Loader>,
) {
    while let Some(first) = jobs.recv().await {
        // Let the handlers that are ready now queue their checks too.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        tokio::spawn(send_batch(batch, conn.clone(), Arc::clone(&loader)));
    }
}

/// Sends one batch as a pipeline, once the script is known to be loaded. Checks that meet a
/// flushed script cache (`NOSCRIPT`) wait for one reload shared with every other caller, then
/// go again together, as a second pipeline.
async fn send_batch(batch: Vec<Job>, mut conn: ConnectionManager, loader: Arc<Loader>) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(batch.len());
    for Job { cmd, reply } in batch {
        pipe.add_command(cmd);
        replies.push(reply);
    }
    let sent = async {
        let epoch = loader.ready(&mut conn).await?;
        let results: Vec<redis::RedisResult<Vec<i64>>> = pipe.query_async(&mut conn).await?;
        Ok::<_, Error>((epoch, results))
    };
    let (epoch, results) = match sent.await {
        Ok(sent) => sent,
        Err(e) => return fail_all(replies, &e),
    };
    let mut again = redis::pipe();
    again.ignore_errors();
    let mut waiting = Vec::new();
    for ((result, reply), cmd) in results.into_iter().zip(replies).zip(pipe.cmd_iter()) {
        match result {
            Err(e) if loader::is_noscript(&e) => {
                again.add_command(cmd.clone());
                waiting.push(reply);
            }
            other => {
                let _ = reply.send(other.map_err(Error::Redis));
            }
        }
    }
    if waiting.is_empty() {
        return;
    }
    // A flushed script cache (restart, failover, SCRIPT FLUSH).
    let resent = async {
        loader.reload(&mut conn, epoch).await?;
        let results: Vec<redis::RedisResult<Vec<i64>>> = again.query_async(&mut conn).await?;
        Ok::<_, Error>(results)
    };
    match resent.await {
        Ok(results) => {
            for (result, reply) in results.into_iter().zip(waiting) {
                let _ = reply.send(result.map_err(Error::Redis));
            }
        }
        Err(e) => fail_all(waiting, &e),
    }
}

/// Answers every check of a batch with the error that stopped it.
fn fail_all(replies: Vec<oneshot::Sender<Result<Vec<i64>, Error>>>, e: &Error) {
    for reply in replies {
        let error = match e {
            Error::Redis(e) => Error::Redis(e.clone()),
            other => Error::Protocol(other.to_string()),
        };
        let _ = reply.send(Err(error));
    }
}
