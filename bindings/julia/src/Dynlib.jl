"""
    Dynlib

Julia binding of dynlib, the dynamical-systems simulation engine with exact resume: a thin
layer of `ccall`s over the C ABI (`include/dynlib.h`). Written for Julia 1.9 and later; it uses
only `ccall`, `finalizer` and the `Libdl` standard library.

The shared library is `ENV["DYNLIB_LIBRARY"]` when set (read when the package is
precompiled or this file included), else `target/release/libdynlib.<dlext>` of the repository
this file lives in, else `libdynlib` from the system's library search path.

    ] dev bindings/julia            # once; then
    using Dynlib                    # (or: include("bindings/julia/src/Dynlib.jl"); using .Dynlib)
    sim = Sim(Model("builtin://ode/izhikevich"))
    run!(sim; T = 200.0, tag = "phase-1")
    snapshot!(sim, "phase-1"; description = "after 200 ms")
    run!(sim; T = 500.0, resume = true, tag = "phase-2")
    r = results(sim)            # r.t::Vector{Float64}, r.vars.v, r.events …

Every failing call throws a `DynlibError` with the status code, its name and the library's
message. Handles are freed by finalizers, or at once with `close(sim)` / `close(model)`.
"""
module Dynlib

using Libdl

export Model, validate_model, Sim, DynlibError, run!, snapshot!, reset!, assign!, apply_preset!, results, results_view, segments,
       name_segment!, name_last_segment!, list_snapshots, compat_check, can_resume, session_summary,
       export_snapshot, import_snapshot!, inspect_snapshot, serialize_snapshot,
       deserialize_snapshot!, latest_checkpoint, state, params, sim_time, step_count, value,
       state_names, param_names, aux_names, model_info, n_samples, list_presets, presets,
       add_preset!, remove_preset!, load_presets!, save_presets, config!, config,
       stepper_config!, stepper_config, list_stepper_config,
       Ensemble, n_members, n_failed, lockstep_lanes, set_lockstep_lanes!, last_run_lockstep_steps, set_params!, set_ic!, set_param_column!, set_column!,
       member_status, member_error, final_states, ensemble_params, member_times, event_counts,
       step_counts, member, export_checkpoint, import_checkpoint!

# bindings/julia/src/Dynlib.jl -> the repository root is three levels up.
const _default_lib = normpath(joinpath(@__DIR__, "..", "..", "..", "target", "release",
    (Sys.iswindows() ? "dynlib." : "libdynlib.") * Libdl.dlext))

"""Path (or name) of the shared library this module calls: `ENV["DYNLIB_LIBRARY"]`, else the
repository build, else `libdynlib` from the system's search path (an install prefix in
`LD_LIBRARY_PATH` or the ldconfig cache). Fixed when the package is precompiled: after changing
`DYNLIB_LIBRARY`, run `Base.compilecache(Base.identify_package("Dynlib"))` or restart with
`--compiled-modules=no`."""
const libdynlib = get(ENV, "DYNLIB_LIBRARY", isfile(_default_lib) ? _default_lib : "libdynlib")

# ------------------------------------------------------------------------------------------
# Status codes and errors
# ------------------------------------------------------------------------------------------

const DYNLIB_OK = Int32(0)
const DYNLIB_ERR_NULL_POINTER = Int32(1)
const DYNLIB_ERR_INVALID_ARGUMENT = Int32(2)
const DYNLIB_ERR_MODEL = Int32(3)
const DYNLIB_ERR_UNKNOWN_NAME = Int32(4)
const DYNLIB_ERR_DUPLICATE_NAME = Int32(5)
const DYNLIB_ERR_BUFFER_TOO_SMALL = Int32(6)
const DYNLIB_ERR_INCOMPATIBLE = Int32(7)
const DYNLIB_ERR_NO_RESULTS = Int32(8)
const DYNLIB_ERR_IO = Int32(9)
const DYNLIB_ERR_CORRUPT_SNAPSHOT = Int32(10)
const DYNLIB_ERR_STEP_FAILED = Int32(11)
const DYNLIB_ERR_NON_FINITE = Int32(12)
const DYNLIB_ERR_BAD_HANDLE = Int32(13)
const DYNLIB_ERR_INTERNAL = Int32(14)
const DYNLIB_ERR_BUSY = Int32(15)

"""
    DynlibError(status, name, message)

A failed dynlib call: `status` is the `DYNLIB_ERR_*` code, `name` its name
(`"DYNLIB_ERR_INCOMPATIBLE"`, …) and `message` the library's explanation.
"""
struct DynlibError <: Exception
    status::Int32
    name::String
    message::String
end

Base.showerror(io::IO, e::DynlibError) = print(io, "DynlibError(", e.name, "): ", e.message)

"The library version string."
version() = unsafe_string(ccall((:dynlib_version, libdynlib), Cstring, ()))

function _error(status::Int32)
    msg = unsafe_string(ccall((:dynlib_last_error, libdynlib), Cstring, ()))
    name = unsafe_string(ccall((:dynlib_status_name, libdynlib), Cstring, (Cint,), status))
    DynlibError(status, name, msg)
end

@inline function _check(status::Int32)
    status == DYNLIB_OK || throw(_error(status))
    nothing
end

# ------------------------------------------------------------------------------------------
# C structs (field names, order and types as in include/dynlib.h)
# ------------------------------------------------------------------------------------------

"Mirror of `DynlibRunOptions`; filled by `dynlib_run_options_init_sized` (\"unset\" everywhere)."
struct DynlibRunOptions
    struct_size::Csize_t
    T::Cdouble
    N::UInt64
    dt::Cdouble
    t0::Cdouble
    ic::Ptr{Cdouble}
    n_ic::Csize_t
    params::Ptr{Cdouble}
    n_params::Csize_t
    record::Int32
    record_interval::UInt64
    record_vars::Ptr{Ptr{UInt8}}
    n_record_vars::Csize_t
    transient::Cdouble
    resume::Bool
    tag::Ptr{UInt8}
    max_steps::UInt64
    config_names::Ptr{Ptr{UInt8}}
    config_values::Ptr{Cdouble}
    n_config::Csize_t
    checkpoint_dir::Ptr{UInt8}
    checkpoint_every_steps::UInt64
    checkpoint_every_time::Cdouble
    checkpoint_keep::UInt64
    progress::Ptr{Cvoid}
    progress_user_data::Ptr{Cvoid}
    progress_every_steps::UInt64
    progress_every_seconds::Cdouble
    observer::Ptr{Cvoid}
    observer_user_data::Ptr{Cvoid}
    observer_every_steps::UInt64
