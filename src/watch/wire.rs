//! Watch events as they go on the wire: encoded once per observation and shared, as bytes, by
//! every stream they go to.
//!
//! Fifty thousand streams on one cash-in all send the same CHANGED event when it moves: its
//! `changed_fields` and `previous_status` depend only on what the stream last saw, and streams
//! that saw the same state hold the same `Arc` of it. So each observation carries an
//! [`EventCache`]: the first stream to need an event encodes it, keyed by (kind, the state it
//! last sent, the new state) by pointer, and the others share its bytes, framed as a gRPC
//! message, which their HTTP/2 bodies send as they are (h2 copies them once, into the
//! connection's write buffer). No stream clones a CashIn, and no event is encoded twice for one
//! observation.

use super::diff;
use crate::proto::v1 as pb;
use bytes::Bytes;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One `CashInEvent` as it goes on the wire: a gRPC message, its 5-byte prefix (not compressed,
/// the length) and the encoded event, so a stream's HTTP/2 body sends these very bytes
/// (`service::watch_route`) without copying them into a buffer of its own.
#[derive(Debug, Clone)]
pub struct Encoded(Bytes);

/// The gRPC message prefix: the compressed flag and the length, big-endian.
const PREFIX: usize = 5;

impl Encoded {
    /// Encodes `event`.
    pub fn new(event: &pb::CashInEvent) -> Self {
        // Once per observation (not per stream): encoded, then framed.
        let message = event.encode_to_vec();
        let mut framed = Vec::with_capacity(PREFIX + message.len());
        framed.push(0);
        // A CashInEvent is a few hundred bytes; the body refuses one over the message limit
        // (far under 4 GiB) before sending it, so the saturated length is never sent.
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&message);
        Self(Bytes::from(framed))
    }

    /// A HEARTBEAT event observed now.
    pub fn heartbeat() -> Self {
        Self::new(&pb::CashInEvent {
            r#type: pb::CashInEventType::Heartbeat as i32,
            observed_at: Some(SystemTime::now().into()),
            ..Default::default()
        })
    }

    /// The message with its prefix: what goes in the DATA frame (shared, not copied).
    pub fn framed(&self) -> Bytes {
        self.0.clone()
    }

    /// The encoded event alone.
    pub fn message(&self) -> &[u8] {
        &self.0[PREFIX..]
    }

    /// The event, decoded again.
    #[cfg(test)]
    pub fn decode(&self) -> Result<pb::CashInEvent, prost::DecodeError> {
        pb::CashInEvent::decode(self.message())
    }
}

/// What identifies an event of one observation: its kind, the state the stream last sent (none
/// for INITIAL and ADDED) and the new state, the two by pointer. Each entry holds both `Arc`s, so
/// neither address can be reused while it is cached.
struct Entry {
    kind: pb::CashInEventType,
    previous: Option<Arc<pb::CashIn>>,
    item: Arc<pb::CashIn>,
    /// None: nothing a client sees changed between the two states, so there is no event.
    event: Option<Encoded>,
}

/// The events of one observation encoded so far. Usually one or two entries: every stream that
/// saw the previous state shares one CHANGED event.
#[derive(Default)]
pub struct EventCache {
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for EventCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("EventCache")
            .field("entries", &entries)
            .finish()
    }
}

/// Entries beyond which a cache stops remembering (streams that saw many different states:
/// each still gets its event, encoded for it).
const MAX_ENTRIES: usize = 64;

impl EventCache {
    /// The INITIAL or ADDED event (`kind`) about `item`, observed at `at`: encoded by the first
    /// stream that needs it, then shared.
    pub fn event(
        &self,
        kind: pb::CashInEventType,
        item: &Arc<pb::CashIn>,
        at: SystemTime,
    ) -> Encoded {
        let made = self.shared(kind, None, item, || Some(encode(kind, None, item, &[], at)));
        made.unwrap_or_else(|| encode(kind, None, item, &[], at))
    }

    /// The CHANGED event about `item` for a stream that last sent `previous`, observed at `at`,
    /// or None when nothing a client sees changed. What changed is worked out, and the event
    /// encoded, by the first stream that saw `previous`; the others share both.
    pub fn changed(
        &self,
        previous: &Arc<pb::CashIn>,
        item: &Arc<pb::CashIn>,
        at: SystemTime,
    ) -> Option<Encoded> {
        let kind = pb::CashInEventType::Changed;
        self.shared(kind, Some(previous), item, || {
            let changed = diff::changed_fields(previous, item);
            (!changed.is_empty()).then(|| encode(kind, Some(previous), item, &changed, at))
        })
    }

