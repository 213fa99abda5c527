//! The watch-stream load client of `bench/run.sh`: opens many WatchCashIn streams on the gateway,
//! measures what they cost it, changes the upstream, and timestamps every stream's delivery.
//!
//! One run, one JSON line on stdout:
//! 1. reads the gateway's RSS (`/proc/PID/status`), opens `--streams` streams over
//!    `--connections` HTTP/2 connections, on `--ids` distinct cash-ins (`ID_PREFIX0000`, …,
//!    round-robin), and waits until every stream has its INITIAL event;
//! 2. settles, reads the RSS again: (after − before) / streams is the bytes a stream costs;
//! 3. for `--idle` seconds changes nothing and reads the gateway's CPU and the upstream's request
//!    count (nginx `stub_status`): idle CPU, and polls per second against ids / poll interval;
//! 4. `--rounds` times: rewrites every cash-in's file under `--fixtures` (a new
//!    `destination.amountNet`, from `template.json` with `@ID@` and `@NET@`), then waits until
//!    every stream has its CHANGED event, timestamping each arrival (wall clock, µs). Afterwards
//!    nginx's access log (`$msec $uri`) gives, per id, the time of the first poll after the
//!    rewrite: the delay of a stream is its arrival minus that poll's time;
//! 5. with `--stalled N`, N more streams on the same ids never read a byte (their HTTP/2 window
//!    fills up): the RSS is read after every round, to show it stays bounded, and the readers
//!    beside them must still get every change.
//!
//! Exit status 1 if a stream ended, failed, or missed a change within `--timeout` per phase.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PATH: &str = "/polygon.oms.v1.CashInService/WatchCashIn";
const INITIAL: u64 = 1;
const CHANGED: u64 = 2;

struct Options {
    addr: String,
    streams: usize,
    stalled: usize,
    connections: usize,
    ids: usize,
    id_prefix: String,
    fixtures: String,
    access_log: String,
    gateway_pid: u32,
    status_url: String,
    idle: Duration,
    rounds: u32,
    interval: Duration,
    timeout: Duration,
    round_pause: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        addr: String::new(),
        streams: 1000,
        stalled: 0,
        connections: 10,
        ids: 1,
        id_prefix: "ci_watchbench".into(),
        fixtures: String::new(),
        access_log: String::new(),
        gateway_pid: 0,
        status_url: String::new(),
        idle: Duration::from_secs(5),
        rounds: 3,
        interval: Duration::from_secs(2),
        timeout: Duration::from_secs(60),
        round_pause: Duration::from_millis(0),
    };
    let mut args = std::env::args().skip(1);
    let secs = |v: String| {
        v.parse::<f64>()
            .map(Duration::from_secs_f64)
            .map_err(|e| e.to_string())
    };
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        let n = || v.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--addr" => o.addr = v,
            "--streams" => o.streams = n()?,
            "--stalled" => o.stalled = n()?,
            "--connections" => o.connections = n()?.max(1),
            "--ids" => o.ids = n()?.max(1),
            "--id-prefix" => o.id_prefix = v,
            "--fixtures" => o.fixtures = v,
            "--access-log" => o.access_log = v,
            "--gateway-pid" => o.gateway_pid = v.parse().map_err(|e| format!("{a}: {e}"))?,
            "--status-url" => o.status_url = v,
            "--idle" => o.idle = secs(v)?,
            "--rounds" => o.rounds = n()? as u32,
            "--interval" => o.interval = secs(v)?,
            "--timeout" => o.timeout = secs(v)?,
            "--round-pause" => o.round_pause = secs(v)?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.addr.is_empty() || o.fixtures.is_empty() || o.gateway_pid == 0 {
        return Err("usage: bench-watch --addr A --fixtures DIR --access-log F --gateway-pid P --status-url U [--streams N] [--stalled N] [--connections N] [--ids N] [--idle S] [--rounds N] [--interval S] [--timeout S]".into());
    }
    Ok(o)
}

