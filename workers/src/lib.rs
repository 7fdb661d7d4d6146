//! `rtsup-worker`: the reference Socket.IO worker (socketioxide on hyper 1), and the model app
//! for Rust users of rtsup.
//!
//! Rooms and broadcasts cross workers through an adapter chosen from the environment
//! ([`adapter`]): Redis (socketioxide-redis on fred) when `REDIS_URL` is set, else the rtsup
//! hub ([`hub`]) when `RTSUP_HUB` is set (the embedded default), else this process only.
//! Features (chat rooms, private messages, typing, whoami, room counts) live in [`app`]; the
//! HTTP side (health, `POST /emit` webhook, demo page) in [`http`].

pub mod adapter;
pub mod app;
pub mod auth;
pub mod config;
pub mod http;
pub mod hub;
pub mod rate_limit;
pub mod server;

pub use config::WorkerConfig;
pub use server::run;
