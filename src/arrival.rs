//! When a call arrived: stamped into the request's extensions by the outermost of the gateway's
//! layers (the gRPC metrics layer), where tonic also starts its own `grpc-timeout` timer. A
//! handler counts the caller's deadline from this stamp, not from when it started running (after
//! the request message was read and the layers ran), so the gateway's answer at its deadline
//! (DEADLINE_EXCEEDED, with details) always comes before tonic's bare CANCELLED "Timeout
//! expired". A leaf: it knows nothing of who stamps or reads it.

/// The moment a call reached the gateway's layers (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct Arrival(pub std::time::Instant);
