//! Watch streams under Redis faults, fleet-wide: three built replicas on one redis-server in
//! front of one sandbox, while cash-ins move through their lifecycle (created, refreshed, each
//! through a random replica; deposited and completed, or expired, behind the gateway's back,
//! the sandbox's webhooks going each to a random replica) and Redis is stalled (SIGSTOP for a
//! random 0.2–3 s, then SIGCONT) and restarted, again and again. `WatchCashIn` streams of every
//! cash-in and `WatchCashIns` streams of every customer (with and without a `[PENDING]` filter)
//! are open on every replica. What they showed must hold:
//! - each cash-in's states in lifecycle order (PENDING → PROCESSING → COMPLETED, or PENDING →
//!   EXPIRED): never back, never a terminal state left (so no `ADDED` of a finished cash-in into a
//!   `[PENDING]` stream);
//! - never a code a RefreshCashIn revoked, once that refresh was answered;
//! - every stream's final state within one poll interval of the last change, plus a slack.
//!
//! The short form (CI) stalls and restarts Redis for 25 s; `FLEET_FAULTS_SECONDS=300` runs
//! longer, with more cash-ins. Either stops by itself. The closing note prints the counts.

use crate::common;
use crate::fleet_kit::{self, Cadence, Fleet, Recorded, Watched, code, rank, status_name};
use crate::replicas::{RedisServer, redis_missing, say};
use oms_gateway::proto::v1 as pb;
use oms_sandbox::SandboxHandle;
use pb::CashInStatus as St;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tonic::transport::Channel;

/// Polls every second, every two while webhooks arrive (they do here), so a stream's
/// final state is due within 2 s of the change. The lease TTL is the default's.
const CADENCE: Cadence = Cadence {
    lease_ttl: Duration::from_secs(5),
    poll: Duration::from_secs(1),
    reconcile: Duration::from_secs(2),
};
/// On top of the interval: its jitter (up to a tenth more), one `--redis-timeout` (500 ms) for a
/// replica to find Redis stalled and fall back to polling by itself, the poll's own round trip
/// and webhook retries, and the scheduling of a loaded two-core machine running three debug
/// builds (3.15 s was seen with another build running beside the test).
const SLACK: Duration = Duration::from_millis(2000);
/// A revoked code a stream shows after its refresh was answered is forgiven only if it arrives
/// this soon after the answer and the stream had shown no newer code: a poll that read OMS
/// before the refresh, its answer still on its way (at most one `--redis-timeout`, 500 ms,
/// and some scheduling). Every other sighting is a failure.
const STALE_GRACE: Duration = Duration::from_secs(1);
const CUSTOMERS: [&str; 2] = ["cst_fleet_faults_a", "cst_fleet_faults_b"];

/// A code a RefreshCashIn revoked: when the refresh was asked (wall clock, to compare with
/// `observed_at`) and when its answer arrived.
#[derive(Clone, Debug)]
struct Revoked {
    code: String,
    /// 0: the create's code, n: the n-th refresh's.
    issued_by: usize,
    asked: SystemTime,
    answered: Instant,
}

/// What happened to one cash-in, as the test made it happen.
#[derive(Debug)]
struct Truth {
    id: String,
    customer: String,
    /// Every code it was issued (by the create, then each refresh), in order.
    codes: Vec<String>,
    revoked: Vec<Revoked>,
    /// When it was authorized (deposited) or expired: it left PENDING.
    left_pending: Instant,
    final_status: i32,
    /// When the last change was asked of the sandbox.
    final_at: Instant,
}

impl Truth {
    /// Which issue `code` was (0: the create's); past the last for a code the test never saw
    /// issued (a refresh whose answer was lost), so it counts as the newest.
    fn issue_of(&self, code: &str) -> usize {
        self.codes
            .iter()
            .position(|c| c == code)
            .unwrap_or(self.codes.len())
    }
}

