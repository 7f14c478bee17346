//! Client-supplied WGSL. Before any node runs a stranger's kernel it is parsed and validated with naga and held
//! to the limits below; every rejection says precisely what is wrong. The checked job is what the executor (and
//! the sandbox process around it, see [`crate::sandbox`]) accepts. WGSL is memory-safe once wgpu's runtime bounds
//! checks are on, which is why untrusted modules are never compiled with them off.

use neurolov_protocol::messages::{Access, Feature};

/// Largest WGSL source a job may carry.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// Most operators one statement may hold. naga parses a chain `x+x+…` into an expression tree as deep as the chain
/// and walks it recursively: 8,000 terms overflowed a 2 MiB stack, which aborts the whole process (a panic handler
/// cannot catch it). 1,024 leaves a wide margin, and [`inspect`] runs naga on a thread with [`NAGA_STACK_BYTES`].
pub const MAX_STATEMENT_OPERATORS: usize = 1024;
/// Stack of the thread naga runs on.
pub const NAGA_STACK_BYTES: usize = 32 << 20;
/// Most storage buffers one job may bind (WebGPU's guaranteed `maxStorageBuffersPerShaderStage`).
pub const MAX_STORAGE_BUFFERS: usize = 8;
/// Most uniform buffers one job may bind.
pub const MAX_UNIFORM_BUFFERS: usize = 4;
/// Most buffers one job may bind.
pub const MAX_BUFFERS: usize = MAX_STORAGE_BUFFERS + MAX_UNIFORM_BUFFERS;
/// Largest single buffer of a job (WebGPU's guaranteed `maxStorageBufferBindingSize`).
pub const MAX_BUFFER_BYTES: u64 = 128 * 1024 * 1024;
/// Largest total of all buffers of a job.
pub const MAX_TOTAL_BUFFER_BYTES: u64 = 512 * 1024 * 1024;
/// Largest uniform buffer (WebGPU's guaranteed `maxUniformBufferBindingSize`).
pub const MAX_UNIFORM_BYTES: u64 = 64 * 1024;
/// WebGPU's guaranteed `maxComputeWorkgroupStorageSize`: naga does not check workgroup memory, so we do.
pub const MAX_WORKGROUP_STORAGE_BYTES: u64 = 16 * 1024;
/// WebGPU's guaranteed `maxComputeInvocationsPerWorkgroup`.
pub const MAX_WORKGROUP_INVOCATIONS: u32 = 256;
/// WebGPU's guaranteed `maxComputeWorkgroupSizeX/Y/Z`.
pub const MAX_WORKGROUP_SIZE: [u32; 3] = [256, 256, 64];
/// WebGPU's guaranteed `maxComputeWorkgroupsPerDimension`.
pub const MAX_DISPATCH_PER_DIMENSION: u32 = 65_535;
/// Most workgroups one dispatch may launch in total: bounds the work a job can ask of a volunteer's GPU.
pub const MAX_DISPATCH_WORKGROUPS: u64 = 1 << 24;

/// One buffer a job binds at `@group(0) @binding(binding)`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobBuffer {
    pub binding: u32,
    pub access: Access,
    pub size_bytes: u64,
    /// Initial contents; shorter than `size_bytes` means the rest starts zeroed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init: Vec<u8>,
}

/// A client's own kernel: WGSL source, entry point, buffers and dispatch size.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WgslJob {
    pub source: String,
    pub entry_point: String,
    pub buffers: Vec<JobBuffer>,
    pub dispatch: [u32; 3],
}

