function run_tests()
% run_tests  Tests of the dynlib MATLAB / GNU Octave binding.
%
%   octave-cli --no-history --eval "run_tests"      (with bindings/matlab/tests on the path)
%   matlab -batch run_tests
%
% Uses dynlib_mex from the path if present, else builds it with build_mex (needs
% target/release/libdynlib from `cargo build --release`). Raises an error -- so octave-cli
% and matlab -batch exit non-zero -- when a test fails.

here = fileparts(mfilename('fullpath'));
addpath(fileparts(here));   % bindings/matlab: +dynlib and build_mex
if exist('dynlib_mex', 'file') ~= 3
    addpath(fileparts(build_mex()));
end

tests = {@test_typical_pattern, @test_example1_branch_with_new_parameter, ...
    @test_example2_resume_with_new_parameters, @test_example3_assign_clear_history, ...
    @test_export_import_resume_is_exact, @test_serialize_deserialize, ...
    @test_error_identifiers, @test_failed_calls_change_nothing, @test_run_options, ...
    @test_adaptive_stepper_and_config, @test_maps, @test_handles_are_freed, ...
    @test_presets_bank_and_files, @test_config_and_stepper_config, @test_record_vars_empty, @test_ensemble, ...
    @test_progress_stops_and_resume_is_exact};
failures = {};
started = tic;
for k = 1:numel(tests)
    name = func2str(tests{k});
    try
        tests{k}();
        fprintf('PASS %s\n', name);
    catch err
        fprintf('FAIL %s\n     %s: %s\n', name, err.identifier, err.message);
        for s = err.stack(:)'
            fprintf('       at %s line %d\n', s.name, s.line);
        end
        failures{end + 1} = name; %#ok<AGROW>
    end
end
fprintf('%d tests, %d failed (%.2f s)\n', numel(tests), numel(failures), toc(started));
if ~isempty(failures)
    error('dynlib:testsFailed', 'failed: %s', strjoin(failures, ', '));
end
end

% ---------------------------------------------------------------------------------------------
% The seed's workflow

function test_typical_pattern()
sim = dynlib.Sim(dynlib.Model('builtin://ode/izhikevich'));
sim.run('T', 2.0, 'record', true, 'tag', 'phase-1');
sim.createSnapshot('phase-1', 'after the first stimulus');
% continue without rebuilding; the second run is appended
sim.run('T', 5.0, 'resume', true, 'tag', 'phase-2');

segs = sim.segments();
check(isequal({segs.name}, {'phase-1', 'phase-2'}), 'segment names');
check(isequal([segs.resume], [false, true]), 'resume flags');
check(segs(1).t_end == 2 && segs(2).t_end == 5, 'segment ends');
check(segs(2).sample_start == segs(1).sample_len, 'segments are contiguous');

% bit-identical to one uninterrupted run
whole = dynlib.Sim('builtin://ode/izhikevich');
whole.run('T', 5.0, 'record', true);
r = sim.results();
u = whole.results();
check(isequal(fieldnames(r), {'t'; 'step'; 'v'; 'u'}), 'results fields');
check(iscolumn(r.t) && numel(r.t) == 501, 'results are columns');
check(isequal(r.t, u.t) && isequal(r.step, u.step), 'time and step labels');
check(isequal(r.v, u.v) && isequal(r.u, u.u), 'states are bit-identical');
check(isequal(sim.state(), whole.state()), 'final state');
check(sim.time() == 5 && sim.stepCount() == 500, 'time and step count');

snaps = sim.listSnapshots();
check(isequal({snaps.name}, {'initial', 'phase-1'}), 'snapshot names');
check(snaps(2).t == 2 && snaps(2).step == 200, 'snapshot time and step');
check(strcmp(snaps(2).description, 'after the first stimulus'), 'snapshot description');

% start a different branch by resetting to the saved snapshot
sim.reset('phase-1');
check(sim.time() == 2 && sim.stepCount() == 200, 'reset restores time and step');
check(isempty(sim.segments()), 'reset clears the segments');
expect_error(@() sim.results(), 'dynlib:noResults');
sim.run('T', 3.0, 'record', true, 'tag', 'phase-1-replay');
segs = sim.segments();
check(numel(segs) == 1 && strcmp(segs.name, 'phase-1-replay') && ~segs.resume, ...
    'replay segment');
