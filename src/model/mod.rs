//! Models: the TOML model language, its compiler, built-in models and host-callback models.
//!
//! A [`Model`] is immutable and cheap to clone (shared); sessions evaluate it through
//! [`ModelEval`], which owns the scratch registers so evaluation never allocates.

pub mod builtin;
pub mod compile;
pub mod expr;
pub mod host;
#[cfg(feature = "jit")]
pub mod jit;
pub mod mods;
mod names;
pub mod pos;
pub mod program;
mod reserved;
pub mod spec;
mod toml_pieces;

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
pub use compile::{CompiledModel, Target};
pub use host::HostModel;
pub use program::{Env, LagSlot, LagView};
pub use spec::{EventPhase, ModelKind, ModelSpec, SimDefaults};

/// Public description of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventInfo {
    pub name: String,
    pub phase: EventPhase,
    /// Names of the logged fields, in order.
    pub log: Vec<String>,
    pub tags: Vec<String>,
}

/// Which engine evaluates a model-language model. Both give bit-identical results, so the
/// choice is neither part of the spec hash nor of snapshot pins: a snapshot taken with one
/// resumes exactly with the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Native code when this build has it (feature `jit`, the default) and the host machine
    /// is supported; the interpreter otherwise.
    #[default]
    Auto,
    /// Native code, or an error when it is unavailable.
    Native,
    /// The program interpreter (no code generation at load).
    Interpreter,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Native => "native",
            Backend::Interpreter => "interpreter",
        }
    }
}

/// How the model's equations are evaluated.
pub enum ModelCode {
    /// Compiled from the model language.
    Compiled(Box<CompiledModel>),
    /// Supplied by the host program as callbacks.
    Host(Box<dyn HostModel>),
}

impl std::fmt::Debug for ModelCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelCode::Compiled(_) => f.write_str("Compiled"),
            ModelCode::Host(_) => f.write_str("Host"),
        }
    }
}

/// Everything a session needs to know about a model.
#[derive(Debug)]
pub struct ModelData {
    pub kind: ModelKind,
    pub name: String,
    pub state_names: Vec<String>,
    pub param_names: Vec<String>,
    pub aux_names: Vec<String>,
    pub state_init: Vec<f64>,
    pub param_init: Vec<f64>,
    pub sim: SimDefaults,
    pub events: Vec<EventInfo>,
    pub presets: Vec<spec::PresetSpec>,
    /// SHA-256 (hex) over the canonical serialisation of the model.
    pub spec_hash: String,
    pub has_jacobian: bool,
    /// Lag ring layout per state, and the total ring length.
    pub lag_layout: Vec<LagSlot>,
    pub lag_total: usize,
    pub code: ModelCode,
    /// The parsed model-language spec (None for host models).
    pub spec: Option<ModelSpec>,
    /// Native code of the programs in `code`, when the native backend is in use.
    #[cfg(feature = "jit")]
    pub native: Option<Arc<jit::NativeModel>>,
    /// Fused loops built for this model so far (see [`Model::fused_kernel`]).
    #[cfg(feature = "jit")]
    pub(crate) kernels: jit::KernelCache,
    /// Lock-step kernels built for this model so far (see [`Model::batch_kernel`]).
    #[cfg(feature = "jit")]
    pub(crate) batch_kernels: jit::BatchKernelCache,
}

/// A loaded model, shared between sessions.
#[derive(Debug, Clone)]
pub struct Model(pub(crate) Arc<ModelData>);

impl std::ops::Deref for Model {
    type Target = ModelData;
    fn deref(&self) -> &ModelData {
        &self.0
    }
}

/// Stack of the thread that parses and compiles a model. The parser and compiler recurse
/// once per nesting level, bounded by [`expr::parser::MAX_NESTING`] and
/// [`compile::MAX_INLINE_NESTING`]; running them on a thread of their own makes loading
/// independent of the caller's stack (a model that loads on the main thread loads on a
/// 256 KiB thread too). Only the pages used are ever touched.
pub const LOADER_STACK_BYTES: usize = 64 << 20;

