//! Ownership of generated code: the one place that frees a JIT module's memory.

use std::sync::Mutex;

use cranelift_jit::JITModule;

/// A JIT module's code memory, freed when this is dropped. Kept as a private field next to
/// the function pointers into it (`NativeModel`, `FusedKernel`, `BatchKernel`): dropping the
/// owner drops both, so no call can be running or happen later. The mutex makes the owner
/// `Sync` (a `JITModule` is `Send` but not `Sync`); it is only touched on drop.
pub(crate) struct CodeMemory(Mutex<Option<JITModule>>);

impl CodeMemory {
    pub(crate) fn new(module: JITModule) -> Self {
        CodeMemory(Mutex::new(Some(module)))
    }
}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        let module = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(module) = module {
            // SAFETY: the function pointers into this memory are private fields of the owner
            // being dropped (see the type's comment), so no call can run or happen later.
            unsafe { module.free_memory() };
        }
    }
}
