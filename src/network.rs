//! The `[network]` section of the configuration: what one client may hold of the server before
//! and after TLS (pending handshakes, connections, HTTP/2 streams, event feeds, requests in flight
//! and their rate), each with a default and a doc comment, validated at start-up and turned into
//! the plain settings that `tls`, `grpc` and `app` take. docs/LIMITS.md lists them with the error
//! a client sees. Must not depend on the service layer or the store.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde::Deserialize;

use crate::{
    domain::ids::Institution,
    grpc::{Allowance, EVENT_POLL, FairnessPolicy, FeedLimits},
    tls::{self, IncomingConfig},
};

/// Connection, HTTP/2, feed and fairness limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Seconds a client has to complete its TLS handshake before the connection is closed.
    pub handshake_timeout_secs: u64,
    /// TLS handshakes in progress at once; further connections wait in the listen backlog.
    pub max_pending_handshakes: usize,
    /// Pending handshakes one source IP address may hold (at most an eighth of
    /// `max_pending_handshakes`); its further connections are closed right after accept.
    pub max_pending_handshakes_per_source: usize,
    /// Open authenticated connections; above it new connections are closed right after accept.
    pub max_connections: usize,
    /// Open authenticated connections one institution (client certificate) may hold, at most
    /// `max_connections`: so that one institution cannot hold them all and lock the others out.
    /// Its further connections are closed right after their TLS handshake.
    pub max_connections_per_institution: usize,
    /// Idle seconds before TCP keepalive probes on a connection.
    pub tcp_keepalive_secs: u64,
    /// HTTP/2 streams (concurrent calls) one connection may have open; the client queues the
    /// rest.
    pub max_concurrent_streams: u32,
    /// Seconds between the HTTP/2 pings that find dead peers. A live client answers them, so a
    /// connection carrying an idle event feed is never closed for idleness.
    pub http2_keepalive_interval_secs: u64,
    /// Seconds an HTTP/2 ping may go unanswered before the connection is closed.
    pub http2_keepalive_timeout_secs: u64,
    /// Seconds a connection with no open stream (no call in progress, no feed) is kept before the
    /// server closes it. A connection with any open stream, a live feed above all, is never
    /// closed by it.
    pub idle_timeout_secs: u64,
    /// Seconds a unary call may take before it is answered DEADLINE_EXCEEDED (streaming calls
    /// are exempt). A shorter `grpc-timeout` from the client still applies.
    pub unary_deadline_secs: u64,
    /// Open `grpc.health.v1.Health/Watch` and server reflection streams one institution may
    /// have at once (together); more are refused with RESOURCE_EXHAUSTED.
    pub health_reflection_streams_per_institution: usize,
    /// Requests no handler records (refusals at the edge, health and reflection calls, requests
    /// given up) one client certificate may have audited one record each per second; the rest of
    /// its second are counted, and written as one record of counts.
    pub edge_audit_per_second: u32,
    /// WatchEvents feeds.
    pub feeds: FeedsConfig,
    /// Per-institution requests in flight and rate.
    pub fairness: FairnessConfig,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            handshake_timeout_secs: tls::HANDSHAKE_TIMEOUT.as_secs(),
            max_pending_handshakes: tls::MAX_PENDING_HANDSHAKES,
            max_pending_handshakes_per_source: tls::MAX_PENDING_HANDSHAKES_PER_SOURCE,
            max_connections: tls::MAX_CONNECTIONS,
            max_connections_per_institution: tls::MAX_CONNECTIONS_PER_INSTITUTION,
            tcp_keepalive_secs: tls::TCP_KEEPALIVE.as_secs(),
            max_concurrent_streams: 100,
            http2_keepalive_interval_secs: 30,
            http2_keepalive_timeout_secs: 20,
            idle_timeout_secs: tls::IDLE_TIMEOUT.as_secs(),
            unary_deadline_secs: 10,
            health_reflection_streams_per_institution: 4,
            edge_audit_per_second: 5,
            feeds: FeedsConfig::default(),
            fairness: FairnessConfig::default(),
        }
    }
}

