//! Static check of the Julia binding (`bindings/julia/src/Dynlib.jl`) against the C header, for
//! machines without a Julia runtime: every `ccall((:name, libdynlib), Ret, (Args...), ...)`
//! must name a function of `include/dynlib.h`, with a return type and argument types that
//! correspond to the C declaration (Cdouble ↔ double, Csize_t ↔ size_t, Cint/Int32 ↔
//! int32_t/DynlibStatus, UInt64 ↔ uint64_t, Bool ↔ bool, Cstring ↔ const char *, Ptr{T} and
//! Ref{T} ↔ T *, Ptr{Cvoid} ↔ an opaque handle pointer, …) and as many passed arguments as
//! types; and the Julia mirrors of `DynlibRunOptions` and `DynlibSegmentInfo` must have the C
//! field names, order and types. The last tests break the binding on purpose and check that
//! the checker notices.

use std::collections::BTreeMap;
use std::path::Path;

// ------------------------------------------------------------------------------------------
// Types
// ------------------------------------------------------------------------------------------

/// A C or Julia type reduced to a base name and a pointer depth.
#[derive(Clone, Debug, PartialEq)]
struct Ty {
    base: String,
    ptr: usize,
}

impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.base, "*".repeat(self.ptr))
    }
}

/// Opaque handle types: only `Ptr{Cvoid}` stands for pointers to them.
const OPAQUE: [&str; 3] = ["DynlibModel", "DynlibSim", "DynlibEnsemble"];

/// `const struct DynlibModel *const *` → (DynlibModel, 2); typedefs of integers normalised.
fn c_type(text: &str) -> Ty {
    let ptr = text.matches('*').count();
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '*')
        .filter(|w| !w.is_empty() && *w != "const" && *w != "struct")
        .collect();
    assert_eq!(words.len(), 1, "cannot read the C type '{text}'");
    let base = match words[0] {
        "DynlibStatus" | "int" => "int32_t",
        other => other,
    };
    Ty {
        base: base.to_string(),
        ptr,
    }
}

/// `Ptr{Ptr{UInt8}}` → (uint8_t, 2), `Ref{Csize_t}` → (size_t, 1), `Cstring` → (char, 1).
fn julia_type(text: &str) -> Result<Ty, String> {
    let t = text.trim();
    for wrapper in ["Ptr{", "Ref{"] {
        if let Some(inner) = t.strip_prefix(wrapper).and_then(|r| r.strip_suffix('}')) {
            let mut ty = julia_type(inner)?;
            ty.ptr += 1;
            return Ok(ty);
        }
    }
    let (base, ptr) = match t {
        "Cdouble" | "Float64" => ("double", 0),
        "Csize_t" => ("size_t", 0),
        "Cint" | "Int32" => ("int32_t", 0),
        "UInt64" | "Culonglong" => ("uint64_t", 0),
        "UInt8" | "Cuchar" => ("uint8_t", 0),
        "Int8" | "Cchar" => ("char", 0),
        "Bool" => ("bool", 0),
        "Cvoid" => ("void", 0),
        "Cstring" => ("char", 1),
        "DynlibRunOptions" | "DynlibSegmentInfo" | "DynlibCallbackModel" => (t, 0),
        _ => return Err(format!("unsupported Julia type '{t}' in a ccall")),
    };
    Ok(Ty {
        base: base.to_string(),
        ptr,
    })
}

/// Whether a Julia type may stand for a C type in a call or a struct field.
/// Function-pointer typedefs of the header (callback types).
const FN_POINTERS: &[&str] = &[
    "DynlibProgressFn",
    "DynlibRhsFn",
    "DynlibEventCondFn",
    "DynlibEventActionFn",
];

fn corresponds(j: &Ty, c: &Ty) -> bool {
    // A C function-pointer typedef is a `Ptr{Cvoid}` (a `@cfunction` pointer) in Julia.
    if FN_POINTERS.contains(&c.base.as_str()) && c.ptr == 0 {
        return j.base == "void" && j.ptr == 1;
    }
    if j.ptr != c.ptr {
        return false;
    }
    let (jb, cb) = (j.base.as_str(), c.base.as_str());
    match cb {
        // Opaque handles are `Ptr{Cvoid}` on the Julia side (at any depth: `Ref{Ptr{Cvoid}}`
        // for an out-parameter); `void *` itself likewise.
        _ if OPAQUE.contains(&cb) => jb == "void" && c.ptr > 0,
        // C `char` data: UInt8 (as Julia strings are) or Int8/Cchar.
        "char" => jb == "char" || jb == "uint8_t",
        // C `bool` is one byte: Bool, or Cuchar/UInt8.
        "bool" => jb == "bool" || jb == "uint8_t",
        _ => jb == cb,
    }
}

