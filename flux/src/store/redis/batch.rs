//! Batching: concurrent script calls on one connection share one write to Redis, and the
//! rate-limit checks among them one script call.

use std::borrow::Cow;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::backend;
use super::scripts::{self, Cache, Id};
use crate::error::Error;
use crate::model::gcra::Params;

/// One script call to make. A call made alone borrows its caller's keys and parameters; one
/// handed to the batch task owns them ([`Call::into_owned`]).
pub(super) enum Call<'a> {
    /// A rate-limit check ([`scripts::GCRA`]): one client's bucket keys, each key's
    /// parameters, how many checks to take at once (a lease; 1 for a plain check), and
    /// `now` (µs) when a test drives time.
    Check {
        keys: Cow<'a, [String]>,
        params: Cow<'a, [Params]>,
        want: u64,
        now: Option<u64>,
    },
    /// A concurrency-slot operation: the `EVALSHA` of [`scripts::SLOTS`], sent as it is.
    Slots(redis::Cmd),
}

impl Call<'_> {
    fn into_owned(self) -> Call<'static> {
        match self {
            Call::Check {
                keys,
                params,
                want,
                now,
            } => Call::Check {
                keys: Cow::Owned(keys.into_owned()),
                params: Cow::Owned(params.into_owned()),
                want,
                now,
            },
            Call::Slots(cmd) => Call::Slots(cmd),
        }
    }
}

/// Whether concurrent checks are decided by one script call (the default) instead of one
/// `EVALSHA` each in a pipeline: one `TIME` and one entry into Lua per batch. Process-wide,
/// so that flux-bench can alternate the two in one run.
static ONE_CALL: AtomicBool = AtomicBool::new(true);

/// Decides the checks of a batch in one script call (`true`, the default) or with one
/// `EVALSHA` each, pipelined (`false`). For benchmarks that compare the two.
#[doc(hidden)]
pub fn set_one_call_batches(on: bool) {
    ONE_CALL.store(on, Ordering::Relaxed);
}

/// The batching of one connection: the queue of its batch task, and the calls in flight.
pub(super) struct Batcher {
    /// The batch task's queue, and the generation of the connection it sends on.
    queue: Mutex<Option<(u64, mpsc::UnboundedSender<Job>)>>,
    /// Calls in flight: a call that finds none goes straight to the connection (a batch
    /// would only add a hop); concurrent ones are batched by the batch task.
    inflight: AtomicUsize,
}

impl Batcher {
    pub(super) fn new() -> Batcher {
        Batcher {
            queue: Mutex::new(None),
            inflight: AtomicUsize::new(0),
        }
    }

    /// Makes one call: alone, on the connection itself; with others in flight, through the
    /// batch task.
    pub(super) async fn run(
        &self,
        call: Call<'_>,
        mut conn: ConnectionManager,
        generation: u64,
        cache: &Arc<Cache>,
    ) -> Result<Vec<i64>, Error> {
        let flight = InFlight::enter(&self.inflight);
        if flight.alone {
            let mut answers = send(std::slice::from_ref(&call), &mut conn, cache).await;
            answers.pop().unwrap_or_else(|| Err(lost()))
        } else {
            self.batched(call.into_owned(), conn, generation, cache)
                .await
        }
    }

    /// One call through the batch task. The task lives on the runtime that first used this
    /// limiter; if that runtime is gone (tests, or an application that restarts its
    /// runtime), another starts on the current one.
    async fn batched(
        &self,
        call: Call<'static>,
        conn: ConnectionManager,
        generation: u64,
        cache: &Arc<Cache>,
    ) -> Result<Vec<i64>, Error> {
        let (reply, answer) = oneshot::channel();
        let mut job = Job { call, reply };
        for _ in 0..2 {
            let sender = {
                let mut slot = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                // A replaced connection's task ends once its queue is dropped; a call that
                // took the connection before it was replaced joins the new one's task.
                match slot
                    .as_ref()
                    .filter(|(g, tx)| *g >= generation && !tx.is_closed())
                {
                    Some((_, tx)) => tx.clone(),
                    None => {
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(run_batches(rx, conn.clone(), Arc::clone(cache)));
                        *slot = Some((generation, tx.clone()));
                        tx
                    }
                }
            };
            match sender.send(job) {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => job = back,
            }
        }
        answer.await.unwrap_or_else(|_| Err(lost()))
    }
}