/// WatchEvents feeds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedsConfig {
    /// Feeds one institution may have open at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_per_institution: usize,
    /// Events buffered per feed for its client (and read from the event log at a time).
    pub buffer_events: usize,
    /// Seconds a feed's buffer may stay full (its client reading nothing) before the feed is cut
    /// and its place freed; a Backup stream's too, which frees the one backup turn.
    pub stall_secs: u64,
}

impl Default for FeedsConfig {
    fn default() -> Self {
        FeedsConfig {
            max_per_institution: 4,
            buffer_events: 64,
            stall_secs: 10,
        }
    }
}

/// Per-institution requests in flight and rate (the institution is the client certificate's).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FairnessConfig {
    /// Requests one institution may have in flight; more are refused with RESOURCE_EXHAUSTED
    /// and a RetryInfo.
    pub max_in_flight: u32,
    /// Requests one institution may start per second, on average (a token bucket).
    pub rate_per_sec: u32,
    /// Requests one institution may start at once after a quiet spell (the bucket's size).
    pub burst: u32,
    /// Institutions with other allowances than the above.
    pub overrides: Vec<FairnessOverride>,
}

impl Default for FairnessConfig {
    fn default() -> Self {
        FairnessConfig {
            max_in_flight: 8,
            rate_per_sec: 200,
            burst: 400,
            overrides: Vec::new(),
        }
    }
}

