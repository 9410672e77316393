//! Pipelining: concurrent checks on one connection share one write to Redis.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicUsize, Ordering};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::direct;
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
        script: &'static redis::Script,
        cmd: redis::Cmd,
        conn: ConnectionManager,
    ) -> Result<Vec<i64>, Error> {
        let flight = InFlight::enter(&self.inflight);
        if flight.alone {
            direct(script, &cmd, conn).await
        } else {
            batched(script, cmd, conn, &self.queue).await
        }
    }
}

/// One check through the batch task. The task lives on the runtime that first used this
/// limiter; if that runtime is gone (tests, or an application that restarts its runtime),
/// another starts on the current one.
async fn batched(
    script: &'static redis::Script,
    cmd: redis::Cmd,
    conn: ConnectionManager,
    batcher: &Mutex<Option<mpsc::UnboundedSender<Job>>>,
) -> Result<Vec<i64>, Error> {
    let (reply, answer) = oneshot::channel();
    let mut job = Job { script, cmd, reply };
    for _ in 0..2 {
        let sender = {
            let mut slot = batcher.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref().filter(|tx| !tx.is_closed()) {
                Some(tx) => tx.clone(),
                None => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(run_batches(rx, conn.clone()));
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

/// One check waiting for the batch task: its `EVALSHA`, the script it runs (reloaded on
/// `NOSCRIPT`) and where to send Redis' answer.
struct Job {
    script: &'static redis::Script,
    cmd: redis::Cmd,
    reply: oneshot::Sender<Result<Vec<i64>, Error>>,
}

/// Most checks sent in one pipeline.
const MAX_BATCH: usize = 256;

/// Sends concurrent checks to Redis as pipelines: one write (and one read on Redis' side) for
/// all the checks queued while the task yielded once, instead of one per check. A pipeline
/// is in flight on its own task, so the next batch forms while Redis answers this one.
async fn run_batches(mut jobs: mpsc::UnboundedReceiver<Job>, conn: ConnectionManager) {
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
        tokio::spawn(send_batch(batch, conn.clone()));
    }
}

async fn send_batch(batch: Vec<Job>, mut conn: ConnectionManager) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(batch.len());
    for Job { script, cmd, reply } in batch {
        pipe.add_command(cmd);
        replies.push((script, reply));
    }
    let results: Vec<redis::RedisResult<Vec<i64>>> = match pipe.query_async(&mut conn).await {
        Ok(results) => results,
        Err(e) => {
            for (_, reply) in replies {
                let _ = reply.send(Err(Error::Redis(e.clone())));
            }
            return;
        }
    };
    // The scripts loaded again in this batch, by hash.
    let mut reloaded: Vec<&str> = Vec::new();
    for ((result, (script, reply)), cmd) in results.into_iter().zip(replies).zip(pipe.cmd_iter()) {
        let answer = match result {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // A flushed script cache (restart, failover, SCRIPT FLUSH): load each script
                // once for the batch, then run this check again.
                if !reloaded.contains(&script.get_hash())
                    && script.load_async(&mut conn).await.is_ok()
                {
                    reloaded.push(script.get_hash());
                }
                cmd.query_async::<Vec<i64>>(&mut conn)
                    .await
                    .map_err(Error::Redis)
            }
            other => other.map_err(Error::Redis),
        };
        let _ = reply.send(answer);
    }
}
