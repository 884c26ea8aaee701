//! Which stored records go to which destination. Structural rules first (nothing goes back
//! where it came from; only lifecycle events go down, and only into the subtree that holds
//! their target), then the configured rules, then the defaults.

use std::sync::Arc;

use gateway_core::interchange::registry::Registry;
use gateway_core::record::RecordType;
use gateway_store::QueuedRecord;

use crate::config::{RelayConfig, RouteAction, RouteRule};

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

    /// A destination this node does not send to, as its name says it would be: the sink, a
    /// platform's adapter, else a peer reached as the parent is (SLA views of such names).
    pub fn unlisted(name: &str) -> Self {
        let link = match name {
            PUBLICATION => Link::Publication,
            n if n.starts_with(ADAPTER_PREFIX) => Link::Adapter,
            _ => Link::Parent,
        };
        Self::new(name, link)
    }
}

/// The name of the local publication sink as a destination (defined by the store, which
/// counts the sink's publications).
pub use gateway_store::PUBLICATION;

/// The prefix of a delivering adapter's destination name.
const ADAPTER_PREFIX: &str = "adapter:";

/// The destination name of a delivering adapter.
pub fn adapter_destination(platform: &str) -> String {
    format!("{ADAPTER_PREFIX}{platform}")
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
        if dest.link == Link::Child {
            let is_event = record.record_type.parse::<RecordType>().is_ok_and(RecordType::is_event);
            let in_subtree =
                record.target_origin.as_deref().is_some_and(|origin| registry.is_ancestor_or_self(&dest.name, origin));
            if !is_event || !in_subtree {
                return false;
            }
        }
        self.takes(dest, &record.record_type, record.disclosure.as_deref())
    }

    /// Whether `dest` takes records of `record_type` and `disclosure` by its record types and the
    /// rules alone (configured, then the defaults). Where a record came from, and for a child
    /// whether it is an event about its subtree, are judged by [`Router::sends`] on top.
    pub fn takes(&self, dest: &Destination, record_type: &str, disclosure: Option<&str>) -> bool {
        if !dest.record_types.is_empty() && !dest.record_types.iter().any(|t| t == record_type) {
            return false;
        }
        match self.rules.iter().find(|r| matches(r, dest, record_type, disclosure)) {
            Some(rule) => rule.action == RouteAction::Send,
            None => true,
        }
    }
}

fn matches(rule: &RouteRule, dest: &Destination, record_type: &str, disclosure: Option<&str>) -> bool {
    let destination = match rule.destination.as_str() {
        "parent" => dest.link == Link::Parent,
        "children" => dest.link == Link::Child,
        "adapters" => dest.link == Link::Adapter,
        name => name == dest.name,
    };
    let listed =
        |list: &[String], value: Option<&str>| list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v));
    destination && listed(&rule.record_types, Some(record_type)) && listed(&rule.disclosure, disclosure)
}

/// The disclosure scopes a record can have (`disclosure_scope`).
pub const DISCLOSURES: [&str; 3] = ["public", "gov_shared", "authorized_query"];

/// Every destination of one node and the rules that say what each takes. Made once at start-up
/// from the registry in force, the adapters the node runs and `[relay]`: the relay's senders,
/// SLA tracking, the dashboard and `/metrics` all read this one list.
#[derive(Debug, Clone)]
pub struct Routes {
    destinations: Vec<Destination>,
    router: Router,
    /// The adapters behind the `adapter:<platform>` destinations.
    adapters: Vec<Arc<crate::adapters::Loaded>>,
}

