//! Request validation, done before any upstream call. Every rule runs, and the violations are
//! reported at once (as BadRequest field violations, proto field paths) so a caller fixes its
//! request in one round trip: the first [`MAX_LISTED_VIOLATIONS`] of them, and how many there
//! were. A repeated field's or a map's count is checked before its entries: past its bound the
//! entries are not looked at, so no request buys more work than its bounds allow. A violation
//! quotes what the caller sent only when it is an id (shortened): amounts, assets, rates and
//! coordinates are never echoed, into the status or the logs it may reach.
//!
//! It checks shape, not business rules: what makes a request malformed (an id without its
//! documented prefix, an amount that is not a decimal string, a missing required part, more or
//! fewer than one wallet kind) and sizes that bound the gateway's own work. Amount limits,
//! fee caps and the like are OMS's to decide (its documentation states none but the example
//! provider's `max_transaction`); its 4xx comes back mapped like any other. A limit a gateway
//! invents can only refuse what OMS would accept.

use crate::error::{FieldViolation, GatewayError, MAX_LISTED_VIOLATIONS};
use crate::proto::v1 as pb;
use pb::create_cash_in_request::wallet::Kind;

/// Metadata bounds (those of Stripe-like APIs, which OMS resembles).
pub const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_CHARS: usize = 40;
const MAX_METADATA_VALUE_CHARS: usize = 500;
/// The most `developer_fees` entries of a CreateCashIn. Not an OMS rule (its pages state
/// none; the guide shows two): a bound on the gateway's work, set as high as the request
/// message bound allows with every other field at its own bound (the tests build that request).
pub const MAX_DEVELOPER_FEES: usize = 50;
/// The most `statuses` of a WatchCashIns: one per defined status other than UNSPECIFIED (a
/// longer list can only repeat one).
pub const MAX_WATCH_STATUSES: usize = 5;
/// The longest id, in characters. OMS documents prefixes, not lengths (its ids are a few dozen
/// characters): a bound on the gateway's work and on what an id adds to a log line, not a rule.
const MAX_ID_CHARS: usize = 256;
const MAX_REFERENCE_CHARS: usize = 1024;
/// The largest idempotency key, in printable ASCII characters.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// Collects violations; `finish` turns them into one INVALID_ARGUMENT. Keeps the first
/// [`MAX_LISTED_VIOLATIONS`] and counts the rest, so its memory is bounded however many there are.
#[derive(Default)]
pub struct Violations {
    listed: Vec<FieldViolation>,
    total: usize,
}

// === impl Violations ===

