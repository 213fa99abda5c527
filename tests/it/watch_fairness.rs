//! Fair use of the upstream between callers: the built binary (alone, or two replicas sharing a
//! real `redis-server`), a sandbox of its own as OMS, callers named as a Linkerd sidecar names
//! them (`--caller-identity-header l5d-client-id`), and real tonic clients. One caller's
//! thousand watches on made-up customers must not hold back another caller's watch beyond one
//! poll interval plus its fair share of the poll budget.

use crate::common;
use crate::common::prometheus::value;
use crate::replicas::{self, RedisServer, Replica, redis_missing};
use oms_gateway::proto::v1 as pb;
use pb::cash_in_service_client::CashInServiceClient;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};
use tonic::Request;
use tonic::transport::Channel;

/// Prints past the test harness's capture, so CI logs show the figures.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const SECRET: &str = "watch-fairness-secret";
/// The poll budget, the poll interval (jittered by ±10%), and caller A's watches.
const PER_SECOND: f64 = 20.0;
const INTERVAL: Duration = Duration::from_secs(1);
const FLOOD: usize = 1000;
/// A's streams over this many connections (the HTTP/2 stream cap is per connection).
const CONNECTIONS: usize = 5;
/// Beyond the computed bound: the requests themselves, Redis, and a machine running the other
/// tests beside (two cores in CI). Far below what one queue for all costs B (25 to 50 s).
const SLACK: Duration = Duration::from_secs(1);
const A: &str = "a.flood.example";
const B: &str = "b.single.example";

