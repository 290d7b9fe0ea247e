//! The CUDA backend (feature `cuda`): context, streams, mirrors, pinned staging, doorbells and
//! kernel launches, on cudarc's driver API (the driver library is loaded at run time).
//!
//! cudarc panics when a dynamically loaded library or symbol is missing, so [`probe`] checks
//! `is_culib_present()` first and runs the context creation inside `catch_unwind`; kernel
//! compilation checks NVRTC's presence the same way.
//!
//! Streams: `copy` carries host→device copies, kernels and prefetches (so a kernel always sees
//! the copies submitted before it); `readback` carries device→host copies. cudarc's per-slice
//! read/write events order the two (a readback waits for the last write of its mirror).

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{
    result, sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PinnedHostSlice,
    PushKernelArg, UnifiedSlice,
};

use crate::device::kernels::{KernelArgs, DENSE_KERNEL, KERNELS_CU, SPARSE_KERNEL};
use crate::types::error::DeviceError;

fn drv(what: &str) -> impl FnOnce(result::DriverError) -> DeviceError + '_ {
    move |e| DeviceError::Driver(format!("{what}: {e}"))
}

/// Runs a CUDA call, turning a panic (a symbol the installed driver lacks) into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, DeviceError>) -> Result<T, DeviceError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(DeviceError::Driver(format!("{what}: the CUDA library failed: {msg}")))
    })
}

/// What the probe found about device 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// The device name the driver reports.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_mem: u64,
    /// Whether the device supports managed (unified) memory.
    pub managed_memory: bool,
    /// Whether host and device may touch managed memory at the same time.
    pub concurrent_managed_access: bool,
}

/// The process's GPU: device 0's primary context and its streams.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    copy: Arc<CudaStream>,
    readback: Arc<CudaStream>,
    kernels: OnceLock<Result<Kernels, String>>,
    pub(crate) info: GpuInfo,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("info", &self.info).finish()
    }
}

struct Kernels {
    dense: CudaFunction,
    sparse: CudaFunction,
}

/// Opens device 0 if a driver and a device are present; the error says why not.
pub fn probe() -> Result<Arc<Gpu>, String> {
    // SAFETY: is_culib_present only tries to dlopen the driver library by name.
    if !unsafe { sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda) was not found".into());
    }
    let opened = guarded("opening device 0", || {
        let ctx = CudaContext::new(0).map_err(drv("creating a context on device 0"))?;
        let copy = ctx.new_stream().map_err(drv("creating the copy stream"))?;
        let readback = ctx.new_stream().map_err(drv("creating the readback stream"))?;
        let attr = |a| ctx.attribute(a).map_err(drv("reading a device attribute"));
        let info = GpuInfo {
            name: ctx.name().map_err(drv("reading the device name"))?,
            compute_capability: ctx.compute_capability().map_err(drv("reading the compute capability"))?,
            total_mem: ctx.total_mem().map_err(drv("reading the memory size"))? as u64,
            managed_memory: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY)? != 0,
            concurrent_managed_access: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS)?
                != 0,
        };
        Ok(Arc::new(Gpu { ctx, copy, readback, kernels: OnceLock::new(), info }))
    });
    opened.map_err(|e| e.to_string())
}

/// A page's device copy.
pub enum Mirror {
    /// Device memory, kept coherent through pinned staging copies.
    Device(CudaSlice<u8>),
    /// Managed memory: the host writes it directly; the device faults pages in, or they are
    /// prefetched before kernels when `prefetch` is set.
    Unified {
        /// The managed allocation.
        buf: UnifiedSlice<u8>,
        /// Prefetch to the device before kernels run.
        prefetch: bool,
    },
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mirror::Device(s) => write!(f, "Mirror::Device({} bytes)", s.len()),
            Mirror::Unified { buf, prefetch } => write!(f, "Mirror::Unified({} bytes, prefetch {prefetch})", buf.len()),
        }
    }
}

impl Mirror {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Mirror::Device(s) => s.len(),
            Mirror::Unified { buf, .. } => buf.len(),
        }
    }

    /// True for a zero-length mirror (never allocated by [`Gpu::alloc_mirror`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A delta's arguments already on the device (see [`Gpu::prepare`]).
