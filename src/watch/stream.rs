//! One watch stream: reads its poller's latest observation and writes events to the caller.
//!
//! The stream remembers what it last sent per cash-in, so `changed_fields` and
//! `previous_status` are relative to what this caller saw (a slow caller that skipped states
//! gets one event naming everything that changed since). A quiet stream sends HEARTBEAT events.
//! It ends: with OK after sending a terminal state (single cash-in); with the poller's error
//! (NOT_FOUND, UNAVAILABLE); with DEADLINE_EXCEEDED at the caller's deadline; or silently when
//! the caller goes away — and in every case its subscription is dropped, releasing its share of
//! the poller.

use super::wire::{Encoded, EventCache};
use super::{Observation, Subscription, diff};
use crate::error::GatewayError;
use crate::proto::v1 as pb;
use futures_util::{Stream, StreamExt};
use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// What a stream reports.
#[derive(Debug, Clone)]
pub enum Mode {
    /// One cash-in: ends after its terminal state.
    Single,
    /// A customer's cash-ins in these statuses (empty: all); runs until deadline or cancel.
    Filter {
        /// The statuses to report.
        statuses: Vec<i32>,
    },
}

/// The stream type of both watch RPCs: the buffered events, encoded, then the closing status if
/// any (none means OK).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// Events buffered towards a caller; small, so a slow caller reads fresh states, not old ones.
const BUFFER: usize = 2;

/// What a stream last sent, per cash-in id: the observation's own `Arc`s, never a copy.
type Sent = HashMap<String, Arc<pb::CashIn>>;

/// Starts the stream's task and returns the stream tonic sends from.
pub fn spawn(
    subscription: Subscription,
    mode: Mode,
    deadline: Option<Instant>,
    heartbeat: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> EventStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    // The closing status travels apart from the events, so it never waits behind a full buffer.
    let (end_tx, end_rx) = oneshot::channel::<Status>();
    tokio::spawn(run(
        subscription,
        mode,
        deadline,
        heartbeat,
        shutdown,
        tx,
        end_tx,
    ));
    let closing =
        futures_util::stream::once(end_rx).filter_map(|end| async move { end.ok().map(Err) });
    Box::pin(ReceiverStream::new(rx).map(Ok).chain(closing))
}

/// One event for a stream, and whether it reports a terminal state.
struct Outgoing {
    event: Encoded,
    terminal: bool,
}

/// The events an observation produces for a stream that last sent `sent`. Afterwards `sent`
/// holds no more cash-ins than the observation: one that left it (fell out of the newest
/// cash-ins a customer poll reads) can never be reported again, so it is forgotten, and a
/// stream's memory is bounded by one observation whatever the customer's history.
fn events_for(
    mode: &Mode,
    items: &[Arc<pb::CashIn>],
    at: SystemTime,
    cache: &EventCache,
    sent: &mut Sent,
    first: bool,
) -> Vec<Outgoing> {
    let mut events = Vec::new();
    let outgoing = |event: Encoded, item: &pb::CashIn| Outgoing {
        event,
        terminal: matches!(mode, Mode::Single) && diff::is_terminal(item.status),
    };
    // Oldest first, so a caller sees cash-ins in the order they were created.
    for item in items.iter().rev() {
        let wanted = match mode {
            Mode::Single => true,
            Mode::Filter { statuses } => statuses.is_empty() || statuses.contains(&item.status),
        };
        match sent.get(&item.id) {
            None if wanted => {
                let kind = if first {
                    pb::CashInEventType::Initial
                } else {
                    pb::CashInEventType::Added
                };
                events.push(outgoing(cache.event(kind, None, item, &[], at), item));
                sent.insert(item.id.clone(), item.clone());
            }
            None => {}
            Some(previous) if Arc::ptr_eq(previous, item) => {}
            Some(previous) => {
                let changed = diff::changed_fields(previous, item);
                if !changed.is_empty() {
                    // Reported even when it leaves the filter, so the caller sees it go.
                    let kind = pb::CashInEventType::Changed;
                    let event = cache.event(kind, Some(previous), item, &changed, at);
                    events.push(outgoing(event, item));
                    if wanted {
                        sent.insert(item.id.clone(), item.clone());
                    } else {
                        sent.remove(&item.id);
                    }
                }
            }
        }
    }
    if sent.len() > items.len() {
        let present: HashSet<&str> = items.iter().map(|c| c.id.as_str()).collect();
        sent.retain(|id, _| present.contains(id.as_str()));
    }
    events
}

/// Why a stream stops early.
enum Stop {
    /// The caller went away: nothing to say.
    Gone,
    /// End with this status.
    With(Status),
}

