//! GPU exact search for a shard (issue 24): a device copy of the shard's vectors kept in step
//! with its writes (`DeviceCopy`, one device thread, commands in order), exact top-k of a
//! batch of queries by cuBLAS GEMM plus a selection kernel (`cuda`), and the host side shared
//! by every device: masks, micro-batching, and the merge that turns a device's per-segment
//! candidates into a superset of what the CPU exact plan keeps (`select`). The shard scores
//! that superset on the CPU with the functions of its exact plan, so results are the CPU
//! plan's, id for id and score for score.
//!
//! CUDA is loaded at run time: the binary builds and runs on machines without it, and
//! `DeviceChoice::Auto` falls back to the CPU there. `cpu::CpuStandIn` implements the kernel
//! interface with the device's numerics for the tests of everything above it.

pub mod cpu;
pub mod cuda;
pub mod kernel;
pub mod select;
pub mod worker;

pub use kernel::{Element, ExactKernel, KernelError, KeyKind, Mask};
pub use worker::{DeviceCopy, DeviceError, DeviceOptions, DeviceQuery};

/// Where a shard searches (`--device`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The GPU when one is usable, else the CPU (logged, `vecshard_gpu_available 0`).
    #[default]
    Auto,
    Cpu,
    /// The GPU; the server refuses to start without one.
    Gpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "gpu" => Ok(DeviceChoice::Gpu),
            other => Err(format!(
                "device is {other:?}, it must be one of auto, cpu, gpu"
            )),
        }
    }
}

impl DeviceChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Gpu => "gpu",
        }
    }
}

/// An opened device and the memory it had free.
pub struct Opened {
    pub kernel: Box<dyn ExactKernel>,
    pub free_memory: u64,
}

/// Opens the first CUDA device for vectors of `dimension` at `element`, as `choice` says:
/// `Ok(None)` to search on the CPU (asked for, or `Auto` without a usable GPU, logged), an
/// error when `Gpu` was asked for and there is none (the message says why).
pub fn open(
    choice: DeviceChoice,
    dimension: usize,
    element: Element,
) -> Result<Option<Opened>, String> {
    if choice == DeviceChoice::Cpu {
        return Ok(None);
    }
    let opened = cuda::CudaDevice::open(0, dimension, element).and_then(|device| {
        let (free, _) = device.memory_info()?;
        Ok(Opened {
            kernel: Box::new(device),
            free_memory: free as u64,
        })
    });
    match (opened, choice) {
        (Ok(o), _) => {
            tracing::info!(device = %o.kernel.describe(), free_mib = o.free_memory >> 20, "GPU search on");
            Ok(Some(o))
        }
        (Err(why), DeviceChoice::Gpu) => Err(format!(
            "--device gpu was asked for, but no GPU is usable: {why}"
        )),
        (Err(why), _) => {
            tracing::info!("no usable GPU ({why}); searching on the CPU");
            Ok(None)
        }
    }
}
