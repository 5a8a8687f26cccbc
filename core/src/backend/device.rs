//! Choosing the compute device: `auto`, `cpu` or `cuda[:N]` (the CLI's `--device`, the C
//! ABI's options), and the backend that runs on it.
//!
//! `auto` takes GPU 0 when a CUDA driver, the runtime compiler (NVRTC), cuFFT and a device
//! are all present and the kernels compile for it, else the CPU; [`Selected::note`] says
//! which and why, for run.log. An explicit `cuda` that cannot be honoured is an error, never
//! a silent fallback. The results do not depend on the choice beyond rounding (the GPU
//! kernels are tested against the CPU reference).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::{Backend, CpuBackend};
use crate::error::{Error, Result};

/// Where the heavy operations run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// A CUDA GPU when one is usable, else the CPU.
    #[default]
    Auto,
    /// The CPU (rayon).
    Cpu,
    /// CUDA device number `N` (`cuda` alone is `cuda:0`).
    Cuda(usize),
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => {
                let n = t
                    .strip_prefix("cuda:")
                    .or_else(|| t.strip_prefix("gpu:"))
                    .and_then(|n| n.parse::<usize>().ok());
                n.map(Device::Cuda).ok_or_else(|| {
                    Error::invalid(format!(
                        "device `{s}`: expected auto, cpu, cuda or cuda:N (N = 0, 1, …)"
                    ))
                })
            }
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// A backend on the chosen device, and one line saying what was chosen and why.
#[derive(Clone)]
pub struct Selected {
    /// The backend to pass to the pipeline.
    pub backend: Arc<dyn Backend>,
    /// E.g. "device: cuda:0 (NVIDIA H100, compute 9.0, 79.1 GiB)" or "device: cpu (auto: no
    /// CUDA driver found)".
    pub note: String,
}

impl fmt::Debug for Selected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selected")
            .field("backend", &self.backend.name())
            .field("note", &self.note)
            .finish()
    }
}

/// The backend for `device`. `Auto` never fails (it falls back to the CPU and says why);
/// `Cuda(n)` fails with [`Error::Device`] when that GPU cannot be used, naming the reason.
pub fn select(device: Device) -> Result<Selected> {
    let cpu = |why: &str| Selected {
        backend: Arc::new(CpuBackend::new()),
        note: format!(
            "device: cpu ({} threads){why}",
            rayon::current_num_threads()
        ),
    };
    match device {
        Device::Cpu => Ok(cpu("")),
        Device::Cuda(n) => {
            let b = open_cuda(n)?;
            Ok(Selected {
                note: format!("device: {}", b.1),
                backend: b.0,
            })
        }
        Device::Auto => match open_cuda(0) {
            Ok((backend, desc)) => Ok(Selected {
                backend,
                note: format!("device: {desc} (auto)"),
            }),
            Err(e) => Ok(cpu(&format!("; auto: no usable GPU, {e}"))),
        },
    }
}

/// Opening a GPU compiles the kernels and runs the self-check (about a second), so each
/// device is opened once per process and shared: every model, call and thread that selects
/// `cuda:N` gets the same backend (its calls are serialised on one stream). A failure is
/// not remembered: the next selection tries again.
#[cfg(feature = "cuda")]
fn open_cuda(n: usize) -> Result<(Arc<dyn Backend>, String)> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static OPEN: OnceLock<Mutex<HashMap<usize, Arc<super::CudaBackend>>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let b = match open.get(&n) {
        Some(b) => b.clone(),
        None => {
            let b = Arc::new(super::CudaBackend::new(n)?);
            open.insert(n, b.clone());
            b
        }
    };
    let desc = b.description();
    Ok((b, desc))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(n: usize) -> Result<(Arc<dyn Backend>, String)> {
    Err(Error::device(format!(
        "cuda:{n}: this build of recovar has no CUDA support (built without the `cuda` feature)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (s, d) in [
            ("auto", Device::Auto),
            ("CPU", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
            (" gpu:1 ", Device::Cuda(1)),
        ] {
            assert_eq!(s.parse::<Device>().unwrap(), d, "{s}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        assert_eq!("cuda:2".parse::<Device>().unwrap().to_string(), "cuda:2");
        for bad in ["", "cuda:", "cuda:-1", "cuda:x", "tpu", "cuda0"] {
            let e = bad.parse::<Device>().unwrap_err().to_string();
            assert!(
                e.contains("expected auto, cpu, cuda or cuda:N"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn cpu_is_always_available_and_auto_never_fails() {
        let s = select(Device::Cpu).unwrap();
        assert_eq!(s.backend.name(), "cpu");
        assert!(s.note.starts_with("device: cpu"), "{}", s.note);
        let a = select(Device::Auto).unwrap();
        assert!(a.note.starts_with("device: "), "{}", a.note);
        if a.backend.name() == "cpu" {
            assert!(a.note.contains("auto: no usable GPU"), "{}", a.note);
        }
    }

    #[test]
    fn an_absent_gpu_is_a_clear_error() {
        // Device 4096 exists nowhere: whatever this machine has, the error names the device.
        let e = select(Device::Cuda(4096)).unwrap_err();
        assert!(matches!(e, Error::Device(_)), "{e:?}");
        assert!(e.to_string().contains("cuda:4096"), "{e}");
    }
}
