//! Which stored records go to which destination. Structural rules first (nothing goes back
//! where it came from; only lifecycle events go down, and only into the subtree that holds
//! their target), then the configured rules, then the defaults.

use gateway_core::interchange::registry::Registry;
use gateway_core::record::RecordType;
use gateway_store::QueuedRecord;

use crate::config::{RouteAction, RouteRule};

/// Where a node sends records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Upward: everything this node accepted that the rules allow.
    Parent,
    /// Downward: lifecycle events whose target's origin (`target_origin`, checked against the
    /// records held here when the event was taken) is in that child's subtree.
    Child,
    /// This platform's own publication system (a local sink until its adapter exists).
    Publication,
    /// A platform reached through a delivering adapter (`adapter:<platform id>`).
    Adapter,
}

/// One destination: a member id (parent or child) or [`PUBLICATION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub link: Link,
    /// The destination collects its envelopes (pull mode, a child behind a firewall) rather
    /// than being pushed to.
    pub pull: bool,
    /// The record types the destination can take (an adapter's datasets); empty means all.
    pub record_types: Vec<String>,
}

impl Destination {
    pub fn new(name: impl Into<String>, link: Link) -> Self {
        Self { name: name.into(), link, pull: false, record_types: Vec::new() }
    }
}

/// The name of the local publication sink as a destination (defined by the store, which
/// counts the sink's publications).
pub use gateway_store::PUBLICATION;

/// The destination name of a delivering adapter.
pub fn adapter_destination(platform: &str) -> String {
    format!("adapter:{platform}")
}

/// The built-in rules, after the configured ones: `authorized_query` records stay at the node
/// holding the authorisation; only `public` records reach a publication system or a platform
/// adapter (a rule naming `adapter:<id>` can widen that), and monthly reports are internal
/// bookkeeping.
fn defaults() -> Vec<RouteRule> {
    let rule = |destination: &str, record_types: &[&str], disclosure: &[&str]| RouteRule {
        destination: destination.into(),
        record_types: record_types.iter().map(|s| (*s).into()).collect(),
        disclosure: disclosure.iter().map(|s| (*s).into()).collect(),
        action: RouteAction::Skip,
    };
    vec![
        rule("parent", &[], &["authorized_query"]),
        rule("children", &[], &["authorized_query"]),
        rule(PUBLICATION, &[], &["gov_shared", "authorized_query"]),
        rule(PUBLICATION, &["monthly_report"], &[]),
        rule("adapters", &[], &["gov_shared", "authorized_query"]),
        rule("adapters", &["monthly_report"], &[]),
    ]
}

/// The routing decision for every destination of one node.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<RouteRule>,
}

impl Router {
    pub fn new(configured: &[RouteRule]) -> Self {
        Self { rules: configured.iter().cloned().chain(defaults()).collect() }
    }

    /// Whether `record` goes to `dest`.
    pub fn sends(&self, dest: &Destination, record: &QueuedRecord, registry: &Registry) -> bool {
        if record.arrived_from.as_deref() == Some(dest.name.as_str()) {
            return false;
        }
        if !dest.record_types.is_empty() && !dest.record_types.contains(&record.record_type) {
            return false;
        }
        if dest.link == Link::Child {
            let is_event = record.record_type.parse::<RecordType>().is_ok_and(RecordType::is_event);
            let in_subtree =
                record.target_origin.as_deref().is_some_and(|origin| registry.is_ancestor_or_self(&dest.name, origin));
            if !is_event || !in_subtree {
                return false;
            }
        }
        match self.rules.iter().find(|r| matches(r, dest, record)) {
            Some(rule) => rule.action == RouteAction::Send,
            None => true,
        }
    }
}