/// Why a job's kernel was refused; nothing ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectError {
    #[error("wgsl source is {actual} bytes, the limit is {MAX_SOURCE_BYTES}")]
    SourceTooLarge { actual: usize },
    #[error("wgsl does not parse: {0}")]
    Parse(String),
    #[error("wgsl is invalid: {0}")]
    Invalid(String),
    #[error("wgsl needs a feature this adapter lacks: {0}")]
    MissingFeature(String),
    #[error("entry point `{0}` not found")]
    NoEntryPoint(String),
    #[error("entry point `{0}` is not a compute shader")]
    NotCompute(String),
    #[error("pipeline-overridable constants are not supported in jobs")]
    Overrides,
    #[error(
        "workgroup size {size:?} exceeds the limits ({MAX_WORKGROUP_SIZE:?} per dimension, {MAX_WORKGROUP_INVOCATIONS} invocations)"
    )]
    WorkgroupTooLarge { size: [u32; 3] },
    #[error(
        "dispatch {dispatch:?} exceeds the limits ({MAX_DISPATCH_PER_DIMENSION} per dimension, {MAX_DISPATCH_WORKGROUPS} workgroups in all)"
    )]
    DispatchTooLarge { dispatch: [u32; 3] },
    #[error("dispatch {dispatch:?} launches no workgroup")]
    EmptyDispatch { dispatch: [u32; 3] },
    #[error(
        "job declares {actual} buffers, the limit is {MAX_BUFFERS} ({MAX_STORAGE_BUFFERS} storage, {MAX_UNIFORM_BUFFERS} uniform)"
    )]
    TooManyBuffers { actual: usize },
    #[error("job binds no read-write buffer: it could produce no result")]
    NoOutput,
    #[error("entry point uses {bytes} bytes of workgroup memory, the limit is {MAX_WORKGROUP_STORAGE_BYTES}")]
    WorkgroupMemoryTooLarge { bytes: u64 },
    #[error("the wgsl front end failed on this source: {0}")]
    Crashed(String),
    #[error("a statement holds {operators} operators, the limit is {MAX_STATEMENT_OPERATORS}")]
    StatementTooLong { operators: usize },
    #[error("binding {binding} is declared twice by the job")]
    DuplicateBinding { binding: u32 },
    #[error(
        "buffer at binding {binding} is {size_bytes} bytes: sizes must be a positive multiple of 4, at most {limit}"
    )]
    BadBufferSize { binding: u32, size_bytes: u64, limit: u64 },
    #[error("buffer at binding {binding} has {init} bytes of initial data for a {size_bytes}-byte buffer")]
    InitTooLong { binding: u32, init: usize, size_bytes: u64 },
    #[error("job buffers total {total} bytes, the limit is {MAX_TOTAL_BUFFER_BYTES}")]
    TotalTooLarge { total: u64 },
    #[error("shader resource `{name}` uses group {group}: jobs bind group 0 only")]
    WrongGroup { name: String, group: u32 },
    #[error("shader resource `{name}` is not a buffer: jobs bind uniform and storage buffers only")]
    NotABuffer { name: String },
    #[error("shader binding {binding} (`{name}`) has no buffer in the job")]
    MissingBuffer { binding: u32, name: String },
    #[error("job buffer at binding {binding} is not used by entry point `{entry_point}`")]
    UnusedBuffer { binding: u32, entry_point: String },
    #[error("shader binding {binding} (`{name}`) is {shader:?}, the job declares {job:?}")]
    AccessMismatch { binding: u32, name: String, shader: Access, job: Access },
    #[error("shader binding {binding} (`{name}`) needs at least {needed} bytes, the job gives {given}")]
    BufferTooSmall { binding: u32, name: String, needed: u64, given: u64 },
}

/// What the adapter offers beyond core WebGPU that a job's WGSL may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaderFeatures {
    pub f16: bool,
    pub subgroups: bool,
}

impl ShaderFeatures {
    /// The WebGPU names of the features (`shader-f16`, `subgroups`), as nodes claim them in the protocol.
    pub fn names(&self) -> Vec<String> {
        [(self.f16, Feature::ShaderF16.name()), (self.subgroups, Feature::Subgroups.name())]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_string())
            .collect()
    }
}

