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
//! deadline and its heartbeat timers (in the stream's own allocation), and an event moves no
//! timer: the heartbeat timer, when it fires early, is moved to a whole interval after the last
//! event. While a caller does not read
//! (its HTTP/2 window is full) hyper does not poll the body, so the stream holds nothing but its
//! state, and reads the latest observation when the window opens; a caller that gives up resets
//! the stream (gRPC clients do at their own deadline), which drops it.

use super::wire::{Encoded, EventCache};
use super::{Observation, Subscription, diff};
use crate::error::GatewayError;
use crate::proto::v1 as pb;
use futures_util::Stream;
use pin_project_lite::pin_project;
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
    /// One cash-in: ends after its terminal state and, unless `cash_in_only`, once its delivery
    /// is over too (see [`diff::is_settled`]).
    Single {
        /// Follow the cash-in layer only: no event for a change of the delivery alone.
        cash_in_only: bool,
    },
    /// A customer's cash-ins in these statuses (empty: all); runs until deadline or cancel.
    Filter {
        /// The statuses to report.
        statuses: StatusSet,
        /// As for `Single`.
        cash_in_only: bool,
    },
}

impl Mode {
    fn cash_in_only(&self) -> bool {
        match self {
            Mode::Single { cash_in_only } | Mode::Filter { cash_in_only, .. } => *cash_in_only,
        }
    }

    /// The same mode, following the cash-in layer only if `cash_in_only`.
    fn with_cash_in_only(&self, cash_in_only: bool) -> Mode {
        match *self {
            Mode::Single { .. } => Mode::Single { cash_in_only },
            Mode::Filter { statuses, .. } => Mode::Filter {
                statuses,
                cash_in_only,
            },
        }
    }
}

/// A set of cash-in statuses, one bit per status value: a stream's filter is one word however
/// the request spelled it (duplicates and all), and asking it about an event is one shift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusSet(u64);

// === impl StatusSet ===

impl StatusSet {
    /// Whether no status is in the set (a filter that lets every status through).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `status` (a `CashInStatus` value) is in the set; never for a value out of range.
    pub fn contains(self, status: i32) -> bool {
        u32::try_from(status)
            .ok()
            .and_then(|bit| 1u64.checked_shl(bit))
            .is_some_and(|bit| self.0 & bit != 0)
    }
}

impl FromIterator<pb::CashInStatus> for StatusSet {
    fn from_iter<I: IntoIterator<Item = pb::CashInStatus>>(statuses: I) -> Self {
        let bits = statuses
            .into_iter()
            .filter_map(|status| u32::try_from(status as i32).ok())
            .filter_map(|bit| 1u64.checked_shl(bit))
            .fold(0, |set, bit| set | bit);
        Self(bits)
    }
}

