//! Batching: concurrent checks on one connection share one write to Redis, and one script
//! call decides them all.

use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::direct;
use super::loader::{self, Loader};
use crate::Error;

/// The batched token-bucket script, `lua/gcra_batch.lua` (a link here, like `gcra.lua`):
/// several checks in one call.
///
/// KEYS: the bucket keys of every check, check after check. ARGV: `now` in µs or `""`, then
/// per check: its number of keys, then per key: emission interval, tolerance, increment.
/// Returns `gcra.lua`'s replies one after the other.
pub(super) static GCRA_BATCH: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("gcra_batch.lua")));

/// Whether a batch goes as one call of [`GCRA_BATCH`] (the default) instead of a pipeline of
/// one `EVALSHA` each: one `TIME` and one entry into Lua per batch cost Redis about 0.7x the
/// CPU per decision (flux-bench part 1c). Process-wide, so that a benchmark can alternate the
/// two.
static ONE_CALL: AtomicBool = AtomicBool::new(true);

/// Sends each batch as one script call (`true`, the default) or as a pipeline of `EVALSHA`s.
pub fn set_one_call_batches(on: bool) {
    ONE_CALL.store(on, Ordering::Relaxed);
}

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
        loader: &Arc<Loader>,
    ) -> Result<Vec<i64>, Error> {
        let flight = InFlight::enter(&self.inflight);
        if flight.alone {
            direct(&cmd, conn, loader).await
        } else {
            batched(script, cmd, conn, loader, &self.queue).await
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
    loader: &Arc<Loader>,
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

/// One call waiting for the batch task: its `EVALSHA`, the script it runs (only rate-limit
/// checks are merged into one call of [`GCRA_BATCH`]) and where to send Redis' answer.
struct Job {
    script: &'static redis::Script,
    cmd: redis::Cmd,
    reply: oneshot::Sender<Result<Vec<i64>, Error>>,
}

/// Most checks sent in one batch.
const MAX_BATCH: usize = 256;

/// Sends concurrent checks to Redis in batches: all the checks queued while the task yielded
/// once go in one write, as one call of [`GCRA_BATCH`] (one `TIME`, one entry into Lua for
/// all; each check still all or nothing, in queue order), or as a pipeline of one `EVALSHA`
/// each when [`ONE_CALL`] is off or the checks carry different explicit times (tests). A
/// batch is in flight on its own task, so the next one forms while Redis answers this one.
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
        if batch.len() > 1 && ONE_CALL.load(Ordering::Relaxed) {
            tokio::spawn(send_one_call(batch, conn.clone(), Arc::clone(&loader)));
        } else {
            tokio::spawn(send_batch(batch, conn.clone(), Arc::clone(&loader)));
        }
    }
}

