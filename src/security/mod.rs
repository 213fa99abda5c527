//! Caller security: who is calling and whether they may. [`CallerLayer`] wraps the gRPC router:
//! for every call except grpc.health.v1 (always open) it resolves the caller's identity, from the
//! connection's verified client certificate ([`tls`]) or, when configured, the one header a mesh
//! sidecar sets (`x-forwarded-client-cert` or `l5d-client-id`); refuses a call without an
//! identity where one is required (UNAUTHENTICATED, `CALLER_UNAUTHENTICATED`) and a call the
//! [`policy`] does not allow (PERMISSION_DENIED, `CALLER_NOT_ALLOWED`), each with an audit line;
//! and hands the identity to handlers as a [`Caller`] extension, which scopes idempotency keys.
//! No header a caller sets itself (`x-caller-id` included) is ever read.
//!
//! [`check_listen`] holds the safe default: beyond loopback, no start without a way to identify
//! callers unless `--insecure-allow-unauthenticated`. [`load`] is the entry point at start: the
//! check, the TLS configuration, the caller layer, and the tasks that reload their files.

pub mod identity;
mod pattern;
pub mod policy;
pub mod quotas;
pub mod reload;
pub mod tls;
pub mod xfcc;

use crate::config::{IdentityHeader, SecuritySettings};
use crate::error::GatewayError;
use crate::shutdown::Shutdown;
use crate::start::StartError;
use policy::Policy;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// What guards the gRPC port, as [`load`] made it.
pub struct Security {
    /// The TLS listener's configuration, when `--tls-cert`/`--tls-key` are given.
    pub tls: Option<tls::SharedConfig>,
    /// Identity and policy, around the router.
    pub callers: CallerLayer,
}

/// Checks the listen address (a configuration that would expose the port refuses to start
/// before anything else happens), loads the TLS configuration and the authorization policy, and
/// starts the tasks that reload them when their files change, owned by `shutdown` (also when the
/// policy fails to load after the TLS reloader started).
pub fn load(
    listen: SocketAddr,
    settings: &SecuritySettings,
    shutdown: &mut Shutdown,
) -> Result<Security, StartError> {
    check_listen(listen, settings).map_err(StartError::Config)?;
    let mut reloaders = Vec::new();
    let loaded = reload::load_tls(settings, &mut reloaders)
        .and_then(|tls| Ok((tls, reload::load_authz_policy(settings, &mut reloaders)?)));
    shutdown.adopt(reloaders);
    let (tls, policy) = loaded?;
    Ok(Security {
        tls,
        callers: CallerLayer::new(settings, policy),
    })
}

/// The authenticated caller of a call (empty: anonymous, allowed only where no identity is
/// required). Put into the request's extensions by [`CallerLayer`].
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Arc<str>);

// === impl Caller ===

impl Caller {
    /// The caller of `request`; anonymous when none was set.
    pub fn of<T>(request: &tonic::Request<T>) -> String {
        request
            .extensions()
            .get::<Caller>()
            .map(|caller| caller.0.to_string())
            .unwrap_or_default()
    }
}

/// The current policy, replaced whole on reload.
pub type SharedPolicy = Arc<RwLock<Arc<Policy>>>;

/// Reads and parses the policy file; the error names the file and the line.
pub fn load_policy(path: &std::path::Path) -> Result<Policy, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the authorization policy {}: {e}",
            path.display()
        )
    })?;
    Policy::parse(&text).map_err(|e| format!("authorization policy {}: {e}", path.display()))
}

/// Refuses a listen address beyond loopback with no way to identify callers, unless the
/// operator said so explicitly (then warns, at every start).
pub fn check_listen(listen: SocketAddr, security: &SecuritySettings) -> Result<(), String> {
    let identified = security.tls_client_ca.is_some() || security.caller_identity_header.is_some();
    if identified || listen.ip().is_loopback() {
        return Ok(());
    }
    if security.insecure_allow_unauthenticated {
        tracing::warn!(
            %listen,
            "--insecure-allow-unauthenticated: listening beyond loopback without identifying \
             callers; anyone who reaches this port can call every RPC, including reading every \
             customer's deposit codes"
        );
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {listen} (not a loopback address) without a way to identify \
         callers: anyone who reaches the port could call every RPC. Require client certificates \
         with --tls-cert, --tls-key and --tls-client-ca (mTLS), or, behind a mesh sidecar that \
         terminates mTLS, trust its header with --caller-identity-header \
         (x-forwarded-client-cert or l5d-client-id); or accept the risk with \
         --insecure-allow-unauthenticated"
    ))
}

/// The identity in a mesh header's value, or `None` (the call is refused where an identity is
/// required). `x-forwarded-client-cert`: the `URI` of its last element, by its grammar
/// ([`xfcc`]). `l5d-client-id`: a URI identity when it is one (`spiffe://…`), else a DNS name.
pub fn identity_from_header(header: IdentityHeader, value: &str) -> Option<String> {
    match header {
        IdentityHeader::LinkerdClientId => {
            if value.contains("://") {
                identity::uri(value)
            } else {
                identity::dns(value)
            }
        }
        IdentityHeader::ForwardedClientCert => identity::uri(&xfcc::last_uri(value)?),
    }
}