/// The stream type of both watch RPCs: events, encoded, then the closing status if any (none
/// means OK).
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

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
    let now = Instant::now();
    Box::pin(Events {
        inner: Inner {
            subscription,
            observations,
            sent: Sent::new(&mode),
            mode,
            heartbeat,
            last_sent: now,
            first: true,
            pending: Vec::new(),
            state: State::Open,
        },
        deadline: deadline.map(tokio::time::sleep_until),
        beat: tokio::time::sleep_until(now + heartbeat),
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

pin_project! {
    /// One stream: its state and its two timers, in one allocation (a fan-out touches every
    /// stream, so each separate allocation would be one more cache miss per delivery).
    struct Events {
        inner: Inner,
        #[pin]
        deadline: Option<Sleep>,
        // Fires `heartbeat` after the last event *armed*; an event does not re-arm it (that
        // would be a timer-wheel move per delivery): when it fires early it is moved to
        // `heartbeat` after the last event, and only a stream quiet that long gets a HEARTBEAT.
        #[pin]
        beat: Sleep,
    }
}

/// The state of one stream.
struct Inner {
    subscription: Subscription,
    observations: WatchStream<Observation>,
    mode: Mode,
    heartbeat: Duration,
    /// When the last event went out.
    last_sent: Instant,
    sent: Sent,
    first: bool,
    /// The events of the latest observation not yet sent, last first.
    pending: Vec<Encoded>,
    state: State,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.subscription.track(self.sent.len(), 0);
    }
}

impl Inner {
    /// Takes in an observation: its events join `pending`, or it ends the stream.
    fn observe(&mut self, observation: Observation) {
        match observation {
            Observation::Waiting => {}
            Observation::Ended(err) => self.state = State::Closing(err.into()),
            Observation::Seen {
                items, at, events, ..
            } => {
                let before = self.sent.len();
                debug_assert!(
                    self.pending.is_empty(),
                    "observations are read between events"
                );
                // A delivery may stop being followable (the transaction read turned out not to
                // be served and no webhooks come): the stream then ends at the cash-in layer.
                let cash_in_only =
                    self.mode.cash_in_only() || !self.subscription.hub.follows_deliveries();
                let mode = self.mode.with_cash_in_only(cash_in_only);
                let mut terminal = events_for(
                    &mode,
                    &items,
                    at,
                    &events,
                    &mut self.sent,
                    self.first,
                    &mut self.pending,
                );
                self.pending.reverse();
                terminal |= matches!(&self.sent, Sent::One(Some(sent))
                    if matches!(self.mode, Mode::Single { .. })
                        && diff::is_settled(sent, cash_in_only));
                self.subscription.track(before, self.sent.len());
                self.first = false;
                if terminal {
                    self.state = State::EndingOk;
                }
            }
        }
    }

    fn sent_one(&mut self, event: Encoded) -> Poll<Option<Result<Encoded, Status>>> {
        self.last_sent = Instant::now();
        Poll::Ready(Some(Ok(event)))
    }
}

impl Stream for Events {
    type Item = Result<Encoded, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        let inner = this.inner;
        loop {
            match std::mem::replace(&mut inner.state, State::Done) {
                State::Done => return Poll::Ready(None),
                State::Closing(status) => return Poll::Ready(Some(Err(status))),
                state @ (State::Open | State::EndingOk) => inner.state = state,
            }
            if let Some(deadline) = this.deadline.as_mut().as_pin_mut()
                && deadline.poll(cx).is_ready()
            {
                inner.state = State::Done;
                let err = GatewayError::DeadlineExceeded(
                    "the watch reached the caller's deadline".into(),
                );
                return Poll::Ready(Some(Err(err.into())));
            }
            // An observation's events all go out before the next observation is read (each is
            // relative to what the caller was last sent); the channel keeps only the latest, so
            // a slow caller skips states rather than queueing them.
            if let Some(event) = inner.pending.pop() {
                return inner.sent_one(event);
            }
            if matches!(inner.state, State::EndingOk) {
                inner.state = State::Done;
                return Poll::Ready(None);
            }
            match Pin::new(&mut inner.observations).poll_next(cx) {
                Poll::Ready(Some(observation)) => {
                    inner.observe(observation);
                    continue;
                }
                Poll::Ready(None) => {
                    // The poller is gone without a final word; should not happen while subscribed.
                    let err =
                        GatewayError::Unavailable("the watch poller stopped; reconnect".into());
                    inner.state = State::Closing(err.into());
                    continue;
                }
                Poll::Pending => {}
            }
            loop {
                if this.beat.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let due = inner.last_sent + inner.heartbeat;
                let now = Instant::now();
                if due <= now {
                    this.beat.as_mut().reset(now + inner.heartbeat);
                    return inner.sent_one(Encoded::heartbeat());
                }
                this.beat.as_mut().reset(due);
            }
        }
    }
}

/// What a stream last sent, per cash-in id: the observation's own `Arc`s, never a copy. A
/// single-cash-in stream keeps its one entry in place, so a delivery touches no map.
enum Sent {
    /// A single-cash-in stream (its observations hold that one cash-in).
    One(Option<Arc<pb::CashIn>>),
    /// A customer's stream.
    Many(HashMap<String, Arc<pb::CashIn>>),
}

