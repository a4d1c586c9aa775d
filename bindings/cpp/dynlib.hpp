// dynlib.hpp — C++17 RAII wrapper over the dynlib C API (include/dynlib.h), header-only.
//
// Handles are move-only and freed by their destructors; every failing call throws
// dynlib::Error carrying the status code and the library's message; outputs come back as
// std::string / std::vector. Link with -ldynlib.
#ifndef DYNLIB_HPP
#define DYNLIB_HPP

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dynlib.h"

namespace dynlib {

/// A failed library call: the status code and the library's message.
class Error : public std::runtime_error {
 public:
  Error(DynlibStatus status, const std::string &message)
      : std::runtime_error(message), status_(status) {}
  DynlibStatus status() const noexcept { return status_; }
  const char *status_name() const noexcept { return dynlib_status_name(status_); }

 private:
  DynlibStatus status_;
};

inline void check(DynlibStatus status) {
  if (status != DYNLIB_OK) throw Error(status, dynlib_last_error());
}

inline std::string version() { return dynlib_version(); }

namespace detail {
// Runs a (buf, cap, needed) call twice: once for the size, once to fill.
template <class T, class Call>
std::vector<T> fetch(Call call) {
  size_t needed = 0;
  check(call(static_cast<T *>(nullptr), size_t{0}, &needed));
  std::vector<T> out(needed);
  if (needed > 0) check(call(out.data(), out.size(), &needed));
  out.resize(needed);
  return out;
}
template <class Call>
std::string fetch_text(Call call) {
  std::vector<char> buf = fetch<char>(call);
  return buf.empty() ? std::string() : std::string(buf.data());
}
inline std::vector<const char *> c_strings(const std::vector<std::string> &v) {
  std::vector<const char *> out;
  out.reserve(v.size());
  for (const auto &s : v) out.push_back(s.c_str());
  return out;
}
}  // namespace detail

/// A loaded model (move-only).
class Model {
 public:
  /// `source`: "builtin://ode/<name>", a TOML file path, or "inline:" + TOML. `stepper`
  /// empty = the model's default.
  static Model load(const std::string &source, const std::string &stepper = "") {
    DynlibModel *h = nullptr;
    check(dynlib_model_load(source.c_str(), stepper.empty() ? nullptr : stepper.c_str(), &h));
    return Model(h);
  }
  /// A model from callbacks (see DynlibCallbackModel; names and arrays are copied).
  static Model from_callbacks(const DynlibCallbackModel &cb) {
    DynlibModel *h = nullptr;
    check(dynlib_model_from_callbacks(&cb, &h));
    return Model(h);
  }
  Model(Model &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Model &operator=(Model &&o) noexcept {
    if (this != &o) {
      dynlib_model_free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Model(const Model &) = delete;
  Model &operator=(const Model &) = delete;
  ~Model() { dynlib_model_free(h_); }

  const DynlibModel *get() const noexcept { return h_; }
  size_t n_states() const { return count(dynlib_model_n_states); }
  size_t n_params() const { return count(dynlib_model_n_params); }
  size_t n_aux() const { return count(dynlib_model_n_aux); }
  std::vector<std::string> state_names() const { return names(n_states(), dynlib_model_state_name); }
  std::vector<std::string> param_names() const { return names(n_params(), dynlib_model_param_name); }
  std::vector<std::string> aux_names() const { return names(n_aux(), dynlib_model_aux_name); }
  std::string info_json() const {
    return detail::fetch_text([&](char *b, size_t c, size_t *n) {
      return dynlib_model_info_json(h_, b, c, n);
    });
  }

 private:
  explicit Model(DynlibModel *h) : h_(h) {}
  size_t count(DynlibStatus (*f)(const DynlibModel *, size_t *)) const {
    size_t n = 0;
    check(f(h_, &n));
    return n;
  }
  std::vector<std::string> names(size_t n, DynlibStatus (*f)(const DynlibModel *, size_t, char *,
                                                            size_t, size_t *)) const {
    std::vector<std::string> out;
    for (size_t i = 0; i < n; i++) {
      out.push_back(detail::fetch_text([&](char *b, size_t c, size_t *k) { return f(h_, i, b, c, k); }));
    }
    return out;
  }
  DynlibModel *h_ = nullptr;
};

/// Options of one run; unset fields keep the library defaults.
class RunOptions {
 public:
  RunOptions() { dynlib_run_options_init(&o_); }
  RunOptions &T(double v) { o_.T = v; return *this; }
  RunOptions &N(uint64_t v) { o_.N = v; return *this; }
  RunOptions &dt(double v) { o_.dt = v; return *this; }
  RunOptions &t0(double v) { o_.t0 = v; return *this; }
  RunOptions &ic(std::vector<double> v) { ic_ = std::move(v); return *this; }
  RunOptions &params(std::vector<double> v) { params_ = std::move(v); return *this; }
  RunOptions &record(bool on) { o_.record = on ? 1 : 0; return *this; }
  RunOptions &record_interval(uint64_t k) { o_.record_interval = k; return *this; }
  /// An empty list records t and step only (no variables).
  RunOptions &record_vars(std::vector<std::string> v) {
    vars_ = std::move(v);
    has_vars_ = true;
    return *this;
  }
  RunOptions &transient(double v) { o_.transient = v; return *this; }
  RunOptions &resume(bool on = true) { o_.resume = on; return *this; }
  RunOptions &tag(std::string v) { tag_ = std::move(v); has_tag_ = true; return *this; }
  RunOptions &max_steps(uint64_t v) { o_.max_steps = v; return *this; }
  /// A progress callback (see DynlibProgressFn) every `every_steps` steps, or every
  /// `every_seconds` of wall time when every_steps is 0; a non-zero return stops the run
  /// (Sim::run then returns true).
  RunOptions &progress(DynlibProgressFn fn, void *user_data, uint64_t every_steps,
                       double every_seconds = 0.1) {
    o_.progress = fn;
    o_.progress_user_data = user_data;
    if (every_steps > 0) o_.progress_every_steps = every_steps;
    else o_.progress_every_seconds = every_seconds;
    return *this;
  }
  /// An observer callback every `every_steps` steps (it may stop the run like progress).
  RunOptions &observer(DynlibProgressFn fn, void *user_data, uint64_t every_steps) {
    o_.observer = fn;
    o_.observer_user_data = user_data;
    o_.observer_every_steps = every_steps;
    return *this;
  }
  RunOptions &config(std::string knob, double value) {
    knobs_.push_back(std::move(knob));
    values_.push_back(value);
    return *this;
  }
  RunOptions &checkpoint_every_steps(std::string dir, uint64_t steps, uint64_t keep) {
    ck_dir_ = std::move(dir);
    o_.checkpoint_every_steps = steps;
    o_.checkpoint_keep = keep;
    return *this;
  }

  /// The C struct, pointing into this object (valid while it lives and is unchanged).
  const DynlibRunOptions *c() {
    o_.ic = ic_.empty() ? nullptr : ic_.data();
    o_.n_ic = ic_.size();
    o_.params = params_.empty() ? nullptr : params_.data();
    o_.n_params = params_.size();
    var_ptrs_ = detail::c_strings(vars_);
    // Non-NULL with n_record_vars = 0 means "no variables" (NULL means all states).
    o_.record_vars = !has_vars_ ? nullptr : var_ptrs_.empty() ? &no_var_ : var_ptrs_.data();
    o_.n_record_vars = var_ptrs_.size();
    o_.tag = has_tag_ ? tag_.c_str() : nullptr;
    knob_ptrs_ = detail::c_strings(knobs_);
    o_.config_names = knob_ptrs_.empty() ? nullptr : knob_ptrs_.data();
    o_.config_values = values_.empty() ? nullptr : values_.data();
    o_.n_config = knobs_.size();
    o_.checkpoint_dir = ck_dir_.empty() ? nullptr : ck_dir_.c_str();
    return &o_;
  }

 private:
  DynlibRunOptions o_;
  std::vector<double> ic_, params_, values_;
  std::vector<std::string> vars_, knobs_;
  std::vector<const char *> var_ptrs_, knob_ptrs_;
  std::string tag_, ck_dir_;
  bool has_tag_ = false, has_vars_ = false;
  const char *no_var_ = nullptr;
};

/// One recorded segment with its effective name.
struct Segment {
  std::string name;
  DynlibSegmentInfo info;
};

/// A read-only range over one of the library's recorded arrays (Sim::t_view, var_view).
class View {
 public:
  const double *data() const { return data_; }
  size_t size() const { return size_; }
  const double *begin() const { return data_; }
  const double *end() const { return data_ + size_; }
  double operator[](size_t i) const { return data_[i]; }

 private:
  friend class Sim;
  const double *data_ = nullptr;
  size_t size_ = 0;
};

/// A simulation session (move-only). Use from one thread at a time.
class Sim {
 public:
  explicit Sim(const Model &model) { check(dynlib_sim_new(model.get(), &h_)); }
  Sim(Sim &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Sim &operator=(Sim &&o) noexcept {
    if (this != &o) {
      dynlib_sim_free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Sim(const Sim &) = delete;
  Sim &operator=(const Sim &) = delete;
  ~Sim() { dynlib_sim_free(h_); }

  DynlibSim *get() const noexcept { return h_; }
  /// Takes ownership of a sim handle returned by the C API (e.g. dynlib_ensemble_member_sim).
  static Sim adopt(DynlibSim *h) noexcept { return Sim(h); }

  /// Runs; true when a progress or observer callback stopped the run (DYNLIB_INTERRUPTED:
  /// the session keeps the run so far, and a resumed run continues it exactly).
  bool run(RunOptions opts = RunOptions()) {
    DynlibStatus st = dynlib_sim_run(h_, opts.c());
    if (st == DYNLIB_INTERRUPTED) return true;
    check(st);
    return false;
  }
  void create_snapshot(const std::string &name, const std::string &description = "") {
    check(dynlib_sim_create_snapshot(h_, name.c_str(), description.c_str()));
  }
  void reset(const std::string &name = "initial") { check(dynlib_sim_reset(h_, name.c_str())); }
  std::string list_snapshots_json() const { return text(dynlib_sim_list_snapshots_json); }
  std::string summary_json() const { return text(dynlib_sim_summary_json); }
  std::string events_json() const { return text(dynlib_sim_events_json); }
  /// (compatible, differing pins as text)
  std::pair<bool, std::string> compat_check(const std::string &name) const {
    bool ok = false;
    std::string why = detail::fetch_text([&](char *b, size_t c, size_t *n) {
      return dynlib_sim_compat_check(h_, name.c_str(), &ok, b, c, n);
    });
    return {ok, why};
  }
  std::pair<bool, std::string> can_resume() const {
    bool ok = false;
    std::string why = detail::fetch_text(
        [&](char *b, size_t c, size_t *n) { return dynlib_sim_can_resume(h_, &ok, b, c, n); });
    return {ok, why};
  }
  void assign(const std::vector<std::pair<std::string, double>> &values, bool clear_history = false) {
    std::vector<const char *> names;
    std::vector<double> v;
    for (const auto &p : values) {
      names.push_back(p.first.c_str());
      v.push_back(p.second);
    }
    check(dynlib_sim_assign(h_, names.data(), v.data(), names.size(), clear_history));
  }
  double time() const {
    double t = 0;
    check(dynlib_sim_time(h_, &t));
    return t;
  }
  uint64_t step_count() const {
    uint64_t k = 0;
    check(dynlib_sim_step_count(h_, &k));
    return k;
  }
  double value(const std::string &name) const {
    double v = 0;
    check(dynlib_sim_value(h_, name.c_str(), &v));
    return v;
  }
  // -- preset bank and preset files (dynlib-presets-v1)
  /// The presets matching a glob as JSON [{name, params, states}].
  std::string list_presets_json(const std::string &pattern = "*") const {
    return detail::fetch_text([&](char *b, size_t c, size_t *n) {
      return dynlib_sim_list_presets_json(h_, pattern.c_str(), b, c, n);
    });
  }
  /// Adds a preset from the given values, or (empty list) from the current session.
  void add_preset(const std::string &name,
                  const std::vector<std::pair<std::string, double>> &values = {},
                  bool overwrite = false) {
    std::vector<const char *> names;
    std::vector<double> v;
    for (const auto &p : values) {
      names.push_back(p.first.c_str());
      v.push_back(p.second);
    }
    check(dynlib_sim_add_preset(h_, name.c_str(), names.data(), v.data(), names.size(), overwrite));
  }
  void remove_preset(const std::string &name) { check(dynlib_sim_remove_preset(h_, name.c_str())); }
  void apply_preset(const std::string &name) { check(dynlib_sim_apply_preset(h_, name.c_str())); }
  /// on_conflict: "error", "keep" or "replace". Returns the number loaded.
  size_t load_presets(const std::string &path, const std::string &pattern = "*",
                      const std::string &on_conflict = "error") {
    size_t n = 0;
    check(dynlib_sim_load_presets(h_, path.c_str(), pattern.c_str(), on_conflict.c_str(), &n));
    return n;
  }
  /// mode: "append" or "overwrite". Returns the number saved.
  size_t save_presets(const std::string &path, const std::string &pattern = "*",
                      const std::string &mode = "append") const {
    size_t n = 0;
    check(dynlib_sim_save_presets(h_, path.c_str(), pattern.c_str(), mode.c_str(), &n));
    return n;
  }
  // -- persistent config and stepper config
  /// JSON object: {"dt": 0.1, "max_steps": 100, "record": false, "atol": 1e-9, "rtol": null}.
  void config(const std::string &json) { check(dynlib_sim_config_set_json(h_, json.c_str())); }
  std::string config_json() const { return text(dynlib_sim_config_json); }
  /// Sets knobs persistently; NaN restores a knob's default.
  void set_stepper_config(const std::vector<std::pair<std::string, double>> &values) {
    std::vector<const char *> names;
    std::vector<double> v;
    for (const auto &p : values) {
      names.push_back(p.first.c_str());
      v.push_back(p.second);
    }
    check(dynlib_sim_stepper_config_set(h_, names.data(), v.data(), names.size()));
  }
  std::vector<double> stepper_config() const { return doubles(dynlib_sim_stepper_config); }
  /// [{name, value, default, help}]
  std::string stepper_config_json() const { return text(dynlib_sim_stepper_config_json); }

  /// Number of recorded variables (0 after record_vars({})).
  size_t n_vars() const {
    size_t n = 0;
    check(dynlib_sim_results_n_vars(h_, &n));
    return n;
  }
  std::vector<double> state() const { return doubles(dynlib_sim_state); }
  std::vector<double> params() const { return doubles(dynlib_sim_params); }

  size_t n_samples() const {
    size_t n = 0;
    check(dynlib_sim_n_samples(h_, &n));
    return n;
  }
  std::vector<double> t() const { return doubles(dynlib_sim_results_t); }
  std::vector<uint64_t> steps() const {
    return detail::fetch<uint64_t>(
        [&](uint64_t *b, size_t c, size_t *n) { return dynlib_sim_results_step(h_, b, c, n); });
  }
  std::vector<double> var(const std::string &name) const {
    return detail::fetch<double>([&](double *b, size_t c, size_t *n) {
      return dynlib_sim_results_var(h_, name.c_str(), b, c, n);
    });
  }
  /// Zero-copy reads of the recording: the library's own arrays, valid until the next
  /// run, reset, assign, apply_preset, import or the Sim's destruction (see
  /// dynlib_sim_results_t_view).
  View t_view() const {
    View v;
    check(dynlib_sim_results_t_view(h_, &v.data_, &v.size_));
    return v;
  }
  View var_view(const std::string &name) const {
    View v;
    check(dynlib_sim_results_var_view(h_, name.c_str(), &v.data_, &v.size_));
    return v;
  }
  std::vector<Segment> segments() const {
    size_t n = 0;
    check(dynlib_sim_n_segments(h_, &n));
    std::vector<Segment> out(n);
    for (size_t i = 0; i < n; i++) {
      check(dynlib_sim_segment_info(h_, i, &out[i].info));
      out[i].name = detail::fetch_text(
          [&](char *b, size_t c, size_t *k) { return dynlib_sim_segment_name(h_, i, b, c, k); });
    }
    return out;
  }
  void name_segment(size_t index, const std::string &name) {
    check(dynlib_sim_name_segment(h_, index, name.c_str()));
  }
  void name_last_segment(const std::string &name) {
    check(dynlib_sim_name_last_segment(h_, name.c_str()));
  }

  /// `snapshot` empty = the current state.
  void export_snapshot(const std::string &path, const std::string &snapshot = "") {
    check(dynlib_sim_export_snapshot(h_, path.c_str(), snapshot.empty() ? nullptr : snapshot.c_str()));
  }
  void import_snapshot(const std::string &path) { check(dynlib_sim_import_snapshot(h_, path.c_str())); }
  std::vector<uint8_t> serialize_snapshot(const std::string &snapshot = "") const {
    const char *name = snapshot.empty() ? nullptr : snapshot.c_str();
    return detail::fetch<uint8_t>([&](uint8_t *b, size_t c, size_t *n) {
      return dynlib_sim_serialize_snapshot(h_, name, b, c, n);
    });
  }
  void deserialize_snapshot(const std::vector<uint8_t> &bytes) {
    check(dynlib_sim_deserialize_snapshot(h_, bytes.data(), bytes.size()));
  }

 private:
  std::string text(DynlibStatus (*f)(DynlibSim *, char *, size_t, size_t *)) const {
    return detail::fetch_text([&](char *b, size_t c, size_t *n) { return f(h_, b, c, n); });
  }
  std::vector<double> doubles(DynlibStatus (*f)(DynlibSim *, double *, size_t, size_t *)) const {
    return detail::fetch<double>([&](double *b, size_t c, size_t *n) { return f(h_, b, c, n); });
  }
  explicit Sim(DynlibSim *h) noexcept : h_(h) {}
  DynlibSim *h_ = nullptr;
};

/// N sims of one model with per-member inputs, run together on a thread pool (move-only).
/// Matrices are row-major, one row per member. Member i ends bit-identical to a single Sim
/// with the same inputs, whatever the thread count.
class Ensemble {
 public:
  Ensemble(const Model &model, size_t n_members) {
    check(dynlib_ensemble_new(model.get(), n_members, &h_));
  }
  /// `n_members` copies of `sim`'s session state (not its recorded samples).
  Ensemble(const Sim &sim, size_t n_members) {
    check(dynlib_ensemble_from_sim(sim.get(), n_members, &h_));
  }
  Ensemble(Ensemble &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  Ensemble &operator=(Ensemble &&o) noexcept {
    if (this != &o) {
      dynlib_ensemble_free(h_);
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  Ensemble(const Ensemble &) = delete;
  Ensemble &operator=(const Ensemble &) = delete;
  ~Ensemble() { dynlib_ensemble_free(h_); }

  DynlibEnsemble *get() const noexcept { return h_; }

  size_t n_members() const {
    size_t n = 0;
    check(dynlib_ensemble_n_members(h_, &n));
    return n;
  }
  size_t n_failed() const {
    size_t n = 0;
    check(dynlib_ensemble_n_failed(h_, &n));
    return n;
  }
  /// Members per lock-step batch (rounded up to even, at most 64; 0 = off): same bits.
  void set_lockstep_lanes(size_t lanes) { check(dynlib_ensemble_set_lockstep_lanes(h_, lanes)); }
  size_t lockstep_lanes() const {
    size_t n = 0;
    check(dynlib_ensemble_lockstep_lanes(h_, &n));
    return n;
  }
  /// Member-steps the lock-step kernel took in the last run (a diagnostic).
  uint64_t last_run_lockstep_steps() const {
    uint64_t n = 0;
    check(dynlib_ensemble_last_run_lockstep_steps(h_, &n));
    return n;
  }
  void set_params(const std::vector<double> &row_major, size_t rows, size_t cols) {
    check(dynlib_ensemble_set_params(h_, row_major.data(), rows, cols));
  }
  void set_ic(const std::vector<double> &row_major, size_t rows, size_t cols) {
    check(dynlib_ensemble_set_ic(h_, row_major.data(), rows, cols));
  }
  void set_param_column(const std::string &name, const std::vector<double> &values) {
    check(dynlib_ensemble_set_param_column(h_, name.c_str(), values.data(), values.size()));
  }
  void set_column(const std::string &name, const std::vector<double> &values) {
    check(dynlib_ensemble_set_column(h_, name.c_str(), values.data(), values.size()));
  }
  /// `n_threads` 0 = one per core. Throws when any member failed (the others' results stay).
  void run(RunOptions opts = RunOptions(), size_t n_threads = 0) {
    check(dynlib_ensemble_run(h_, opts.c(), n_threads));
  }
  /// DYNLIB_OK, or the status of member i's last (failed) run.
  DynlibStatus member_status(size_t i) const {
    DynlibStatus s = DYNLIB_OK;
    check(dynlib_ensemble_member_status(h_, i, &s));
    return s;
  }
  std::string member_error(size_t i) const {
    return detail::fetch_text(
        [&](char *b, size_t c, size_t *n) { return dynlib_ensemble_member_error(h_, i, b, c, n); });
  }
  /// Row-major n_members x n_states.
  std::vector<double> final_states() const { return doubles(dynlib_ensemble_final_states); }
  /// Row-major n_members x n_params.
  std::vector<double> params() const { return doubles(dynlib_ensemble_params); }
  std::vector<double> times() const { return doubles(dynlib_ensemble_times); }
  std::vector<uint64_t> event_counts() const { return counts(dynlib_ensemble_event_counts); }
  std::vector<uint64_t> step_counts() const { return counts(dynlib_ensemble_step_counts); }
  /// Member i as an ordinary, independent Sim (a copy).
  Sim member(size_t i) const {
    DynlibSim *s = nullptr;
    check(dynlib_ensemble_member_sim(h_, i, &s));
    return Sim::adopt(s);
  }
  void export_checkpoint(const std::string &path) const {
    check(dynlib_ensemble_export_checkpoint(h_, path.c_str()));
  }
  void import_checkpoint(const std::string &path) {
    check(dynlib_ensemble_import_checkpoint(h_, path.c_str()));
  }

 private:
  std::vector<double> doubles(DynlibStatus (*f)(DynlibEnsemble *, double *, size_t, size_t *)) const {
    return detail::fetch<double>([&](double *b, size_t c, size_t *n) { return f(h_, b, c, n); });
  }
  std::vector<uint64_t> counts(
      DynlibStatus (*f)(DynlibEnsemble *, uint64_t *, size_t, size_t *)) const {
    return detail::fetch<uint64_t>([&](uint64_t *b, size_t c, size_t *n) { return f(h_, b, c, n); });
  }
  DynlibEnsemble *h_ = nullptr;
};

/// The meta.json of a snapshot file.
inline std::string inspect_snapshot(const std::string &path) {
  return detail::fetch_text(
      [&](char *b, size_t c, size_t *n) { return dynlib_inspect_snapshot(path.c_str(), b, c, n); });
}

}  // namespace dynlib

#endif  // DYNLIB_HPP
