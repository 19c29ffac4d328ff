//! The results: a table for people and JSON for `scripts/performance`.

use serde_json::{Value, json};

use crate::{auth::AuthFigure, drive::Measured, server::Memory};

/// One measured scenario.
#[derive(Debug)]
pub struct Row {
    /// Scenario name (`get-org-jwt`, …).
    pub name: String,
    /// What `units` counts: `events` for usage, `calls` otherwise.
    pub unit: &'static str,
    /// The figures.
    pub measured: Measured,
    /// The server's memory right after the scenario.
    pub memory: Memory,
    /// Server CPU over the scenario, in % of one core.
    pub server_cpu_pct: f64,
    /// This process's CPU over the scenario, in % of one core.
    pub client_cpu_pct: f64,
    /// Scenario-specific figures.
    pub extra: Value,
    /// The baseline row serving the same answer bytes, if any.
    pub same_bytes: Option<&'static str>,
}

impl Row {
    /// Units per second: events/s for usage, calls/s otherwise.
    pub fn units_per_second(&self) -> f64 {
        if self.unit == "events" {
            self.measured.per_second(self.measured.units)
        } else {
            self.measured.calls_per_second()
        }
    }
}

/// A whole run.
#[derive(Debug)]
pub struct Report {
    /// Run parameters and environment.
    pub params: Value,
    /// The server's memory once it serves, before any load.
    pub idle: Memory,
    /// The server's memory at the end (its `hwm` is the run's peak).
    pub last: Memory,
    /// The baseline server's memory at the end.
    pub baseline_memory: Memory,
    /// Scenario rows, in run order.
    pub rows: Vec<Row>,
    /// The auth figure, when measured.
    pub auth: Option<AuthFigure>,
}

impl Report {
    /// Mean calls/s of the baseline rows (measured first and last), if any.
    pub fn baseline_rps(&self) -> Option<f64> {
        let runs: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.name == "baseline" || r.name == "baseline-end")
            .map(|r| r.measured.calls_per_second())
            .collect();
        (!runs.is_empty()).then(|| runs.iter().sum::<f64>() / runs.len() as f64)
    }

    fn ratio(&self, row: &Row) -> Option<f64> {
        self.baseline_rps()
            .filter(|b| *b > 0.0)
            .map(|b| row.measured.calls_per_second() / b)
    }

    /// Calls/s over those of the baseline row serving the same bytes.
    fn same_bytes_ratio(&self, row: &Row) -> Option<f64> {
        let name = row.same_bytes?;
        let base = self.rows.iter().find(|r| r.name == name)?;
        let rps = base.measured.calls_per_second();
        (rps > 0.0).then(|| row.measured.calls_per_second() / rps)
    }

    /// The JSON document.
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let m = &r.measured;
                json!({
                    "scenario": r.name,
                    "unit": r.unit,
                    "calls": m.calls,
                    "ok": m.ok,
                    "refused": m.refused,
                    "failed": m.failed,
                    "units": m.units,
                    "seconds": m.elapsed.as_secs_f64(),
                    "calls_per_s": m.calls_per_second(),
                    "units_per_s": r.units_per_second(),
                    "ok_per_s": m.per_second(m.ok),
                    "refused_per_s": m.per_second(m.refused),
                    "p50_us": m.percentile_us(500),
                    "p90_us": m.percentile_us(900),
                    "p99_us": m.percentile_us(990),
                    "ratio_to_baseline": self.ratio(r),
                    "ratio_to_same_bytes": self.same_bytes_ratio(r),
                    "rss_kib": r.memory.rss_kib,
                    "hwm_kib": r.memory.hwm_kib,
                    "server_cpu_pct": r.server_cpu_pct,
                    "client_cpu_pct": r.client_cpu_pct,
                    "first_error": m.first_error,
                    "refusals": m.refusals,
                    "extra": r.extra,
                })
            })
            .collect();
        json!({
            "params": self.params,
            "baseline_calls_per_s": self.baseline_rps(),
            "server": {
                "idle_rss_kib": self.idle.rss_kib,
                "peak_rss_kib": self.last.hwm_kib,
                "final_rss_kib": self.last.rss_kib,
            },
            "baseline_server": {
                "rss_kib": self.baseline_memory.rss_kib,
                "peak_rss_kib": self.baseline_memory.hwm_kib,
            },
            "auth": self.auth.map(|a| json!({
                "samples": a.samples,
                "admit_jwt_us": a.admit_jwt_us,
                "admit_api_key_us": a.admit_api_key_us,
                "verify_and_policy_us": a.verify_us,
                "get_us": a.get_us,
                "ratio": a.ratio(),
                "verify_and_policy_ratio": a.verify_ratio(),
            })),
            "scenarios": rows,
        })
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<22} {:>9} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>6} {:>6} {:>7} {:>5} {:>5}\n",
            "scenario",
            "calls/s",
            "events/s",
            "x base",
            "x bytes",
            "p50",
            "p90",
            "p99",
            "ok",
            "refus",
            "fail",
            "RSS MiB",
            "srv%",
            "cli%"
        );
        for r in &self.rows {
            let m = &r.measured;
            let events = if r.unit == "events" {
                format!("{:.0}", r.units_per_second())
            } else {
                "-".into()
            };
            let show = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
            let (ratio, same) = (show(self.ratio(r)), show(self.same_bytes_ratio(r)));
            out += &format!(
                "{:<22} {:>9.0} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9} {:>7} {:>6} {:>6} {:>7.1} {:>5.0} {:>5.0}\n",
                r.name,
                m.calls_per_second(),
                events,
                ratio,
                same,
                ms(m.percentile_us(500)),
                ms(m.percentile_us(900)),
                ms(m.percentile_us(990)),
                m.ok,
                m.refused,
                m.failed,
                r.memory.rss_kib as f64 / 1024.0,
                r.server_cpu_pct,
                r.client_cpu_pct,
            );
            if let Some(error) = &m.first_error {
                out += &format!("    first failure: {error}\n");
            }
            if let Some(check) = r.extra.get("check").and_then(Value::as_str) {
                out += &format!("    check: {check}\n");
            }
        }
        out += &format!(
            "server RSS: idle {:.1} MiB, peak {:.1} MiB (baseline server peak {:.1} MiB)\n",
            self.idle.rss_kib as f64 / 1024.0,
            self.last.hwm_kib as f64 / 1024.0,
            self.baseline_memory.hwm_kib as f64 / 1024.0,
        );
        if let Some(a) = self.auth {
            out += &format!(
                "auth: admit with JWT {:.0} µs = {:.1} % of a GetOrganization ({:.0} µs); JWT verify + policy alone {:.1} µs = {:.2} %; admit with API key {:.0} µs ({} samples each)\n",
                a.admit_jwt_us,
                a.ratio() * 100.0,
                a.get_us,
                a.verify_us,
                a.verify_ratio() * 100.0,
                a.admit_api_key_us,
                a.samples
            );
        }
        out
    }
}

/// Microseconds shown as milliseconds.
fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / 1000.0)
}
