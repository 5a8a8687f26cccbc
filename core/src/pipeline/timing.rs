//! Wall time and peak memory per pipeline stage, written to `timings.json`.
//!
//! Peak memory per stage uses Linux's `/proc/self/status` `VmHWM` (the high-water mark of
//! the resident set), reset between stages by writing `5` to `/proc/self/clear_refs`. Where
//! that is not available the peak is the process-wide maximum so far (and says so).

use std::time::Instant;

use crate::error::Result;
use crate::io::atomic::write_bytes;

/// One finished stage.
#[derive(Clone, Debug)]
pub struct StageTiming {
    pub name: String,
    pub wall_seconds: f64,
    /// Peak resident memory during the stage, MiB (None when the OS does not say).
    pub peak_rss_mib: Option<f64>,
    /// Images processed (0 for stages that read none).
    pub images: u64,
}

/// Collects stage timings.
#[derive(Default)]
pub struct Timings {
    stages: Vec<StageTiming>,
    current: Option<(String, Instant, u64)>,
    per_stage_peaks: bool,
}

fn read_hwm_kib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok()
}

fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

impl Timings {
    /// Start timing.
    pub fn new() -> Self {
        Timings::default()
    }

    /// Begin a stage (ending the previous one).
    pub fn start(&mut self, name: &str, images: u64) {
        self.finish();
        self.per_stage_peaks = reset_hwm();
        tracing::info!("stage {name} started");
        self.current = Some((name.to_string(), Instant::now(), images));
    }

    /// End the current stage, if any.
    pub fn finish(&mut self) {
        if let Some((name, t0, images)) = self.current.take() {
            let wall = t0.elapsed().as_secs_f64();
            let peak = read_hwm_kib().map(|k| k / 1024.0);
            tracing::info!(
                "stage {name} done in {wall:.2} s{}",
                peak.map(|p| format!(", peak memory {p:.0} MiB"))
                    .unwrap_or_default()
            );
            self.stages.push(StageTiming {
                name,
                wall_seconds: wall,
                peak_rss_mib: peak,
                images,
            });
        }
    }

    /// The finished stages.
    pub fn stages(&self) -> &[StageTiming] {
        &self.stages
    }

    /// Write `timings.json` (atomically).
    pub fn write_json(&self, path: &std::path::Path) -> Result<()> {
        let total: f64 = self.stages.iter().map(|s| s.wall_seconds).sum();
        let mut out = String::from("{\n  \"stages\": [\n");
        for (i, s) in self.stages.iter().enumerate() {
            let ips = if s.images > 0 && s.wall_seconds > 0.0 {
                format!("{:.1}", s.images as f64 / s.wall_seconds)
            } else {
                "null".into()
            };
            out.push_str(&format!(
                "    {{\"name\": {:?}, \"wall_seconds\": {:.3}, \"peak_rss_mib\": {}, \"images\": {}, \"images_per_second\": {}}}{}\n",
                s.name,
                s.wall_seconds,
                s.peak_rss_mib.map(|p| format!("{p:.1}")).unwrap_or_else(|| "null".into()),
                s.images,
                ips,
                if i + 1 < self.stages.len() { "," } else { "" }
            ));
        }
        out.push_str(&format!(
            "  ],\n  \"total_wall_seconds\": {total:.3},\n  \"peak_is_per_stage\": {}\n}}\n",
            self.per_stage_peaks
        ));
        write_bytes(path, out.as_bytes())
    }
}
