//! Plans chosen by measurement: where the device measures plans (`IJEPA_MEASURE_PLANS=1`),
//! matmul and attention time their candidate plans at the first call of each bucket of
//! sizes and keep the fastest; with a plan file (`IJEPA_PLANS=FILE`) those choices are
//! kept across runs: read from the file when the device is made, written back as new
//! ones are measured, and followed without measuring again.
//!
//! Explained in the tour: docs/tour/04-matmul.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Device, DeviceInfo};
use crate::error::{Error, Result};

/// Environment variable that, set to 1, has matmul and attention time their candidate
/// plans on the device at the first call of each size and keep the fastest
/// (`Device::set_measure_plans`).
pub const MEASURE_PLANS_ENV: &str = "IJEPA_MEASURE_PLANS";
/// Environment variable naming a plan file (`Device::use_plan_file`): the measured
/// choices are read from it and what is newly measured is written to it.
pub const PLANS_ENV: &str = "IJEPA_PLANS";
/// Timed batches of runs of each candidate plan, after one run that warms its
/// pipelines; the best batch's time per run counts.
pub const MEASURED_RUNS: usize = 3;
/// The least time a timed batch should take: a batch of a small kernel's runs, waited
/// for once, times the kernels rather than the submit and the wait around each.
const MIN_BATCH_SECONDS: f64 = 1e-3;
/// The most runs in a batch.
const MAX_BATCH_RUNS: usize = 32;

/// Buckets a plan file lacks that a run names in a warning; it counts the rest.
const MISSING_NAMED: usize = 3;

/// One measured choice: each candidate plan, in words, with its best time in seconds,
/// the index of the fastest, the index of the plan the op's rule gives at the measured
/// sizes (none where the rule's plan is not a candidate), and how many calls of the
/// bucket this process has made so far, the measured one included.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub candidates: Vec<(String, f64)>,
    pub chosen: usize,
    pub rule: Option<usize>,
    pub calls: u64,
}

/// The calls of the measured buckets on their rules' plans against the fastest
/// candidates, each bucket's time per call as measured times its calls: how far the
/// rules are from the measurements on this device, and where.
#[derive(Clone, Debug, PartialEq)]
pub struct RulesAgainstFastest {
    /// Buckets measured.
    pub buckets: usize,
    /// Those whose rule's plan was a candidate that ran: the rest are left out below.
    pub ruled: usize,
    /// Of the ruled buckets, those whose rule's plan measured fastest.
    pub rule_fastest: usize,
    /// Calls of the ruled buckets.
    pub calls: u64,
    /// Seconds those calls take on the rules' plans, and on the fastest.
    pub by_rule: f64,
    pub fastest: f64,
    /// The ruled buckets whose rule is not the fastest, most seconds lost first.
    pub losses: Vec<RuleLoss>,
}

/// One bucket whose rule's plan is slower than its fastest candidate: its key and
/// calls, both plans in words, and the seconds the rule's plan loses over the calls.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleLoss {
    pub key: String,
    pub calls: u64,
    pub rule: String,
    pub fastest: String,
    pub seconds: f64,
}

impl RulesAgainstFastest {
    pub fn of(measured: &[(String, Measured)]) -> RulesAgainstFastest {
        let mut report = RulesAgainstFastest {
            buckets: measured.len(),
            ruled: 0,
            rule_fastest: 0,
            calls: 0,
            by_rule: 0.0,
            fastest: 0.0,
            losses: Vec::new(),
        };
        for (key, m) in measured {
            let Some((rule, rule_secs)) = m
                .rule
                .map(|i| &m.candidates[i])
                .filter(|(_, secs)| secs.is_finite())
            else {
                continue;
            };
            let (fastest, fastest_secs) = &m.candidates[m.chosen];
            let calls = m.calls as f64;
            report.ruled += 1;
            report.calls += m.calls;
            report.by_rule += rule_secs * calls;
            report.fastest += fastest_secs * calls;
            if m.rule == Some(m.chosen) {
                report.rule_fastest += 1;
            } else {
                report.losses.push(RuleLoss {
                    key: key.clone(),
                    calls: m.calls,
                    rule: rule.clone(),
                    fastest: fastest.clone(),
                    seconds: (rule_secs - fastest_secs) * calls,
                });
            }
        }
        report
            .losses
            .sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        report
    }
}

