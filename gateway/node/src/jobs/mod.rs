//! Scheduled jobs of a node, beside the relay's senders and the SLA tracker: each is a pass
//! (a function of the node's state and a time, which tests call directly) and a loop that runs
//! the pass on a timer until the node stops.

pub mod expiry;
