//! Where the networks run: the backend (a cargo feature of burn compiled into this binary) and the
//! device (`cpu`, `cuda`, `cuda:N`), both chosen at run time, turned into a burn [`Device`]. The
//! description of the choice goes into sidecars, so outputs say what computed them.

use std::fmt;
use std::str::FromStr;

use burn::prelude::Device;
use serde::{Deserialize, Serialize};

/// A burn backend hcld can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn-flex: pure Rust on the CPU (the default build).
    Flex,
    /// burn-tch: LibTorch, on the CPU or CUDA GPUs (`--features tch`).
    Tch,
}

impl Backend {
    /// The backends compiled into this binary, preferred first.
    pub fn compiled() -> Vec<Backend> {
        let mut v = Vec::new();
        if cfg!(feature = "flex") {
            v.push(Backend::Flex);
        }
        if cfg!(feature = "tch") {
            v.push(Backend::Tch);
        }
        v
    }

    /// The backend used when none is asked for: LibTorch when compiled in (it is the faster one),
    /// else flex.
    pub fn preferred() -> Backend {
        if cfg!(feature = "tch") {
            Backend::Tch
        } else {
            Backend::Flex
        }
    }

    /// Whether `backend` (None: [`Backend::preferred`]) is compiled in and can drive `kind`,
    /// without touching any hardware.
    pub fn check(backend: Option<Backend>, kind: DeviceKind) -> Result<(), DeviceError> {
        let backend = backend.unwrap_or_else(Backend::preferred);
        if !Backend::compiled().contains(&backend) {
            return Err(DeviceError::NotCompiled(backend));
        }
        if backend == Backend::Flex && kind != DeviceKind::Cpu {
            return Err(DeviceError::Unsupported(backend, kind));
        }
        Ok(())
    }

    /// The name used on the command line and in sidecars.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Tch => "tch",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s.to_ascii_lowercase().as_str() {
            "flex" => Ok(Backend::Flex),
            "tch" | "libtorch" | "torch" => Ok(Backend::Tch),
            _ => Err(DeviceError::UnknownBackend(s.to_string())),
        }
    }
}

/// The hardware: the CPU or one CUDA GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    /// The CPU (all threads burn's backend uses).
    Cpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceKind::Cpu => f.write_str("cpu"),
            DeviceKind::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceKind {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" | "gpu" => Ok(DeviceKind::Cuda(0)),
            _ => lower
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceKind::Cuda)
                .ok_or_else(|| DeviceError::UnknownDevice(s.to_string())),
        }
    }
}

/// Why a backend/device choice cannot be honoured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    /// Not a backend name.
    #[error("unknown backend {0:?}: use flex or tch")]
    UnknownBackend(String),
    /// Not a device name.
    #[error("unknown device {0:?}: use cpu, cuda or cuda:N")]
    UnknownDevice(String),
    /// The backend was not compiled into this binary.
    #[error(
        "this hcld was built without the {0} backend (built with: {built}); rebuild with \
         `cargo build --release --features {0}` or choose another --backend",
        built = Backend::compiled().iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
    )]
    NotCompiled(Backend),
    /// The backend cannot drive that device.
    #[error("the {0} backend runs on the CPU only; use --backend tch (LibTorch) for {1}")]
    Unsupported(Backend, DeviceKind),
    /// LibTorch found no such GPU.
    #[error("{0} is not available to LibTorch: {1}; use --device cpu or another GPU index")]
    Unavailable(DeviceKind, String),
}

/// A resolved backend and device, ready to build networks on.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    /// The backend.
    pub backend: Backend,
    /// The hardware.
    pub kind: DeviceKind,
    /// burn's device.
    pub device: Device,
}

impl ComputeDevice {
    /// Resolves a choice; `backend` None = [`Backend::preferred`].
    pub fn select(backend: Option<Backend>, kind: DeviceKind) -> Result<Self, DeviceError> {
        Backend::check(backend, kind)?;
        let backend = backend.unwrap_or_else(Backend::preferred);
        let device = match (backend, kind) {
            (Backend::Flex, DeviceKind::Cpu) => flex_device(),
            (Backend::Flex, k) => return Err(DeviceError::Unsupported(backend, k)),
            (Backend::Tch, k) => tch_device(k)?,
        };
        Ok(ComputeDevice {
            backend,
            kind,
            device,
        })
    }

