//! The gRPC codec of the gateway's services: prost, except that a request that does not decode
//! (wrong wire types, invalid UTF-8 in a string, truncated bytes) is INVALID_ARGUMENT with an
//! ErrorInfo, not tonic's default INTERNAL: a malformed request is the caller's mistake, and
//! INTERNAL would tell them to look for a bug in the gateway.
//!
//! The generated clients share this codec, so a client built from this crate reports an
//! undecodable *response* as INVALID_ARGUMENT too; clients generated elsewhere are unaffected.
//!
//! [`EventCodec`] is the watch RPCs' codec: tonic decodes their requests with it. Their events
//! arrive encoded already (shared by every stream that sends them, see `watch::wire`) and go out
//! through `service::watch_route::EventBody`, not through tonic's encoder, so the encoder here
//! only copies bytes and asks for no buffer.
//!
//! Before a message is decoded, the entries of its repeated and map fields are counted on the
//! wire ([`EntryBounds`]): a request with more than [`DECODE_SLACK`] times a field's bound is
//! INVALID_ARGUMENT, with the violation validation would report, and its entries are never
//! built. Decoding amplifies: an empty `developer_fees` entry is 2 bytes on the wire and 96 in
//! memory, so a request of 128 KiB of them would decode to over 6 MB (12 MB while its vector
//! grows) to be refused.

use crate::error::GatewayError;
use crate::proto::v1 as pb;
use crate::validate::{self, Violations};
use bytes::Buf;
use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with decode errors reported as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + EntryBounds + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.0.decoder())
    }
}

/// Decodes with prost, once the message's entries are within its [`EntryBounds`]; maps prost's
/// errors to INVALID_ARGUMENT.
#[derive(Debug)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U> Default for RequestDecoder<U> {
    fn default() -> Self {
        Self(ProstDecoder::default())
    }
}

impl<U: Message + Default + EntryBounds> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let whole = buf.chunk();
        if !U::BOUNDS.is_empty()
            && whole.len() == buf.remaining()
            && let Err(err) = within_bounds(whole, U::BOUNDS)
        {
            buf.advance(buf.remaining());
            return Err(err.into());
        }
        self.0.decode(buf).map_err(|status| {
            if status.code() != Code::Internal {
                return status;
            }
            GatewayError::MalformedMessage(status.message().to_owned()).into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// How many times its bound a field's entries may number and still be decoded: a request a
/// little over (51 metadata keys) is decoded and validated, so every problem it has is listed;
/// far over, it is refused from its counts alone. At most a few KiB are decoded past a bound.
pub const DECODE_SLACK: usize = 4;

/// One repeated or map field of a message and the most entries it may have.
#[derive(Debug)]
pub struct EntryBound {
    /// The field's number.
    pub number: u32,
    /// The field's name, as a violation names it.
    pub field: &'static str,
    /// The most entries.
    pub max: usize,
    /// A packed scalar field (its entries are varints inside one length-delimited record),
    /// rather than messages or map entries (one record each).
    pub packed: bool,
}

/// The entry bounds of a message's top-level repeated and map fields, checked on the wire
/// before it is decoded. Every message the codec decodes names its bounds: the requests'
/// are validation's own; responses (decoded by clients built from this crate) have none.
pub trait EntryBounds {
    /// The bounded fields.
    const BOUNDS: &'static [EntryBound] = &[];
}

impl EntryBounds for pb::CreateCashInRequest {
    const BOUNDS: &'static [EntryBound] = &[
        EntryBound {
            number: 6,
            field: "developer_fees",
            max: validate::MAX_DEVELOPER_FEES,
            packed: false,
        },
        EntryBound {
            number: 7,
            field: "metadata",
            max: validate::MAX_METADATA_KEYS,
            packed: false,
        },
    ];
}

impl EntryBounds for pb::WatchCashInsRequest {
    const BOUNDS: &'static [EntryBound] = &[EntryBound {
        number: 2,
        field: "statuses",
        max: validate::MAX_WATCH_STATUSES,
        packed: true,
    }];
}

/// Messages without a repeated or map field, and responses.
macro_rules! unbounded {
    ($($message:ty),* $(,)?) => {
        $(impl EntryBounds for $message {})*
    };
}