fn id(o: &Options, i: usize) -> String {
    format!("{}{:04}", o.id_prefix, i % o.ids)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The gateway's resident set (KiB) and its peak, from /proc/PID/status.
fn rss_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime of a process, in clock ticks (100 per second here).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// nginx's request count from stub_status, over a plain HTTP/1.0 request.
async fn nginx_requests(url: &str) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = tokio::net::TcpStream::connect(host).await else {
        return 0;
    };
    let _ = s
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    // "...\r\n\r\nActive connections: N \nserver accepts handled requests\n A H R \n..."
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    body.lines()
        .nth(2)
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Rewrites every cash-in's file (write a temporary, rename over) with `net` as its new amount;
/// returns when each file was in place (µs since the epoch): with 1,000 ids the last lands tens
/// of milliseconds after the first, and a poll in between still read the old state.
fn rewrite(o: &Options, template: &str, net: &str) -> std::io::Result<Vec<u64>> {
    let mut done = Vec::with_capacity(o.ids);
    for i in 0..o.ids {
        let id = id(o, i);
        let body = template.replace("@ID@", &id).replace("@NET@", net);
        let tmp = format!("{}/.{id}.tmp", o.fixtures);
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, format!("{}/{id}.json", o.fixtures))?;
        done.push(now_us());
    }
    Ok(done)
}

/// Per id, the times (µs since the epoch) of its upstream GETs, from nginx's `$msec $uri` log.
fn polls(o: &Options) -> HashMap<String, Vec<u64>> {
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    let text = std::fs::read_to_string(&o.access_log).unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(t), Some(uri)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(id) = uri.rsplit('/').next() else {
            continue;
        };
        let Ok(t) = t.parse::<f64>() else { continue };
        out.entry(id.to_owned()).or_default().push((t * 1e6) as u64);
    }
    out
}

/// What every stream shares with the main task.
struct Shared {
    initial: AtomicU32,
    changed: Vec<AtomicU32>,
    arrival: Vec<AtomicU64>,
    ended: Mutex<BTreeMap<String, u64>>,
}

fn request(o: &Options, id: &str) -> (http::Request<()>, Bytes) {
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{PATH}", o.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request");
    let mut msg = vec![0x0a, id.len() as u8];
    msg.extend_from_slice(id.as_bytes());
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    (req, Bytes::from(body))
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `type` (field 2) of an encoded CashInEvent.
fn event_type(mut msg: &[u8]) -> Option<u64> {
    while !msg.is_empty() {
        let tag = varint(&mut msg)?;
        match tag & 7 {
            0 => {
                let v = varint(&mut msg)?;
                if tag >> 3 == 2 {
                    return Some(v);
                }
            }
            1 => msg = msg.get(8..)?,
            2 => {
                let len = varint(&mut msg)? as usize;
                msg = msg.get(len..)?;
            }
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(0)
}

async fn reader(
    mut send: h2::client::SendRequest<Bytes>,
    o: Arc<Options>,
    index: usize,
    shared: Arc<Shared>,
    stalled: bool,
) {
    let end = |why: String| {
        *shared.ended.lock().unwrap().entry(why).or_default() += 1;
    };
    let (req, body) = request(&o, &id(&o, index));
    let ready = match send.ready().await {
        Ok(r) => r,
        Err(e) => return end(format!("connection: {e}")),
    };
    send = ready;
    let (response, mut stream) = match send.send_request(req, false) {
        Ok(pair) => pair,
        Err(e) => return end(format!("send: {e}")),
    };
    if let Err(e) = stream.send_data(body, true) {
        return end(format!("send: {e}"));
    }
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return end(format!("response: {e}")),
    };
    if let Some(s) = response.headers().get("grpc-status") {
        return end(format!("grpc-status {}", s.to_str().unwrap_or("?")));
    }
    let mut body = response.into_body();
    if stalled {
        // Hold the stream, never read: the gateway's sends fill its window and must wait.
        std::future::pending::<()>().await;
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return end(format!("body: {e}")),
        };
        let at = now_us();
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() < 5 + len {
                break;
            }
            buf.advance(5);
            let msg = buf.split_to(len);
            match event_type(&msg) {
                Some(INITIAL) => {
                    shared.initial.fetch_add(1, Ordering::Relaxed);
                }
                Some(CHANGED) => {
                    shared.arrival[index].store(at, Ordering::Relaxed);
                    shared.changed[index].fetch_add(1, Ordering::Release);
                }
                _ => {}
            }
        }
    }
    let status = match body.trailers().await {
        Ok(Some(t)) => t
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned(),
        Ok(None) => "no trailers".into(),
        Err(e) => format!("trailers: {e}"),
    };
    end(format!("ended with grpc-status {status}"));
}