/// One institution's own allowance; unset fields take the defaults of `[network.fairness]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairnessOverride {
    /// The institution as its certificate names it: `urn:rxgate:institution:<kind>:<code>`.
    pub institution: String,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    /// Requests started per second.
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
    /// The bucket's size.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl NetworkConfig {
    /// Checks what serde cannot; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("handshake_timeout_secs", self.handshake_timeout_secs),
            ("max_pending_handshakes", self.max_pending_handshakes as u64),
            ("max_connections", self.max_connections as u64),
            (
                "max_connections_per_institution",
                self.max_connections_per_institution as u64,
            ),
            ("tcp_keepalive_secs", self.tcp_keepalive_secs),
            (
                "max_concurrent_streams",
                u64::from(self.max_concurrent_streams),
            ),
            (
                "http2_keepalive_interval_secs",
                self.http2_keepalive_interval_secs,
            ),
            (
                "http2_keepalive_timeout_secs",
                self.http2_keepalive_timeout_secs,
            ),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("unary_deadline_secs", self.unary_deadline_secs),
            (
                "health_reflection_streams_per_institution",
                self.health_reflection_streams_per_institution as u64,
            ),
            (
                "edge_audit_per_second",
                u64::from(self.edge_audit_per_second),
            ),
            (
                "feeds.max_per_institution",
                self.feeds.max_per_institution as u64,
            ),
            ("feeds.buffer_events", self.feeds.buffer_events as u64),
            ("feeds.stall_secs", self.feeds.stall_secs),
            (
                "fairness.max_in_flight",
                u64::from(self.fairness.max_in_flight),
            ),
            (
                "fairness.rate_per_sec",
                u64::from(self.fairness.rate_per_sec),
            ),
            ("fairness.burst", u64::from(self.fairness.burst)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("network.{name} must be positive"));
        }
        let per_source = self.max_pending_handshakes_per_source;
        if per_source == 0 || per_source > self.max_pending_handshakes / 8 {
            return Err(
                "network.max_pending_handshakes_per_source must be between 1 and an \
                        eighth of network.max_pending_handshakes"
                    .into(),
            );
        }
        if self.max_connections_per_institution > self.max_connections {
            return Err(
                "network.max_connections_per_institution must be at most network.max_connections"
                    .into(),
            );
        }
        self.fairness_policy().map(|_| ())
    }

    /// The accept loop's limits; `handshake_failures` is the counter /metrics shows.
    pub fn incoming(
        &self,
        handshake_failures: Arc<std::sync::atomic::AtomicU64>,
    ) -> IncomingConfig {
        IncomingConfig {
            handshake_timeout: secs(self.handshake_timeout_secs),
            max_pending_handshakes: self.max_pending_handshakes,
            max_pending_handshakes_per_source: self.max_pending_handshakes_per_source,
            max_connections: self.max_connections,
            max_connections_per_institution: self.max_connections_per_institution,
            tcp_keepalive: Some(secs(self.tcp_keepalive_secs)),
            idle_timeout: secs(self.idle_timeout_secs),
            handshake_failures,
        }
    }

    pub fn http2_keepalive_interval(&self) -> Duration {
        secs(self.http2_keepalive_interval_secs)
    }

    pub fn http2_keepalive_timeout(&self) -> Duration {
        secs(self.http2_keepalive_timeout_secs)
    }

    pub fn unary_deadline(&self) -> Duration {
        secs(self.unary_deadline_secs)
    }

    pub fn feed_limits(&self) -> FeedLimits {
        FeedLimits {
            max_per_institution: self.feeds.max_per_institution,
            buffer: self.feeds.buffer_events,
            stall: secs(self.feeds.stall_secs),
            poll: EVENT_POLL,
        }
    }

    /// The fairness policy, or why an override is refused.
    pub fn fairness_policy(&self) -> Result<FairnessPolicy, String> {
        let f = &self.fairness;
        let default = Allowance {
            max_in_flight: f.max_in_flight,
            rate_per_sec: f64::from(f.rate_per_sec),
            burst: f.burst,
        };
        let mut overrides = HashMap::new();
        for o in &f.overrides {
            let who = Institution::from_uri(&o.institution)
                .map_err(|e| format!("network.fairness.overrides: {:?}: {e}", o.institution))?;
            let allowance = Allowance {
                max_in_flight: o.max_in_flight.unwrap_or(f.max_in_flight),
                rate_per_sec: f64::from(o.rate_per_sec.unwrap_or(f.rate_per_sec)),
                burst: o.burst.unwrap_or(f.burst),
            };
            if allowance.max_in_flight == 0 || allowance.rate_per_sec == 0.0 || allowance.burst == 0
            {
                return Err(format!(
                    "network.fairness.overrides: {:?}: every allowance must be positive",
                    o.institution
                ));
            }
            if overrides.insert(who, allowance).is_some() {
                return Err(format!(
                    "network.fairness.overrides: {:?} is named twice",
                    o.institution
                ));
            }
        }
        Ok(FairnessPolicy { default, overrides })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NetworkConfig, String> {
        let config: NetworkConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn an_empty_section_is_the_defaults() {
        let config = parse("").unwrap();
        assert_eq!(config, NetworkConfig::default());
        assert_eq!(config.max_pending_handshakes_per_source * 8, 1024);
        assert!(config.handshake_timeout_secs <= 5);
    }

    #[test]
    fn an_override_takes_the_defaults_it_does_not_name() {
        let config = parse(
            "[fairness]\nrate_per_sec = 100\n[[fairness.overrides]]\n\
             institution = \"urn:rxgate:institution:management:1390000001\"\nmax_in_flight = 64\n",
        )
        .unwrap();
        let policy = config.fairness_policy().unwrap();
        let who = Institution::from_uri("urn:rxgate:institution:management:1390000001").unwrap();
        assert_eq!(
            policy.overrides[&who],
            Allowance {
                max_in_flight: 64,
                rate_per_sec: 100.0,
                burst: 400
            }
        );
        assert_eq!(policy.default.max_in_flight, 8);
    }

    #[test]
    fn nonsense_is_refused_naming_the_setting() {
        for (text, named) in [
            ("unary_deadline_secs = 0", "unary_deadline_secs"),
            (
                "[feeds]\nmax_per_institution = 0",
                "feeds.max_per_institution",
            ),
            (
                "max_pending_handshakes_per_source = 200",
                "max_pending_handshakes_per_source",
            ),
            (
                "max_connections_per_institution = 0",
                "max_connections_per_institution",
            ),
            (
                "max_connections = 16\nmax_connections_per_institution = 32",
                "max_connections_per_institution",
            ),
            (
                "[[fairness.overrides]]\ninstitution = \"clinic 1\"",
                "fairness.overrides",
            ),
            (
                "[[fairness.overrides]]\ninstitution = \"urn:rxgate:institution:clinic:1310000001\"\n\
                 burst = 0",
                "fairness.overrides",
            ),
        ] {
            let refused = parse(text).unwrap_err();
            assert!(refused.contains(named), "{text}: {refused}");
        }
        assert!(parse("surprise = 1").is_err());
    }
}
