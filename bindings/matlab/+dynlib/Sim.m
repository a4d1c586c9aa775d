classdef Sim < handle
    % dynlib.Sim  A simulation session: run, snapshot, reset, branch and resume exactly.
    %
    %   sim = dynlib.Sim(dynlib.Model('builtin://ode/izhikevich'))
    %   sim = dynlib.Sim('builtin://ode/lorenz', 'rk45')      % source [, stepper]
    %
    %   sim.run('T', 2, 'tag', 'phase-1')                     % new recording pass
    %   sim.createSnapshot('phase-1', 'after the first stimulus')
    %   sim.run('T', 5, 'resume', true, 'tag', 'phase-2')     % appended, bit-exact
    %   sim.reset('phase-1')                                  % back to the snapshot
    %   sim.assign('I', 15)                                   % new parameter value
    %   sim.run('T', 3, 'resume', true, 'tag', 'branch')
    %   r = sim.results();   plot(r.t, r.v)
    %
    % Run options (name/value pairs, or a struct; names are matched ignoring case and '_'):
    %   T, N, dt, t0, ic, params, record, record_interval, record_vars (cellstr), transient,
    %   resume, tag, max_steps, config (struct of stepper knobs, e.g. struct('atol', 1e-9)),
    %   checkpoint_dir, checkpoint_every_steps, checkpoint_every_time, checkpoint_keep,
    %   progress (a function handle f(p) -> true to stop), progress_every (steps).
    %
    % Errors are raised with identifiers such as dynlib:incompatible, dynlib:unknownName,
    % dynlib:noResults, dynlib:invalidArgument, dynlib:io, dynlib:corruptSnapshot,
    % dynlib:stepFailed, dynlib:badHandle, dynlib:busy, carrying the library's message. A
    % failed call changes nothing. delete frees the library handle.

    properties (SetAccess = private)
        Model   % the dynlib.Model this session was created from
    end

    properties (SetAccess = private, Hidden)
        Ptr = uint64(0)   % library handle (uint64 scalar), 0 once freed
    end

    properties (Constant, Hidden)
        RunOptionNames = {'T', 'N', 'dt', 't0', 'ic', 'params', 'record', ...
            'record_interval', 'record_vars', 'transient', 'resume', 'tag', 'max_steps', ...
            'config', 'checkpoint_dir', 'checkpoint_every_steps', ...
            'checkpoint_every_time', 'checkpoint_keep', 'progress', 'progress_every'}
    end

    methods
        function obj = Sim(model, stepper, handle)
            if nargin == 3 && isa(model, 'dynlib.Model') && strcmp(stepper, '-handle')
                % Internal: adopt a sim handle the MEX created (e.g. dynlib.Ensemble.member).
                obj.Model = model;
                obj.Ptr = handle;
                return
            end
            if nargin < 1
                error('dynlib:invalidArgument', ...
                    'dynlib.Sim(model) or dynlib.Sim(source [, stepper]) needs a model');
            end
            model = dynlib.Sim.text(model);
            if ischar(model)
                if nargin < 2
                    stepper = '';
                end
                model = dynlib.Model(model, stepper);
            elseif ~isa(model, 'dynlib.Model')
                error('dynlib:invalidArgument', ...
                    'dynlib.Sim needs a dynlib.Model or a model source string');
            elseif nargin > 1
                error('dynlib:invalidArgument', ...
                    'the stepper is chosen when the model is loaded: dynlib.Model(source, stepper)');
            end
            obj.Model = model;
            obj.Ptr = dynlib_mex('sim_new', model.Ptr);
        end

        function delete(obj)
            if obj.Ptr ~= 0
                dynlib_mex('sim_free', obj.Ptr);
                obj.Ptr = uint64(0);
            end
        end

        function stopped = run(obj, varargin)
            % run(name, value, ...)  Runs the simulation; see the class help for options.
            % 'progress', f calls f(p) every 'progress_every' steps (default 1000) with
            % p.t, p.step, p.fraction, p.y; f returns true to stop the run. stopped is true
            % when f stopped it: the session keeps the run so far (status USER_BREAK) and
            % run(..., 'resume', true) continues it exactly.
            stopped = dynlib_mex('run', obj.Ptr, dynlib.Sim.runOptions(varargin));
        end

        function createSnapshot(obj, name, description)
            % createSnapshot(name [, description])  Saves the current state under name.
            if nargin < 3
                description = '';
            end
            dynlib_mex('create_snapshot', obj.Ptr, dynlib.Sim.text(name), ...
                dynlib.Sim.text(description));
        end

        function reset(obj, name)
            % reset([name])  Restores snapshot name ('initial' by default); clears results.
            if nargin < 2
                name = '';
            end
            dynlib_mex('reset', obj.Ptr, dynlib.Sim.text(name));
        end

        function applyPreset(obj, name)
            % applyPreset(name)  Applies a preset of the bank (its parameters, then its
            % states) like assign.
            dynlib_mex('apply_preset', obj.Ptr, dynlib.Sim.text(name));
        end

        function names = listPresets(obj, pattern)
            % listPresets([pattern])  Names (cellstr) of the bank's presets matching a glob
            % ('*', '?', '[...]'), the model's [presets.*] first.
            if nargin < 2
                pattern = '*';
            end
            p = obj.presets(pattern);
            names = cellfun(@(x) x.name, p, 'UniformOutput', false);
            names = names(:);
        end

        function p = presets(obj, pattern)
            % presets([pattern])  Cell array of structs with fields name, params, states.
            if nargin < 2
                pattern = '*';
            end
            d = jsondecode(dynlib_mex('list_presets_json', obj.Ptr, dynlib.Sim.text(pattern)));
            if isempty(d)
                p = {};
            elseif isstruct(d)
                p = num2cell(d(:));
            else
                p = d(:);
            end
        end

        function addPreset(obj, name, varargin)
            % addPreset(name)                     every state and parameter of the session
            % addPreset(name, 'I', 12, 'v', -70)  or a struct; add 'overwrite', true to replace
            [names, values, flags] = dynlib.Sim.pairs(varargin, {'overwrite'});
            overwrite = isfield(flags, 'overwrite') && logical(flags.overwrite);
            dynlib_mex('add_preset', obj.Ptr, dynlib.Sim.text(name), names, values, overwrite);
        end

        function removePreset(obj, name)
            dynlib_mex('remove_preset', obj.Ptr, dynlib.Sim.text(name));
        end

        function n = loadPresets(obj, path, pattern, onConflict)
            % loadPresets(path [, pattern [, onConflict]])  Loads a preset file (TOML,
            % dynlib-presets-v1); onConflict 'error' (default), 'keep' or 'replace'.
            if nargin < 3
                pattern = '*';
            end
            if nargin < 4
                onConflict = 'error';
            end
            n = dynlib_mex('load_presets', obj.Ptr, dynlib.Sim.text(path), ...
                dynlib.Sim.text(pattern), dynlib.Sim.text(onConflict));
        end

        function n = savePresets(obj, path, pattern, mode)
            % savePresets(path [, pattern [, mode]])  Writes presets atomically; mode 'append'
            % (default), 'replace' or 'overwrite'.
            if nargin < 3
                pattern = '*';
            end
            if nargin < 4
                mode = 'append';
            end
            n = dynlib_mex('save_presets', obj.Ptr, dynlib.Sim.text(path), ...
                dynlib.Sim.text(pattern), dynlib.Sim.text(mode));
        end

        function c = config(obj, varargin)
            % config('dt', 0.05, 'max_steps', 1e5, 'record', false, 'record_interval', 2,
            %        'atol', 1e-9)  Persistent defaults of later runs ([] = back to the
            % default; other names are stepper knobs). Returns the effective defaults.
            if mod(numel(varargin), 2) ~= 0
                error('dynlib:invalidArgument', 'config takes name/value pairs');
            end
            if ~isempty(varargin)
                parts = cell(1, numel(varargin) / 2);
                for k = 1:2:numel(varargin)
                    v = varargin{k + 1};
                    if isempty(v)
                        js = 'null';
                    elseif islogical(v)
                        js = mat2str(v);
                    else
                        js = sprintf('%.17g', double(v));
                    end
                    parts{(k + 1) / 2} = sprintf('"%s":%s', dynlib.Sim.text(varargin{k}), js);
                end
                dynlib_mex('config_set_json', obj.Ptr, ['{' strjoin(parts, ',') '}']);
            end
            c = jsondecode(dynlib_mex('config_json', obj.Ptr));
        end

        function v = stepperConfig(obj, varargin)
            % stepperConfig('atol', 1e-9, ...)  Sets knobs persistently (NaN restores the
            % default) and returns the config vector (knob order); no arguments only reads.
            if ~isempty(varargin)
                [names, values] = dynlib.Sim.pairs(varargin, {});
                dynlib_mex('stepper_config_set', obj.Ptr, names, values);
            end
            v = dynlib_mex('stepper_config', obj.Ptr);
        end

        function k = listStepperConfig(obj)
            % Struct array of the stepper's knobs: name, value, default, help.
            k = dynlib.Sim.structArray(jsondecode(dynlib_mex('stepper_config_json', obj.Ptr)), ...
                {'name', 'value', 'default', 'help'});
            for i = 1:numel(k)
                if ischar(k(i).value), k(i).value = str2double(k(i).value); end
                if ischar(k(i).default), k(i).default = str2double(k(i).default); end
            end
        end

        function assign(obj, varargin)
            % assign(name, value, ...) or assign(struct) [, 'clear_history', true]
            % Sets states or parameters by name; all names are checked before anything changes.
            names = {};
            values = [];
            clearHistory = false;
            args = varargin;
            if ~isempty(args) && isstruct(args{1})
                s = args{1};
                f = fieldnames(s);
                for k = 1:numel(f)
                    names{end + 1} = f{k}; %#ok<AGROW>
                    values(end + 1) = double(s.(f{k})); %#ok<AGROW>
                end
                args = args(2:end);
            end
            if mod(numel(args), 2) ~= 0
                error('dynlib:invalidArgument', 'assign takes name/value pairs');
            end
            for k = 1:2:numel(args)
                name = dynlib.Sim.text(args{k});
                if ~ischar(name)
                    error('dynlib:invalidArgument', 'assign: names must be character vectors');
                end
                if strcmpi(strrep(name, '_', ''), 'clearhistory')
                    clearHistory = logical(args{k + 1});
                else
                    names{end + 1} = name; %#ok<AGROW>
                    values(end + 1) = double(args{k + 1}); %#ok<AGROW>
                end
            end
            dynlib_mex('assign', obj.Ptr, names, values, clearHistory);
        end

        function s = listSnapshots(obj)
            % Struct array (column) with fields name, t, step, created_at, description.
            s = dynlib.Sim.structArray(jsondecode(dynlib_mex('list_snapshots_json', obj.Ptr)), ...
                {'name', 't', 'step', 'created_at', 'description'});
        end

        function r = results(obj)
            % Struct with fields t, step and one column vector per recorded variable.
            raw = dynlib_mex('results', obj.Ptr);
            r = struct('t', raw.t, 'step', raw.step);
            for k = 1:numel(raw.names)
                r.(dynlib.Sim.fieldFor(raw.names{k}, r)) = raw.values(:, k);
            end
        end

        function [values, names] = resultsMatrix(obj)
            % Samples x variables matrix of the recorded variables, with their names.
            raw = dynlib_mex('results', obj.Ptr);
            values = raw.values;
            names = raw.names;
        end

        function flags = interpolated(obj)
            % True for samples produced by dense output at a resume seam (adaptive steppers).
            raw = dynlib_mex('results', obj.Ptr);
            flags = raw.interpolated;
        end

        function s = segments(obj)
            % Struct array (column): name, t_start, t_end, step_start, step_end,
            % sample_start, sample_len, event_start, event_len, resume. sample_start and
            % event_start are 0-based offsets: the samples of segment k are
            % r.t(s(k).sample_start + (1:s(k).sample_len)).
            s = dynlib_mex('segments', obj.Ptr);
        end

        function nameSegment(obj, index, name)
            % nameSegment(k, name)  Renames segment k (1-based).
            dynlib_mex('name_segment', obj.Ptr, index, dynlib.Sim.text(name));
        end

        function nameLastSegment(obj, name)
            dynlib_mex('name_last_segment', obj.Ptr, dynlib.Sim.text(name));
        end

        function e = events(obj)
            % The event log: struct array with fields event, t, step, sample, values.
            e = jsondecode(dynlib_mex('events_json', obj.Ptr));
        end

        function exportSnapshot(obj, path, snapshotName)
            % exportSnapshot(path [, snapshotName])  Writes the current state (or a stored
            % snapshot) to a .npz file, atomically.
            if nargin < 3
                snapshotName = '';
            end
            dynlib_mex('export_snapshot', obj.Ptr, dynlib.Sim.text(path), ...
                dynlib.Sim.text(snapshotName));
        end

        function importSnapshot(obj, path)
            % importSnapshot(path)  Replaces the state with a snapshot file (checked first);
            % results and segments are cleared, stored snapshots kept.
            dynlib_mex('import_snapshot', obj.Ptr, dynlib.Sim.text(path));
        end

        function bytes = serializeSnapshot(obj, snapshotName)
            % The current state (or a stored snapshot) as .npz bytes (uint8 column).
            if nargin < 2
                snapshotName = '';
            end
            bytes = dynlib_mex('serialize_snapshot', obj.Ptr, dynlib.Sim.text(snapshotName));
        end

        function deserializeSnapshot(obj, bytes)
            dynlib_mex('deserialize_snapshot', obj.Ptr, bytes);
        end

        function t = time(obj)
            % Current absolute time.
            t = dynlib_mex('time', obj.Ptr);
        end

        function n = stepCount(obj)
            % Committed steps since the last fresh run (warm-up included).
            n = dynlib_mex('step_count', obj.Ptr);
        end

        function y = state(obj)
            % Current state vector (column, in Model.stateNames order).
            y = dynlib_mex('state', obj.Ptr);
        end

        function p = params(obj)
            % Current parameter vector (column, in Model.paramNames order).
            p = dynlib_mex('params', obj.Ptr);
        end

        function x = value(obj, name)
            % Current value of one state or parameter.
            x = dynlib_mex('value', obj.Ptr, dynlib.Sim.text(name));
        end

        function s = summary(obj)
            % Session summary (time, step, dt, stepper, can_resume, ...), decoded from JSON.
            s = jsondecode(dynlib_mex('summary_json', obj.Ptr));
        end

        function [ok, reason] = canResume(obj)
            [ok, reason] = dynlib_mex('can_resume', obj.Ptr);
        end

        function [ok, diff] = compatCheck(obj, snapshotName)
            [ok, diff] = dynlib_mex('compat_check', obj.Ptr, dynlib.Sim.text(snapshotName));
        end
    end

    methods (Static)
        function meta = inspectSnapshot(path)
            % meta = dynlib.Sim.inspectSnapshot(path)  The meta.json of a snapshot file as a
            % struct, without any session.
            meta = jsondecode(dynlib_mex('inspect_snapshot', dynlib.Sim.text(path)));
        end

        function path = latestCheckpoint(dir)
            % Path of the newest checkpoint file in dir ('' when there is none).
            path = dynlib_mex('latest_checkpoint', dynlib.Sim.text(dir));
        end
    end

    methods (Static, Hidden)
        function opts = runOptions(args)
            % Name/value pairs (optionally after a struct) -> struct named like DynlibRunOptions.
            opts = struct();
            if ~isempty(args) && isstruct(args{1})
                s = args{1};
                f = fieldnames(s);
                for k = 1:numel(f)
                    opts = dynlib.Sim.setOption(opts, f{k}, s.(f{k}));
                end
                args = args(2:end);
            end
            if mod(numel(args), 2) ~= 0
                error('dynlib:invalidArgument', 'run takes name/value pairs');
            end
            for k = 1:2:numel(args)
                name = dynlib.Sim.text(args{k});
                if ~ischar(name)
                    error('dynlib:invalidArgument', 'run: option names must be character vectors');
                end
                opts = dynlib.Sim.setOption(opts, name, args{k + 1});
            end
        end

        function opts = setOption(opts, name, value)
            known = dynlib.Sim.RunOptionNames;
            key = lower(strrep(name, '_', ''));
            match = find(strcmp(key, lower(strrep(known, '_', ''))), 1);
            if isempty(match)
                error('dynlib:invalidArgument', ...
                    'unknown run option ''%s'' (known: %s)', name, strjoin(known, ', '));
            end
            name = known{match};
            switch name
                case 'record_vars'
                    if ischar(value)
                        value = {value};
                    elseif ~iscell(value)
                        value = cellstr(value);   % MATLAB string arrays
                    end
                case {'ic', 'params'}
                    value = double(value);
                case {'tag', 'checkpoint_dir'}
                    value = dynlib.Sim.text(value);
            end
            opts.(name) = value;
        end

        function [names, values, flags] = pairs(args, flagNames)
            % name/value pairs (or a leading struct) -> cellstr names and double values;
            % names listed in flagNames are returned separately in the struct flags.
            names = {};
            values = zeros(0, 1);
            flags = struct();
            if ~isempty(args) && isstruct(args{1})
                s = args{1};
                f = fieldnames(s);
                for k = 1:numel(f)
                    names{end + 1} = f{k}; %#ok<AGROW>
                    values(end + 1, 1) = double(s.(f{k})); %#ok<AGROW>
                end
                args = args(2:end);
            end
            if mod(numel(args), 2) ~= 0
                error('dynlib:invalidArgument', 'expected name/value pairs');
            end
            for k = 1:2:numel(args)
                name = dynlib.Sim.text(args{k});
                if any(strcmp(name, flagNames))
                    flags.(name) = args{k + 1};
                else
                    names{end + 1} = name; %#ok<AGROW>
                    values(end + 1, 1) = double(args{k + 1}); %#ok<AGROW>
                end
            end
        end

        function s = structArray(decoded, fields)
            % jsondecode of a JSON array of objects -> struct column (0x1 when empty).
            if isempty(decoded)
                args = [fields; repmat({{}}, 1, numel(fields))];
                s = struct(args{:});
                s = reshape(s, 0, 1);
            elseif iscell(decoded)
                s = vertcat(decoded{:});
            else
                s = decoded(:);
            end
        end

        function x = text(x)
            % MATLAB string scalars -> character vectors (Octave has no string class).
            if isstring(x) && isscalar(x)
                x = char(x);
            end
        end

        function f = fieldFor(name, r)
            % A struct field name for a recorded variable.
            f = name;
            if ~isvarname(f)
                f = regexprep(f, '[^A-Za-z0-9_]', '_');
                if isempty(f) || ~isletter(f(1))
                    f = ['x' f];
                end
                f = f(1:min(end, namelengthmax));
            end
            while isfield(r, f)
                f = [f '_']; %#ok<AGROW>
            end
        end
    end
end