r = sim.results();
check(r.v(1) == u.v(201) && r.u(1) == u.u(201), 'the replay starts from the snapshot state');
end

function test_example1_branch_with_new_parameter()
% Example 1: branching with parameter changes (no resume)
sim = dynlib.Sim('builtin://ode/izhikevich');
sim.run('T', 2.0, 'record', true, 'tag', 'baseline');
sim.createSnapshot('after-baseline', 'End of baseline run');
y2 = sim.state();
sim.reset('after-baseline');
sim.assign('I', 15.0);   % change input current parameter
sim.run('T', 3.0, 'record', true, 'tag', 'modified-current');

check(sim.value('I') == 15, 'I assigned');
names = sim.Model.paramNames();
p = sim.params();
check(p(strcmp(names, 'I')) == 15, 'params vector');
segs = sim.segments();
check(numel(segs) == 1 && strcmp(segs.name, 'modified-current') && ~segs.resume, 'segment');

% the same branch as a fresh run with explicit ic and params
fresh = dynlib.Sim('builtin://ode/izhikevich');
fresh.run('T', 3.0, 'ic', y2, 'params', p, 'tag', 'fresh');
a = sim.results();
b = fresh.results();
check(isequal(a.t, b.t) && isequal(a.v, b.v) && isequal(a.u, b.u), ...
    'branch equals a fresh run from the same state and parameters');

% and differs from the unmodified branch
sim.reset('after-baseline');
sim.run('T', 3.0, 'record', true);
c = sim.results();
check(~isequal(a.v, c.v), 'the new current changes the trajectory');
end

function test_example2_resume_with_new_parameters()
% Example 2: continuing with parameter changes (using resume)
sim = dynlib.Sim('builtin://ode/izhikevich');
sim.run('T', 2.0, 'record', true, 'tag', 'phase-1');
sim.createSnapshot('phase-1-end', 'End of phase 1');
sim.reset('phase-1-end');
sim.assign('a', 0.02, 'b', 0.25);   % change Izhikevich parameters
sim.run('T', 5.0, 'resume', true, 'tag', 'phase-2-modified');

check(sim.value('a') == 0.02 && sim.value('b') == 0.25, 'parameters assigned');
segs = sim.segments();
check(numel(segs) == 1 && strcmp(segs.name, 'phase-2-modified') && segs.resume, 'segment');
% a resume into an empty recording records its starting sample (t = 2) first
check(segs.t_start == 2 && segs.t_end == 5 && segs.step_start == 200, ...
    'the resumed segment continues at t = 2');
r = sim.results();

% the same as assigning in the middle of one session, without the reset
other = dynlib.Sim('builtin://ode/izhikevich');
other.run('T', 2.0, 'record', true, 'tag', 'phase-1');
other.assign(struct('a', 0.02, 'b', 0.25));
other.run('T', 5.0, 'resume', true, 'tag', 'phase-2');
o = other.results();
g = other.segments();
tail = [g(1).sample_len, g(2).sample_start + (1:g(2).sample_len)];   % t = 2 and after
check(isequal(r.t, o.t(tail)) && isequal(r.step, o.step(tail)), 'time and steps');
check(isequal(r.v, o.v(tail)) && isequal(r.u, o.u(tail)), 'states are bit-identical');
end

function test_example3_assign_clear_history()
% Example 3: assign with clear_history to start fresh
sim = dynlib.Sim('builtin://ode/izhikevich');
sim.run('T', 2.0, 'record', true, 'tag', 'initial');
y = sim.state();
sim.assign('I', 20.0, 'clear_history', true);
check(sim.time() == 2 && isequal(sim.state(), y), 'time and state are kept');
check(isempty(sim.segments()), 'segments cleared');
% "Clears all previous results and segments": no results, exactly as after reset.
expect_error(@() sim.results(), 'dynlib:noResults');
sim.run('T', 3.0, 'record', true, 'tag', 'new-segment');
check(sim.value('I') == 20, 'I assigned');
segs = sim.segments();
check(numel(segs) == 1 && strcmp(segs.name, 'new-segment'), 'one new segment');
r = sim.results();
check(r.v(1) == y(1) && r.u(1) == y(2), 'the new segment starts from the kept state');
end

% ---------------------------------------------------------------------------------------------
% Snapshot files