/// Runs `f` on a thread with [`LOADER_STACK_BYTES`] of stack (on the calling thread when no
/// thread can be started), waiting for it.
pub(crate) fn on_loader_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let cell = std::sync::Mutex::new(Some(f));
    let take = || cell.lock().unwrap_or_else(|e| e.into_inner()).take();
    let ran = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("dynlib-model-loader".into())
            .stack_size(LOADER_STACK_BYTES)
            .spawn_scoped(scope, || take().map(|f| f()));
        match spawned {
            Ok(handle) => match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            },
            Err(_) => None,
        }
    });
    match ran {
        Some(v) => v,
        None => (take().expect("the loader closure runs once"))(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of the spec's canonical JSON, written straight into the hash: the same
/// digest as hashing the serialised bytes, without holding them (110 MB at 10^6 states).
fn spec_digest(spec: &ModelSpec) -> Result<String> {
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // Small writes are batched: the serialiser writes a few bytes at a time.
    let mut w = std::io::BufWriter::with_capacity(64 << 10, Hashing(Sha256::new()));
    serde_json::to_writer(&mut w, spec)
        .map_err(|e| Error::internal(format!("cannot serialise the model spec: {e}")))?;
    let hashing = w
        .into_inner()
        .map_err(|e| Error::internal(format!("cannot serialise the model spec: {e}")))?;
    Ok(hex(&hashing.0.finalize()))
}

impl Model {
    /// Loads a model from `builtin://ode/NAME`, `builtin://map/NAME`, `inline:` + TOML text,
    /// or a file path (`.toml` is appended when the path has no extension and does not exist).
    pub fn load(source: &str) -> Result<Model> {
        Model::load_with(source, Backend::Auto)
    }

    /// [`Model::load`] with an explicit evaluation backend.
    pub fn load_with(source: &str, backend: Backend) -> Result<Model> {
        Model::load_with_mods(source, &[], backend)
    }

    /// Loads a model variant: `source` as for [`Model::load`] (a file or `builtin://` source
    /// may end in `#mod=NAME`, selecting a mod of that file, applied first), then every mod
    /// of `mods` in order. A mod is the name of a `[mods.NAME]` (or the `[mod]`) of the
    /// model file, `inline:` followed by TOML with one `[mod]` or `[mods.NAME]`, or the path
    /// of a mod file (with `#mod=NAME` when it defines several).
    pub fn load_with_mods(source: &str, mods: &[&str], backend: Backend) -> Result<Model> {
        let (text, label, fragment) = read_source(source)?;
        let mut all: Vec<ModSpecArg> = Vec::new();
        if let Some(f) = fragment {
            all.push(ModSpecArg::InFile(f));
        }
        for m in mods {
            all.push(resolve_mod_arg(m)?);
        }
        let r = on_loader_stack(|| Model::from_text_mods(&text, &all, backend));
        match label {
            Some(l) => r.map_err(|e| e.context(l)),
            None => r,
        }
    }

    /// Every problem of a model source (file, `builtin://` or `inline:`), with positions; an
    /// empty list when it loads. Nothing is compiled to native code.
    pub fn validate(source: &str) -> Vec<crate::error::Diagnostic> {
        Model::validate_with_mods(source, &[])
    }

    /// [`Model::validate`] of a variant (see [`Model::load_with_mods`]).
    pub fn validate_with_mods(source: &str, mods: &[&str]) -> Vec<crate::error::Diagnostic> {
        match Model::load_with_mods(source, mods, Backend::Interpreter) {
            Ok(_) => Vec::new(),
            Err(e) => e.diagnostics(),
        }
    }

    fn from_text_mods(text: &str, mods: &[ModSpecArg], backend: Backend) -> Result<Model> {
        if mods.is_empty() {
            let spec = compile::checked(spec::parse_lenient(text, None)?)?;
            return Model::from_spec_here(spec, backend);
        }
        let mut doc = spec::parse_toml(text)?;
        let mut ix = pos::DocIndex::new(text);
        let mut defs = Vec::new();
        for m in mods {
            defs.push(match m {
                ModSpecArg::InFile(name) => mods::select(&doc, name, "the model file")?,
                ModSpecArg::Def(d) => d.clone(),
            });
        }
        let errs = mods::apply(&mut doc, &defs, &mut ix);
        let mut parsed = spec::parse_lenient(text, Some((doc, ix)))?;
        let mut diags: Vec<crate::error::Diagnostic> =
            errs.iter().flat_map(|e| e.diagnostics()).collect();
        if !diags.is_empty() {
            diags.append(&mut parsed.errors);
            parsed.errors = diags;
        }
        let mut spec = compile::checked(parsed)?;
        spec.mods = defs.iter().map(|d| d.name.clone()).collect();
        Model::from_spec_here(spec, backend)
    }

    /// Compiles a model from TOML text in the model language.
    pub fn from_toml(text: &str) -> Result<Model> {
        Model::from_toml_with(text, Backend::Auto)
    }

    /// [`Model::from_toml`] with an explicit evaluation backend.
    pub fn from_toml_with(text: &str, backend: Backend) -> Result<Model> {
        on_loader_stack(|| {
            let spec = compile::checked(spec::parse_lenient(text, None)?)?;
            Model::from_spec_here(spec, backend)
        })
    }

    /// Compiles a parsed spec.
    pub fn from_spec(spec: ModelSpec) -> Result<Model> {
        Model::from_spec_with(spec, Backend::Auto)
    }

    /// [`Model::from_spec`] with an explicit evaluation backend.
    pub fn from_spec_with(spec: ModelSpec, backend: Backend) -> Result<Model> {
        on_loader_stack(move || Model::from_spec_here(spec, backend))
    }

    fn from_spec_here(spec: ModelSpec, backend: Backend) -> Result<Model> {
        let compiled = compile::compile(&spec)?;
        let spec_hash = spec_digest(&spec)?;
        let (lag_layout, lag_total) = lag_layout(&compiled.lag_depth);
        #[cfg(feature = "jit")]
        let native = match backend {
            Backend::Interpreter => None,
            Backend::Native => Some(jit::cached(
                &spec_hash,
                &compiled,
                &lag_layout,
                spec.params.len(),
                lag_total,
            )?),
            // Native code is an optimisation with identical results: if it cannot be built
            // here, the interpreter serves.
            Backend::Auto => jit::cached(
                &spec_hash,
                &compiled,
                &lag_layout,
                spec.params.len(),
                lag_total,
            )
            .ok(),
        };
        #[cfg(not(feature = "jit"))]
        if backend == Backend::Native {
            return Err(Error::invalid(
                "this build of dynlib has no native backend (cargo feature `jit`); \
                 use Backend::Auto or Backend::Interpreter",
            ));
        }
        let events = spec
            .events
            .iter()
            .map(|e| EventInfo {
                name: e.name.clone(),
                phase: e.phase,
                log: e.log.clone(),
                tags: e.tags.clone(),
            })
            .collect();
        Ok(Model(Arc::new(ModelData {
            kind: spec.kind,
            name: spec.name.clone(),
            state_names: spec.states.iter().map(|(n, _)| n.clone()).collect(),
            param_names: spec.params.iter().map(|(n, _)| n.clone()).collect(),
            aux_names: spec.aux.iter().map(|(n, _)| n.clone()).collect(),
            state_init: spec.states.iter().map(|(_, v)| *v).collect(),
            param_init: spec.params.iter().map(|(_, v)| *v).collect(),
            sim: spec.sim.clone(),
            events,
            presets: spec.presets.clone(),
            spec_hash,
            has_jacobian: compiled.jacobian.is_some(),
            lag_layout,
            lag_total,
            code: ModelCode::Compiled(Box::new(compiled)),
            spec: Some(spec),
            #[cfg(feature = "jit")]
            native,
            #[cfg(feature = "jit")]
            kernels: Default::default(),
            #[cfg(feature = "jit")]
            batch_kernels: Default::default(),
        })))
    }

    /// Wraps a host-supplied model (callbacks). `id` and `version` feed the spec hash, so a
    /// snapshot of one host model is refused by another.
    pub fn from_host(def: host::HostModelDef, code: Box<dyn HostModel>) -> Result<Model> {
        def.validate()?;
        let spec_hash = sha256_hex(def.canonical_json().as_bytes());
        let n = def.state_names.len();
        let events = def
            .event_names
            .iter()
            .map(|name| EventInfo {
                name: name.clone(),
                phase: EventPhase::End,
                log: Vec::new(),
                tags: Vec::new(),
            })
            .collect();
        let sim = def.sim_defaults();
        Ok(Model(Arc::new(ModelData {
            kind: def.kind,
            name: def.id.clone(),
            state_names: def.state_names,
            param_names: def.param_names,
            aux_names: def.aux_names,
            state_init: def.state_init,
            param_init: def.param_init,
            sim,
            events,
            presets: Vec::new(),
            spec_hash,
            has_jacobian: code.has_jacobian(),
            lag_layout: vec![LagSlot::default(); n],
            lag_total: 0,
            code: ModelCode::Host(code),
            spec: None,
            #[cfg(feature = "jit")]
            native: None,
            #[cfg(feature = "jit")]
            kernels: Default::default(),
            #[cfg(feature = "jit")]
            batch_kernels: Default::default(),
        })))
    }

    /// The same model evaluated by another backend (host models are returned unchanged).
    pub fn with_backend(&self, backend: Backend) -> Result<Model> {
        match &self.spec {
            Some(spec) => Model::from_spec_with(spec.clone(), backend),
            None => Ok(self.clone()),
        }
    }

    /// The backend that evaluates this model: `Native` or `Interpreter` (host models report
    /// `Native`: their callbacks are machine code).
    pub fn backend(&self) -> Backend {
        match &self.code {
            ModelCode::Host(_) => Backend::Native,
            ModelCode::Compiled(_) if self.native_code_loaded() => Backend::Native,
            ModelCode::Compiled(_) => Backend::Interpreter,
        }
    }

    fn native_code_loaded(&self) -> bool {
        #[cfg(feature = "jit")]
        return self.native.is_some();
        #[cfg(not(feature = "jit"))]
        return false;
    }

    /// The fused native loop of `stepper` (whose step is `form`) for this model, recording
    /// `record` (`None`: a loop that records nothing); built on first use and kept with the
    /// model. `None` when the model has no native code or is too large for one.
    #[cfg(feature = "jit")]
    pub(crate) fn fused_kernel(
        &self,
        stepper: &'static str,
        form: crate::method::StepForm,
        record: Option<&[jit::kernel::RecSlot]>,
    ) -> Option<Arc<jit::kernel::FusedKernel>> {
        use jit::kernel::KernelModel;
        let code = match &self.code {
            ModelCode::Compiled(compiled) => {
                self.native.as_ref()?;
                KernelModel::Programs(compiled)
            }
            ModelCode::Host(host) => KernelModel::Host {
                c: host.c_functions()?,
                n_aux: self.n_aux(),
                n_events: self.events.len(),
            },
        };
        if !jit::kernel::eligible(&code, self.n_states()) {
            return None;
        }
        let mut kernels = self.kernels.lock().unwrap_or_else(|e| e.into_inner());
        let found = kernels
            .iter()
            .find(|((s, r), _)| *s == stepper && r.as_deref() == record);
        if let Some((_, kernel)) = found {
            return kernel.clone();
        }
        let phases: Vec<EventPhase> = self.events.iter().map(|e| e.phase).collect();
        let spec = jit::kernel::KernelSpec {
            form,
            phases: &phases,
            record,
        };
        // A kernel that cannot be built leaves the general engine in charge.
        let kernel = jit::compile_kernel(
            code,
            &self.lag_layout,
            self.n_params(),
            self.lag_total,
            &spec,
        )
        .ok()
        .map(Arc::new);
        kernels.push(((stepper, record.map(<[_]>::to_vec)), kernel.clone()));
        kernel
    }

    /// The lock-step kernel of `lanes` lanes for `stepper` (step form `form`), built on
    /// first use and kept with the model as its fused loops are; `None` when the model or
    /// the method has none.
    #[cfg(feature = "jit")]
    pub(crate) fn batch_kernel(
        &self,
        stepper: &'static str,
        form: crate::method::StepForm,
        lanes: usize,
    ) -> Option<Arc<jit::batch::BatchKernel>> {
        let ModelCode::Compiled(compiled) = &self.code else {
            return None;
        };
        self.native.as_ref()?;
        if !jit::batch::eligible(compiled, self.n_states(), form) {
            return None;
        }
        let mut kernels = self.batch_kernels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, kernel)) = kernels.iter().find(|(key, _)| *key == (stepper, lanes)) {
            return kernel.clone();
        }
        let kernel = jit::compile_batch(self, form, lanes).ok().map(Arc::new);
        kernels.push(((stepper, lanes), kernel.clone()));
        kernel
    }

    pub fn n_states(&self) -> usize {
        self.state_names.len()
    }
    pub fn n_params(&self) -> usize {
        self.param_names.len()
    }
    pub fn n_aux(&self) -> usize {
        self.aux_names.len()
    }
    pub fn state_index(&self, name: &str) -> Option<usize> {
        self.state_names.iter().position(|n| n == name)
    }
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.param_names.iter().position(|n| n == name)
    }
    pub fn aux_index(&self, name: &str) -> Option<usize> {
        self.aux_names.iter().position(|n| n == name)
    }
    pub fn uses_lag(&self) -> bool {
        self.lag_total > 0
    }
    pub fn has_stop(&self) -> bool {
        match &self.code {
            ModelCode::Compiled(c) => c.stop.is_some(),
            ModelCode::Host(_) => false,
        }
    }

    /// A JSON description of the model (names, defaults, events, hash).
    pub fn info_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "kind": self.kind.as_str(),
            "dtype": "float64",
            "spec_hash": self.spec_hash,
            "states": self.state_names,
            "state_defaults": self.state_init,
            "params": self.param_names,
            "param_defaults": self.param_init,
            "aux": self.aux_names,
            "events": self.events.iter().map(|e| serde_json::json!({
                "name": e.name,
                "phase": match e.phase { EventPhase::Start => "start", EventPhase::End => "end", EventPhase::Both => "both" },
                "log": e.log,
                "tags": e.tags,
            })).collect::<Vec<_>>(),
            "has_jacobian": self.has_jacobian,
            "backend": self.backend().as_str(),
            "uses_lag": self.uses_lag(),
            "presets": self.presets.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            "sim": {
                "t0": self.sim.t0,
                "t_end": self.sim.t_end,
                "dt": self.sim.dt,
                "stepper": self.sim.stepper,
                "record": self.sim.record,
                "max_steps": self.sim.max_steps,
            },
        })
    }
}

