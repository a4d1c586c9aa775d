// Tests of the C++17 RAII wrapper bindings/cpp/dynlib.hpp.
// usage: test_dynlib_hpp WORK_DIR
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "dynlib.hpp"

static int checks = 0, failures = 0;
#define CHECK(cond)                                                          \
  do {                                                                       \
    checks++;                                                                \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                            \
    }                                                                        \
  } while (0)

// Runs `f`, expecting dynlib::Error with `status` and `needle` in its message.
template <class F>
static void expect_error(F f, DynlibStatus status, const char *needle) {
  checks++;
  try {
    f();
    std::fprintf(stderr, "expected %s, nothing thrown\n", dynlib_status_name(status));
    failures++;
  } catch (const dynlib::Error &e) {
    if (e.status() != status || std::strstr(e.what(), needle) == nullptr) {
      std::fprintf(stderr, "expected %s with '%s', got %s: %s\n", dynlib_status_name(status),
                   needle, e.status_name(), e.what());
      failures++;
    }
  }
}

static_assert(!std::is_copy_constructible_v<dynlib::Sim>, "Sim is move-only");
static_assert(std::is_nothrow_move_constructible_v<dynlib::Sim>, "Sim moves");
static_assert(!std::is_copy_assignable_v<dynlib::Model>, "Model is move-only");

