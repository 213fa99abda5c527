//! Watch events as they go on the wire: encoded once per observation and shared, as bytes, by
//! every stream they go to.
//!
//! Fifty thousand streams on one cash-in all send the same CHANGED event when it moves: its
//! `changed_fields` and `previous_status` depend only on what the stream last saw, and streams
//! that saw the same state hold the same `Arc` of it. So each observation carries an
//! [`EventCache`]: the first stream to need an event encodes it, keyed by (kind, the state it
//! last sent, the new state) by pointer, and the others copy its bytes into their HTTP/2 frames.
//! No stream clones a CashIn, and no event is encoded twice for one observation.

use crate::proto::v1 as pb;
use bytes::Bytes;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One encoded `CashInEvent`: what a watch stream yields (see `codec::EventCodec`).
#[derive(Debug, Clone)]
pub struct Encoded(pub Bytes);

impl Encoded {
    /// Encodes `event`.
    pub fn new(event: &pb::CashInEvent) -> Self {
        Self(Bytes::from(event.encode_to_vec()))
    }

    /// A HEARTBEAT event observed now.
    pub fn heartbeat() -> Self {
        Self::new(&pb::CashInEvent {
            r#type: pb::CashInEventType::Heartbeat as i32,
            observed_at: Some(SystemTime::now().into()),
            ..Default::default()
        })
    }

    /// The event, decoded (for the generated service trait, and tests).
    pub fn decode(&self) -> Result<pb::CashInEvent, prost::DecodeError> {
        pb::CashInEvent::decode(self.0.clone())
    }
}

/// What identifies an event of one observation: its kind, the state the stream last sent (none
/// for INITIAL and ADDED) and the new state, the two by pointer. Each entry holds both `Arc`s, so
/// neither address can be reused while it is cached.
struct Entry {
    kind: pb::CashInEventType,
    previous: Option<Arc<pb::CashIn>>,
    item: Arc<pb::CashIn>,
    bytes: Bytes,
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
    /// The event of kind `kind` about `item` for a stream that last sent `previous`, observed at
    /// `at`: encoded by the first stream that needs it, then shared.
    pub fn event(
        &self,
        kind: pb::CashInEventType,
        previous: Option<&Arc<pb::CashIn>>,
        item: &Arc<pb::CashIn>,
        changed_fields: &[&'static str],
        at: SystemTime,
    ) -> Encoded {
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
            return Encoded(hit.bytes.clone());
        }
        let encoded = Encoded::new(&pb::CashInEvent {
            cash_in: Some(pb::CashIn::clone(item)),
            r#type: kind as i32,
            previous_status: previous.map_or(0, |p| p.status),
            changed_fields: changed_fields.iter().map(|f| (*f).to_owned()).collect(),
            observed_at: Some(at.into()),
        });
        if entries.len() < MAX_ENTRIES {
            entries.push(Entry {
                kind,
                previous: previous.cloned(),
                item: item.clone(),
                bytes: encoded.0.clone(),
            });
        }
        encoded
    }
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
        let a = cache.event(kind, Some(&pending), &processing, &["status"], at);
        let b = cache.event(kind, Some(&pending), &processing, &["status"], at);
        assert_eq!(
            a.0.as_ptr(),
            b.0.as_ptr(),
            "the second stream reuses the bytes"
        );
        let decoded = a.decode().unwrap();
        assert_eq!(decoded.r#type, kind as i32);
        assert_eq!(decoded.previous_status, pb::CashInStatus::Pending as i32);
        assert_eq!(decoded.changed_fields, ["status"]);
        assert_eq!(decoded.cash_in.as_ref(), Some(&*processing));
        // An equal state that is another allocation (another observation) is another entry.
        let other = cash_in(pb::CashInStatus::Pending);
        let c = cache.event(kind, Some(&other), &processing, &["status"], at);
        assert_ne!(a.0.as_ptr(), c.0.as_ptr());
        let initial = cache.event(pb::CashInEventType::Initial, None, &processing, &[], at);
        assert_eq!(initial.decode().unwrap().previous_status, 0);
    }
}
