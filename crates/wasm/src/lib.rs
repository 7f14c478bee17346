//! The inference engine of a browser tab (issue 13): `neurolov-models` compiled to WebAssembly, so a tab answers an
//! inference task, commits to and opens its run with the very code a native node runs — no second implementation
//! of the models or the proof format to drift apart. The page (`web/infer-worker.js`) stages a model's files (each
//! checked against the manifest's BLAKE3), loads it, and calls `answer`, `open` and `forget` as the coordinator's
//! frames arrive. Everything here is safe Rust in [`WebEngine`]; the `nl_*` exports are the thin C ABI around it.

#![allow(unsafe_code)] // The exports read and write this module's memory through raw pointers the page passes.

use std::cell::RefCell;
use std::sync::Arc;

use neurolov_models::device::BackendKind;
use neurolov_models::serve::{HeldProofs, Provider};
use neurolov_protocol::inference::{InferRequest, MAX_HELD_MODELS};

/// Most bytes of model files staged at once: the largest model a tab loads (the pinned ones are under 100 MiB; a
/// wasm32 memory is 4 GiB in all, and the weights are held twice while loading).
pub const MAX_STAGED_BYTES: usize = 1 << 30;
/// Longest request (JSON) the page may pass: the protocol's token limits are far below it.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// The engine's state: models loaded, files staged for the next one, runs held for their openings.
#[derive(Default)]
pub struct WebEngine {
    /// Files of the model being loaded, each named by its path in the model's directory, already checked.
    staged: Vec<(String, Vec<u8>)>,
    /// The models this tab serves, at most [`MAX_HELD_MODELS`].
    providers: Vec<Arc<Provider>>,
    /// Answered attempts waiting for the coordinator's challenge.
    held: HeldProofs,
}

impl WebEngine {
    /// Stages one file of the next model, refused unless its BLAKE3 is `blake3_hex` (the manifest's).
    pub fn stage(&mut self, path: String, bytes: Vec<u8>, blake3_hex: &str) -> Result<(), String> {
        let actual = blake3::hash(&bytes).to_hex();
        if actual.as_str() != blake3_hex.to_ascii_lowercase() {
            return Err(format!("{path}: blake3 {actual}, the manifest says {blake3_hex}"));
        }
        let staged: usize = self.staged.iter().map(|(_, b)| b.len()).sum();
        if staged.saturating_add(bytes.len()) > MAX_STAGED_BYTES {
            self.staged.clear();
            return Err(format!("a model of more than {MAX_STAGED_BYTES} bytes"));
        }
        self.staged.retain(|(p, _)| *p != path);
        self.staged.push((path, bytes));
        Ok(())
    }

    /// Loads the staged files as the model `name` (on the CPU: WebAssembly has no GPU path yet).
    pub fn load(&mut self, name: &str) -> Result<(), String> {
        let files = std::mem::take(&mut self.staged);
        let provider = Provider::from_files(name, &files, BackendKind::Cpu).map_err(|e| format!("{name}: {e}"))?;
        self.providers.retain(|p| p.name != name);
        if self.providers.len() >= MAX_HELD_MODELS {
            return Err(format!("this tab already serves {MAX_HELD_MODELS} models"));
        }
        // `HeldProofs` is the native node's (threads); here the one thread shares it, and wgpu's web types are !Send.
        #[allow(clippy::arc_with_non_send_sync)]
        self.providers.push(Arc::new(provider));
        Ok(())
    }

    /// Names of the models loaded.
    pub fn models(&self) -> Vec<String> {
        self.providers.iter().map(|p| p.name.clone()).collect()
    }

    /// Runs `request_json` (a task's `InferRequest`) on `model`: the result bytes to deliver. The run is held for
    /// its opening under (task, attempt).
    pub fn answer(&self, model: &str, key: (u64, u32), request_json: &[u8]) -> Result<Vec<u8>, String> {
        if request_json.len() > MAX_REQUEST_BYTES {
            return Err(format!("a request of more than {MAX_REQUEST_BYTES} bytes"));
        }
        let request: InferRequest = serde_json::from_slice(request_json).map_err(|e| format!("the request: {e}"))?;
        let provider = self
            .providers
            .iter()
            .find(|p| p.name == model)
            .cloned()
            .ok_or_else(|| format!("this tab does not serve {model}"))?;
        let (output, held) = provider.answer(&request).map_err(|e| e.to_string())?;
        self.held.keep(key, provider, held);
        Ok(output.to_bytes())
    }

