//! A tiny gRPC-over-HTTP/2 load client for `bench/run.sh`, for what h2load cannot do: send a
//! distinct `idempotency-key` header on every call (CreateCashIn through the gateway must not be
//! replayed from the gateway's idempotency store) and check the `grpc-status` of every answer
//! (h2load counts HTTP 200 only).
//!
//! It sends one fixed body (5-byte gRPC prefix + encoded message, read from a file) with
//! `content-type: application/grpc` and `te: trailers`, on `--connections` HTTP/2 connections
//! with `--streams` calls in flight on each, until `--duration` or `--calls` is reached.
//! It prints one JSON line: calls, ok, non-OK status counts, requests/s, latency mean/p50/p99 (µs).
//!
//! Usage: bench-grpc-load ADDR PATH BODY_FILE [--connections N] [--streams N] [--duration SECS]
//!        [--calls N] [--key-prefix PREFIX] [--header NAME:VALUE]...

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Options {
    addr: String,
    path: String,
    body: Bytes,
    connections: usize,
    streams: usize,
    duration: Duration,
    calls: u64,
    key_prefix: Option<String>,
    headers: Vec<(String, String)>,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut o = Options {
        addr: String::new(),
        path: String::new(),
        body: Bytes::new(),
        connections: 1,
        streams: 1,
        duration: Duration::from_secs(5),
        calls: u64::MAX,
        key_prefix: None,
        headers: Vec::new(),
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--connections" => o.connections = value()?.parse().map_err(|e| format!("{e}"))?,
            "--streams" => o.streams = value()?.parse().map_err(|e| format!("{e}"))?,
            "--duration" => {
                o.duration = Duration::from_secs_f64(value()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--calls" => o.calls = value()?.parse().map_err(|e| format!("{e}"))?,
            "--key-prefix" => o.key_prefix = Some(value()?),
            "--header" => {
                let h = value()?;
                let (n, v) = h.split_once(':').ok_or("--header NAME:VALUE")?;
                o.headers
                    .push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
            _ => positional.push(a),
        }
    }
    if positional.len() != 3 {
        return Err("usage: bench-grpc-load ADDR PATH BODY_FILE [options]".into());
    }
    o.addr = positional[0].clone();
    o.path = positional[1].clone();
    o.body =
        Bytes::from(std::fs::read(&positional[2]).map_err(|e| format!("{}: {e}", positional[2]))?);
    Ok(o)
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<String, u64>,
}

async fn one_call(
    send: &mut h2::client::SendRequest<Bytes>,
    o: &Options,
    key: Option<String>,
) -> Result<String, String> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{}", o.addr, o.path))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (n, v) in &o.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    if let Some(k) = key {
        builder = builder.header("idempotency-key", k);
    }
    let request = builder.body(()).map_err(|e| e.to_string())?;
    let ready = send.clone().ready().await.map_err(|e| e.to_string())?;
    *send = ready;
    let (response, mut stream) = send
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    stream
        .send_data(o.body.clone(), true)
        .map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Ok(format!("http-{}", response.status().as_u16()));
    }
    // A trailers-only answer carries grpc-status in the headers.
    if let Some(s) = response.headers().get("grpc-status") {
        return Ok(s.to_str().unwrap_or("?").to_owned());
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.map_err(|e| e.to_string())?;
    Ok(trailers
        .and_then(|t| {
            t.get("grpc-status")
                .and_then(|s| s.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "missing".into()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = match parse_args() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let issued = Arc::new(AtomicU64::new(0));
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let start = Instant::now();
    let deadline = start + o.duration;
    let mut workers = Vec::new();
    for _ in 0..o.connections {
        let tcp = match tokio::net::TcpStream::connect(&o.addr).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("connect {}: {e}", o.addr);
                std::process::exit(1);
            }
        };
        let _ = tcp.set_nodelay(true);
        let (send, connection) = match h2::client::handshake(tcp).await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("h2 handshake {}: {e}", o.addr);
                std::process::exit(1);
            }
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        for _ in 0..o.streams {
            let (o, issued, mut send) = (o.clone(), issued.clone(), send.clone());
            let prefix = o.key_prefix.clone().map(|p| format!("{p}-{run_id}"));
            workers.push(tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= o.calls || Instant::now() >= deadline {
                        break;
                    }
                    let key = prefix.as_ref().map(|p| format!("{p}-{n}"));
                    let t0 = Instant::now();
                    let status = match tokio::time::timeout(
                        Duration::from_secs(10),
                        one_call(&mut send, &o, key),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => format!("error: {e}"),
                        Err(_) => "timeout".to_owned(),
                    };
                    tally.latencies_us.push(t0.elapsed().as_micros() as u64);
                    *tally.statuses.entry(status).or_default() += 1;
                }
                tally
            }));
        }
    }
    let mut all = Tally::default();
    for w in workers {
        if let Ok(t) = w.await {
            all.latencies_us.extend(t.latencies_us);
            for (k, v) in t.statuses {
                *all.statuses.entry(k).or_default() += v;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = all.latencies_us;
    l.sort_unstable();
    let calls = l.len() as u64;
    let pct = |p: f64| {
        if l.is_empty() {
            0
        } else {
            l[((l.len() - 1) as f64 * p).round() as usize]
        }
    };
    let mean = if l.is_empty() {
        0.0
    } else {
        l.iter().sum::<u64>() as f64 / l.len() as f64
    };
    let ok = all.statuses.get("0").copied().unwrap_or(0);
    let statuses: Vec<String> = all
        .statuses
        .iter()
        .map(|(k, v)| format!("\"{}\":{v}", k.replace('\\', "\\\\").replace('"', "'")))
        .collect();
    println!(
        "{{\"calls\":{calls},\"ok\":{ok},\"errors\":{},\"statuses\":{{{}}},\"elapsed_s\":{elapsed:.3},\"rps\":{:.1},\"mean_us\":{mean:.1},\"p50_us\":{},\"p99_us\":{}}}",
        calls - ok,
        statuses.join(","),
        calls as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}
