//! The fleet's idempotency store, in Redis: what makes one key's call go upstream once whichever
//! replicas receive it. The layer's in-memory store (`local.rs`) still shares a call among this
//! replica's callers; its leader comes here before it calls upstream.
//!
//! Per (caller, operation, key), hashed into `{h}` (SHA-256, 128 bits; no caller or key in a
//! key name), under one hash tag so a cluster keeps them on one slot:
//! - `oms-gateway:idem:{h}:lease` = `<fingerprint hex>:<token>`, `SET NX PX lease-ttl`, renewed
//!   every third of it while the leader runs;
//! - `oms-gateway:idem:{h}:done` = `<fingerprint hex>:<outcome>` (see `crate::outcome`), kept for
//!   the idempotency window, written only for final outcomes;
//! - channel `oms-gateway:idem:<h>`, published when the leader finishes.
//!
//! Another replica with the same key and request waits (woken by the channel, polling every
//! [`POLL`] in case a message is lost) and replays the stored outcome; with another request it
//! is refused (IDEMPOTENCY_KEY_REUSED); when the lease ends with no outcome stored (the leader
//! died, gave up, or got a transient error) the next caller leads, with the same upstream key,
//! told it resumes (OMS replays, or answers 409 while the first request still holds the key).
//! Redis down: the call goes upstream from this replica, as without Redis.

use super::local::{answer_by, reused};
use crate::error::{GatewayError, is_final_outcome};
use crate::outcome;
use crate::redis::{PREFIX, SharedState};
use redis::Script;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a waiter goes without looking at the key again, whatever pub/sub says.
const POLL: Duration = Duration::from_millis(200);

/// done, else lease, else take the lease. KEYS: done, lease; ARGV: lease value, lease ms.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local done = redis.call('GET', KEYS[1])
if done then return {'done', done} end
local lease = redis.call('GET', KEYS[2])
if lease then return {'lease', lease} end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {'lead', ''}",
    )
});

/// Extends a lease still ours. KEYS: lease; ARGV: lease value, lease ms.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0",
    )
});

/// Stores a final outcome (if any), drops our lease, wakes the waiters.
/// KEYS: done, lease; ARGV: lease value, done value or '', window ms, channel.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if ARGV[2] ~= '' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[4], 'done')
return 1",
    )
});

/// Where one (caller, operation, key) lives in Redis.
struct Keys {
    done: String,
    lease: String,
    channel: String,
}

impl Keys {
    fn new(caller: &str, operation: &str, key: &str) -> Self {
        let full = crate::digest::sha256_hex(
            format!("{}:{caller}|{operation}|{key}", caller.len()).as_bytes(),
        );
        let h = &full[..32];
        Self {
            done: format!("{PREFIX}idem:{{{h}}}:done"),
            lease: format!("{PREFIX}idem:{{{h}}}:lease"),
            channel: format!("{PREFIX}idem:{h}"),
        }
    }
}

/// What Redis said of a key.
enum Claim {
    /// An outcome is stored: (its fingerprint, its bytes).
    Done(u64, Vec<u8>),
    /// Another call holds the lease, for this fingerprint.
    Held(u64),
    /// The lease is ours.
    Lead,
}

fn split(value: &[u8]) -> Option<(u64, &[u8])> {
    let hex = std::str::from_utf8(value.get(..16)?).ok()?;
    Some((u64::from_str_radix(hex, 16).ok()?, value.get(17..)?))
}

/// The fleet's idempotency store.
#[derive(Clone, Debug)]
pub struct FleetStore {
    state: SharedState,
    window: Duration,
}

/// A call of one (caller, operation, key), as `IdempotencyLayer::run` hands it over.
pub struct Call<'a> {
    /// The authenticated caller.
    pub caller: &'a str,
    /// The RPC.
    pub operation: &'static str,
    /// The caller's idempotency key.
    pub key: &'a str,
    /// The request's fingerprint.
    pub fingerprint: u64,
    /// The call's deadline.
    pub deadline: Instant,
    /// Whether this replica already takes over an abandoned call.
    pub resumes: bool,
}

// === impl FleetStore ===

impl FleetStore {
    /// Outcomes kept for `window`.
    pub fn new(state: SharedState, window: Duration) -> Self {
        Self { state, window }
    }

