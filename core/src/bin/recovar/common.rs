//! Small pieces shared by the subcommands.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use recovar_core::backend::{select, Device, Selected};

/// Log to stderr and, when given, to a file (created with its folder). On stderr `-v`
/// raises the level and `RUST_LOG` overrides; the file always gets at least `info`, so
/// run.log is a complete record whatever the terminal shows.
pub fn init_logging(verbose: u8, file: Option<&Path>) -> Result<()> {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_filter(filter);
    let file_level = match verbose {
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let file_layer = match file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create output folder {}", dir.display()))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            Some(
                fmt::layer()
                    .with_writer(std::sync::Mutex::new(f))
                    .with_ansi(false)
                    .with_target(false)
                    .with_filter(file_level),
            )
        }
        None => None,
    };
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init();
    Ok(())
}

/// `--device`, shared by every command that runs the heavy operations (projections,
/// backprojections, FFTs) on a backend.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct DeviceArgs {
    /// Compute device: auto, cpu, cuda (= cuda:0) or cuda:N. auto uses a CUDA GPU when a
    /// driver, NVRTC, cuFFT and a device are present, else the CPU; results agree to rounding
    #[arg(
        long,
        value_name = "auto|cpu|cuda[:N]",
        default_value = "auto",
        value_parser = clap::value_parser!(Device)
    )]
    pub device: Device,
}

impl DeviceArgs {
    /// The backend on the chosen device. Says which (and, for auto, why) on stderr and in
    /// run.log; an explicit `cuda` that cannot be used is an error naming the device.
    pub fn select(&self) -> Result<Selected> {
        let s = self.select_quietly()?;
        tracing::info!("{}", s.note);
        Ok(s)
    }

    /// [`DeviceArgs::select`] without the log line (for a caller that prints the note
    /// itself).
    pub fn select_quietly(&self) -> Result<Selected> {
        select(self.device).map_err(|e| anyhow!("{e}; --device cpu or auto runs on the CPU"))
    }
}

/// Create the output folder `outdir` and record the command line in `outdir/command.txt`.
pub fn start_output_dir(outdir: &Path) -> Result<()> {
    std::fs::create_dir_all(outdir)
        .with_context(|| format!("cannot create {}", outdir.display()))?;
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    recovar_core::io::atomic::write_bytes(
        outdir.join("command.txt"),
        format!("{command_line}\n").as_bytes(),
    )?;
    Ok(())
}

/// Check an output path ends with one of `exts` and that its folder exists (creating it
/// as cryoDRGN does).
pub fn prepare_output(path: &Path, exts: &[&str]) -> Result<PathBuf> {
    require_ext(path, exts, "output")?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create output folder {}", parent.display()))?;
    }
    if path.exists() {
        tracing::warn!("{} exists and will be overwritten", path.display());
    }
    Ok(path.to_path_buf())
}

/// Fail unless `path` ends with one of `exts`; `what` names the file in the message.
pub fn require_ext(path: &Path, exts: &[&str], what: &str) -> Result<()> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if !exts.iter().any(|e| *e == ext) {
        bail!(
            "{}: {what} must be a {} file",
            path.display(),
            exts.iter()
                .map(|e| format!(".{e}"))
                .collect::<Vec<_>>()
                .join(" or ")
        );
    }
    Ok(())
}

/// Print the first CTF row the way cryoDRGN's `print_ctf_params` does.
pub fn log_ctf_row(row: &[f64; 9]) {
    use recovar_core::dataset::CTF_COLUMNS;
    tracing::info!("CTF parameters for first particle:");
    for (name, v) in CTF_COLUMNS.iter().zip(row) {
        tracing::info!("  {name:<20} {v}");
    }
}

/// An indicatif progress bar behind the library's progress callback.
pub struct ProgressBar {
    bar: indicatif::ProgressBar,
}

impl ProgressBar {
    /// A bar labelled `label`; hidden when stderr is not a terminal.
    pub fn new(label: &str) -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        ProgressBar { bar }
    }

    /// Clear the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl recovar_core::progress::Progress for ProgressBar {
    fn update(&self, stage: &str, done: u64, total: u64) -> bool {
        if done == 0 {
            self.bar.set_prefix(stage.to_string());
            self.bar.reset();
        }
        self.bar.set_length(total);
        self.bar.set_position(done);
        true
    }
}