impl Violations {
    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED_VIOLATIONS {
            self.listed.push(FieldViolation {
                field: field.into(),
                description: description.into(),
            });
        }
    }

    /// Ok if nothing was recorded, else the violations at once.
    pub fn finish(self) -> Result<(), GatewayError> {
        if self.total == 0 {
            Ok(())
        } else {
            Err(GatewayError::Invalid {
                violations: self.listed,
                total: self.total,
            })
        }
    }

    /// Records a violation if `field` has more than `max` entries; true if it has not, and its
    /// entries may be looked at.
    pub fn at_most(&mut self, field: &str, count: usize, max: usize) -> bool {
        if count > max {
            self.add(field, format!("at most {max} entries; got {count}"));
        }
        count <= max
    }

    /// Checks a required id: present, `prefix` and then 1+ characters of `[A-Za-z0-9_-]`.
    pub fn required_id(&mut self, field: &str, value: &str, prefix: &str) {
        if value.is_empty() {
            self.add(
                field,
                format!("is required (an id starting with `{prefix}`)"),
            );
            return;
        }
        self.optional_id(field, value, prefix);
    }

    /// Checks an id that may be absent (empty); when present, as [`Self::required_id`].
    pub fn optional_id(&mut self, field: &str, value: &str, prefix: &str) {
        if value.is_empty() {
            return;
        }
        let rest = value.strip_prefix(prefix);
        let well_formed = rest.is_some_and(|rest| {
            !rest.is_empty()
                && value.len() <= MAX_ID_CHARS
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !well_formed {
            self.add(
                field,
                format!(
                    "must be an id starting with `{prefix}` followed by letters, digits, `_` or `-` (at most {MAX_ID_CHARS} characters); got {}",
                    shown(value)
                ),
            );
        }
    }

    fn required_text(&mut self, field: &str, value: &str, max_chars: usize) {
        if value.trim().is_empty() {
            self.add(field, "is required");
        } else if value.chars().count() > max_chars {
            self.add(field, format!("must be at most {max_chars} characters"));
        }
    }
}

/// An id (or an address, or a metadata key, which names its entry) quoted for an error
/// message, shortened so a huge input does not make a huge error.
fn shown(value: &str) -> String {
    const MAX: usize = 40;
    let short: String = value.chars().take(MAX).collect();
    if value.chars().count() > MAX {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// Parses a plain non-negative decimal (`200`, `200.5`, `200.00`) with at most `max_fraction`
/// fraction digits into units of 10^-max_fraction. No sign, exponent, spaces or separators.
pub fn parse_decimal(text: &str, max_fraction: u32) -> Option<u64> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    if whole.is_empty()
        || whole.len() > 12
        || fraction.len() > max_fraction as usize
        || (text.contains('.') && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = 10u64.pow(max_fraction);
    let whole: u64 = whole.parse().ok()?;
    let mut frac: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().ok()?
    };
    frac *= 10u64.pow(max_fraction - fraction.len() as u32);
    whole.checked_mul(scale)?.checked_add(frac)
}

/// The most fraction digits of a fee `percentage`: as many as [`parse_decimal`]'s integer
/// arithmetic holds for a value up to 1. OMS's pages state no precision (their rates have two to
/// four digits); how many it takes is its to say.
const MAX_RATE_FRACTION_DIGITS: u32 = 18;

/// Whether `rate` is a fee `percentage`: a decimal fraction of the amount, from 0 to 1 ("0.02"
/// is 2%, the schema says). The fee is deducted from the amount it is a fraction of (the
/// schema's `feesDeducted`), so a rate above 1 takes more than the whole and can never be right:
/// a malformed value, not a business rule. Whether OMS takes a fee of the whole amount (1), or
/// any rate that leaves nothing to deliver once its own fees are added, is its to decide.
fn is_fraction(rate: &str) -> bool {
    let one = 10u64.pow(MAX_RATE_FRACTION_DIGITS);
    parse_decimal(rate, MAX_RATE_FRACTION_DIGITS).is_some_and(|units| units <= one)
}

/// `value` for a log line or a span if it is shaped like an id or a short name (at most
/// [`MAX_ID_CHARS`] of `[A-Za-z0-9_-]`, or empty), else a placeholder: what a caller sends
/// reaches the logs only as an id, and only bounded, whether or not it was valid.
pub fn loggable(value: &str) -> &str {
    let id_like = value.len() <= MAX_ID_CHARS
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if id_like { value } else { "<invalid>" }
}

/// Whether `key` is a valid idempotency key (see [`idempotency_key`]): only a valid key is
/// echoed to the caller or logged.
pub fn is_idempotency_key(key: &str) -> bool {
    let mut violations = Violations::default();
    idempotency_key(&mut violations, "", key);
    !key.is_empty() && violations.total == 0
}

/// An idempotency key: 1–255 printable ASCII characters (it travels as an HTTP header).
pub fn idempotency_key(violations: &mut Violations, field: &str, key: &str) {
    if key.len() > MAX_IDEMPOTENCY_KEY_CHARS {
        violations.add(
            field,
            format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
        );
        return;
    }
    if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        violations.add(field, "must be printable ASCII (space to `~`)");
    } else if key.trim() != key {
        violations.add(field, "must not start or end with whitespace");
    }
}

/// A status filter that may be UNSPECIFIED (any status): the known status, recording a
/// violation for a value the contract does not define.
pub fn status_filter(violations: &mut Violations, field: &str, value: i32) -> pb::CashInStatus {
    pb::CashInStatus::try_from(value).unwrap_or_else(|_| {
        violations.add(field, "is not a defined status");
        pb::CashInStatus::Unspecified
    })
}

/// A status filter naming one status: known and not UNSPECIFIED.
pub fn required_status(
    violations: &mut Violations,
    field: &str,
    value: i32,
) -> Option<pb::CashInStatus> {
    match pb::CashInStatus::try_from(value) {
        Ok(pb::CashInStatus::Unspecified) | Err(_) => {
            violations.add(field, "must be a known status other than UNSPECIFIED");
            None
        }
        Ok(status) => Some(status),
    }
}

/// WatchCashIns's `statuses`: at most [`MAX_WATCH_STATUSES`] (checked before any entry),
/// each a known status other than UNSPECIFIED. Returns the statuses named.
pub fn watch_statuses(violations: &mut Violations, statuses: &[i32]) -> Vec<pb::CashInStatus> {
    if !violations.at_most("statuses", statuses.len(), MAX_WATCH_STATUSES) {
        return Vec::new();
    }
    statuses
        .iter()
        .enumerate()
        .filter_map(|(i, status)| required_status(violations, &format!("statuses[{i}]"), *status))
        .collect()
}

/// A cash amount: a decimal string with at most 2 fraction digits. How much a provider takes is
/// OMS's to say.
pub fn indicated_amount(violations: &mut Violations, field: &str, amount: &str) {
    if parse_decimal(amount, 2).is_none() {
        violations.add(
            field,
            "must be a decimal string with at most 2 fraction digits, e.g. \"200.00\"",
        );
    }
}

/// `CreateCashInRequest`: every part, every problem.
pub fn create_cash_in(request: &pb::CreateCashInRequest, violations: &mut Violations) {
    use pb::create_cash_in_request as req;
    violations.required_id("customer_id", &request.customer_id, "cst_");
    match &request.source {
        None => violations.add(
            "source",
            "is required (asset \"usd\" and an optional indicated_amount)",
        ),
        Some(source) => create_source(violations, source),
    }
    match &request.destination {
        None => violations.add("destination", "is required (asset, network and wallet)"),
        Some(destination) => create_destination(violations, destination),
    }
    match &request.cash {
        None => violations.add(
            "cash",
            "is required (cash_location_id and cash_location_reference from ListCashLocations)",
        ),
        Some(req::Cash {
            cash_location_id,
            cash_location_reference,
        }) => {
            violations.required_id("cash.cash_location_id", cash_location_id, "loc_");
            violations.required_text(
                "cash.cash_location_reference",
                cash_location_reference,
                MAX_REFERENCE_CHARS,
            );
        }
    }
    let fees = &request.developer_fees;
    if violations.at_most("developer_fees", fees.len(), MAX_DEVELOPER_FEES) {
        for (i, fee) in fees.iter().enumerate() {
            developer_fee(violations, i, fee);
        }
    }
    metadata(violations, &request.metadata);
    idempotency_key(violations, "idempotency_key", &request.idempotency_key);
}

fn create_source(violations: &mut Violations, source: &pb::create_cash_in_request::Source) {
    if source.asset != "usd" {
        violations.add("source.asset", "must be \"usd\"");
    }
    if let Some(amount) = &source.indicated_amount {
        indicated_amount(violations, "source.indicated_amount", amount);
    }
}

fn create_destination(
    violations: &mut Violations,
    destination: &pb::create_cash_in_request::Destination,
) {
    token(
        violations,
        "destination.asset",
        &destination.asset,
        "e.g. \"usdc\"",
    );
    token(
        violations,
        "destination.network",
        &destination.network,
        "e.g. \"polygon\"",
    );
    match destination.wallet.as_ref().and_then(|w| w.kind.as_ref()) {
        None => violations.add(
            "destination.wallet",
            "is required: set exactly one of wallet, blockchain_address or external_account",
        ),
        Some(Kind::Wallet(id)) => violations.required_id("destination.wallet.wallet", id, "wlt_"),
        Some(Kind::ExternalAccount(id)) => {
            violations.required_id("destination.wallet.external_account", id, "cpBcAddr_")
        }
        Some(Kind::BlockchainAddress(address)) => {
            let hex = address.strip_prefix("0x").unwrap_or("");
            if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                violations.add(
                    "destination.wallet.blockchain_address",
                    format!(
                        "must be 0x followed by 40 hex digits; got {}",
                        shown(address)
                    ),
                );
            }
        }
    }
}

