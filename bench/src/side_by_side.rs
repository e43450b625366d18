//! Closed-loop throughput of several variants measured side by side.
//!
//! On a shared 2-core VM the machine's speed drifts by tens of percent
//! within a minute, so variants measured one after another for long phases
//! compare the VM's moments as much as the variants. Here every variant runs
//! in short `wrk` slices, interleaved round by round (each round starting one
//! variant later, so no variant always follows the same one), and a ratio is
//! taken per round between slices seconds apart, then summarised by its
//! median. Beside throughput, each slice records the CPU time the variant's
//! processes (Envoy, the service behind it) spent per request: a figure the
//! VM's drift moves far less than requests per second.

use crate::auth::Headers;

/// One thing measured: a URL with the headers its requests carry.
pub(crate) struct Variant<'a> {
    pub name: &'a str,
    pub url: String,
    pub headers: &'a Headers,
    /// The processes serving it, by role (`envoy`, `service`), whose CPU
    /// time per request is reported.
    pub processes: Vec<(&'a str, Option<u32>)>,
}

/// CPU time (user + system, all threads) `pid` has used, in microseconds.
fn cpu_micros(pid: u32) -> Option<u64> {
    /// Linux reports these in USER_HZ, 100 per second on every architecture
    /// Envoy ships for.
    const MICROS_PER_TICK: u64 = 10_000;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) * MICROS_PER_TICK)
}

/// One `wrk` run.
pub(crate) struct Wrk {
    pub rps: f64,
    pub p99: String,
}

/// Closed loop: one wrk thread, `connections` connections.
pub(crate) async fn wrk(
    url: &str,
    headers: &[(String, String)],
    seconds: u64,
    connections: u32,
) -> Wrk {
    let mut command = tokio::process::Command::new("wrk");
    command.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    for (k, v) in headers {
        command.args(["-H", &format!("{k}: {v}")]);
    }
    let output = command
        .arg(url)
        .output()
        .await
        .expect("wrk (apt install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_default()
    };
    let non_2xx = field("Non-2xx or 3xx responses:");
    assert!(
        non_2xx.is_empty(),
        "{url}: {non_2xx} non-2xx responses\n{text}"
    );
    Wrk {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p99: field("99%"),
    }
}

/// Requests per second of every variant in every round: `result[v][r]`.
pub(crate) struct Rounds {
    names: Vec<String>,
    rps: Vec<Vec<f64>>,
    p99: Vec<Vec<String>>,
    /// Per variant, per process: (role, CPU µs per request in each round).
    cpu: Vec<Vec<(String, Vec<f64>)>>,
}

/// Runs every variant for `seconds` per round, `rounds` times, after a
/// one-second warm-up of each.
pub(crate) async fn interleaved(
    variants: &[Variant<'_>],
    rounds: usize,
    seconds: u64,
    connections: u32,
) -> Rounds {
    for v in variants {
        wrk(&v.url, v.headers, 1, connections).await;
    }
    let n = variants.len();
    let mut rps = vec![Vec::with_capacity(rounds); n];
    let mut p99 = vec![Vec::with_capacity(rounds); n];
    let mut cpu: Vec<Vec<(String, Vec<f64>)>> = variants
        .iter()
        .map(|v| {
            v.processes
                .iter()
                .map(|(role, _)| ((*role).to_owned(), Vec::with_capacity(rounds)))
                .collect()
        })
        .collect();
    for round in 0..rounds {
        for i in (0..n).map(|k| (round + k) % n) {
            let v = &variants[i];
            let before: Vec<Option<u64>> = v
                .processes
                .iter()
                .map(|(_, p)| p.and_then(cpu_micros))
                .collect();
            let run = wrk(&v.url, v.headers, seconds, connections).await;
            let requests = run.rps * seconds as f64;
            for (k, (_, pid)) in v.processes.iter().enumerate() {
                if let (Some(b), Some(a), true) =
                    (before[k], pid.and_then(cpu_micros), requests > 0.0)
                {
                    cpu[i][k].1.push(a.saturating_sub(b) as f64 / requests);
                }
            }
            rps[i].push(run.rps);
            p99[i].push(run.p99);
        }
    }
    Rounds {
        names: variants.iter().map(|v| v.name.to_owned()).collect(),
        rps,
        p99,
        cpu,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

impl Rounds {
    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no variant named {name}"))
    }

    /// One line per variant: median, range and each round's figure.
    pub fn print(&self) {
        for (i, name) in self.names.iter().enumerate() {
            let rps = &self.rps[i];
            let (low, high) = rps
                .iter()
                .fold((f64::MAX, 0.0_f64), |(l, h), &r| (l.min(r), h.max(r)));
            let each: Vec<String> = rps.iter().map(|r| format!("{r:.0}")).collect();
            let cpu: Vec<String> = self.cpu[i]
                .iter()
                .map(|(role, per_request)| format!("{role} {:.0} µs", median(per_request)))
                .collect();
            println!(
                "  {name:<46} median {:>6.0} req/s | CPU per request: {} (range {low:.0}–{high:.0} req/s; rounds {}; wrk p99 {})",
                median(rps),
                cpu.join(", "),
                each.join(" "),
                self.p99[i].join(" "),
            );
        }
    }

    /// `numerator` as a percentage of `denominator` in each round.
    fn shares(&self, numerator: &str, denominator: &str) -> Vec<f64> {
        let (n, d) = (
            &self.rps[self.index(numerator)],
            &self.rps[self.index(denominator)],
        );
        n.iter()
            .zip(d)
            .map(|(a, b)| if *b > 0.0 { a / b * 100.0 } else { 0.0 })
            .collect()
    }

    /// `numerator` as a share of `denominator`, round by round, and the
    /// median of those shares (nothing if either was not measured).
    pub fn print_ratio(&self, numerator: &str, denominator: &str) {
        if ![numerator, denominator]
            .iter()
            .all(|name| self.names.iter().any(|n| n == name))
        {
            return;
        }
        let shares = self.shares(numerator, denominator);
        let each: Vec<String> = shares.iter().map(|s| format!("{s:.0} %")).collect();
        println!(
            "  {numerator} / {denominator}: median {:.0} % (rounds: {})",
            median(&shares),
            each.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable() {
        let spent = cpu_micros(std::process::id()).expect("/proc/self/stat");
        let busy = std::time::Instant::now();
        while busy.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(0);
        }
        let later = cpu_micros(std::process::id()).expect("/proc/self/stat");
        assert!(later >= spent + 20_000, "{spent} then {later}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn shares_are_taken_round_by_round() {
        let rounds = Rounds {
            names: vec!["a".into(), "b".into()],
            rps: vec![vec![90.0, 50.0, 100.0], vec![100.0, 100.0, 100.0]],
            p99: vec![vec![String::new(); 3], vec![String::new(); 3]],
            cpu: vec![Vec::new(), Vec::new()],
        };
        assert_eq!(rounds.shares("a", "b"), vec![90.0, 50.0, 100.0]);
        assert_eq!(median(&rounds.shares("a", "b")), 90.0);
    }
}
