//! Opaque handles. C sees `DynlibModel *` and `DynlibSim *`, but a handle is not an address:
//! it is a number drawn from a process-wide counter (never reused) that keys a registry of
//! live objects. Validating a handle is a lookup in that registry, so a freed handle, a
//! handle of the wrong type or garbage is refused with `DYNLIB_ERR_BAD_HANDLE` without
//! reading any memory the handle might point at, and a stale handle can never name an object
//! created later.
//!
//! Each sim carries a busy flag (an atomic) taken for the whole of every call on it. A second
//! call while it is held — from inside one of the sim's own callbacks, or from another thread
//! at the same time — is refused with `DYNLIB_ERR_BUSY` instead of aliasing the sim's state;
//! `dynlib_sim_free` of a busy sim is refused the same way and the handle stays valid.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

use super::boundary::{panic_failure, Failure, FfiResult};
use super::status::*;
use crate::error::panic_message;
use crate::model::Model;
use crate::session::{Ensemble, Sim};

/// A loaded model (opaque). Free with `dynlib_model_free`. Sims keep their own reference, so
/// a model may be freed while sims created from it live on. Model handles may be used from
/// any number of threads at once.
pub struct DynlibModel {
    _private: [u8; 0],
}

/// A simulation session (opaque). Free with `dynlib_sim_free`. One call at a time per sim: a
/// call made while another call on the same sim is in progress (from another thread, or from
/// inside one of its callbacks) fails with `DYNLIB_ERR_BUSY` and changes nothing. Different
/// sims may run on different threads concurrently.
pub struct DynlibSim {
    _private: [u8; 0],
}

/// An ensemble of sims of one model (opaque). Free with `dynlib_ensemble_free`. Like a sim, it
/// takes one call at a time (`DYNLIB_ERR_BUSY` otherwise); different ensembles may be used on
/// different threads concurrently. A run spreads the members over its own thread pool.
pub struct DynlibEnsemble {
    _private: [u8; 0],
}

pub(crate) struct ModelBox {
    pub model: Model,
    /// The stepper chosen at load (`None` = the model's default).
    pub stepper: Option<String>,
}

struct SimBox<T = Sim> {
    sim: T,
    /// Set when a call on this sim panicked: its state can no longer be trusted.
    poisoned: Option<String>,
}

/// `SimEntry::state` values.
const IDLE: u8 = 0;
const BUSY: u8 = 1;
const FREED: u8 = 2;

struct SimEntry<T = Sim> {
    /// IDLE, BUSY (a call holds `inner`) or FREED (removed from the registry; no call may
    /// start any more).
    state: AtomicU8,
    /// While BUSY: a token of the thread holding it (see [`thread_token`]); 0 otherwise. Only
    /// used to word the busy message (re-entrant call or another thread).
    owner: AtomicUsize,
    inner: UnsafeCell<SimBox<T>>,
    /// "sim" or "ensemble", for messages.
    kind: &'static str,
}

// SAFETY: `inner` is only accessed by the one call that moved `state` from IDLE to BUSY (see
// `SimEntry::acquire`), or by the drop of the last `Arc` after the entry was FREED; so the
// sim is never shared between threads, only handed from one to another, which needs `Send`.
unsafe impl<T: Send> Sync for SimEntry<T> {}

const _: () = {
    const fn send<T: Send>() {}
    const fn send_sync<T: Send + Sync>() {}
    send::<Sim>();
    send::<Ensemble>();
    send_sync::<ModelBox>();
};

#[derive(Clone)]
enum Entry {
    Model(Arc<ModelBox>),
    Sim(Arc<SimEntry>),
    Ensemble(Arc<SimEntry<Ensemble>>),
}

/// Handle values are `FIRST + k * STRIDE` for k = 0, 1, 2, … in creation order: never NULL,
/// aligned like a pointer, away from small integers, and never issued twice.
const FIRST: usize = 0x10_0000;
const STRIDE: usize = 16;
const SHARDS: usize = 16;

/// Number of handles issued so far.
static ISSUED: AtomicUsize = AtomicUsize::new(0);

/// A multiplicative hash for handle values (distinct by construction; no DoS concern).
#[derive(Default)]
struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_usize(&mut self, v: usize) {
        self.0 = (v as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Shard = RwLock<HashMap<usize, Entry, BuildHasherDefault<HandleHasher>>>;

static REGISTRY: LazyLock<[Shard; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| RwLock::new(HashMap::default())));

fn shard(handle: usize) -> &'static Shard {
    &REGISTRY[(handle / STRIDE) % SHARDS]
}

fn register(entry: Entry) -> FfiResult<usize> {
    let k = ISSUED.fetch_add(1, Ordering::Relaxed);
    let handle = k
        .checked_mul(STRIDE)
        .and_then(|x| x.checked_add(FIRST))
        .ok_or_else(|| {
            ISSUED.fetch_sub(1, Ordering::Relaxed);
            Failure::new(
                DYNLIB_ERR_INTERNAL,
                "no handle values left: this process has created the maximum number of \
                 handles (values are never reused)",
            )
        })?;
    shard(handle)
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(handle, entry);
    Ok(handle)
}