impl Routes {
    /// The destinations of `member` under `registry`: its parent, its children (in pull mode if
    /// `[relay] pull_children` names them), the publication sink when one is configured, and
    /// every platform it delivers to through an adapter (a 前置库, database-mode, adapter only
    /// ingests). Without a registry a node has no federation and relays nothing.
    pub fn new(
        member: &str,
        registry: Option<&Registry>,
        adapters: &[Arc<crate::adapters::Loaded>],
        config: &RelayConfig,
    ) -> Self {
        let router = Router::new(&config.routes);
        let Some(registry) = registry else { return Self { destinations: Vec::new(), router, adapters: Vec::new() } };
        let mut destinations = Vec::new();
        let mut delivering = Vec::new();
        if let Some(parent) = registry.member(member).and_then(|m| m.parent.clone()) {
            destinations.push(Destination::new(parent, Link::Parent));
        }
        for m in registry.body.members.iter().filter(|m| m.parent.as_deref() == Some(member)) {
            let pull = config.pull_children.contains(&m.member_id);
            destinations.push(Destination { pull, ..Destination::new(m.member_id.clone(), Link::Child) });
        }
        if config.publication_dir.is_some() {
            destinations.push(Destination::new(PUBLICATION, Link::Publication));
        }
        for loaded in adapters {
            let m = &loaded.adapter.manifest;
            if m.platform.direction.delivers() && m.transport.mode != gateway_core::adapter::Mode::Database {
                destinations.push(Destination {
                    record_types: loaded.adapter.datasets.iter().map(|d| d.record_type.as_str().to_owned()).collect(),
                    ..Destination::new(adapter_destination(loaded.id()), Link::Adapter)
                });
                delivering.push(Arc::clone(loaded));
            }
        }
        Self { destinations, router, adapters: delivering }
    }

    /// The adapter behind the destination `adapter:<platform>`.
    pub fn adapter(&self, destination: &str) -> Option<&Arc<crate::adapters::Loaded>> {
        self.adapters.iter().find(|l| adapter_destination(l.id()) == destination)
    }

    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// The destination called `name`, if this node sends there.
    pub fn get(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// What `dest` takes by the rules, as groups of record types that take the same disclosure
    /// scopes (one group when the rules do not tell types apart, as the defaults do not).
    /// `keep` selects the types considered.
    pub fn takes(
        &self,
        dest: &Destination,
        keep: impl Fn(RecordType) -> bool,
    ) -> Vec<(Vec<RecordType>, Vec<&'static str>)> {
        let mut groups: Vec<(Vec<RecordType>, Vec<&'static str>)> = Vec::new();
        for t in RecordType::ALL.into_iter().filter(|t| keep(*t)) {
            let scopes: Vec<&'static str> =
                DISCLOSURES.into_iter().filter(|d| self.router.takes(dest, t.as_str(), Some(d))).collect();
            if scopes.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(_, s)| *s == scopes) {
                Some((types, _)) => types.push(t),
                None => groups.push((vec![t], scopes)),
            }
        }
        groups
    }
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

    #[test]
    fn what_a_destination_takes_comes_in_groups_of_types_with_the_same_scopes() {
        let parent = dest("cn-370000", Link::Parent);
        let all = |_| true;
        let defaults = Routes { destinations: vec![parent.clone()], router: Router::new(&[]), adapters: Vec::new() };
        let groups = defaults.takes(&parent, all);
        assert_eq!(groups.len(), 1, "the defaults treat every type alike: {groups:?}");
        assert_eq!(groups[0].0.len(), RecordType::ALL.len());
        assert_eq!(groups[0].1, ["public", "gov_shared"]);

        let skip_licences = RouteRule {
            destination: "parent".into(),
            record_types: vec!["admin_license".into()],
            disclosure: vec!["gov_shared".into()],
            action: RouteAction::Skip,
        };
        let routes = Routes { router: Router::new(&[skip_licences]), ..defaults };
        let groups = routes.takes(&parent, all);
        let licences = groups.iter().find(|(types, _)| types.contains(&RecordType::AdminLicense)).expect("listed");
        assert_eq!((licences.0.len(), licences.1.as_slice()), (1, ["public"].as_slice()));
        assert!(routes.takes(&parent, |t| t.is_event()).iter().all(|(types, _)| types.iter().all(|t| t.is_event())));
        assert_eq!(Destination::unlisted("adapter:xinyong-zibo").link, Link::Adapter);
        assert_eq!(Destination::unlisted(PUBLICATION).link, Link::Publication);
    }
}
