# The seed workflow from Julia: run, snapshot, resume, branch, and a check that the resumed run
# is bit-identical to an uninterrupted one.
#
#   cargo build --release
#   julia bindings/julia/example.jl            # or DYNLIB_LIBRARY=/path/to/libdynlib.so julia ...

include(joinpath(@__DIR__, "src", "Dynlib.jl"))
using .Dynlib

model = Model("builtin://ode/izhikevich")
sim = Sim(model)

run!(sim; T = 200.0, record = true, tag = "phase-1")
snapshot!(sim, "phase-1"; description = "after the first 200 ms")
run!(sim; T = 500.0, resume = true, tag = "phase-2")          # appended, exact

for g in segments(sim)
    println(rpad(g.name, 10), " t ", g.t_start, " .. ", g.t_end, "  samples ", g.sample_len,
            "  resume=", g.resume)
end
r = results(sim)
println(length(r.t), " samples, ", length(r.events), " spikes")

# Exactness: an uninterrupted run gives the same bits.
whole = Sim(model)
run!(whole; T = 500.0)
identical = results(whole).vars.v == r.vars.v && state(whole) == state(sim)
println("split run == uninterrupted run, bit for bit: ", identical)

# Branch: back to the snapshot, stronger input current, continue.
reset!(sim, "phase-1")
assign!(sim; I = 15.0)
run!(sim; T = 500.0, resume = true, tag = "I=15")
println("branch I=15: ", length(results(sim).events), " spikes after 200 ms")

# Persist and continue elsewhere.
path = joinpath(mktempdir(), "phase-1.npz")
export_snapshot(sim, path; snapshot = "phase-1")
println("snapshot file: t = ", inspect_snapshot(path)["t_curr"])
other = Sim(model)
import_snapshot!(other, path)
run!(other; T = 500.0, resume = true)

# Presets, persistent run defaults and stepper knobs.
add_preset!(other, "strong"; I = 15.0)
bank = joinpath(mktempdir(), "bank.toml")
save_presets(other, bank, "strong"; mode = "overwrite")
load_presets!(sim, bank; on_conflict = "replace")
apply_preset!(sim, "strong")
println("presets: ", list_presets(sim, "s*"))
config!(other; max_steps = 100_000, record_interval = 10)
println("defaults: ", config(other)["record_interval"])
println("knobs: ", [k["name"] for k in list_stepper_config(other)])

# A failing call throws a DynlibError with the library's message.
try
    assign!(sim; Ix = 1.0)
catch e
    e isa DynlibError || rethrow()
    println("error as expected: ", e.name, ": ", e.message)
end

close(other); close(whole); close(sim); close(model)   # or leave it to the finalizers
identical || exit(1)