/// The built gateway, killed on drop.
struct Gateway {
    child: Child,
    log: std::path::PathBuf,
    addr: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Gateway {
    /// Starts the binary against `sandbox` and waits (at most 30 s) until it takes connections.
    async fn start(sandbox: &oms_sandbox::SandboxHandle) -> Self {
        let addr = format!("127.0.0.1:{}", common::free_port());
        let log = std::env::temp_dir().join(format!(
            "oms-gateway-fairness-{}.log",
            addr.replace(':', "-")
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_oms-gateway"))
            .args(["--listen", &addr, "--admin-listen", "127.0.0.1:0"])
            .args(["--caller-identity-header", "l5d-client-id"])
            .args(["--watch-max-polls-per-second", &PER_SECOND.to_string()])
            .args([
                "--watch-poll-interval",
                &format!("{}ms", INTERVAL.as_millis()),
            ])
            .args(["--max-concurrent-calls", "4096", "--drain-delay", "0s"])
            .env("OMS_BASE_URL", sandbox.base_url())
            .env("OMS_API_KEY", common::REMOTE_API_KEY)
            .env("OMS_API_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the built gateway");
        let gateway = Self { child, log, addr };
        let started = Instant::now();
        while common::health_check(&gateway.channel().await, "")
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the gateway never started:\n{}",
                std::fs::read_to_string(&gateway.log).unwrap_or_default()
            );
            sleep(Duration::from_millis(50)).await;
        }
        gateway
    }

    /// `/metrics` (the admin listener's address from its startup line: `… addr=127.0.0.1:N`).
    async fn metrics(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let line = text
            .lines()
            .find(|l| l.contains("admin listener"))
            .expect("the admin listener's startup line");
        let addr = line[line.find("addr=").expect("addr=") + 5..]
            .split_whitespace()
            .next()
            .expect("an address")
            .to_owned();
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// A connection of its own.
    async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect_lazy()
    }
}

/// `message` as sent by `caller`'s sidecar.
fn from<T>(caller: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("l5d-client-id", caller.parse().expect("ascii"));
    request
}

/// The sandbox's list requests for the made-up customers so far: A's polls.
fn flood_polls(sandbox: &oms_sandbox::SandboxHandle) -> usize {
    sandbox
        .journal()
        .iter()
        .filter(|r| {
            r.path == "/cash-ins" && r.query.as_deref().is_some_and(|q| q.contains("cst_madeup"))
        })
        .count()
}

/// Creates caller B's cash-in through `channel`; its id.
async fn b_cash_in(channel: &Channel) -> String {
    let location =
        pb::cash_location_service_client::CashLocationServiceClient::new(channel.clone())
            .list_cash_locations(from(B, common::guide_point()))
            .await
            .expect("ListCashLocations")
            .into_inner()
            .cash_locations
            .swap_remove(0);
    CashInServiceClient::new(channel.clone())
        .create_cash_in(from(B, common::create_request(&location, "cst_fair_b")))
        .await
        .expect("CreateCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in")
        .id
}

/// Caller A's thousand WatchCashIns on customers that have no cash-ins, spread over `clients`;
/// the open streams (never read: nothing comes).
async fn flood(clients: &[CashInServiceClient<Channel>]) -> Vec<tonic::Streaming<pb::CashInEvent>> {
    let opened = Instant::now();
    let watches = (0..FLOOD).map(|n| {
        let mut client = clients[n % clients.len()].clone();
        async move {
            let request = pb::WatchCashInsRequest {
                customer_id: format!("cst_madeup{n:04}"),
                ..Default::default()
            };
            client
                .watch_cash_ins(from(A, request))
                .await
                .expect("A's WatchCashIns")
                .into_inner()
        }
    });
    let streams = futures_util::future::join_all(watches).await;
    // Every poller queued for its first poll.
    sleep(Duration::from_millis(200)).await;
    say!("caller A opened {FLOOD} watches in {:?}", opened.elapsed());
    streams
}

/// Caller B watches `id` through `client`, the sandbox expires it behind the gateways' back,
/// and B must see its first event and then the change each within `limit` plus [`SLACK`].
/// Returns both delays.
async fn b_sees_its_change(
    client: &mut CashInServiceClient<Channel>,
    id: &str,
    sandbox: &oms_sandbox::SandboxHandle,
    limit: Duration,
) -> (Duration, Duration) {
    let limit = limit + SLACK;
    let started = Instant::now();
    let request = pb::WatchCashInRequest {
        cash_in_id: id.to_owned(),
        ..Default::default()
    };
    let mut stream = client
        .watch_cash_in(from(B, request))
        .await
        .expect("B's WatchCashIn")
        .into_inner();
    // Its first event is its first poll's.
    let first = timeout(limit, stream.message()).await;
    let first_after = started.elapsed();
    let first = first
        .unwrap_or_else(|_| {
            panic!(
                "B saw no first event within {limit:?} ({} of A's polls made)",
                flood_polls(sandbox)
            )
        })
        .expect("B's stream stays open")
        .expect("an event");
    assert_eq!(first.cash_in.expect("cash_in").id, id);

    // A change behind the gateway's back: only B's poller can bring it.
    common::sandbox_rest::SandboxRest::new(sandbox)
        .await
        .post(&format!("/sandbox/cash-ins/{id}/expire"), None)
        .await;
    let changed = Instant::now();
    let seen = timeout(limit, async {
        loop {
            let event = stream.message().await.expect("B's stream").expect("open");
            let status = event.cash_in.map(|c| c.status);
            if status == Some(pb::CashInStatus::Expired as i32) {
                return changed.elapsed();
            }
        }
    })
    .await;
    let seen = seen.unwrap_or_else(|_| {
        panic!(
            "B's change did not reach B within {limit:?} ({} of A's polls made)",
            flood_polls(sandbox)
        )
    });
    (first_after, seen)
}

// Before (one FIFO queue of pollers): B's poller queued behind A's thousand first polls, 50 s at
// 20/s, so B saw no event at all within the bound. Now its turns alternate with A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_watches_of_one_caller_hold_another_callers_watch_back_one_fair_share_at_most() {
    let sandbox = common::start_remote_sandbox(SECRET).await;
    let gateway = Gateway::start(&sandbox).await;
    let b_channel = gateway.channel().await;
    let id = b_cash_in(&b_channel).await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(CashInServiceClient::new(gateway.channel().await));
    }
    let _a_streams = flood(&clients).await;
    let a_before = flood_polls(&sandbox);
    let text = gateway.metrics().await;
    let waiting = value(&text, "oms_gateway_watch_polls_waiting", &[]);
    let callers = value(&text, "oms_gateway_watch_poll_callers_waiting", &[]);
    say!("{a_before} of A's first polls made, {waiting} waiting for {callers} caller(s)");
    assert!(waiting >= 900.0, "A's polls queue: {waiting} waiting");
    assert_eq!(callers, 1.0, "one caller waits: A");
    assert!(!text.contains(A), "no caller is named in /metrics");

    // B's fair share: one turn in each round of the two callers with polls waiting.
    let limit = INTERVAL.mul_f64(1.1) + Duration::from_secs_f64(2.0 / PER_SECOND);
    let mut b_client = CashInServiceClient::new(b_channel);
    let (first, seen) = b_sees_its_change(&mut b_client, &id, &sandbox, limit).await;
    let a_after = flood_polls(&sandbox);
    say!(
        "budget {PER_SECOND}/s, interval {INTERVAL:?}, one gateway: with caller A's {FLOOD} watches queued, caller B's first event came after {first:?} and its change reached it after {seen:?} (bound: 1.1 × interval + two turns = {limit:?}, plus {SLACK:?}); A's polls meanwhile {a_before} → {a_after}"
    );
    assert!(
        a_after < FLOOD,
        "A's first polls were all made ({a_after}): nothing was queued ahead of B"
    );
}

