//! Replicas that act as one (`--redis-url`): three built `oms-gateway` processes sharing one
//! real `redis-server` (started here, on a free loopback port, no persistence) in front of ONE
//! sandbox started in this process, so every upstream request is counted in its journal.
//! Without `redis-server` on PATH each test prints that it was skipped, and why, and passes;
//! under CI (`CI=true`) it fails instead.

use crate::common;
use oms_gateway::proto::v1 as pb;
use oms_sandbox::{FaultPlan, SandboxHandle};
use pb::cash_in_service_client::CashInServiceClient;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;
use tonic_health::ServingStatus;

/// Prints past the test harness's capture, so CI logs show the figures and the skips.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
pub(crate) use say;

pub(crate) const SECRET: &str = "replicas-test-secret";
/// Short enough that the handover tests run in seconds.
const LEASE_TTL: Duration = Duration::from_secs(1);
const POLL_INTERVAL: Duration = Duration::from_millis(300);

/// Whether `redis-server` can run here; if not, says so (the test then passes, skipped). Under
/// CI (`CI` set to anything but `false` or empty) a missing redis-server fails the test instead:
/// a skip there would hide ten tests behind a green run.
pub(crate) fn redis_missing(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let under_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        found || !under_ci,
        "{test}: redis-server is not on PATH and CI is set: the multi-replica tests must run \
         under CI (.ci/run installs the Debian package redis-server)"
    );
    if !found {
        say!(
            "{test}: skipped: redis-server is not on PATH (install the Debian package \
             redis-server, as .ci/run does, to run the multi-replica tests)"
        );
    }
    !found
}

/// A redis-server of this test: loopback, no persistence, its own temp dir. Killed on drop.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// A one-node Redis Cluster owning every slot, for `--redis-cluster`.
    cluster: bool,
    /// TLS only (`rediss://`): the CA file that signed its certificate.
    tls_ca: Option<PathBuf>,
}

impl RedisServer {
    pub(crate) async fn start() -> Self {
        Self::start_with(false).await
    }

    async fn start_with(cluster: bool) -> Self {
        let port = common::free_port();
        let dir = std::env::temp_dir().join(format!("oms-gateway-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = Self {
            port,
            dir,
            child: None,
            cluster,
            tls_ca: None,
        };
        server.spawn().await;
        server
    }

    /// A server not started yet (its port is free): a Redis that is down.
    fn not_started() -> Self {
        let port = common::free_port();
        let dir = std::env::temp_dir().join(format!("oms-gateway-redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        Self {
            port,
            dir,
            child: None,
            cluster: false,
            tls_ca: None,
        }
    }

    /// A TLS-only server (plaintext port off), its certificate signed by a throwaway CA.
    async fn start_tls() -> Self {
        let mut server = Self::not_started();
        let ca = common::tls::Ca::new("redis test CA");
        let pem = ca.server();
        let ca_file = common::tls::write(&server.dir, "ca.pem", &ca.pem);
        common::tls::write(&server.dir, "redis.pem", &pem.cert);
        common::tls::write(&server.dir, "redis.key", &pem.key);
        server.tls_ca = Some(ca_file);
        server.spawn().await;
        server
    }

    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::Client {
        match &self.tls_ca {
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).expect("CA file")),
                },
            )
            .expect("redis url"),
            None => redis::Client::open(self.url()).expect("redis url"),
        }
    }

    fn port_args(&self) -> Vec<String> {
        let port = self.port.to_string();
        let Some(ca) = &self.tls_ca else {
            return vec!["--port".into(), port];
        };
        let file = |name: &str| self.dir.join(name).display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port,
            "--tls-cert-file".into(),
            file("redis.pem"),
            "--tls-key-file".into(),
            file("redis.key"),
            "--tls-ca-cert-file".into(),
            ca.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(self.port_args())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(if self.cluster {
                &["--cluster-enabled", "yes"][..]
            } else {
                &[][..]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let client = self.client();
        common::eventually(
            Duration::from_secs(10),
            "redis-server answers",
            async || match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok(),
                Err(_) => false,
            },
        )
        .await;
        if self.cluster {
            let mut conn = self.conn().await;
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(0)
                .arg(16383)
                .query_async(&mut conn)
                .await
                .expect("CLUSTER ADDSLOTSRANGE");
            common::eventually(Duration::from_secs(10), "cluster_state:ok", async || {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            })
            .await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the running server.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running redis-server").id();
        signal_process(pid, signal);
    }

    /// Stalls the server (SIGSTOP): connections stay open, nothing is answered.
    pub(crate) fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a stalled server go on (SIGCONT): it answers what was queued, in order.
    pub(crate) fn resume(&self) {
        self.signal("CONT");
    }

    /// Kills the server (stalled or not) and starts an empty one on the same port.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server")
    }
}

