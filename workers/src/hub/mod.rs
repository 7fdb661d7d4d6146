//! The embedded pub/sub hub: what Redis does for the socketioxide adapter, on one host, with no
//! Redis to install.
//!
//! The `rtsup` daemon hosts the [`server`] on a Unix socket (the role Socket.IO's
//! cluster-adapter gives the primary process); each reference worker plugs a [`driver::HubDriver`]
//! into socketioxide-redis's `Driver` seam, so rooms and broadcasts behave exactly as with the
//! Redis driver. Semantics follow Redis pub/sub: a publisher subscribed to a channel receives its
//! own messages; `num_serv` counts a channel's subscribers.

pub mod driver;
pub mod proto;
pub mod server;