end

"Mirror of `DynlibSegmentInfo`."
struct DynlibSegmentInfo
    t_start::Cdouble
    t_end::Cdouble
    step_start::UInt64
    step_end::UInt64
    sample_start::UInt64
    sample_len::UInt64
    event_start::UInt64
    event_len::UInt64
    resume::Bool
end

# A copy of an immutable struct with some fields replaced.
function _with(x::T; kw...) where {T}
    T((haskey(kw, f) ? convert(fieldtype(T, f), kw[f]) : getfield(x, f) for f in fieldnames(T))...)
end

# ------------------------------------------------------------------------------------------
# The output-buffer protocol: ask the size (buf = NULL, cap = 0), allocate, fill; one retry
# when the size changed in between (DYNLIB_ERR_BUFFER_TOO_SMALL).
# ------------------------------------------------------------------------------------------

function _query(call::Function, ::Type{T}) where {T}
    needed = Ref{Csize_t}(0)
    _check(call(Ptr{T}(C_NULL), Csize_t(0), needed))
    for attempt in 1:2
        buf = Vector{T}(undef, needed[])
        st = GC.@preserve buf call(pointer(buf), Csize_t(length(buf)), needed)
        if st == DYNLIB_ERR_BUFFER_TOO_SMALL && attempt == 1
            continue
        end
        _check(st)
        return resize!(buf, needed[])
    end
    error("unreachable")
end

function _query_string(call::Function)
    bytes = _query(call, UInt8)
    String(bytes[1:end-1])   # needed counts the NUL
end

# ------------------------------------------------------------------------------------------
# A tiny JSON reader for the library's JSON outputs (objects, arrays, strings, numbers, bools,
# null), so the module needs no packages.
# ------------------------------------------------------------------------------------------

function _json(s::AbstractString)
    v, i = _jvalue(s, _jskip(s, firstindex(s)))
    v
end

function _jskip(s, i)
    while i <= ncodeunits(s) && s[i] in (' ', '\n', '\r', '\t')
        i = nextind(s, i)
    end
    i
end

function _jvalue(s, i)
    c = s[i]
    if c == '{'
        d = Dict{String,Any}()
        i = _jskip(s, i + 1)
        s[i] == '}' && return (d, i + 1)
        while true
            k, i = _jstring(s, i)
            i = _jskip(s, i)
            i = _jskip(s, i + 1)            # ':'
            v, i = _jvalue(s, i)
            d[k] = v
            i = _jskip(s, i)
            s[i] == '}' && return (d, i + 1)
            i = _jskip(s, i + 1)            # ','
        end
    elseif c == '['
        a = Any[]
        i = _jskip(s, i + 1)
        s[i] == ']' && return (a, i + 1)
        while true
            v, i = _jvalue(s, i)
            push!(a, v)
            i = _jskip(s, i)
            s[i] == ']' && return (a, i + 1)
            i = _jskip(s, i + 1)
        end
    elseif c == '"'
        return _jstring(s, i)
    elseif startswith(SubString(s, i), "true")
        return (true, i + 4)
    elseif startswith(SubString(s, i), "false")
        return (false, i + 5)
    elseif startswith(SubString(s, i), "null")
        return (nothing, i + 4)
    else
        j = i
        while j <= ncodeunits(s) && (s[j] in "+-.eE" || isdigit(s[j]))
            j += 1
        end
        t = s[i:j-1]
        n = occursin(r"[.eE]", t) ? parse(Float64, t) : parse(Int64, t)
        return (n, j)
    end
end

function _jstring(s, i)
    io = IOBuffer()
    i += 1
    while s[i] != '"'
        if s[i] == '\\'
            e = s[i+1]
            if e == 'u'
                write(io, Char(parse(UInt16, s[i+2:i+5]; base = 16)))
                i += 6
                continue
            end
            write(io, e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' :
                      e == 'b' ? '\b' : e == 'f' ? '\f' : e)   # '"', '\\', '/'
            i += 2
        else
            write(io, s[i])
            i = nextind(s, i)
        end
    end
    (String(take!(io)), i + 1)
end

# meta.json and list outputs write non-finite numbers as "inf", "-inf", "NaN".
_num(x::Number) = Float64(x)
_num(x::AbstractString) = parse(Float64, x)

# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------

"""
    Model(source; stepper = nothing, mods = String[])

Loads a model: `builtin://ode/<name>`, `builtin://map/<name>`, a path to a TOML model file,
or `"inline:" * toml_text`. `stepper` names the stepper of sims created from it. `mods` lists
variants applied in order: names of `[mods.NAME]` tables of the model file, `"inline:"` TOML
with one `[mod]`, or mod file paths (`path#mod=NAME`). Freed by a finalizer or
`close(model)`; sims keep their own reference.
"""
mutable struct Model
    handle::Ptr{Cvoid}
    state_names::Vector{String}
    param_names::Vector{String}
    aux_names::Vector{String}
    function Model(source::AbstractString; stepper::Union{Nothing,AbstractString} = nothing,
                   mods::AbstractVector = String[])
        out = Ref{Ptr{Cvoid}}(C_NULL)
        if isempty(mods)
            st = ccall((:dynlib_model_load, libdynlib), Cint,
                       (Cstring, Cstring, Ref{Ptr{Cvoid}}),
                       source, stepper === nothing ? C_NULL : stepper, out)
        else
            ms = String[String(x) for x in mods]
            mp = [pointer(x) for x in ms]
            st = GC.@preserve ms mp ccall((:dynlib_model_load_mods, libdynlib), Cint,
                       (Cstring, Ptr{Ptr{UInt8}}, Csize_t, Cstring, Ref{Ptr{Cvoid}}),
                       source, pointer(mp), length(mp),
                       stepper === nothing ? C_NULL : stepper, out)
        end
        _check(st)
        m = new(out[], String[], String[], String[])
        finalizer(close, m)
        m.state_names = _names(m, :state)
        m.param_names = _names(m, :param)
        m.aux_names = _names(m, :aux)
        m
    end
