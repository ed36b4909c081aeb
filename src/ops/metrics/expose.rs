//! The Prometheus text exposition (format 0.0.4): host metrics from the latest sample under
//! node_exporter's names and labels (so existing dashboards work), the daemon's own process
//! under the standard `process_*` names (read now), then the application registry.

use std::fmt::Write as _;

use prometheus::Encoder;

use super::Metrics;
use super::collectors::{self, CPU_MODES};
use super::sampler::Sample;

/// Appends `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Appends one sample line. Finite values only (non-finite ones are skipped).
fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    if !value.is_finite() {
        return;
    }
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// One family with one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    family(out, name, kind, help);
    line(out, name, &[], value);
}

fn host(out: &mut String, s: &Sample) {
    if let Some(cpu) = &s.cpu {
        family(
            out,
            "node_cpu_seconds_total",
            "counter",
            "Seconds the CPUs spent in each mode.",
        );
        for (i, modes) in cpu.per_cpu.iter().enumerate() {
            let n = i.to_string();
            for (mode, v) in CPU_MODES.iter().zip(modes.iter()) {
                line(
                    out,
                    "node_cpu_seconds_total",
                    &[("cpu", &n), ("mode", mode)],
                    *v,
                );
            }
        }
        single(
            out,
            "node_boot_time_seconds",
            "gauge",
            "Node boot time, in unixtime.",
            cpu.boot_time as f64,
        );
        single(
            out,
            "node_context_switches_total",
            "counter",
            "Total number of context switches.",
            cpu.context_switches as f64,
        );
        single(
            out,
            "node_forks_total",
            "counter",
            "Total number of forks.",
            cpu.forks as f64,
        );
        if let Some(r) = cpu.procs_running {
            single(
                out,
                "node_procs_running",
                "gauge",
                "Number of processes in runnable state.",
                f64::from(r),
            );
        }
        if let Some(b) = cpu.procs_blocked {
            single(
                out,
                "node_procs_blocked",
                "gauge",
                "Number of processes blocked waiting for I/O to complete.",
                f64::from(b),
            );
        }
    }
    if let Some(l) = &s.load {
        single(out, "node_load1", "gauge", "1m load average.", l.one);
        single(out, "node_load5", "gauge", "5m load average.", l.five);
        single(out, "node_load15", "gauge", "15m load average.", l.fifteen);
    }
    if let Some(m) = &s.memory {
        for (field, v) in &m.fields {
            let name = format!("node_memory_{field}_bytes");
            single(
                out,
                &name,
                "gauge",
                &format!("Memory information field {field}_bytes."),
                *v as f64,
            );
        }
    }
    if let Some(fs) = &s.filesystem {
        let labels = [
            ("device", fs.device.as_str()),
            ("fstype", fs.fstype.as_str()),
            ("mountpoint", fs.mountpoint.as_str()),
        ];
        for (name, help, v) in [
            (
                "node_filesystem_size_bytes",
                "Filesystem size in bytes.",
                fs.size as f64,
            ),
            (
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
                fs.free as f64,
            ),
            (
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
                fs.avail as f64,
            ),
            (
                "node_filesystem_files",
                "Filesystem total file nodes.",
                fs.files as f64,
            ),
            (
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
                fs.files_free as f64,
            ),
            (
                "node_filesystem_readonly",
                "Filesystem read-only status.",
                if fs.readonly { 1.0 } else { 0.0 },
            ),
        ] {
            family(out, name, "gauge", help);
            line(out, name, &labels, v);
        }
    }
    if let Some(d) = &s.disk {
        let labels = [("device", d.device.as_str())];
        for (name, kind, help, v) in [
            (
                "node_disk_reads_completed_total",
                "counter",
                "The total number of reads completed successfully.",
                d.reads as f64,
            ),
            (
                "node_disk_writes_completed_total",
                "counter",
                "The total number of writes completed successfully.",
                d.writes as f64,
            ),
            (
                "node_disk_read_bytes_total",
                "counter",
                "The total number of bytes read successfully.",
                d.read_bytes as f64,
            ),
            (
                "node_disk_written_bytes_total",
                "counter",
                "The total number of bytes written successfully.",
                d.written_bytes as f64,
            ),
            (
                "node_disk_read_time_seconds_total",
                "counter",
                "The total number of seconds spent by all reads.",
                d.read_time_s,
            ),
            (
                "node_disk_write_time_seconds_total",
                "counter",
                "This is the total number of seconds spent by all writes.",
                d.write_time_s,
            ),
            (
                "node_disk_io_time_seconds_total",
                "counter",
                "Total seconds spent doing I/Os.",
                d.io_time_s,
            ),
            (
                "node_disk_io_now",
                "gauge",
                "The number of I/Os currently in progress.",
                d.io_now as f64,
            ),
        ] {
            family(out, name, kind, help);
            line(out, name, &labels, v);
        }
    }
    if let Some(net) = &s.net {
        type Field = fn(&collectors::NetDev) -> u64;
        let fields: [(&str, &str, Field); 8] = [
            ("receive_bytes", "bytes received", |d| d.rx_bytes),
            ("receive_packets", "packets received", |d| d.rx_packets),
            ("receive_errs", "receive errors", |d| d.rx_errs),
            ("receive_drop", "received packets dropped", |d| d.rx_drop),
            ("transmit_bytes", "bytes sent", |d| d.tx_bytes),
            ("transmit_packets", "packets sent", |d| d.tx_packets),
            ("transmit_errs", "transmit errors", |d| d.tx_errs),
            ("transmit_drop", "sent packets dropped", |d| d.tx_drop),
        ];
        for (field, what, get) in fields {
            let name = format!("node_network_{field}_total");
            family(
                out,
                &name,
                "counter",
                &format!("Network device statistic {field}: {what}."),
            );
            for d in net {
                line(out, &name, &[("device", &d.device)], get(d) as f64);
            }
        }
    }
    if let Some(p) = &s.pressure {
        for (name, help, v) in [
            (
                "node_pressure_cpu_waiting_seconds_total",
                "Total time in seconds that processes have waited for CPU time.",
                p.cpu_some,
            ),
            (
                "node_pressure_memory_waiting_seconds_total",
                "Total time in seconds that processes have waited for memory.",
                p.memory_some,
            ),
            (
                "node_pressure_memory_stalled_seconds_total",
                "Total time in seconds no process could make progress due to memory congestion.",
                p.memory_full,
            ),
            (
                "node_pressure_io_waiting_seconds_total",
                "Total time in seconds that processes have waited due to IO congestion.",
                p.io_some,
            ),
            (
                "node_pressure_io_stalled_seconds_total",
                "Total time in seconds no process could make progress due to IO congestion.",
                p.io_full,
            ),
        ] {
            single(out, name, "counter", help, v);
        }
    }
}

fn process(out: &mut String) {
    let p = match collectors::own_process() {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the daemon's own process metrics");
            return;
        }
    };
    single(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    single(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes as f64,
    );
    single(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes as f64,
    );
    single(
        out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds as f64,
    );
    if let Some(max) = p.max_fds {
        single(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
    single(
        out,
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        p.threads as f64,
    );
    single(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time,
    );
}

pub fn render(m: &Metrics) -> String {
    let mut out = String::with_capacity(32 * 1024);
    if let Some(s) = m.latest() {
        host(&mut out, &s);
    }
    process(&mut out);
    let mut buf = Vec::with_capacity(16 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode(&m.inner.registry.gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode the metrics registry");
    }
    out.push_str(&String::from_utf8_lossy(&buf));
    out
}