fn matches(rule: &RouteRule, dest: &Destination, record: &QueuedRecord) -> bool {
    let destination = match rule.destination.as_str() {
        "parent" => dest.link == Link::Parent,
        "children" => dest.link == Link::Child,
        "adapters" => dest.link == Link::Adapter,
        name => name == dest.name,
    };
    let listed =
        |list: &[String], value: Option<&str>| list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v));
    destination
        && listed(&rule.record_types, Some(&record.record_type))
        && listed(&rule.disclosure, record.disclosure.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(record_type: &str, disclosure: &str, target_origin: Option<&str>, from: Option<&str>) -> QueuedRecord {
        QueuedRecord {
            seq: 1,
            record_id: uuid::Uuid::nil(),
            version: 1,
            origin: "cn-370306".into(),
            record_type: record_type.into(),
            disclosure: Some(disclosure.into()),
            target_origin: target_origin.map(Into::into),
            target_record_id: target_origin.map(|_| "x".into()),
            arrived_from: from.map(Into::into),
        }
    }

    fn dest(name: &str, link: Link) -> Destination {
        Destination::new(name, link)
    }

    #[test]
    fn defaults_keep_restricted_records_from_public_sinks() {
        let router = Router::new(&[]);
        let registry = crate::pki::demo_registry_for_tests();
        let parent = dest("cn-370000", Link::Parent);
        let publication = dest(PUBLICATION, Link::Publication);
        assert!(router.sends(&parent, &record("admin_penalty", "public", None, None), &registry));
        assert!(router.sends(&parent, &record("admin_penalty", "gov_shared", None, None), &registry));
        assert!(!router.sends(&parent, &record("admin_penalty", "authorized_query", None, None), &registry));
        assert!(router.sends(&publication, &record("admin_penalty", "public", None, None), &registry));
        assert!(!router.sends(&publication, &record("admin_penalty", "gov_shared", None, None), &registry));
        assert!(!router.sends(&publication, &record("monthly_report", "public", None, None), &registry));
    }

    #[test]
    fn events_go_down_only_into_the_subtree_holding_their_target_and_never_back() {
        let router = Router::new(&[]);
        let registry = crate::pki::demo_registry_for_tests();
        let zhoucun = dest("cn-370306", Link::Child);
        let parent = dest("cn-370000", Link::Parent);
        let repair = record("repair", "public", Some("cn-370306"), Some("cn-370000"));
        assert!(router.sends(&zhoucun, &repair, &registry));
        assert!(!router.sends(&parent, &repair, &registry), "it came from the parent");
        let elsewhere = record("repair", "public", Some("cn-370500"), Some("cn-370000"));
        assert!(!router.sends(&zhoucun, &elsewhere, &registry));
        assert!(!router.sends(&zhoucun, &record("admin_penalty", "public", None, None), &registry));
        let from_child = record("objection_opened", "public", Some("cn-370306"), Some("cn-370306"));
        assert!(!router.sends(&zhoucun, &from_child, &registry));
        assert!(router.sends(&parent, &from_child, &registry));
    }

    #[test]
    fn a_platform_adapter_takes_public_records_of_its_types_and_never_its_own_rows_back() {
        let router = Router::new(&[]);
        let registry = crate::pki::demo_registry_for_tests();
        let zibo = Destination {
            record_types: vec!["admin_penalty".into()],
            ..Destination::new(adapter_destination("xinyong-zibo"), Link::Adapter)
        };
        assert!(router.sends(&zibo, &record("admin_penalty", "public", None, None), &registry));
        assert!(!router.sends(&zibo, &record("admin_penalty", "gov_shared", None, None), &registry));
        assert!(!router.sends(&zibo, &record("admin_license", "public", None, None), &registry));
        let pulled_from_zibo = record("admin_penalty", "public", None, Some("adapter:xinyong-zibo"));
        assert!(!router.sends(&zibo, &pulled_from_zibo, &registry));
        assert!(router.sends(&dest("cn-370000", Link::Parent), &pulled_from_zibo, &registry));
    }

    #[test]
    fn configured_rules_come_first() {
        let skip_licenses = RouteRule {
            destination: "parent".into(),
            record_types: vec!["admin_license".into()],
            disclosure: vec![],
            action: RouteAction::Skip,
        };
        let router = Router::new(&[skip_licenses]);
        let registry = crate::pki::demo_registry_for_tests();
        let parent = dest("cn-370000", Link::Parent);
        assert!(!router.sends(&parent, &record("admin_license", "public", None, None), &registry));
        assert!(router.sends(&parent, &record("admin_penalty", "public", None, None), &registry));
    }
}