    /// The opening of a held run at the challenge `seed` means; the run is then forgotten.
    pub fn open(&self, key: (u64, u32), seed: u64) -> Result<Vec<u8>, String> {
        let (provider, held) = self.held.get(key).ok_or("no record of this attempt")?;
        let opening = provider.open(&held, seed).map_err(|e| e.to_string())?;
        self.held.forget(key);
        Ok(opening)
    }

    /// The attempt is over (verdict, cancel): its record goes.
    pub fn forget(&self, key: (u64, u32)) {
        self.held.forget(key);
    }
}

/// The one engine of this module, and the bytes of the last call's answer (or its error's message).
#[derive(Default)]
struct Module {
    engine: WebEngine,
    out: Vec<u8>,
    /// The BLAKE3 of `out`, once asked for (`nl_out_blake3`).
    out_hash: [u8; 32],
}

thread_local! {
    // WebAssembly runs this module on one thread (a Web Worker); on the web the engine's wgpu types are not `Send`.
    static MODULE: RefCell<Module> = RefCell::new(Module::default());
}

/// Runs `f` on the module, keeping its answer (or error) for `nl_out_ptr`/`nl_out_len`: 0 on success, 1 on error.
fn call(f: impl FnOnce(&mut WebEngine) -> Result<Vec<u8>, String>) -> i32 {
    MODULE.with_borrow_mut(|module| {
        let (code, out) = match f(&mut module.engine) {
            Ok(out) => (0, out),
            Err(message) => (1, message.into_bytes()),
        };
        module.out = out;
        code
    })
}

/// Takes back a buffer the page filled after `nl_alloc`.
///
/// # Safety
/// `ptr` and `len` come from one `nl_alloc(len)` whose buffer was not taken back yet.
unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: the caller passes a boxed slice of exactly `len` bytes leaked by `nl_alloc`.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }.into_vec()
}

/// A text the page passed (taken back, as `take`).
///
/// # Safety
/// As [`take`].
unsafe fn take_text(ptr: *mut u8, len: usize) -> Result<String, String> {
    // SAFETY: forwarded to the caller.
    String::from_utf8(unsafe { take(ptr, len) }).map_err(|_| "a text that is not utf-8".to_string())
}

/// A zeroed buffer of `len` bytes for the page to fill and pass to one call, which takes it back.
#[unsafe(no_mangle)]
pub extern "C" fn nl_alloc(len: usize) -> *mut u8 {
    if len == 0 {
        return std::ptr::NonNull::dangling().as_ptr();
    }
    Box::into_raw(vec![0u8; len].into_boxed_slice()).cast()
}

/// Frees a buffer from `nl_alloc` that no call took.
///
/// # Safety
/// As [`take`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nl_free(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded to the caller.
    drop(unsafe { take(ptr, len) });
}

/// Where the last call's answer (or error message) is; valid until the next call.
#[unsafe(no_mangle)]
pub extern "C" fn nl_out_ptr() -> *const u8 {
    MODULE.with_borrow(|m| m.out.as_ptr())
}

/// The length of the last call's answer.
#[unsafe(no_mangle)]
pub extern "C" fn nl_out_len() -> usize {
    MODULE.with_borrow(|m| m.out.len())
}

/// The BLAKE3 of the last call's answer (32 bytes, valid until the next call): an opening is megabytes, and hashing
/// it here keeps the page's own thread — its heartbeats — free.
#[unsafe(no_mangle)]
pub extern "C" fn nl_out_blake3() -> *const u8 {
    MODULE.with_borrow_mut(|m| {
        m.out_hash = *blake3::hash(&m.out).as_bytes();
        m.out_hash.as_ptr()
    })
}

/// [`WebEngine::stage`]; every buffer comes from `nl_alloc` and is taken.
///
/// # Safety
/// Each (pointer, length) pair as [`take`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nl_stage(
    path_ptr: *mut u8,
    path_len: usize,
    data_ptr: *mut u8,
    data_len: usize,
    hash_ptr: *mut u8,
    hash_len: usize,
) -> i32 {
    // SAFETY: forwarded to the caller.
    let (path, data, hash) =
        unsafe { (take_text(path_ptr, path_len), take(data_ptr, data_len), take_text(hash_ptr, hash_len)) };
    call(|engine| engine.stage(path?, data, &hash?).map(|()| Vec::new()))
}

