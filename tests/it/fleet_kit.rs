//! What the fleet watch tests (`fleet_faults`, `fleet_propagation`) share: three built replicas
//! on one redis-server in front of one sandbox, their webhook endpoints trusting one secret, the
//! sandbox's webhooks delivered through a relay that forwards each delivery to a random replica
//! (or to the one a test chooses) and notes when it arrived; watch streams recorded with the
//! arrival time of every event, reconnecting as a client would; and the judge of what a stream
//! showed: each cash-in's states in lifecycle order, never a terminal state left.

use crate::common;
use crate::replicas::{RedisServer, Replica, SECRET};
use oms_gateway::proto::v1 as pb;
use oms_sandbox::{SandboxHandle, WebhookTarget};
use pb::CashInStatus as St;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

/// The webhook signing secret of the sandbox and of every replica.
pub(crate) const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How a fleet polls: the lease TTL, `--watch-poll-interval`, and
/// `--watch-reconcile-interval` (the cadence while webhooks arrive).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cadence {
    pub lease_ttl: Duration,
    pub poll: Duration,
    pub reconcile: Duration,
}

/// Redis, the sandbox, three replicas, and the relay the sandbox sends its webhooks to.
pub(crate) struct Fleet {
    pub redis: RedisServer,
    pub sandbox: SandboxHandle,
    pub replicas: Vec<Replica>,
    pub relay: Relay,
}

impl Fleet {
    /// Starts it, and waits until every replica shares through Redis.
    pub(crate) async fn start(cadence: Cadence, extra: &[&str]) -> Fleet {
        let redis = RedisServer::start().await;
        let sandbox = common::start_remote_sandbox(SECRET).await;
        let dir = common::tls::temp_dir("fleet-webhooks");
        let secret_file = common::tls::write(&dir, "whsec", WEBHOOK_SECRET);
        let secret_file = secret_file.display().to_string();
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let reconcile = ms(cadence.reconcile);
        let mut args = vec![
            "--webhook-secret-file",
            &secret_file,
            "--watch-reconcile-interval",
            &reconcile,
        ];
        args.extend_from_slice(extra);
        let mut replicas = Vec::new();
        for _ in 0..3 {
            let replica =
                Replica::launch(&sandbox, &redis, cadence.lease_ttl, cadence.poll, &args).await;
            replicas.push(replica);
        }
        crate::replicas::all_share(&replicas).await;
        let targets = replicas
            .iter()
            .map(|r| {
                let admin = r.admin_addr().expect("the admin listener's startup line");
                Some(format!("http://{admin}/webhooks/oms"))
            })
            .collect();
        let relay = Relay::start(targets).await;
        sandbox.set_webhooks(Some(WebhookTarget {
            url: relay.url(),
            secret: WEBHOOK_SECRET.to_owned(),
            faults: Default::default(),
        }));
        Fleet {
            redis,
            sandbox,
            replicas,
            relay,
        }
    }

    pub(crate) fn channels(&self) -> Vec<Channel> {
        self.replicas.iter().map(|r| r.channel.clone()).collect()
    }
}

// === the webhook relay ===

/// One delivery the relay forwarded: when it came, the event, its cash-in, to which replica,
/// and what that replica answered (0: no answer).
#[derive(Clone, Debug)]
pub(crate) struct Forwarded {
    pub at: Instant,
    pub event: String,
    pub cash_in: String,
    pub replica: usize,
    pub status: u16,
}

#[derive(Default)]
struct RelayState {
    /// Each replica's webhook URL; `None` once it is gone.
    targets: Vec<Option<String>>,
    /// Every delivery to this replica; `None`: each to a random live replica.
    route: Option<usize>,
    forwarded: Vec<Forwarded>,
}

/// An HTTP server on loopback that stands between the sandbox's webhook sender and the
/// replicas, as a load balancer does: each delivery goes, headers and body untouched, to a
/// random replica (or the one chosen with [`Relay::route_to`]); the replica's status is the
/// answer, so a refused delivery is retried by the sandbox.
#[derive(Clone)]
pub(crate) struct Relay {
    state: Arc<Mutex<RelayState>>,
    addr: std::net::SocketAddr,
}

impl Relay {
    async fn start(targets: Vec<Option<String>>) -> Relay {
        use axum::routing::post;
        let state = Arc::new(Mutex::new(RelayState {
            targets,
            ..RelayState::default()
        }));
        let http = reqwest::Client::new();
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/webhooks/oms",
            post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                forward(shared.clone(), http.clone(), headers, body)
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Relay { state, addr }
    }

    fn url(&self) -> String {
        format!("http://{}/webhooks/oms", self.addr)
    }

    /// Every delivery from now on to `replica` (`None`: each to a random live replica).
    pub(crate) fn route_to(&self, replica: Option<usize>) {
        self.state.lock().unwrap().route = replica;
    }

    /// No delivery to `replica` any more (it is stopping).
    pub(crate) fn forget(&self, replica: usize) {
        self.state.lock().unwrap().targets[replica] = None;
    }

