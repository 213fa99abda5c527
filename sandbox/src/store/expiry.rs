//! Expiry, as the guide describes it: a deposit code lapses after its lifetime, but the cash-in
//! stays `pending` through a refresh window after that, during which a refresh issues a new code
//! and a new expiry; only once the window has passed is the cash-in `expired` (terminal, a
//! refresh is then 422, and `cash_in.expired` is sent). A lapsed code is dead at the counter at
//! once. The window is the sandbox's setting (the docs give no length). Also the sandbox
//! control that expires a cash-in now.

use crate::clock::{Millis, whole_second};

use super::events::EventKind;
use super::{CashIn, Refusal, Status, Store, SubStatus};

// === impl Store ===

impl Store {
    /// Moves every pending cash-in whose refresh window has passed to `expired`, dated at the
    /// window's end.
    pub(crate) fn expire_due(&mut self, now: Millis) -> usize {
        let mut n = 0;
        for ci in self.cash_ins.values_mut() {
            let end = ci.code_expires_at.saturating_add(self.refresh_window);
            if ci.status == Status::Pending && end <= now {
                ci.status = Status::Expired;
                ci.sub_status = Some(SubStatus::CashDepositExpired);
                ci.updated_at = whole_second(end);
                self.outbox
                    .push(EventKind::CashInExpired, ci, whole_second(end));
                n += 1;
            }
        }
        n
    }

    /// A new code and a new expiry, also for a lapsed code within the refresh window; the old
    /// code dies with it.
    pub(crate) fn refresh(
        &mut self,
        id: &str,
        now: Millis,
        code_ttl: Millis,
    ) -> Result<&CashIn, Refusal> {
        self.advance(now);
        let (status, old_code) = match self.cash_ins.get(id) {
            Some(ci) => (ci.status, ci.code.clone()),
            None => return Err(Refusal::NotFound),
        };
        if status != Status::Pending {
            return Err(Refusal::InvalidState {
                status,
                action: "refresh",
            });
        }
        let code = self.new_code(Some(&old_code));
        let ci = self.cash_ins.get_mut(id).ok_or(Refusal::NotFound)?;
        ci.code = code;
        ci.code_expires_at = now.saturating_add(code_ttl);
        ci.updated_at = whole_second(now);
        Ok(ci)
    }

    /// Sandbox control: expire the cash-in now, refresh window or not.
    pub(crate) fn force_expire(&mut self, id: &str, now: Millis) -> Result<&CashIn, Refusal> {
        self.advance(now);
        let ci = self.cash_ins.get_mut(id).ok_or(Refusal::NotFound)?;
        if ci.status != Status::Pending {
            return Err(Refusal::InvalidState {
                status: ci.status,
                action: "expire",
            });
        }
        ci.status = Status::Expired;
        ci.sub_status = Some(SubStatus::CashDepositExpired);
        // The code is dead from now on, and the instructions should say so.
        ci.code_expires_at = ci.code_expires_at.min(now);
        ci.updated_at = whole_second(now);
        self.outbox
            .push(EventKind::CashInExpired, ci, whole_second(now));
        Ok(ci)
    }
}

/// Whether a cash-in's code can be used at a counter now.
pub(super) fn code_live(ci: &CashIn, now: Millis) -> bool {
    ci.status == Status::Pending && ci.code_expires_at > now
}