// ------------------------------------------------------------------------------------------
// The header
// ------------------------------------------------------------------------------------------

#[derive(Debug)]
struct CFunction {
    ret: Ty,
    args: Vec<(String, Ty)>,
}

#[derive(Debug, Default)]
struct Header {
    functions: BTreeMap<String, CFunction>,
    structs: BTreeMap<String, Vec<(String, Ty)>>,
}

fn strip_c_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
            out.push('\n');
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    // Preprocessor lines (and their `\` continuations) carry no declarations we check.
    let mut in_directive = false;
    out.lines()
        .filter(|l| {
            let directive = in_directive || l.trim_start().starts_with('#');
            in_directive = directive && l.trim_end().ends_with('\\');
            !directive
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `const char *const *record_vars` → ("record_vars", char**).
fn c_declarator(decl: &str) -> (String, Ty) {
    let decl = decl.trim();
    let split = decl
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
        .expect("a declaration has a type");
    (decl[split + 1..].to_string(), c_type(&decl[..=split]))
}

fn parse_header(text: &str) -> Header {
    let code = strip_c_comments(text);
    let mut header = Header::default();

    // Structs: typedef struct Name { fields } Name;
    let mut rest = code.as_str();
    while let Some(pos) = rest.find("typedef struct ") {
        let after = &rest[pos + "typedef struct ".len()..];
        let name_end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap();
        let name = after[..name_end].to_string();
        let tail = after[name_end..].trim_start();
        if let Some(body) = tail.strip_prefix('{') {
            let close = body.find('}').expect("struct body is closed");
            let fields = body[..close]
                .split(';')
                .filter(|f| !f.trim().is_empty())
                .map(c_declarator)
                .collect();
            header.structs.insert(name, fields);
            rest = &body[close..];
        } else {
            rest = tail;
        }
    }

    // Functions: every top-level declaration `Ret dynlib_name(args);`.
    for chunk in code.split(';') {
        let chunk = chunk.rsplit(['{', '}']).next().unwrap().trim();
        if chunk.starts_with("typedef") {
            continue;
        }
        let Some(open) = chunk.find('(') else {
            continue;
        };
        let before = &chunk[..open];
        let (name, ret) = c_declarator(before);
        if !name.starts_with("dynlib_") {
            continue;
        }
        let params = chunk[open + 1..]
            .trim_end()
            .strip_suffix(')')
            .expect("parameter list closes");
        let args = if params.trim() == "void" {
            vec![]
        } else {
            params.split(',').map(c_declarator).collect()
        };
        header.functions.insert(name, CFunction { ret, args });
    }
    header
}

// ------------------------------------------------------------------------------------------
// The Julia module
// ------------------------------------------------------------------------------------------

/// Splits at top-level commas (outside (), {}, [] and string literals); empty trailing parts
/// (as in the 1-tuple `(Cint,)`) are dropped.
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = vec![];
    let mut depth = 0i32;
    let mut cur = String::new();
    let mut in_str = false;
    let mut prev = '\0';
    for c in text.chars() {
        if in_str {
            if c == '"' && prev != '\\' {
                in_str = false;
            }
        } else {
            match c {
                '"' => in_str = true,
                '(' | '{' | '[' => depth += 1,
                ')' | '}' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut cur));
                    prev = c;
                    continue;
                }
                _ => {}
            }
        }
        cur.push(c);
        prev = c;
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The text inside the parentheses that open at `open` (an index of '(').
fn balanced(text: &str, open: usize) -> Result<&str, String> {
    let mut depth = 0;
    let mut in_str = false;
    let mut prev = '\0';
    for (i, c) in text[open..].char_indices() {
        if in_str {
            if c == '"' && prev != '\\' {
                in_str = false;
            }
        } else {
            match c {
                '"' => in_str = true,
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(&text[open + 1..open + i]);
                    }
                }
                _ => {}
            }
        }
        prev = c;
    }
    Err(format!("unbalanced parentheses after offset {open}"))
}

