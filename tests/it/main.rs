//! The integration tests, one crate (linkerd's layout): each file a module
//! of behaviour, `common` the harness they share, compiled once. Each test
//! starts the real `embedgate` binary on `127.0.0.1:0` against real
//! upstreams; `cargo test --test it <module>::` runs one file's.

mod common;

mod access_log;
mod adversarial_api;
mod adversarial_edges;
mod adversarial_h2;
mod adversarial_headers;
mod adversarial_http1;
mod adversarial_slow;
mod adversarial_tokens;
mod adversarial_upstreams;
mod audit_log;
mod browser;
mod change_under_load;
mod cli;
mod cluster;
mod deploy;
mod e2e;
mod embed;
mod host_apps;
mod identity;
mod key_rotation;
mod large_bodies;
mod layers;
mod lifecycle;
mod limits;
mod metrics;
mod openapi;
mod pat_api;
mod redis_tls;
mod request_id;
mod revoke;
mod secrets;
mod transparency;
mod websocket_h2;