    /// Every delivery so far.
    pub(crate) fn forwarded(&self) -> Vec<Forwarded> {
        self.state.lock().unwrap().forwarded.clone()
    }
}

async fn forward(
    state: Arc<Mutex<RelayState>>,
    http: reqwest::Client,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> http::StatusCode {
    let at = Instant::now();
    let (replica, url) = {
        let state = state.lock().unwrap();
        let live: Vec<usize> = (0..state.targets.len())
            .filter(|&n| state.targets[n].is_some())
            .collect();
        let Some(&random) = live.get(fastrand::usize(..live.len().max(1))) else {
            return http::StatusCode::SERVICE_UNAVAILABLE;
        };
        let replica = state.route.filter(|r| live.contains(r)).unwrap_or(random);
        (replica, state.targets[replica].clone().unwrap_or_default())
    };
    let mut request = http
        .post(url)
        .timeout(Duration::from_secs(5))
        .body(body.clone());
    for name in [
        "content-type",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    let status = match request.send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let event = json["event"].as_str().unwrap_or_default().to_owned();
    let data = &json["data"];
    let cash_in = data["cashIn"].as_str().or(data["id"].as_str());
    state.lock().unwrap().forwarded.push(Forwarded {
        at,
        event,
        cash_in: cash_in.unwrap_or_default().to_owned(),
        replica,
        status,
    });
    http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY)
}

// === the lifecycle behind the gateway's back ===

/// The sandbox's deposit at the counter (pending → processing) with the code in force.
pub(crate) async fn authorize(
    behind: &common::sandbox_rest::SandboxRest,
    sandbox: &SandboxHandle,
    id: &str,
) -> String {
    let current = sandbox.cash_in_json(id).expect("the cash-in");
    let code = current["depositInstructions"]["code"].clone();
    let auth = behind
        .post(
            "/cash-ins/simulate/barcode-auth",
            Some(serde_json::json!({"accountNumber": code, "amount": "150.00"})),
        )
        .await;
    auth["confirmationId"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The commit (processing → completed).
pub(crate) async fn commit(
    behind: &common::sandbox_rest::SandboxRest,
    sandbox: &SandboxHandle,
    id: &str,
    confirmation: &str,
) {
    let current = sandbox.cash_in_json(id).expect("the cash-in");
    let code = current["depositInstructions"]["code"].clone();
    behind
        .post(
            "/cash-ins/simulate/auth-commit",
            Some(serde_json::json!({
                "accountNumber": code,
                "accountReferenceNumber": id,
                "amount": "150.00",
                "originalConfirmationId": confirmation,
            })),
        )
        .await;
}

// === recorded streams ===

/// What a stream watches.
#[derive(Clone, Debug)]
pub(crate) enum Watched {
    CashIn(String),
    /// A customer's cash-ins; `pending_only`: with the filter `statuses: [PENDING]`.
    Customer {
        id: String,
        pending_only: bool,
    },
}

/// One event as it arrived.
#[derive(Clone, Debug)]
pub(crate) struct Arrival {
    pub at: Instant,
    pub event: pb::CashInEvent,
}

/// A watch stream read in the background, every event but heartbeats kept with its arrival
/// time. It reconnects (to the same replica) when it fails or, for a customer, ends, as a
/// client would: what a reconnected stream shows is judged with what the first showed.
pub(crate) struct Recorded {
    pub name: String,
    pub replica: usize,
    pub watched: Watched,
    pub arrivals: Arc<Mutex<Vec<Arrival>>>,
    /// Failures and unexpected ends, each followed by a reconnect.
    pub reconnects: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorded {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorded {
    /// Starts reading `watched` on replica number `replica` over `channel`.
    pub(crate) fn start(replica: usize, channel: Channel, watched: Watched) -> Recorded {
        let name = match &watched {
            Watched::CashIn(id) => format!("replica {replica}'s WatchCashIn({id})"),
            Watched::Customer { id, pending_only } => format!(
                "replica {replica}'s WatchCashIns({id}{})",
                if *pending_only { ", [PENDING]" } else { "" }
            ),
        };
        let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
        let reconnects = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(read(
            channel,
            watched.clone(),
            arrivals.clone(),
            reconnects.clone(),
        ));
        Recorded {
            name,
            replica,
            watched,
            arrivals,
            reconnects,
            task,
        }
    }

    pub(crate) fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// The first arrival (from `since` on) of an event about `id` that `matches`.
    pub(crate) fn first(
        &self,
        id: &str,
        since: Instant,
        matches: impl Fn(&pb::CashIn, &pb::CashInEvent) -> bool,
    ) -> Option<Instant> {
        let arrivals = self.arrivals.lock().unwrap();
        arrivals
            .iter()
            .filter(|a| a.at >= since)
            .find(|a| {
                a.event
                    .cash_in
                    .as_ref()
                    .is_some_and(|c| c.id == id && matches(c, &a.event))
            })
            .map(|a| a.at)
    }
}

async fn read(
    channel: Channel,
    watched: Watched,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    reconnects: Arc<AtomicUsize>,
) {
    let mut client = pb::cash_in_service_client::CashInServiceClient::new(channel);
    loop {
        let opened = match &watched {
            Watched::CashIn(id) => {
                // The fleet tests judge the cash-in layer (deliveries.rs: both layers).
                let request = pb::WatchCashInRequest {
                    cash_in_id: id.clone(),
                    cash_in_only: true,
                };
                client.watch_cash_in(request).await
            }
            Watched::Customer { id, pending_only } => {
                let statuses = if *pending_only {
                    vec![St::Pending as i32]
                } else {
                    vec![]
                };
                let request = pb::WatchCashInsRequest {
                    customer_id: id.clone(),
                    statuses,
                    cash_in_only: true,
                };
                client.watch_cash_ins(request).await
            }
        };
        if let Ok(stream) = opened {
            let mut stream = stream.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(event)) => {
                        if event.r#type != pb::CashInEventType::Heartbeat as i32 {
                            let at = Instant::now();
                            arrivals.lock().unwrap().push(Arrival { at, event });
                        }
                    }
                    // A WatchCashIn ends with OK after its terminal state: done.
                    Ok(None) if matches!(watched, Watched::CashIn(_)) => return,
                    Ok(None) | Err(_) => break,
                }
            }
        }
        reconnects.fetch_add(1, Ordering::Relaxed);
        sleep(Duration::from_millis(200)).await;
    }
}

// === judging what a stream showed ===

/// A status's place in the lifecycle: pending, then processing, then a terminal state.
pub(crate) fn rank(status: i32) -> u8 {
    match St::try_from(status) {
        Ok(St::Pending) => 0,
        Ok(St::Processing) => 1,
        Ok(St::Completed | St::Failed | St::Expired) => 2,
        _ => 0,
    }
}

pub(crate) fn status_name(status: i32) -> &'static str {
    match St::try_from(status) {
        Ok(St::Pending) => "PENDING",
        Ok(St::Processing) => "PROCESSING",
        Ok(St::Completed) => "COMPLETED",
        Ok(St::Failed) => "FAILED",
        Ok(St::Expired) => "EXPIRED",
        _ => "UNSPECIFIED",
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::CashInEventType::try_from(kind) {
        Ok(pb::CashInEventType::Initial) => "INITIAL",
        Ok(pb::CashInEventType::Changed) => "CHANGED",
        Ok(pb::CashInEventType::Added) => "ADDED",
        _ => "?",
    }
}

/// Every place where `stream` showed a cash-in going back in its lifecycle (a lower status
/// after a higher one) or leaving a terminal state, each with the states the stream showed for
/// that cash-in in order (`+s` since `origin`), e.g. `EXPIRED@+4.1s CHANGED ... PENDING@+4.9s
/// ADDED`.
pub(crate) fn reorderings(stream: &Recorded, origin: Instant) -> Vec<String> {
    let mut history: HashMap<String, Vec<(i32, i32, Instant)>> = HashMap::new();
    let mut found = Vec::new();
    for arrival in stream.arrivals() {
        let Some(cash_in) = &arrival.event.cash_in else {
            continue;
        };
        let seen = history.entry(cash_in.id.clone()).or_default();
        let highest = seen.iter().map(|(s, _, _)| *s).max_by_key(|s| rank(*s));
        let went_back = highest.is_some_and(|h| {
            rank(cash_in.status) < rank(h) || (rank(h) == 2 && cash_in.status != h)
        });
        seen.push((cash_in.status, arrival.event.r#type, arrival.at));
        if went_back {
            let states: Vec<String> = seen
                .iter()
                .map(|(s, kind, at)| {
                    format!(
                        "{}@+{:.2}s {}",
                        status_name(*s),
                        at.duration_since(origin).as_secs_f64(),
                        kind_name(*kind)
                    )
                })
                .collect();
            found.push(format!(
                "{} showed {} going back: {}",
                stream.name,
                cash_in.id,
                states.join(" → ")
            ));
        }
    }
    found
}

/// The wall-clock time an event says its state was observed at.
pub(crate) fn observed_at(event: &pb::CashInEvent) -> Option<SystemTime> {
    let at = event.observed_at.as_ref()?;
    let since = Duration::new(at.seconds.try_into().ok()?, at.nanos.try_into().ok()?);
    Some(SystemTime::UNIX_EPOCH + since)
}

/// A cash-in's deposit code, if it shows one.
pub(crate) fn code(cash_in: &pb::CashIn) -> Option<&str> {
    cash_in
        .deposit_instructions
        .as_ref()
        .map(|d| d.code.as_str())
        .filter(|c| !c.is_empty())
}

/// The smallest, the median and the largest of `figures` (sorted here), for a closing note.
pub(crate) fn spread(figures: &mut [Duration]) -> String {
    if figures.is_empty() {
        return "none".into();
    }
    figures.sort();
    format!(
        "min {:?} / median {:?} / max {:?} (n={})",
        figures[0],
        figures[figures.len() / 2],
        figures[figures.len() - 1],
        figures.len()
    )
}
