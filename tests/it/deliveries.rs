//! The second layer of a cash-in, as a caller sees it: the delivery (OMS's fiat-to-crypto
//! transaction) that verified `transaction.fiatToCrypto.*` webhooks carry, on every CashIn the
//! gateway returns and in its watches. A watch opened before the deposit follows the cash-in
//! and then its delivery to the end; a delivery that fails after the cash-in completed reaches
//! the watcher at once with its error code, then its refund; a webhook older than what is known
//! changes nothing; and with Redis another replica, and the receiving replica restarted, show
//! the same delivery. Webhooks come from the embedded sandbox or are signed here as OMS would.

use crate::common::{self, TestGateway};
use crate::replicas::{self, Replica, redis_missing, say};
use crate::webhooks::{Behind, SECRET, config, now, sandbox_sender, sign};
use oms_gateway::proto::v1 as pb;
use pb::{CashInStatus as St, DeliveryStatus as D};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Channel;

/// Every non-heartbeat event of a stream with when it arrived, and how the stream ended.
type Events = Arc<Mutex<Vec<(Instant, pb::CashInEvent)>>>;

fn watch(
    channel: Channel,
    id: &str,
    cash_in_only: bool,
) -> (Events, tokio::task::JoinHandle<Result<(), tonic::Status>>) {
    let events: Events = Arc::default();
    let into = events.clone();
    let request = pb::WatchCashInRequest {
        cash_in_id: id.to_owned(),
        cash_in_only,
    };
    let task = tokio::spawn(async move {
        let mut client = pb::cash_in_service_client::CashInServiceClient::new(channel);
        let mut stream = client.watch_cash_in(request).await?.into_inner();
        while let Some(event) = stream.message().await? {
            if event.r#type != pb::CashInEventType::Heartbeat as i32 {
                into.lock().unwrap().push((Instant::now(), event));
            }
        }
        Ok(())
    });
    (events, task)
}

async fn saw(events: &Events, n: usize, within: Duration) {
    common::eventually(within, "the stream's events", async || {
        events.lock().unwrap().len() >= n
    })
    .await;
}

/// (cash-in status, delivery status) of each event.
fn layers(events: &Events) -> Vec<(i32, i32)> {
    events
        .lock()
        .unwrap()
        .iter()
        .map(|(_, e)| {
            let c = e.cash_in.as_ref().expect("a cash-in");
            (c.status, c.delivery.as_ref().map_or(0, |d| d.status))
        })
        .collect()
}

/// A `transaction.fiatToCrypto.<step>` event as the guide shows it, for `cash_in`'s transaction.
fn transaction_event(step: &str, cash_in: &pb::CashIn, status: &str, sub: &str, at: u64) -> String {
    let txn = cash_in.transaction_id.clone().expect("a transaction id");
    let error = if status == "failed" {
        r#","error":{"code":"on_chain_revert","message":"Delivery transaction reverted onchain"}"#
    } else {
        ""
    };
    let hash = if status == "completed" {
        r#""0xabc""#
    } else {
        "null"
    };
    let at = time(at);
    format!(
        r#"{{"id":"whk_evt_{step}_{at}","event":"transaction.fiatToCrypto.{step}","createdAt":"{at}","data":{{"id":"{txn}","object":"transaction","type":"fiatToCrypto","status":"{status}","subStatus":{sub},"customerId":"{customer}","quoteId":null,"cashIn":"{id}","source":{{"asset":"usd","network":"cash","amountGross":"150.00","amountNet":"144.00","txHash":null}},"destination":{{"wallet":{{"wallet":"wlt_1"}},"asset":"usdc","network":"polygon","amountGross":"144.00","amountNet":"144.00","txHash":{hash}}}{error},"createdAt":"{at}","updatedAt":"{at}"}}}}"#,
        sub = if sub.is_empty() {
            "null".to_owned()
        } else {
            format!("\"{sub}\"")
        },
        customer = cash_in.customer_id,
        id = cash_in.id,
    )
}

/// Unix seconds as RFC 3339.
fn time(unix: u64) -> String {
    let t = prost_types::Timestamp {
        seconds: unix as i64,
        nanos: 0,
    };
    t.to_string()
}

/// POSTs `body` signed with `SECRET` to the webhook endpoint at `admin`; the status.
async fn post_to(http: &reqwest::Client, admin: &str, id: &str, body: &str) -> u16 {
    let stamp = now();
    http.post(format!("http://{admin}/webhooks/oms"))
        .timeout(Duration::from_secs(5))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", stamp.to_string())
        .header("webhook-signature", sign(SECRET, id, stamp, body))
        .body(body.to_owned())
        .send()
        .await
        .expect("the admin listener answers")
        .status()
        .as_u16()
}

