//! Scenario -> the list of connections to open: who publishes where at what rate, who subscribes to what,
//! and how many deliveries each published message should produce (to count loss).

use serde::{Deserialize, Serialize};

use crate::engine::{ConnSpec, DeviceTargets, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// P publishers -> S subscribers (default 1), every subscriber gets every message.
    FanIn,
    /// P publishers (default 1) -> S subscribers on one topic.
    FanOut,
    /// N pairs, publisher i -> subscriber i on its own topic.
    P2p,
    /// Publishers -> one `$share` group of S subscribers: each message delivered once.
    Shared,
    /// K connects as fast as possible (CONNACK latency, connects/s), then disconnect.
    ConnStorm,
    /// K connections held idle, pinging at keepalive, each with its own filter plus shared-group filters;
    /// optional publishers send commands to random devices during the measured phase.
    Idle,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::P2p => "p2p",
            Scenario::Shared => "shared",
            Scenario::ConnStorm => "conn-storm",
            Scenario::Idle => "idle",
        }
    }
}

/// The sizes and names a plan is built from (already defaulted per scenario by the CLI).
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub scenario: Scenario,
    pub publishers: usize,
    pub subscribers: usize,
    pub connections: usize,
    /// Total publishes per second over all publishers.
    pub rate_per_sec: f64,
    pub topic: String,
    pub sub_pattern: Option<String>,
    /// Idle: each connection also joins this many shared groups, `$share/g/fleet/{k}` for k in 0..N.
    pub shared_subs: usize,
    pub client_prefix: String,
}

pub struct Plan {
    pub specs: Vec<ConnSpec>,
    /// Deliveries each published message should produce.
    pub deliveries_per_message: u64,
    pub publishers: usize,
    pub subscribers: usize,
}

pub fn build(options: &PlanOptions) -> Plan {
    let mut specs = Vec::new();
    let prefix = &options.client_prefix;
    let (publishers, subscribers) = match options.scenario {
        Scenario::ConnStorm => (0, 0),
        Scenario::Idle => (options.publishers, 0),
        Scenario::P2p => (options.publishers, options.publishers),
        _ => (options.publishers, options.subscribers),
    };
    let period_ns =
        if options.rate_per_sec > 0.0 { publishers as f64 * 1e9 / options.rate_per_sec } else { f64::INFINITY };
    // Idle publishers command random devices on their own filter's topic.
    let targets = match (options.scenario, &options.sub_pattern) {
        (Scenario::Idle, Some(pattern)) => Some(DeviceTargets {
            pattern: pattern.clone(),
            device_prefix: format!("{prefix}-c"),
            devices: options.connections as u64,
        }),
        _ => None,
    };
    for id in 0..publishers {
        specs.push(ConnSpec {
            client_id: format!("{prefix}-p{id}"),
            role: Role::Publisher {
                publisher: id as u32,
                topic: expand(&options.topic, id, &format!("{prefix}-p{id}")),
                period_ns,
                // Spread the publishers over one period so their sends do not come in bursts.
                offset_ns: if period_ns.is_finite() { (period_ns * id as f64 / publishers as f64) as u64 } else { 0 },
                targets: targets.clone(),
            },
        });
    }
    let default_filter = match options.scenario {
        Scenario::FanIn => topic_level_wildcard(&options.topic),
        Scenario::Shared => format!("$share/loadgen/{}", options.topic),
        _ => options.topic.clone(),
    };
    let filter_pattern = options.sub_pattern.clone().unwrap_or(default_filter);
    for id in 0..subscribers {
        let client_id = format!("{prefix}-s{id}");
        specs.push(ConnSpec { role: Role::Subscriber { filter: expand(&filter_pattern, id, &client_id) }, client_id });
    }
    if matches!(options.scenario, Scenario::ConnStorm | Scenario::Idle) {
        for id in 0..options.connections {
            let client_id = format!("{prefix}-c{id}");
            let own = options.sub_pattern.iter().map(|pattern| expand(pattern, id, &client_id));
            let shared = (0..options.shared_subs).map(shared_group_filter);
            specs.push(ConnSpec { role: Role::Idle { filters: own.chain(shared).collect() }, client_id });
        }
    }
    let deliveries_per_message = match options.scenario {
        Scenario::FanIn | Scenario::FanOut => subscribers as u64,
        Scenario::P2p | Scenario::Shared => 1,
        Scenario::Idle => u64::from(targets.is_some()),
        Scenario::ConnStorm => 0,
    };
    Plan { specs, deliveries_per_message, publishers, subscribers }
}