/// `developer_fees[i]`.
fn developer_fee(
    violations: &mut Violations,
    i: usize,
    fee: &pb::create_cash_in_request::DeveloperFee,
) {
    let field = |name: &str| format!("developer_fees[{i}].{name}");
    if fee.percentage.is_none() && fee.flat_fee.is_none() {
        violations.add(
            format!("developer_fees[{i}]"),
            "set percentage, flat_fee or both",
        );
    }
    if let Some(rate) = &fee.percentage
        && !is_fraction(rate)
    {
        violations.add(
            field("percentage"),
            "must be a decimal fraction of the amount from 0 to 1, e.g. \"0.01\" for 1%",
        );
    }
    if let Some(amount) = &fee.flat_fee
        && parse_decimal(amount, 2).is_none()
    {
        violations.add(
            field("flat_fee"),
            "must be a decimal amount with at most 2 fraction digits, e.g. \"1.00\"",
        );
    }
    // The schema says "OMS wallet to receive this fee", and OMS wallet ids are `wlt_…` (the
    // guide's examples): a documented prefix, so a shape check.
    if let Some(wallet) = &fee.wallet {
        violations.required_id(&field("wallet"), wallet, "wlt_");
    }
    if let Some(asset) = &fee.payout_asset
        && asset != "usdc"
        && asset != "usdt"
    {
        violations.add(field("payout_asset"), "must be \"usdc\" or \"usdt\"");
    }
}