function test_export_import_resume_is_exact()
dir = tempname();
cleanup = onCleanup(@() remove_dir(dir));
current = fullfile(dir, 'current.npz');
named = fullfile(dir, 'nested', 'phase-1.npz');

sim = dynlib.Sim('builtin://ode/izhikevich');
sim.run('T', 2.0, 'tag', 'phase-1');
sim.createSnapshot('phase-1', 'end of phase 1');
sim.run('T', 3.0, 'resume', true);
sim.exportSnapshot(current);            % the current state, t = 3
sim.exportSnapshot(named, 'phase-1');   % a stored snapshot, t = 2

meta = dynlib.Sim.inspectSnapshot(named);
check(strcmp(meta.schema, 'dynlib-snapshot-v1'), 'schema');
check(meta.t_curr == 2 && meta.step_count == 200, 'meta time and step');
check(isequal(meta.state_names, {'v'; 'u'}), 'meta state names');
check(strcmp(meta.pins.stepper_name, 'rk4'), 'meta pins');
meta = dynlib.inspectSnapshot(current);
check(meta.t_curr == 3, 'package function inspectSnapshot');

whole = dynlib.Sim('builtin://ode/izhikevich');
whole.run('T', 5.0);
u = whole.results();

% a new model and session, resumed from the file: identical to the uninterrupted run
other = dynlib.Sim(dynlib.Model('builtin://ode/izhikevich'));
other.importSnapshot(named);
check(other.time() == 2 && other.stepCount() == 200, 'imported time and step');
expect_error(@() other.results(), 'dynlib:noResults');
other.run('T', 5.0, 'resume', true, 'tag', 'after-import');
r = other.results();
idx = find(u.t >= 2);   % the resumed recording starts with the imported state
check(isequal(r.t, u.t(idx)) && isequal(r.step, u.step(idx)), 'time and steps');
check(isequal(r.v, u.v(idx)) && isequal(r.u, u.u(idx)), 'states are bit-identical');
check(isequal(other.state(), whole.state()), 'final state');

% importing keeps stored snapshots; the current-state file continues from t = 3
other.importSnapshot(current);
other.run('T', 5.0, 'resume', true);
r = other.results();
idx = find(u.t >= 3);
check(isequal(r.v, u.v(idx)) && isequal(r.u, u.u(idx)), 'resume from the current-state file');
end