/// The k-th shared group every idle connection joins (`--shared-subs`).
pub fn shared_group_filter(k: usize) -> String {
    format!("$share/g/fleet/{k}")
}

/// `{id}` -> the connection's index within its role, `{client_id}` -> its client id.
pub fn expand(pattern: &str, id: usize, client_id: &str) -> String {
    pattern.replace("{id}", &id.to_string()).replace("{client_id}", client_id)
}

/// The filter matching every publisher topic of a pattern: each level holding `{id}` becomes `+`.
fn topic_level_wildcard(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|level| if level.contains("{id}") || level.contains("{client_id}") { "+" } else { level })
        .collect::<Vec<_>>()
        .join("/")
}

/// Which of `workers` processes and which of its `threads` threads a connection index runs on.
pub fn placement(index: usize, workers: usize, threads: usize) -> (usize, usize) {
    (index % workers, (index / workers) % threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(scenario: Scenario) -> PlanOptions {
        PlanOptions {
            scenario,
            publishers: 3,
            subscribers: 5,
            connections: 7,
            rate_per_sec: 300.0,
            topic: "t/{id}/x".into(),
            sub_pattern: None,
            shared_subs: 0,
            client_prefix: "lg".into(),
        }
    }

    #[test]
    fn fan_in_subscribes_with_a_wildcard_for_the_id_level() {
        let plan = build(&options(Scenario::FanIn));
        assert_eq!(plan.specs.len(), 8);
        assert_eq!(plan.deliveries_per_message, 5);
        let Role::Subscriber { filter } = &plan.specs[3].role else { panic!("subscriber expected") };
        assert_eq!(filter, "t/+/x");
        let Role::Publisher { topic, period_ns, offset_ns, .. } = &plan.specs[2].role else { panic!() };
        assert_eq!(topic, "t/2/x");
        assert_eq!(*period_ns, 1e7, "300/s over 3 publishers = one every 10 ms each");
        assert_eq!(*offset_ns, 6_666_666);
    }

    #[test]
    fn p2p_pairs_share_a_topic_and_expect_one_delivery() {
        let plan = build(&options(Scenario::P2p));
        assert_eq!(plan.specs.len(), 6);
        assert_eq!(plan.deliveries_per_message, 1);
        let Role::Subscriber { filter } = &plan.specs[4].role else { panic!() };
        assert_eq!(filter, "t/1/x");
    }

    #[test]
    fn idle_connections_expand_the_sub_pattern_per_client() {
        let mut opts = options(Scenario::Idle);
        opts.sub_pattern = Some("devices/{client_id}/cmd".into());
        opts.publishers = 0;
        let plan = build(&opts);
        assert_eq!(plan.specs.len(), 7);
        assert_eq!(plan.deliveries_per_message, 1, "a device gets each command sent to it");
        let Role::Idle { filters } = &plan.specs[6].role else { panic!() };
        assert_eq!(filters, &["devices/lg-c6/cmd"]);
    }

    #[test]
    fn idle_devices_join_shared_groups_and_publishers_target_devices() {
        let mut opts = options(Scenario::Idle);
        opts.sub_pattern = Some("devices/{client_id}/cmd".into());
        opts.shared_subs = 2;
        let plan = build(&opts);
        assert_eq!(plan.specs.len(), 3 + 7, "3 commanders + 7 devices");
        assert_eq!(plan.deliveries_per_message, 1);
        let Role::Idle { filters } = &plan.specs[9].role else { panic!() };
        assert_eq!(filters, &["devices/lg-c6/cmd", "$share/g/fleet/0", "$share/g/fleet/1"]);
        let Role::Publisher { targets: Some(targets), .. } = &plan.specs[0].role else { panic!("commander expected") };
        assert_eq!(targets.devices, 7);
        assert_eq!(targets.topic(6), "devices/lg-c6/cmd");
    }

    #[test]
    fn placement_spreads_evenly() {
        let mut counts = [[0; 2]; 3];
        for index in 0..600 {
            let (worker, thread) = placement(index, 3, 2);
            counts[worker][thread] += 1;
        }
        assert!(counts.iter().flatten().all(|&count| count == 100), "{counts:?}");
    }
}
