function mexfile = build_mex(libdir, outdir)
% build_mex([libdir [, outdir]])  Builds the dynlib MEX gateway (dynlib_mex).
%
%   libdir  directory holding libdynlib.so / .dylib / .dll (default: <repo>/target/release
%           from `cargo build --release`, or target/release/deps when the library there is
%           newer: `cargo test --release` refreshes only that copy)
%   outdir  where the MEX file goes (default: this directory, next to +dynlib)
%
% Works in MATLAB (mex -R2018a) and GNU Octave (mkoctfile --mex). The MEX is linked with
% an rpath to libdir, so libdynlib is found without setting LD_LIBRARY_PATH (on Windows put
% libdir on PATH instead). Then: addpath(outdir); addpath(<this directory>).

here = fileparts(mfilename('fullpath'));
root = fileparts(fileparts(here));   % bindings/matlab -> repository root
if nargin < 1 || isempty(libdir)
    libdir = default_libdir(fullfile(root, 'target', 'release'));
end
if nargin < 2 || isempty(outdir)
    outdir = here;
end
libdir = absolute(libdir);
outdir = absolute(outdir);
if ~exist(outdir, 'dir')
    mkdir(outdir);
end
src = fullfile(here, 'dynlib_mex.c');
% Unload a MEX from an earlier build (this frees the handles it still holds), so the new file
% is the one that is loaded and, on Windows, the old one can be replaced.
clear('dynlib_mex');
inc = fullfile(root, 'include');

if exist('OCTAVE_VERSION', 'builtin')
    mexfile = fullfile(outdir, ['dynlib_mex.' mexext()]);
    % mkoctfile (7.x) mishandles an output path with spaces: build in a temporary directory
    % and move the result.
    tmp = tempname();
    mkdir(tmp);
    built = fullfile(tmp, ['dynlib_mex.' mexext()]);
    args = {'--mex', '-DMX_HAS_INTERLEAVED_COMPLEX=1', ['-I' inc], ['-L' libdir], ...
        '-ldynlib', ['-Wl,-rpath,' libdir], '-o', built, src};
    [out, status] = mkoctfile(args{:});
    if status == 0
        [moved, message] = movefile(built, mexfile, 'f');
    end
    confirm = confirm_recursive_rmdir(false);
    rmdir(tmp, 's');
    confirm_recursive_rmdir(confirm);
    if status ~= 0
        error('dynlib:build', 'mkoctfile failed (status %d):\n%s', status, out);
    end
    if ~moved
        error('dynlib:build', 'cannot move the MEX file to %s: %s', mexfile, message);
    end
else
    args = {'-R2018a', ['-I' inc], ['-L' libdir], '-ldynlib', '-outdir', outdir, src};
    if ~ispc
        args = [args, {['LDFLAGS=$LDFLAGS -Wl,-rpath,' libdir]}];
    end
    mex(args{:});
    mexfile = fullfile(outdir, ['dynlib_mex.' mexext()]);
end
end

function p = absolute(p)
% An absolute path, so the rpath stays valid wherever MATLAB runs from.
if ~(strncmp(p, '/', 1) || ~isempty(regexp(p, '^[A-Za-z]:[\\/]', 'once')))
    p = fullfile(pwd, p);
end
end

function d = default_libdir(release)
d = release;
newest = -Inf;
for c = {release, fullfile(release, 'deps')}
    for name = {'libdynlib.so', 'libdynlib.dylib', 'dynlib.dll'}
        f = dir(fullfile(c{1}, name{1}));
        if numel(f) == 1 && f.datenum > newest
            newest = f.datenum;
            d = c{1};
        end
    end
end
end
