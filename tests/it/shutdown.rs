//! Graceful shutdown of the built binary under load: SIGTERM while calls
//! are in flight fails none of the calls accepted before the drain began; health turns
//! NOT_SERVING during the drain; open watch streams end with UNAVAILABLE telling clients to
//! reconnect; the process exits 0 within drain delay + grace. Run with `--nocapture` to see the
//! figures.

use crate::common;

use oms_gateway::proto::v1 as pb;
use pb::cash_in_service_client::CashInServiceClient;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};
use tonic_health::ServingStatus;

const DRAIN_DELAY: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(10);
const LOAD_TASKS: usize = 16;

/// The gateway process; killed if the test ends before it exits.
struct Gateway {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Gateway {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

async fn channel(addr: &str) -> Option<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()
}

async fn health(channel: &Channel) -> Option<i32> {
    common::health_check(channel, "").await.ok()
}

/// Starts the built binary on a free loopback port with `args` and waits (bounded) until it
/// reports SERVING.
async fn start_gateway(args: &[&str]) -> (Gateway, Channel) {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("oms-gateway-shutdown-test-{port}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_oms-gateway"))
        .args(["--listen", &addr, "--log-level", "info"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the built gateway");
    let gateway = Gateway { child, log };
    let ready_by = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(channel) = channel(&addr).await
            && health(&channel).await == Some(ServingStatus::Serving as i32)
        {
            return (gateway, channel);
        }
        assert!(
            Instant::now() < ready_by,
            "the gateway never became SERVING:\n{}",
            gateway.log_tail()
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// How the gateway exited, at most 10 s after `signal` was sent to it.
async fn exit_within_10s(gateway: &mut Gateway, signal: &str) -> std::process::ExitStatus {
    let exit_by = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = gateway.child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < exit_by,
            "still running 10 s after {signal}:\n{}",
            gateway.log_tail()
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `signal` (e.g. `-INT`) to `pid` with the system's kill(1).
fn send_signal(pid: u32, signal: &str) {
    let kill = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill {signal} {pid}");
}

/// One call of the load, and whether it started before SIGTERM was sent.
struct Outcome {
    before_signal: bool,
    code: Code,
    message: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_call_accepted_before_the_drain_and_exits_zero() {
    let (mut gateway, channel) = start_gateway(&[
        "--drain-delay",
        "1s",
        "--shutdown-grace",
        "10s",
        "--sandbox-faults",
        "latency=1:100ms-300ms",
    ])
    .await;
    let pid = gateway.child.id();

    let location = common::first_location(&channel).await;
    let create = move |n: usize| pb::CreateCashInRequest {
        idempotency_key: format!("shutdown-{n}"),
        ..common::create_request(&location, "cst_shutdown")
    };
    let cash_in = CashInServiceClient::new(channel.clone())
        .create_cash_in(create(0))
        .await
        .expect("CreateCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");

    // Watch streams open across the signal, each past its first event.
    let mut watches = Vec::new();
    for _ in 0..3 {
        let mut stream = CashInServiceClient::new(channel.clone())
            .watch_cash_in(pb::WatchCashInRequest {
                cash_in_id: cash_in.id.clone(),
                ..Default::default()
            })
            .await
            .expect("WatchCashIn")
            .into_inner();
        let first = timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("first event in time")
            .expect("first event");
        assert!(first.is_some());
        watches.push(tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return (Code::Ok, String::new(), Instant::now()),
                    Err(status) => {
                        return (status.code(), status.message().to_owned(), Instant::now());
                    }
                }
            }
        }));
    }

    // Load: creates and reads, each call tagged with whether it started before the signal.
    let signalled = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..LOAD_TASKS {
        let (signalled, stop, id) = (signalled.clone(), stop.clone(), cash_in.id.clone());
        let channel = channel.clone();
        let create = create.clone();
        load.push(tokio::spawn(async move {
            let mut client = CashInServiceClient::new(channel);
            let mut outcomes = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let before_signal = !signalled.load(Ordering::SeqCst);
                let result = if n % 2 == 0 {
                    let mut call = Request::new(create(1000 * (task + 1) + n));
                    call.set_timeout(Duration::from_secs(5));
                    client.create_cash_in(call).await.map(|_| ())
                } else {
                    let mut call = Request::new(pb::GetCashInRequest {
                        cash_in_id: id.clone(),
                    });
                    call.set_timeout(Duration::from_secs(5));
                    client.get_cash_in(call).await.map(|_| ())
                };
                let (code, message) = match result {
                    Ok(()) => (Code::Ok, String::new()),
                    Err(status) => (status.code(), status.message().to_owned()),
                };
                let failed = code != Code::Ok;
                outcomes.push(Outcome {
                    before_signal,
                    code,
                    message,
                });
                if failed {
                    // After the listener closes calls fail fast; do not spin.
                    sleep(Duration::from_millis(20)).await;
                }
            }
            outcomes
        }));
    }
    sleep(Duration::from_secs(1)).await;

    // SIGTERM, with health polled from then on.
    signalled.store(true, Ordering::SeqCst);
    let signalled_at = Instant::now();
    send_signal(pid, "-TERM");
    let mut health_seen = Vec::new();
    let exit = loop {
        if let Some(status) = gateway.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            signalled_at.elapsed() < DRAIN_DELAY + GRACE + Duration::from_secs(3),
            "the gateway did not exit within drain + grace:\n{}",
            gateway.log_tail()
        );
        if signalled_at.elapsed() < DRAIN_DELAY + Duration::from_secs(1) {
            health_seen.push((signalled_at.elapsed(), health(&channel).await));
        }
        if signalled_at.elapsed() > Duration::from_secs(2) {
            stop.store(true, Ordering::SeqCst);
        }
        sleep(Duration::from_millis(50)).await;
    };
    let exited_after = signalled_at.elapsed();
    stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<Outcome> = timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(load),
    )
    .await
    .expect("load stops")
    .into_iter()
    .flat_map(|r| r.expect("load task"))
    .collect();
    let mut watch_ends = Vec::new();
    for watch in watches {
        watch_ends.push(
            timeout(Duration::from_secs(5), watch)
                .await
                .expect("watch ended")
                .expect("watch task"),
        );
    }

    let (before, after): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| o.before_signal);
    let before_failed: Vec<(Code, &str)> = before
        .iter()
        .filter(|o| o.code != Code::Ok)
        .map(|o| (o.code, o.message.as_str()))
        .collect();
    let mut after_codes: BTreeMap<String, usize> = BTreeMap::new();
    for o in &after {
        *after_codes.entry(format!("{:?}", o.code)).or_default() += 1;
    }
    let not_serving_at = health_seen
        .iter()
        .find(|(_, s)| *s == Some(ServingStatus::NotServing as i32))
        .map(|(at, _)| *at);
    println!(
        "(d) SIGTERM under load ({LOAD_TASKS} clients, upstream latency 100–300 ms): {} calls started before the signal, \
         {} failed; {} started after it: {after_codes:?}; health NOT_SERVING {not_serving_at:?} after the signal; \
         {} watch streams ended {:?}; exit {:?} after {exited_after:?} (bound: drain {DRAIN_DELAY:?} + grace {GRACE:?})",
        before.len(),
        before_failed.len(),
        after.len(),
        watch_ends.len(),
        watch_ends
            .iter()
            .map(|(code, message, _)| format!("{code:?}: {message}"))
            .collect::<Vec<_>>(),
        exit.code(),
    );

    assert!(before.len() >= 20, "load was running: {}", before.len());
    assert!(
        before_failed.is_empty(),
        "calls accepted before the drain must not fail: {before_failed:?}"
    );
    assert!(
        not_serving_at.is_some_and(|at| at < DRAIN_DELAY),
        "health turned NOT_SERVING during the drain: {health_seen:?}"
    );
    for (code, message, ended) in &watch_ends {
        assert_eq!(*code, Code::Unavailable, "{message}");
        assert!(message.contains("reconnect"), "{message}");
        assert!(
            *ended - signalled_at < DRAIN_DELAY,
            "watch streams end as the drain begins"
        );
    }
    assert_eq!(exit.code(), Some(0), "exit code:\n{}", gateway.log_tail());
    assert!(exited_after < DRAIN_DELAY + GRACE);
    let _ = std::fs::remove_file(&gateway.log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_shuts_down_gracefully_like_sigterm_and_exits_zero() {
    let (mut gateway, _channel) = start_gateway(&["--drain-delay", "0s"]).await;
    send_signal(gateway.child.id(), "-INT");
    let exit = exit_within_10s(&mut gateway, "SIGINT").await;
    assert_eq!(exit.code(), Some(0), "{}", gateway.log_tail());
    assert!(
        gateway.log_tail().contains("draining"),
        "the graceful path ran:\n{}",
        gateway.log_tail()
    );
}

// Before: a second Ctrl-C was ignored, and the operator waited out the whole drain (here 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_exits_at_once() {
    let (mut gateway, channel) = start_gateway(&["--drain-delay", "60s"]).await;
    send_signal(gateway.child.id(), "-TERM");
    common::eventually(Duration::from_secs(10), "the drain to begin", async || {
        health(&channel).await == Some(ServingStatus::NotServing as i32)
    })
    .await;
    send_signal(gateway.child.id(), "-INT");
    let exit = exit_within_10s(&mut gateway, "a second signal").await;
    assert_eq!(exit.code(), Some(130), "{}", gateway.log_tail());
    assert!(
        gateway.log_tail().contains("second signal"),
        "{}",
        gateway.log_tail()
    );
    let _ = std::fs::remove_file(&gateway.log);
}

// The single-threaded runtime (`--worker-threads 1`) with busy polling: the whole gateway runs
// on main's thread, the embedded sandbox included; a call goes upstream and back, and SIGTERM
// still drains and exits 0 while the spinner is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_threaded_busy_polling_gateway_serves_calls_and_shuts_down() {
    let args = [
        "--worker-threads",
        "1",
        "--busy-poll",
        "500us",
        "--drain-delay",
        "0s",
    ];
    let (mut gateway, channel) = start_gateway(&args).await;
    let mut cash_ins = CashInServiceClient::new(channel);
    for _ in 0..20 {
        let status = cash_ins
            .get_cash_in(pb::GetCashInRequest {
                cash_in_id: "ci_01M8SR7H7V2HMRH1Q8B4ZQ34AR".into(),
            })
            .await
            .expect_err("the sandbox has no such cash-in");
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
    send_signal(gateway.child.id(), "-TERM");
    let exit = exit_within_10s(&mut gateway, "SIGTERM").await;
    assert_eq!(exit.code(), Some(0), "{}", gateway.log_tail());
}