/// Largest model or mod file read, in bytes.
pub const MAX_MODEL_FILE_BYTES: u64 = 16 << 20;

/// A mod argument, resolved as far as it can be before the model is parsed.
#[derive(Debug, Clone)]
enum ModSpecArg {
    /// A mod of the model file, by name.
    InFile(String),
    /// A mod from another text.
    Def(mods::ModDef),
}

fn split_fragment(source: &str) -> (&str, Option<String>) {
    match source.rfind("#mod=") {
        Some(i) => (&source[..i], Some(source[i + 5..].to_string())),
        None => (source, None),
    }
}

/// (text, context for errors, `#mod=` fragment) of a model source.
fn read_source(source: &str) -> Result<(String, Option<String>, Option<String>)> {
    let trimmed = source.trim_start();
    if let Some(text) = trimmed.strip_prefix("inline:") {
        return Ok((text.to_string(), None, None));
    }
    let (source, fragment) = split_fragment(source);
    if let Some(id) = source.strip_prefix("builtin://") {
        let text = builtin::lookup(id)?;
        return Ok((text.to_string(), Some(format!("builtin://{id}")), fragment));
    }
    let mut path = Path::new(source).to_path_buf();
    if !path.exists() && path.extension().is_none() {
        path.set_extension("toml");
    }
    let text = read_model_file(&path)?;
    if let Some(first) = text.lines().next() {
        if let Some(rest) = first.strip_prefix("#!") {
            let pkg = rest.trim().split(':').next().unwrap_or("").trim();
            if !pkg.is_empty() && pkg != "dynlib" {
                return Err(Error::model(format!(
                    "'{}' is not a dynlib model: its first line names '{}'",
                    path.display(),
                    crate::error::shorten(pkg)
                )));
            }
        }
    }
    Ok((text, Some(path.display().to_string()), fragment))
}