// With a fleet the replicas ask Redis's bucket one poller at a time each: before, in arrival
// order, so B's poller on replica 1 waited behind A's 500 there (25 s at the fleet's 20/s, half
// of it replica 1's). Now B's turns alternate with A's on replica 1, and the two replicas share
// the fleet's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fleet_a_thousand_watches_of_one_caller_hold_another_callers_watch_back_one_fair_share_at_most()
 {
    if redis_missing("with_a_fleet_a_thousand_watches") {
        return;
    }
    let redis = RedisServer::start().await;
    let sandbox = common::start_remote_sandbox(replicas::SECRET).await;
    let per_second = PER_SECOND.to_string();
    let extra = [
        "--caller-identity-header",
        "l5d-client-id",
        "--watch-max-polls-per-second",
        &per_second,
        "--max-concurrent-calls",
        "4096",
        "--max-concurrent-streams-per-connection",
        "1024",
    ];
    let lease_ttl = Duration::from_secs(3);
    let mut fleet = Vec::new();
    for _ in 0..2 {
        fleet.push(Replica::launch(&sandbox, &redis, lease_ttl, INTERVAL, &extra).await);
    }
    replicas::all_share(&fleet).await;
    let id = b_cash_in(&fleet[0].channel).await;
    // A's watches land on both replicas, as a balancer spreads them; B's on the second.
    let clients: Vec<_> = fleet.iter().map(Replica::cash_ins).collect();
    let _a_streams = flood(&clients).await;
    let a_before = flood_polls(&sandbox);

    // B's fair share: one turn in each round of the two callers on its replica, whose asker
    // takes every other token of the fleet's, each reservation at most a burst (2) ahead.
    let limit = INTERVAL.mul_f64(1.1) + Duration::from_secs_f64((4.0 + 2.0) / PER_SECOND);
    let mut b_client = fleet[1].cash_ins();
    let (first, seen) = b_sees_its_change(&mut b_client, &id, &sandbox, limit).await;
    let a_after = flood_polls(&sandbox);
    say!(
        "fleet budget {PER_SECOND}/s over two replicas, interval {INTERVAL:?}: with caller A's {FLOOD} watches queued on both, caller B's first event on the second came after {first:?} and its change reached it after {seen:?} (bound: 1.1 × interval + four turns + a burst = {limit:?}, plus {SLACK:?}); A's polls meanwhile {a_before} → {a_after}"
    );
    assert!(
        a_after < FLOOD,
        "A's first polls were all made ({a_after}): nothing was queued ahead of B"
    );
}
