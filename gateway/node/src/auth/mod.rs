//! Who may do what on the department API (the X-Road security server's habit): every caller
//! is a registered principal — a department, a desk officer, an operator, an auditor or an
//! admin — authenticated by an API key, a client certificate under the operator's client CA,
//! or a dashboard login; each route declares the one permission it needs (`api::access`
//! enforces the table in one layer); and what a caller sends or reads is checked against the
//! units it may act for.
//!
//! With authentication off (`[auth] required = false`, loopback development only), every
//! caller acts as the development principal, which may do everything; start-up says so once.

pub mod cli;
pub mod credentials;
pub mod limits;

use gateway_core::record::Disclosure;
use serde::{Deserialize, Serialize};

pub use credentials::{Authenticator, Denied, IssueRequest, Issued};
pub use limits::{InFlight, RateLimiter};

/// The roles of the issue's access model. A principal has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A registered unit with its USCC: pushes its records, reads back its own.
    Department,
    /// A named person who runs evaluation lookups at partner cities.
    DeskOfficer,
    /// Runs the node: SLA, quality, queues, resends, the dashboard.
    Operator,
    /// Reads, never changes: the audit log, evidence, records.
    Auditor,
    /// Manages credentials.
    Admin,
    /// Authentication is off (loopback development): may do everything.
    Development,
}

impl Role {
    pub const ISSUABLE: [Role; 5] = [Role::Department, Role::DeskOfficer, Role::Operator, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Department => "department",
            Role::DeskOfficer => "desk_officer",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Development => "development",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ISSUABLE.into_iter().find(|r| r.as_str() == s)
    }

    /// A dashboard account's role from its configuration (`operator` when unset).
    pub fn of_login(role: Option<&str>) -> Role {
        role.and_then(Role::parse).unwrap_or(Role::Operator)
    }

    /// The permission table of the roles: the one place that says which role may do what.
    pub fn permits(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Development => true,
            Role::Department => {
                matches!(
                    p,
                    RecordsPush
                        | RecordsRead
                        | ImportsUpload
                        | ImportsRead
                        | ReportingRead
                        | QualityRead
                        | CasesRead
                        | CasesAnswer
                        | ChecksQuery
                )
            }
            Role::DeskOfficer => matches!(p, EvaluationsLookup | EvaluationsEvidence),
            Role::Operator => matches!(
                p,
                RecordsRead
                    | ImportsRead
                    | ReportingRead
                    | QualityRead
                    | SlaRead
                    | RelayRead
                    | RelayResend
                    | EvaluationsAudit
                    | CasesRead
                    | Metrics
                    | Dashboard
            ),
            Role::Auditor => matches!(
                p,
                RecordsRead
                    | ReportingRead
                    | QualityRead
                    | SlaRead
                    | RelayRead
                    | EvaluationsAudit
                    | EvaluationsEvidence
                    | AuditRead
                    | CasesRead
                    | Dashboard
            ),
            // Who manages credentials does not also read the log of what was done with them.
            Role::Admin => matches!(p, CredentialsManage),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route needs. Each route of the API and the dashboard declares exactly one, or is on
/// the short public list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    RecordsPush,
    RecordsRead,
    ImportsUpload,
    ImportsRead,
    ReportingRead,
    QualityRead,
    SlaRead,
    RelayRead,
    RelayResend,
    EvaluationsLookup,
    EvaluationsAudit,
    EvaluationsEvidence,
    AuditRead,
    CredentialsManage,
    CasesRead,
    /// Answering one's own unit's cases (响应, 反馈, 解除 acknowledged).
    CasesAnswer,
    /// The point-of-decision check (信用核查) of one's own unit's measures.
    ChecksQuery,
    Metrics,
    Dashboard,
}

impl Permission {
    pub const ALL: [Permission; 19] = [
        Permission::RecordsPush,
        Permission::RecordsRead,
        Permission::ImportsUpload,
        Permission::ImportsRead,
        Permission::ReportingRead,
        Permission::QualityRead,
        Permission::SlaRead,
        Permission::RelayRead,
        Permission::RelayResend,
        Permission::EvaluationsLookup,
        Permission::EvaluationsAudit,
        Permission::EvaluationsEvidence,
        Permission::AuditRead,
        Permission::CredentialsManage,
        Permission::CasesRead,
        Permission::CasesAnswer,
        Permission::ChecksQuery,
        Permission::Metrics,
        Permission::Dashboard,
    ];

    /// The name in OpenAPI (`x-permission`), errors and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::RecordsPush => "records.push",
            Permission::RecordsRead => "records.read",
            Permission::ImportsUpload => "imports.upload",
            Permission::ImportsRead => "imports.read",
            Permission::ReportingRead => "reporting.read",
            Permission::QualityRead => "quality.read",
            Permission::SlaRead => "sla.read",
            Permission::RelayRead => "relay.read",
            Permission::RelayResend => "relay.resend",
            Permission::EvaluationsLookup => "evaluations.lookup",
            Permission::EvaluationsAudit => "evaluations.audit",
            Permission::EvaluationsEvidence => "evaluations.evidence",
            Permission::AuditRead => "audit.read",
            Permission::CredentialsManage => "credentials.manage",
            Permission::CasesRead => "cases.read",
            Permission::CasesAnswer => "cases.answer",
            Permission::ChecksQuery => "checks.query",
            Permission::Metrics => "metrics",
            Permission::Dashboard => "dashboard",
        }
    }

    /// The roles that hold it.
    pub fn roles(self) -> Vec<Role> {
        Role::ISSUABLE.into_iter().filter(|r| r.permits(self)).collect()
    }

    /// Whether calls under it go to the audit log. Every permission guards a change or
    /// non-public data, except the metrics scrape (counters, every few seconds).
    pub fn audited(self) -> bool {
        self != Permission::Metrics
    }
}

