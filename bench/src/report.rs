//! Collecting the rounds and printing the table: per row the medians of
//! taskd and of the baseline, the median of the per-round ratios with their
//! range, the target and whether it was met.

use std::fmt::Write;

use crate::cases::{Case, CaseResult, Ctx, Row, Target};

pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".to_string(), |k| k.trim().to_string());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model,
            kernel,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "machine: {} CPUs, {}, Linux {}",
            self.cpus, self.model, self.kernel
        )
    }
}

#[derive(Default)]
struct CaseTally {
    ok_rounds: usize,
    failures: Vec<String>,
    invalid: u64,
    missing: u64,
    first_error: Option<String>,
    skipped: Option<String>,
}

pub struct Results {
    /// Per row, the (taskd, baseline) pair of each round.
    samples: Vec<Vec<(f64, f64)>>,
    cases: Vec<(Case, CaseTally)>,
}

/// `1234567.8` as `1,234,568`.
pub(crate) fn grouped(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

fn value(v: f64, unit: &str) -> String {
    match unit {
        "req/s" | "MB/s" | "B" | "Msamples/s" => grouped(v),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.1}"),
    }
}

impl Results {
    pub fn new(cases: &[Case]) -> Results {
        Results {
            samples: vec![Vec::new(); Row::ALL.len()],
            cases: cases.iter().map(|&c| (c, CaseTally::default())).collect(),
        }
    }

    pub fn add(&mut self, case: Case, r: CaseResult) {
        let Some((_, tally)) = self.cases.iter_mut().find(|(c, _)| *c == case) else {
            return;
        };
        match r {
            Ok(out) => {
                tally.ok_rounds += 1;
                if tally.skipped.is_none() {
                    tally.skipped = out.skipped;
                }
                tally.invalid += out.invalid;
                tally.missing += out.missing;
                if tally.first_error.is_none() {
                    tally.first_error = out.first_error;
                }
                for (row, t, b) in out.rows {
                    self.samples[row.index()].push((t, b));
                }
            }
            Err(e) => tally.failures.push(e),
        }
    }

    /// No case failed and every reply was valid.
    pub fn clean(&self) -> bool {
        self.cases
            .iter()
            .all(|(_, t)| t.failures.is_empty() && t.invalid == 0)
    }

    pub fn table(&self, machine: &Machine, ctx: &Ctx, rounds: usize) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "\n{}", machine.describe());
        let _ = writeln!(
            o,
            "{} round(s), {}, medians over rounds; ratio = taskd / baseline per round, median (min-max)\n",
            rounds,
            if ctx.pin {
                "servers pinned to one CPU, load generator to another"
            } else {
                "not pinned"
            }
        );
        let _ = writeln!(
            o,
            "| case | metric | unit | taskd | baseline | ratio (min-max) | target | verdict |"
        );
        let _ = writeln!(o, "|---|---|---|---:|---:|---:|---|---|");
        for row in Row::ALL {
            let s = &self.samples[row.index()];
            if s.is_empty() {
                continue;
            }
            let (label, unit) = row.label();
            let mut t: Vec<f64> = s.iter().map(|p| p.0).collect();
            let mut b: Vec<f64> = s.iter().map(|p| p.1).collect();
            let mut ratios: Vec<f64> = s.iter().map(|p| p.0 / p.1).collect();
            let (tm, bm, rm) = (
                crate::median(&mut t),
                crate::median(&mut b),
                crate::median(&mut ratios),
            );
            let (lo, hi) = (ratios[0], ratios[ratios.len() - 1]);
            // Whether the median meets the target, and whether the rounds
            // fell on both sides of it.
            let (tlo, thi) = (t[0], t[t.len() - 1]);
            let (target, met, straddles) = match row.target() {
                Target::None => (String::new(), None, false),
                Target::RatioMin(x) => (format!(">= {x}x"), Some(rm >= x), lo < x && hi >= x),
                Target::RatioMax(x) => (format!("<= {x}x"), Some(rm <= x), lo <= x && hi > x),
                Target::TaskdMax(x) => (format!("taskd <= {x} {unit}"), Some(tm <= x), tlo <= x && thi > x),
                Target::TaskdMinRatioMin(x, r) => (
                    format!("taskd >= {x} {unit}, >= {r}x"),
                    Some(tm >= x && rm >= r),
                    (tlo < x && thi >= x) || (lo < r && hi >= r),
                ),
            };
            let verdict = match (met, straddles) {
                (None, _) => "",
                (Some(true), false) => "met",
                (Some(true), true) => "met (not in every round)",
                (Some(false), false) => "MISSED",
                (Some(false), true) => "MISSED (met in some rounds)",
            };
            let _ = writeln!(
                o,
                "| {} | {label} | {unit} | {} | {} | {rm:.2}x ({lo:.2}-{hi:.2}) | {target} | {verdict} |",
                row.case().name(),
                value(tm, unit),
                value(bm, unit),
            );
        }
        let mut notes = String::new();
        for (case, t) in &self.cases {
            if !t.failures.is_empty() {
                let _ = writeln!(
                    notes,
                    "{}: failed in {} round(s): {}",
                    case.name(),
                    t.failures.len(),
                    t.failures[0]
                );
            }
            if t.invalid > 0 || t.missing > 0 {
                let _ = writeln!(
                    notes,
                    "{}: {} invalid and {} missing replies over {} round(s){}",
                    case.name(),
                    t.invalid,
                    t.missing,
                    t.ok_rounds,
                    t.first_error
                        .as_ref()
                        .map(|e| format!("; first: {e}"))
                        .unwrap_or_default()
                );
            }
        }
        for (case, t) in &self.cases {
            if let Some(why) = &t.skipped {
                let _ = writeln!(o, "\n{}: skipped: {why}", case.name());
            }
        }
        if notes.is_empty() {
            let _ = writeln!(o, "\nerrors: none (every reply validated)");
        } else {
            let _ = write!(o, "\nerrors:\n{notes}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_cases_are_said_so_under_the_table() {
        let ctx = Ctx {
            taskd_bin: "taskd".into(),
            pin: false,
            all_cpus: vec![0],
            server_cpu: 0,
            warmup: std::time::Duration::ZERO,
            duration: std::time::Duration::ZERO,
            slices: 1,
            quick: true,
            sum_line: None,
        };
        let mut r = Results::new(&[Case::Http]);
        r.add(Case::Http, Ok(crate::cases::CaseOut::skipped("nginx not found")));
        let machine = Machine::detect();
        let t = r.table(&machine, &ctx, 1);
        assert!(t.contains("\nhttp: skipped: nginx not found\n"), "{t}");
        assert!(!t.contains("| http |"));
        assert!(r.clean());
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(0.0), "0");
        assert_eq!(grouped(999.4), "999");
        assert_eq!(grouped(1000.0), "1,000");
        assert_eq!(grouped(1234567.8), "1,234,568");
        assert_eq!(grouped(-4321.0), "-4,321");
    }
}