    /// The CPU on the preferred backend (what tests and examples use).
    pub fn cpu() -> Self {
        ComputeDevice::select(None, DeviceKind::Cpu).expect("one CPU backend is always compiled")
    }

    /// Builds a module with weights drawn from `seed`, reproducibly. burn draws initial weights
    /// from the device's global generator, lazily (at a parameter's first use); any other draw in
    /// between, from this thread or another, would change them. So seeding and forcing every
    /// initialiser happen under one process-wide lock. hcld draws all its other random numbers
    /// from its own seeded streams, never from burn's generator, so nothing else interleaves.
    pub fn init_seeded<M: burn::module::Module>(
        device: &Device,
        seed: u64,
        build: impl FnOnce(&Device) -> M,
    ) -> M {
        /// Reads every float parameter, which runs its lazy initialiser.
        struct Initialise;
        impl burn::module::ModuleVisitor for Initialise {
            fn visit_float<const D: usize>(
                &mut self,
                param: &burn::module::Param<burn::tensor::Tensor<D>>,
            ) {
                let _ = param.val();
            }
        }
        static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        device.seed(seed);
        let module = build(device);
        module.visit(&mut Initialise);
        module
    }

    /// "flex on cpu", "tch on cuda:0": for logs and sidecars.
    pub fn describe(&self) -> String {
        format!("{} on {}", self.backend, self.kind)
    }
}

#[cfg(feature = "flex")]
fn flex_device() -> Device {
    Device::flex()
}

#[cfg(not(feature = "flex"))]
fn flex_device() -> Device {
    unreachable!("checked against Backend::compiled")
}

// burn 0.22 marks burn-tch deprecated in favour of its CubeCL backends; LibTorch is still the
// fastest CPU path measured here and the only CUDA path that needs no CUDA toolkit at build time,
// so hcld keeps it until a CubeCL backend matches it (docs/benchmarks.md).
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn tch_device(kind: DeviceKind) -> Result<Device, DeviceError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::libtorch()),
        DeviceKind::Cuda(n) => {
            // LibTorch aborts the first operation on a missing GPU with a panic deep inside
            // tch; probe it once here so the user gets a sentence instead.
            let probe = std::panic::catch_unwind(|| {
                let device = Device::libtorch_cuda(n);
                let t = burn::tensor::Tensor::<1>::zeros([1], &device);
                let _ = t.into_data();
                device
            });
            probe.map_err(|e| {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "no CUDA device".into());
                DeviceError::Unavailable(kind, why.lines().next().unwrap_or("").to_string())
            })
        }
    }
}

#[cfg(not(feature = "tch"))]
fn tch_device(_: DeviceKind) -> Result<Device, DeviceError> {
    unreachable!("checked against Backend::compiled")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("cpu".parse::<DeviceKind>().unwrap(), DeviceKind::Cpu);
        assert_eq!("cuda".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda(0));
        assert_eq!("CUDA:3".parse::<DeviceKind>().unwrap(), DeviceKind::Cuda(3));
        assert!("cuda:x".parse::<DeviceKind>().is_err());
        assert!("tpu".parse::<DeviceKind>().is_err());
        assert_eq!("flex".parse::<Backend>().unwrap(), Backend::Flex);
        assert_eq!("libtorch".parse::<Backend>().unwrap(), Backend::Tch);
        assert!("ndarray".parse::<Backend>().is_err());
    }

    #[test]
    fn impossible_choices_say_what_to_do() {
        if cfg!(feature = "flex") {
            let e = ComputeDevice::select(Some(Backend::Flex), DeviceKind::Cuda(0)).unwrap_err();
            assert!(e.to_string().contains("--backend tch"), "{e}");
        }
        if !cfg!(feature = "tch") {
            let e = ComputeDevice::select(Some(Backend::Tch), DeviceKind::Cpu).unwrap_err();
            assert!(e.to_string().contains("--features tch"), "{e}");
        }
        let cpu = ComputeDevice::cpu();
        assert_eq!(cpu.kind, DeviceKind::Cpu);
        assert!(cpu.describe().ends_with("on cpu"));
    }
}