/// `kill -<signal> <pid>`, which must succeed.
pub(crate) fn signal_process(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(sent, "kill -{signal} {pid}");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `oms-gateway` process of the fleet. Killed on drop.
pub struct Replica {
    child: Option<Child>,
    log: PathBuf,
    pub channel: Channel,
}

impl Replica {
    async fn start(sandbox: &SandboxHandle, redis: &RedisServer, extra: &[&str]) -> Self {
        Self::launch(sandbox, redis, LEASE_TTL, POLL_INTERVAL, extra).await
    }

    /// A replica with this lease TTL and poll interval (and `extra` flags), once SERVING.
    pub(crate) async fn launch(
        sandbox: &SandboxHandle,
        redis: &RedisServer,
        lease_ttl: Duration,
        poll_interval: Duration,
        extra: &[&str],
    ) -> Self {
        let port = common::free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("oms-gateway-replica-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_oms-gateway"))
            .args(["--listen", &addr, "--log-level", "info"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--oms-base-url", &sandbox.base_url()])
            .args(["--oms-api-key", common::REMOTE_API_KEY])
            .env("OMS_API_SECRET", SECRET)
            // rediss:// trusts the system's roots; a test Redis's CA is added the usual way.
            .envs(redis.tls_ca.as_ref().map(|ca| ("SSL_CERT_FILE", ca)))
            .args(["--redis-url", &redis.url()])
            .args(
                (!extra.contains(&"--redis-lease-ttl"))
                    .then(|| {
                        [
                            "--redis-lease-ttl".into(),
                            format!("{}ms", lease_ttl.as_millis()),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .args([
                "--watch-poll-interval",
                &format!("{}ms", poll_interval.as_millis()),
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the built gateway");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect_lazy();
        let replica = Self {
            child: Some(child),
            log,
            channel,
        };
        common::eventually(Duration::from_secs(30), "a replica SERVING", async || {
            replica.health().await == Some(ServingStatus::Serving as i32)
        })
        .await;
        replica
    }

    async fn health(&self) -> Option<i32> {
        common::health_check(&self.channel, "").await.ok()
    }

    /// Creates a cash-in through this replica with idempotency key `key`; its id.
    pub(crate) async fn created(&self, location: &pb::CashLocation, key: &str) -> String {
        self.cash_ins()
            .create_cash_in(create(location, key))
            .await
            .expect("create")
            .into_inner()
            .cash_in
            .expect("cash_in")
            .id
    }

    pub(crate) fn cash_ins(&self) -> CashInServiceClient<Channel> {
        CashInServiceClient::new(self.channel.clone())
    }

    /// Sends `signal` (`TERM`, …) to the replica's process.
    pub(crate) fn signal(&self, signal: &str) {
        signal_process(self.child.as_ref().expect("running").id(), signal);
    }

    /// The id this replica names its leases with (its startup line).
    pub(crate) fn replica_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let at = text.find("replica=")? + "replica=".len();
        Some(
            text[at..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect(),
        )
    }

    /// Whether this replica's `/readyz` says `redis: up`, i.e. it shares state with the fleet.
    pub(crate) async fn shares_through_redis(&self, http: &reqwest::Client) -> bool {
        let Some(admin) = self.admin_addr() else {
            return false;
        };
        let Ok(answer) = http.get(format!("http://{admin}/readyz")).send().await else {
            return false;
        };
        answer
            .text()
            .await
            .is_ok_and(|body| body.contains("redis: up"))
    }

    /// This replica's `/metrics`, in the Prometheus text format.
    async fn metrics(&self, http: &reqwest::Client) -> String {
        let admin = self
            .admin_addr()
            .expect("the admin listener's startup line");
        let answer = http.get(format!("http://{admin}/metrics")).send().await;
        answer
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// What this replica has logged so far (info and above, text).
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin listener's address (its startup line: `admin listener … addr=127.0.0.1:N`).
    pub(crate) fn admin_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let line = text.lines().find(|l| l.contains("admin listener"))?;
        let at = line.find("addr=")? + "addr=".len();
        Some(line[at..].split_whitespace().next()?.to_owned())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a rolling deploy stops a replica; waits (at most `limit`) for the process
    /// to exit, and says how long it took (`None`: still running, then killed).
    pub(crate) async fn terminate(&mut self, limit: Duration) -> Option<Duration> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        signal_process(child.id(), "TERM");
        while started.elapsed() < limit {
            if child.try_wait().ok().flatten().is_some() {
                return Some(started.elapsed());
            }
            sleep(Duration::from_millis(10)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Redis, one sandbox, three replicas; and waits until the replicas see Redis (shared mode).
pub(crate) async fn fleet(extra: &[&str]) -> (RedisServer, SandboxHandle, Vec<Replica>) {
    fleet_on(RedisServer::start().await, extra).await
}

async fn fleet_on(
    redis: RedisServer,
    extra: &[&str],
) -> (RedisServer, SandboxHandle, Vec<Replica>) {
    let sandbox = common::start_remote_sandbox(SECRET).await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&sandbox, &redis, extra).await);
    }
    all_share(&replicas).await;
    (redis, sandbox, replicas)
}

/// Waits until every replica says it shares through Redis (they PING it every 500 ms first).
pub(crate) async fn all_share(replicas: &[Replica]) {
    let http = reqwest::Client::new();
    for replica in replicas {
        common::eventually(
            Duration::from_secs(30),
            "a replica sharing through Redis",
            async || replica.shares_through_redis(&http).await,
        )
        .await;
    }
}

fn posts(sandbox: &SandboxHandle) -> usize {
    common::api_requests(sandbox)
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .count()
}

fn gets_of(sandbox: &SandboxHandle, id: &str) -> usize {
    let path = format!("/cash-ins/{id}");
    common::api_requests(sandbox)
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

pub(crate) fn create(location: &pb::CashLocation, key: &str) -> pb::CreateCashInRequest {
    pb::CreateCashInRequest {
        idempotency_key: key.to_owned(),
        ..common::create_request(location, "cst_replicas")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_with_one_key_over_three_replicas_make_one_upstream_post() {
    if redis_missing("fifty_concurrent_creates") {
        return;
    }
    let (redis, sandbox, replicas) = fleet(&[]).await;
    fifty_creates_with_one_key(&redis, &sandbox, &replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_fifty_concurrent_creates_with_one_key_make_one_upstream_post() {
    if redis_missing("on_a_redis_cluster") {
        return;
    }
    let redis = RedisServer::start_with(true).await;
    let (redis, sandbox, replicas) = fleet_on(redis, &["--redis-cluster"]).await;
    fifty_creates_with_one_key(&redis, &sandbox, &replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_fifty_concurrent_creates_with_one_key_make_one_upstream_post() {
    if redis_missing("over_tls") {
        return;
    }
    let redis = RedisServer::start_tls().await;
    let (redis, sandbox, replicas) = fleet_on(redis, &[]).await;
    assert!(redis.url().starts_with("rediss://"));
    fifty_creates_with_one_key(&redis, &sandbox, &replicas).await;
}

/// 50 concurrent creates with one key spread over the replicas: one POST, one cash-in, every
/// caller the same answer; then the key with another request is refused everywhere.
async fn fifty_creates_with_one_key(
    redis: &RedisServer,
    sandbox: &SandboxHandle,
    replicas: &[Replica],
) {
    let location = common::first_location(&replicas[0].channel).await;
    // Slow enough that all fifty arrive while the first is in flight.
    sandbox.set_fault_plan("latency=1:400ms-400ms".parse::<FaultPlan>().unwrap());
    let mut tasks = Vec::new();
    for n in 0..50 {
        let mut client = replicas[n % 3].cash_ins();
        let request = create(&location, "one-key-for-fifty");
        tasks.push(tokio::spawn(
            async move { client.create_cash_in(request).await },
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let response = task.await.unwrap().expect("CreateCashIn");
        ids.insert(response.into_inner().cash_in.expect("cash_in").id);
    }
    let upstream_posts = posts(sandbox);
    say!("50 concurrent creates, one key, three replicas: {upstream_posts} upstream POST(s)");
    assert_eq!(ids.len(), 1, "every caller got the same cash-in");
    assert_eq!(upstream_posts, 1, "one upstream POST /cash-ins");
    assert_eq!(sandbox.cash_in_count(), 1, "one cash-in");

    // The same key with another request is refused on every replica, without going upstream.
    let mut other = create(&location, "one-key-for-fifty");
    other.customer_id = "cst_someone_else".into();
    for replica in replicas {
        let status = replica
            .cash_ins()
            .create_cash_in(other.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert_eq!(common::error_info(&status).reason, "IDEMPOTENCY_KEY_REUSED");
    }
    assert_eq!(posts(sandbox), 1);

    // What one stored outcome costs in Redis.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("oms-gateway:idem:*:done")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let value: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    say!(
        "Redis memory per stored outcome (MEMORY USAGE of one created cash-in): {bytes} bytes ({} bytes of value)",
        value.len()
    );
    assert!(bytes > 0);
}

/// Expires `id` at the sandbox itself (REST, as OMS's own back office would), so only the
/// replicas' pollers can bring the change to their streams.
async fn expire_at_the_sandbox(sandbox: &SandboxHandle, id: &str) {
    common::sandbox_rest::SandboxRest::new(sandbox)
        .await
        .post(&format!("/sandbox/cash-ins/{id}/expire"), None)
        .await;
}

/// A watch stream of `id` on `replica`, as a task that returns the first EXPIRED state's
/// arrival time, or what ended the stream otherwise.
fn watch_until_expired(
    replica: &Replica,
    id: &str,
) -> tokio::task::JoinHandle<Result<Instant, String>> {
    let mut client = replica.cash_ins();
    let request = pb::WatchCashInRequest {
        cash_in_id: id.to_owned(),
        ..Default::default()
    };
    tokio::spawn(async move {
        let mut stream = client
            .watch_cash_in(request)
            .await
            .map_err(|s| format!("{s:?}"))?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    let status = event.cash_in.map(|c| c.status);
                    if status == Some(pb::CashInStatus::Expired as i32) {
                        return Ok(Instant::now());
                    }
                }
                Ok(None) => return Err("the stream ended before EXPIRED".into()),
                Err(status) => return Err(format!("the stream failed: {status:?}")),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_creates_at_thirty_percent_faults_over_three_replicas_make_a_thousand_cash_ins()
{
    if redis_missing("a_thousand_creates") {
        return;
    }
    let (_redis, sandbox, replicas) = fleet(&[]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let faults = "seed=12,500=0.05,502=0.05,503=0.08,504=0.02,reset_before=0.05,reset_after=0.05";
    sandbox.set_fault_plan(faults.parse::<FaultPlan>().unwrap());
    let clients: Vec<_> = replicas.iter().map(Replica::cash_ins).collect();
    let started = Instant::now();
    let (next, ids) = (
        std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new())),
    );
    let mut workers = Vec::new();
    for _ in 0..24 {
        let (clients, next, ids, location) =
            (clients.clone(), next.clone(), ids.clone(), location.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= 1000 {
                    return;
                }
                // A caller retrying a failed create with the same key, on whichever replica the
                // balancer picks next.
                for attempt in 0..40 {
                    let mut client = clients[(n + attempt) % 3].clone();
                    let mut request = tonic::Request::new(create(&location, &format!("k-{n}")));
                    request.set_timeout(Duration::from_secs(10));
                    if let Ok(response) = client.create_cash_in(request).await {
                        let id = response.into_inner().cash_in.expect("cash_in").id;
                        ids.lock().unwrap().insert(n, id);
                        break;
                    }
                }
            }
        }));
    }
    let all = async {
        for worker in workers {
            worker.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(240), all)
        .await
        .expect("the load finishes in time");
    let ids = ids.lock().unwrap().clone();
    let distinct: std::collections::HashSet<_> = ids.values().collect();
    let stats = sandbox.fault_stats();
    say!(
        "1,000 creates (distinct keys) at ~30 % faults over three replicas in {:?}: {} upstream POSTs, {} cash-ins, faults {stats:?}",
        started.elapsed(),
        posts(&sandbox),
        sandbox.cash_in_count()
    );
    assert_eq!(ids.len(), 1000, "every create succeeded within 40 attempts");
    assert_eq!(distinct.len(), 1000, "one cash-in per key");
    assert_eq!(
        sandbox.cash_in_count(),
        1000,
        "exactly 1,000 cash-ins upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_watchers_of_one_cash_in_over_three_replicas_cost_one_upstream_get_per_interval() {
    if redis_missing("thirty_watchers") {
        return;
    }
    let (_redis, sandbox, replicas) = fleet(&[]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let id = replicas[0].created(&location, "watched").await;
    let watchers: Vec<_> = (0..30)
        .map(|n| watch_until_expired(&replicas[n % 3], &id))
        .collect();
    // Let every stream open and the pollers settle on one holder.
    sleep(Duration::from_secs(1)).await;
    let before = gets_of(&sandbox, &id);
    let window = Duration::from_secs(6);
    sleep(window).await;
    let gets = gets_of(&sandbox, &id) - before;
    let intervals = window.as_secs_f64() / POLL_INTERVAL.as_secs_f64();
    say!(
        "30 watchers of one cash-in over three replicas: {gets} upstream GETs in {window:?} ({intervals:.0} poll intervals; one poller per replica would make {:.0})",
        intervals * 3.0
    );
    assert!(
        (gets as f64) <= intervals * 1.2 + 1.0,
        "{gets} GETs in {intervals:.0} intervals: more than one poller fleet-wide"
    );
    assert!(
        (gets as f64) >= intervals * 0.3,
        "{gets} GETs: nobody polls"
    );
    // And every stream, whatever its replica, sees the change the one poller found.
    expire_at_the_sandbox(&sandbox, &id).await;
    for watcher in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(5), watcher).await;
        seen.expect("EXPIRED in time").unwrap().expect("EXPIRED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_replica_that_polls_moves_the_poller_within_lease_ttl_and_an_interval() {
    if redis_missing("killing_the_replica_that_polls") {
        return;
    }
    let (redis, sandbox, mut replicas) = fleet(&[]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let id = replicas[0].created(&location, "handover").await;
    let watchers: Vec<_> = (0..9)
        .map(|n| (n % 3, watch_until_expired(&replicas[n % 3], &id)))
        .collect();
    sleep(Duration::from_secs(1)).await;
    let lease: String = redis::cmd("GET")
        .arg(format!("oms-gateway:watch:{{cash-in:{id}}}:lease"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("a poller holds the lease");
    let holder = replicas
        .iter()
        .position(|r| r.replica_id().is_some_and(|rid| lease.starts_with(&rid)))
        .expect("the holder is one of the three");
    replicas[holder].kill();
    expire_at_the_sandbox(&sandbox, &id).await;
    let changed = Instant::now();
    let bound = LEASE_TTL + POLL_INTERVAL;
    for (replica, watcher) in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("the stream ends in time")
            .unwrap();
        if replica == holder {
            continue;
        }
        let took = seen.expect("EXPIRED on a surviving replica") - changed;
        say!("killed the polling replica: a surviving stream saw the change after {took:?}");
        // The bound, plus one poll's own time and this machine's scheduling (2 shared cores).
        assert!(
            took <= bound + Duration::from_secs(1),
            "{took:?} > lease TTL + interval ({bound:?})"
        );
    }
    // The change came through a survivor that took the lease over, not through pollers of its
    // own on every replica: the survivor polled, published EXPIRED, and let the lease go (a
    // terminal cash-in is polled no more); whoever holds it, if anyone, is a survivor.
    let lease: Option<String> = redis::cmd("GET")
        .arg(format!("oms-gateway:watch:{{cash-in:{id}}}:lease"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("GET");
    if let Some(lease) = lease {
        let survivor = replicas
            .iter()
            .position(|r| r.replica_id().is_some_and(|rid| lease.starts_with(&rid)));
        assert!(
            survivor.is_some_and(|s| s != holder),
            "the lease moved to a survivor"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_redis_under_load_ends_no_stream_and_duplicates_no_cash_in() {
    if redis_missing("restarting_redis") {
        return;
    }
    let (mut redis, sandbox, replicas) = fleet(&["--watch-heartbeat-interval", "1s"]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let id = replicas[0].created(&location, "survivor").await;
    let watchers: Vec<_> = (0..9)
        .map(|n| watch_until_expired(&replicas[n % 3], &id))
        .collect();
    let clients: Vec<_> = replicas.iter().map(Replica::cash_ins).collect();
    let load = {
        let (clients, location) = (clients.clone(), location.clone());
        tokio::spawn(async move {
            let mut keys = 0usize;
            let until = Instant::now() + Duration::from_secs(7);
            while Instant::now() < until {
                // Each key twice, on two replicas: the second must get the first's cash-in.
                let request = create(&location, &format!("load-{keys}"));
                let first = clients[keys % 3]
                    .clone()
                    .create_cash_in(request.clone())
                    .await;
                let again = clients[(keys + 1) % 3]
                    .clone()
                    .create_cash_in(request)
                    .await;
                let id = |r: Result<tonic::Response<pb::CreateCashInResponse>, _>| {
                    r.expect("CreateCashIn")
                        .into_inner()
                        .cash_in
                        .expect("cash_in")
                        .id
                };
                assert_eq!(id(first), id(again), "key load-{keys} made two cash-ins");
                keys += 1;
            }
            keys
        })
    };
    sleep(Duration::from_secs(2)).await;
    let http = reqwest::Client::new();
    let up = common::prometheus::value(
        &replicas[0].metrics(&http).await,
        "oms_gateway_redis_up",
        &[],
    );
    assert_eq!(up, 1.0, "Redis answers before it is killed");
    redis.kill();
    sleep(Duration::from_secs(2)).await;
    for replica in &replicas {
        assert_eq!(replica.health().await, Some(ServingStatus::Serving as i32));
        // The outage is counted where an operator looks.
        let metrics = replica.metrics(&http).await;
        assert_eq!(
            common::prometheus::value(&metrics, "oms_gateway_redis_up", &[]),
            0.0
        );
        for family in [
            "oms_gateway_redis_errors_total",
            "oms_gateway_redis_fallbacks_total",
        ] {
            let count = common::prometheus::value(&metrics, family, &[]);
            assert!(count >= 1.0, "{family}: {count}");
        }
    }
    redis.spawn().await;
    let keys = load.await.expect("the load ran without a failure");
    // Back in shared mode, the streams still follow the cash-in.
    sleep(Duration::from_secs(2)).await;
    expire_at_the_sandbox(&sandbox, &id).await;
    for watcher in watchers {
        let seen = tokio::time::timeout(Duration::from_secs(5), watcher).await;
        seen.expect("EXPIRED in time")
            .unwrap()
            .expect("the stream lived through the Redis restart");
    }
    say!(
        "Redis killed and restarted under load: {keys} keys created twice each, {} cash-ins, {} upstream POSTs",
        sandbox.cash_in_count(),
        posts(&sandbox)
    );
    assert_eq!(sandbox.cash_in_count(), keys + 1, "no duplicate cash-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_budget_caps_the_whole_fleet_not_each_replica() {
    if redis_missing("the_poll_budget") {
        return;
    }
    let (_redis, sandbox, replicas) = fleet(&["--watch-max-polls-per-second", "4"]).await;
    let location = common::first_location(&replicas[0].channel).await;
    // Twelve cash-ins, each watched on one replica only: every replica polls four of its own.
    let mut ids = Vec::new();
    for n in 0..12 {
        let cash_in = replicas[0]
            .cash_ins()
            .create_cash_in(create(&location, &format!("budget-{n}")))
            .await
            .expect("create")
            .into_inner()
            .cash_in
            .expect("cash_in");
        ids.push(cash_in.id);
    }
    let _watchers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| watch_until_expired(&replicas[n % 3], id))
        .collect();
    sleep(Duration::from_secs(1)).await;
    let count = |sandbox: &SandboxHandle| ids.iter().map(|id| gets_of(sandbox, id)).sum::<usize>();
    let before = count(&sandbox);
    let window = Duration::from_secs(5);
    sleep(window).await;
    let gets = count(&sandbox) - before;
    let per_second = gets as f64 / window.as_secs_f64();
    say!(
        "fleet budget 4/s, 12 watched cash-ins on three replicas: {gets} upstream GETs in {window:?} ({per_second:.1}/s; each replica's own budget would allow 12/s)"
    );
    assert!(
        per_second <= 4.0 * 1.25 + 0.5,
        "{per_second:.1}/s > the fleet's 4/s"
    );
    assert!(per_second >= 1.5, "{per_second:.1}/s: the pollers starve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_redis_is_down_at_start_serves_alone_then_shares_once_redis_is_up() {
    if redis_missing("a_replica_whose_redis_is_down") {
        return;
    }
    let mut redis = RedisServer::not_started();
    let sandbox = common::start_remote_sandbox(SECRET).await;
    // It starts, turns SERVING and creates with Redis unreachable.
    let replica = Replica::start(&sandbox, &redis, &[]).await;
    let location = common::first_location(&replica.channel).await;
    replica
        .cash_ins()
        .create_cash_in(create(&location, "while-redis-is-down"))
        .await
        .expect("CreateCashIn without Redis");
    redis.spawn().await;
    let mut conn = redis.conn().await;
    // Back in shared mode within the PING interval: a create leaves its outcome in Redis.
    common::eventually(
        Duration::from_secs(10),
        "an outcome stored in Redis",
        async || {
            let n = common::free_port();
            let _ = replica
                .cash_ins()
                .create_cash_in(create(&location, &format!("after-{n}")))
                .await;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("oms-gateway:idem:*:done")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            !keys.is_empty()
        },
    )
    .await;
    assert_eq!(replica.health().await, Some(ServingStatus::Serving as i32));
    let text = std::fs::read_to_string(&replica.log).unwrap_or_default();
    assert!(
        text.contains("Redis reachable"),
        "the replica says it shares again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_mid_call_loses_its_lease_and_another_finishes_the_call_once() {
    if redis_missing("a_replica_that_dies_mid_call") {
        return;
    }
    let (_redis, sandbox, mut replicas) = fleet(&[]).await;
    let location = common::first_location(&replicas[0].channel).await;
    sandbox.set_fault_plan("latency=1:1500ms-1500ms".parse::<FaultPlan>().unwrap());
    let request = create(&location, "leader-dies");
    let mut leader = replicas[0].cash_ins();
    let first = {
        let request = request.clone();
        tokio::spawn(async move { leader.create_cash_in(request).await })
    };
    sleep(Duration::from_millis(300)).await;
    replicas[0].kill();
    assert!(
        first.await.unwrap().is_err(),
        "the killed replica's caller lost its call"
    );
    sandbox.set_fault_plan(FaultPlan::default());
    // The caller retries on another replica: it waits out the dead leader's lease, then calls
    // upstream with the same key.
    let started = Instant::now();
    let mut retry = tonic::Request::new(request);
    retry.set_timeout(Duration::from_secs(10));
    let cash_in = replicas[1]
        .cash_ins()
        .create_cash_in(retry)
        .await
        .expect("the retry on another replica succeeds")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let keys: std::collections::HashSet<_> = common::api_requests(&sandbox)
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .map(|r| r.idempotency_key)
        .collect();
    say!(
        "leader killed mid-call: the retry on another replica answered after {:?}; {} upstream POSTs, {} cash-in(s)",
        started.elapsed(),
        posts(&sandbox),
        sandbox.cash_in_count()
    );
    assert_eq!(
        keys.len(),
        1,
        "every upstream attempt sent the same key: {keys:?}"
    );
    assert_eq!(sandbox.cash_in_count(), 1, "one cash-in");
    assert!(!cash_in.id.is_empty());
}

/// Watches `customer` through `replica` and collects the id of every cash-in its events carry.
fn collect_customer_events(
    replica: &Replica,
    customer: &str,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut client = replica.cash_ins();
    let request = pb::WatchCashInsRequest {
        customer_id: customer.to_owned(),
        statuses: Vec::new(),
        ..Default::default()
    };
    let into = seen.clone();
    let task = tokio::spawn(async move {
        let Ok(stream) = client.watch_cash_ins(request).await else {
            return;
        };
        let mut stream = stream.into_inner();
        while let Ok(Some(event)) = stream.message().await {
            if let Some(cash_in) = event.cash_in {
                into.lock().unwrap().push(cash_in.id);
            }
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cash_ins_of_one_customer_on_three_replicas_all_see_each_new_cash_in() {
    if redis_missing("watch_cash_ins_of_one_customer") {
        return;
    }
    let (_redis, _sandbox, replicas) = fleet(&[]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let first = replicas[0].created(&location, "customer-watched-1").await;
    // The first replica to watch holds the customer's lease and polls; the others follow the
    // observation it shares through Redis, which must carry the customer's cash-ins.
    let streams: Vec<_> = replicas
        .iter()
        .map(|replica| collect_customer_events(replica, "cst_replicas"))
        .collect();
    let saw = |id: &str| {
        let id = id.to_owned();
        let seen: Vec<_> = streams.iter().map(|(seen, _)| seen.clone()).collect();
        move || seen.iter().all(|s| s.lock().unwrap().contains(&id))
    };
    let first_seen = saw(&first);
    common::eventually(
        Duration::from_secs(10),
        "every replica's INITIAL",
        async || first_seen(),
    )
    .await;
    let second = replicas[0].created(&location, "customer-watched-2").await;
    let second_seen = saw(&second);
    common::eventually(
        Duration::from_secs(10),
        "every replica's stream to show the new cash-in",
        async || second_seen(),
    )
    .await;
    for (_, task) in streams {
        task.abort();
    }
}