/// Reads a model or mod file: a regular file of at most [`MAX_MODEL_FILE_BYTES`], UTF-8.
/// Devices, FIFOs and directories are refused before they are opened (so nothing blocks).
pub fn read_model_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("cannot read model file '{shown}': {e}")))?;
    let check = |meta: &std::fs::Metadata| -> Result<()> {
        if !meta.is_file() {
            let what = if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file (a device, FIFO or socket)"
            };
            return Err(Error::io(format!(
                "cannot read model file '{shown}': it is {what}"
            )));
        }
        if meta.len() > MAX_MODEL_FILE_BYTES {
            return Err(Error::io(format!(
                "cannot read model file '{shown}': it has {} bytes; the limit is {MAX_MODEL_FILE_BYTES}",
                meta.len()
            )));
        }
        Ok(())
    };
    check(&meta)?;
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot read model file '{shown}': {e}")))?;
    check(
        &file
            .metadata()
            .map_err(|e| Error::io(format!("cannot read model file '{shown}': {e}")))?,
    )?;
    let mut bytes = Vec::new();
    file.take(MAX_MODEL_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read model file '{shown}': {e}")))?;
    if bytes.len() as u64 > MAX_MODEL_FILE_BYTES {
        return Err(Error::io(format!(
            "cannot read model file '{shown}': it is larger than the limit of {MAX_MODEL_FILE_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes)
        .map_err(|e| Error::io(format!("model file '{shown}' is not UTF-8: {e}")))
}

fn resolve_mod_arg(arg: &str) -> Result<ModSpecArg> {
    let trimmed = arg.trim_start();
    if let Some(text) = trimmed.strip_prefix("inline:") {
        let doc = spec::parse_toml(text).map_err(|e| e.context("inline mod"))?;
        let mut def = mods::single(&doc, "the inline mod")?;
        def.path = None;
        return Ok(ModSpecArg::Def(def));
    }
    let (path, fragment) = split_fragment(arg);
    let looks_like_path =
        path.contains('/') || path.ends_with(".toml") || Path::new(path).is_file();
    if !looks_like_path {
        return Ok(ModSpecArg::InFile(arg.to_string()));
    }
    let text = read_model_file(Path::new(path))?;
    let doc = spec::parse_toml(&text).map_err(|e| e.context(path))?;
    let what = format!("mod file '{path}'");
    let mut def = match fragment {
        Some(name) => mods::select(&doc, &name, &what)?,
        None => mods::single(&doc, &what)?,
    };
    def.path = None;
    Ok(ModSpecArg::Def(def))
}

fn lag_layout(depth: &[usize]) -> (Vec<LagSlot>, usize) {
    let mut offset = 0;
    let layout = depth
        .iter()
        .map(|&d| {
            if d == 0 {
                LagSlot::default()
            } else {
                let slot = LagSlot { offset, len: d + 1 };
                offset += d + 1;
                slot
            }
        })
        .collect();
    (layout, offset)
}

/// A failure inside model code: a host callback returned a non-zero code.
pub(crate) fn callback_failed(what: &str, code: i32) -> Error {
    Error::new(
        crate::error::ErrorKind::StepFailed,
        format!("the host {what} callback returned {code}"),
    )
}

/// Evaluates one model with private scratch space; one per running session.
pub struct ModelEval<'m> {
    pub model: &'m ModelData,
    regs: Vec<f64>,
    /// Native code, used instead of the interpreter when present.
    #[cfg(feature = "jit")]
    native: Option<&'m jit::NativeModel>,
}

impl<'m> ModelEval<'m> {
    pub fn new(model: &'m ModelData) -> Self {
        Self::with_registers(model, Vec::new())
    }

    /// [`new`](Self::new) with its registers in `regs`' allocation (from
    /// [`into_registers`](Self::into_registers)), zeroed as new ones would be.
    pub fn with_registers(model: &'m ModelData, mut regs: Vec<f64>) -> Self {
        let n = match &model.code {
            ModelCode::Compiled(c) => c.max_regs(),
            ModelCode::Host(_) => 0,
        };
        regs.clear();
        regs.resize(n, 0.0);
        ModelEval {
            model,
            regs,
            #[cfg(feature = "jit")]
            native: model.native.as_deref(),
        }
    }

    /// The registers' allocation, for [`with_registers`](Self::with_registers).
    pub fn into_registers(self) -> Vec<f64> {
        self.regs
    }

    /// Right-hand side: derivatives (ODE) or next state (map).
    #[inline]
    pub fn rhs(&mut self, env: &Env<'_>, out: &mut [f64]) -> Result<()> {
        #[cfg(feature = "jit")]
        if let Some(native) = self.native {
            native.rhs(env, out);
            return Ok(());
        }
        match &self.model.code {
            ModelCode::Compiled(c) => {
                c.rhs.eval(env, &mut self.regs, out);
                Ok(())
            }
            ModelCode::Host(h) => h
                .rhs(env.t, env.y, env.p, out)
                .map_err(|c| callback_failed("right-hand side", c)),
        }
    }

    /// Dense Jacobian (row-major), if the model has one.
    pub fn jacobian(&mut self, env: &Env<'_>, out: &mut [f64]) -> Option<Result<()>> {
        #[cfg(feature = "jit")]
        if let Some(native) = self.native {
            return native.jacobian(env, out).then_some(Ok(()));
        }
        match &self.model.code {
            ModelCode::Compiled(c) => c.jacobian.as_ref().map(|j| {
                j.eval(env, &mut self.regs, out);
                Ok(())
            }),
            ModelCode::Host(h) => h
                .jacobian(env.t, env.y, env.p, out)
                .map(|r| r.map_err(|c| callback_failed("Jacobian", c))),
        }
    }

    pub fn aux(&mut self, env: &Env<'_>, out: &mut [f64]) -> Result<()> {
        #[cfg(feature = "jit")]
        if let Some(native) = self.native {
            native.aux(env, out);
            return Ok(());
        }
        match &self.model.code {
            ModelCode::Compiled(c) => {
                c.aux.eval(env, &mut self.regs, out);
                Ok(())
            }
            ModelCode::Host(h) => h
                .aux(env.t, env.y, env.p, out)
                .map_err(|c| callback_failed("aux", c)),
        }
    }

    pub fn event_fires(&mut self, i: usize, env: &Env<'_>) -> Result<bool> {
        #[cfg(feature = "jit")]
        if let Some(native) = self.native {
            return Ok(native.event_fires(i, env));
        }
        match &self.model.code {
            ModelCode::Compiled(c) => Ok(c.events[i].cond.eval_scalar(env, &mut self.regs) != 0.0),
            ModelCode::Host(h) => h
                .event_cond(i, env.t, env.y, env.p)
                .map_err(|c| callback_failed("event condition", c)),
        }
    }

    /// Runs event `i`'s action in place on `y` and `p`.
    pub fn event_apply(
        &mut self,
        i: usize,
        t: f64,
        y: &mut [f64],
        p: &mut [f64],
        lag: LagView<'_>,
    ) -> Result<()> {
        #[cfg(feature = "jit")]
        if let Some(native) = self.native {
            native.event_apply(i, t, y, p, lag);
            return Ok(());
        }
        match &self.model.code {
            ModelCode::Compiled(c) => {
                for (target, prog) in &c.events[i].actions {
                    let env = Env { t, y, p, lag };
                    let v = prog.eval_scalar(&env, &mut self.regs);
                    match *target {
                        Target::State(s) => y[s] = v,
                        Target::Param(k) => p[k] = v,
                    }
                }
                Ok(())
            }
            ModelCode::Host(h) => h
                .event_action(i, t, y, p)
                .map_err(|c| callback_failed("event action", c)),
        }
    }

    pub fn event_log(&mut self, i: usize, env: &Env<'_>, out: &mut [f64]) {
        #[cfg(feature = "jit")]
        if let Some(native) = self.native {
            native.event_log(i, env, out);
            return;
        }
        if let ModelCode::Compiled(c) = &self.model.code {
            c.events[i].log.eval(env, &mut self.regs, out);
        }
    }

    pub fn stop(&mut self, env: &Env<'_>) -> bool {
        #[cfg(feature = "jit")]
        if let Some(native) = self.native {
            return native.stop(env).unwrap_or(false);
        }
        match &self.model.code {
            ModelCode::Compiled(c) => c
                .stop
                .as_ref()
                .is_some_and(|s| s.eval_scalar(env, &mut self.regs) != 0.0),
            ModelCode::Host(_) => false,
        }
    }
}
