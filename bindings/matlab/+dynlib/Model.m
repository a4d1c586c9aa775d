classdef Model < handle
    % dynlib.Model  A loaded dynlib model (built-in, TOML file or inline TOML text).
    %
    %   m = dynlib.Model('builtin://ode/izhikevich')
    %   m = dynlib.Model('models/neuron.toml', 'rk45')    % stepper for sims of this model
    %   m = dynlib.Model(['inline:' tomlText])
    %
    %   m.stateNames(), m.paramNames(), m.auxNames()  -- cell arrays of names (column)
    %   m.info()                                      -- the model description (struct)
    %
    % The library handle is freed by delete (called when the last reference goes away).
    % Sims keep their own reference to the model, so a model may be deleted before its sims.
    % Errors are raised with identifiers such as dynlib:model (invalid model text, with line
    % and column) and dynlib:unknownName (unknown stepper).

    properties (SetAccess = private)
        Source = ''    % the source the model was loaded from
        Stepper = ''   % the stepper chosen at load ('' = the model's default)
    end

    properties (SetAccess = private, Hidden)
        Ptr = uint64(0)   % library handle (uint64 scalar), 0 once freed
    end

    methods
        function obj = Model(source, stepper)
            if nargin < 1
                error('dynlib:invalidArgument', 'dynlib.Model(source [, stepper]) needs a source');
            end
            if nargin < 2
                stepper = '';
            end
            source = dynlib.Sim.text(source);
            stepper = dynlib.Sim.text(stepper);
            obj.Ptr = dynlib_mex('model_load', source, stepper);
            obj.Source = source;
            obj.Stepper = stepper;
        end

        function delete(obj)
            if obj.Ptr ~= 0
                dynlib_mex('model_free', obj.Ptr);
                obj.Ptr = uint64(0);
            end
        end

        function names = stateNames(obj)
            % State names in state-vector order (cell column).
            names = dynlib_mex('model_state_names', obj.Ptr);
        end

        function names = paramNames(obj)
            % Parameter names in parameter-vector order (cell column).
            names = dynlib_mex('model_param_names', obj.Ptr);
        end

        function names = auxNames(obj)
            % Aux variable names (cell column).
            names = dynlib_mex('model_aux_names', obj.Ptr);
        end

        function s = info(obj)
            % The model description (kind, name, states and parameters with defaults, aux,
            % events, [sim] defaults, presets, spec hash), decoded from JSON.
            s = jsondecode(dynlib_mex('model_info_json', obj.Ptr));
        end
    end
end