fn strip_parens(text: &str) -> Option<&str> {
    text.trim().strip_prefix('(')?.strip_suffix(')')
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

#[derive(Debug)]
struct CCall {
    line: usize,
    name: String,
    ret: String,
    arg_types: Vec<String>,
    n_passed: usize,
}

fn parse_ccalls(jl: &str) -> Result<Vec<CCall>, String> {
    let mut calls = vec![];
    for (pos, _) in jl.match_indices("ccall(") {
        let ident_before = jl[..pos]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '@');
        if ident_before {
            continue;
        }
        let line = line_of(jl, pos);
        let inner = balanced(jl, pos + "ccall".len())?;
        let parts = split_top_level(inner);
        if parts.len() < 3 {
            return Err(format!("line {line}: ccall with fewer than 3 arguments"));
        }
        let target = strip_parens(&parts[0])
            .ok_or_else(|| format!("line {line}: ccall target is not a (:name, lib) tuple"))?;
        let target = split_top_level(target);
        let [sym, lib] = target.as_slice() else {
            return Err(format!(
                "line {line}: ccall target is not a (:name, lib) tuple"
            ));
        };
        let name = sym
            .strip_prefix(':')
            .ok_or_else(|| format!("line {line}: ccall function '{sym}' is not a symbol"))?;
        if lib != "libdynlib" {
            return Err(format!(
                "line {line}: ccall of {name} uses library '{lib}', not libdynlib"
            ));
        }
        let types = strip_parens(&parts[2])
            .ok_or_else(|| format!("line {line}: ccall argument types are not a tuple"))?;
        calls.push(CCall {
            line,
            name: name.to_string(),
            ret: parts[1].clone(),
            arg_types: split_top_level(types),
            n_passed: parts.len() - 3,
        });
    }
    Ok(calls)
}

