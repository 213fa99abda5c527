//! What one replica learns first-hand reaches the watch streams of every replica at once, and a
//! stopping replica hands its polls over at once. Three built replicas on one redis-server, the
//! sandbox's webhooks going through a relay to the replica a test chooses.
//!
//! Propagation is measured with polls 60 s apart (`--watch-poll-interval` and
//! `--watch-reconcile-interval`), so only a pushed change can explain an arrival well under a
//! minute: each figure must stay under a fifth of the interval, and the closing note prints
//! min / median / max over the rounds (`FLEET_PROPAGATION_ROUNDS`, 20 by default):
//! - a verified webhook to replica A → a `WatchCashIn` and the customer's `WatchCashIns` on B;
//! - a CreateCashIn through A → the customer's `WatchCashIns` on B (and on A);
//! - a RefreshCashIn through A → a `WatchCashIn` on B, and a `WatchCashIn` opened on B once the
//!   refresh was answered shows the new code, never the revoked one.

use crate::common;
use crate::fleet_kit::{self, Cadence, Fleet, Recorded, Watched, code};
use crate::replicas::{redis_missing, say};
use oms_gateway::proto::v1 as pb;
use pb::CashInStatus as St;
use std::time::Duration;
use tokio::time::{Instant, sleep};

const PUSHED: Cadence = Cadence {
    lease_ttl: Duration::from_secs(5),
    poll: Duration::from_secs(60),
    reconcile: Duration::from_secs(60),
};
const CUSTOMER: &str = "cst_fleet_push";

/// A fifth of the interval between polls: no poll can explain an arrival this soon.
fn push_bound() -> Duration {
    PUSHED.reconcile / 5
}