pub struct PreparedDelta {
    blob: CudaSlice<u8>,
    scalars: [u64; 2],
    dense: bool,
    dims: (u32, u32),
}

impl std::fmt::Debug for PreparedDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedDelta(dense {}, {} blob bytes, dims {:?})", self.dense, self.blob.len(), self.dims)
    }
}

/// A pinned host buffer for staging copies, grown on demand.
pub struct Staging {
    buf: Option<PinnedHostSlice<u8>>,
    /// `cuMemHostAlloc` flags: write-combined for host→device (the CPU only writes it), 0 (cached)
    /// for device→host, which the CPU reads back.
    flags: u32,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Staging({} bytes, flags {})", self.buf.as_ref().map_or(0, |b| b.len()), self.flags)
    }
}

impl Staging {
    /// Staging for host→device copies.
    pub fn for_upload() -> Staging {
        Staging { buf: None, flags: sys::CU_MEMHOSTALLOC_WRITECOMBINED }
    }

    /// Staging for device→host copies.
    pub fn for_readback() -> Staging {
        Staging { buf: None, flags: 0 }
    }

    /// At least `len` bytes of pinned memory. The caller guarantees no copy still uses the
    /// buffer (every sync waits for its doorbell before releasing the staging lock).
    pub fn get(&mut self, gpu: &Gpu, len: usize) -> Result<&mut [u8], DeviceError> {
        if self.buf.as_ref().is_none_or(|b| b.len() < len) {
            self.buf = None; // free the old buffer before allocating the larger one
            let want = len.max(1).next_power_of_two();
            // SAFETY: u8 is valid for any bit pattern, so uninitialised pinned bytes are fine
            // to hand out; every byte is written before it is copied anywhere.
            let b = unsafe { gpu.ctx.alloc_pinned_with_flags::<u8>(want, self.flags) }
                .map_err(drv("allocating pinned staging memory"))?;
            self.buf = Some(b);
        }
        let b = self.buf.as_mut().expect("allocated above");
        let s = b.as_mut_slice().map_err(drv("waiting for the staging buffer"))?;
        Ok(&mut s[..len])
    }
}

/// A doorbell: a host function enqueued on a stream sets a host-visible flag when the stream
/// reaches it, and an event recorded right after lets the host block until then.
pub struct Doorbell {
    event: CudaEvent,
    rung: Arc<AtomicBool>,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Doorbell(rung {})", self.is_rung())
    }
}

/// Host function run by the driver when a stream reaches a doorbell.
///
/// # Safety
/// `arg` must come from `Arc::into_raw` on an `Arc<AtomicBool>`, and be passed to exactly one call.
unsafe extern "C" fn ring_doorbell(arg: *mut c_void) {
    // SAFETY: `arg` is the pointer Arc::into_raw produced in `Doorbell::ring`, handed to exactly
    // one host-function call; taking it back releases that reference.
    let flag = unsafe { Arc::from_raw(arg as *const AtomicBool) };
    flag.store(true, Ordering::Release);
}

impl Doorbell {
    /// Enqueues a doorbell behind everything already submitted to `stream`.
    pub fn ring(stream: &Arc<CudaStream>) -> Result<Doorbell, DeviceError> {
        let rung = Arc::new(AtomicBool::new(false));
        let raw = Arc::into_raw(rung.clone()) as *mut c_void;
        stream.context().bind_to_thread().map_err(drv("binding the context"))?;
        // SAFETY: the stream is live; the callback only touches the AtomicBool that `raw` keeps
        // alive (no CUDA calls, as host functions require) and consumes `raw` exactly once.
        if let Err(e) = unsafe { result::stream::launch_host_function(stream.cu_stream(), ring_doorbell, raw) } {
            // SAFETY: the callback was not enqueued, so `raw` is still ours to release.
            drop(unsafe { Arc::from_raw(raw as *const AtomicBool) });
            return Err(drv("enqueueing the doorbell")(e));
        }
        let event = stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))
            .map_err(drv("recording the doorbell event"))?;
        Ok(Doorbell { event, rung })
    }

    /// True once the stream has reached the doorbell.
    pub fn is_rung(&self) -> bool {
        self.rung.load(Ordering::Acquire)
    }

    /// Blocks until the doorbell rings; fails if the stream failed before reaching it.
    pub fn wait(&self) -> Result<(), DeviceError> {
        self.event.synchronize().map_err(drv("waiting for the doorbell"))?;
        if !self.is_rung() {
            return Err(DeviceError::Driver("the stream completed but the doorbell never rang".into()));
        }
        Ok(())
    }
}