unbounded!(
    pb::GetCashInRequest,
    pb::ListCashInsRequest,
    pb::RefreshCashInRequest,
    pb::WatchCashInRequest,
    pb::ListCashLocationsRequest,
    pb::SimulateDepositRequest,
    pb::ExpireCashInRequest,
    pb::FailCashInRequest,
    pb::CreateCashInResponse,
    pb::GetCashInResponse,
    pb::ListCashInsResponse,
    pb::RefreshCashInResponse,
    pb::CashInEvent,
    pb::ListCashLocationsResponse,
    pb::SimulateDepositResponse,
    pb::ExpireCashInResponse,
    pb::FailCashInResponse,
    pb::ReviewDeliveryRequest,
    pb::CompleteDeliveryRequest,
    pb::FailDeliveryRequest,
    pb::CompleteRefundRequest,
    pb::ReviewDeliveryResponse,
    pb::CompleteDeliveryResponse,
    pb::FailDeliveryResponse,
    pb::CompleteRefundResponse,
);

/// Counts the entries of `bounds`' fields at the top level of `message`, without decoding it:
/// if one is past [`DECODE_SLACK`] times its bound, the violation of each field past its bound.
/// A message that does not parse is left to prost, which reports it.
pub(crate) fn within_bounds(message: &[u8], bounds: &[EntryBound]) -> Result<(), GatewayError> {
    let mut counts = vec![0usize; bounds.len()];
    let mut rest = message;
    while rest.has_remaining() {
        let Ok(key) = prost::encoding::decode_varint(&mut rest) else {
            break;
        };
        let (number, wire_type) = (key >> 3, key & 7);
        let slot = bounds.iter().position(|b| u64::from(b.number) == number);
        let entries = match wire_type {
            0 => match prost::encoding::decode_varint(&mut rest) {
                Ok(_) => 1,
                Err(_) => break,
            },
            1 | 5 => {
                let width = if wire_type == 1 { 8 } else { 4 };
                let Some(after) = rest.get(width..) else {
                    break;
                };
                rest = after;
                1
            }
            2 => {
                let Ok(len) = prost::encoding::decode_varint(&mut rest) else {
                    break;
                };
                let Some((record, after)) = usize::try_from(len)
                    .ok()
                    .and_then(|len| rest.split_at_checked(len))
                else {
                    break;
                };
                rest = after;
                match slot.map(|i| &bounds[i]) {
                    // Each varint ends in a byte under 0x80.
                    Some(bound) if bound.packed => record.iter().filter(|b| **b < 0x80).count(),
                    _ => 1,
                }
            }
            _ => break,
        };
        if let Some(count) = slot.and_then(|i| counts.get_mut(i)) {
            *count += entries;
        }
    }
    let far_over = |(bound, count): (&EntryBound, &usize)| *count > bound.max * DECODE_SLACK;
    if !bounds.iter().zip(counts.iter()).any(far_over) {
        return Ok(());
    }
    let mut violations = Violations::default();
    for (bound, count) in bounds.iter().zip(counts.iter()) {
        violations.at_most(bound.field, *count, bound.max);
    }
    violations.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: GatewayError) -> Vec<(String, String)> {
        match err {
            GatewayError::Invalid { violations, .. } => violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn entries_past_their_bound_are_refused_before_decoding() {
        let request = pb::CreateCashInRequest {
            customer_id: "cst_1".into(),
            developer_fees: vec![Default::default(); 60_000],
            metadata: (0..51).map(|i| (i.to_string(), String::new())).collect(),
            ..Default::default()
        };
        let err = within_bounds(&request.encode_to_vec(), pb::CreateCashInRequest::BOUNDS)
            .expect_err("far over one bound");
        assert_eq!(
            fields(err),
            [
                (
                    "developer_fees".into(),
                    format!(
                        "at most {} entries; got 60000",
                        validate::MAX_DEVELOPER_FEES
                    )
                ),
                ("metadata".into(), "at most 50 entries; got 51".into()),
            ]
        );
        // A little over is decoded, for validation to list every problem.
        let near = pb::CreateCashInRequest {
            developer_fees: vec![Default::default(); validate::MAX_DEVELOPER_FEES * DECODE_SLACK],
            metadata: (0..51).map(|i| (i.to_string(), String::new())).collect(),
            ..Default::default()
        };
        assert!(within_bounds(&near.encode_to_vec(), pb::CreateCashInRequest::BOUNDS).is_ok());
    }

    /// What tonic's server gets from [`RequestDecoder`] for `message`, sent whole.
    async fn decoded<U>(message: &U) -> Result<Option<U>, Status>
    where
        U: Message + Default + EntryBounds + Send + 'static,
    {
        let bytes = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        framed.extend_from_slice(&bytes);
        let body = http_body_util::Full::new(bytes::Bytes::from(framed));
        let decoder = RequestDecoder(ProstDecoder::<U>::default());
        let mut stream = tonic::Streaming::new_request(decoder, body, None, None);
        stream.message().await
    }

    // Before: decoded, all 60,000 entries (5.8 MB of DeveloperFee, 96 bytes each, from 120 KB),
    // for validation to refuse them.
    #[tokio::test]
    async fn the_decoder_refuses_a_request_past_its_bounds_instead_of_decoding_it() {
        let request = pb::CreateCashInRequest {
            developer_fees: vec![Default::default(); 60_000],
            ..Default::default()
        };
        let status = decoded(&request).await.map(|_| ()).expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(&format!(
            "developer_fees: at most {} entries; got 60000",
            validate::MAX_DEVELOPER_FEES
        )));
        let within = pb::CreateCashInRequest {
            developer_fees: vec![Default::default(); validate::MAX_DEVELOPER_FEES],
            ..Default::default()
        };
        assert_eq!(decoded(&within).await.expect("decoded"), Some(within));
        assert_eq!(
            std::mem::size_of::<pb::create_cash_in_request::DeveloperFee>(),
            96
        );
    }

    #[test]
    fn statuses_are_counted_packed_or_not() {
        let far = 5 * DECODE_SLACK + 1;
        let mut statuses = vec![1, 2, 300, -1, 5];
        statuses.resize(far, 1);
        let packed = pb::WatchCashInsRequest {
            customer_id: "cst_1".into(),
            statuses,
            cash_in_only: false,
        }
        .encode_to_vec();
        let err = within_bounds(&packed, pb::WatchCashInsRequest::BOUNDS).expect_err("far over");
        assert_eq!(fields(err)[0].1, format!("at most 5 entries; got {far}"));
        // As many statuses, each its own record (a legal, unpacked encoding).
        let mut unpacked = Vec::new();
        for _ in 0..far {
            prost::encoding::encode_key(2, prost::encoding::WireType::Varint, &mut unpacked);
            prost::encoding::encode_varint(3, &mut unpacked);
        }
        assert!(within_bounds(&unpacked, pb::WatchCashInsRequest::BOUNDS).is_err());
        assert!(within_bounds(&unpacked[2..], pb::WatchCashInsRequest::BOUNDS).is_ok());
    }

    #[test]
    fn the_bounds_name_the_fields_they_count() {
        // One entry of each bounded field encodes with that field's number.
        let one_fee = pb::CreateCashInRequest {
            developer_fees: vec![Default::default()],
            ..Default::default()
        };
        let one_key = pb::CreateCashInRequest {
            metadata: [("k".into(), "v".into())].into(),
            ..Default::default()
        };
        let one_status = pb::WatchCashInsRequest {
            statuses: vec![1],
            ..Default::default()
        };
        let first_field = |bytes: Vec<u8>| bytes[0] >> 3;
        let bounds = pb::CreateCashInRequest::BOUNDS;
        assert_eq!(
            u32::from(first_field(one_fee.encode_to_vec())),
            bounds[0].number
        );
        assert_eq!(
            u32::from(first_field(one_key.encode_to_vec())),
            bounds[1].number
        );
        assert_eq!(
            u32::from(first_field(one_status.encode_to_vec())),
            pb::WatchCashInsRequest::BOUNDS[0].number
        );
    }

    #[test]
    fn a_message_that_does_not_parse_is_left_to_prost() {
        for bytes in [&[0x32, 0xff][..], &[0xff; 12][..], &[0x33][..], &[]] {
            assert!(within_bounds(bytes, pb::CreateCashInRequest::BOUNDS).is_ok());
        }
    }
}