fn lost() -> Error {
    Error::Protocol("the batch task ended before answering".to_owned())
}

/// Counts a call in flight for as long as it lives (also when its caller gives up).
struct InFlight<'a> {
    counter: &'a AtomicUsize,
    /// No other call was in flight when this one started.
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

/// One call waiting for the batch task, and where to send Redis' answer.
struct Job {
    call: Call<'static>,
    reply: oneshot::Sender<Result<Vec<i64>, Error>>,
}

/// Most calls sent in one batch.
const MAX_BATCH: usize = 256;

/// Sends concurrent calls to Redis in batches: all the calls queued while the task yielded
/// once go in one write. A batch is in flight on its own task, so the next one forms while
/// Redis answers this one.
async fn run_batches(
    mut jobs: mpsc::UnboundedReceiver<Job>,
    conn: ConnectionManager,
    cache: Arc<Cache>,
) {
    while let Some(first) = jobs.recv().await {
        // Let the handlers that are ready now queue their calls too.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut conn = conn.clone();
        let cache = Arc::clone(&cache);
        tokio::spawn(async move {
            let (calls, replies): (Vec<Call>, Vec<_>) =
                batch.into_iter().map(|job| (job.call, job.reply)).unzip();
            let answers = send(&calls, &mut conn, &cache).await;
            for (answer, reply) in answers.into_iter().zip(replies) {
                let _ = reply.send(answer);
            }
        });
    }
}

/// Makes `calls` in one write and returns their answers in order. A script not known to be
/// loaded is loaded in the same write, in front of its first call; calls that still meet
/// `NOSCRIPT` (a script cache flushed meanwhile) go once more, with the load in front.
async fn send(
    calls: &[Call<'_>],
    conn: &mut ConnectionManager,
    cache: &Cache,
) -> Vec<Result<Vec<i64>, Error>> {
    let mut answers: Vec<Option<Result<Vec<i64>, Error>>> =
        (0..calls.len()).map(|_| None).collect();
    let round = Round::plan(calls, (0..calls.len()).collect(), cache);
    let missing = round.send(conn, cache, &mut answers).await;
    if !missing.is_empty() {
        // A flushed script cache (SCRIPT FLUSH, a restart, a failover): the first write to
        // meet it for a script reloads it, the others wait for that write, then go again.
        let mut reloads = Vec::new();
        let mut waits = Vec::new();
        for &(_, id, epoch) in &missing {
            match cache.missing(id, epoch) {
                Some(reload) => reloads.push(reload),
                None if !waits.contains(&id) => waits.push(id),
                None => {}
            }
        }
        for id in waits {
            if !reloads.iter().any(|r| r.id() == id) {
                cache.settled(id).await;
            }
        }
        let again = Round::plan(calls, missing.iter().map(|&(i, _, _)| i).collect(), cache);
        // A second NOSCRIPT is the answer.
        for (i, id, epoch) in again.send(conn, cache, &mut answers).await {
            answers[i] = Some(Err(Error::Protocol(format!(
                "Redis answered NOSCRIPT to {id:?} at epoch {epoch} right after loading it"
            ))));
        }
        drop(reloads);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(lost())))
        .collect()
}

/// One write: the `SCRIPT LOAD`s it needs, then its commands, each answering one or more
/// calls.
struct Round {
    /// The scripts loaded in front, with the epoch each was loaded under.
    loads: Vec<(Id, u64)>,
    commands: Vec<Command>,
}