impl Gpu {
    /// Allocates a zeroed mirror of `size` bytes (managed memory when `unified`).
    pub fn alloc_mirror(&self, size: usize, unified: bool) -> Result<Mirror, DeviceError> {
        guarded("allocating a mirror", || {
            if !unified {
                let s = self.copy.alloc_zeros::<u8>(size).map_err(drv("allocating device memory"))?;
                return Ok(Mirror::Device(s));
            }
            if !self.info.managed_memory {
                return Err(DeviceError::Invalid("device 0 does not support managed memory".into()));
            }
            // SAFETY: u8 accepts any bit pattern; the bytes are zeroed right below.
            let mut buf =
                unsafe { self.ctx.alloc_unified::<u8>(size, true) }.map_err(drv("allocating managed memory"))?;
            buf.as_mut_slice().map_err(drv("zeroing managed memory"))?.fill(0);
            // Tie the allocation to the copy stream so prefetches order with our kernels.
            // Failure only costs that ordering (prefetch is a hint), so it is not an error.
            let _ = buf.attach(&self.copy, sys::CUmemAttach_flags::CU_MEM_ATTACH_GLOBAL);
            Ok(Mirror::Unified { buf, prefetch: self.info.concurrent_managed_access })
        })
    }

    /// Enqueues a host→device copy of `src` (pinned for a device mirror) to `offset`. For a
    /// unified mirror the host writes the managed memory directly (synchronously).
    pub fn upload(&self, mirror: &mut Mirror, offset: usize, src: &[u8]) -> Result<(), DeviceError> {
        let end = offset + src.len();
        match mirror {
            Mirror::Device(s) => {
                let mut dst = s.slice_mut(offset..end);
                self.copy.memcpy_htod(src, &mut dst).map_err(drv("enqueueing a host-to-device copy"))
            }
            Mirror::Unified { buf, .. } => {
                buf.as_mut_slice().map_err(drv("waiting for managed memory"))?[offset..end].copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Enqueues a device→host copy of `dst.len()` bytes at `offset` into `dst` (pinned for a
    /// device mirror). A unified mirror is read directly once its pending work finished.
    pub fn download(&self, mirror: &Mirror, offset: usize, dst: &mut [u8]) -> Result<(), DeviceError> {
        let end = offset + dst.len();
        match mirror {
            Mirror::Device(s) => {
                let src = s.slice(offset..end);
                self.readback.memcpy_dtoh(&src, dst).map_err(drv("enqueueing a device-to-host copy"))
            }
            Mirror::Unified { buf, .. } => {
                dst.copy_from_slice(&buf.as_slice().map_err(drv("waiting for managed memory"))?[offset..end]);
                Ok(())
            }
        }
    }

    /// Prefetches a unified mirror to the device (no-op for device mirrors or when disabled).
    pub fn prefetch(&self, mirror: &Mirror) -> Result<bool, DeviceError> {
        match mirror {
            Mirror::Unified { buf, prefetch: true } => {
                guarded("prefetching managed memory", || buf.prefetch().map_err(drv("prefetching managed memory")))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn kernels(&self) -> Result<&Kernels, DeviceError> {
        self.kernels
            .get_or_init(|| {
                // SAFETY: only tries to dlopen the NVRTC library by name.
                if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                    return Err("the NVRTC library (libnvrtc) was not found; delta kernels need it".into());
                }
                guarded("compiling the delta kernels", || {
                    let ptx = cudarc::nvrtc::compile_ptx(KERNELS_CU)
                        .map_err(|e| DeviceError::Driver(format!("NVRTC failed on the delta kernels: {e}")))?;
                    let module = self.ctx.load_module(ptx).map_err(drv("loading the delta kernels"))?;
                    Ok(Kernels {
                        dense: module.load_function(DENSE_KERNEL).map_err(drv("loading the dense kernel"))?,
                        sparse: module.load_function(SPARSE_KERNEL).map_err(drv("loading the sparse kernel"))?,
                    })
                })
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| DeviceError::Driver(e.clone()))
    }

    /// Compiles the kernels now (they are otherwise compiled on first use).
    pub fn warm_kernels(&self) -> Result<(), DeviceError> {
        self.kernels().map(|_| ())
    }

    /// Uploads a delta's flattened arguments (one host→device copy on the copy stream).
    pub fn prepare(&self, args: &KernelArgs) -> Result<PreparedDelta, DeviceError> {
        let blob = self.copy.clone_htod(args.blob()).map_err(drv("uploading kernel arguments"))?;
        let (scalars, dense) = match args {
            KernelArgs::Dense { offset, len, .. } => ([*offset, *len], true),
            KernelArgs::Sparse { n_runs, .. } => ([*n_runs, 0], false),
        };
        Ok(PreparedDelta { blob, scalars, dense, dims: args.launch_dims() })
    }

    /// Enqueues the kernel that applies a prepared delta to `mirror` on the copy stream
    /// (prefetching a unified mirror first when enabled). The caller has checked the delta
    /// against the mirror's size.
    pub fn launch_prepared(&self, mirror: &mut Mirror, p: &PreparedDelta) -> Result<(), DeviceError> {
        let k = self.kernels()?;
        self.prefetch(mirror)?;
        let cfg = LaunchConfig { grid_dim: (p.dims.0, 1, 1), block_dim: (p.dims.1, 1, 1), shared_mem_bytes: 0 };
        let mut lb = self.copy.launch_builder(if p.dense { &k.dense } else { &k.sparse });
        match mirror {
            Mirror::Device(s) => lb.arg(s),
            Mirror::Unified { buf, .. } => lb.arg(buf),
        };
        lb.arg(&p.scalars[0]);
        if p.dense {
            lb.arg(&p.scalars[1]);
        }
        lb.arg(&p.blob);
        // SAFETY: the argument list matches the kernel signatures in KERNELS_CU (page pointer,
        // u64 scalars, blob pointer); the blob has the documented layout (built by
        // KernelArgs::from_delta) and the caller checked the delta fits the mirror, so every
        // access stays in bounds. cudarc orders the launch after earlier uses of both buffers.
        unsafe { lb.launch(cfg) }.map_err(drv("launching a delta kernel"))?;
        Ok(())
    }

    /// Uploads `args` and enqueues its kernel on `mirror`.
    pub fn launch_delta(&self, mirror: &mut Mirror, args: &KernelArgs) -> Result<(), DeviceError> {
        self.kernels()?;
        let p = self.prepare(args)?;
        self.launch_prepared(mirror, &p)
    }

    /// Copies the whole mirror to a new vector (synchronously; for checks and tools).
    pub fn read_mirror(&self, mirror: &Mirror) -> Result<Vec<u8>, DeviceError> {
        let mut out = vec![0u8; mirror.len()];
        self.download(mirror, 0, &mut out)?;
        self.readback.synchronize().map_err(drv("waiting for a readback"))?;
        Ok(out)
    }

    /// Best-effort wait for both streams to drain (after a failure, before staging memory that
    /// copies may still read is reused). Errors are ignored: the failure is already reported.
    pub fn drain(&self) {
        let _ = self.copy.synchronize();
        let _ = self.readback.synchronize();
    }

    /// A doorbell behind all host→device copies and kernels submitted so far.
    pub fn doorbell_copy(&self) -> Result<Doorbell, DeviceError> {
        Doorbell::ring(&self.copy)
    }

    /// A doorbell behind all device→host copies submitted so far.
    pub fn doorbell_readback(&self) -> Result<Doorbell, DeviceError> {
        Doorbell::ring(&self.readback)
    }

    /// The context (for benchmarks and tests that need raw copies to compare against).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The copy stream.
    pub fn copy_stream(&self) -> &Arc<CudaStream> {
        &self.copy
    }
}