/// One resource an entry point uses, as its WGSL declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedBinding {
    pub group: u32,
    pub binding: u32,
    pub name: String,
    pub access: Access,
    /// Smallest buffer the declaration accepts (a runtime-sized array counts one element).
    pub min_size_bytes: u64,
}

/// What naga found in a module for one entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryPointInfo {
    pub workgroup_size: [u32; 3],
    pub bindings: Vec<UsedBinding>,
    /// Bytes of `var<workgroup>` memory the entry point uses.
    pub workgroup_memory_bytes: u64,
}

/// Parses and validates `source` for `features` and reports the entry point's workgroup size and the resources it
/// uses. This is also how the catalog's own kernels are held to their declared bindings.
pub fn inspect(source: &str, entry_point: &str, features: ShaderFeatures) -> Result<EntryPointInfo, RejectError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(RejectError::SourceTooLarge { actual: source.len() });
    }
    // What naga recurses on is bounded before naga sees it: a stack overflow cannot be caught.
    let operators = statement_operators(source);
    if operators > MAX_STATEMENT_OPERATORS {
        return Err(RejectError::StatementTooLong { operators });
    }
    // A front end bug must not take the node down with it: hostile input is exactly what finds such bugs.
    let run = || {
        std::panic::catch_unwind(|| inspect_unguarded(source, entry_point, features)).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(RejectError::Crashed(message))
        })
    };
    std::thread::scope(|scope| {
        match std::thread::Builder::new().stack_size(NAGA_STACK_BYTES).spawn_scoped(scope, run) {
            Ok(handle) => handle.join().unwrap_or_else(|_| Err(RejectError::Crashed("front end thread".into()))),
            Err(e) => Err(RejectError::Crashed(format!("no thread for the front end: {e}"))),
        }
    })
}

/// The most operator tokens (runs of `+-*/%&|^<>!=~`) between two statement boundaries (`;`, `{`, `}`), comments
/// skipped: an upper bound on how deep one expression's tree can be.
pub fn statement_operators(source: &str) -> usize {
    let bytes = source.as_bytes();
    let (mut i, mut most, mut here, mut in_run) = (0, 0, 0usize, false);
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'/', Some(b'/')) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            (b'/', Some(b'*')) => {
                // Block comments nest in WGSL.
                let mut depth = 0usize;
                while i < bytes.len() {
                    match (bytes[i], bytes.get(i + 1)) {
                        (b'/', Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (b'*', Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
                continue;
            }
            (b';' | b'{' | b'}', _) => {
                most = most.max(here);
                here = 0;
                in_run = false;
            }
            (c, _) if b"+-*/%&|^<>!=~".contains(&c) => {
                if !in_run {
                    here += 1;
                }
                in_run = true;
            }
            _ => in_run = false,
        }
        i += 1;
    }
    most.max(here)
}

fn inspect_unguarded(source: &str, entry_point: &str, features: ShaderFeatures) -> Result<EntryPointInfo, RejectError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(RejectError::SourceTooLarge { actual: source.len() });
    }
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        let message = e.emit_to_string(source);
        // naga reports a missing `enable` capability as a parse error; name it as the feature it is.
        if message.contains("enable-extension") || message.contains("is not enabled") {
            RejectError::MissingFeature(first_line(&message))
        } else {
            RejectError::Parse(message.trim().to_string())
        }
    })?;
    let mut capabilities = naga::valid::Capabilities::empty();
    capabilities.set(naga::valid::Capabilities::SHADER_FLOAT16, features.f16);
    capabilities.set(naga::valid::Capabilities::SUBGROUP, features.subgroups);
    let validate = |caps| {
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps).validate(&module).map_err(Box::new)
    };
    let info = match validate(capabilities) {
        Ok(info) => info,
        Err(e) => {
            let message = e.emit_to_string(source).trim().to_string();
            // Valid with every capability: the module is fine, the adapter is not enough for it.
            return Err(if validate(naga::valid::Capabilities::all()).is_ok() {
                RejectError::MissingFeature(message)
            } else {
                RejectError::Invalid(message)
            });
        }
    };
    if !module.overrides.is_empty() {
        return Err(RejectError::Overrides);
    }
    let (index, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, ep)| ep.name == entry_point)
        .ok_or_else(|| RejectError::NoEntryPoint(entry_point.to_string()))?;
    if ep.stage != naga::ShaderStage::Compute {
        return Err(RejectError::NotCompute(entry_point.to_string()));
    }
    let uses = info.get_entry_point(index);
    let mut bindings = Vec::new();
    let mut workgroup_memory_bytes = 0u64;
    for (handle, var) in module.global_variables.iter() {
        if uses[handle].is_empty() {
            continue;
        }
        let size = module.types[var.ty].inner.try_size(module.to_ctx()).map(u64::from).unwrap_or(u64::MAX);
        if var.space == naga::AddressSpace::WorkGroup {
            workgroup_memory_bytes = workgroup_memory_bytes.saturating_add(size);
            continue;
        }
        let name = var.name.clone().unwrap_or_else(|| format!("global {}", handle.index()));
        let access = match var.space {
            naga::AddressSpace::Uniform => Access::Uniform,
            naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE) => Access::ReadWrite,
            naga::AddressSpace::Storage { .. } => Access::Read,
            naga::AddressSpace::Handle => return Err(RejectError::NotABuffer { name }),
            _ => continue,
        };
        let Some(rb) = var.binding.as_ref() else { continue };
        bindings.push(UsedBinding { group: rb.group, binding: rb.binding, name, access, min_size_bytes: size });
    }
    bindings.sort_by_key(|b| (b.group, b.binding));
    Ok(EntryPointInfo { workgroup_size: ep.workgroup_size, bindings, workgroup_memory_bytes })
}