end

function Base.close(m::Model)
    if m.handle != C_NULL
        h, m.handle = m.handle, C_NULL
        ccall((:dynlib_model_free, libdynlib), Cvoid, (Ptr{Cvoid},), h)
    end
    nothing
end

function _mptr(m::Model)
    m.handle == C_NULL && throw(DynlibError(DYNLIB_ERR_BAD_HANDLE, "DYNLIB_ERR_BAD_HANDLE",
                                            "the model is closed"))
    m.handle
end

function _names(m::Model, kind::Symbol)
    h = _mptr(m)
    n = Ref{Csize_t}(0)
    if kind === :state
        _check(ccall((:dynlib_model_n_states, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}), h, n))
        return [_query_string((b, c, nd) -> ccall((:dynlib_model_state_name, libdynlib), Cint,
                    (Ptr{Cvoid}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, i, b, c, nd))
                for i in 0:n[]-1]
    elseif kind === :param
        _check(ccall((:dynlib_model_n_params, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}), h, n))
        return [_query_string((b, c, nd) -> ccall((:dynlib_model_param_name, libdynlib), Cint,
                    (Ptr{Cvoid}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, i, b, c, nd))
                for i in 0:n[]-1]
    else
        _check(ccall((:dynlib_model_n_aux, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}), h, n))
        return [_query_string((b, c, nd) -> ccall((:dynlib_model_aux_name, libdynlib), Cint,
                    (Ptr{Cvoid}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, i, b, c, nd))
                for i in 0:n[]-1]
    end
end

state_names(m::Model) = m.state_names
param_names(m::Model) = m.param_names
aux_names(m::Model) = m.aux_names

"""
    validate_model(source)

Every problem of a model source without loading it, as a Dict with `valid` and `errors`
(each with `message`, `location`, `line`, `column`).
"""
validate_model(source::AbstractString) = _json(_query_string((b, c, nd) ->
    ccall((:dynlib_model_validate, libdynlib), Cint,
          (Cstring, Ptr{UInt8}, Csize_t, Ref{Csize_t}), source, b, c, nd)))

"The model description (kind, name, states, params, aux, events, sim defaults, …) as a Dict."
model_info(m::Model) = _json(_query_string((b, c, nd) -> ccall((:dynlib_model_info_json, libdynlib),
    Cint, (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), _mptr(m), b, c, nd)))

# ------------------------------------------------------------------------------------------
# Sims
# ------------------------------------------------------------------------------------------

"""
    Sim(model::Model)
    Sim(source::AbstractString; stepper = nothing)

A simulation session. Freed by a finalizer or `close(sim)`.
"""
mutable struct Sim
    handle::Ptr{Cvoid}
    model::Model
    function Sim(model::Model)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        _check(ccall((:dynlib_sim_new, libdynlib), Cint, (Ptr{Cvoid}, Ref{Ptr{Cvoid}}),
                     _mptr(model), out))
        s = new(out[], model)
        finalizer(close, s)
        s
    end
end

Sim(source::AbstractString; stepper::Union{Nothing,AbstractString} = nothing) =
    Sim(Model(source; stepper = stepper))

function Base.close(s::Sim)
    if s.handle != C_NULL
        h, s.handle = s.handle, C_NULL
        ccall((:dynlib_sim_free, libdynlib), Cvoid, (Ptr{Cvoid},), h)
    end
    nothing
end

function _sptr(s::Sim)
    s.handle == C_NULL && throw(DynlibError(DYNLIB_ERR_BAD_HANDLE, "DYNLIB_ERR_BAD_HANDLE",
                                            "the sim is closed"))
    s.handle
end

_f64(x) = x === nothing ? NaN : Float64(x)
_u64(x) = x === nothing ? UInt64(0) : UInt64(x)

function _vector(values, names::Vector{String}, current::Vector{Float64})
    values isa AbstractDict || values isa NamedTuple || return Vector{Float64}(values)
    out = copy(current)
    for (k, v) in pairs(values)
        i = findfirst(==(String(k)), names)
        i === nothing && throw(DynlibError(DYNLIB_ERR_UNKNOWN_NAME, "DYNLIB_ERR_UNKNOWN_NAME",
                                           "unknown name '$(k)'; known: $(join(names, ", "))"))
        out[i] = Float64(v)
    end
    out
end

"""
    run!(sim; T, N, dt, t0, ic, params, record, record_interval, record_vars, transient,
         resume = false, tag, max_steps, config = (;), checkpoint_dir, checkpoint_every_steps,
         checkpoint_every_time, checkpoint_keep) -> sim

Runs the simulation; omitted options take the model's defaults. `T` is the end time (for
resumed runs the absolute recorded time). `ic`/`params` are full vectors, or dicts / named
tuples of the values to change. `resume = true` appends a segment to the recording (and refuses
`ic`, `params`, `t0`, `dt`, `transient`, `record_vars`). `config` sets stepper knobs, e.g.
`config = (atol = 1e-9, rtol = 1e-9)`.
"""
function run!(s::Sim; T = nothing, N = nothing, dt = nothing, t0 = nothing, ic = nothing,
              params = nothing, record::Union{Nothing,Bool} = nothing, record_interval = nothing,
              record_vars = nothing, transient = nothing, resume::Bool = false, tag = nothing,
              max_steps = nothing, config = (;), checkpoint_dir = nothing,
              checkpoint_every_steps = nothing, checkpoint_every_time = nothing,
              checkpoint_keep = nothing)
    h = _sptr(s)
    ref = Ref{DynlibRunOptions}()
    _check(ccall((:dynlib_run_options_init_sized, libdynlib), Cint,
                 (Ref{DynlibRunOptions}, Csize_t), ref, sizeof(DynlibRunOptions)))
    icv = ic === nothing ? Float64[] : _vector(ic, s.model.state_names, state(s))
    pv = params === nothing ? Float64[] : _vector(params, s.model.param_names, Dynlib.params(s))
    vecptr(v) = isempty(v) ? C_NULL : pointer(v)
    rv = record_vars === nothing ? String[] :
         record_vars isa AbstractString ? [String(record_vars)] : String.(collect(record_vars))
    rvp = [pointer(x) for x in rv]
    # record_vars = [] records t and step only: a non-NULL pointer with n_record_vars = 0.
    novar = Ptr{UInt8}[C_NULL]
    rvptr = record_vars !== nothing && isempty(rvp) ? pointer(novar) : vecptr(rvp)
    cn = [String(k) for k in keys(config)]
    cnp = [pointer(x) for x in cn]
    cv = Float64[Float64(v) for v in values(config)]
    tagb = tag === nothing ? nothing : String(tag)
    dirb = checkpoint_dir === nothing ? nothing : String(checkpoint_dir)
    strptr(x) = x === nothing ? Ptr{UInt8}(C_NULL) :
                pointer(x)
    st = GC.@preserve icv pv rv rvp novar cn cnp cv tagb dirb begin
        o = _with(ref[];
            T = _f64(T), N = _u64(N), dt = _f64(dt), t0 = _f64(t0),
            ic = Ptr{Cdouble}(vecptr(icv)), n_ic = length(icv),
            params = Ptr{Cdouble}(vecptr(pv)), n_params = length(pv),
            record = record === nothing ? Int32(-1) : Int32(record),
            record_interval = _u64(record_interval),
            record_vars = Ptr{Ptr{UInt8}}(rvptr), n_record_vars = length(rvp),
            transient = _f64(transient), resume = resume, tag = strptr(tagb),
            max_steps = _u64(max_steps),
            config_names = Ptr{Ptr{UInt8}}(vecptr(cnp)), config_values = Ptr{Cdouble}(vecptr(cv)),
            n_config = length(cv),
            checkpoint_dir = strptr(dirb),
            checkpoint_every_steps = _u64(checkpoint_every_steps),
            checkpoint_every_time = _f64(checkpoint_every_time),
            checkpoint_keep = _u64(checkpoint_keep))
        ccall((:dynlib_sim_run, libdynlib), Cint, (Ptr{Cvoid}, Ref{DynlibRunOptions}), h, o)
    end
    _check(st)
    s
end

"Saves the current state as snapshot `name`."
function snapshot!(s::Sim, name::AbstractString; description::AbstractString = "")
    _check(ccall((:dynlib_sim_create_snapshot, libdynlib), Cint, (Ptr{Cvoid}, Cstring, Cstring),
                 _sptr(s), name, description))
    s
end

"Restores snapshot `name` (default \"initial\"), clearing results and segments."
function reset!(s::Sim, name::AbstractString = "initial")
    _check(ccall((:dynlib_sim_reset, libdynlib), Cint, (Ptr{Cvoid}, Cstring), _sptr(s), name))
    s
end

"""
    assign!(sim; clear_history = false, name = value, ...)
    assign!(sim, Dict("name" => value, ...); clear_history = false)

Sets states or parameters by name (all names checked first; nothing changes on error).
"""
function assign!(s::Sim, values::AbstractDict = Dict{String,Float64}();
                 clear_history::Bool = false, kw...)
    names = String[String(k) for k in keys(values)]
    vals = Float64[Float64(v) for v in Base.values(values)]
    for (k, v) in kw
        push!(names, String(k)); push!(vals, Float64(v))
    end
    ptrs = [pointer(x) for x in names]
    st = GC.@preserve names ptrs vals ccall((:dynlib_sim_assign, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Ptr{UInt8}}, Ptr{Cdouble}, Csize_t, Bool),
        _sptr(s), isempty(ptrs) ? C_NULL : pointer(ptrs), isempty(vals) ? C_NULL : pointer(vals),
        length(vals), clear_history)
    _check(st)
    s