/// A cash-in created through `channel` and completed at the sandbox behind the gateway's back
/// (the deposit, then the commit), as the gateway reads it now.
async fn completed(channel: &Channel, behind: &Behind, customer: &str) -> pb::CashIn {
    let location = common::first_location(channel).await;
    let mut client = pb::cash_in_service_client::CashInServiceClient::new(channel.clone());
    let mut request = tonic::Request::new(replicas::create(&location, customer));
    request.get_mut().customer_id = customer.to_owned();
    let created = client
        .create_cash_in(request)
        .await
        .expect("create")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let confirmation = behind.authorize(&created).await;
    behind.commit(&created, &confirmation).await;
    common::get_cash_in(channel, &created.id).await
}

fn delivery_of(cash_in: &pb::CashIn) -> (i32, Option<String>) {
    let d = cash_in.delivery.as_ref();
    (
        d.map_or(0, |d| d.status),
        d.and_then(|d| d.error.as_ref()).map(|e| e.code.clone()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_opened_before_the_deposit_follows_the_cash_in_then_its_delivery_to_the_end() {
    // The sandbox sends its webhooks (both layers) to the gateway; it delivers 2 s after the
    // deposit. Pollers run every 200 ms (the move to processing has no webhook).
    let short = Duration::from_millis(200);
    let mut settings = sandbox_sender("");
    settings.watch.poll_interval = short;
    settings.webhooks.reconcile_interval = short;
    let gateway = common::start_with(settings).await;
    let created = common::create_cash_in(&gateway, "cst_delivery_watch").await;
    let (events, task) = watch(gateway.channel.clone(), &created.id, false);
    saw(&events, 1, Duration::from_secs(5)).await;
    let behind = Behind::new(&gateway).await;
    let confirmation = behind.authorize(&created).await;
    saw(&events, 2, Duration::from_secs(5)).await;
    behind.commit(&created, &confirmation).await;
    let ended = timeout(Duration::from_secs(15), task).await;
    let seen = layers(&events);
    say!("a watch through the deposit and the delivery: {seen:?}");
    ended
        .expect("the stream ends once the USDC is delivered")
        .unwrap()
        .expect("with OK");
    let (pending, processing, completed) = (
        St::Pending as i32,
        St::Processing as i32,
        St::Completed as i32,
    );
    assert_eq!(seen[0], (pending, 0));
    assert_eq!(seen[1], (processing, 0));
    assert!(
        seen.contains(&(completed, D::Processing as i32)),
        "{seen:?}"
    );
    assert_eq!(seen.last(), Some(&(completed, D::Completed as i32)));
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "never back: {seen:?}"
    );
    let last = events.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(last.previous_delivery_status, D::Processing as i32);
    let delivery = last.cash_in.unwrap().delivery.unwrap();
    let hash = delivery.destination.and_then(|d| d.tx_hash);
    assert!(
        hash.is_some_and(|h| h.starts_with("0x")),
        "the delivered hash"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_fails_after_completion_reaches_the_watcher_at_once_then_its_refund() {
    // Webhooks are posted here, as OMS would; the sandbox sends none.
    let gateway: TestGateway = common::start_with(config(
        &[SECRET],
        crate::webhooks::LONG,
        crate::webhooks::LONG,
    ))
    .await;
    // As an OMS that does not serve GET /transactions/{id}: webhooks are the only source.
    gateway.sandbox().set_transaction_reads(false);
    let behind = Behind::new(&gateway).await;
    let cash_in = completed(&gateway.channel, &behind, "cst_delivery_fails").await;
    assert_eq!(cash_in.status, St::Completed as i32);
    assert_eq!(cash_in.delivery, None, "no transaction webhook yet");
    let (events, task) = watch(gateway.channel.clone(), &cash_in.id, false);
    saw(&events, 1, Duration::from_secs(5)).await;
    sleep(Duration::from_millis(300)).await;
    assert!(
        !task.is_finished(),
        "a completed cash-in's watch waits for its delivery"
    );
    let http = reqwest::Client::new();
    let admin = gateway.gateway.admin_addr().unwrap().to_string();
    let t0 = now();
    let processing = transaction_event(
        "processing",
        &cash_in,
        "processing",
        "processing.fundsPulled",
        t0,
    );
    assert_eq!(post_to(&http, &admin, "msg_1", &processing).await, 202);
    saw(&events, 2, Duration::from_secs(2)).await;
    let failed = transaction_event("failed", &cash_in, "failed", "failed.refundPending", t0 + 2);
    let sent = Instant::now();
    assert_eq!(post_to(&http, &admin, "msg_2", &failed).await, 202);
    saw(&events, 3, Duration::from_secs(2)).await;
    let (arrived, event) = events.lock().unwrap()[2].clone();
    let delay = arrived.duration_since(sent);
    say!("a failed delivery's webhook → the watcher: {delay:?}");
    assert!(delay < Duration::from_millis(100), "{delay:?}");
    let c = event.cash_in.unwrap();
    assert_eq!(
        delivery_of(&c),
        (D::Failed as i32, Some("on_chain_revert".into()))
    );
    assert_eq!(event.previous_delivery_status, D::Processing as i32);
    assert_eq!(
        event.changed_fields,
        ["delivery.status", "delivery.subStatus", "delivery.error"]
    );
    // A late webhook (older than the failure) changes nothing, nor does a replay of one.
    let late = transaction_event(
        "processing",
        &cash_in,
        "processing",
        "processing.fundsPulled",
        t0 + 1,
    );
    assert_eq!(post_to(&http, &admin, "msg_3", &late).await, 202);
    assert_eq!(post_to(&http, &admin, "msg_1", &processing).await, 200);
    sleep(Duration::from_millis(300)).await;
    assert_eq!(events.lock().unwrap().len(), 3, "{:?}", layers(&events));
    assert_eq!(
        delivery_of(&common::get_cash_in(&gateway.channel, &cash_in.id).await).0,
        D::Failed as i32
    );
    let refunded = transaction_event(
        "refundCompleted",
        &cash_in,
        "failed",
        "failed.refundCompleted",
        t0 + 3,
    );
    assert_eq!(post_to(&http, &admin, "msg_4", &refunded).await, 202);
    timeout(Duration::from_secs(2), task)
        .await
        .expect("the stream ends at the refund")
        .unwrap()
        .expect("with OK");
    let seen = layers(&events);
    assert_eq!(
        seen.last(),
        Some(&(St::Completed as i32, D::RefundCompleted as i32))
    );
    let read = common::get_cash_in(&gateway.channel, &cash_in.id).await;
    assert_eq!(
        delivery_of(&read),
        (D::RefundCompleted as i32, Some("on_chain_revert".into()))
    );
    // Operators see it: counted by outcome, as the alert rule reads it.
    let metrics = common::prometheus::scrape(&gateway).await;
    let count = |outcome| {
        common::prometheus::value(
            &metrics,
            "oms_gateway_deliveries_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(
        (
            count("processing"),
            count("failed"),
            count("refund_completed")
        ),
        (1.0, 1.0, 1.0)
    );
    let rules = include_str!("../../deploy/monitoring/delivery-alerts.yaml");
    assert!(rules.contains(r#"oms_gateway_deliveries_total{outcome="failed"}"#));
    // The cash-in layer alone, as before: a completed cash-in's watch ends at once.
    let (_, only) = watch(gateway.channel.clone(), &cash_in.id, true);
    timeout(Duration::from_secs(2), only)
        .await
        .expect("ends")
        .unwrap()
        .expect("OK");
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_another_replica_and_the_restarted_receiver_show_the_delivery() {
    if redis_missing("deliveries_with_redis") {
        return;
    }
    let dir = common::tls::temp_dir("delivery-webhooks");
    let secret_file = common::tls::write(&dir, "whsec", SECRET)
        .display()
        .to_string();
    let extra = ["--webhook-secret-file", secret_file.as_str()];
    let (redis, sandbox, mut fleet) = replicas::fleet(&extra).await;
    // Webhooks are the only source (the sandbox plays an OMS without the transaction read).
    sandbox.set_transaction_reads(false);
    let behind = Behind::at(&sandbox).await;
    let cash_in = completed(&fleet[0].channel, &behind, "cst_delivery_fleet").await;
    let http = reqwest::Client::new();
    let admin = fleet[0].admin_addr().expect("admin");
    // A watcher on another replica than the one the webhook reaches.
    let (events, _task) = watch(fleet[1].channel.clone(), &cash_in.id, false);
    saw(&events, 1, Duration::from_secs(5)).await;
    let t0 = now();
    let failed = transaction_event("failed", &cash_in, "failed", "failed.refundPending", t0);
    let sent = Instant::now();
    assert_eq!(post_to(&http, &admin, "fleet_1", &failed).await, 202);
    let want = (D::Failed as i32, Some("on_chain_revert".to_owned()));
    saw(&events, 2, Duration::from_secs(3)).await;
    let (arrived, event) = events.lock().unwrap()[1].clone();
    say!(
        "a failed delivery's webhook at replica A → a watcher on B: {:?}",
        arrived.duration_since(sent)
    );
    assert_eq!(delivery_of(&event.cash_in.unwrap()), want);
    assert_eq!(
        delivery_of(&common::get_cash_in(&fleet[1].channel, &cash_in.id).await),
        want
    );
    // An older webhook at another replica changes nothing anywhere.
    let late = transaction_event(
        "processing",
        &cash_in,
        "processing",
        "processing.fundsPulled",
        t0 - 5,
    );
    assert_eq!(
        post_to(&http, &fleet[2].admin_addr().unwrap(), "fleet_2", &late).await,
        202
    );
    assert_eq!(
        delivery_of(&common::get_cash_in(&fleet[2].channel, &cash_in.id).await),
        want
    );
    // The receiver restarts: what it learned is still known.
    drop(fleet.remove(0));
    let restarted = Replica::launch(
        &sandbox,
        &redis,
        Duration::from_secs(1),
        Duration::from_millis(300),
        &extra,
    )
    .await;
    common::eventually(
        Duration::from_secs(30),
        "sharing through Redis",
        async || restarted.shares_through_redis(&http).await,
    )
    .await;
    assert_eq!(
        delivery_of(&common::get_cash_in(&restarted.channel, &cash_in.id).await),
        want
    );
}