/// A candidate plan as [`Device::measured_choice`] sees it.
pub(crate) trait Candidate {
    /// What tells it apart from the other candidates of its bucket of sizes in any run
    /// (its kernel or path, without the sizes): what a plan file records.
    fn method(&self) -> String;
    /// The plan in words, sizes included.
    fn description(&self) -> String;
}

/// What the device measured, and the plan file it keeps them in.
pub(super) struct MeasuredPlans {
    measuring: AtomicBool,
    measured: Mutex<BTreeMap<String, Measured>>,
    file: Mutex<Option<PlanFile>>,
    /// Whether `file` holds one: read on every product, spared the lock.
    follows_file: AtomicBool,
}

impl MeasuredPlans {
    pub(super) fn from_env() -> MeasuredPlans {
        MeasuredPlans {
            measuring: AtomicBool::new(std::env::var(MEASURE_PLANS_ENV).is_ok_and(|v| v == "1")),
            measured: Mutex::new(BTreeMap::new()),
            file: Mutex::new(None),
            follows_file: AtomicBool::new(false),
        }
    }
}

/// The plan files this version reads and writes.
const PLAN_FILE_FORMAT: u32 = 1;

/// A plan file as read and written: its format, the adapter the choices were measured
/// on, and each choice by key.
#[derive(Serialize, Deserialize)]
struct PlanFileContents {
    format: u32,
    adapter: String,
    backend: String,
    driver: String,
    plans: BTreeMap<String, RecordedChoice>,
}

#[derive(Clone, Serialize, Deserialize)]
struct RecordedChoice {
    /// The fastest candidate's method (`Candidate::method`).
    chosen: String,
    /// The method of the plan the op's rule gave at the measured sizes, where it was a
    /// candidate (files written before it was recorded lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// Every candidate as measured, in words, with its best time in milliseconds (none:
    /// it could not run).
    candidates: Vec<(String, Option<f64>)>,
}

struct PlanFile {
    path: PathBuf,
    contents: PlanFileContents,
    /// Keys whose recorded choice is no longer a candidate, and keys the file lacks
    /// while the device does not measure: each warned about once, then on the rule.
    stale: BTreeSet<String>,
    missing: BTreeSet<String>,
    /// Whether a failed write has been warned about.
    write_failed: bool,
}

/// How a device uses its plan file (`Device::plan_file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanFileUse {
    pub path: PathBuf,
    /// Choices the file holds.
    pub choices: usize,
    /// Buckets whose recorded choice named no candidate of the call.
    pub stale: usize,
    /// Buckets the file lacked, on a device that did not measure them.
    pub missing: usize,
}

/// One line for a run's end: the file, its choices, and the buckets that fell back.
impl std::fmt::Display for PlanFileUse {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "plan file {} ({PLANS_ENV}): {} choices; {} no longer a candidate, {} lacked and not measured (on the rule)",
            self.path.display(),
            self.choices,
            self.stale,
            self.missing
        )
    }
}