    /// Runs `upstream` unless another replica runs or ran the same call (see the module
    /// documentation).
    pub async fn run<T, F, Fut>(&self, call: Call<'_>, upstream: F) -> Result<T, GatewayError>
    where
        T: outcome::Stored,
        F: FnOnce(bool) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let keys = Keys::new(call.caller, call.operation, call.key);
        let value = format!("{:016x}:{}", call.fingerprint, self.state.token());
        let lease_ms = self.state.lease_ttl().as_millis() as u64;
        let mut resumes = call.resumes;
        let answer_by = answer_by(call.deadline);
        loop {
            let waker = self.state.waker(&keys.channel);
            let woken = waker.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let mut claim = CLAIM.prepare_invoke();
            claim
                .key(&keys.done)
                .key(&keys.lease)
                .arg(&value)
                .arg(lease_ms);
            // A claim that timed out may still take the lease: its release waits for Redis.
            let undo = || release(&keys.lease, &value);
            let Some(claim) = self
                .state
                .invoke_or_undo::<(String, Vec<u8>)>(&claim, undo)
                .await
            else {
                self.state.fell_back("idempotency");
                return upstream(resumes).await;
            };
            match parse(claim) {
                Some(Claim::Done(fp, _)) | Some(Claim::Held(fp)) if fp != call.fingerprint => {
                    return Err(reused(call.key));
                }
                Some(Claim::Done(_, bytes)) => match outcome::decode(&bytes) {
                    Some(outcome) => return outcome,
                    None => tracing::warn!("a stored outcome does not decode; calling upstream"),
                },
                Some(Claim::Held(_)) => {
                    let wait = tokio::time::sleep(POLL);
                    tokio::select! {
                        () = &mut woken => {}
                        () = wait => {}
                        () = tokio::time::sleep_until(answer_by) => return Err(waited_too_long()),
                    }
                    // The lease may now be gone with no outcome: whoever leads next resumes.
                    resumes = true;
                    continue;
                }
                Some(Claim::Lead) => {}
                None => tracing::warn!("an unexpected answer from Redis; calling upstream"),
            }
            return self.lead(&keys, &value, resumes, upstream).await;
        }
    }

    /// Runs `upstream` holding the lease (renewed), then stores the outcome if it is final.
    async fn lead<T, F, Fut>(
        &self,
        keys: &Keys,
        value: &str,
        resumes: bool,
        upstream: F,
    ) -> Result<T, GatewayError>
    where
        T: outcome::Stored,
        F: FnOnce(bool) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let mut guard = Release {
            state: self.state.clone(),
            lease: Some((keys.lease.clone(), value.to_owned())),
        };
        let ttl = self.state.lease_ttl();
        let renew = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let mut renew = RENEW.prepare_invoke();
                renew
                    .key(&keys.lease)
                    .arg(value)
                    .arg(ttl.as_millis() as u64);
                let _ = self.state.invoke::<i64>(&renew).await;
            }
        };
        let outcome = tokio::select! {
            outcome = upstream(resumes) => outcome,
            never = renew => never,
        };
        let stored = if is_final_outcome(&outcome) {
            outcome::encode(&outcome).map(|bytes| {
                let mut done = format!("{}:", value.get(..16).unwrap_or_default()).into_bytes();
                done.extend(bytes);
                done
            })
        } else {
            None
        };
        let mut finish = FINISH.prepare_invoke();
        finish
            .key(&keys.done)
            .key(&keys.lease)
            .arg(value)
            .arg(stored.unwrap_or_default())
            .arg(self.window.as_millis() as u64)
            .arg(&keys.channel);
        if self.state.invoke::<i64>(&finish).await.is_some() {
            guard.lease = None;
        }
        outcome
    }
}

fn parse((state, value): (String, Vec<u8>)) -> Option<Claim> {
    match state.as_str() {
        "done" => split(&value).map(|(fp, bytes)| Claim::Done(fp, bytes.to_vec())),
        "lease" => split(&value).map(|(fp, _)| Claim::Held(fp)),
        "lead" => Some(Claim::Lead),
        _ => None,
    }
}

fn waited_too_long() -> GatewayError {
    GatewayError::KeyInFlight(
        "the deadline came while another replica of the gateway ran a call with the same idempotency key; retry with the same key to get its outcome"
            .into(),
    )
}

/// The compare-and-delete of the lease `value` holds, as a command that can wait for Redis.
fn release(lease: &str, value: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(RELEASE_SCRIPT).arg(1).arg(lease).arg(value);
    cmd
}

/// Drops a lease still held when the leading call is dropped (its caller cancelled), so the
/// next caller need not wait for it to expire.
struct Release {
    state: SharedState,
    lease: Option<(String, String)>,
}

/// Deletes a lease still ours. KEYS: lease; ARGV: lease value.
const RELEASE_SCRIPT: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

impl Drop for Release {
    fn drop(&mut self) {
        let Some((lease, value)) = self.lease.take() else {
            return;
        };
        let state = self.state.clone();
        // Now, or once Redis answers again if it does not now (a FINISH that timed out).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { state.now_or_later(release(&lease, &value)).await });
        }
    }
}
