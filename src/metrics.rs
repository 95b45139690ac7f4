//! Metrics in Prometheus text format, one registry per server instance.
//!
//! Owns the metric families and their names; recording is a field access and an atomic
//! add, cheap enough for the Ping and Sync hot paths. Served at `/metrics` on the admin
//! listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub command: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// HTTP requests by ActiveSync command and HTTP status.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests answered with a command Status other than success, by command and status.
    pub command_statuses: Family<RequestLabels, Counter>,
    /// Ping and long-poll Sync requests waiting right now.
    pub waiting: Gauge,
    /// Ping outcomes: changes, expired, superseded, hierarchy, error, shutdown.
    pub pings: Family<OutcomeLabels, Counter>,
    /// Store commit → push response written, in seconds.
    pub push_latency: Histogram,
    /// Users with a live change-feed subscription in the push hub.
    pub watched_users: Gauge,
    /// Open client connections.
    pub connections: Gauge,
    /// Credential checks that went to the store (cache misses), and failures.
    pub auth_store_checks: Counter,
    pub auth_failures: Counter,
    /// Items sent to devices by Sync.
    pub items_synced: Counter,
    /// Messages delivered by LMTP or the deliver command.
    pub deliveries: Counter,
    /// Users entitled to Mobile Sync, and devices by access state (set by the admin side).
    pub entitled_users: Gauge,
    pub devices: Family<StateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pushsync");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "ActiveSync HTTP requests by command and HTTP status", requests.clone());
        let command_statuses = Family::<RequestLabels, Counter>::default();
        registry.register("command_status", "Non-success ActiveSync Status values sent, by command", command_statuses.clone());
        let waiting = Gauge::default();
        registry.register("waiting_pings", "Ping and long-poll Sync requests waiting for changes", waiting.clone());
        let pings = Family::<OutcomeLabels, Counter>::default();
        registry.register("pings", "Ping outcomes", pings.clone());
        // 0.5 ms … ~65 s: push on loopback is sub-millisecond, push through IMAP IDLE ~0.5 s.
        let push_latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 18));
        registry.register("push_latency_seconds", "Store commit to Ping/Sync response written", push_latency.clone());
        let watched_users = Gauge::default();
        registry.register("watched_users", "Users with a live change-feed subscription", watched_users.clone());
        let connections = Gauge::default();
        registry.register("connections", "Open client connections", connections.clone());
        let auth_store_checks = Counter::default();
        registry.register("auth_store_checks", "Credential checks answered by the store (cache misses)", auth_store_checks.clone());
        let auth_failures = Counter::default();
        registry.register("auth_failures", "Failed authentications", auth_failures.clone());
        let items_synced = Counter::default();
        registry.register("items_synced", "Items sent to devices by Sync", items_synced.clone());
        let deliveries = Counter::default();
        registry.register("deliveries", "Messages delivered locally", deliveries.clone());
        let entitled_users = Gauge::default();
        registry.register("entitled_users", "Users with Mobile Sync enabled", entitled_users.clone());
        let devices = Family::<StateLabels, Gauge>::default();
        registry.register("devices", "Device partnerships by access state", devices.clone());
        Metrics {
            registry,
            requests,
            command_statuses,
            waiting,
            pings,
            push_latency,
            watched_users,
            connections,
            auth_store_checks,
            auth_failures,
            items_synced,
            deliveries,
            entitled_users,
            devices,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn ping_outcome(&self, outcome: &'static str) {
        self.pings.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.requests.get_or_create(&RequestLabels { command: "Sync".into(), status: 200 }).inc();
        m.ping_outcome("changes");
        m.push_latency.observe(0.002);
        let text = m.render();
        assert!(text.contains("pushsync_http_requests_total{command=\"Sync\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("pushsync_pings_total{outcome=\"changes\"} 1"), "{text}");
        assert!(text.contains("pushsync_push_latency_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
