classdef Ensemble < handle
    % dynlib.Ensemble  N sims of one model with per-member parameters and initial conditions,
    % run with one set of options on a thread pool. Member i ends bit-identical to a single
    % dynlib.Sim given the same inputs, whatever the thread count.
    %
    %   m = dynlib.Model('builtin://ode/izhikevich');
    %   ens = dynlib.Ensemble(m, 1000);                    % or dynlib.Ensemble(sim, n)
    %   ens.setParamColumn('I', linspace(0, 20, 1000));    % or setParams(n x n_params matrix)
    %   ens.run('T', 1000, 'record', false);               % 'threads', k (0 = every core)
    %   y = ens.finalStates();                             % 1000 x 2 (v, u)
    %   spikes = ens.eventCounts();
    %   s = ens.member(3);                                 % an ordinary dynlib.Sim (a copy)
    %   ens.exportCheckpoint('sweep.npz');                 % one file, atomic
    %
    % Member indices are 1-based. A member that fails keeps its previous state; run then
    % raises (how many failed, the first one's message) and memberStatus(i) tells each.

    properties (SetAccess = private)
        Model   % the dynlib.Model of the members
    end

    properties (SetAccess = private, Hidden)
        Ptr = uint64(0)   % library handle (uint64 scalar), 0 once freed
    end

    methods
        function obj = Ensemble(source, n)
            if nargin < 2
                error('dynlib:invalidArgument', 'dynlib.Ensemble(model_or_sim, n_members)');
            end
            if isa(source, 'dynlib.Sim')
                obj.Model = source.Model;
                obj.Ptr = dynlib_mex('ensemble_from_sim', source.Ptr, n);
            elseif isa(source, 'dynlib.Model')
                obj.Model = source;
                obj.Ptr = dynlib_mex('ensemble_new', source.Ptr, n);
            else
                error('dynlib:invalidArgument', ...
                    'dynlib.Ensemble needs a dynlib.Model or a dynlib.Sim');
            end
        end

        function delete(obj)
            if obj.Ptr ~= 0
                dynlib_mex('ensemble_free', obj.Ptr);
                obj.Ptr = uint64(0);
            end
        end

        function n = nMembers(obj)
            n = dynlib_mex('ensemble_count', obj.Ptr);
        end

        function n = nFailed(obj)
            [~, n] = dynlib_mex('ensemble_count', obj.Ptr);
        end

        function setLockstepLanes(obj, lanes)
            % setLockstepLanes(K)  members per lock-step batch (rounded up to even, at most
            % 64; 0 = off). The results are the same bits whatever K.
            dynlib_mex('ensemble_lockstep', obj.Ptr, lanes);
        end

        function k = lockstepLanes(obj)
            k = dynlib_mex('ensemble_lockstep', obj.Ptr);
        end

        function n = lastRunLockstepSteps(obj)
            % Member-steps the lock-step kernel took in the last run (a diagnostic).
            [~, n] = dynlib_mex('ensemble_lockstep', obj.Ptr);
        end

        function setParams(obj, P)
            % setParams(P)  P is n_members x n_params (the model's parameter order).
            dynlib_mex('ensemble_set_params', obj.Ptr, P);
        end

        function setIc(obj, Y)
            % setIc(Y)  Y is n_members x n_states: the next fresh run's initial states.
            dynlib_mex('ensemble_set_ic', obj.Ptr, Y);
        end

        function setParamColumn(obj, name, values)
            % setParamColumn(name, values)  Parameter name of member i = values(i).
            if ~any(strcmp(obj.Model.paramNames(), name))
                error('dynlib:unknownName', 'unknown parameter ''%s''', name);
            end
            dynlib_mex('ensemble_set_column', obj.Ptr, dynlib.Sim.text(name), values(:));
        end

        function setColumn(obj, name, values)
            % setColumn(name, values)  State or parameter name of member i = values(i).
            dynlib_mex('ensemble_set_column', obj.Ptr, dynlib.Sim.text(name), values(:));
        end

        function run(obj, varargin)
            % run(name, value, ...)  As dynlib.Sim.run, plus 'threads' (0 = every core).
            threads = 0;
            args = {};
            k = 1;
            while k <= numel(varargin)
                if ischar(varargin{k}) && strcmpi(varargin{k}, 'threads') && k < numel(varargin)
                    threads = varargin{k + 1};
                else
                    args = [args, varargin(k:min(k + 1, end))]; %#ok<AGROW>
                end
                k = k + 2;
            end
            dynlib_mex('ensemble_run', obj.Ptr, dynlib.Sim.runOptions(args), threads);
        end

        function [id, message] = memberStatus(obj, i)
            % [id, message] = memberStatus(i)  '' and '' if member i's last run succeeded,
            % else the error identifier (e.g. 'dynlib:nonFinite') and the message.
            [id, message] = dynlib_mex('ensemble_member_status', obj.Ptr, i - 1);
        end

        function Y = finalStates(obj)
            Y = dynlib_mex('ensemble_final_states', obj.Ptr);   % n_members x n_states
        end

        function P = params(obj)
            P = dynlib_mex('ensemble_params', obj.Ptr);          % n_members x n_params
        end

        function t = times(obj)
            t = dynlib_mex('ensemble_times', obj.Ptr);
        end

        function c = eventCounts(obj)
            c = dynlib_mex('ensemble_event_counts', obj.Ptr);
        end

        function c = stepCounts(obj)
            c = dynlib_mex('ensemble_step_counts', obj.Ptr);
        end

        function s = member(obj, i)
            % s = member(i)  Member i as an ordinary, independent dynlib.Sim (a copy).
            s = dynlib.Sim(obj.Model, '-handle', dynlib_mex('ensemble_member_sim', obj.Ptr, i - 1));
        end

        function exportCheckpoint(obj, path)
            dynlib_mex('ensemble_export_checkpoint', obj.Ptr, dynlib.Sim.text(path));
        end

        function importCheckpoint(obj, path)
            dynlib_mex('ensemble_import_checkpoint', obj.Ptr, dynlib.Sim.text(path));
        end
    end
end
