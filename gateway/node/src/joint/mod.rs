//! Joint reward and punishment (联合奖惩, #24) on a node. So far: the measures catalogue's
//! commands (`measures check|sign|hash`); the catalogue itself is loaded and verified at
//! start-up by `server::load_catalogue`. The cases (发起—响应—反馈) come next.

pub mod cli;
