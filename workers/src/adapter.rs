//! Choosing and building the cross-worker adapter from the environment.

use std::time::Duration;

use socketioxide_redis::drivers::fred::FredDriver;
use socketioxide_redis::drivers::fred::fred_client as fred;
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};

use fred::interfaces::{EventInterface, PubsubInterface};
use fred::prelude::{Builder, ClientLike, Config, ReconnectPolicy};
use fred::types::RespVersion;

use crate::hub::driver::HubDriver;

/// Timeout of every Redis command, so an outage fails fast instead of hanging handlers.
pub const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of adapter requests that expect answers from other workers (`fetch_sockets`).
pub const ADAPTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Adapter settings shared by both drivers.
pub fn adapter_config(prefix: &str) -> RedisAdapterConfig {
    RedisAdapterConfig::new()
        .with_prefix(prefix.to_string())
        .with_request_timeout(ADAPTER_REQUEST_TIMEOUT)
}

/// The Redis adapter on fred: RESP3 (sharded pub/sub needs it), a reconnect policy, command
/// timeouts, and subscriptions restored after every reconnect. `redis-cluster://` URLs give a
/// cluster client.
pub async fn redis(url: &str, prefix: &str) -> anyhow::Result<RedisAdapterCtr<FredDriver>> {
    let mut config = Config::from_url(url)?;
    config.version = RespVersion::RESP3;
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = REDIS_COMMAND_TIMEOUT)
        .with_connection_config(|c| c.connection_timeout = REDIS_COMMAND_TIMEOUT)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build_subscriber_client()?;
    restore_subscriptions_on_reconnect(&client);
    let ctr = RedisAdapterCtr::new_with_fred_config(client.clone(), adapter_config(prefix)).await?;
    tracing::info!(
        servers = client.active_connections().len(),
        "redis adapter connected"
    );
    Ok(ctr)
}

/// fred re-subscribes only when asked to; without this a worker goes deaf after Redis
/// restarts. fred's own `manage_subscriptions` cannot be used: its `resubscribe_all` first sends
/// a `SUBSCRIBE` with no channel (the adapter uses only sharded channels), which Redis rejects,
/// and it then gives up before the `SSUBSCRIBE`s (and, racing the adapter's first `SSUBSCRIBE`,
/// can fail worker start-up).
fn restore_subscriptions_on_reconnect(client: &fred::clients::SubscriberClient) {
    let client = client.clone();
    let mut reconnects = client.reconnect_rx();
    tokio::spawn(async move {
        while reconnects.recv().await.is_ok() {
            let channels = client.tracked_shard_channels();
            for chan in &channels {
                if let Err(e) = client.ssubscribe(chan.to_string()).await {
                    tracing::warn!(error = %e, channel = %chan, "cannot restore a Redis subscription");
                }
            }
            if !channels.is_empty() {
                tracing::info!(
                    channels = channels.len(),
                    "Redis reconnected; subscriptions restored"
                );
            }
        }
    });
}

/// The embedded adapter: the same socketioxide-redis adapter over the rtsup hub.
pub async fn hub(
    path: std::path::PathBuf,
    prefix: &str,
) -> anyhow::Result<RedisAdapterCtr<HubDriver>> {
    let driver = HubDriver::connect(path.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the rtsup hub at {}: {e}", path.display()))?;
    Ok(RedisAdapterCtr::new_with_driver(
        driver,
        adapter_config(prefix),
    ))
}
