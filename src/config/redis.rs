//! The settings of the fleet's shared state in Redis (`--redis-url` and its companions). Unset,
//! every replica keeps its idempotency store and its pollers in process, as a lone gateway does.

use super::{Secret, flag_defaults};
use clap::Args;
use std::time::Duration;

/// Where replicas share idempotency outcomes, poller leases and the poll budget.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct RedisSettings {
    /// Redis shared by every replica: `redis://[user:password@]host:port[/db]`, or `rediss://`
    /// for TLS. With --redis-cluster, a comma-separated list of seed nodes. Unset: everything
    /// stays in this process. Held as a secret: it may carry a password.
    #[arg(
        long = "redis-url",
        env = "OMS_GATEWAY_REDIS_URL",
        value_hint = clap::ValueHint::Url,
        hide_env_values = true
    )]
    pub url: Option<Secret>,
    /// Treat --redis-url as the seed nodes of a Redis Cluster.
    #[arg(long = "redis-cluster", env = "OMS_GATEWAY_REDIS_CLUSTER")]
    pub cluster: bool,
    /// Lifetime of a replica's lease on an in-flight mutation or a watched resource; renewed while
    /// held, so a replica that dies loses it within this time.
    #[arg(long = "redis-lease-ttl", env = "OMS_GATEWAY_REDIS_LEASE_TTL", default_value = "5s", value_parser = super::ranges::positive_duration)]
    pub lease_ttl: Duration,
    /// Longest Redis command (and connect); past it the replica falls back to its local state.
    #[arg(long = "redis-timeout", env = "OMS_GATEWAY_REDIS_TIMEOUT", default_value = "500ms", value_parser = super::ranges::positive_duration)]
    pub timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        flag_defaults()
    }
}
