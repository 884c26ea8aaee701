//! Joint reward and punishment (联合奖惩, #24) on a node. So far: the measures catalogue's
//! commands (`measures check|sign|hash`; the catalogue itself is loaded and verified at
//! start-up by `server::load_catalogue`) and opening cases (发起, `opener`). Responses and
//! feedback (响应—反馈) come next (ADR 0007).

pub mod cli;
pub mod opener;