/// Sends one batch as a pipeline, once the script is known to be loaded. Checks that meet a
/// flushed script cache (`NOSCRIPT`) wait for one reload shared with every other caller, then
/// go again together, as a second pipeline.
async fn send_batch(batch: Vec<Job>, mut conn: ConnectionManager, loader: Arc<Loader>) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut replies = Vec::with_capacity(batch.len());
    for Job { cmd, reply, .. } in batch {
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

/// Sends one batch as one call of [`GCRA_BATCH`] and hands each check its part of the reply.
async fn send_one_call(batch: Vec<Job>, mut conn: ConnectionManager, loader: Arc<Loader>) {
    let Some((cmd, counts)) = one_call(&batch) else {
        // Checks at different explicit times (tests): one script call each, pipelined.
        return send_batch(batch, conn, loader).await;
    };
    let replies: Vec<_> = batch.into_iter().map(|job| job.reply).collect();
    let sent = async {
        let epoch = loader.ready(&mut conn).await?;
        match cmd.query_async::<Vec<i64>>(&mut conn).await {
            Err(e) if loader::is_noscript(&e) => {
                loader.reload(&mut conn, epoch).await?;
                Ok(cmd.query_async::<Vec<i64>>(&mut conn).await?)
            }
            other => Ok::<_, Error>(other?),
        }
    };
    let values = match sent.await {
        Ok(values) => values,
        Err(e) => return fail_all(replies, &e),
    };
    let wanted: usize = counts.iter().map(|n| 1 + 3 * n).sum();
    if values.len() != wanted {
        let e = Error::Protocol(format!(
            "the batched rate-limit script returned {} values for {wanted}",
            values.len()
        ));
        return fail_all(replies, &e);
    }
    let mut at = 0;
    for (reply, n) in replies.into_iter().zip(counts) {
        let len = 1 + 3 * n;
        let _ = reply.send(Ok(values[at..at + len].to_vec()));
        at += len;
    }
}

/// The `EVALSHA` of [`GCRA_BATCH`] deciding every check of `batch`, and each check's number
/// of keys; `None` if the checks do not share one `now` argument or a call of `batch` is not
/// a rate-limit check.
fn one_call(batch: &[Job]) -> Option<(redis::Cmd, Vec<usize>)> {
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut argv: Vec<&[u8]> = Vec::new();
    let mut counts = Vec::with_capacity(batch.len());
    let mut now: Option<&[u8]> = None;
    for job in batch {
        if !std::ptr::eq(job.script, &*super::GCRA_SCRIPT) {
            return None; // a concurrency-slot call: pipelined as it is
        }
        // EVALSHA <sha> <n> KEYS... now (interval tolerance increment)...
        let args: Vec<&[u8]> = job
            .cmd
            .args_iter()
            .filter_map(|arg| match arg {
                redis::Arg::Simple(data) => Some(data),
                _ => None,
            })
            .collect();
        let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
        let this_now = *args.get(3 + n)?;
        if now.is_some_and(|now| now != this_now) {
            return None;
        }
        now = Some(this_now);
        keys.extend_from_slice(args.get(3..3 + n)?);
        counts.push(n);
        argv.push(args[2]);
        argv.extend_from_slice(args.get(4 + n..)?);
    }
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(GCRA_BATCH.get_hash()).arg(keys.len());
    for key in keys {
        cmd.arg(key);
    }
    cmd.arg(now?);
    for arg in argv {
        cmd.arg(arg);
    }
    Some((cmd, counts))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(keys: &[&str], now: &str, params: &[u64]) -> Job {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg("sha").arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        cmd.arg(now);
        for p in params {
            cmd.arg(*p);
        }
        Job {
            script: &super::super::GCRA_SCRIPT,
            cmd,
            reply: oneshot::channel().0,
        }
    }

    fn args(cmd: &redis::Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(data) => String::from_utf8_lossy(data).into_owned(),
                _ => "?".to_owned(),
            })
            .collect()
    }

    #[test]
    fn the_crate_carries_the_batch_script_of_lua_folder() {
        let script = include_str!("gcra_batch.lua");
        assert!(script.starts_with("-- Flux: gcra.lua for several checks"));
    }

    #[test]
    fn a_batch_becomes_one_call_with_each_checks_key_count() {
        let batch = [
            job(&["k1"], "", &[1, 2, 3]),
            job(&["k2", "k3"], "", &[4, 5, 6, 7, 8, 9]),
        ];
        let (cmd, counts) = one_call(&batch).expect("one call");
        assert_eq!(counts, [1, 2]);
        let sha = GCRA_BATCH.get_hash();
        assert_eq!(
            args(&cmd),
            [
                "EVALSHA", sha, "3", "k1", "k2", "k3", "", "1", "1", "2", "3", "2", "4", "5", "6",
                "7", "8", "9"
            ]
        );
    }

    #[test]
    fn checks_at_different_explicit_times_are_not_merged() {
        let batch = [
            job(&["k1"], "100", &[1, 2, 3]),
            job(&["k2"], "200", &[1, 2, 3]),
        ];
        assert!(one_call(&batch).is_none());
    }
}