/// What the cash-ins' drivers share.
struct Ctx {
    channels: Vec<Channel>,
    sandbox: SandboxHandle,
    location: pb::CashLocation,
    streams: Mutex<Vec<Recorded>>,
    /// The stall in progress, if any: when it began and when it will end.
    stall: Mutex<Option<(Instant, Instant)>>,
}

impl Ctx {
    /// With probability `p`, waits (at most 6 s) until Redis has been stalled long enough for
    /// every replica to have fallen back to polling by itself (600 ms: a Redis timeout and a
    /// turn) and stays stalled a while longer (1.2 s: a poll of the change before it resumes):
    /// the moment a change tests the fleet hardest.
    async fn maybe_mid_stall(&self, p: f64) {
        if fastrand::f64() >= p {
            return;
        }
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            let now = Instant::now();
            let stall = *self.stall.lock().unwrap();
            if stall.is_some_and(|(began, ends)| {
                now >= began + Duration::from_millis(600)
                    && ends >= now + Duration::from_millis(1200)
            }) {
                return;
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_redis_stalls_and_restarts_every_stream_on_every_replica_shows_lifecycle_order() {
    if redis_missing("under_redis_stalls_and_restarts") {
        return;
    }
    let seconds: u64 = std::env::var("FLEET_FAULTS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let cash_ins = (seconds as usize * 16 / 25).max(16);
    let Fleet {
        redis,
        sandbox,
        replicas,
        relay,
    } = Fleet::start(CADENCE, &[]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let ctx = Arc::new(Ctx {
        channels: replicas.iter().map(|r| r.channel.clone()).collect(),
        sandbox: sandbox.clone(),
        location,
        streams: Mutex::new(Vec::new()),
        stall: Mutex::new(None),
    });
    for customer in CUSTOMERS {
        for (n, channel) in ctx.channels.iter().enumerate() {
            for pending_only in [false, true] {
                let watched = Watched::Customer {
                    id: customer.to_owned(),
                    pending_only,
                };
                let stream = Recorded::start(n, channel.clone(), watched);
                ctx.streams.lock().unwrap().push(stream);
            }
        }
    }
    let origin = Instant::now();
    let spacing = Duration::from_secs(seconds).mul_f64(0.7) / cash_ins as u32;
    let drivers: Vec<_> = (0..cash_ins)
        .map(|n| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                sleep(spacing * n as u32).await;
                live(n, &ctx).await
            })
        })
        .collect();
    // The storm runs on this task (restarting Redis waits in ways a spawned task cannot).
    let ((_redis, storm_note), truths) = tokio::join!(
        storm(redis, origin + Duration::from_secs(seconds), &ctx.stall),
        async {
            let mut truths = Vec::new();
            for driver in drivers {
                truths.push(driver.await.expect("a cash-in's driver"));
            }
            truths
        }
    );
    // Every stream has had its bound to show the final states.
    let bound = CADENCE.reconcile + SLACK;
    let last = truths.iter().map(|t| t.final_at).max().unwrap_or(origin);
    sleep_until(last + bound + Duration::from_millis(200)).await;
    let streams = std::mem::take(&mut *ctx.streams.lock().unwrap());
    let verdict = judge(&truths, &streams, origin, bound);
    let forwarded = relay.forwarded();
    let per_replica: Vec<usize> = (0..3)
        .map(|r| forwarded.iter().filter(|f| f.replica == r).count())
        .collect();
    let reconnects: usize = streams
        .iter()
        .map(|s| s.reconnects.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let mut lateness = verdict.lateness.clone();
    say!(
        "fleet faults ({seconds} s: {storm_note}): {} cash-ins, {} streams on 3 replicas, {} events, reorderings {}, revoked codes seen {} (forgiven in flight {}), final states late {}; final-state lateness {} (bound {bound:?}); {} webhook deliveries per replica {per_replica:?}; {reconnects} stream reconnects",
        truths.len(),
        streams.len(),
        verdict.events,
        verdict.reorderings.len(),
        verdict.revoked.len(),
        verdict.forgiven,
        verdict.late.len(),
        fleet_kit::spread(&mut lateness),
        forwarded.len(),
    );
    let failures: Vec<&String> = verdict
        .reorderings
        .iter()
        .chain(&verdict.revoked)
        .chain(&verdict.late)
        .collect();
    assert!(
        failures.is_empty(),
        "{} reorderings, {} revoked codes seen, {} final states late or missing (bound {bound:?}; times are since the faults began):\n{}",
        verdict.reorderings.len(),
        verdict.revoked.len(),
        verdict.late.len(),
        failures
            .iter()
            .take(25)
            .map(|f| format!("- {f}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Stalls (SIGSTOP for 0.2–3 s, then SIGCONT) and restarts Redis, a random 0.3–1.5 s apart,
/// until `until`; hands the server back running, with a note of what it did.
async fn storm(
    mut redis: RedisServer,
    until: Instant,
    current: &Mutex<Option<(Instant, Instant)>>,
) -> (RedisServer, String) {
    let (mut stalls, mut restarts, mut stalled) = (0, 0, Duration::ZERO);
    while Instant::now() < until {
        sleep(Duration::from_millis(fastrand::u64(300..1500))).await;
        if fastrand::u8(..5) == 0 {
            redis.restart().await;
            restarts += 1;
        } else {
            let stall = Duration::from_millis(fastrand::u64(200..3000));
            let began = Instant::now();
            *current.lock().unwrap() = Some((began, began + stall));
            redis.pause();
            sleep(stall).await;
            *current.lock().unwrap() = None;
            redis.resume();
            stalls += 1;
            stalled += stall;
        }
    }
    let note = format!("{stalls} stalls of 0.2–3 s ({stalled:.1?} in all), {restarts} restarts");
    (redis, note)
}

fn random_channel(
    ctx: &Ctx,
) -> (
    usize,
    pb::cash_in_service_client::CashInServiceClient<Channel>,
) {
    let n = fastrand::usize(..ctx.channels.len());
    let client = pb::cash_in_service_client::CashInServiceClient::new(ctx.channels[n].clone());
    (n, client)
}

/// One cash-in's life: created through a random replica and watched on every replica,
/// refreshed zero to two times through random replicas, then deposited and completed, or
/// expired, behind the gateway's back.
async fn live(n: usize, ctx: &Ctx) -> Truth {
    let customer = CUSTOMERS[n % CUSTOMERS.len()];
    let mut request = common::create_request(&ctx.location, customer);
    request.idempotency_key = format!("fleet-faults-{n}");
    let created = retried("CreateCashIn", || {
        let (_, mut client) = random_channel(ctx);
        let request = request.clone();
        async move {
            let answer = client.create_cash_in(request).await?;
            Ok(answer.into_inner().cash_in.expect("cash_in"))
        }
    })
    .await;
    let id = created.id.clone();
    for (replica, channel) in ctx.channels.iter().enumerate() {
        let stream = Recorded::start(replica, channel.clone(), Watched::CashIn(id.clone()));
        ctx.streams.lock().unwrap().push(stream);
    }
    let mut codes: Vec<String> = code(&created).map(str::to_owned).into_iter().collect();
    let mut revoked = Vec::new();
    for k in 0..fastrand::usize(0..=2) {
        sleep(Duration::from_millis(fastrand::u64(0..1500))).await;
        ctx.maybe_mid_stall(0.5).await;
        let asked = SystemTime::now();
        let request = pb::RefreshCashInRequest {
            cash_in_id: id.clone(),
            idempotency_key: format!("fleet-faults-{n}-refresh-{k}"),
        };
        let refreshed = retried("RefreshCashIn", || {
            let (_, mut client) = random_channel(ctx);
            let request = request.clone();
            async move {
                let answer = client.refresh_cash_in(request).await?;
                Ok(answer.into_inner().cash_in.expect("cash_in"))
            }
        })
        .await;
        let answered = Instant::now();
        let Some(new) = code(&refreshed).map(str::to_owned) else {
            continue;
        };
        for (issued_by, old) in codes.iter().enumerate() {
            if *old != new && !revoked.iter().any(|r: &Revoked| r.code == *old) {
                revoked.push(Revoked {
                    code: old.clone(),
                    issued_by,
                    asked,
                    answered,
                });
            }
        }
        codes.push(new);
    }
    // Some changes follow each other within a second: OMS's `updatedAt` is whole seconds.
    sleep(Duration::from_millis(fastrand::u64(0..1500))).await;
    let behind = common::sandbox_rest::SandboxRest::new(&ctx.sandbox).await;
    ctx.maybe_mid_stall(0.5).await;
    let (left_pending, final_at, final_status) = if fastrand::bool() {
        let left = Instant::now();
        let confirmation = fleet_kit::authorize(&behind, &ctx.sandbox, &id).await;
        sleep(Duration::from_millis(fastrand::u64(0..2500))).await;
        ctx.maybe_mid_stall(0.7).await;
        let done = Instant::now();
        fleet_kit::commit(&behind, &ctx.sandbox, &id, &confirmation).await;
        (left, done, St::Completed as i32)
    } else {
        let done = Instant::now();
        ctx.sandbox
            .expire_cash_in(&id)
            .expect("expire a pending cash-in");
        (done, done, St::Expired as i32)
    };
    Truth {
        id,
        customer: customer.to_owned(),
        codes,
        revoked,
        left_pending,
        final_status,
        final_at,
    }
}

/// `call` until it succeeds (each attempt bounded at 10 s, on a random replica), at most four
/// times: what a client does across Redis faults.
async fn retried<T, F>(what: &str, mut call: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut failures = Vec::new();
    for _ in 0..4 {
        match timeout(Duration::from_secs(10), call()).await {
            Ok(Ok(answer)) => return answer,
            Ok(Err(status)) => failures.push(format!("{:?}: {}", status.code(), status.message())),
            Err(_) => failures.push("no answer within 10 s".into()),
        }
        sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} failed four times across the faults: {failures:?}");
}

/// What the streams showed, against what happened.
#[derive(Default)]
struct Verdict {
    events: usize,
    reorderings: Vec<String>,
    revoked: Vec<String>,
    /// Stale codes observed before their refresh was asked, arriving just after its answer.
    forgiven: usize,
    late: Vec<String>,
    lateness: Vec<Duration>,
}

fn judge(truths: &[Truth], streams: &[Recorded], origin: Instant, bound: Duration) -> Verdict {
    let mut verdict = Verdict::default();
    for stream in streams {
        let arrivals = stream.arrivals();
        verdict.events += arrivals.len();
        verdict
            .reorderings
            .extend(fleet_kit::reorderings(stream, origin));
        for truth in truths {
            judge_codes(truth, stream, &arrivals, origin, &mut verdict);
        }
        for truth in truths {
            judge_final(truth, stream, &arrivals, origin, bound, &mut verdict);
        }
    }
    verdict
}

/// Whether `stream` showed a code of `truth` that a refresh had revoked: after the stream had
/// shown a newer code (a step back, whenever it came), or later than [`STALE_GRACE`] after
/// the refresh that revoked it was answered.
fn judge_codes(
    truth: &Truth,
    stream: &Recorded,
    arrivals: &[fleet_kit::Arrival],
    origin: Instant,
    verdict: &mut Verdict,
) {
    let since = |at: Instant| at.duration_since(origin).as_secs_f64();
    // The newest code this stream has shown (its issue number), as it goes.
    let mut newest = None;
    for arrival in arrivals {
        let Some(cash_in) = arrival.event.cash_in.as_ref().filter(|c| c.id == truth.id) else {
            continue;
        };
        let Some(issued) = code(cash_in).map(|c| truth.issue_of(c)) else {
            continue;
        };
        let stepped_back = newest.is_some_and(|n| issued < n);
        newest = newest.max(Some(issued));
        let Some(revoked) = truth.revoked.iter().find(|r| r.issued_by == issued) else {
            continue;
        };
        if arrival.at <= revoked.answered {
            continue;
        }
        if !stepped_back && arrival.at <= revoked.answered + STALE_GRACE {
            verdict.forgiven += 1;
            continue;
        }
        let observed = fleet_kit::observed_at(&arrival.event)
            .and_then(|o| o.duration_since(revoked.asked).ok())
            .map_or("before the refresh was asked".into(), |d| {
                format!("{d:.2?} after the refresh was asked")
            });
        verdict.revoked.push(format!(
            "{} showed {}'s code #{issued}{} (revoked by a RefreshCashIn answered at +{:.2}s) at +{:.2}s, {} event, observed {observed}",
            stream.name,
            truth.id,
            if stepped_back { " after a newer one" } else { "" },
            since(revoked.answered),
            since(arrival.at),
            status_name(cash_in.status),
        ));
    }
}

/// Whether `stream` showed `truth`'s final state in time, and nothing older after that.
fn judge_final(
    truth: &Truth,
    stream: &Recorded,
    arrivals: &[fleet_kit::Arrival],
    origin: Instant,
    bound: Duration,
    verdict: &mut Verdict,
) {
    let since = |at: Instant| at.duration_since(origin).as_secs_f64();
    let about: Vec<&fleet_kit::Arrival> = arrivals
        .iter()
        .filter(|a| a.event.cash_in.as_ref().is_some_and(|c| c.id == truth.id))
        .collect();
    let status = |a: &fleet_kit::Arrival| a.event.cash_in.as_ref().map_or(0, |c| c.status);
    let follows = match &stream.watched {
        Watched::CashIn(id) => *id == truth.id,
        Watched::Customer { id, pending_only } => {
            if *pending_only {
                // It must show the cash-in leave PENDING, and never PENDING again later.
                if let Some(stuck) = about
                    .iter()
                    .find(|a| status(a) == St::Pending as i32 && a.at > truth.left_pending + bound)
                    .or(about.last().filter(|a| status(a) == St::Pending as i32))
                {
                    verdict.late.push(format!(
                        "{} still showed {} PENDING at +{:.2}s; it left PENDING at +{:.2}s",
                        stream.name,
                        truth.id,
                        since(stuck.at),
                        since(truth.left_pending)
                    ));
                }
                return;
            }
            *id == truth.customer
        }
    };
    if !follows {
        return;
    }
    let shown: Vec<&str> = about.iter().map(|a| status_name(status(a))).collect();
    match about
        .iter()
        .find(|a| status(a) == truth.final_status && a.at >= truth.final_at)
    {
        Some(first) => {
            let late = first.at - truth.final_at;
            verdict.lateness.push(late);
            if late > bound {
                verdict.late.push(format!(
                    "{} showed {} {} {late:.2?} after the change (at +{:.2}s), over {bound:?}; it showed {shown:?}",
                    stream.name,
                    truth.id,
                    status_name(truth.final_status),
                    since(truth.final_at),
                ));
            }
        }
        None => verdict.late.push(format!(
            "{} never showed {} {} (changed at +{:.2}s); it showed {shown:?}",
            stream.name,
            truth.id,
            status_name(truth.final_status),
            since(truth.final_at),
        )),
    }
    if let Some(after) = about
        .iter()
        .find(|a| a.at > truth.final_at + bound && rank(status(a)) < rank(truth.final_status))
    {
        verdict.late.push(format!(
            "{} showed {} {} at +{:.2}s, after its final {} (+{:.2}s) was due",
            stream.name,
            truth.id,
            status_name(status(after)),
            since(after.at),
            status_name(truth.final_status),
            since(truth.final_at),
        ));
    }
}