impl Sent {
    fn new(mode: &Mode) -> Self {
        match mode {
            Mode::Single { .. } => Sent::One(None),
            Mode::Filter { .. } => Sent::Many(HashMap::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Sent::One(one) => usize::from(one.is_some()),
            Sent::Many(map) => map.len(),
        }
    }

    fn get(&self, id: &str) -> Option<&Arc<pb::CashIn>> {
        match self {
            Sent::One(one) => one.as_ref().filter(|sent| sent.id == id),
            Sent::Many(map) => map.get(id),
        }
    }

    /// Remembers `item` as the last sent state of its cash-in.
    fn set(&mut self, item: &Arc<pb::CashIn>) {
        match self {
            Sent::One(one) => *one = Some(item.clone()),
            Sent::Many(map) => match map.get_mut(&item.id) {
                Some(slot) => *slot = item.clone(),
                None => {
                    map.insert(item.id.clone(), item.clone());
                }
            },
        }
    }

    fn remove(&mut self, id: &str) {
        match self {
            Sent::One(one) => {
                if one.as_ref().is_some_and(|sent| sent.id == id) {
                    *one = None;
                }
            }
            Sent::Many(map) => {
                map.remove(id);
            }
        }
    }

    /// Forgets the cash-ins that are not among `items`.
    fn keep_only(&mut self, items: &[Arc<pb::CashIn>]) {
        if self.len() <= items.len() {
            return;
        }
        let present: HashSet<&str> = items.iter().map(|c| c.id.as_str()).collect();
        match self {
            Sent::One(one) => {
                if one
                    .as_ref()
                    .is_some_and(|sent| !present.contains(sent.id.as_str()))
                {
                    *one = None;
                }
            }
            Sent::Many(map) => map.retain(|id, _| present.contains(id.as_str())),
        }
    }
}

/// Appends to `out` the events an observation produces for a stream that last sent `sent`, and
/// says whether the last reports a terminal state. Afterwards `sent` holds no more cash-ins than
/// the observation: one that left it (fell out of the newest cash-ins a customer poll reads) can
/// never be reported again, so it is forgotten, and a stream's memory is bounded by one
/// observation whatever the customer's history.
fn events_for(
    mode: &Mode,
    items: &[Arc<pb::CashIn>],
    at: SystemTime,
    cache: &EventCache,
    sent: &mut Sent,
    first: bool,
    out: &mut Vec<Encoded>,
) -> bool {
    let mut terminal = false;
    let cash_in_only = mode.cash_in_only();
    let mut push = |event: Encoded, item: &pb::CashIn| {
        terminal |= matches!(mode, Mode::Single { .. }) && diff::is_settled(item, cash_in_only);
        out.push(event);
    };
    // Oldest first, so a caller sees cash-ins in the order they were created.
    for item in items.iter().rev() {
        let wanted = match mode {
            Mode::Single { .. } => true,
            Mode::Filter { statuses, .. } => statuses.is_empty() || statuses.contains(item.status),
        };
        match sent.get(&item.id) {
            None if wanted => {
                let kind = if first {
                    pb::CashInEventType::Initial
                } else {
                    pb::CashInEventType::Added
                };
                push(cache.event(kind, item, at), item);
                sent.set(item);
            }
            None => {}
            Some(previous) if Arc::ptr_eq(previous, item) => {}
            // A change of the delivery alone, to a stream on the cash-in layer only: not
            // reported (its next event names it with what else changed).
            Some(previous)
                if cash_in_only
                    && !diff::cash_in_layer_changed(&diff::changed_fields(previous, item)) => {}
            Some(previous) => {
                // Reported even when it leaves the filter, so the caller sees it go.
                if let Some(event) = cache.changed(previous, item, at) {
                    push(event, item);
                    if wanted {
                        sent.set(item);
                    } else {
                        sent.remove(&item.id);
                    }
                }
            }
        }
    }
    sent.keep_only(items);
    terminal
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

    /// The events `events_for` appends, decoded, and whether the last is terminal.
    fn run(
        mode: &Mode,
        items: &[Arc<pb::CashIn>],
        sent: &mut Sent,
        first: bool,
    ) -> (Vec<pb::CashInEvent>, bool) {
        let cache = EventCache::default();
        let mut out = Vec::new();
        let terminal = events_for(
            mode,
            items,
            SystemTime::now(),
            &cache,
            sent,
            first,
            &mut out,
        );
        let events = out.iter().map(|e| e.decode().unwrap()).collect();
        (events, terminal)
    }

    #[test]
    fn a_filter_stream_reports_initial_added_changed_and_leaving() {
        let mode = Mode::Filter {
            statuses: [pb::CashInStatus::Pending].into_iter().collect(),
            cash_in_only: false,
        };
        let mut sent = Sent::new(&mode);
        let (first, _) = run(
            &mode,
            &[cash_in("ci_1", pb::CashInStatus::Pending)],
            &mut sent,
            true,
        );
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].r#type, pb::CashInEventType::Initial as i32);
        let items = [
            cash_in("ci_2", pb::CashInStatus::Pending),
            cash_in("ci_1", pb::CashInStatus::Processing),
        ];
        let (next, _) = run(&mode, &items, &mut sent, false);
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
        assert!(run(&mode, &items, &mut sent, false).0.is_empty());
        // ci_2 fell out of the observation: forgotten, so a stream holds one observation at most.
        run(
            &mode,
            &[cash_in("ci_3", pb::CashInStatus::Pending)],
            &mut sent,
            false,
        );
        assert_eq!(sent.len(), 1);
        assert!(sent.get("ci_3").is_some() && sent.get("ci_2").is_none());
    }