/// The fewest optional features `job` needs: none if it is valid in core WebGPU, else the smallest set that makes
/// it valid (a kernel that enables and uses `f16` needs `shader-f16`). Only nodes with those features may get it.
pub fn needed_features(job: &WgslJob) -> Result<ShaderFeatures, RejectError> {
    let all = ShaderFeatures { f16: true, subgroups: true };
    for features in [
        ShaderFeatures::default(),
        ShaderFeatures { f16: true, subgroups: false },
        ShaderFeatures { f16: false, subgroups: true },
    ] {
        match validate(job, features) {
            Ok(_) => return Ok(features),
            Err(RejectError::MissingFeature(_)) => {}
            Err(e) => return Err(e),
        }
    }
    validate(job, all).map(|_| all)
}

/// Checks a job against the limits and its own WGSL; `Ok` means it may be compiled and dispatched.
pub fn validate(job: &WgslJob, features: ShaderFeatures) -> Result<EntryPointInfo, RejectError> {
    let info = inspect(&job.source, &job.entry_point, features)?;
    check_shape(&info, job.dispatch)?;
    check_buffers(&job.buffers)?;
    check_bindings(&info, job)?;
    Ok(info)
}

/// The workgroup and the dispatch within the limits every adapter accepts.
fn check_shape(info: &EntryPointInfo, dispatch: [u32; 3]) -> Result<(), RejectError> {
    let size = info.workgroup_size;
    if size.iter().zip(MAX_WORKGROUP_SIZE).any(|(&s, max)| s > max)
        || size.iter().map(|&s| u64::from(s)).product::<u64>() > u64::from(MAX_WORKGROUP_INVOCATIONS)
    {
        return Err(RejectError::WorkgroupTooLarge { size });
    }
    if info.workgroup_memory_bytes > MAX_WORKGROUP_STORAGE_BYTES {
        return Err(RejectError::WorkgroupMemoryTooLarge { bytes: info.workgroup_memory_bytes });
    }
    if dispatch.contains(&0) {
        return Err(RejectError::EmptyDispatch { dispatch });
    }
    if dispatch.iter().any(|&d| d > MAX_DISPATCH_PER_DIMENSION)
        || dispatch.iter().map(|&d| u64::from(d)).product::<u64>() > MAX_DISPATCH_WORKGROUPS
    {
        return Err(RejectError::DispatchTooLarge { dispatch });
    }
    Ok(())
}

