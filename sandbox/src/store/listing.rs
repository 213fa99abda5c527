//! Listing: the filters and cursors of `GET /cash-ins`, and the newest-first pages they cut
//! from the table, in either paging direction.

use crate::clock::{Millis, ms_to_nanos};

use super::{CashIn, Refusal, Status, Store};

/// Which page of the newest-first list to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cursor {
    StartingAfter(String),
    EndingBefore(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery {
    pub(crate) customer: Option<String>,
    pub(crate) status: Option<Status>,
    /// Inclusive bounds, in nanoseconds since the epoch.
    pub(crate) created_after: Option<i128>,
    pub(crate) created_before: Option<i128>,
    pub(crate) limit: usize,
    pub(crate) cursor: Option<Cursor>,
}

pub(crate) struct Page<'a> {
    pub(crate) items: Vec<&'a CashIn>,
    pub(crate) has_more: bool,
    pub(crate) next_cursor: Option<String>,
}

// === impl ListQuery ===

impl ListQuery {
    /// Whether a cash-in passes every filter (the cursor and limit aside).
    fn matches(&self, c: &CashIn) -> bool {
        let t = ms_to_nanos(c.created_at);
        self.customer
            .as_ref()
            .is_none_or(|v| &c.spec.customer_id == v)
            && self.status.is_none_or(|s| c.status == s)
            && self.created_after.is_none_or(|a| t >= a)
            && self.created_before.is_none_or(|b| t <= b)
    }
}

// === impl Store ===

impl Store {
    pub(crate) fn list(&mut self, q: &ListQuery, now: Millis) -> Result<Page<'_>, Refusal> {
        self.advance(now);
        let cursor_key = self.cursor_key(q.cursor.as_ref())?;
        let mut items: Vec<&CashIn> = self.cash_ins.values().filter(|c| q.matches(c)).collect();
        // Newest first; the sequence breaks ties within a millisecond.
        items.sort_by_key(|c| std::cmp::Reverse(c.order_key()));
        let limit = q.limit.max(1);
        Ok(match (&q.cursor, cursor_key) {
            (Some(Cursor::EndingBefore(_)), Some(key)) => page_newer(items, key, limit),
            (_, key) => page_older(items, key, limit),
        })
    }

    /// Where the cursor's cash-in sorts; a cursor that names none is refused.
    fn cursor_key(&self, cursor: Option<&Cursor>) -> Result<Option<(Millis, u64)>, Refusal> {
        let (id, param) = match cursor {
            None => return Ok(None),
            Some(Cursor::StartingAfter(id)) => (id, "startingAfter"),
            Some(Cursor::EndingBefore(id)) => (id, "endingBefore"),
        };
        let key = self.cash_ins.get(id).map(CashIn::order_key);
        key.map(Some).ok_or(Refusal::UnknownCursor { param })
    }
}

/// `endingBefore`: the `limit` items just newer than the cursor, still listed newest first;
/// "more" means there are newer ones still, reached from the first item.
fn page_newer(items: Vec<&CashIn>, key: (Millis, u64), limit: usize) -> Page<'_> {
    let newer: Vec<&CashIn> = items.into_iter().filter(|c| c.order_key() > key).collect();
    let has_more = newer.len() > limit;
    let start = newer.len().saturating_sub(limit);
    let items: Vec<&CashIn> = newer.into_iter().skip(start).collect();
    let next_cursor = has_more
        .then(|| items.first().map(|c| c.id.clone()))
        .flatten();
    Page {
        items,
        has_more,
        next_cursor,
    }
}

/// The first page, or `startingAfter`: the `limit` items just older than the cursor, if any;
/// "more" means there are older ones still, reached from the last item.
fn page_older(items: Vec<&CashIn>, key: Option<(Millis, u64)>, limit: usize) -> Page<'_> {
    let mut older: Vec<&CashIn> = items
        .into_iter()
        .filter(|c| key.is_none_or(|k| c.order_key() < k))
        .collect();
    let has_more = older.len() > limit;
    older.truncate(limit);
    let next_cursor = has_more
        .then(|| older.last().map(|c| c.id.clone()))
        .flatten();
    Page {
        items: older,
        has_more,
        next_cursor,
    }
}