    /// The cached entry for (kind, previous, item), made by `make` the first time.
    fn shared(
        &self,
        kind: pb::CashInEventType,
        previous: Option<&Arc<pb::CashIn>>,
        item: &Arc<pb::CashIn>,
        make: impl FnOnce() -> Option<Encoded>,
    ) -> Option<Encoded> {
        let same = |e: &Entry| {
            e.kind == kind
                && Arc::ptr_eq(&e.item, item)
                && match (&e.previous, previous) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                }
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = entries.iter().find(|e| same(e)) {
            return hit.event.clone();
        }
        let event = make();
        if entries.len() < MAX_ENTRIES {
            entries.push(Entry {
                kind,
                previous: previous.cloned(),
                item: item.clone(),
                event: event.clone(),
            });
        }
        event
    }
}

/// One event, encoded.
fn encode(
    kind: pb::CashInEventType,
    previous: Option<&Arc<pb::CashIn>>,
    item: &pb::CashIn,
    changed_fields: &[&'static str],
    at: SystemTime,
) -> Encoded {
    Encoded::new(&pb::CashInEvent {
        cash_in: Some(item.clone()),
        r#type: kind as i32,
        previous_status: previous.map_or(0, |p| p.status),
        previous_delivery_status: previous
            .and_then(|p| p.delivery.as_ref())
            .map_or(0, |d| d.status),
        changed_fields: changed_fields.iter().map(|f| (*f).to_owned()).collect(),
        observed_at: Some(at.into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cash_in(status: pb::CashInStatus) -> Arc<pb::CashIn> {
        Arc::new(pb::CashIn {
            id: "ci_1".into(),
            status: status as i32,
            ..Default::default()
        })
    }

    #[test]
    fn streams_that_saw_the_same_state_share_one_encoding_and_others_get_their_own() {
        let cache = EventCache::default();
        let at = SystemTime::now();
        let (pending, processing) = (
            cash_in(pb::CashInStatus::Pending),
            cash_in(pb::CashInStatus::Processing),
        );
        let kind = pb::CashInEventType::Changed;
        let a = cache.changed(&pending, &processing, at).unwrap();
        let b = cache.changed(&pending, &processing, at).unwrap();
        assert_eq!(
            a.message().as_ptr(),
            b.message().as_ptr(),
            "the second stream reuses the bytes"
        );
        let decoded = a.decode().unwrap();
        assert_eq!(decoded.r#type, kind as i32);
        assert_eq!(decoded.previous_status, pb::CashInStatus::Pending as i32);
        assert_eq!(decoded.changed_fields, ["status"]);
        assert_eq!(decoded.cash_in.as_ref(), Some(&*processing));
        // An equal state that is another allocation (another observation) is another entry.
        let other = cash_in(pb::CashInStatus::Pending);
        let c = cache.changed(&other, &processing, at).unwrap();
        assert_ne!(a.message().as_ptr(), c.message().as_ptr());
        let initial = cache.event(pb::CashInEventType::Initial, &processing, at);
        assert_eq!(initial.decode().unwrap().previous_status, 0);
        assert_eq!(
            initial.decode().unwrap().r#type,
            pb::CashInEventType::Initial as i32
        );
    }

    #[test]
    fn a_state_that_differs_only_in_what_clients_do_not_see_is_no_event_for_any_stream() {
        let cache = EventCache::default();
        let at = SystemTime::now();
        let before = cash_in(pb::CashInStatus::Pending);
        let mut touched = pb::CashIn::clone(&before);
        touched.updated_at = Some(prost_types::Timestamp {
            seconds: 7,
            nanos: 0,
        });
        let touched = Arc::new(touched);
        assert!(cache.changed(&before, &touched, at).is_none());
        assert!(
            cache.changed(&before, &touched, at).is_none(),
            "and the answer is kept"
        );
        let moved = cash_in(pb::CashInStatus::Completed);
        let event = cache
            .changed(&before, &moved, at)
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(event.changed_fields, ["status"]);
    }
}