fn token(violations: &mut Violations, field: &str, value: &str, example: &str) {
    if value.is_empty() {
        violations.add(field, format!("is required ({example})"));
    } else if value.len() > 32
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        violations.add(field, format!("must be a short identifier ({example})"));
    }
}

fn metadata(violations: &mut Violations, metadata: &std::collections::HashMap<String, String>) {
    if !violations.at_most("metadata", metadata.len(), MAX_METADATA_KEYS) {
        return;
    }
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        let value = &metadata[key];
        if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS {
            violations.add(
                format!("metadata[{}]", shown(key)),
                format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} characters"),
            );
        }
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            violations.add(
                format!("metadata[{}]", shown(key)),
                format!("values must be at most {MAX_METADATA_VALUE_CHARS} characters"),
            );
        }
    }
}

/// `GetCashInRequest`, `RefreshCashInRequest`, `WatchCashInRequest`: a cash-in id.
pub fn cash_in_id(violations: &mut Violations, id: &str) {
    violations.required_id("cash_in_id", id, "ci_");
}

/// `ListCashLocationsRequest`.
pub fn list_cash_locations(request: &pb::ListCashLocationsRequest, violations: &mut Violations) {
    token(
        violations,
        "provider",
        &request.provider,
        "e.g. \"greendot\"",
    );
    coordinate(violations, "latitude", request.latitude, 90.0);
    coordinate(violations, "longitude", request.longitude, 180.0);
    if let Some(flow) = &request.flow {
        token(violations, "flow", flow, "\"cash-in\" or \"cash-out\"");
    }
}

fn coordinate(violations: &mut Violations, field: &str, value: Option<f64>, bound: f64) {
    match value {
        None => violations.add(
            field,
            format!("is required (decimal degrees in [-{bound}, {bound}])"),
        ),
        Some(x) if !x.is_finite() => violations.add(field, "must be a finite number"),
        Some(x) if !(-bound..=bound).contains(&x) => {
            violations.add(field, format!("must be in [-{bound}, {bound}]"))
        }
        Some(_) => {}
    }
}

