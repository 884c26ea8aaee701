//! Which stored records go to which destination. Structural rules first (nothing goes back
//! where it came from; down to a child go only lifecycle events about records of its subtree
//! or sent to it, and list entries whose measures reach it), then the configured rules, then
//! the defaults.

use std::sync::Arc;

use gateway_core::interchange::registry::{Level, Member, Registry};
use gateway_core::measures::{Catalogue, Reach};
use gateway_core::record::RecordType;
use gateway_store::{ListFacts, QueuedRecord};

use crate::config::{RelayConfig, RouteAction, RouteRule};

/// Where a node sends records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Upward: everything this node accepted that the rules allow.
    Parent,
    /// Downward: lifecycle events whose target's origin (`target_origin`, checked against the
    /// records held here when the event was taken) is in that child's subtree, or whose
    /// target was sent to that child; and list entries that start a measure whose reach takes
    /// in the child (ADR 0008).
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
    /// The node deciding.
    member: String,
    rules: Vec<RouteRule>,
    /// The measures this node applies: which children a list entry goes down to. Without a
    /// catalogue no list entry goes down (the node cannot know the reach).
    measures: Option<Arc<Catalogue>>,
}

impl Router {
    pub fn new(member: &str, configured: &[RouteRule], measures: Option<Arc<Catalogue>>) -> Self {
        Self { member: member.to_owned(), rules: configured.iter().cloned().chain(defaults()).collect(), measures }
    }

    /// Whether `record` goes to `dest`. For an event that [`Router::needs_target_sent`] names,
    /// the relay also checks that the event's target went to `dest`.
    pub fn sends(&self, dest: &Destination, record: &QueuedRecord, registry: &Registry) -> bool {
        if record.arrived_from.as_deref() == Some(dest.name.as_str()) {
            return false;
        }
        let goes = match dest.link {
            Link::Child if is_event(record) => true,
            Link::Child => record.listed.as_ref().is_some_and(|listed| self.reaches(dest, listed, registry)),
            // A list entry from above, and an event about one, is published by the platform
            // that listed the subject.
            Link::Publication | Link::Adapter => {
                let from_above = |origin: &str| !registry.is_ancestor_or_self(&self.member, origin);
                !(record.listed.is_some() && from_above(&record.origin)
                    || is_event(record) && record.target_origin.as_deref().is_some_and(from_above))
            }
            Link::Parent => true,
        };
        goes && self.takes(dest, &record.record_type, record.disclosure.as_deref())
    }

    /// Whether `record`, which [`Router::sends`] to `dest`, goes only if the record it is about
    /// was sent there too: an event goes up about a record of this subtree only if that record
    /// went up (one kept here is unknown above), and down to a child outside whose subtree its
    /// target originated only about a record that went down to it. An event about a record
    /// from above (a list entry that came down) always goes up: the parent holds the record.
    pub fn needs_target_sent(&self, dest: &Destination, record: &QueuedRecord, registry: &Registry) -> bool {
        let of_subtree = |node: &str| {
            record.target_origin.as_deref().is_some_and(|origin| registry.is_ancestor_or_self(node, origin))
        };
        match dest.link {
            Link::Parent => record.target_record_id.is_some() && of_subtree(&self.member),
            Link::Child => is_event(record) && !of_subtree(&dest.name),
            Link::Publication | Link::Adapter => false,
        }
    }

