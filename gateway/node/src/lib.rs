//! The Credit Gateway node: configuration, store, HTTP API, and the commands of the
//! `credit-gateway` binary. The rules themselves live in `gateway_core`.

pub mod adapters;
pub mod alerts;
pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod evaluations;
pub mod evidence;
pub mod federation;
pub mod ingest;
pub mod interchange;
pub mod jobs;
pub mod joint;
pub mod leader;
pub mod pki;
pub mod quality;
pub mod relay;
pub mod reporting;
pub mod server;
pub mod sla;
pub mod tls;