/// The entry of a live handle; the error says why `ptr` is not one.
fn lookup(ptr: usize, what: &str, type_name: &str) -> FfiResult<Entry> {
    if ptr == 0 {
        return Err(Failure::null(what));
    }
    let found = shard(ptr)
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&ptr)
        .cloned();
    found.ok_or_else(|| {
        let issued = ISSUED.load(Ordering::Relaxed);
        let ours = ptr >= FIRST && (ptr - FIRST) % STRIDE == 0 && (ptr - FIRST) / STRIDE < issued;
        let why = if ours {
            "it was already freed"
        } else {
            "it is not a handle this library returned"
        };
        bad_handle(what, type_name, why)
    })
}

fn bad_handle(what: &str, type_name: &str, why: &str) -> Failure {
    Failure::new(
        DYNLIB_ERR_BAD_HANDLE,
        format!("argument '{what}' is not a live {type_name} handle: {why}"),
    )
}

pub(crate) fn new_model_handle(
    model: Model,
    stepper: Option<String>,
) -> FfiResult<*mut DynlibModel> {
    let handle = register(Entry::Model(Arc::new(ModelBox { model, stepper })))?;
    Ok(handle as *mut DynlibModel)
}

fn new_entry<T>(value: T, kind: &'static str) -> Arc<SimEntry<T>> {
    Arc::new(SimEntry {
        state: AtomicU8::new(IDLE),
        owner: AtomicUsize::new(0),
        inner: UnsafeCell::new(SimBox {
            sim: value,
            poisoned: None,
        }),
        kind,
    })
}

pub(crate) fn new_sim_handle(sim: Sim) -> FfiResult<*mut DynlibSim> {
    let handle = register(Entry::Sim(new_entry(sim, "sim")))?;
    Ok(handle as *mut DynlibSim)
}

pub(crate) fn new_ensemble_handle(ens: Ensemble) -> FfiResult<*mut DynlibEnsemble> {
    let handle = register(Entry::Ensemble(new_entry(ens, "ensemble")))?;
    Ok(handle as *mut DynlibEnsemble)
}

/// The model behind a handle. Reads no memory at `ptr`: any value is safe to pass.
pub(crate) fn model_ref(ptr: *const DynlibModel, what: &str) -> FfiResult<Arc<ModelBox>> {
    match lookup(ptr as usize, what, "DynlibModel")? {
        Entry::Model(m) => Ok(m),
        Entry::Sim(_) => Err(bad_handle(what, "DynlibModel", "it is a DynlibSim handle")),
        Entry::Ensemble(_) => Err(bad_handle(
            what,
            "DynlibModel",
            "it is a DynlibEnsemble handle",
        )),
    }
}

fn sim_entry(ptr: *mut DynlibSim, what: &str) -> FfiResult<Arc<SimEntry>> {
    match lookup(ptr as usize, what, "DynlibSim")? {
        Entry::Sim(s) => Ok(s),
        Entry::Model(_) => Err(bad_handle(what, "DynlibSim", "it is a DynlibModel handle")),
        Entry::Ensemble(_) => Err(bad_handle(
            what,
            "DynlibSim",
            "it is a DynlibEnsemble handle",
        )),
    }
}

fn ensemble_entry(ptr: *mut DynlibEnsemble, what: &str) -> FfiResult<Arc<SimEntry<Ensemble>>> {
    match lookup(ptr as usize, what, "DynlibEnsemble")? {
        Entry::Ensemble(e) => Ok(e),
        Entry::Model(_) => Err(bad_handle(
            what,
            "DynlibEnsemble",
            "it is a DynlibModel handle",
        )),
        Entry::Sim(_) => Err(bad_handle(
            what,
            "DynlibEnsemble",
            "it is a DynlibSim handle",
        )),
    }
}

/// A token unique to the calling thread among live threads (the address of a thread-local).
fn thread_token() -> usize {
    thread_local! {
        static TOKEN: u8 = const { 0 };
    }
    TOKEN.with(|t| t as *const u8 as usize)
}

fn busy_failure<T>(entry: &SimEntry<T>, call: &str) -> Failure {
    let kind = entry.kind;
    let reentrant = entry.owner.load(Ordering::Relaxed) == thread_token();
    let who = if reentrant {
        format!("from inside one of this {kind}'s own callbacks (re-entrant call)")
    } else {
        format!("from another thread (a {kind} takes one call at a time)")
    };
    Failure::new(
        DYNLIB_ERR_BUSY,
        format!(
            "{call} refused: the {kind} is busy, another call on it is in progress {who}; \
             nothing was changed and the handle stays valid"
        ),
    )
}

/// Holds a sim's busy flag; releases it on drop (also when unwinding).
struct Busy<'a, T>(&'a SimEntry<T>);

