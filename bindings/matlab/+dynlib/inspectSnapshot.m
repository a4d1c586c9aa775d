function meta = inspectSnapshot(path)
% dynlib.inspectSnapshot(path)  The meta.json of a snapshot file as a struct (schema, pins,
% names, time and step counters, stepper config), read without any session.
% Same as dynlib.Sim.inspectSnapshot.
meta = dynlib.Sim.inspectSnapshot(path);
end