/// A timestamp a caller sent: seconds and nanos within the proto's documented ranges.
pub fn timestamp(violations: &mut Violations, field: &str, ts: Option<&prost_types::Timestamp>) {
    if let Some(ts) = ts
        && (!(-62_135_596_800..=253_402_300_799).contains(&ts.seconds)
            || !(0..1_000_000_000).contains(&ts.nanos))
    {
        violations.add(
            field,
            "must be a valid timestamp between 0001-01-01 and 9999-12-31",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_parse_strictly() {
        assert_eq!(parse_decimal("200.00", 2), Some(20_000));
        assert_eq!(parse_decimal("200", 2), Some(20_000));
        assert_eq!(parse_decimal("0.5", 2), Some(50));
        assert_eq!(parse_decimal("0.01", 6), Some(10_000));
        for bad in [
            "", ".", "1.", ".5", "-1", "+1", "1e3", "1.234", "NaN", "1,000", " 1", "１",
        ] {
            assert_eq!(parse_decimal(bad, 2), None, "{bad:?}");
        }
        assert_eq!(parse_decimal("9999999999999", 2), None);
    }

    #[test]
    fn an_empty_create_request_lists_every_missing_part() {
        let mut violations = Violations::default();
        create_cash_in(&pb::CreateCashInRequest::default(), &mut violations);
        let fields: Vec<String> = violations.listed.iter().map(|f| f.field.clone()).collect();
        assert_eq!(fields, ["customer_id", "source", "destination", "cash"]);
    }

    #[test]
    fn ids_need_their_prefix() {
        let mut violations = Violations::default();
        violations.required_id("x", "ci_01H9", "ci_");
        violations.required_id("y", "ci_", "ci_");
        violations.required_id("z", "cst_1", "ci_");
        violations.required_id("w", "ci_a/b", "ci_");
        let fields: Vec<String> = violations.listed.iter().map(|f| f.field.clone()).collect();
        assert_eq!(fields, ["y", "z", "w"]);
    }

    #[test]
    fn amounts_fees_and_ids_are_checked_for_shape_not_for_business_limits() {
        let mut violations = Violations::default();
        for amount in [
            "0.00",
            "5.00",
            "19.99",
            "500.01",
            "2500.00",
            "999999999999.99",
        ] {
            indicated_amount(&mut violations, "a", amount);
        }
        let id = |n: usize| format!("ci_{}", "x".repeat(n - 3));
        violations.required_id("x", &id(MAX_ID_CHARS), "ci_");
        assert_eq!(violations.total, 0, "{:?}", violations.listed);
        violations.required_id("y", &id(MAX_ID_CHARS + 1), "ci_");
        indicated_amount(&mut violations, "z", "1000000000000.00");
        let fields: Vec<String> = violations.listed.iter().map(|f| f.field.clone()).collect();
        assert_eq!(fields, ["y", "z"], "past the gateway's own bounds");
    }

    #[test]
    fn violations_keep_the_first_twenty_and_count_the_rest() {
        let mut violations = Violations::default();
        for i in 0..100_000 {
            violations.add(format!("f{i}"), "bad");
        }
        assert_eq!(violations.listed.len(), MAX_LISTED_VIOLATIONS);
        match violations.finish() {
            Err(GatewayError::Invalid { violations, total }) => {
                assert_eq!(total, 100_000);
                assert_eq!(violations.len(), MAX_LISTED_VIOLATIONS);
                assert_eq!(violations[0].field, "f0");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_percentage_is_a_fraction_from_0_to_1_at_any_precision_the_parser_holds() {
        let fee = |rate: &str| {
            let mut violations = Violations::default();
            let entry = pb::create_cash_in_request::DeveloperFee {
                percentage: Some(rate.into()),
                ..Default::default()
            };
            developer_fee(&mut violations, 0, &entry);
            violations.total
        };
        for rate in [
            "0",
            "0.01",
            "0.0025",
            "1",
            "1.0",
            "0.000000001",
            "0.999999999999999999",
        ] {
            assert_eq!(fee(rate), 0, "{rate}");
        }
        for rate in [
            "1.000001", "1.5", "2", "100", "-0.01", "0.01%", "1e-2", ".5", "0.", "",
        ] {
            assert_eq!(fee(rate), 1, "{rate}");
        }
        assert_eq!(fee(&format!("0.{}", "1".repeat(19))), 1, "19 digits");
    }

    #[test]
    fn counts_are_checked_before_entries() {
        let request = pb::CreateCashInRequest {
            developer_fees: vec![Default::default(); 60_000],
            ..Default::default()
        };
        let mut violations = Violations::default();
        create_cash_in(&request, &mut violations);
        let fees: Vec<&FieldViolation> = violations
            .listed
            .iter()
            .filter(|v| v.field.starts_with("developer_fees"))
            .collect();
        assert_eq!(fees.len(), 1, "one violation for the count, none per entry");
        assert_eq!(fees[0].field, "developer_fees");
        let mut violations = Violations::default();
        assert!(watch_statuses(&mut violations, &[9; 300_000]).is_empty());
        assert_eq!(violations.total, 1);
        assert_eq!(violations.listed[0].field, "statuses");
    }

    /// A CreateCashIn with every field at its bound, every character 4 bytes in UTF-8.
    fn the_largest_create_request() -> pb::CreateCashInRequest {
        use pb::create_cash_in_request::{Cash, Destination, DeveloperFee, Source, Wallet};
        let id = |prefix: &str| format!("{prefix}{}", "x".repeat(MAX_ID_CHARS - prefix.len()));
        // The largest decimal `parse_decimal` reads: 12 whole digits.
        let most = "999999999999.99";
        let wide = |chars: usize| "\u{10348}".repeat(chars);
        pb::CreateCashInRequest {
            customer_id: id("cst_"),
            source: Some(Source {
                asset: "usd".into(),
                indicated_amount: Some(most.into()),
            }),
            destination: Some(Destination {
                asset: "x".repeat(32),
                network: "x".repeat(32),
                wallet: Some(Wallet {
                    kind: Some(Kind::Wallet(id("wlt_"))),
                }),
            }),
            cash: Some(Cash {
                cash_location_id: id("loc_"),
                cash_location_reference: wide(MAX_REFERENCE_CHARS),
            }),
            sponsor_gas: Some(true),
            developer_fees: vec![
                DeveloperFee {
                    percentage: Some(format!("0.{}", "9".repeat(18))),
                    flat_fee: Some(most.into()),
                    wallet: Some(id("wlt_")),
                    payout_asset: Some("usdc".into()),
                };
                MAX_DEVELOPER_FEES
            ],
            metadata: (0..MAX_METADATA_KEYS)
                .map(|i| {
                    let key = format!("{i:02}{}", wide(MAX_METADATA_KEY_CHARS - 2));
                    (key, wide(MAX_METADATA_VALUE_CHARS))
                })
                .collect(),
            idempotency_key: "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS),
        }
    }

    #[test]
    fn the_largest_legitimate_request_fits_the_request_message_bound() {
        use prost::Message;
        let request = the_largest_create_request();
        let mut violations = Violations::default();
        create_cash_in(&request, &mut violations);
        assert!(violations.finish().is_ok(), "it is valid");
        let size = request.encoded_len();
        println!("the largest CreateCashIn: {size} bytes");
        assert!(size <= crate::limits::MAX_REQUEST_MESSAGE_BYTES, "{size}");
        assert!(
            size > crate::limits::MAX_REQUEST_MESSAGE_BYTES / 2,
            "{size}: a bound this loose wastes memory"
        );
    }

    #[test]
    fn there_are_as_many_watch_statuses_as_defined_statuses() {
        let defined = (1..=64)
            .filter(|n| pb::CashInStatus::try_from(*n).is_ok())
            .count();
        assert_eq!(defined, MAX_WATCH_STATUSES);
    }
}