/// The contents of the plan file at `path`, checked against this device's adapter.
fn read_plan_file(path: &Path, info: &DeviceInfo, driver: &str) -> Result<PlanFileContents> {
    let named = |detail: String| {
        Error::Device(format!(
            "plan file {} ({PLANS_ENV}): {detail}",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
    let contents: PlanFileContents = serde_json::from_str(&text).map_err(|e| {
        named(format!(
            "not a plan file as this version of ijepa writes them ({e}); remove it to measure again"
        ))
    })?;
    if contents.format != PLAN_FILE_FORMAT {
        return Err(named(format!(
            "format {} where this version of ijepa reads format {PLAN_FILE_FORMAT}; remove it to \
             measure again",
            contents.format
        )));
    }
    if contents.adapter != info.name || contents.backend != info.backend {
        return Err(named(format!(
            "measured on {} ({}), not on this device's {} ({}): measure the plans here \
             ({MEASURE_PLANS_ENV}=1) into another file",
            contents.adapter, contents.backend, info.name, info.backend
        )));
    }
    if contents.driver != driver {
        eprintln!(
            "warning: plan file {} was measured under driver {}, this is {driver}: its \
             choices are followed, but may no longer be the fastest",
            path.display(),
            contents.driver
        );
    }
    Ok(contents)
}

/// The driver as a plan file records it.
fn driver_of(info: &DeviceInfo) -> String {
    format!("{} {}", info.driver, info.driver_info)
}

/// Tells temporary files of one process apart.
static WRITES: AtomicU64 = AtomicU64::new(0);

impl PlanFile {
    /// Write the file with `key`'s new choice. Choices other processes wrote meanwhile
    /// (MPI ranks sharing the file) are read back first and kept. Written to a
    /// temporary file of this process's, then renamed over the old one, so that a run
    /// stopped midway leaves the file whole. A failure is a warning, once: the choice
    /// stays in use for this run.
    fn record(&mut self, key: String, choice: RecordedChoice, info: &DeviceInfo) {
        if self.path.exists() {
            if let Ok(on_disk) = read_plan_file(&self.path, info, &self.contents.driver) {
                for (k, v) in on_disk.plans {
                    self.contents.plans.entry(k).or_insert(v);
                }
            }
        }
        self.contents.plans.insert(key, choice);
        let temporary = PathBuf::from(format!(
            "{}.{}-{}.tmp",
            self.path.display(),
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = serde_json::to_string_pretty(&self.contents)
            .map_err(|e| e.to_string())
            .and_then(|text| std::fs::write(&temporary, text + "\n").map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&temporary, &self.path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            if !std::mem::replace(&mut self.write_failed, true) {
                eprintln!(
                    "warning: plan file {} ({PLANS_ENV}): cannot write it ({e}); the choices \
                     measured stay in use for this run only",
                    self.path.display()
                );
            }
        }
    }
}

impl Device {
    /// Whether ops with several plans measure them (`MEASURE_PLANS_ENV`).
    pub fn measures_plans(&self) -> bool {
        self.plans.measuring.load(Ordering::Relaxed)
    }

    /// Turn the measuring of plans on or off; what was measured stays.
    pub fn set_measure_plans(&self, on: bool) {
        self.plans.measuring.store(on, Ordering::Relaxed);
    }

    /// Whether ops with several plans look for a measured choice before their rule:
    /// the device measures plans, or follows a plan file.
    pub(crate) fn chooses_measured_plans(&self) -> bool {
        self.measures_plans() || self.plans.follows_file.load(Ordering::Relaxed)
    }

    /// Keep measured choices in `path` (`PLANS_ENV`): the choices it holds, if it exists,
    /// are followed from now on, before any rule and without measuring again, and every
    /// choice measured from now on is written to it. The file must have been measured on
    /// an adapter of this name and backend; one measured under another driver version
    /// is followed with a warning (the choices compute the same; their speed may differ).
    pub fn use_plan_file(&self, path: &Path) -> Result<()> {
        let driver = driver_of(&self.info);
        let contents = if path.exists() {
            read_plan_file(path, &self.info, &driver)?
        } else {
            let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
            if folder.is_some_and(|f| !f.is_dir()) {
                return Err(Error::Device(format!(
                    "plan file {} ({PLANS_ENV}): its folder does not exist",
                    path.display()
                )));
            }
            PlanFileContents {
                format: PLAN_FILE_FORMAT,
                adapter: self.info.name.clone(),
                backend: self.info.backend.clone(),
                driver,
                plans: BTreeMap::new(),
            }
        };
        *self.plans.file.lock().unwrap() = Some(PlanFile {
            path: path.to_path_buf(),
            contents,
            stale: BTreeSet::new(),
            missing: BTreeSet::new(),
            write_failed: false,
        });
        self.plans.follows_file.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The plan file in use, if any, and what this device made of it so far.
    pub fn plan_file(&self) -> Option<PlanFileUse> {
        let file = self.plans.file.lock().unwrap();
        file.as_ref().map(|f| PlanFileUse {
            path: f.path.clone(),
            choices: f.contents.plans.len(),
            stale: f.stale.len(),
            missing: f.missing.len(),
        })
    }

    /// Which of `candidates` runs the call measured under `key` (`run(i)` running
    /// candidate i, `rule` the plan the op's rule gives): the choice measured
    /// before in this process or recorded in the plan file; else, where the device
    /// measures plans, the fastest, measured now ([`Device::fastest`]) and recorded;
    /// else none (the caller's rule). A product's key names its candidates, so one whose
    /// candidates changed is a bucket the file lacks; an attention key does not, so its
    /// recorded path may be stale.
    pub(crate) fn measured_choice<C: Candidate + PartialEq>(
        &self,
        key: String,
        candidates: &[C],
        rule: &C,
        run: impl FnMut(usize) -> Result<()>,
    ) -> Result<Option<usize>> {
        if let Some(measured) = self.plans.measured.lock().unwrap().get_mut(&key) {
            measured.calls += 1;
            return Ok(Some(measured.chosen));
        }
        let methods: Vec<String> = candidates.iter().map(|c| c.method()).collect();
        debug_assert!(
            methods.iter().collect::<BTreeSet<_>>().len() == methods.len(),
            "{key}: two candidates share a method: {methods:?}"
        );
        let measuring = self.measures_plans();
        if let Some(file) = self.plans.file.lock().unwrap().as_mut() {
            match file.contents.plans.get(&key) {
                Some(recorded) => {
                    if let Some(i) = methods.iter().position(|m| *m == recorded.chosen) {
                        return Ok(Some(i));
                    }
                    if file.stale.insert(key.clone()) {
                        eprintln!(
                            "warning: plan file {}: `{}` is no longer a candidate for {key}; {}",
                            file.path.display(),
                            recorded.chosen,
                            if measuring {
                                "measuring again"
                            } else {
                                "following the rule"
                            }
                        );
                    }
                }
                None if !measuring && file.missing.insert(key.clone()) => {
                    // A file measured over a few steps lacks many buckets of a longer
                    // run's masks: the first are named, the rest counted (`plan_file`).
                    match file.missing.len() {
                        n if n <= MISSING_NAMED => eprintln!(
                            "warning: plan file {} has no choice for {key}; following the rule",
                            file.path.display()
                        ),
                        n if n == MISSING_NAMED + 1 => eprintln!(
                            "warning: plan file {} lacks more buckets, which follow the rule too; the run's end counts them",
                            file.path.display()
                        ),
                        _ => {}
                    }
                }
                None => {}
            }
        }
        if !measuring {
            return Ok(None);
        }
        let descriptions: Vec<String> = candidates.iter().map(|c| c.description()).collect();
        let rule = candidates.iter().position(|c| c == rule);
        let measured = Measured {
            rule,
            ..self.fastest(&key, &descriptions, run)?
        };
        let chosen = measured.chosen;
        let recorded = RecordedChoice {
            chosen: methods[chosen].clone(),
            rule: rule.map(|i| methods[i].clone()),
            candidates: measured
                .candidates
                .iter()
                .map(|(name, secs)| (name.clone(), secs.is_finite().then_some(secs * 1e3)))
                .collect(),
        };
        self.plans
            .measured
            .lock()
            .unwrap()
            .insert(key.clone(), measured);
        if let Some(file) = self.plans.file.lock().unwrap().as_mut() {
            file.record(key, recorded, &self.info);
        }
        Ok(Some(chosen))
    }

    /// The fastest of the candidates `names` lists, `run(i)` running candidate i: each
    /// is run once to warm its pipelines and once more, waited for, to size a batch of
    /// runs that takes at least `MIN_BATCH_SECONDS`; then `MEASURED_RUNS` batches are
    /// timed, each waited for once, the best time per run counting (on a GPU a small
    /// kernel takes less than a submit and a wait). A candidate whose first run fails (a grid
    /// past the adapter's limit, a loop past a CPU adapter's budget, a buffer that does
    /// not fit) is left out, its time infinite; the first failure is returned where
    /// every candidate fails.
    fn fastest(
        &self,
        key: &str,
        names: &[String],
        mut run: impl FnMut(usize) -> Result<()>,
    ) -> Result<Measured> {
        let mut candidates = Vec::with_capacity(names.len());
        let mut first_failure = None;
        for (i, name) in names.iter().enumerate() {
            if let Err(e) = run(i) {
                candidates.push((format!("{name} (cannot run: {e})"), f64::INFINITY));
                first_failure.get_or_insert(e);
                continue;
            }
            self.synchronize();
            let timed = |runs: usize, run: &mut dyn FnMut(usize) -> Result<()>| {
                let start = std::time::Instant::now();
                for _ in 0..runs {
                    run(i)?;
                }
                self.synchronize();
                Ok::<f64, Error>(start.elapsed().as_secs_f64() / runs as f64)
            };
            let once = timed(1, &mut run)?;
            let runs = ((MIN_BATCH_SECONDS / once).ceil() as usize).clamp(1, MAX_BATCH_RUNS);
            let mut best = f64::INFINITY;
            for _ in 0..MEASURED_RUNS {
                best = best.min(timed(runs, &mut run)?);
            }
            candidates.push((name.clone(), best));
        }
        let chosen = (0..candidates.len())
            .filter(|&i| candidates[i].1.is_finite())
            .min_by(|&i, &j| candidates[i].1.total_cmp(&candidates[j].1));
        match chosen {
            Some(chosen) => Ok(Measured {
                candidates,
                chosen,
                rule: None,
                calls: 1,
            }),
            None => Err(first_failure
                .unwrap_or_else(|| Error::Device(format!("{key}: no candidate to measure")))),
        }
    }

    /// Every choice measured in this process so far, by key (not those followed from a
    /// plan file).
    pub fn measured_plans(&self) -> Vec<(String, Measured)> {
        let measured = self.plans.measured.lock().unwrap();
        measured
            .iter()
            .map(|(k, m)| (k.clone(), m.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Measured, RulesAgainstFastest};

    fn bucket(times_ms: &[f64], chosen: usize, rule: Option<usize>, calls: u64) -> Measured {
        Measured {
            candidates: times_ms
                .iter()
                .enumerate()
                .map(|(i, ms)| (format!("plan {i}"), ms * 1e-3))
                .collect(),
            chosen,
            rule,
            calls,
        }
    }

    #[test]
    fn rules_are_weighed_against_the_fastest_by_their_calls() {
        let measured = vec![
            // The rule is the fastest: no loss.
            ("a".to_string(), bucket(&[1.0, 3.0], 0, Some(0), 10)),
            // The rule loses 2 ms a call over 5 calls.
            ("b".to_string(), bucket(&[4.0, 2.0], 1, Some(0), 5)),
            // The rule loses 1 ms a call over 30 calls: more in all, listed first.
            ("c".to_string(), bucket(&[3.0, 2.0, 9.0], 1, Some(0), 30)),
            // Left out: no rule among the candidates, and a rule that could not run.
            ("d".to_string(), bucket(&[1.0], 0, None, 100)),
            (
                "e".to_string(),
                bucket(&[f64::INFINITY, 1.0], 1, Some(0), 100),
            ),
        ];
        let report = RulesAgainstFastest::of(&measured);
        assert_eq!(
            (report.buckets, report.ruled, report.rule_fastest),
            (5, 3, 1)
        );
        assert_eq!(report.calls, 45);
        let close = |got: f64, want_ms: f64| (got * 1e3 - want_ms).abs() < 1e-9;
        assert!(close(report.by_rule, 10.0 + 20.0 + 90.0), "{report:?}");
        assert!(close(report.fastest, 10.0 + 10.0 + 60.0), "{report:?}");
        let order: Vec<&str> = report.losses.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(order, ["c", "b"]);
        assert!(close(report.losses[0].seconds, 30.0) && close(report.losses[1].seconds, 10.0));
        assert_eq!(
            (
                report.losses[1].rule.as_str(),
                report.losses[1].fastest.as_str()
            ),
            ("plan 0", "plan 1")
        );
    }
}