/// Extra rights a credential may carry beyond its role.
pub mod grants {
    /// May read `authorized_query` records (依申请查询) of any unit.
    pub const AUTHORIZED_QUERY: &str = "authorized_query";
    /// May report for every unit (a platform's 信用办 registering objections and repairs).
    pub const ALL_UNITS: &str = "all_units";
    pub const ALL: [&str; 2] = [AUTHORIZED_QUERY, ALL_UNITS];
}

/// An authenticated caller, as every handler and the audit log see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The name audit entries carry.
    pub name: String,
    pub role: Role,
    /// The credential used (none for dashboard logins and development).
    pub credential_id: Option<String>,
    /// Its unit (统一社会信用代码) and department category.
    pub unit_uscc: Option<String>,
    pub category: Option<String>,
    /// Other units it may report for.
    pub report_for: Vec<String>,
    pub grants: Vec<String>,
}

/// Which units' records a principal may send and read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitScope {
    /// Every unit: operators, auditors, development, and principals with the `all_units` grant.
    Any,
    /// Only these (normalised USCCs).
    Only(Vec<String>),
}

impl UnitScope {
    pub fn allows(&self, uscc: &str) -> bool {
        match self {
            UnitScope::Any => true,
            UnitScope::Only(units) => units.iter().any(|u| u.eq_ignore_ascii_case(uscc)),
        }
    }
}

impl Principal {
    /// Everyone, when authentication is off (loopback development).
    pub fn development() -> Self {
        Self {
            name: "development".into(),
            role: Role::Development,
            credential_id: None,
            unit_uscc: None,
            category: None,
            report_for: Vec::new(),
            grants: grants::ALL.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    /// An operator or auditor logged in to the dashboard.
    pub fn dashboard_login(name: &str, role: Role) -> Self {
        Self {
            name: name.to_owned(),
            role,
            credential_id: None,
            unit_uscc: None,
            category: None,
            report_for: Vec::new(),
            grants: Vec::new(),
        }
    }

    pub fn may(&self, p: Permission) -> bool {
        self.role.permits(p)
    }

    pub fn has_grant(&self, grant: &str) -> bool {
        self.grants.iter().any(|g| g == grant)
    }

    /// The units whose records this principal may push and read. A department or desk officer
    /// is held to its own unit and those it reports for.
    pub fn units(&self) -> UnitScope {
        match self.role {
            Role::Department | Role::DeskOfficer if !self.has_grant(grants::ALL_UNITS) => {
                UnitScope::Only(self.unit_uscc.iter().chain(&self.report_for).cloned().collect())
            }
            _ => UnitScope::Any,
        }
    }

    /// Whether a record of `department` with this disclosure scope may be shown: within the
    /// principal's units, and `authorized_query` records only with that grant or to their own
    /// department.
    pub fn may_see(&self, department: Option<&str>, disclosure: Disclosure) -> bool {
        let units = self.units();
        // "Own": one of the units a department or desk officer is held to.
        let own = matches!(units, UnitScope::Only(_)) && department.is_some_and(|d| units.allows(d));
        let in_scope = units == UnitScope::Any || own;
        in_scope && (disclosure != Disclosure::AuthorizedQuery || own || self.has_grant(grants::AUTHORIZED_QUERY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn department(unit: &str) -> Principal {
        Principal {
            unit_uscc: Some(unit.into()), ..Principal::dashboard_login("周村区市场监管局", Role::Department)
        }
    }

    #[test]
    fn every_permission_has_a_role_and_development_may_do_everything() {
        for p in Permission::ALL {
            assert!(!p.roles().is_empty(), "{p:?} has no role");
            assert!(Role::Development.permits(p));
        }
        assert!(!Role::Department.permits(Permission::RelayResend));
        assert!(!Role::Auditor.permits(Permission::RecordsPush));
        assert!(!Role::Admin.permits(Permission::RecordsRead));
    }

    #[test]
    fn departments_see_their_own_and_authorized_query_needs_the_grant() {
        let d = department("11370306MB28554702");
        assert!(d.may_see(Some("11370306MB28554702"), Disclosure::AuthorizedQuery));
        assert!(!d.may_see(Some("91370303MA3C8Q2X1Y"), Disclosure::Public));
        assert!(!d.may_see(None, Disclosure::Public));
        let op = Principal::dashboard_login("ops", Role::Operator);
        assert!(op.may_see(Some("x"), Disclosure::GovShared));
        assert!(!op.may_see(Some("x"), Disclosure::AuthorizedQuery));
        let op = Principal { grants: vec![grants::AUTHORIZED_QUERY.into()], ..op };
        assert!(op.may_see(Some("x"), Disclosure::AuthorizedQuery));
        assert!(Principal::development().may_see(None, Disclosure::AuthorizedQuery));
    }
}
