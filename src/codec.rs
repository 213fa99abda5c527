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

use crate::error::GatewayError;
use crate::watch::wire::Encoded;
use bytes::BufMut;
use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder, EncodeBuf, Encoder};
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
    U: Message + Default + Send + 'static,
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

/// Decodes with prost; maps its errors to INVALID_ARGUMENT.
#[derive(Debug)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
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

/// The watch RPCs' codec: requests decoded as by [`Codec`], events written as the bytes they
/// were encoded to.
#[derive(Debug)]
pub struct EventCodec<U>(std::marker::PhantomData<fn() -> U>);

impl<U> Default for EventCodec<U> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

/// tonic's encode buffer for a watch call: none up front (it would grow for an event; the
/// events are sent by the watch route's own body, so it holds none).
const EVENT_BUFFER: usize = 0;
/// tonic's default: how much a buffer may hold before it is sent.
const YIELD_THRESHOLD: usize = 32 * 1024;

impl<U> tonic::codec::Codec for EventCodec<U>
where
    U: Message + Default + Send + 'static,
{
    type Encode = Encoded;
    type Decode = U;
    type Encoder = EventEncoder;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EventEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(ProstDecoder::default())
    }
}

/// Writes an already encoded event.
#[derive(Debug)]
pub struct EventEncoder;

impl Encoder for EventEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(item.message());
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(EVENT_BUFFER, YIELD_THRESHOLD)
    }
}
