//! Server reflection v1 and v1alpha over the gateway's descriptor set and grpc.health.v1's,
//! so tools list and describe every method with no proto files.

use crate::proto;
use crate::start::StartError;

/// Server reflection v1 and v1alpha (grpcurl 1.8 speaks only v1alpha; newer tools v1). The
/// health descriptors are registered too, so `grpcurl ... grpc.health.v1.Health/Check` works
/// with no proto files.
pub fn services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    StartError,
> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection()
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    Ok((v1, v1alpha))
}