impl<T> Drop for Busy<'_, T> {
    fn drop(&mut self) {
        self.0.owner.store(0, Ordering::Relaxed);
        self.0.state.store(IDLE, Ordering::Release);
    }
}

impl<T> SimEntry<T> {
    fn acquire(&self) -> FfiResult<Busy<'_, T>> {
        match self
            .state
            .compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {
                self.owner.store(thread_token(), Ordering::Relaxed);
                Ok(Busy(self))
            }
            Err(BUSY) => Err(busy_failure(self, "the call")),
            Err(_) => Err(bad_handle(
                self.kind,
                if self.kind == "sim" {
                    "DynlibSim"
                } else {
                    "DynlibEnsemble"
                },
                "it was already freed",
            )),
        }
    }
}

/// Runs `f` on the sim behind `ptr`, holding its busy flag. A panic inside poisons the sim:
/// later calls on it fail with `DYNLIB_ERR_BAD_HANDLE` and say why, since its state may be
/// half-updated.
pub(crate) fn with_sim<R>(
    ptr: *mut DynlibSim,
    f: impl FnOnce(&mut Sim) -> FfiResult<R>,
) -> FfiResult<R> {
    with_entry(&*sim_entry(ptr, "sim")?, f)
}

/// Runs `f` on the ensemble behind `ptr`, holding its busy flag; as [`with_sim`].
pub(crate) fn with_ensemble<R>(
    ptr: *mut DynlibEnsemble,
    f: impl FnOnce(&mut Ensemble) -> FfiResult<R>,
) -> FfiResult<R> {
    with_entry(&*ensemble_entry(ptr, "ensemble")?, f)
}

fn with_entry<T, R>(entry: &SimEntry<T>, f: impl FnOnce(&mut T) -> FfiResult<R>) -> FfiResult<R> {
    let kind = entry.kind;
    let _busy = entry.acquire()?;
    // SAFETY: the busy flag gives this call exclusive access to `inner` until `_busy` drops.
    let b = unsafe { &mut *entry.inner.get() };
    if let Some(why) = &b.poisoned {
        return Err(Failure::new(
            DYNLIB_ERR_BAD_HANDLE,
            format!(
                "this {kind} refuses further use: an earlier call panicked ({why}); free it \
                 and create a new one"
            ),
        ));
    }
    match catch_unwind(AssertUnwindSafe(|| f(&mut b.sim))) {
        Ok(r) => r,
        Err(payload) => {
            b.poisoned = Some(panic_message(payload.as_ref()));
            Err(panic_failure(payload.as_ref()))
        }
    }
}

/// Removes a handle from the registry, then drops its object outside the lock.
fn unregister(handle: usize) {
    let removed = shard(handle)
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&handle);
    drop(removed);
}

/// Frees a model handle; NULL and handles that are not live models are ignored.
pub(crate) fn free_model(ptr: *mut DynlibModel) {
    if model_ref(ptr, "model").is_ok() {
        unregister(ptr as usize);
    }
}

/// Frees a sim handle; NULL and handles that are not live sims are ignored. A busy sim is not
/// freed: the error says so and the handle stays valid.
pub(crate) fn free_sim(ptr: *mut DynlibSim) -> FfiResult {
    let Ok(entry) = sim_entry(ptr, "sim") else {
        return Ok(());
    };
    free_entry(&entry, ptr as usize, "dynlib_sim_free")
}

/// Frees an ensemble handle, as [`free_sim`].
pub(crate) fn free_ensemble(ptr: *mut DynlibEnsemble) -> FfiResult {
    let Ok(entry) = ensemble_entry(ptr, "ensemble") else {
        return Ok(());
    };
    free_entry(&entry, ptr as usize, "dynlib_ensemble_free")
}

fn free_entry<T>(entry: &SimEntry<T>, handle: usize, call: &str) -> FfiResult {
    match entry
        .state
        .compare_exchange(IDLE, FREED, Ordering::Acquire, Ordering::Relaxed)
    {
        Ok(_) => {
            unregister(handle);
            Ok(())
        }
        Err(BUSY) => Err(busy_failure(entry, call)),
        Err(_) => Ok(()), // freed by another thread just now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_values_are_never_reused_and_freed_ones_are_named_so() {
        let model = Model::load("builtin://map/logistic").unwrap();
        let a = new_model_handle(model.clone(), None).unwrap();
        free_model(a);
        let b = new_model_handle(model, None).unwrap();
        assert_ne!(a, b);
        let e = model_ref(a, "model").err().unwrap();
        assert_eq!(e.status, DYNLIB_ERR_BAD_HANDLE);
        assert!(e.message.contains("already freed"), "{}", e.message);
        let e = model_ref(0x1234_5678 as *const DynlibModel, "model")
            .err()
            .unwrap();
        assert!(e.message.contains("not a handle this library returned"));
        assert!(model_ref(b, "model").is_ok());
        free_model(b);
    }
}
