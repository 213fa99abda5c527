//! Expiry of deposit codes: the lapse that every operation and the server's sweep apply, a
//! refresh that issues a new code, and the sandbox control that lapses one now.

use crate::clock::Millis;

use super::{CashIn, Refusal, Status, Store, SubStatus};

// === impl Store ===

impl Store {
    /// Moves every pending cash-in whose code has lapsed to `expired`, dated at the lapse.
    pub(crate) fn expire_due(&mut self, now: Millis) -> usize {
        let mut n = 0;
        for ci in self.cash_ins.values_mut() {
            if ci.status == Status::Pending && ci.code_expires_at <= now {
                ci.status = Status::Expired;
                ci.sub_status = Some(SubStatus::CashDepositExpired);
                ci.updated_at = ci.code_expires_at;
                n += 1;
            }
        }
        n
    }

    /// A new code and a new expiry; the old code dies with it.
    pub(crate) fn refresh(
        &mut self,
        id: &str,
        now: Millis,
        code_ttl: Millis,
    ) -> Result<&CashIn, Refusal> {
        self.expire_due(now);
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
        ci.updated_at = now;
        Ok(ci)
    }

    /// Sandbox control: lapse the code now.
    pub(crate) fn force_expire(&mut self, id: &str, now: Millis) -> Result<&CashIn, Refusal> {
        self.expire_due(now);
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
        ci.updated_at = now;
        Ok(ci)
    }
}