    /// Whether a list entry starts a measure here whose reach takes in the child `dest`: every
    /// child for `all`, the child whose area holds the subject's region for `region`.
    fn reaches(&self, dest: &Destination, listed: &ListFacts, registry: &Registry) -> bool {
        let Some(catalogue) = &self.measures else { return false };
        let child = registry.member(&dest.name);
        catalogue.started_by(&listed.list_type, &listed.domain).any(|m| match m.reach {
            Reach::All => true,
            Reach::Region => child.is_some_and(|c| holds_region(c, &listed.subject_region)),
        })
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

fn is_event(record: &QueuedRecord) -> bool {
    record.record_type.parse::<RecordType>().is_ok_and(RecordType::is_event)
}

/// Whether a member's area holds the administrative division `region` (GB/T 2260): a
/// province holds the codes that begin with its first two digits, a city its first four, a
/// district its own; the national platform holds all.
fn holds_region(member: &Member, region: &str) -> bool {
    let digits = match member.level {
        Level::National => 0,
        Level::Provincial => 2,
        Level::Municipal => 4,
        Level::District => 6,
    };
    member.region_code.get(..digits).is_some_and(|prefix| region.len() == 6 && region.starts_with(prefix))
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
    /// ingests). Without a registry a node has no federation and relays nothing. `measures`
    /// decides which list entries go down (see [`Router`]).
    pub fn new(
        member: &str,
        registry: Option<&Registry>,
        adapters: &[Arc<crate::adapters::Loaded>],
        config: &RelayConfig,
        measures: Option<Arc<Catalogue>>,
    ) -> Self {
        let router = Router::new(member, &config.routes, measures);
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
            listed: None,
        }
    }

    fn dest(name: &str, link: Link) -> Destination {
        Destination::new(name, link)
    }

    #[test]
    fn defaults_keep_restricted_records_from_public_sinks() {
        let router = Router::new("cn-370300", &[], None);
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
    fn events_go_down_into_the_subtree_holding_their_target_or_where_it_went_and_never_back() {
        let router = Router::new("cn-370300", &[], None);
        let registry = crate::pki::demo_registry_for_tests();
        let zhoucun = dest("cn-370306", Link::Child);
        let parent = dest("cn-370000", Link::Parent);
        let repair = record("repair", "public", Some("cn-370306"), Some("cn-370000"));
        assert!(router.sends(&zhoucun, &repair, &registry));
        assert!(!router.sends(&parent, &repair, &registry), "it came from the parent");
        assert!(!router.needs_target_sent(&zhoucun, &repair, &registry), "its target is of the subtree");
        // About a record from elsewhere: it goes only where that record went.
        let elsewhere = record("repair", "public", Some("cn-370500"), Some("cn-370000"));
        assert!(router.sends(&zhoucun, &elsewhere, &registry));
        assert!(router.needs_target_sent(&zhoucun, &elsewhere, &registry));
        assert!(!router.sends(&zhoucun, &record("admin_penalty", "public", None, None), &registry));
        let from_child = record("objection_opened", "public", Some("cn-370306"), Some("cn-370306"));
        assert!(!router.sends(&zhoucun, &from_child, &registry));
        assert!(router.sends(&parent, &from_child, &registry));
        assert!(router.needs_target_sent(&parent, &from_child, &registry), "up only if its record went up");
        // Raised here about an entry that came down from 信用中国: up, where the entry is held,
        // and not into this platform's publication (信用中国 publishes what it listed).
        let about_national = record("objection_opened", "public", Some("cn-000000"), None);
        assert!(router.sends(&parent, &about_national, &registry));
        assert!(!router.needs_target_sent(&parent, &about_national, &registry));
        assert!(!router.sends(&dest(PUBLICATION, Link::Publication), &about_national, &registry));
        assert!(router.sends(&dest(PUBLICATION, Link::Publication), &from_child, &registry));
    }

    fn list_entry(origin: &str, list_type: &str, region: &str, from: Option<&str>) -> QueuedRecord {
        QueuedRecord {
            origin: origin.into(),
            listed: Some(ListFacts {
                list_type: list_type.into(),
                domain: "市场监管".into(),
                subject_region: region.into(),
            }),
            ..record("credit_list_entry", "public", None, from)
        }
    }

    #[test]
    fn list_entries_go_down_where_their_measures_reach() {
        let registry = crate::pki::demo_registry_for_tests();
        let catalogue = Catalogue::parse(include_bytes!("../../../../measures/demo.toml")).expect("demo catalogue");
        let shandong = Router::new("cn-370000", &[], Some(Arc::new(catalogue)));
        let (zibo, dongying) = (dest("cn-370300", Link::Child), dest("cn-370500", Link::Child));
        // A black-list entry starts government procurement (reach all); a 重点关注 entry only
        // market inspection, which reaches the subject's region (周村区, in 淄博).
        let procurement = list_entry("cn-000000", "black", "370306", Some("cn-000000"));
        assert!(shandong.sends(&zibo, &procurement, &registry));
        assert!(shandong.sends(&dongying, &procurement, &registry), "reach all");
        let watched = list_entry("cn-000000", "watch", "370306", Some("cn-000000"));
        assert!(shandong.sends(&zibo, &watched, &registry));
        assert!(!shandong.sends(&dongying, &watched, &registry), "reach region: 东营 does not hold 370306");
        assert!(!shandong.needs_target_sent(&zibo, &watched, &registry));
        // Never back where it came from; not at all without a catalogue.
        let from_zibo = list_entry("cn-370306", "black", "370306", Some("cn-370300"));
        assert!(!shandong.sends(&zibo, &from_zibo, &registry));
        assert!(shandong.sends(&dongying, &from_zibo, &registry));
        let no_catalogue = Router::new("cn-370000", &[], None);
        assert!(!no_catalogue.sends(&zibo, &procurement, &registry));
        // A red-list entry starts the reward measure, which reaches the region only.
        let red = list_entry("cn-000000", "red", "370306", Some("cn-000000"));
        assert!(shandong.sends(&zibo, &red, &registry));
        assert!(!shandong.sends(&dongying, &red, &registry));
        // The entry from above is published by 信用中国, not again here; one of our own is.
        let publication = dest(PUBLICATION, Link::Publication);
        assert!(!shandong.sends(&publication, &procurement, &registry));
        assert!(shandong.sends(&publication, &from_zibo, &registry));
    }

    #[test]
    fn a_platform_adapter_takes_public_records_of_its_types_and_never_its_own_rows_back() {
        let router = Router::new("cn-370300", &[], None);
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
        let router = Router::new("cn-370300", &[skip_licenses], None);
        let registry = crate::pki::demo_registry_for_tests();
        let parent = dest("cn-370000", Link::Parent);
        assert!(!router.sends(&parent, &record("admin_license", "public", None, None), &registry));
        assert!(router.sends(&parent, &record("admin_penalty", "public", None, None), &registry));
    }

    #[test]
    fn what_a_destination_takes_comes_in_groups_of_types_with_the_same_scopes() {
        let parent = dest("cn-370000", Link::Parent);
        let all = |_| true;
        let defaults = Routes {
            destinations: vec![parent.clone()],
            router: Router::new("cn-370300", &[], None),
            adapters: Vec::new(),
        };
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
        let routes = Routes { router: Router::new("cn-370300", &[skip_licences], None), ..defaults };
        let groups = routes.takes(&parent, all);
        let licences = groups.iter().find(|(types, _)| types.contains(&RecordType::AdminLicense)).expect("listed");
        assert_eq!((licences.0.len(), licences.1.as_slice()), (1, ["public"].as_slice()));
        assert!(routes.takes(&parent, |t| t.is_event()).iter().all(|(types, _)| types.iter().all(|t| t.is_event())));
        assert_eq!(Destination::unlisted("adapter:xinyong-zibo").link, Link::Adapter);
        assert_eq!(Destination::unlisted(PUBLICATION).link, Link::Publication);
    }
}