/// Resolves callers and applies the policy in front of the gRPC router.
#[derive(Clone, Debug)]
pub struct CallerLayer {
    header: Option<IdentityHeader>,
    require_identity: bool,
    policy: Option<SharedPolicy>,
}

// === impl CallerLayer ===

impl CallerLayer {
    /// A layer for these settings, with the loaded policy (if any).
    pub fn new(security: &SecuritySettings, policy: Option<SharedPolicy>) -> Self {
        Self {
            header: security.caller_identity_header,
            require_identity: security.tls_client_ca.is_some()
                || security.caller_identity_header.is_some()
                || policy.is_some(),
            policy,
        }
    }

    /// The authorization policy the layer applies (and reloads), if any.
    pub fn policy(&self) -> Option<&SharedPolicy> {
        self.policy.as_ref()
    }

    fn identity<B>(&self, request: &http::Request<B>) -> Option<String> {
        match self.header {
            Some(header) => {
                // Exactly one such header: a second one is ambiguous (which did the sidecar set?).
                let mut values = request.headers().get_all(header.name()).iter();
                let value = values.next().filter(|_| values.next().is_none())?;
                identity_from_header(header, value.to_str().ok()?)
            }
            None => request
                .extensions()
                .get::<tls::PeerIdentity>()
                .and_then(|peer| peer.identity.as_deref().map(str::to_owned)),
        }
    }

    /// The caller of `request`, or the refusal to answer it with.
    fn admit<B>(&self, request: &http::Request<B>) -> Result<String, GatewayError> {
        let method = request.uri().path().trim_start_matches('/');
        let key = request
            .headers()
            .get(crate::idempotency::KEY_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let identity = self.identity(request);
        let caller = match identity {
            Some(identity) => identity,
            None if self.require_identity => {
                let why = match self.header {
                    Some(header) => format!(
                        "this gateway identifies callers by the `{}` header its mesh sidecar sets, and the call had none",
                        header.name()
                    ),
                    None => {
                        "this gateway requires a client certificate (mTLS) that names the caller"
                            .to_owned()
                    }
                };
                crate::audit::denied("", method, key, "UNAUTHENTICATED");
                return Err(GatewayError::Unauthenticated(format!(
                    "no caller identity: {why}"
                )));
            }
            None => String::new(),
        };
        crate::access::note_caller(&caller);
        if let Some(policy) = &self.policy {
            let policy = policy.read().unwrap_or_else(|e| e.into_inner()).clone();
            if !policy.allows(&caller, method) {
                crate::audit::denied(&caller, method, key, "PERMISSION_DENIED");
                return Err(GatewayError::NotAllowed {
                    caller,
                    method: method.to_owned(),
                });
            }
        }
        Ok(caller)
    }
}

impl<S> Layer<S> for CallerLayer {
    type Service = CallerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`CallerLayer`] wraps around the gRPC router.
#[derive(Clone, Debug)]
pub struct CallerService<S> {
    inner: S,
    layer: CallerLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for CallerService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        if request
            .uri()
            .path()
            .starts_with(crate::proto::HEALTH_PATH_PREFIX)
        {
            return Box::pin(self.inner.call(request));
        }
        match self.layer.admit(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(Caller(caller.into()));
                Box::pin(self.inner.call(request))
            }
            Err(refusal) => {
                let response = tonic::Status::from(refusal).into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_takes_the_uri_of_the_last_element() {
        let value = r#"By=spiffe://cluster.local/ns/gw/sa/gw;Hash=abc;URI=spiffe://cluster.local/ns/a/sa/a,By=spiffe://cluster.local/ns/gw/sa/gw;Hash=def;Subject="CN=x, O=y";URI=spiffe://cluster.local/ns/b/sa/b"#;
        assert_eq!(
            identity_from_header(IdentityHeader::ForwardedClientCert, value).as_deref(),
            Some("spiffe://cluster.local/ns/b/sa/b")
        );
        assert_eq!(
            identity_from_header(IdentityHeader::ForwardedClientCert, "Hash=abc").as_deref(),
            None
        );
    }

    #[test]
    fn a_linkerd_identity_is_a_dns_name_or_a_uri() {
        assert_eq!(
            identity_from_header(
                IdentityHeader::LinkerdClientId,
                "web.ns.serviceaccount.identity.linkerd.cluster.local"
            )
            .as_deref(),
            Some("dns:web.ns.serviceaccount.identity.linkerd.cluster.local")
        );
        assert_eq!(
            identity_from_header(IdentityHeader::LinkerdClientId, "spiffe://td/ns/a/sa/a")
                .as_deref(),
            Some("spiffe://td/ns/a/sa/a")
        );
        for bad in ["", " web.ns", "web ns", "cn:web"] {
            assert_eq!(
                identity_from_header(IdentityHeader::LinkerdClientId, bad),
                None,
                "{bad:?}"
            );
        }
    }
}