/// `struct Name` … `end` blocks: the `field::Type` lines in order.
fn parse_julia_structs(jl: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<(String, String)>)> = None;
    for line in jl.lines() {
        let line = line.split('#').next().unwrap().trim();
        if let Some((name, fields)) = current.as_mut() {
            if line == "end" {
                out.insert(name.clone(), std::mem::take(fields));
                current = None;
            } else if let Some((f, t)) = line.split_once("::") {
                fields.push((f.trim().to_string(), t.trim().to_string()));
            }
        } else if let Some(name) = line.strip_prefix("struct ") {
            current = Some((name.trim().to_string(), vec![]));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// The check
// ------------------------------------------------------------------------------------------

/// The mirrored structs the binding must define.
const MIRRORED: [&str; 2] = ["DynlibRunOptions", "DynlibSegmentInfo"];

/// Every mismatch between the Julia module and the header, and the functions checked.
fn check(jl: &str, header: &Header) -> (Vec<String>, Vec<String>) {
    let mut errors = vec![];
    let calls = match parse_ccalls(jl) {
        Ok(c) => c,
        Err(e) => return (vec![e], vec![]),
    };
    if calls.is_empty() {
        errors.push("no ccall found".to_string());
    }
    let mut checked = vec![];
    for call in &calls {
        let at = format!("Dynlib.jl line {} ({})", call.line, call.name);
        let Some(f) = header.functions.get(&call.name) else {
            errors.push(format!(
                "{at}: no function '{}' in include/dynlib.h",
                call.name
            ));
            continue;
        };
        checked.push(call.name.clone());
        match julia_type(&call.ret) {
            Ok(j) if corresponds(&j, &f.ret) => {}
            Ok(j) => errors.push(format!(
                "{at}: returns {} ({j}) but C returns {}",
                call.ret, f.ret
            )),
            Err(e) => errors.push(format!("{at}: {e}")),
        }
        if call.arg_types.len() != f.args.len() {
            errors.push(format!(
                "{at}: {} argument types, C has {} parameters",
                call.arg_types.len(),
                f.args.len()
            ));
        }
        if call.n_passed != call.arg_types.len() {
            errors.push(format!(
                "{at}: {} arguments passed for {} argument types",
                call.n_passed,
                call.arg_types.len()
            ));
        }
        for (i, (jt, (pname, ct))) in call.arg_types.iter().zip(&f.args).enumerate() {
            match julia_type(jt) {
                Ok(j) if corresponds(&j, ct) => {}
                Ok(j) => errors.push(format!(
                    "{at}: argument {} ({pname}) is {jt} ({j}) but C has {ct}",
                    i + 1
                )),
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
    }

    let structs = parse_julia_structs(jl);
    for name in MIRRORED {
        let Some(jfields) = structs.get(name) else {
            errors.push(format!("Dynlib.jl defines no struct {name}"));
            continue;
        };
        let cfields = &header.structs[name];
        if jfields.len() != cfields.len() {
            errors.push(format!(
                "struct {name}: {} fields in Julia, {} in C",
                jfields.len(),
                cfields.len()
            ));
        }
        for (i, ((jn, jt), (cn, ct))) in jfields.iter().zip(cfields).enumerate() {
            if jn != cn {
                errors.push(format!(
                    "struct {name} field {}: '{jn}' in Julia, '{cn}' in C",
                    i + 1
                ));
            }
            match julia_type(jt) {
                Ok(j) if corresponds(&j, ct) => {}
                Ok(j) => errors.push(format!(
                    "struct {name} field {cn}: {jt} ({j}) in Julia, {ct} in C"
                )),
                Err(e) => errors.push(format!("struct {name} field {cn}: {e}")),
            }
        }
    }
    checked.sort();
    checked.dedup();
    (errors, checked)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn header() -> Header {
    parse_header(&read("include/dynlib.h"))
}

#[test]
fn header_parser_reads_the_api() {
    let h = header();
    let load = &h.functions["dynlib_model_load"];
    assert_eq!(load.ret, c_type("DynlibStatus"));
    assert_eq!(
        load.args
            .iter()
            .map(|(_, t)| t.to_string())
            .collect::<Vec<_>>(),
        ["char*", "char*", "DynlibModel**"]
    );
    assert!(h.functions["dynlib_version"].args.is_empty());
    assert_eq!(h.functions["dynlib_sim_free"].ret.to_string(), "void");
    assert_eq!(h.structs["DynlibRunOptions"].len(), 31);
    assert_eq!(h.structs["DynlibSegmentInfo"].len(), 9);
    assert!(h.functions.len() >= 50, "{} functions", h.functions.len());
    // Every declared function has a `DYNLIB_... dynlib_` prefix and nothing else slipped in.
    assert!(h.functions.keys().all(|k| k.starts_with("dynlib_")));
}

#[test]
fn julia_module_matches_the_header() {
    let h = header();
    let jl = read("bindings/julia/src/Dynlib.jl");
    let (errors, checked) = check(&jl, &h);
    assert!(
        errors.is_empty(),
        "Dynlib.jl does not match include/dynlib.h:\n  {}",
        errors.join("\n  ")
    );
    // The binding covers the whole API except the host-callback model constructor.
    let missing: Vec<&String> = h
        .functions
        .keys()
        .filter(|k| !checked.contains(k))
        .collect();
    assert_eq!(
        missing,
        [
            "dynlib_callback_model_init_sized",
            "dynlib_model_from_callbacks"
        ],
        "header functions the Julia binding does not call"
    );
    eprintln!("{} C functions checked in Dynlib.jl", checked.len());
}

#[test]
fn julia_example_uses_the_module() {
    let ex = read("bindings/julia/example.jl");
    assert!(ex.contains("include(joinpath(@__DIR__, \"src\", \"Dynlib.jl\"))"));
    let jl = read("bindings/julia/src/Dynlib.jl");
    // Every function the example calls with `!` or from the export list is exported.
    for name in [
        "run!",
        "snapshot!",
        "reset!",
        "assign!",
        "results",
        "segments",
        "export_snapshot",
        "import_snapshot!",
        "inspect_snapshot",
        "add_preset!",
        "save_presets",
        "load_presets!",
        "apply_preset!",
        "list_presets",
        "config!",
        "config",
        "list_stepper_config",
    ] {
        assert!(
            ex.contains(&format!("{name}(")),
            "example.jl does not use {name}"
        );
        assert!(
            jl.contains(&format!("function {name}(")) || jl.contains(&format!("\n{name}(")),
            "Dynlib.jl does not define {name}"
        );
        let exports = jl
            .split("export ")
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        assert!(
            split_top_level(exports).iter().any(|e| e == name),
            "Dynlib.jl does not export {name}"
        );
    }
}

/// Applies `from → to` once to the module and expects the checker to report `expect`.
fn broken(from: &str, to: &str, expect: &str) {
    let jl = read("bindings/julia/src/Dynlib.jl");
    assert!(jl.contains(from), "mutation source '{from}' not found");
    let mutated = jl.replacen(from, to, 1);
    let (errors, _) = check(&mutated, &header());
    assert!(
        errors.iter().any(|e| e.contains(expect)),
        "breaking '{from}' → '{to}' was not reported as '{expect}'; errors: {errors:#?}"
    );
}

#[test]
fn checker_catches_a_wrong_argument_type() {
    // size_t index passed as Cint.
    broken(
        "(:dynlib_sim_name_segment, libdynlib), Cint, (Ptr{Cvoid}, Csize_t, Cstring)",
        "(:dynlib_sim_name_segment, libdynlib), Cint, (Ptr{Cvoid}, Cint, Cstring)",
        "argument 2 (index) is Cint",
    );
    // uint64_t* results buffer read as doubles.
    broken(
        "(Ptr{Cvoid}, Ptr{UInt64}, Csize_t, Ref{Csize_t})",
        "(Ptr{Cvoid}, Ptr{Cdouble}, Csize_t, Ref{Csize_t})",
        "argument 2 (buf) is Ptr{Cdouble}",
    );
    // bool* as Ref{Cint}.
    broken(
        "Cstring, Ref{Bool}",
        "Cstring, Ref{Cint}",
        "argument 3 (ok) is Ref{Cint}",
    );
    // A handle passed by value where C wants a pointer to it.
    broken(
        "(Ptr{Cvoid}, Ref{Ptr{Cvoid}}),\n                     _mptr(model), out)",
        "(Ptr{Cvoid}, Ptr{Cvoid}),\n                     _mptr(model), out)",
        "argument 2 (sim_out) is Ptr{Cvoid}",
    );
}

#[test]
fn checker_catches_wrong_returns_counts_and_names() {
    broken(
        "ccall((:dynlib_sim_free, libdynlib), Cvoid",
        "ccall((:dynlib_sim_free, libdynlib), Cint",
        "returns Cint",
    );
    broken(
        "(:dynlib_sim_time, libdynlib), Cint, (Ptr{Cvoid}, Ref{Cdouble}), _sptr(s), t)",
        "(:dynlib_sim_time, libdynlib), Cint, (Ptr{Cvoid},), _sptr(s), t)",
        "1 argument types, C has 2 parameters",
    );
    broken(
        "(:dynlib_sim_time, libdynlib), Cint, (Ptr{Cvoid}, Ref{Cdouble}), _sptr(s), t)",
        "(:dynlib_sim_time, libdynlib), Cint, (Ptr{Cvoid}, Ref{Cdouble}), _sptr(s))",
        "1 arguments passed for 2 argument types",
    );
    broken(
        ":dynlib_sim_reset,",
        ":dynlib_sim_rest,",
        "no function 'dynlib_sim_rest'",
    );
    broken(
        "(:dynlib_version, libdynlib)",
        "(:dynlib_version, \"libdynlib\")",
        "not libdynlib",
    );
}

#[test]
fn checker_catches_struct_mismatches() {
    // Wrong field type.
    broken("    N::UInt64\n", "    N::Cdouble\n", "field N: Cdouble");
    // Swapped fields.
    broken(
        "    step_start::UInt64\n    step_end::UInt64\n",
        "    step_end::UInt64\n    step_start::UInt64\n",
        "'step_end' in Julia, 'step_start' in C",
    );
    // A missing field.
    broken(
        "    checkpoint_keep::UInt64\n",
        "",
        "struct DynlibRunOptions: 30 fields in Julia, 31 in C",
    );
    // bool as a 4-byte integer would shift every later field.
    broken(
        "    resume::Bool\n    tag::",
        "    resume::Cint\n    tag::",
        "field resume: Cint",
    );
}

/// `] dev bindings/julia` needs a package layout: Project.toml with the package's name, a UUID
/// and its one dependency (the Libdl standard library), and `src/<Name>.jl` defining the module.
#[test]
fn julia_package_layout() {
    let project = read("bindings/julia/Project.toml");
    let table: toml::Table = project.parse().expect("Project.toml is TOML");
    assert_eq!(table["name"].as_str(), Some("Dynlib"));
    let uuid = table["uuid"].as_str().expect("a uuid");
    let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
    assert!(
        uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
        "{uuid}"
    );
    assert_eq!(
        table["deps"]["Libdl"].as_str(),
        Some("8f399da3-3557-5675-b5ff-fb832c97cbdb")
    );
    assert_eq!(table["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    let jl = read("bindings/julia/src/Dynlib.jl");
    assert!(jl.contains("\nmodule Dynlib\n"));
    assert!(jl.contains("using Libdl"));
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bindings/julia/Dynlib.jl")
        .exists());
}
