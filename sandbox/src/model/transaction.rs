//! A cash-in's transaction as the guide's `transaction.fiatToCrypto.*` webhooks show it: the
//! object OMS creates when the deposit is committed, linked back by `cashIn`, with the cash-in's
//! final pricing on both sides, `source.txHash` always null (the source is cash), the
//! destination's `txHash` once delivered, and `error` once failed. No read endpoint for it is
//! documented, so only webhooks (and the sandbox's own control) show it.

use serde_json::{Value, json};

use crate::Spelling;
use crate::clock::format_ms;
use crate::pricing::format_cents;
use crate::store::CashIn;

use super::{Obj, fees_deducted, render_metadata, render_rates, render_wallet, zero_fees};

/// The transaction of `ci`, if it has one, in the given spelling (absent values are `null` in
/// the guide's, omitted in the schema's, as for the cash-in itself).
pub(crate) fn render_transaction(ci: &CashIn, spelling: &Spelling) -> Option<Value> {
    let delivery = ci.delivery.as_ref()?;
    let spec = &ci.spec;
    let q = ci.quote();
    let money = |c| Value::String(format_cents(c));
    let source = Obj::new(spelling)
        .put("asset", "usd")
        .put("network", "cash")
        .put("amountGross", money(q.amount))
        .put("amountNet", money(q.net))
        .put("feesDeducted", fees_deducted(&q))
        .opt("txHash", None::<String>)
        .build();
    let destination = Obj::new(spelling)
        .put("wallet", render_wallet(&spec.wallet, spelling))
        .put("asset", spec.dest_asset.as_str())
        .put("network", spec.network.as_str())
        .put("amountGross", money(q.net))
        .put("amountNet", money(q.net))
        .put("feesDeducted", zero_fees())
        .opt("txHash", delivery.tx_hash.clone())
        .build();
    let error = delivery
        .error
        .as_ref()
        .map(|e| json!({"code": e.code, "message": e.message}));
    let mut o = Obj::new(spelling);
    o.put("id", delivery.id.as_str())
        .put("object", "transaction")
        .put("type", "fiatToCrypto")
        .put("status", delivery.step.status())
        .opt("subStatus", delivery.step.sub_status())
        .put("customerId", spec.customer_id.as_str())
        .opt("quoteId", None::<String>)
        .opt("depositAddress", None::<String>)
        .opt("virtualAccount", None::<String>)
        .put("cashIn", ci.id.as_str())
        .put("source", source)
        .put("destination", destination)
        .put("fixedAmountSide", "source")
        .opt("sponsorGasCost", spec.sponsor_gas.then_some("0.00"))
        .put("sponsorGas", spec.sponsor_gas)
        .put("rates", render_rates(ci, &q))
        .opt("estimatedArrival", None::<String>)
        .opt("error", error);
    if let Some(metadata) = render_metadata(ci) {
        o.put("metadata", metadata);
    }
    o.put("createdAt", format_ms(delivery.created_at))
        .put("updatedAt", format_ms(delivery.updated_at));
    Some(o.build())
}