struct Command {
    cmd: redis::Cmd,
    script: Id,
    /// The epoch of `script` it was sent under.
    epoch: u64,
    /// The calls it answers, in order, each with its number of keys (a check's share of a
    /// batched reply is `1 + 3n` values); `None` for a call that takes the whole reply.
    calls: Vec<(usize, Option<usize>)>,
}

impl Round {
    /// The commands for `which` of `calls`: the checks that share a `now` go in one script
    /// call (unless one-call batches are off), each slot operation in its own.
    fn plan(calls: &[Call<'_>], which: Vec<usize>, cache: &Cache) -> Round {
        let one_call = ONE_CALL.load(Ordering::Relaxed);
        let mut commands: Vec<Command> = Vec::new();
        // The checks of each command of checks, grouped by `now`.
        let mut groups: Vec<(Option<u64>, Vec<usize>)> = Vec::new();
        for &i in &which {
            match &calls[i] {
                Call::Check { now, .. } => {
                    match groups.iter_mut().find(|(n, _)| n == now && one_call) {
                        Some((_, group)) => group.push(i),
                        None => groups.push((*now, vec![i])),
                    }
                }
                Call::Slots(cmd) => commands.push(Command {
                    cmd: cmd.clone(),
                    script: Id::Slots,
                    epoch: cache.epoch(Id::Slots),
                    calls: vec![(i, None)],
                }),
            }
        }
        for (now, group) in groups {
            commands.push(check_command(calls, now, &group, cache.epoch(Id::Gcra)));
        }
        let mut loads = Vec::new();
        for command in &commands {
            if Cache::needs_load(command.epoch)
                && !loads.iter().any(|&(id, _)| id == command.script)
            {
                loads.push((command.script, command.epoch));
            }
        }
        Round { loads, commands }
    }

    /// Sends this round, fills in the answers of its calls, and returns the calls that met
    /// `NOSCRIPT`, each with its script and the epoch it was sent under.
    async fn send(
        &self,
        conn: &mut ConnectionManager,
        cache: &Cache,
        answers: &mut [Option<Result<Vec<i64>, Error>>],
    ) -> Vec<(usize, Id, u64)> {
        type Replies = Vec<redis::RedisResult<redis::Value>>;
        let replies: redis::RedisResult<Replies> =
            if let ([], [command]) = (&self.loads[..], &self.commands[..]) {
                // The common case, one call of a loaded script: no pipeline around it.
                match command.cmd.query_async::<redis::Value>(conn).await {
                    Ok(value) => Ok(vec![Ok(value)]),
                    Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => Ok(vec![Err(e)]),
                    Err(e) => Err(e),
                }
            } else {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for &(id, _) in &self.loads {
                    pipe.add_command(id.load_cmd()).ignore();
                }
                for command in &self.commands {
                    pipe.add_command(command.cmd.clone());
                }
                pipe.query_async(conn).await
            };
        let replies = match replies {
            Ok(replies) if replies.len() == self.commands.len() => replies,
            Ok(replies) => {
                let e = format!(
                    "{} replies to {} script calls",
                    replies.len(),
                    self.commands.len()
                );
                for command in &self.commands {
                    for &(i, _) in &command.calls {
                        answers[i] = Some(Err(Error::Protocol(e.clone())));
                    }
                }
                return Vec::new();
            }
            Err(e) => {
                for command in &self.commands {
                    for &(i, _) in &command.calls {
                        answers[i] = Some(Err(backend(e.clone())));
                    }
                }
                return Vec::new();
            }
        };
        for &(id, epoch) in &self.loads {
            cache.loaded(id, epoch);
        }
        let mut missing = Vec::new();
        for (command, reply) in self.commands.iter().zip(replies) {
            let values = match reply {
                Err(e) => {
                    if scripts::is_noscript(&e) {
                        missing.extend(
                            command
                                .calls
                                .iter()
                                .map(|&(i, _)| (i, command.script, command.epoch)),
                        );
                        continue;
                    }
                    Err(backend(e))
                }
                Ok(value) => Reply::parse(value),
            };
            split(values, &command.calls, answers);
        }
        missing
    }
}

/// The `EVALSHA` of [`scripts::GCRA`] deciding the checks `group` of `calls`, all at `now`.
fn check_command(calls: &[Call<'_>], now: Option<u64>, group: &[usize], epoch: u64) -> Command {
    let checks = || {
        group.iter().filter_map(|&i| match &calls[i] {
            Call::Check {
                keys, params, want, ..
            } => Some((i, keys, params, *want)),
            Call::Slots(_) => None,
        })
    };
    let nkeys: usize = checks().map(|(_, keys, _, _)| keys.len()).sum();
    // EVALSHA <sha> <nkeys> KEYS... now (n[:want] (interval tolerance increment)...)...
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(scripts::GCRA.get_hash()).arg(nkeys);
    for (_, keys, _, _) in checks() {
        for key in keys.iter() {
            cmd.arg(key.as_str());
        }
    }
    match now {
        Some(now) => cmd.arg(now),
        None => cmd.arg(""),
    };
    let mut answered = Vec::with_capacity(group.len());
    for (i, keys, params, want) in checks() {
        if want > 1 {
            cmd.arg(format!("{}:{want}", keys.len()));
        } else {
            cmd.arg(keys.len());
        }
        for p in params.iter() {
            cmd.arg(p.interval).arg(p.tolerance).arg(p.increment);
        }
        answered.push((i, Some(keys.len())));
    }
    Command {
        cmd,
        script: Id::Gcra,
        epoch,
        calls: answered,
    }
}

/// The one script command that makes `call` alone (for a cluster, which routes each call by
/// its first key), and its script.
pub(super) fn single(call: &Call<'_>) -> (Id, redis::Cmd) {
    match call {
        Call::Check { now, .. } => {
            let command = check_command(std::slice::from_ref(call), *now, &[0], 0);
            (Id::Gcra, command.cmd)
        }
        Call::Slots(cmd) => (Id::Slots, cmd.clone()),
    }
}

/// A script's reply: integers, except where `lua/gcra.lua` marks a check that failed (its
/// read or write refused by Redis, `WRONGTYPE` say): that check's `taken` is Redis' error
/// text.
pub(super) struct Reply {
    values: Vec<i64>,
    /// The failed checks: where their share starts, and the error.
    failed: Vec<(usize, String)>,
}

impl Reply {
    pub(super) fn parse(value: redis::Value) -> Result<Reply, Error> {
        let redis::Value::Array(items) = value else {
            return Err(Error::Protocol(format!(
                "unexpected script reply: {value:?}"
            )));
        };
        let mut values = Vec::with_capacity(items.len());
        let mut failed = Vec::new();
        for item in items {
            match item {
                redis::Value::Int(v) => values.push(v),
                redis::Value::BulkString(text) => {
                    failed.push((values.len(), String::from_utf8_lossy(&text).into_owned()));
                    values.push(0);
                }
                redis::Value::SimpleString(text) => {
                    failed.push((values.len(), text));
                    values.push(0);
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected value in a script reply: {other:?}"
                    )));
                }
            }
        }
        Ok(Reply { values, failed })
    }

    /// The reply of one call: its values, or the error of its failed check.
    pub(super) fn whole(self) -> Result<Vec<i64>, Error> {
        match self.failed.into_iter().next() {
            Some((_, text)) => Err(check_failed(&text)),
            None => Ok(self.values),
        }
    }
}