end

"Applies the model's preset `name` (its parameters, then its states) like `assign!`."
function apply_preset!(s::Sim, name::AbstractString)
    _check(ccall((:dynlib_sim_apply_preset, libdynlib), Cint, (Ptr{Cvoid}, Cstring),
                 _sptr(s), name))
    s
end

# ------------------------------------------------------------------------------------------
# Preset bank, preset files, persistent config, stepper config
# ------------------------------------------------------------------------------------------

"Names of the bank's presets matching a glob (`*`, `?`, `[...]`), model presets first."
list_presets(s::Sim, pattern::AbstractString = "*") = [p["name"] for p in presets(s, pattern)]

"The presets matching a glob as Dicts `name`, `params`, `states`."
function presets(s::Sim, pattern::AbstractString = "*")
    h = _sptr(s)
    _json(_query_string((b, c, nd) -> ccall((:dynlib_sim_list_presets_json, libdynlib), Cint,
        (Ptr{Cvoid}, Cstring, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, pattern, b, c, nd)))
end

"""
    add_preset!(sim, name; overwrite = false, name = value, ...)

Adds a preset from the given states/parameters, or (none given) from the current session.
"""
function add_preset!(s::Sim, name::AbstractString, values::AbstractDict = Dict{String,Float64}();
                     overwrite::Bool = false, kw...)
    names = String[String(k) for k in keys(values)]
    vals = Float64[Float64(v) for v in Base.values(values)]
    for (k, v) in kw
        push!(names, String(k)); push!(vals, Float64(v))
    end
    ptrs = [pointer(x) for x in names]
    st = GC.@preserve names ptrs vals ccall((:dynlib_sim_add_preset, libdynlib), Cint,
        (Ptr{Cvoid}, Cstring, Ptr{Ptr{UInt8}}, Ptr{Cdouble}, Csize_t, Bool),
        _sptr(s), name, isempty(ptrs) ? C_NULL : pointer(ptrs),
        isempty(vals) ? C_NULL : pointer(vals), length(vals), overwrite)
    _check(st)
    s
end

"Removes preset `name` from the bank."
function remove_preset!(s::Sim, name::AbstractString)
    _check(ccall((:dynlib_sim_remove_preset, libdynlib), Cint, (Ptr{Cvoid}, Cstring),
                 _sptr(s), name))
    s
end

"Loads presets from a preset file; `on_conflict` = \"error\", \"keep\" or \"replace\". Returns the count."
function load_presets!(s::Sim, path::AbstractString, pattern::AbstractString = "*";
                       on_conflict::AbstractString = "error")
    n = Ref{Csize_t}(0)
    _check(ccall((:dynlib_sim_load_presets, libdynlib), Cint,
        (Ptr{Cvoid}, Cstring, Cstring, Cstring, Ref{Csize_t}), _sptr(s), path, pattern,
        on_conflict, n))
    Int(n[])
end

"Saves presets to a file (atomic); `mode` = \"append\", \"replace\" or \"overwrite\". Returns the count."
function save_presets(s::Sim, path::AbstractString, pattern::AbstractString = "*";
                      mode::AbstractString = "append")
    n = Ref{Csize_t}(0)
    _check(ccall((:dynlib_sim_save_presets, libdynlib), Cint,
        (Ptr{Cvoid}, Cstring, Cstring, Cstring, Ref{Csize_t}), _sptr(s), path, pattern, mode, n))
    Int(n[])
end

_jsonval(v::Nothing) = "null"
_jsonval(v::Bool) = v ? "true" : "false"
_jsonval(v::Integer) = string(v)
_jsonval(v::Real) = isfinite(v) ? repr(Float64(v)) : error("config values must be finite")

"""
    config!(sim; dt, max_steps, record, record_interval, knob = value, ...)

Persistent defaults for later runs (`nothing` = back to the default); other keywords are
stepper knobs. Returns the effective defaults as a Dict.
"""
function config!(s::Sim; kw...)
    if !isempty(kw)
        body = "{" * join(["\"$(k)\":" * _jsonval(v) for (k, v) in kw], ",") * "}"
        _check(ccall((:dynlib_sim_config_set_json, libdynlib), Cint, (Ptr{Cvoid}, Cstring),
                     _sptr(s), body))
    end
    config(s)
end

"The effective run defaults as a Dict (`dt`, `max_steps`, `record`, `record_interval` as `{value, set}`, `stepper_config`)."
function config(s::Sim)
    h = _sptr(s)
    _json(_query_string((b, c, nd) -> ccall((:dynlib_sim_config_json, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, b, c, nd)))
end

"Sets stepper knobs persistently (`nothing` restores a default); returns the config vector."
function stepper_config!(s::Sim; kw...)
    names = String[String(k) for (k, _) in kw]
    vals = Float64[v === nothing ? NaN : Float64(v) for (_, v) in kw]
    ptrs = [pointer(x) for x in names]
    st = GC.@preserve names ptrs vals ccall((:dynlib_sim_stepper_config_set, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Ptr{UInt8}}, Ptr{Cdouble}, Csize_t), _sptr(s),
        isempty(ptrs) ? C_NULL : pointer(ptrs), isempty(vals) ? C_NULL : pointer(vals),
        length(vals))
    _check(st)
    stepper_config(s)
end

"The session's stepper config values (knob order)."
function stepper_config(s::Sim)
    h = _sptr(s)
    _query((b, c, nd) -> ccall((:dynlib_sim_stepper_config, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Ref{Csize_t}), h, b, c, nd), Cdouble)
end

"The stepper's knobs as Dicts `name`, `value`, `default`, `help`."
function list_stepper_config(s::Sim)
    h = _sptr(s)
    _json(_query_string((b, c, nd) -> ccall((:dynlib_sim_stepper_config_json, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, b, c, nd)))
end

"The snapshots as a vector of named tuples `(name, t, step, created_at, description)`."
function list_snapshots(s::Sim)
    h = _sptr(s)
    js = _json(_query_string((b, c, nd) -> ccall((:dynlib_sim_list_snapshots_json, libdynlib),
        Cint, (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, b, c, nd)))
    [(name = d["name"], t = _num(d["t"]), step = UInt64(d["step"]),
      created_at = d["created_at"], description = d["description"]) for d in js]
end

"`(ok, differences)`: whether snapshot `name` fits this session."
function compat_check(s::Sim, name::AbstractString)
    h = _sptr(s)
    ok = Ref{Bool}(false)
    text = _query_string((b, c, nd) -> ccall((:dynlib_sim_compat_check, libdynlib), Cint,
        (Ptr{Cvoid}, Cstring, Ref{Bool}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, name, ok, b, c, nd))
    (ok[], text)
end

"`(ok, reason)`: whether `run!(sim; resume = true)` can continue (`reason` is \"\" if so)."
function can_resume(s::Sim)
    h = _sptr(s)
    ok = Ref{Bool}(false)
    text = _query_string((b, c, nd) -> ccall((:dynlib_sim_can_resume, libdynlib), Cint,
        (Ptr{Cvoid}, Ref{Bool}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, ok, b, c, nd))
    (ok[], text)
end

"The session summary as a Dict."
function session_summary(s::Sim)
    h = _sptr(s)
    _json(_query_string((b, c, nd) -> ccall((:dynlib_sim_summary_json, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, b, c, nd)))
end

"Current absolute time."
function sim_time(s::Sim)
    t = Ref{Cdouble}(0.0)
    _check(ccall((:dynlib_sim_time, libdynlib), Cint, (Ptr{Cvoid}, Ref{Cdouble}), _sptr(s), t))
    t[]
end

"Committed steps since the last fresh run."
function step_count(s::Sim)
    k = Ref{UInt64}(0)
    _check(ccall((:dynlib_sim_step_count, libdynlib), Cint, (Ptr{Cvoid}, Ref{UInt64}),
                 _sptr(s), k))
    k[]
end

"Current state vector."
function state(s::Sim)
    h = _sptr(s)
    _query((b, c, nd) -> ccall((:dynlib_sim_state, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Ref{Csize_t}), h, b, c, nd), Cdouble)
end

"Current parameter vector."
function params(s::Sim)
    h = _sptr(s)
    _query((b, c, nd) -> ccall((:dynlib_sim_params, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Ref{Csize_t}), h, b, c, nd), Cdouble)
end

"Current value of one state or parameter."
function value(s::Sim, name::AbstractString)
    v = Ref{Cdouble}(0.0)
    _check(ccall((:dynlib_sim_value, libdynlib), Cint, (Ptr{Cvoid}, Cstring, Ref{Cdouble}),
                 _sptr(s), name, v))
    v[]
end

# ------------------------------------------------------------------------------------------
# Results and segments
# ------------------------------------------------------------------------------------------

"""
    results(sim) -> (t, step, interpolated, vars, events, segments)

The current recording as a named tuple: `t::Vector{Float64}`, `step::Vector{UInt64}`,
`interpolated::Vector{Bool}`, `vars` a named tuple of `Vector{Float64}` per recorded variable
(`r.vars.v`), `events` a vector of named tuples and `segments` as from `segments(sim)`.
"""
function results(s::Sim)
    h = _sptr(s)
    t = _query((b, c, nd) -> ccall((:dynlib_sim_results_t, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Ref{Csize_t}), h, b, c, nd), Cdouble)
    step = _query((b, c, nd) -> ccall((:dynlib_sim_results_step, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{UInt64}, Csize_t, Ref{Csize_t}), h, b, c, nd), UInt64)
    interp = _query((b, c, nd) -> ccall((:dynlib_sim_results_interpolated, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, b, c, nd), UInt8)
    nv = Ref{Csize_t}(0)
    _check(ccall((:dynlib_sim_results_n_vars, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}), h, nv))
    names = [_query_string((b, c, nd) -> ccall((:dynlib_sim_results_var_name, libdynlib), Cint,
                 (Ptr{Cvoid}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, i, b, c, nd))
             for i in 0:nv[]-1]
    cols = [_query((b, c, nd) -> ccall((:dynlib_sim_results_var, libdynlib), Cint,
                (Ptr{Cvoid}, Cstring, Ptr{Cdouble}, Csize_t, Ref{Csize_t}), h, n, b, c, nd), Cdouble)
            for n in names]
    evs = _json(_query_string((b, c, nd) -> ccall((:dynlib_sim_events_json, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, b, c, nd)))
    events = [(event = e["event"], t = _num(e["t"]), step = UInt64(e["step"]),
               sample = UInt64(e["sample"]),
               values = Dict{String,Float64}(k => _num(v) for (k, v) in e["values"]))
              for e in evs]
    vars = NamedTuple{Tuple(Symbol.(names))}(Tuple(cols))
    (t = t, step = step, interpolated = Vector{Bool}(interp .!= 0), vars = vars, events = events,
     segments = segments(s))
end

"""
    results_view(sim) -> sample times;  results_view(sim, name) -> one recorded variable

Zero-copy: a `Vector{Float64}` wrapping the library's own array (`unsafe_wrap`, not owned by
Julia). It is valid only until the next `run!`, `reset!`, `assign!`, `apply_preset!`, import
or the sim's finalization; `copy` it to keep it longer. `results` copies.
"""
function results_view(s::Sim, name::Union{Nothing,AbstractString} = nothing)
    data = Ref{Ptr{Cdouble}}(C_NULL)
    n = Ref{Csize_t}(0)
    if name === nothing
        _check(ccall((:dynlib_sim_results_t_view, libdynlib), Cint,
                     (Ptr{Cvoid}, Ref{Ptr{Cdouble}}, Ref{Csize_t}), _sptr(s), data, n))
    else
        _check(ccall((:dynlib_sim_results_var_view, libdynlib), Cint,
                     (Ptr{Cvoid}, Cstring, Ref{Ptr{Cdouble}}, Ref{Csize_t}),
                     _sptr(s), name, data, n))
    end
    n[] == 0 ? Float64[] : unsafe_wrap(Array, data[], Int(n[]); own = false)
end

"Number of recorded samples of the current recording."
function n_samples(s::Sim)
    n = Ref{Csize_t}(0)
    _check(ccall((:dynlib_sim_n_samples, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}),
                 _sptr(s), n))
    Int(n[])
end

"""
    segments(sim) -> Vector of named tuples

`(name, t_start, t_end, step_start, step_end, sample_start, sample_len, event_start,
event_len, resume)` per segment of the current recording.
"""
function segments(s::Sim)
    h = _sptr(s)
    n = Ref{Csize_t}(0)
    _check(ccall((:dynlib_sim_n_segments, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}), h, n))
    map(0:Int(n[])-1) do i
        info = Ref{DynlibSegmentInfo}()
        _check(ccall((:dynlib_sim_segment_info, libdynlib), Cint,
                     (Ptr{Cvoid}, Csize_t, Ref{DynlibSegmentInfo}), h, i, info))
        name = _query_string((b, c, nd) -> ccall((:dynlib_sim_segment_name, libdynlib), Cint,
            (Ptr{Cvoid}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, i, b, c, nd))
        g = info[]
        (name = name, t_start = g.t_start, t_end = g.t_end, step_start = g.step_start,
         step_end = g.step_end, sample_start = g.sample_start, sample_len = g.sample_len,
         event_start = g.event_start, event_len = g.event_len, resume = g.resume)
    end
end

"Renames segment `index` (1-based, Julia style)."
function name_segment!(s::Sim, index::Integer, name::AbstractString)
    _check(ccall((:dynlib_sim_name_segment, libdynlib), Cint, (Ptr{Cvoid}, Csize_t, Cstring),
                 _sptr(s), index - 1, name))
    s
end

"Renames the last segment."
function name_last_segment!(s::Sim, name::AbstractString)
    _check(ccall((:dynlib_sim_name_last_segment, libdynlib), Cint, (Ptr{Cvoid}, Cstring),
                 _sptr(s), name))
    s
end

# ------------------------------------------------------------------------------------------
# Snapshot files and bytes
# ------------------------------------------------------------------------------------------

"Writes the current state (`snapshot = nothing`) or a stored snapshot to `path` (.npz)."
function export_snapshot(s::Sim, path::AbstractString; snapshot = nothing)
    _check(ccall((:dynlib_sim_export_snapshot, libdynlib), Cint, (Ptr{Cvoid}, Cstring, Cstring),
                 _sptr(s), path, snapshot === nothing ? C_NULL : String(snapshot)))
    nothing
end

"Replaces the session state with a snapshot file (results and segments cleared)."
function import_snapshot!(s::Sim, path::AbstractString)
    _check(ccall((:dynlib_sim_import_snapshot, libdynlib), Cint, (Ptr{Cvoid}, Cstring),
                 _sptr(s), path))
    s
end

"The `meta.json` of a snapshot file as a Dict, without a session."
inspect_snapshot(path::AbstractString) =
    _json(_query_string((b, c, nd) -> ccall((:dynlib_inspect_snapshot, libdynlib), Cint,
        (Cstring, Ptr{UInt8}, Csize_t, Ref{Csize_t}), path, b, c, nd)))

"The `meta.json` of snapshot bytes as a Dict."
inspect_snapshot(bytes::Vector{UInt8}) =
    _json(_query_string((b, c, nd) -> ccall((:dynlib_inspect_snapshot_bytes, libdynlib), Cint,
        (Ptr{UInt8}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}), bytes, length(bytes), b, c, nd)))

"The current state (or a stored snapshot) as `.npz` bytes."
function serialize_snapshot(s::Sim; snapshot = nothing)
    h = _sptr(s)
    name = snapshot === nothing ? C_NULL : String(snapshot)
    _query((b, c, nd) -> ccall((:dynlib_sim_serialize_snapshot, libdynlib), Cint,
        (Ptr{Cvoid}, Cstring, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, name, b, c, nd), UInt8)
end

"Restores bytes from `serialize_snapshot`."
function deserialize_snapshot!(s::Sim, bytes::Vector{UInt8})
    _check(ccall((:dynlib_sim_deserialize_snapshot, libdynlib), Cint,
                 (Ptr{Cvoid}, Ptr{UInt8}, Csize_t), _sptr(s), bytes, length(bytes)))
    s
end

"Path of the newest checkpoint file in `dir`, or `nothing`."
function latest_checkpoint(dir::AbstractString)
    p = _query_string((b, c, nd) -> ccall((:dynlib_latest_checkpoint, libdynlib), Cint,
        (Cstring, Ptr{UInt8}, Csize_t, Ref{Csize_t}), dir, b, c, nd))
    isempty(p) ? nothing : p
end

# ------------------------------------------------------------------------------------------
# Ensembles: N sims of one model with per-member inputs, run together on a thread pool.
# Member indices are 1-based here; matrices are n_members x k (Julia is column-major, the
# library row-major: transposed here).
# ------------------------------------------------------------------------------------------

"""
    Ensemble(model::Model, n) / Ensemble(sim::Sim, n)

`n` sims of `model` (or copies of `sim`'s session state). Member i ends bit-identical to a
single `Sim` with the same inputs, whatever the thread count. Freed by a finalizer or `close`.
"""
mutable struct Ensemble
    handle::Ptr{Cvoid}
    model::Model
    function Ensemble(model::Model, n::Integer)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        _check(ccall((:dynlib_ensemble_new, libdynlib), Cint,
                     (Ptr{Cvoid}, Csize_t, Ref{Ptr{Cvoid}}), _mptr(model), n, out))
        e = new(out[], model)
        finalizer(close, e)
        e
    end
    function Ensemble(sim::Sim, n::Integer)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        _check(ccall((:dynlib_ensemble_from_sim, libdynlib), Cint,
                     (Ptr{Cvoid}, Csize_t, Ref{Ptr{Cvoid}}), _sptr(sim), n, out))
        e = new(out[], sim.model)
        finalizer(close, e)
        e
    end
end

function Base.close(e::Ensemble)
    if e.handle != C_NULL
        h, e.handle = e.handle, C_NULL
        ccall((:dynlib_ensemble_free, libdynlib), Cvoid, (Ptr{Cvoid},), h)
    end
    nothing
end

function _eptr(e::Ensemble)
    e.handle == C_NULL && throw(DynlibError(DYNLIB_ERR_BAD_HANDLE, "DYNLIB_ERR_BAD_HANDLE",
                                            "the ensemble is closed"))
    e.handle
end

function n_members(e::Ensemble)
    n = Ref{Csize_t}(0)
    _check(ccall((:dynlib_ensemble_n_members, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}),
                 _eptr(e), n))
    Int(n[])
end

function n_failed(e::Ensemble)
    n = Ref{Csize_t}(0)
    _check(ccall((:dynlib_ensemble_n_failed, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}),
                 _eptr(e), n))
    Int(n[])
end

"Members per lock-step batch (0 = off)."
function lockstep_lanes(e::Ensemble)
    n = Ref{Csize_t}(0)
    _check(ccall((:dynlib_ensemble_lockstep_lanes, libdynlib), Cint, (Ptr{Cvoid}, Ref{Csize_t}),
                 _eptr(e), n))
    Int(n[])
end

"Sets the members per lock-step batch (rounded up to even, at most 64; 0 = off): same bits, other speed."
function set_lockstep_lanes!(e::Ensemble, lanes::Integer)
    lanes < 0 && throw(ArgumentError("lockstep lanes = $lanes: must be >= 0 (0 turns lock-step off)"))
    _check(ccall((:dynlib_ensemble_set_lockstep_lanes, libdynlib), Cint, (Ptr{Cvoid}, Csize_t),
                 _eptr(e), lanes))
    e
end

"Member-steps the lock-step kernel took in the last run (a diagnostic)."
function last_run_lockstep_steps(e::Ensemble)
    n = Ref{UInt64}(0)
    _check(ccall((:dynlib_ensemble_last_run_lockstep_steps, libdynlib), Cint,
                 (Ptr{Cvoid}, Ref{UInt64}), _eptr(e), n))
    Int(n[])
end

"Every member's parameters from an n_members x n_params matrix."
function set_params!(e::Ensemble, P::AbstractMatrix)
    rm = Vector{Float64}(vec(permutedims(Float64.(P))))
    _check(ccall((:dynlib_ensemble_set_params, libdynlib), Cint,
                 (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Csize_t), _eptr(e), rm, size(P, 1), size(P, 2)))
    e
end

"Every member's state (the next fresh run's initial condition) from an n_members x n_states matrix."
function set_ic!(e::Ensemble, Y::AbstractMatrix)
    rm = Vector{Float64}(vec(permutedims(Float64.(Y))))
    _check(ccall((:dynlib_ensemble_set_ic, libdynlib), Cint,
                 (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Csize_t), _eptr(e), rm, size(Y, 1), size(Y, 2)))
    e
end

"Parameter `name` of member i = `values[i]`."
function set_param_column!(e::Ensemble, name::AbstractString, values::AbstractVector)
    v = Vector{Float64}(values)
    _check(ccall((:dynlib_ensemble_set_param_column, libdynlib), Cint,
                 (Ptr{Cvoid}, Cstring, Ptr{Cdouble}, Csize_t), _eptr(e), name, v, length(v)))
    e
end

"State or parameter `name` of member i = `values[i]`."
function set_column!(e::Ensemble, name::AbstractString, values::AbstractVector)
    v = Vector{Float64}(values)
    _check(ccall((:dynlib_ensemble_set_column, libdynlib), Cint,
                 (Ptr{Cvoid}, Cstring, Ptr{Cdouble}, Csize_t), _eptr(e), name, v, length(v)))
    e
end

"""
    run!(ens::Ensemble; T, N, dt, t0, record, record_interval, transient, resume, tag,
         max_steps, config = (;), threads = 0) -> ens

Runs every member with the same options on `threads` threads (0 = every core). Throws when any
member failed (the others' results are kept; `member_status`/`member_error` say which).
"""
function run!(e::Ensemble; T = nothing, N = nothing, dt = nothing, t0 = nothing,
              record::Union{Nothing,Bool} = nothing, record_interval = nothing,
              transient = nothing, resume::Bool = false, tag = nothing, max_steps = nothing,
              config = (;), threads::Integer = 0)
    h = _eptr(e)
    ref = Ref{DynlibRunOptions}()
    _check(ccall((:dynlib_run_options_init_sized, libdynlib), Cint,
                 (Ref{DynlibRunOptions}, Csize_t), ref, sizeof(DynlibRunOptions)))
    cn = [String(k) for k in keys(config)]
    cnp = [pointer(x) for x in cn]
    cv = Float64[Float64(v) for v in values(config)]
    tagb = tag === nothing ? nothing : String(tag)
    vecptr(v) = isempty(v) ? C_NULL : pointer(v)
    st = GC.@preserve cn cnp cv tagb begin
        o = _with(ref[];
            T = _f64(T), N = _u64(N), dt = _f64(dt), t0 = _f64(t0),
            record = record === nothing ? Int32(-1) : Int32(record),
            record_interval = _u64(record_interval), transient = _f64(transient),
            resume = resume, tag = tagb === nothing ? Ptr{UInt8}(C_NULL) : pointer(tagb),
            max_steps = _u64(max_steps),
            config_names = Ptr{Ptr{UInt8}}(vecptr(cnp)), config_values = Ptr{Cdouble}(vecptr(cv)),
            n_config = length(cv))
        ccall((:dynlib_ensemble_run, libdynlib), Cint, (Ptr{Cvoid}, Ref{DynlibRunOptions}, Csize_t),
              h, o, threads)
    end
    _check(st)
    e
end

"Status code of member `i`'s last run (`DYNLIB_OK` = 0 if it succeeded)."
function member_status(e::Ensemble, i::Integer)
    s = Ref{Cint}(0)
    _check(ccall((:dynlib_ensemble_member_status, libdynlib), Cint,
                 (Ptr{Cvoid}, Csize_t, Ref{Cint}), _eptr(e), i - 1, s))
    s[]
end

"Message of member `i`'s last run failure, or `nothing`."
function member_error(e::Ensemble, i::Integer)
    h = _eptr(e)
    m = _query_string((b, c, nd) -> ccall((:dynlib_ensemble_member_error, libdynlib), Cint,
        (Ptr{Cvoid}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}), h, i - 1, b, c, nd))
    isempty(m) ? nothing : m
end

function _rows(e::Ensemble, flat::Vector{Float64})
    n = n_members(e)
    permutedims(reshape(flat, length(flat) ÷ n, n))
end

"Every member's current state: an n_members x n_states matrix."
function final_states(e::Ensemble)
    h = _eptr(e)
    _rows(e, _query((b, c, nd) -> ccall((:dynlib_ensemble_final_states, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Ref{Csize_t}), h, b, c, nd), Float64))
end

"Every member's parameters: an n_members x n_params matrix."
function ensemble_params(e::Ensemble)
    h = _eptr(e)
    _rows(e, _query((b, c, nd) -> ccall((:dynlib_ensemble_params, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Ref{Csize_t}), h, b, c, nd), Float64))
end

"Every member's current time."
function member_times(e::Ensemble)
    h = _eptr(e)
    _query((b, c, nd) -> ccall((:dynlib_ensemble_times, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Ref{Csize_t}), h, b, c, nd), Float64)
end

"Events each member fired since its last fresh run."
function event_counts(e::Ensemble)
    h = _eptr(e)
    _query((b, c, nd) -> ccall((:dynlib_ensemble_event_counts, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{UInt64}, Csize_t, Ref{Csize_t}), h, b, c, nd), UInt64)
end

"Committed steps of each member since its last fresh run."
function step_counts(e::Ensemble)
    h = _eptr(e)
    _query((b, c, nd) -> ccall((:dynlib_ensemble_step_counts, libdynlib), Cint,
        (Ptr{Cvoid}, Ptr{UInt64}, Csize_t, Ref{Csize_t}), h, b, c, nd), UInt64)
end

"Member `i` as an ordinary, independent `Sim` (a copy)."
function member(e::Ensemble, i::Integer)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    _check(ccall((:dynlib_ensemble_member_sim, libdynlib), Cint,
                 (Ptr{Cvoid}, Csize_t, Ref{Ptr{Cvoid}}), _eptr(e), i - 1, out))
    s = Sim(e.model)   # a placeholder session, replaced by the member's handle
    ccall((:dynlib_sim_free, libdynlib), Cvoid, (Ptr{Cvoid},), s.handle)
    s.handle = out[]
    s
end

"Writes every member's session state to one `.npz` file, atomically."
function export_checkpoint(e::Ensemble, path::AbstractString)
    _check(ccall((:dynlib_ensemble_export_checkpoint, libdynlib), Cint, (Ptr{Cvoid}, Cstring),
                 _eptr(e), path))
    path
end

"Replaces every member's state by a checkpoint's (all checked first)."
function import_checkpoint!(e::Ensemble, path::AbstractString)
    _check(ccall((:dynlib_ensemble_import_checkpoint, libdynlib), Cint, (Ptr{Cvoid}, Cstring),
                 _eptr(e), path))
    e
end

end # module