int main(int argc, char **argv) {
  std::string dir = argc > 1 ? argv[1] : ".";
  CHECK(dynlib::version() == DYNLIB_VERSION_STRING);

  auto model = dynlib::Model::load("builtin://ode/izhikevich");
  CHECK(model.n_states() == 2);
  CHECK((model.state_names() == std::vector<std::string>{"v", "u"}));
  CHECK(model.param_names().size() == 6 && model.param_names()[4] == "I");
  CHECK(model.info_json().find("Izhikevich") != std::string::npos);

  // The seed's typical pattern.
  dynlib::Sim sim(model);
  sim.run(dynlib::RunOptions().T(2.0).record(true).tag("phase-1"));
  sim.create_snapshot("phase-1", "after the first stimulus");
  sim.run(dynlib::RunOptions().T(5.0).resume().tag("phase-2"));
  auto segs = sim.segments();
  CHECK(segs.size() == 2 && segs[0].name == "phase-1" && segs[1].name == "phase-2");
  CHECK(segs[1].info.resume && segs[1].info.t_end == 5.0);
  std::vector<double> v_whole = sim.var("v");
  CHECK(v_whole.size() == sim.n_samples() && sim.t().size() == v_whole.size());
  CHECK(sim.steps().back() == 500);
  {
    // The zero-copy views read the same values in place.
    dynlib::View tv = sim.t_view(), vv = sim.var_view("v");
    std::vector<double> t_copy = sim.t();
    CHECK(tv.size() == t_copy.size() && std::equal(tv.begin(), tv.end(), t_copy.begin()));
    CHECK(vv.size() == v_whole.size() && std::equal(vv.begin(), vv.end(), v_whole.begin()));
    expect_error([&] { sim.var_view("nope"); }, DYNLIB_ERR_UNKNOWN_NAME, "nope");
  }
  sim.reset("phase-1");
  sim.run(dynlib::RunOptions().T(3.0).record(true).tag("phase-1-replay"));
  CHECK(sim.segments().at(0).name == "phase-1-replay");

  // Progress: a callback that stops the run; run() says so; a resume continues exactly.
  {
    dynlib::Sim whole_p(model), split_p(model);
    CHECK(!whole_p.run(dynlib::RunOptions().T(5.0)));
    uint64_t stop_at = 200;
    auto stop = [](double, uint64_t step, double, const double *, size_t n, void *ud) -> int {
      return n == 2 && step >= *static_cast<uint64_t *>(ud);
    };
    CHECK(split_p.run(dynlib::RunOptions().T(5.0).progress(stop, &stop_at, 100)));
    CHECK(split_p.step_count() == 200);
    CHECK(!split_p.run(dynlib::RunOptions().T(5.0).resume()));
    CHECK(split_p.var("v") == whole_p.var("v"));
  }

  // Exactness: a split run equals the whole one, also through bytes and files.
  dynlib::Sim whole(model), split(model);
  whole.run(dynlib::RunOptions().T(8.0));
  split.run(dynlib::RunOptions().T(3.0));
  std::vector<uint8_t> bytes = split.serialize_snapshot();
  dynlib::Sim moved(model);
  moved.deserialize_snapshot(bytes);
  split.export_snapshot(dir + "/seam.npz");
  dynlib::Sim from_file(model);
  from_file.import_snapshot(dir + "/seam.npz");
  CHECK(dynlib::inspect_snapshot(dir + "/seam.npz").find("dynlib-snapshot-v1") != std::string::npos);
  for (dynlib::Sim *s : {&split, &moved, &from_file}) {
    s->run(dynlib::RunOptions().T(8.0).resume());
    CHECK(s->state() == whole.state());  // exact equality of doubles
    CHECK(s->step_count() == whole.step_count());
  }

  // Branch with a parameter change, then assign with clear_history.
  sim.assign({{"I", 15.0}});
  CHECK(sim.value("I") == 15.0);
  sim.assign({{"a", 0.03}, {"b", 0.25}}, true);
  expect_error([&] { sim.n_samples(); }, DYNLIB_ERR_NO_RESULTS, "no results");
  auto [ok, why] = sim.compat_check("phase-1");
  CHECK(ok && why.empty());
  CHECK(sim.can_resume().first);
  CHECK(sim.summary_json().find("\"stepper\":\"rk4\"") != std::string::npos);
  CHECK(sim.list_snapshots_json().find("phase-1") != std::string::npos);

  // Presets, config and stepper config (issue 15).
  {
    dynlib::Sim p(dynlib::Model::load("builtin://ode/izhikevich", "rk45"));
    p.add_preset("mine", {{"I", 12.5}});
    CHECK(p.list_presets_json("mi*").find("\"I\":12.5") != std::string::npos);
    expect_error([&] { p.add_preset("mine", {{"I", 1.0}}); }, DYNLIB_ERR_DUPLICATE_NAME, "already");
    std::string bank = std::string(argc > 1 ? argv[1] : ".") + "/bank.toml";
    CHECK(p.save_presets(bank, "mine", "overwrite") == 1);
    dynlib::Sim q(dynlib::Model::load("builtin://ode/izhikevich", "rk45"));
    CHECK(q.load_presets(bank) == 1);
    CHECK(q.load_presets(bank, "*", "keep") == 0);
    q.apply_preset("mine");
    CHECK(q.value("I") == 12.5);
    q.config("{\"max_steps\": 3}");
    CHECK(q.config_json().find("\"max_steps\":{\"value\":3,\"set\":true}") != std::string::npos);
    expect_error([&] { q.config("{\"max_step\": 3}"); }, DYNLIB_ERR_UNKNOWN_NAME, "did you mean");
    q.set_stepper_config({{"atol", 1e-10}});
    CHECK(q.stepper_config().at(0) == 1e-10);
    CHECK(q.stepper_config_json().find("\"default\"") != std::string::npos);
    q.config("{\"max_steps\": null}");
    q.run(dynlib::RunOptions().T(5.0).record_vars({}));
    CHECK(q.n_vars() == 0 && q.n_samples() > 1);
  }

  // Errors carry status and message; a failed call changes nothing.
  double t = sim.time();
  expect_error([&] { sim.assign({{"II", 1.0}}); }, DYNLIB_ERR_UNKNOWN_NAME, "did you mean 'I'");
  expect_error([&] { sim.reset("nope"); }, DYNLIB_ERR_UNKNOWN_NAME, "nope");
  expect_error([&] { sim.run(dynlib::RunOptions().T(1.0).resume()); }, DYNLIB_ERR_INVALID_ARGUMENT,
               "must exceed the current time");
  expect_error([&] { dynlib::Model::load("inline:[model]\ntype = 3\n"); }, DYNLIB_ERR_MODEL, "type");
  auto euler = dynlib::Model::load("builtin://ode/izhikevich", "euler");
  dynlib::Sim es(euler);
  es.run(dynlib::RunOptions().T(0.5));
  es.export_snapshot(dir + "/euler.npz");
  expect_error([&] { sim.import_snapshot(dir + "/euler.npz"); }, DYNLIB_ERR_INCOMPATIBLE,
               "stepper_name is 'euler'");
  CHECK(sim.time() == t);

  // Moves transfer ownership: the moved-from object frees nothing.
  dynlib::Sim a(model);
  a.run(dynlib::RunOptions().T(1.0));
  dynlib::Sim b(std::move(a));
  CHECK(a.get() == nullptr && b.get() != nullptr);
  CHECK(b.time() == 1.0);
  a = std::move(b);
  CHECK(a.time() == 1.0 && b.get() == nullptr);
  dynlib::Model m2 = std::move(model);
  CHECK(m2.n_params() == 6);

  // Ensembles: RAII, row-major matrices, members equal single sims, failures per member.
  static_assert(!std::is_copy_constructible_v<dynlib::Ensemble>, "Ensemble is move-only");
  static_assert(std::is_nothrow_move_constructible_v<dynlib::Ensemble>, "Ensemble moves");
  {
    dynlib::Ensemble ens(m2, 5);
    CHECK(ens.n_members() == 5);
    std::vector<double> I = {1.0, 4.0, 8.0, 12.0, 16.0};
    ens.set_param_column("I", I);
    ens.run(dynlib::RunOptions().T(30.0).record(false), 2);
    std::vector<double> y = ens.final_states();
    CHECK(y.size() == 10);
    for (size_t i = 0; i < 5; i++) {
      dynlib::Sim s(m2);
      s.assign({{"I", I[i]}});
      s.run(dynlib::RunOptions().T(30.0).record(false));
      std::vector<double> ref = s.state();
      CHECK(std::memcmp(ref.data(), &y[2 * i], 2 * sizeof(double)) == 0);
    }
    CHECK(ens.times()[4] == 30.0 && ens.step_counts()[0] == 3000);
    CHECK(ens.lockstep_lanes() == 8 && ens.last_run_lockstep_steps() > 0);
    {
      dynlib::Ensemble off(m2, 5);
      off.set_lockstep_lanes(0);
      CHECK(off.lockstep_lanes() == 0);
      off.set_param_column("I", I);
      off.run(dynlib::RunOptions().T(30.0).record(false), 2);
      CHECK(off.last_run_lockstep_steps() == 0);
      std::vector<double> y_off = off.final_states();
      CHECK(std::memcmp(y_off.data(), y.data(), y.size() * sizeof(double)) == 0);
      expect_error([&] { off.set_lockstep_lanes(65); }, DYNLIB_ERR_INVALID_ARGUMENT, "at most 64");
      CHECK(off.lockstep_lanes() == 0);
    }
    CHECK(ens.event_counts().size() == 5);
    dynlib::Sim member = ens.member(3);
    CHECK(member.time() == 30.0);
    expect_error([&] { ens.set_params(std::vector<double>(6, 0.0), 1, 6); },
                 DYNLIB_ERR_INVALID_ARGUMENT, "1 rows; the ensemble has 5 members");
    std::vector<double> nan_ic(10, -65.0);
    nan_ic[3] = NAN;
    expect_error([&] { ens.set_ic(nan_ic, 5, 2); }, DYNLIB_ERR_INVALID_ARGUMENT, "NaN");
    expect_error([&] { dynlib::Ensemble bad(m2, 0); }, DYNLIB_ERR_INVALID_ARGUMENT,
                 "n_members is 0");
    ens.export_checkpoint(dir + "/ens.npz");
    dynlib::Ensemble other(m2, 5);
    other.import_checkpoint(dir + "/ens.npz");
    other.run(dynlib::RunOptions().T(60.0).resume(true).record(false), 0);
    ens.run(dynlib::RunOptions().T(60.0).resume(true).record(false), 1);
    std::vector<double> a = ens.final_states(), b = other.final_states();
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
    dynlib::Ensemble moved(std::move(other));
    CHECK(other.get() == nullptr && moved.n_members() == 5);

    dynlib::Model blow = dynlib::Model::load(
        "inline:[model]\ntype = \"ode\"\n[states]\nx = 1.0\n[params]\na = 1.0\n"
        "[equations.rhs]\nx = \"a*x*x\"\n[sim]\ndt = 0.01\n");
    dynlib::Ensemble be(blow, 3);
    be.set_param_column("a", {0.5, 5.0, -1.0});
    checks++;
    try {
      be.run(dynlib::RunOptions().T(0.5));
      failures++;
    } catch (const dynlib::Error &e) {
      CHECK(std::strstr(e.what(), "1 of 3 members failed") != nullptr);
    }
    CHECK(be.n_failed() == 1 && be.member_status(1) != DYNLIB_OK);
    CHECK(be.member_status(0) == DYNLIB_OK && be.member_error(0).empty());
    CHECK(!be.member_error(1).empty());
  }

  std::printf("C++ wrapper suite: %d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