/// The stream's end conditions, checked while waiting for anything, sends included: a caller
/// that stops reading still gets its deadline and the shutdown notice (delivered after the
/// events already buffered), and its slot and poller share are released.
/// The deadline's timer is registered once for the stream's life (none without a deadline),
/// not once per event: fifty thousand streams woken by one change must not each re-arm timers.
struct Ends<'a> {
    deadline: Option<Pin<&'a mut Sleep>>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Ends<'_> {
    async fn reached(&mut self) -> Stop {
        let deadline = async {
            match &mut self.deadline {
                Some(sleep) => sleep.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => {
                Stop::With(GatewayError::DeadlineExceeded("the watch reached the caller's deadline".into()).into())
            }
            _ = self.shutdown.changed() => Stop::With(
                GatewayError::Unavailable("the gateway is shutting down; reconnect to resume watching".into()).into(),
            ),
        }
    }

    async fn send(&mut self, tx: &mpsc::Sender<Encoded>, event: Encoded) -> Result<(), Stop> {
        tokio::select! {
            biased;
            sent = tx.send(event) => sent.map_err(|_| Stop::Gone),
            stop = self.reached() => Err(stop),
        }
    }
}

async fn run(
    mut subscription: Subscription,
    mode: Mode,
    deadline: Option<Instant>,
    heartbeat: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
    tx: mpsc::Sender<Encoded>,
    end: oneshot::Sender<Status>,
) {
    let mut deadline = deadline.map(|at| Box::pin(tokio::time::sleep_until(at)));
    let mut ends = Ends {
        deadline: deadline.as_mut().map(|sleep| sleep.as_mut()),
        shutdown,
    };
    let mut sent = HashMap::new();
    let outcome = watch_loop(
        &mut subscription,
        &mode,
        heartbeat,
        &mut ends,
        &tx,
        &mut sent,
    )
    .await;
    subscription.track(sent.len(), 0);
    match outcome {
        Ok(()) | Err(Stop::Gone) => {}
        Err(Stop::With(status)) => {
            let _ = end.send(status);
        }
    }
}

/// Sends events until the stream should end; `Ok` ends it with OK.
async fn watch_loop(
    subscription: &mut Subscription,
    mode: &Mode,
    heartbeat: Duration,
    ends: &mut Ends<'_>,
    tx: &mpsc::Sender<Encoded>,
    sent: &mut Sent,
) -> Result<(), Stop> {
    let mut first = true;
    // Re-armed only when an event goes out.
    let beat = tokio::time::sleep(heartbeat);
    tokio::pin!(beat);
    // Mark the current value unseen so the first loop turn reports it at once.
    subscription.receiver().mark_changed();
    loop {
        tokio::select! {
            biased;
            () = tx.closed() => return Err(Stop::Gone),
            stop = ends.reached() => return Err(stop),
            changed = subscription.receiver().changed() => {
                if changed.is_err() {
                    // The poller is gone without a final word; should not happen while subscribed.
                    return Err(Stop::With(GatewayError::Unavailable("the watch poller stopped; reconnect".into()).into()));
                }
                let observation = subscription.receiver().borrow_and_update().clone();
                match observation {
                    Observation::Waiting => {}
                    Observation::Ended(err) => return Err(Stop::With(err.into())),
                    Observation::Seen { items, at, events } => {
                        let before = sent.len();
                        let outgoing = events_for(mode, &items, at, &events, sent, first);
                        let outgoing_was_empty = outgoing.is_empty();
                        subscription.track(before, sent.len());
                        first = false;
                        let mut terminal = false;
                        for Outgoing { event, terminal: last } in outgoing {
                            terminal |= last;
                            ends.send(tx, event).await?;
                        }
                        if !outgoing_was_empty {
                            beat.as_mut().reset(Instant::now() + heartbeat);
                        }
                        if terminal {
                            return Ok(());
                        }
                    }
                }
            }
            () = beat.as_mut() => {
                ends.send(tx, Encoded::heartbeat()).await?;
                beat.as_mut().reset(Instant::now() + heartbeat);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cash_in(id: &str, status: pb::CashInStatus) -> Arc<pb::CashIn> {
        Arc::new(pb::CashIn {
            id: id.into(),
            status: status as i32,
            ..Default::default()
        })
    }

    fn decoded(events: &[Outgoing]) -> Vec<pb::CashInEvent> {
        events.iter().map(|o| o.event.decode().unwrap()).collect()
    }

    #[test]
    fn a_filter_stream_reports_initial_added_changed_and_leaving() {
        let mode = Mode::Filter {
            statuses: vec![pb::CashInStatus::Pending as i32],
        };
        let mut sent = HashMap::new();
        let now = SystemTime::now();
        let cache = EventCache::default();
        let first = decoded(&events_for(
            &mode,
            &[cash_in("ci_1", pb::CashInStatus::Pending)],
            now,
            &cache,
            &mut sent,
            true,
        ));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].r#type, pb::CashInEventType::Initial as i32);
        let items = [
            cash_in("ci_2", pb::CashInStatus::Pending),
            cash_in("ci_1", pb::CashInStatus::Processing),
        ];
        let cache = EventCache::default();
        let next = decoded(&events_for(&mode, &items, now, &cache, &mut sent, false));
        let kinds: Vec<i32> = next.iter().map(|e| e.r#type).collect();
        assert_eq!(
            kinds,
            [
                pb::CashInEventType::Changed as i32,
                pb::CashInEventType::Added as i32
            ]
        );
        assert_eq!(next[0].previous_status, pb::CashInStatus::Pending as i32);
        assert_eq!(next[0].changed_fields, ["status"]);
        // ci_1 left the filter: no further events for it.
        let items = [
            cash_in("ci_2", pb::CashInStatus::Pending),
            cash_in("ci_1", pb::CashInStatus::Completed),
        ];
        let cache = EventCache::default();
        assert!(events_for(&mode, &items, now, &cache, &mut sent, false).is_empty());
    }

    #[test]
    fn a_single_stream_flags_the_terminal_state() {
        let mut sent = HashMap::new();
        let now = SystemTime::now();
        let cache = EventCache::default();
        let pending = [cash_in("ci_1", pb::CashInStatus::Pending)];
        let first = events_for(&Mode::Single, &pending, now, &cache, &mut sent, true);
        assert!(!first[0].terminal);
        let done = [cash_in("ci_1", pb::CashInStatus::Completed)];
        let last = events_for(&Mode::Single, &done, now, &cache, &mut sent, false);
        assert_eq!(last.len(), 1);
        assert!(last[0].terminal);
    }
}
