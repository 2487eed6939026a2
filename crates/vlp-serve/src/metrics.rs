//! Request counts and latency histograms, written in Prometheus' text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Latency {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Latency>,
    rejected_busy: u64,
}

impl Metrics {
    /// Counts one finished request on `route` with its status and duration.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *m.requests.entry((route.to_string(), status)).or_default() += 1;
        let l = m.latency.entry(route.to_string()).or_default();
        l.count += 1;
        l.sum += seconds;
        for (b, le) in l.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= le {
                *b += 1;
            }
        }
    }

    pub fn rejected_busy(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).rejected_busy += 1;
    }

    /// The exposition text; `gauges` are added as they are (index size, requests in flight).
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = String::new();
        s.push_str("# HELP vlp_requests_total Requests answered, by route and status.\n# TYPE vlp_requests_total counter\n");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(s, "vlp_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        s.push_str("# HELP vlp_request_duration_seconds Time to answer, by route.\n# TYPE vlp_request_duration_seconds histogram\n");
        for (route, l) in &m.latency {
            for (b, le) in l.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(s, "vlp_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {b}");
            }
            let _ = writeln!(s, "vlp_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", l.count);
            let _ = writeln!(s, "vlp_request_duration_seconds_sum{{route=\"{route}\"}} {}", l.sum);
            let _ = writeln!(s, "vlp_request_duration_seconds_count{{route=\"{route}\"}} {}", l.count);
        }
        s.push_str("# HELP vlp_rejected_busy_total Requests refused with 503 because the server was at its limit.\n# TYPE vlp_rejected_busy_total counter\n");
        let _ = writeln!(s, "vlp_rejected_busy_total {}", m.rejected_busy);
        for (name, help, v) in gauges {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe("/v1/search", 200, 0.003);
        m.observe("/v1/search", 200, 0.2);
        m.observe("/v1/search", 400, 0.0001);
        let text = m.render(&[("vlp_index_items", "Items in the index.", 42.0)]);
        assert!(text.contains("vlp_requests_total{route=\"/v1/search\",status=\"200\"} 2"));
        assert!(text.contains("vlp_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.001\"} 1"));
        assert!(text.contains("vlp_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.005\"} 2"));
        assert!(text.contains("vlp_request_duration_seconds_bucket{route=\"/v1/search\",le=\"+Inf\"} 3"));
        assert!(text.contains("vlp_index_items 42"));
    }
}