/// Waits (at most `limit`) for `stream` to show an event about `id` from `since` on that
/// `matches`; how long after `since` it came.
async fn arrival(
    stream: &Recorded,
    id: &str,
    since: Instant,
    limit: Duration,
    matches: impl Fn(&pb::CashIn, &pb::CashInEvent) -> bool,
) -> Option<Duration> {
    let deadline = since + limit;
    loop {
        if let Some(at) = stream.first(id, since, &matches) {
            return Some(at.saturating_duration_since(since));
        }
        if Instant::now() >= deadline {
            return None;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

/// Figures of one kind of propagation, and what missed the bound.
#[derive(Default)]
struct Figures {
    create_other: Vec<Duration>,
    create_own: Vec<Duration>,
    refresh_other: Vec<Duration>,
    webhook_single: Vec<Duration>,
    webhook_customer: Vec<Duration>,
    failures: Vec<String>,
}

impl Figures {
    fn note(
        &mut self,
        figure: Option<Duration>,
        into: fn(&mut Self) -> &mut Vec<Duration>,
        what: String,
    ) {
        match figure {
            Some(took) if took <= push_bound() => into(self).push(took),
            Some(took) => self.failures.push(format!("{what} took {took:?}")),
            None => self
                .failures
                .push(format!("{what} had not arrived after {:?}", push_bound())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_replica_learns_reaches_every_replicas_streams_long_before_a_poll() {
    if redis_missing("what_one_replica_learns_reaches_every_replicas_streams") {
        return;
    }
    let rounds: usize = std::env::var("FLEET_PROPAGATION_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let fleet = Fleet::start(PUSHED, &["--watch-heartbeat-interval", "60s"]).await;
    let channels = fleet.channels();
    let location = common::first_location(&channels[0]).await;
    let create = async |replica: usize, key: String| {
        let mut request = common::create_request(&location, CUSTOMER);
        request.idempotency_key = key;
        let mut client = fleet.replicas[replica].cash_ins();
        let answer = client.create_cash_in(request).await.expect("CreateCashIn");
        answer.into_inner().cash_in.expect("cash_in")
    };
    // The customer's streams start on a cash-in they read at once, which says they are open.
    let first = create(0, "push-warm-up".into()).await;
    let customer_streams: Vec<Recorded> = (0..3)
        .map(|n| {
            let watched = Watched::Customer {
                id: CUSTOMER.into(),
                pending_only: false,
            };
            Recorded::start(n, channels[n].clone(), watched)
        })
        .collect();
    let opened = Instant::now() - Duration::from_secs(1);
    for stream in &customer_streams {
        let initial = arrival(
            stream,
            &first.id,
            opened,
            Duration::from_secs(15),
            |_, _| true,
        );
        assert!(
            initial.await.is_some(),
            "{}: no INITIAL in 15 s",
            stream.name
        );
    }
    let mut figures = Figures::default();
    for round in 0..rounds {
        let (a, b) = (round % 3, (round + 1) % 3);
        push_round(
            &fleet,
            round,
            a,
            b,
            &customer_streams,
            &create,
            &mut figures,
        )
        .await;
        assert!(
            figures.failures.is_empty(),
            "round {round} (A = replica {a}, B = replica {b}; polls every {:?}, the bound is a fifth of that):\n- {}",
            PUSHED.reconcile,
            figures.failures.join("\n- ")
        );
    }
    let spread = |v: &mut Vec<Duration>| fleet_kit::spread(v);
    say!(
        "propagation over three replicas (polls every {:?}, {rounds} rounds): webhook to A → WatchCashIn on B {}; webhook to A → WatchCashIns on B {}; CreateCashIn through A → WatchCashIns on B {}; on A {}; RefreshCashIn through A → WatchCashIn on B {}",
        PUSHED.reconcile,
        spread(&mut figures.webhook_single),
        spread(&mut figures.webhook_customer),
        spread(&mut figures.create_other),
        spread(&mut figures.create_own),
        spread(&mut figures.refresh_other),
    );
}

/// One round: a create and a refresh through A, a webhook to A; what B's (and A's) streams show.
async fn push_round(
    fleet: &Fleet,
    round: usize,
    a: usize,
    b: usize,
    customer_streams: &[Recorded],
    create: &impl AsyncFn(usize, String) -> pb::CashIn,
    figures: &mut Figures,
) {
    let channels = fleet.channels();
    let bound = push_bound();
    let asked = Instant::now();
    let created = create(a, format!("push-{round}")).await;
    let id = created.id.clone();
    let added = arrival(&customer_streams[b], &id, asked, bound, |_, _| true).await;
    figures.note(
        added,
        |f| &mut f.create_other,
        format!("a CreateCashIn through replica {a} → replica {b}'s WatchCashIns({CUSTOMER})"),
    );
    let own = arrival(&customer_streams[a], &id, asked, bound, |_, _| true).await;
    figures.note(
        own,
        |f| &mut f.create_own,
        format!("a CreateCashIn through replica {a} → replica {a}'s own WatchCashIns({CUSTOMER})"),
    );
    let single = Recorded::start(b, channels[b].clone(), Watched::CashIn(id.clone()));
    let initial = arrival(&single, &id, asked, Duration::from_secs(15), |_, _| true).await;
    assert!(initial.is_some(), "{}: no INITIAL in 15 s", single.name);
    // A refresh through A: B's stream shows the new code, and a stream opened on B after the
    // answer never shows the old one.
    let old = code(&created).unwrap_or_default().to_owned();
    let asked = Instant::now();
    let mut client = fleet.replicas[a].cash_ins();
    let refreshed = client
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: id.clone(),
            idempotency_key: format!("push-refresh-{round}"),
        })
        .await
        .expect("RefreshCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let answered = Instant::now();
    let new = code(&refreshed).unwrap_or_default().to_owned();
    assert_ne!(new, old, "the refresh issued a new code");
    let mut late_joiner = Recorded::start(b, channels[b].clone(), Watched::CashIn(id.clone()));
    late_joiner.name += " opened once the refresh was answered";
    let shown = arrival(&single, &id, asked, bound, |c, _| {
        code(c) == Some(new.as_str())
    })
    .await;
    figures.note(
        shown,
        |f| &mut f.refresh_other,
        format!(
            "a RefreshCashIn through replica {a} → the new code on replica {b}'s WatchCashIn({id})"
        ),
    );
    let joined = arrival(
        &late_joiner,
        &id,
        answered,
        Duration::from_secs(15),
        |_, _| true,
    )
    .await;
    assert!(joined.is_some(), "{}: no INITIAL in 15 s", late_joiner.name);
    // Behind the gateway's back, told by a webhook to A only.
    fleet.relay.route_to(Some(a));
    let changed = Instant::now();
    fleet
        .sandbox
        .expire_cash_in(&id)
        .expect("expire a pending cash-in");
    let expired = |c: &pb::CashIn, _: &pb::CashInEvent| c.status == St::Expired as i32;
    let on_single = arrival(&single, &id, changed, bound, expired).await;
    let on_customer = arrival(&customer_streams[b], &id, changed, bound, expired).await;
    let delivered = fleet
        .relay
        .forwarded()
        .into_iter()
        .find(|f| f.cash_in == id && f.event.to_ascii_lowercase().contains("expired"));
    let Some(delivered) = delivered else {
        panic!("round {round}: the sandbox's expired webhook for {id} never reached the relay");
    };
    assert_eq!(delivered.replica, a, "the relay sent the webhook to A");
    assert!(
        (200..300).contains(&delivered.status),
        "replica {a} answered the webhook {}",
        delivered.status
    );
    // From the webhook's arrival at A (the relay forwards it at once).
    let from_webhook = |took: Option<Duration>| {
        took.map(|t| (changed + t).saturating_duration_since(delivered.at))
    };
    figures.note(
        from_webhook(on_single),
        |f| &mut f.webhook_single,
        format!("a webhook to replica {a} → EXPIRED on replica {b}'s WatchCashIn({id})"),
    );
    figures.note(
        from_webhook(on_customer),
        |f| &mut f.webhook_customer,
        format!("a webhook to replica {a} → EXPIRED on replica {b}'s WatchCashIns({CUSTOMER})"),
    );
    fleet.relay.route_to(None);
    // No stream showed the revoked code once the refresh was answered.
    for stream in [
        &single,
        &late_joiner,
        &customer_streams[b],
        &customer_streams[a],
    ] {
        let stale = stream
            .arrivals()
            .into_iter()
            .filter(|x| x.at > answered)
            .filter(|x| {
                x.event
                    .cash_in
                    .as_ref()
                    .is_some_and(|c| c.id == id && code(c) == Some(old.as_str()))
            })
            .map(|x| format!("+{:?}", x.at - answered))
            .collect::<Vec<_>>();
        if !stale.is_empty() {
            figures.failures.push(format!(
                "{} showed the code a RefreshCashIn through replica {a} revoked, after its answer: at {}",
                stream.name,
                stale.join(", ")
            ));
        }
    }
}

/// Polls every second; webhooks would relax that to 30 s, and none comes (a deposit at the
/// counter sends none), so only a poll can show the change this test makes.
const HANDOVER: Cadence = Cadence {
    lease_ttl: Duration::from_secs(5),
    poll: Duration::from_secs(1),
    reconcile: Duration::from_secs(30),
};
/// On top of the poll interval: the poll's own round trip and the scheduling of a loaded
/// two-core machine.
const HANDOVER_SLACK: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_with_sigterm_hands_its_polls_over_within_one_poll_interval() {
    if redis_missing("a_replica_stopped_with_sigterm_hands_its_polls_over") {
        return;
    }
    let mut fleet = Fleet::start(HANDOVER, &[]).await;
    let channels = fleet.channels();
    let location = common::first_location(&channels[0]).await;
    let id = fleet.replicas[0]
        .created(&location, "handover-sigterm")
        .await;
    let mut streams: Vec<Recorded> = (0..3)
        .map(|n| Recorded::start(n, channels[n].clone(), Watched::CashIn(id.clone())))
        .collect();
    let started = Instant::now() - Duration::from_secs(1);
    for stream in &streams {
        let initial = arrival(stream, &id, started, Duration::from_secs(15), |_, _| true);
        assert!(
            initial.await.is_some(),
            "{}: no INITIAL in 15 s",
            stream.name
        );
    }
    let lease_key = format!("oms-gateway:watch:{{cash-in:{id}}}:lease");
    let mut conn = fleet.redis.conn().await;
    let lease: String = redis::cmd("GET")
        .arg(&lease_key)
        .query_async(&mut conn)
        .await
        .expect("a poller holds the cash-in's lease");
    let holder = (0..3)
        .find(|&n| {
            fleet.replicas[n]
                .replica_id()
                .is_some_and(|rid| lease.starts_with(&rid))
        })
        .expect("the holder is one of the three");
    // A rolling deploy: the holder's clients go to another replica, and it gets SIGTERM.
    streams.retain(|s| s.replica != holder);
    let survivor = (holder + 1) % 3;
    let mut reconnected = Recorded::start(
        survivor,
        channels[survivor].clone(),
        Watched::CashIn(id.clone()),
    );
    reconnected.name += &format!(", reconnected from replica {holder}");
    streams.push(reconnected);
    fleet.relay.forget(holder);
    // Right after the signal, while it drains, a change only a poll can show.
    let behind = common::sandbox_rest::SandboxRest::new(&fleet.sandbox).await;
    let (replicas, sandbox) = (&mut fleet.replicas, &fleet.sandbox);
    let (exited, seen) = tokio::join!(replicas[holder].terminate(Duration::from_secs(30)), async {
        let changed = Instant::now();
        fleet_kit::authorize(&behind, sandbox, &id).await;
        let processing = |c: &pb::CashIn, _: &pb::CashInEvent| c.status == St::Processing as i32;
        let mut seen = Vec::new();
        for stream in &streams {
            let took = arrival(stream, &id, changed, Duration::from_secs(20), processing);
            seen.push((stream.name.clone(), took.await));
        }
        seen
    });
    let exited = exited.expect("the holder exits on SIGTERM within 30 s");
    let bound = HANDOVER.poll + HANDOVER_SLACK;
    let after: Vec<String> = seen
        .iter()
        .map(|(name, took)| format!("{name}: {took:?}"))
        .collect();
    say!(
        "SIGTERM to the replica polling a watched cash-in (it exited {exited:?} later): a change made right after the signal reached the other replicas' streams after {after:?} (polls every {:?}, lease TTL {:?})",
        HANDOVER.poll,
        HANDOVER.lease_ttl
    );
    for (name, took) in seen {
        assert!(
            took.is_some_and(|t| t <= bound),
            "{name} showed PROCESSING {took:?} after the change (None: not within 20 s), over one poll interval and a slack ({bound:?}); the change was made right after SIGTERM to the holder, replica {holder}, which exited {exited:?} after the signal"
        );
    }
}
