//! Load benchmark: how fast and how small the gateway is. Prints figures; asserts nothing.
//!
//! `cargo bench --bench load` starts the built `oms-gateway` binary (release profile) against
//! its embedded sandbox, waits for SERVING, and measures with real tonic clients over loopback:
//! GetCashIn and CreateCashIn throughput and latency percentiles at a fixed concurrency, and the
//! process's resident memory (VmRSS) idle and after the load, plus its peak (VmHWM).
//! Settings: `BENCH_CALLS` (default 20000), `BENCH_CONCURRENCY` (default 64).
//!
//! The figures include the embedded sandbox, which runs in the same process and serves every
//! upstream call over loopback HTTP/1.1: the gateway alone against a remote OMS does less work.

// The integration tests' harness: the guide's search point, a valid create request, ports.
#[path = "../tests/common/mod.rs"]
mod common;

use oms_gateway::proto::v1 as pb;
use pb::cash_in_service_client::CashInServiceClient;
use pb::cash_location_service_client::CashLocationServiceClient;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut latencies: Vec<Duration>, elapsed: Duration, errors: usize) {
    latencies.sort();
    println!(
        "{name:<14} {:>6} calls  {:>8.0} calls/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  errors {errors}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}

async fn run<F, Fut>(calls: usize, concurrency: usize, call: F) -> (Vec<Duration>, Duration, usize)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut i = worker;
            while i < calls {
                let t = Instant::now();
                if !call(i).await {
                    errors += 1;
                }
                latencies.push(t.elapsed());
                i += concurrency;
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::with_capacity(calls);
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.expect("worker");
        all.extend(latencies);
        errors += e;
    }
    (all, start.elapsed(), errors)
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let calls = env_usize("BENCH_CALLS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64).max(1);
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_oms-gateway"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
        ])
        .args(["--max-concurrent-calls", "100000"])
        .args(["--admin-listen", "none"])
        .env_remove("OMS_BASE_URL")
        .env_remove("OMS_API_KEY")
        .env_remove("OMS_API_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start oms-gateway");
    let pid = child.id();
    let _server = Server(child);
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).expect("endpoint");
    let channel: Channel = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(err) => panic!("gateway did not start: {err}"),
            }
        }
    };
    // Wait for SERVING by making the first call succeed.
    let mut locations = CashLocationServiceClient::new(channel.clone());
    let request = common::guide_point();
    let location = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match locations.list_cash_locations(request.clone()).await {
                Ok(r) => break r.into_inner().cash_locations.remove(0),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(err) => panic!("gateway never served: {err}"),
            }
        }
    };
    let idle_rss = memory_kib(pid, "VmRSS:");
    println!(
        "oms-gateway load benchmark: {calls} calls per RPC ({} creates), concurrency {concurrency}, one HTTP/2 connection per 16 workers",
        calls / 4
    );
    println!("idle RSS {:.1} MiB", idle_rss as f64 / 1024.0);

    // A few HTTP/2 connections (one per 16 workers), as a client pool would have.
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..concurrency.div_ceil(16) {
        channels.push(endpoint.connect().await.expect("connect"));
    }
    let make_request = move |i: usize| pb::CreateCashInRequest {
        idempotency_key: format!("bench-{i}"),
        ..common::create_request(&location, &format!("cst_bench{}", i % 100))
    };

    let creates = calls / 4;
    let create_channels = channels.clone();
    let make = make_request.clone();
    let (latencies, elapsed, errors) = run(creates, concurrency, move |i| {
        let mut client =
            CashInServiceClient::new(create_channels[i % create_channels.len()].clone());
        let request = make(i);
        async move { client.create_cash_in(request).await.is_ok() }
    })
    .await;
    report("CreateCashIn", latencies, elapsed, errors);

    let mut client = CashInServiceClient::new(channel.clone());
    let id = client
        .create_cash_in(make_request(usize::MAX))
        .await
        .expect("create")
        .into_inner()
        .cash_in
        .expect("cash_in")
        .id;
    let get_channels = channels.clone();
    let (latencies, elapsed, errors) = run(calls, concurrency, move |i| {
        let mut client = CashInServiceClient::new(get_channels[i % get_channels.len()].clone());
        let request = pb::GetCashInRequest {
            cash_in_id: id.clone(),
        };
        async move { client.get_cash_in(request).await.is_ok() }
    })
    .await;
    report("GetCashIn", latencies, elapsed, errors);

    let invalid_channels = channels.clone();
    let (latencies, elapsed, errors) = run(calls, concurrency, move |i| {
        let mut client =
            CashInServiceClient::new(invalid_channels[i % invalid_channels.len()].clone());
        let request = pb::GetCashInRequest {
            cash_in_id: "not-an-id".into(),
        };
        // Rejected by validation: the gateway's own overhead, no upstream call.
        async move { client.get_cash_in(request).await.is_err() }
    })
    .await;
    report("invalid (local)", latencies, elapsed, errors);

    println!(
        "RSS after load {:.1} MiB, peak (VmHWM) {:.1} MiB, {} cash-ins held by the sandbox",
        memory_kib(pid, "VmRSS:") as f64 / 1024.0,
        memory_kib(pid, "VmHWM:") as f64 / 1024.0,
        creates + 1,
    );
}