    #[test]
    fn a_status_set_holds_each_status_once_in_one_word() {
        use pb::CashInStatus::{Completed, Expired, Pending};
        let set: StatusSet = [Pending, Completed, Pending, Pending].into_iter().collect();
        assert_eq!(set, [Completed, Pending].into_iter().collect());
        assert!(set.contains(Pending as i32) && set.contains(Completed as i32));
        assert!(!set.contains(Expired as i32));
        for odd in [-1, 64, 65, i32::MAX, i32::MIN] {
            assert!(!set.contains(odd), "{odd}");
        }
        assert!(StatusSet::default().is_empty() && !set.is_empty());
        assert_eq!(std::mem::size_of::<Mode>(), std::mem::size_of::<u64>() * 2);
    }

    /// A stream on the cash-in layer only (as before deliveries were followed).
    const SINGLE: Mode = Mode::Single { cash_in_only: true };

    fn delivered(
        status: pb::CashInStatus,
        delivery: Option<pb::DeliveryStatus>,
    ) -> Arc<pb::CashIn> {
        let mut cash_in = (*cash_in("ci_1", status)).clone();
        cash_in.transaction_id = Some("txn_1".into());
        cash_in.delivery = delivery.map(|status| pb::Delivery {
            transaction_id: "txn_1".into(),
            status: status as i32,
            ..Default::default()
        });
        Arc::new(cash_in)
    }

    #[test]
    fn a_single_stream_on_both_layers_ends_when_the_delivery_is_over_not_at_failed() {
        use pb::CashInStatus::{Completed, Expired, Processing};
        use pb::DeliveryStatus as D;
        let both = Mode::Single {
            cash_in_only: false,
        };
        let mut sent = Sent::new(&both);
        run(&both, &[cash_in("ci_1", Processing)], &mut sent, true);
        let (events, terminal) = run(&both, &[delivered(Completed, None)], &mut sent, false);
        assert_eq!(
            (events.len(), terminal),
            (1, false),
            "completed, delivery to come"
        );
        let (events, terminal) = run(
            &both,
            &[delivered(Completed, Some(D::Processing))],
            &mut sent,
            false,
        );
        assert_eq!((events.len(), terminal), (1, false));
        assert!(
            events[0]
                .changed_fields
                .iter()
                .all(|f| f.starts_with("delivery."))
        );
        let (events, terminal) = run(
            &both,
            &[delivered(Completed, Some(D::Failed))],
            &mut sent,
            false,
        );
        assert_eq!(
            (events.len(), terminal),
            (1, false),
            "a refund follows a failure"
        );
        assert_eq!(events[0].previous_delivery_status, D::Processing as i32);
        let refunded = [delivered(Completed, Some(D::RefundCompleted))];
        let (events, terminal) = run(&both, &refunded, &mut sent, false);
        assert_eq!((events.len(), terminal), (1, true));
        // An expired cash-in has no transaction: it ends there.
        let mut sent = Sent::new(&both);
        assert!(run(&both, &[cash_in("ci_2", Expired)], &mut sent, true).1);
        // On the cash-in layer only, a change of the delivery alone is no event.
        let mut sent = Sent::new(&SINGLE);
        assert!(run(&SINGLE, &[delivered(Completed, None)], &mut sent, true).1);
        let mut sent = Sent::new(&SINGLE);
        run(
            &SINGLE,
            &[delivered(Processing, Some(D::Processing))],
            &mut sent,
            true,
        );
        let quiet = run(
            &SINGLE,
            &[delivered(Processing, Some(D::Failed))],
            &mut sent,
            false,
        );
        assert_eq!(quiet, (vec![], false));
    }

    #[test]
    fn a_single_stream_flags_the_terminal_state() {
        let mut sent = Sent::new(&SINGLE);
        let pending = [cash_in("ci_1", pb::CashInStatus::Pending)];
        let (first, terminal) = run(&SINGLE, &pending, &mut sent, true);
        assert_eq!(first.len(), 1);
        assert!(!terminal);
        // The same state again (another poll, nothing moved): no event.
        let again = [cash_in("ci_1", pb::CashInStatus::Pending)];
        assert_eq!(run(&SINGLE, &again, &mut sent, false), (vec![], false));
        let done = [cash_in("ci_1", pb::CashInStatus::Completed)];
        let (last, terminal) = run(&SINGLE, &done, &mut sent, false);
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].previous_status, pb::CashInStatus::Pending as i32);
        assert!(terminal);
    }
}