/// The error of a check that failed inside the script, as Redis' own error reply to the
/// command would have been: `WRONGTYPE Operation against a key ...` has code `WRONGTYPE`.
fn check_failed(text: &str) -> Error {
    let text = text.trim_end();
    // Redis before 7 prefixes an error raised inside a script with where it was raised,
    // and keeps the reply's dash: `@user_script:1: -READONLY You can't write ...`.
    let text = match text.find(" -") {
        Some(at) if text.starts_with('@') => &text[at + 2..],
        _ => text,
    };
    let text = text.trim_start_matches('-');
    let (code, detail) = match text.split_once(' ') {
        Some((code, detail)) => (code, Some(detail.to_owned())),
        None => (text, None),
    };
    backend(redis::make_extension_error(code.to_owned(), detail))
}

/// Hands each call its share of one command's reply: a check that failed inside the script
/// gets its error, the others their values.
fn split(
    reply: Result<Reply, Error>,
    shares: &[(usize, Option<usize>)],
    answers: &mut [Option<Result<Vec<i64>, Error>>],
) {
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) => {
            for &(i, _) in shares {
                answers[i] = Some(Err(e.clone()));
            }
            return;
        }
    };
    if let [(i, _)] = shares {
        // The whole reply is this call's (its caller checks the length, as for any reply).
        answers[*i] = Some(reply.whole());
        return;
    }
    let Reply { values, failed } = reply;
    let wanted: usize = shares.iter().map(|(_, n)| 1 + 3 * n.unwrap_or(0)).sum();
    if values.len() != wanted {
        let e = Error::Protocol(format!(
            "the rate-limit script returned {} values for {wanted}",
            values.len()
        ));
        for &(i, _) in shares {
            answers[i] = Some(Err(e.clone()));
        }
        return;
    }
    let mut at = 0;
    for &(i, n) in shares {
        let len = 1 + 3 * n.unwrap_or(0);
        answers[i] = Some(match failed.iter().find(|(start, _)| *start == at) {
            Some((_, text)) => Err(check_failed(text)),
            None => Ok(values[at..at + len].to_vec()),
        });
        at += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn a_check_s_error_has_redis_code_on_every_version() {
        // Redis 7, and Redis 6.2 (where the script's position and the dash stay in).
        for text in [
            "READONLY You can't write against a read only replica.",
            "@user_script:1: -READONLY You can't write against a read only replica.\r\n",
        ] {
            let Error::Backend(e) = check_failed(text) else {
                panic!("{text:?}: a backend error");
            };
            assert_eq!(e.code(), Some("READONLY"), "{text:?}");
        }
    }

    #[test]
    fn a_failed_check_gets_its_error_and_the_others_their_values() {
        let reply = Value::Array(vec![
            Value::Int(1),
            Value::Int(9),
            Value::Int(0),
            Value::Int(100),
            Value::BulkString(b"WRONGTYPE Operation against a key".to_vec()),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Int(5),
            Value::Int(7),
        ]);
        let mut answers = vec![None, None, None];
        split(
            Reply::parse(reply),
            &[(2, Some(1)), (0, Some(2)), (1, Some(1))],
            &mut answers,
        );
        assert_eq!(
            answers[2].clone().map(Result::ok),
            Some(Some(vec![1, 9, 0, 100]))
        );
        assert_eq!(
            answers[1].clone().map(Result::ok),
            Some(Some(vec![0, 0, 5, 7]))
        );
        let Some(Err(Error::Backend(e))) = &answers[0] else {
            panic!("{:?}", answers[0]);
        };
        assert_eq!(e.code(), Some("WRONGTYPE"));
        assert!(e.to_string().contains("Operation against a key"), "{e}");
        // Alone, the whole reply is the check's.
        let alone = Value::Array(vec![
            Value::BulkString(b"OOM command not allowed".to_vec()),
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
        ]);
        let Err(Error::Backend(e)) = Reply::parse(alone).and_then(Reply::whole) else {
            panic!("not an error");
        };
        assert_eq!(e.code(), Some("OOM"));
    }
}