/// The job's buffers: how many of each kind, distinct bindings, sizes within limits, initial contents that fit.
fn check_buffers(buffers: &[JobBuffer]) -> Result<(), RejectError> {
    let uniforms = buffers.iter().filter(|b| b.access == Access::Uniform).count();
    if buffers.len() > MAX_BUFFERS || uniforms > MAX_UNIFORM_BUFFERS || buffers.len() - uniforms > MAX_STORAGE_BUFFERS {
        return Err(RejectError::TooManyBuffers { actual: buffers.len() });
    }
    let mut total = 0u64;
    for (i, buf) in buffers.iter().enumerate() {
        if buffers[..i].iter().any(|b| b.binding == buf.binding) {
            return Err(RejectError::DuplicateBinding { binding: buf.binding });
        }
        let limit = if buf.access == Access::Uniform { MAX_UNIFORM_BYTES } else { MAX_BUFFER_BYTES };
        if buf.size_bytes == 0 || buf.size_bytes % 4 != 0 || buf.size_bytes > limit {
            return Err(RejectError::BadBufferSize { binding: buf.binding, size_bytes: buf.size_bytes, limit });
        }
        if buf.init.len() as u64 > buf.size_bytes {
            return Err(RejectError::InitTooLong {
                binding: buf.binding,
                init: buf.init.len(),
                size_bytes: buf.size_bytes,
            });
        }
        total += buf.size_bytes;
    }
    if total > MAX_TOTAL_BUFFER_BYTES {
        return Err(RejectError::TotalTooLarge { total });
    }
    Ok(())
}

/// Every binding the shader uses has a buffer of the declared access and a sufficient size, every buffer is used,
/// and something is written (the result).
fn check_bindings(info: &EntryPointInfo, job: &WgslJob) -> Result<(), RejectError> {
    for used in &info.bindings {
        if used.group != 0 {
            return Err(RejectError::WrongGroup { name: used.name.clone(), group: used.group });
        }
        let buf = job
            .buffers
            .iter()
            .find(|b| b.binding == used.binding)
            .ok_or_else(|| RejectError::MissingBuffer { binding: used.binding, name: used.name.clone() })?;
        if buf.access != used.access {
            return Err(RejectError::AccessMismatch {
                binding: used.binding,
                name: used.name.clone(),
                shader: used.access,
                job: buf.access,
            });
        }
        if buf.size_bytes < used.min_size_bytes {
            return Err(RejectError::BufferTooSmall {
                binding: used.binding,
                name: used.name.clone(),
                needed: used.min_size_bytes,
                given: buf.size_bytes,
            });
        }
    }
    if let Some(unused) = job.buffers.iter().find(|b| !info.bindings.iter().any(|u| u.binding == b.binding)) {
        return Err(RejectError::UnusedBuffer { binding: unused.binding, entry_point: job.entry_point.clone() });
    }
    if !job.buffers.iter().any(|b| b.access == Access::ReadWrite) {
        return Err(RejectError::NoOutput);
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::KernelId;

    /// The catalog is the contract the host code binds by: it must say exactly what each WGSL entry point uses.
    #[test]
    fn catalog_matches_the_wgsl() {
        for id in KernelId::ALL {
            let spec = id.spec();
            let info = inspect(spec.source(), spec.entry_point, ShaderFeatures::default())
                .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            assert_eq!(info.workgroup_size, spec.workgroup_size, "{}", spec.name);
            let used: Vec<_> = info.bindings.iter().map(|b| (b.group, b.binding, b.name.as_str(), b.access)).collect();
            let declared: Vec<_> = spec.bindings.iter().map(|b| (0, b.binding, b.name, b.access)).collect();
            assert_eq!(used, declared, "{}", spec.name);
        }
    }
}