function test_serialize_deserialize()
sim = dynlib.Sim('builtin://ode/izhikevich');
sim.run('T', 2.0);
bytes = sim.serializeSnapshot();
check(isa(bytes, 'uint8') && iscolumn(bytes) && numel(bytes) > 100, 'bytes');
check(isequal(bytes(1:2)', uint8('PK')), 'an npz (zip) archive');
other = dynlib.Sim('builtin://ode/izhikevich');
other.deserializeSnapshot(bytes);
other.run('T', 4.0, 'resume', true);
sim.run('T', 4.0, 'resume', true);
a = sim.results();
b = other.results();
idx = find(a.t >= 2);
check(isequal(a.v(idx), b.v) && isequal(a.u(idx), b.u), 'identical continuation');
end

% ---------------------------------------------------------------------------------------------
% Errors

function test_error_identifiers()
sim = dynlib.Sim('builtin://ode/izhikevich');
expect_error(@() sim.results(), 'dynlib:noResults');
sim.run('T', 1.0);
err = expect_error(@() sim.assign('nope', 1), 'dynlib:unknownName');
check(~isempty(strfind(err.message, 'nope')), 'the message names the unknown variable');
expect_error(@() sim.reset('no-such-snapshot'), 'dynlib:unknownName');
expect_error(@() sim.applyPreset('burstng'), 'dynlib:unknownName');
sim.applyPreset('intrinsic_bursting');
check(sim.value('c') == -55 && sim.value('d') == 4, 'applyPreset sets the preset parameters');
expect_error(@() dynlib.Model('builtin://ode/izhikevich', 'no-such-stepper'), ...
    'dynlib:unknownName');
expect_error(@() dynlib.Model('builtin://ode/no-such-model'), 'dynlib:unknownName');
err = expect_error(@() dynlib.Model(sprintf( ...
    'inline:[model]\ntype = "ode"\n[states]\nx = 1\n[equations.rhs]\nx = "-k*x"\n')), ...
    'dynlib:model');
check(~isempty(strfind(err.message, 'column')), 'model errors have a column');

% a snapshot of another stepper is refused
dir = tempname();
cleanup = onCleanup(@() remove_dir(dir));
file = fullfile(dir, 'rk4.npz');
sim.exportSnapshot(file);
euler = dynlib.Sim('builtin://ode/izhikevich', 'euler');
err = expect_error(@() euler.importSnapshot(file), 'dynlib:incompatible');
check(~isempty(strfind(err.message, 'stepper_name')), 'the message names the pin');
expect_error(@() euler.importSnapshot(fullfile(dir, 'missing.npz')), 'dynlib:io');
garbage = fullfile(dir, 'garbage.npz');
fid = fopen(garbage, 'w');
fwrite(fid, 'not a snapshot');
fclose(fid);
expect_error(@() euler.importSnapshot(garbage), 'dynlib:corruptSnapshot');
expect_error(@() dynlib.Sim.inspectSnapshot(garbage), 'dynlib:corruptSnapshot');

sim.createSnapshot('once');
expect_error(@() sim.createSnapshot('once'), 'dynlib:duplicateName');
expect_error(@() sim.run('T', 5, 'resume', true, 'ic', [0 0]), 'dynlib:invalidArgument');
expect_error(@() sim.run('T', 5, 'bogus', 1), 'dynlib:invalidArgument');
expect_error(@() sim.run('T', 5, 'record_interval', -1), 'dynlib:invalidArgument');
expect_error(@() sim.run('T', 5, 'record_vars', {'v', 3}), 'dynlib:invalidArgument');
expect_error(@() sim.run('T', 50, 'max_steps', 10), 'dynlib:stepFailed');

% handles: deleted, made up, wrong type
model = dynlib.Model('builtin://ode/izhikevich');
dead = dynlib.Sim(model);
delete(dead);
expect_error(@() dead.time(), 'dynlib:badHandle');
expect_error(@() dynlib_mex('time', uint64(12345)), 'dynlib:badHandle');
expect_error(@() dynlib_mex('time', 1), 'dynlib:badHandle');
expect_error(@() dynlib_mex('time', model.Ptr), 'dynlib:badHandle');   % a model, not a sim
expect_error(@() dynlib_mex('no_such_command'), 'dynlib:invalidArgument');
end

function test_failed_calls_change_nothing()
sim = dynlib.Sim('builtin://ode/izhikevich');
sim.run('T', 1.0, 'tag', 'first');
before = sim.results();
y = sim.state();
expect_error(@() sim.run('T', 50, 'resume', true, 'max_steps', 10), 'dynlib:stepFailed');
expect_error(@() sim.assign('I', 1, 'nope', 2), 'dynlib:unknownName');
check(isequal(sim.results(), before), 'results unchanged');
check(isequal(sim.state(), y) && sim.time() == 1 && sim.value('I') == 10, 'state unchanged');
check(numel(sim.segments()) == 1, 'segments unchanged');
end

% ---------------------------------------------------------------------------------------------
% Options, steppers, maps

function test_run_options()
toml = sprintf(['inline:[model]\ntype = "ode"\nname = "decay"\n[states]\nx = 1.0\ny = 2.0\n' ...
    '[params]\nk = 0.5\n[equations.rhs]\nx = "-k*x"\ny = "-y"\n[aux]\nenergy = "x*x + y*y"\n']);
model = dynlib.Model(toml);
check(isequal(model.stateNames(), {'x'; 'y'}) && isequal(model.auxNames(), {'energy'}), ...
    'model names');
info = model.info();
check(isstruct(info), 'model info');

sim = dynlib.Sim(model);
sim.run('T', 1, 'dt', 0.1, 'record_vars', {'x', 'aux.energy'}, 'tag', 'selected');
r = sim.results();
check(isequal(fieldnames(r), {'t'; 'step'; 'x'; 'energy'}), 'recorded variables');
check(numel(r.t) == 11 && abs(r.t(end) - 1) < 1e-12, 'dt');
check(max(abs(r.energy - (r.x .^ 2 + exp(-2 * r.t) * 4))) < 1e-5, 'aux values');
[values, names] = sim.resultsMatrix();
check(isequal(names, {'x'; 'energy'}) && isequal(values, [r.x, r.energy]), 'results matrix');

sim.run('T', 2, 't0', 1, 'dt', 0.01, 'ic', [3 4], 'params', 2, 'record_interval', 10, ...
    'Record_Vars', 'y');   % option names ignore case and '_'
r = sim.results();
check(r.t(1) == 1 && numel(r.t) == 11 && isequal(r.step', 0:10:100), 'interval and t0');
check(r.y(1) == 4 && sim.value('k') == 2, 'ic and params');

sim.run('T', 1, 'dt', 0.01, 'ic', [3 4], 'params', 2, 'transient', 0.5, 'record', true);
r = sim.results();
% the recording frame starts after the warm-up; time and step count are absolute
check(r.t(1) == 0 && r.step(1) == 0 && numel(r.t) == 101, 'transient: recording frame');
check(abs(sim.time() - 1.5) < 1e-12 && sim.stepCount() == 150, 'transient: warm-up ran');
check(abs(r.x(1) - 3 * exp(-1)) < 1e-8, 'transient: the recording starts after it');

sim.run('T', 1, 'record', false);
r = sim.results();
check(isempty(r.t) && isempty(r.x), 'record = false gives no samples');

sim.run(struct('T', 0.5, 'tag', 'from-struct'));
segs = sim.segments();
check(strcmp(segs(end).name, 'from-struct'), 'options as a struct');
sim.nameLastSegment('renamed');
sim.run('T', 1, 'resume', true);
sim.nameSegment(2, 'second');
segs = sim.segments();
check(isequal({segs.name}, {'renamed', 'second'}), 'segment renames');
[ok, reason] = sim.canResume();
check(ok && ischar(reason), 'can resume');
[ok, diff] = sim.compatCheck('initial');
check(ok && isempty(diff), 'compatible snapshot');

dir = tempname();
cleanup = onCleanup(@() remove_dir(dir));
sim.run('T', 1, 'dt', 0.01, 'checkpoint_dir', dir, 'checkpoint_every_steps', 25, ...
    'checkpoint_keep', 2);
latest = dynlib.Sim.latestCheckpoint(dir);
check(~isempty(strfind(latest, 'checkpoint-')), 'latest checkpoint');
check(numel(dir_entries(dir)) == 2, 'checkpoint_keep');
other = dynlib.Sim(model);
other.importSnapshot(latest);
check(other.stepCount() == 100 && isequal(other.state(), sim.state()), 'checkpoint import');
end

function test_adaptive_stepper_and_config()
loose = dynlib.Sim('builtin://ode/lorenz', 'rk45');
loose.run('T', 1.0);
tight = dynlib.Sim('builtin://ode/lorenz', 'rk45');
tight.run('T', 1.0, 'config', struct('atol', 1e-10, 'rtol', 1e-10));
a = tight.results();
b = loose.results();
check(numel(a.t) > numel(b.t), 'tolerances are knobs');

% an adaptive split run holds the uninterrupted samples plus one interpolated seam sample
split = dynlib.Sim('builtin://ode/lorenz', 'rk45');
split.run('T', 0.5);
split.run('T', 1.0, 'resume', true);
a = split.results();
b = loose.results();
seam = split.interpolated();
check(islogical(seam) && nnz(seam) >= 1, 'interpolated seam sample');
check(isequal(a.x(~seam), b.x(~loose.interpolated())), 'exact resume with rk45');
end

function test_maps()
sim = dynlib.Sim('builtin://map/logistic');
sim.run('N', 100, 'tag', 'first');
sim.run('N', 250, 'resume', true, 'tag', 'second');
whole = dynlib.Sim('builtin://map/logistic');
whole.run('N', 250);
a = sim.results();
b = whole.results();
check(numel(a.step) == 251 && a.step(end) == 250, 'N counts iterations');
check(isequal(a.x, b.x), 'map resume is exact');
end

% ---------------------------------------------------------------------------------------------
% Handles

function test_handles_are_freed()
n0 = dynlib_mex('live_handles');
model = dynlib.Model('builtin://ode/izhikevich');
sim = dynlib.Sim(model);
check(dynlib_mex('live_handles') == n0 + 2, 'a model and a sim');
delete(model);   % sims keep their own reference to the model
sim.run('T', 1.0);
check(sim.time() == 1, 'the sim outlives its model');
clear sim model
check(dynlib_mex('live_handles') == n0, 'clearing the objects frees the handles');

% failed constructions create nothing
expect_error(@() dynlib.Sim('builtin://ode/no-such-model'), 'dynlib:unknownName');
expect_error(@() dynlib.Model('builtin://ode/izhikevich', 'no-such-stepper'), ...
    'dynlib:unknownName');
check(dynlib_mex('live_handles') == n0, 'no handle after failed constructions');

% handles created inside a function are freed when it returns (also on error)
make_and_fail();
check(dynlib_mex('live_handles') == n0, 'function scope');
try
    make_and_fail(true);
catch
end
check(dynlib_mex('live_handles') == n0, 'function scope with an error');

% the number of a deleted handle never addresses a later object (even at the same address)
first = dynlib.Sim('builtin://ode/izhikevich');
stale = first.Ptr;
delete(first);
second = dynlib.Sim('builtin://ode/izhikevich');
check(second.Ptr ~= stale, 'handle numbers are not reused');
expect_error(@() dynlib_mex('time', stale), 'dynlib:badHandle');
dynlib_mex('sim_free', stale);   % ignored
check(second.time() == 0, 'the later object is untouched');
clear second

% a MEX cleared with live handles frees them (mexAtExit); stale handles are then refused
sim = dynlib.Sim('builtin://ode/izhikevich');
clear dynlib_mex
check(dynlib_mex('live_handles') == 0, 'clear mex frees everything');
expect_error(@() sim.time(), 'dynlib:badHandle');
other = dynlib.Sim('builtin://ode/izhikevich');
delete(sim);   % a stale handle is ignored by free, and does not reach the new sim
check(other.time() == 0 && dynlib_mex('live_handles') == 2, 'the new sim is untouched');
end

function test_presets_bank_and_files()
sim = dynlib.Sim('builtin://ode/izhikevich');
check(any(strcmp(sim.listPresets('intrinsic_*'), 'intrinsic_bursting')), 'model presets seed the bank');
sim.addPreset('mine', 'I', 12.5, 'v', -70);
sim.addPreset('here');
expect_error(@() sim.addPreset('mine', 'I', 1), 'dynlib:duplicateName');
expect_error(@() sim.addPreset('bad', 'Ix', 1), 'dynlib:unknownName');
p = sim.presets('mine');
check(numel(p) == 1 && p{1}.params.I == 12.5 && p{1}.states.v == -70, 'preset values');
path = [tempname() '.toml'];
check(sim.savePresets(path, 'mine', 'overwrite') == 1, 'savePresets count');
expect_error(@() sim.savePresets(path, 'mine'), 'dynlib:duplicateName');
other = dynlib.Sim('builtin://ode/izhikevich');
check(other.loadPresets(path) == 1, 'loadPresets count');
expect_error(@() other.loadPresets(path), 'dynlib:duplicateName');
check(other.loadPresets(path, '*', 'keep') == 0, 'keep skips');
other.loadPresets(path, 'm*', 'replace');
other.applyPreset('mine');
check(other.value('I') == 12.5 && other.value('v') == -70, 'applied from the file');
other.removePreset('mine');
expect_error(@() other.applyPreset('mine'), 'dynlib:unknownName');
delete(path);
end

function test_config_and_stepper_config()
sim = dynlib.Sim('builtin://map/logistic');
c = sim.config('max_steps', 7, 'record_interval', 2);
check(c.max_steps.value == 7 && c.max_steps.set, 'config reads back');
sim.run();
check(sim.stepCount() == 7, 'config max_steps applies');
r = sim.results();
check(isequal(double(r.step(:)'), [0 2 4 6]), 'config record_interval applies');
expect_error(@() sim.config('max_step', 3), 'dynlib:unknownName');
c = sim.config('max_steps', []);
check(~c.max_steps.set, 'config [] unsets');
a = dynlib.Sim('builtin://ode/izhikevich', 'rk45');
v = a.stepperConfig('atol', 1e-10);
check(v(1) == 1e-10, 'stepperConfig sets');
a.run('T', 5);
v = a.stepperConfig();
check(v(1) == 1e-10, 'stepperConfig persists across runs');
k = a.listStepperConfig();
check(strcmp(k(1).name, 'atol') && k(1).value == 1e-10 && isfinite(k(1).default), 'listStepperConfig');
check(isinf(k(strcmp({k.name}, 'dt_max')).value), 'non-finite knob values decode');
v = a.stepperConfig('atol', NaN);
check(v(1) == k(1).default, 'NaN restores the default');
expect_error(@() a.stepperConfig('atoll', 1), 'dynlib:unknownName');
b = dynlib.Sim('builtin://ode/izhikevich');
expect_error(@() b.stepperConfig('atol', 1), 'dynlib:unknownName');
end

function test_record_vars_empty()
sim = dynlib.Sim('builtin://ode/izhikevich');
sim.run('T', 5, 'record_vars', {});
r = sim.results();
check(~isfield(r, 'v') && numel(r.t) > 1, 'record_vars {} records t and step only');
sim.assign('I', 20, 'clear_history', true);
expect_error(@() sim.results(), 'dynlib:noResults');
end

function make_and_fail(raise)
sim = dynlib.Sim('builtin://ode/lorenz');
sim.run('T', 0.1);
if nargin > 0 && raise
    sim.run('T', 10, 'max_steps', 1);
end
end

% ---------------------------------------------------------------------------------------------
% Helpers

function test_ensemble()
n0 = dynlib_mex('live_handles');
model = dynlib.Model('builtin://ode/izhikevich');
I = linspace(2, 18, 6);
ens = dynlib.Ensemble(model, 6);
check(ens.nMembers() == 6, 'member count');
ens.setParamColumn('I', I);
ens.run('T', 40, 'record', false, 'threads', 2);
ens.run('T', 90, 'resume', true, 'record', false, 'threads', 0);
Y = ens.finalStates();
check(isequal(size(Y), [6, 2]), 'final states are n_members x n_states');
for i = 1:6
    s = dynlib.Sim(model);
    s.assign('I', I(i));
    s.run('T', 40, 'record', false);
    s.run('T', 90, 'resume', true, 'record', false);
    check(isequal(Y(i, :), s.state()'), sprintf('member %d equals a single sim', i));
end
check(all(ens.times() == 90) && all(ens.stepCounts() == 9000), 'times and steps');
% lock-step lanes change the speed, not the bits
check(ens.lockstepLanes() == 8 && ens.lastRunLockstepSteps() > 0, 'lock-step by default');
off = dynlib.Ensemble(model, 6);
off.setLockstepLanes(0);
check(off.lockstepLanes() == 0, 'lock-step off');
off.setParamColumn('I', I);
off.run('T', 40, 'record', false, 'threads', 2);
off.run('T', 90, 'resume', true, 'record', false, 'threads', 2);
check(off.lastRunLockstepSteps() == 0 && isequal(off.finalStates(), Y), 'lanes 0: same bits');
expect_error(@() off.setLockstepLanes(65), 'dynlib:invalidArgument');
expect_error(@() off.setLockstepLanes(-1), 'dynlib:invalidArgument');
off.setLockstepLanes(3);
check(off.lockstepLanes() == 4, 'odd lanes round up');
clear off
c = ens.eventCounts();
check(c(6) > 0, 'spikes counted');
P = ens.params();
check(isequal(P(:, strcmp(model.paramNames(), 'I'))', I), 'params matrix');
% a member is an ordinary sim
m = ens.member(2);
check(isequal(m.state(), Y(2, :)'), 'member sim state');
m.run('T', 100, 'resume', true);
t = ens.times();
check(t(2) == 90, 'the member copy is independent');
% bad input changes nothing
bad = P; bad(3, 1) = NaN;
expect_error(@() ens.setParams(bad), 'dynlib:invalidArgument');
expect_error(@() ens.setParams(P(1:5, :)), 'dynlib:invalidArgument');
expect_error(@() ens.setIc(zeros(6, 3)), 'dynlib:invalidArgument');
expect_error(@() dynlib.Ensemble(model, 0), 'dynlib:invalidArgument');
check(isequal(ens.params(), P), 'nothing changed');
% checkpoint round trip
path = [tempname() '.npz'];
ens.exportCheckpoint(path);
other = dynlib.Ensemble(model, 6);
other.importCheckpoint(path);
check(isequal(other.finalStates(), Y), 'checkpoint restores the states');
other.run('T', 120, 'resume', true, 'record', false);
ens.run('T', 120, 'resume', true, 'record', false);
check(isequal(other.finalStates(), ens.finalStates()), 'resume after import is exact');
delete(path);
% a failing member
bm = dynlib.Model(['inline:' sprintf('[model]\ntype = "ode"\n[states]\nx = 1.0\n[params]\na = 1.0\n[equations.rhs]\nx = "a*x*x"\n[sim]\ndt = 0.01\n')]);
be = dynlib.Ensemble(bm, 3);
be.setParamColumn('a', [0.5, 5, -1]);
err = expect_error(@() be.run('T', 0.5), '');
check(~isempty(strfind(err.message, '1 of 3 members failed')), 'failure summary');
check(be.nFailed() == 1, 'one failed');
[id, msg] = be.memberStatus(2);
check(~isempty(id) && ~isempty(msg), 'failed member status');
[id, msg] = be.memberStatus(1);
check(isempty(id) && isempty(msg), 'healthy member status');
clear ens other m s be bm model
check(dynlib_mex('live_handles') == n0, 'ensemble handles are freed');
end

function check(condition, what)
if ~condition
    error('dynlib:testFailure', 'check failed: %s', what);
end
end

function err = expect_error(fn, id)
% Calls fn, expecting an error with identifier id ('' = any identifier).
try
    fn();
catch err
    if ~isempty(id) && ~strcmp(err.identifier, id)
        error('dynlib:testFailure', 'expected error %s, got %s: %s', id, err.identifier, ...
            err.message);
    end
    check(~isempty(err.message), 'the error has a message');
    return
end
error('dynlib:testFailure', 'expected error %s, but the call succeeded', id);
end

function names = dir_entries(d)
entries = dir(d);
names = {entries(~[entries.isdir]).name};
end

function remove_dir(d)
if ~exist(d, 'dir')
    return
end
if exist('OCTAVE_VERSION', 'builtin')
    confirm = confirm_recursive_rmdir(false);
    rmdir(d, 's');
    confirm_recursive_rmdir(confirm);
else
    rmdir(d, 's');
end
end

% ---------------------------------------------------------------------------------------------
% Progress: a function handle every K steps that may stop the run

function test_progress_stops_and_resume_is_exact()
m = dynlib.Model('builtin://ode/lorenz', 'rk4');
whole = dynlib.Sim(m);
rec = containers.Map();
rec('steps') = [];
stopped = whole.run('T', 10, 'dt', 0.001, 'progress', @(p) record_progress(rec, p), ...
    'progress_every', 1000);
check(~stopped, 'a progress function returning false does not stop the run');
check(isequal(rec('steps'), 1000:1000:10000), 'called every 1000 steps');
check(rec('fraction') == 1, 'fraction reaches 1');
y = whole.state();
check(numel(rec('y')) == 3 && isequal(rec('y'), y(:)), 'the state is passed');

split = dynlib.Sim(m);
stopped = split.run('T', 10, 'dt', 0.001, 'progress', @(p) p.step >= 3000, ...
    'progress_every', 1000);
check(stopped, 'a true return stops the run');
check(split.stepCount() == 3000, 'stopped after the step the function saw');
s = split.summary();
check(strcmp(s.status, 'USER_BREAK'), 'status USER_BREAK');
split.run('T', 10, 'resume', true);
a = whole.results();
b = split.results();
check(isequal(typecast(a.x, 'uint64'), typecast(b.x, 'uint64')), 'resume is bit-identical');

% An error inside the function stops the run and is raised after it returned.
third = dynlib.Sim(m);
err = expect_error(@() third.run('T', 10, 'dt', 0.001, 'progress', @(p) error('my:id', 'boom'), ...
    'progress_every', 500), '');
% MATLAB rethrows the callback's own error (my:id, 'boom'); Octave's mexCallMATLABWithTrap
% reports it as Octave:MEX ("function call <feval> failed") after printing the original.
check(strcmp(err.identifier, 'my:id') || strcmp(err.identifier, 'Octave:MEX'), ...
    'the callback''s error is raised');
check(third.stepCount() == 500, 'the failed callback stopped the run at its step');
third.run('T', 10, 'resume', true);   % the sim is not left busy
check(third.stepCount() == 10000, 'the sim works after a failing callback');
expect_error(@() third.run('T', 11, 'resume', true, 'progress', 3), 'dynlib:invalidArgument');
expect_error(@() third.run('T', 11, 'resume', true, 'progress_every', 3), 'dynlib:invalidArgument');
check(third.stepCount() == 10000, 'refused options change nothing');
end

function stop = record_progress(rec, p)
% Records a progress call in rec (a containers.Map, a handle) and continues.
rec('steps') = [rec('steps'), p.step];
rec('fraction') = p.fraction;
rec('y') = p.y;
stop = false;
end
