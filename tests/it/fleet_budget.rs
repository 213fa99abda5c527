//! The fleet's poll budget under a flood of watches that go away before their poll: three built
//! gateways sharing a real `redis-server` (the helpers of `replicas.rs`), real tonic clients, and
//! the bucket read straight from its Redis hash. Skipped, saying why, without `redis-server`.

use crate::common;
use crate::replicas::{fleet, redis_missing};
use oms_gateway::proto::v1 as pb;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Prints past the test harness's capture, so CI logs show the figures.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The fleet's budget in these tests, and its burst (a tenth of a second's worth).
const PER_SECOND: f64 = 25.0;
const BURST: f64 = 3.0;
/// Watches on made-up ids, and how long each caller waits before it gives up.
const FLOOD: usize = 600;
const FLOOD_DEADLINE: Duration = Duration::from_millis(300);

/// The bucket's token count as stored in Redis (`None` before the first reservation).
async fn tokens(conn: &mut redis::aio::MultiplexedConnection) -> Option<f64> {
    redis::cmd("HGET")
        .arg("oms-gateway:watch:budget")
        .arg("tokens")
        .query_async::<Option<String>>(conn)
        .await
        .ok()
        .flatten()
        .and_then(|t| t.parse().ok())
}

/// One WatchCashIn on a made-up id (`n`) that its caller gives up after `deadline`.
async fn short_watch(
    mut client: pb::cash_in_service_client::CashInServiceClient<tonic::transport::Channel>,
    n: usize,
    deadline: Duration,
) {
    let mut request = tonic::Request::new(pb::WatchCashInRequest {
        cash_in_id: format!("ci_madeup{n:05}"),
        ..Default::default()
    });
    request.set_timeout(deadline);
    if let Ok(response) = client.watch_cash_in(request).await {
        let mut stream = response.into_inner();
        while let Ok(Some(_)) = stream.message().await {}
    }
}

// Before: each poller took its token before waiting for its turn and never gave it back when its
// streams went away, and the bucket had no floor: 600 such watches took it to -310 to -590
// tokens (12 to 24 s of the whole fleet's budget), and the next real watch waited that long for
// its first event. Now: -3 (the floor, one burst) and 0.1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_short_watches_on_made_up_ids_leaves_the_next_watch_served_at_once() {
    if redis_missing("a_flood_of_short_watches") {
        return;
    }
    let (redis, _sandbox, replicas) =
        fleet(&["--watch-max-polls-per-second", &PER_SECOND.to_string()]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let id = replicas[0].created(&location, "after-the-flood").await;

    // The bucket's lowest point, read from Redis while the flood runs and after it.
    let lowest = Arc::new(Mutex::new(f64::INFINITY));
    let mut conn = redis.conn().await;
    let sampler = {
        let lowest = lowest.clone();
        tokio::spawn(async move {
            loop {
                if let Some(now) = tokens(&mut conn).await {
                    let mut lowest = lowest.lock().unwrap();
                    *lowest = lowest.min(now);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let started = Instant::now();
    let flood: Vec<_> = (0..FLOOD)
        .map(|n| tokio::spawn(short_watch(replicas[n % 3].cash_ins(), n, FLOOD_DEADLINE)))
        .collect();
    for watch in flood {
        watch.await.expect("a short watch");
    }
    let flooded = started.elapsed();

    // The next real watch, on another replica than the one that created the cash-in.
    let started = Instant::now();
    let mut request = tonic::Request::new(pb::WatchCashInRequest {
        cash_in_id: id.clone(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(60));
    let first = tokio::time::timeout(Duration::from_secs(40), async {
        let mut stream = replicas[1]
            .cash_ins()
            .watch_cash_in(request)
            .await
            .expect("WatchCashIn")
            .into_inner();
        stream.message().await
    })
    .await;
    let waited = started.elapsed();
    tokio::time::sleep(Duration::from_millis(50)).await;
    sampler.abort();
    let lowest = *lowest.lock().unwrap();
    say!(
        "{FLOOD} watches on made-up ids ({FLOOD_DEADLINE:?} deadlines, {flooded:?}) against a fleet budget of {PER_SECOND}/s: the bucket's lowest point {lowest:.1} tokens (floor -{BURST}); the next real watch's first event after {waited:?}"
    );
    let first = first
        .expect("a first event within 40 s")
        .expect("the stream stays open")
        .expect("an event");
    assert_eq!(first.cash_in.expect("cash_in").id, id);
    assert!(
        waited <= Duration::from_secs(2),
        "the next real watch waited {waited:?} for its first event (bucket at {lowest:.1})"
    );
    assert!(
        lowest >= -BURST - 1e-6,
        "the bucket went to {lowest:.1} tokens, below its floor of -{BURST}"
    );
}

// Before: a poller dropped while it waited for its turn kept its token, so the bucket only
// refilled at the fleet's rate (here one token per five seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_goes_away_before_its_turn_gives_its_token_back() {
    if redis_missing("a_watcher_that_goes_away") {
        return;
    }
    // A burst of one token, so the floor is -1, and one more token every 5 s.
    let (redis, _sandbox, replicas) = fleet(&["--watch-max-polls-per-second", "0.2"]).await;
    let mut conn = redis.conn().await;
    // The first watch takes the one token and polls at once (OMS's 404 ends it).
    short_watch(replicas[0].cash_ins(), 1, Duration::from_secs(5)).await;
    let after_first = tokens(&mut conn).await.expect("a bucket");
    assert!(
        after_first < 0.5,
        "{after_first}: the first poll took a token"
    );
    // The second reserves the next token, five seconds ahead, and goes away after 300 ms.
    short_watch(replicas[1].cash_ins(), 2, Duration::from_millis(300)).await;
    let given_up = Instant::now();
    let mut last = f64::NAN;
    common::eventually(
        Duration::from_secs(2),
        "the token back in the bucket",
        async || {
            last = tokens(&mut conn).await.unwrap_or(f64::NAN);
            last >= after_first - 0.5
        },
    )
    .await;
    say!(
        "one token per 5 s: {after_first:.2} tokens after a poll; the next waiter reserved one and gave up; {last:.2} tokens {:?} later",
        given_up.elapsed()
    );
}