/// BENCH_WATCH_DEBUG=1: what nginx's log says about the cash-in of a stream that was slow.
fn explain_slow(
    o: &Options,
    log: &HashMap<String, Vec<u64>>,
    flipped: &[u64],
    stream: usize,
    at: u64,
) {
    let k = stream % o.ids;
    let ms = |t: u64| (t as i64 - flipped[k] as i64) / 1000;
    let polls: Vec<i64> = log
        .get(&id(o, k))
        .map(|v| v.iter().map(|&t| ms(t)).collect())
        .unwrap_or_default();
    eprintln!(
        "slow stream {stream} (id {k}): arrived {} ms after its cash-in's rewrite; that cash-in's polls (ms from the rewrite): {polls:?}",
        ms(at)
    );
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn fail(msg: String) -> ! {
    eprintln!("bench-watch: {msg}");
    std::process::exit(1);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = Arc::new(parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    }));
    let template = std::fs::read_to_string(format!("{}/template.json", o.fixtures))
        .unwrap_or_else(|e| fail(format!("{}/template.json: {e}", o.fixtures)));
    rewrite(&o, &template, "192.00").unwrap_or_else(|e| fail(format!("fixtures: {e}")));
    let total = o.streams + o.stalled;
    let shared = Arc::new(Shared {
        initial: AtomicU32::new(0),
        changed: (0..total).map(|_| AtomicU32::new(0)).collect(),
        arrival: (0..total).map(|_| AtomicU64::new(0)).collect(),
        ended: Mutex::new(BTreeMap::new()),
    });
    let (rss_before, _) = rss_kib(o.gateway_pid);

    // 1. Open every stream.
    let opening = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..o.connections {
        let tcp = tokio::net::TcpStream::connect(&o.addr)
            .await
            .unwrap_or_else(|e| fail(format!("connect: {e}")));
        let _ = tcp.set_nodelay(true);
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(65_535)
            .initial_connection_window_size(1 << 30)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap_or_else(|e| fail(format!("h2 handshake: {e}")));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        conns.push(send);
    }
    for i in 0..total {
        let send = conns[i % conns.len()].clone();
        tokio::spawn(reader(send, o.clone(), i, shared.clone(), i >= o.streams));
    }
    let open_ok = wait_until(o.timeout, || {
        shared.initial.load(Ordering::Relaxed) as usize >= o.streams
    })
    .await;
    let open_s = opening.elapsed().as_secs_f64();
    if !open_ok {
        fail(format!(
            "{} of {} streams had their INITIAL event after {:?}; ended: {:?}",
            shared.initial.load(Ordering::Relaxed),
            o.streams,
            o.timeout,
            shared.ended.lock().unwrap()
        ));
    }

    // 2. Settle, then what the streams cost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_open, _) = rss_kib(o.gateway_pid);

    // 3. Idle: CPU and polls per second.
    let (cpu0, req0) = (
        cpu_ticks(o.gateway_pid),
        nginx_requests(&o.status_url).await,
    );
    let idle_start = Instant::now();
    tokio::time::sleep(o.idle).await;
    let idle_s = idle_start.elapsed().as_secs_f64();
    let (cpu1, req1) = (
        cpu_ticks(o.gateway_pid),
        nginx_requests(&o.status_url).await,
    );
    let idle_cpu_pct = (cpu1 - cpu0) as f64 / idle_s; // ticks are 10 ms: ticks/s = % of one core
    let polls_per_s = (req1.saturating_sub(req0 + 1)) as f64 / idle_s;
    let expected_polls = o.ids as f64 / o.interval.as_secs_f64();

    // 4. Rounds of changes.
    let mut delays = Vec::with_capacity(o.streams * o.rounds as usize);
    let mut rss_rounds = Vec::new();
    let mut missed = 0usize;
    let mut fanout_ticks = 0u64;
    let debug = std::env::var_os("BENCH_WATCH_DEBUG").is_some();
    for round in 1..=o.rounds {
        let ticks_before = cpu_ticks(o.gateway_pid);
        let flipped = rewrite(&o, &template, &format!("192.{round:02}"))
            .unwrap_or_else(|e| fail(format!("fixtures: {e}")));
        let all = wait_until(o.timeout, || {
            (0..o.streams).all(|i| shared.changed[i].load(Ordering::Acquire) >= round)
        })
        .await;
        fanout_ticks += cpu_ticks(o.gateway_pid) - ticks_before;
        if !all {
            missed += (0..o.streams)
                .filter(|&i| shared.changed[i].load(Ordering::Acquire) < round)
                .count();
            break;
        }
        // nginx writes its log line as it finishes the answer; give it a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = polls(&o);
        // Per id, the first poll that began after its file was rewritten (1 ms of slack for the
        // log's ms resolution), so it read the new file.
        let first_poll: Vec<Option<u64>> = (0..o.ids)
            .map(|i| {
                let polls = log.get(&id(&o, i))?;
                polls.iter().copied().find(|&t| t >= flipped[i] + 1_000)
            })
            .collect();
        let mut shown = 0;
        for i in 0..o.streams {
            let Some(poll) = first_poll[i % o.ids] else {
                continue;
            };
            let at = shared.arrival[i].load(Ordering::Relaxed);
            delays.push(at.saturating_sub(poll));
            if debug && at.saturating_sub(poll) > 500_000 && shown < 5 {
                shown += 1;
                explain_slow(&o, &log, &flipped, i, at);
            }
        }
        rss_rounds.push(rss_kib(o.gateway_pid).0);
        tokio::time::sleep(o.round_pause).await;
    }
    let (rss_end, rss_peak) = rss_kib(o.gateway_pid);
    delays.sort_unstable();
    let ended = shared.ended.lock().unwrap().clone();
    let ended_json: Vec<String> = ended
        .iter()
        .map(|(k, v)| format!("\"{}\":{v}", k.replace('"', "'")))
        .collect();
    // CPU from each rewrite until every stream had the change (polling included), per delivery.
    let fanout_us = fanout_ticks as f64 * 10_000.0 / delays.len().max(1) as f64;
    let per_stream = (rss_open.saturating_sub(rss_before) * 1024) as f64 / total.max(1) as f64;
    println!(
        "{{\"streams\":{},\"stalled\":{},\"ids\":{},\"connections\":{},\"open_s\":{open_s:.2},\"rss_before_kib\":{rss_before},\"rss_open_kib\":{rss_open},\"rss_end_kib\":{rss_end},\"rss_peak_kib\":{rss_peak},\"bytes_per_stream\":{per_stream:.0},\"idle_s\":{idle_s:.2},\"idle_cpu_pct\":{idle_cpu_pct:.1},\"polls_per_s\":{polls_per_s:.1},\"expected_polls_per_s\":{expected_polls:.1},\"rounds\":{},\"deliveries\":{},\"missed\":{missed},\"delay_p50_ms\":{:.1},\"delay_p99_ms\":{:.1},\"delay_max_ms\":{:.1},\"cpu_us_per_delivery\":{fanout_us:.1},\"rss_rounds_kib\":{:?},\"ended\":{{{}}}}}",
        o.streams,
        o.stalled,
        o.ids,
        o.connections,
        o.rounds,
        delays.len(),
        pct(&delays, 0.5) as f64 / 1000.0,
        pct(&delays, 0.99) as f64 / 1000.0,
        delays.last().copied().unwrap_or(0) as f64 / 1000.0,
        rss_rounds,
        ended_json.join(","),
    );
    if missed > 0 || !ended.is_empty() {
        std::process::exit(1);
    }
    std::process::exit(0);
}
