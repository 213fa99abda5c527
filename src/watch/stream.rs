//! One watch stream: reads its poller's latest observation and writes events to the caller.
//!
//! The stream remembers what it last sent per cash-in, so `changed_fields` and
//! `previous_status` are relative to what this caller saw (a slow caller that skipped states
//! gets one event naming everything that changed since). A quiet stream sends HEARTBEAT events.
//! It ends: with OK after sending a terminal state (single cash-in); with the poller's error
//! (NOT_FOUND, UNAVAILABLE, and the hub's UNAVAILABLE when the gateway shuts down); with
//! DEADLINE_EXCEEDED at the caller's deadline; or silently when the caller goes away — and in
//! every case its subscription is dropped, releasing its share of the poller.
//!
//! The stream is the HTTP/2 response body itself, polled by hyper's task for the stream: no
//! task, channel or buffer of its own. Fifty thousand streams woken by one change are fifty
//! thousand polls of this state machine, each registered once with the poller's channel, its
//! deadline and its heartbeat timers, never re-armed per event. While a caller does not read
//! (its HTTP/2 window is full) hyper does not poll the body, so the stream holds nothing but its
//! state, and reads the latest observation when the window opens; a caller that gives up resets
//! the stream (gRPC clients do at their own deadline), which drops it.

use super::wire::{Encoded, EventCache};
use super::{Observation, Subscription, diff};
use crate::error::GatewayError;
use crate::proto::v1 as pb;
use futures_util::Stream;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::time::{Instant, Sleep};
use tokio_stream::wrappers::WatchStream;
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

/// The stream type of both watch RPCs: events, encoded, then the closing status if any (none
/// means OK).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// What a stream last sent, per cash-in id: the observation's own `Arc`s, never a copy.
type Sent = HashMap<String, Arc<pb::CashIn>>;

/// The stream of `subscription`'s events for a caller watching in `mode` until `deadline`,
/// with a HEARTBEAT after `heartbeat` of quiet.
pub fn events(
    subscription: Subscription,
    mode: Mode,
    deadline: Option<Instant>,
    heartbeat: Duration,
) -> EventStream {
    // The current observation is reported at once (`WatchStream::new` yields it first).
    let observations = WatchStream::new(subscription.receiver.clone());
    Box::pin(Events {
        subscription,
        observations,
        mode,
        deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
        heartbeat,
        beat: Box::pin(tokio::time::sleep(heartbeat)),
        sent: HashMap::new(),
        first: true,
        pending: Vec::new(),
        state: State::Open,
    })
}

/// Where a stream is in its life.
enum State {
    Open,
    /// The last pending event is terminal: end with OK after it.
    EndingOk,
    /// End with this status (after nothing else).
    Closing(Status),
    Done,
}

/// The state of one stream.
struct Events {
    subscription: Subscription,
    observations: WatchStream<Observation>,
    mode: Mode,
    deadline: Option<Pin<Box<Sleep>>>,
    heartbeat: Duration,
    /// Re-armed only when an event goes out.
    beat: Pin<Box<Sleep>>,
    sent: Sent,
    first: bool,
    /// The events of the latest observation not yet sent, last first.
    pending: Vec<Encoded>,
    state: State,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.subscription.track(self.sent.len(), 0);
    }
}

impl Events {
    /// Takes in an observation: its events join `pending`, or it ends the stream.
    fn observe(&mut self, observation: Observation) {
        match observation {
            Observation::Waiting => {}
            Observation::Ended(err) => self.state = State::Closing(err.into()),
            Observation::Seen { items, at, events } => {
                let before = self.sent.len();
                let outgoing =
                    events_for(&self.mode, &items, at, &events, &mut self.sent, self.first);
                self.subscription.track(before, self.sent.len());
                self.first = false;
                let mut terminal = false;
                for Outgoing {
                    event,
                    terminal: last,
                } in outgoing.into_iter().rev()
                {
                    terminal |= last;
                    self.pending.push(event);
                }
                if terminal {
                    self.state = State::EndingOk;
                }
            }
        }
    }

    fn sent_one(&mut self, event: Encoded) -> Poll<Option<Result<Encoded, Status>>> {
        let deadline = Instant::now() + self.heartbeat;
        self.beat.as_mut().reset(deadline);
        Poll::Ready(Some(Ok(event)))
    }
}

impl Stream for Events {
    type Item = Result<Encoded, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match std::mem::replace(&mut this.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Closing(status) => return Poll::Ready(Some(Err(status))),
                state @ (State::Open | State::EndingOk) => this.state = state,
            }
            if let Some(deadline) = &mut this.deadline
                && deadline.as_mut().poll(cx).is_ready()
            {
                this.state = State::Done;
                let err = GatewayError::DeadlineExceeded(
                    "the watch reached the caller's deadline".into(),
                );
                return Poll::Ready(Some(Err(err.into())));
            }
            // An observation's events all go out before the next observation is read (each is
            // relative to what the caller was last sent); the channel keeps only the latest, so
            // a slow caller skips states rather than queueing them.
            if let Some(event) = this.pending.pop() {
                return this.sent_one(event);
            }
            if matches!(this.state, State::EndingOk) {
                this.state = State::Done;
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.observations).poll_next(cx) {
                Poll::Ready(Some(observation)) => {
                    this.observe(observation);
                    continue;
                }
                Poll::Ready(None) => {
                    // The poller is gone without a final word; should not happen while subscribed.
                    let err =
                        GatewayError::Unavailable("the watch poller stopped; reconnect".into());
                    this.state = State::Closing(err.into());
                    continue;
                }
                Poll::Pending => {}
            }
            if this.beat.as_mut().poll(cx).is_ready() {
                return this.sent_one(Encoded::heartbeat());
            }
            return Poll::Pending;
        }
    }
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
