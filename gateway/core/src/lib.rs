//! Sans-IO core of Credit Gateway (信用信息交换网关).
//!
//! Values in, values and decisions out: this crate reads no files, opens no sockets, keeps no
//! clock. Time ("today") and configuration come in as arguments.

pub mod adapter;
pub mod calendar;
pub mod canonical;
pub mod crypto;
pub mod date;
pub mod ident;
pub mod interchange;
pub mod jws;
pub mod lifecycle;
pub mod measures;
pub mod merkle;
pub mod publicity;
pub mod quality;
pub mod record;
pub mod reporting;
mod rules;
pub mod sla;

pub use rules::{PENALTY_CATEGORIES_1996, PENALTY_CATEGORIES_2021, PENALTY_LAW_2021, penalty_categories_in_force};
