//! The node's composed state, as the HTTP layers see it: the API, the dashboard and the
//! federation endpoints, plus the alerts and start-up. Each part is owned by its layer and
//! made once, in order, by `server::start`; a handler asks for the part it uses (axum
//! `FromRef`), so that most see only the push path, the relay's board or the SLA views.
//!
//! **Invariant:** no module below the HTTP layers sees `App`: services take the parts they
//! use (`Ingest`, `Sla`, `RelayState`, `Partners`, …) as arguments.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::adapters::Loaded;
use crate::adapters::imports::Imports;
use crate::config::ReportingConfig;
use crate::evaluations::Partners;
use crate::ingest::Ingest;
use crate::interchange::{Identity, Node};
use crate::relay::RelayState;
use crate::sla::Sla;

/// Everything the HTTP layers of one node share. Cheap to clone (every part is shared).
#[derive(Debug, Clone)]
pub struct App {
    /// The push path: validator, calendar, store, limits.
    pub ingest: Arc<Ingest>,
    /// The relay's destinations and how each is doing.
    pub relay: RelayState,
    /// SLA views and how far the background tracker reaches.
    pub sla: Arc<Sla>,
    /// Who reports monthly to this node, and by when; the quality target.
    pub reporting: Arc<ReportingConfig>,
    /// Monthly-report imports: uploads, feedback workbooks and their progress.
    pub imports: Arc<Imports>,
    /// The platform adapters this node runs, verified against the registry.
    pub adapters: Arc<[Arc<Loaded>]>,
    /// The operators' dashboard: who may log in, and the queue samples of the last day.
    pub dashboard: Arc<crate::dashboard::Board>,
    /// The interchange side of the node, when it has a federation identity.
    pub federation: Option<Node>,
    /// Evaluation recognition (信用评价结果互认), when the node has a federation identity.
    pub evaluations: Option<Arc<Partners>>,
    /// Who may call what: credentials, the route table, rate limits, the audit log.
    pub gate: Arc<crate::api::access::Gate>,
    /// The signed measures catalogue (联合奖惩措施清单) this node applies, when configured.
    pub measures: Option<Arc<gateway_core::measures::Catalogue>>,
    /// Whether this replica holds the lease and runs the singletons (`leader`): always, once
    /// started, on SQLite.
    pub leading: Arc<std::sync::atomic::AtomicBool>,
}

impl App {
    /// The federation identity, when the node has one.
    pub fn identity(&self) -> Option<&Identity> {
        self.federation.as_ref().map(|n| &n.identity)
    }
}

impl FromRef<App> for Arc<Ingest> {
    fn from_ref(app: &App) -> Self {
        Arc::clone(&app.ingest)
    }
}

impl FromRef<App> for RelayState {
    fn from_ref(app: &App) -> Self {
        app.relay.clone()
    }
}

impl FromRef<App> for Arc<Sla> {
    fn from_ref(app: &App) -> Self {
        Arc::clone(&app.sla)
    }
}

impl FromRef<App> for Arc<ReportingConfig> {
    fn from_ref(app: &App) -> Self {
        Arc::clone(&app.reporting)
    }
}

impl FromRef<App> for Arc<Imports> {
    fn from_ref(app: &App) -> Self {
        Arc::clone(&app.imports)
    }
}

impl FromRef<App> for Option<Arc<Partners>> {
    fn from_ref(app: &App) -> Self {
        app.evaluations.clone()
    }
}

impl FromRef<App> for Arc<crate::dashboard::Board> {
    fn from_ref(app: &App) -> Self {
        Arc::clone(&app.dashboard)
    }
}