/// [`WebEngine::load`].
///
/// # Safety
/// As [`take`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nl_load(name_ptr: *mut u8, name_len: usize) -> i32 {
    // SAFETY: forwarded to the caller.
    let name = unsafe { take_text(name_ptr, name_len) };
    call(|engine| engine.load(&name?).map(|()| Vec::new()))
}

/// [`WebEngine::answer`]: the result bytes in the output.
///
/// # Safety
/// Each (pointer, length) pair as [`take`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nl_answer(
    model_ptr: *mut u8,
    model_len: usize,
    task_id: u64,
    attempt: u32,
    request_ptr: *mut u8,
    request_len: usize,
) -> i32 {
    // SAFETY: forwarded to the caller.
    let (model, request) = unsafe { (take_text(model_ptr, model_len), take(request_ptr, request_len)) };
    call(|engine| engine.answer(&model?, (task_id, attempt), &request))
}

/// [`WebEngine::open`]: the opening's bytes in the output.
#[unsafe(no_mangle)]
pub extern "C" fn nl_open(task_id: u64, attempt: u32, seed: u64) -> i32 {
    call(|engine| engine.open((task_id, attempt), seed))
}

/// [`WebEngine::forget`].
#[unsafe(no_mangle)]
pub extern "C" fn nl_forget(task_id: u64, attempt: u32) {
    call(|engine| {
        engine.forget((task_id, attempt));
        Ok(Vec::new())
    });
}

/// getrandom 0.3's custom backend on the web: the page's `crypto.getRandomValues`.
#[cfg(target_arch = "wasm32")]
mod entropy {
    #[link(wasm_import_module = "neurolov")]
    unsafe extern "C" {
        fn random_fill(ptr: *mut u8, len: usize);
    }

    /// # Safety
    /// `dest` is valid for `len` bytes (getrandom's contract).
    #[unsafe(no_mangle)]
    unsafe extern "Rust" fn __getrandom_v03_custom(dest: *mut u8, len: usize) -> Result<(), getrandom03::Error> {
        // SAFETY: the page fills exactly `len` bytes at `dest`, inside this module's memory.
        unsafe { random_fill(dest, len) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_the_manifests_is_refused_and_nothing_is_staged() {
        let mut engine = WebEngine::default();
        let bytes = b"weights".to_vec();
        let good = blake3::hash(&bytes).to_hex().to_string();
        let bad = blake3::hash(b"other").to_hex().to_string();
        let err = engine.stage("model.gguf".into(), bytes.clone(), &bad).unwrap_err();
        assert!(err.contains("the manifest says"), "{err}");
        assert!(engine.staged.is_empty());
        engine.stage("model.gguf".into(), bytes, &good.to_uppercase()).unwrap();
        assert_eq!(engine.staged.len(), 1);
        // Not a GGUF file: loading fails with the parser's error, and the staging area is emptied.
        let err = engine.load("tiny").unwrap_err();
        assert!(err.starts_with("tiny: "), "{err}");
        assert!(engine.staged.is_empty() && engine.models().is_empty());
    }

    #[test]
    fn requests_for_unknown_models_and_runs_are_typed_errors() {
        let engine = WebEngine::default();
        let request = br#"{"task":"embed","texts":[[101,102]]}"#;
        assert_eq!(engine.answer("nope", (1, 0), request).unwrap_err(), "this tab does not serve nope");
        assert!(engine.answer("nope", (1, 0), b"{not json").unwrap_err().starts_with("the request: "));
        assert_eq!(engine.open((1, 0), 7).unwrap_err(), "no record of this attempt");
    }

    #[test]
    fn the_abi_reports_errors_through_the_output() {
        let text = "nope";
        let ptr = nl_alloc(text.len());
        // SAFETY: `ptr` is a fresh buffer of `text.len()` bytes, taken by `nl_load`.
        let code = unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), ptr, text.len());
            nl_load(ptr, text.len())
        };
        assert_eq!(code, 1);
        // SAFETY: the output stays valid until the next call.
        let out = unsafe { std::slice::from_raw_parts(nl_out_ptr(), nl_out_len()) };
        assert!(String::from_utf8_lossy(out).starts_with("nope: "), "{}", String::from_utf8_lossy(out));
    }
}
