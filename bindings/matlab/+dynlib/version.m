function v = version()
% dynlib.version()  The version of the loaded dynlib library ('MAJOR.MINOR.PATCH').
v = dynlib_mex('version');
end
