//! The Julia package (`bindings/julia/Recovar`) calls librecovar through `ccall`, which
//! trusts the types it is given. No Julia runtime is needed here: this test parses
//! `include/recovar.h` (prototypes, typedefs, enums, structs, `#define`s) and every `ccall`
//! in the package's sources, maps each C type to the Julia types that pass it (a fixed table,
//! below), and fails listing every mismatch: an unknown function, a wrong library, a wrong
//! argument count or type, a wrong return type, a header function the package does not
//! wrap, a constant with another value, a struct mirror with other fields.
//!
//! The type table (C → Julia), applied recursively through pointers:
//!
//! | C                         | Julia                                   |
//! |---------------------------|-----------------------------------------|
//! | `void` (return)           | `Cvoid`                                 |
//! | `int32_t`, enums          | `Int32` / `Cint`                        |
//! | `uint32_t`                | `UInt32` / `Cuint`                      |
//! | `int64_t`, `uint64_t`     | `Int64`, `UInt64`                       |
//! | `size_t`                  | `Csize_t`                               |
//! | `double`, `float`         | `Cdouble`/`Float64`, `Cfloat`/`Float32` |
//! | `char` (pointee)          | `UInt8` / `Cchar`                       |
//! | `const char *`            | `Cstring`, or `Ptr{UInt8}`              |
//! | `T *`                     | `Ptr{J(T)}` or, for arguments, `Ref{J(T)}` |
//! | opaque handle `H *`       | `Ptr{Cvoid}` (`H` → `Cvoid`)            |
//! | `S *`, S a struct         | `Ptr{S}` / `Ref{S}`, S mirrored in Julia field for field |
//! | function pointer          | `Ptr{Cvoid}`                            |

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

mod common;
use common::root;

// ------------------------------------------------------------------------------------------
// C header

/// A C type as written: base name (after `struct`/`enum`), whether the base is `const`, and
/// the pointer depth. Function pointers written inline get the base `<fnptr>`.
#[derive(Clone, Debug, PartialEq)]
struct CType {
    base: String,
    base_const: bool,
    depth: usize,
}

impl std::fmt::Display for CType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.base_const {
            write!(f, "const ")?;
        }
        write!(f, "{}", self.base)?;
        if self.depth > 0 {
            write!(f, " {}", "*".repeat(self.depth))?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct CFunction {
    ret: CType,
    params: Vec<(CType, String)>,
}

#[derive(Debug, Default)]
struct Header {
    functions: BTreeMap<String, CFunction>,
    /// `#define RCV_*` integers and enumerators.
    constants: BTreeMap<String, i64>,
    enums: BTreeSet<String>,
    opaque: BTreeSet<String>,
    structs: BTreeMap<String, Vec<(CType, String)>>,
    fn_pointers: BTreeSet<String>,
    aliases: HashMap<String, CType>,
}

/// Remove `/* */` and `//` comments.
fn strip_c_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'*' {
            i = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            out.push(' ');
        } else if b[i] == b'/' && i + 1 < b.len() && b[i + 1] == b'/' {
            i = src[i..].find('\n').map_or(b.len(), |e| i + e);
        } else {
            let c = src[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Keep the C view of the preprocessor: drop `#ifdef __cplusplus` regions, keep the rest,
/// collect integer `#define`s.
fn preprocess(src: &str, constants: &mut BTreeMap<String, i64>) -> String {
    // Each open conditional: (is it about __cplusplus, is its branch active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let mut out = String::new();
    for line in src.lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix('#') {
            let d = d.trim();
            let word = d.split_whitespace().next().unwrap_or("");
            let arg = d[word.len()..].trim();
            match word {
                "ifdef" => stack.push((arg == "__cplusplus", arg != "__cplusplus")),
                "ifndef" => stack.push((arg == "__cplusplus", true)),
                "if" => stack.push((false, true)),
                "else" => {
                    if let Some(top) = stack.last_mut() {
                        if top.0 {
                            top.1 = !top.1;
                        }
                    }
                }
                "endif" => {
                    stack.pop();
                }
                "define" if stack.iter().all(|s| s.1) => {
                    let mut it = arg.split_whitespace();
                    if let (Some(name), Some(value)) = (it.next(), it.next()) {
                        if let Some(v) = parse_c_int(value) {
                            constants.insert(name.to_string(), v);
                        }
                    }
                }
                _ => {}
            }
            continue;
        }
        if stack.iter().all(|s| s.1) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn parse_c_int(s: &str) -> Option<i64> {
    let s = s.trim().trim_start_matches('(').trim_end_matches(')');
    let s = s.trim_end_matches(['u', 'U', 'l', 'L']);
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return i64::from_str_radix(h, 16).ok();
    }
    s.parse().ok()
}

/// Split at `sep` where no bracket of any kind is open.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => depth -= 1,
            _ => {}
        }
        if c == sep && depth == 0 {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parse `const struct foo **name` into (type, name). `named` says whether a trailing
/// identifier is the declarator's name.
fn parse_decl(decl: &str, named: bool) -> Result<(CType, String), String> {
    let d = decl.trim();
    // Inline function pointer: RET (*name)(args)
    if let Some(open) = d.find("(*") {
        let close = d[open..]
            .find(')')
            .ok_or_else(|| format!("bad function pointer `{d}`"))?;
        let name = d[open + 2..open + close].trim().to_string();
        return Ok((
            CType {
                base: "<fnptr>".into(),
                base_const: false,
                depth: 0,
            },
            name,
        ));
    }
    let spaced = d.replace('*', " * ");
    let mut toks: Vec<&str> = spaced.split_whitespace().collect();
    let mut name = String::new();
    if named {
        if let Some(last) = toks.last() {
            if last.chars().all(is_ident_char) && toks.len() > 1 {
                name = last.to_string();
                toks.pop();
            }
        }
    }
    let mut base_const = false;
    let mut depth = 0;
    let mut base = Vec::new();
    for t in toks {
        match t {
            "*" => depth += 1,
            "const" if depth == 0 => base_const = true,
            "const" | "struct" | "enum" | "restrict" => {}
            t => base.push(t),
        }
    }
    if base.is_empty() {
        return Err(format!("no type in `{d}`"));
    }
    Ok((
        CType {
            base: base.join(" "),
            base_const,
            depth,
        },
        name,
    ))
}

fn parse_params(s: &str) -> Result<Vec<(CType, String)>, String> {
    let s = s.trim();
    if s.is_empty() || s == "void" {
        return Ok(Vec::new());
    }
    split_top(s, ',')
        .iter()
        .map(|p| parse_decl(p, true))
        .collect()
}

fn parse_enum_body(body: &str, constants: &mut BTreeMap<String, i64>) {
    let mut next = 0i64;
    for item in body.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n.trim(), parse_c_int(v).unwrap_or(next)),
            None => (item, next),
        };
        constants.insert(name.to_string(), value);
        next = value + 1;
    }
}

fn parse_header(src: &str) -> Result<Header, String> {
    let mut h = Header::default();
    let text = preprocess(&strip_c_comments(src), &mut h.constants);
    for stmt in split_top(&text, ';') {
        let s = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.is_empty() {
            continue;
        }
        let brace = s.find('{');
        if let Some(rest) = s.strip_prefix("typedef ") {
            if let (Some(open), Some(close)) = (brace, s.rfind('}')) {
                // typedef enum/struct NAME { body } NAME
                let head = s["typedef ".len()..open].trim();
                let body = &s[open + 1..close];
                let name = s[close + 1..].trim().to_string();
                if head.starts_with("enum") {
                    parse_enum_body(body, &mut h.constants);
                    h.enums.insert(name);
                } else if head.starts_with("struct") {
                    let fields = split_top(body, ';')
                        .iter()
                        .filter(|f| !f.trim().is_empty())
                        .map(|f| parse_decl(f, true))
                        .collect::<Result<Vec<_>, _>>()?;
                    h.structs.insert(name, fields);
                } else {
                    return Err(format!("unknown typedef `{s}`"));
                }
            } else if rest.contains("(*") {
                let (_, name) = parse_decl(rest, true)?;
                h.fn_pointers.insert(name);
            } else {
                let (ty, name) = parse_decl(rest, true)?;
                if ty.depth == 0 && (ty.base == name || ty.base.ends_with(&format!(" {name}"))) {
                    h.opaque.insert(name);
                } else if ty.depth == 0 && rest.trim_start().starts_with("struct") {
                    // typedef struct foo bar: an opaque type under another name.
                    h.opaque.insert(name);
                } else {
                    h.aliases.insert(name, ty);
                }
            }
            continue;
        }
        if let (Some(open), Some(close)) = (brace, s.rfind('}')) {
            let head = s[..open].trim();
            if let Some(name) = head.strip_prefix("enum") {
                // enum NAME { ... } (cbindgen with a fixed repr; the typedef follows)
                parse_enum_body(&s[open + 1..close], &mut h.constants);
                h.enums.insert(name.trim().to_string());
                continue;
            }
            if let Some(name) = head.strip_prefix("struct") {
                let name = name.trim().to_string();
                let fields = split_top(&s[open + 1..close], ';')
                    .iter()
                    .filter(|f| !f.trim().is_empty())
                    .map(|f| parse_decl(f, true))
                    .collect::<Result<Vec<_>, _>>()?;
                h.structs.insert(name, fields);
                continue;
            }
            return Err(format!("cannot parse `{s}`"));
        }
        // A prototype: RET NAME(PARAMS)
        let open = s.find('(').ok_or_else(|| format!("cannot parse `{s}`"))?;
        let close = s.rfind(')').ok_or_else(|| format!("cannot parse `{s}`"))?;
        let head = s[..open].trim();
        let name_start = head.rfind(|c: char| !is_ident_char(c)).map_or(0, |i| i + 1);
        let name = head[name_start..].to_string();
        let (ret, _) = parse_decl(&head[..name_start], false)?;
        let params = parse_params(&s[open + 1..close])?;
        h.functions.insert(name, CFunction { ret, params });
    }
    // Opaque typedefs declared before their struct body (cbindgen emits both forms).
    for name in h.structs.keys() {
        h.opaque.remove(name);
    }
    Ok(h)
}

// ------------------------------------------------------------------------------------------
// C type → Julia types

#[derive(Clone, Copy, PartialEq)]
enum Position {
    Argument,
    Return,
    Field,
}

fn scalar(base: &str) -> Option<&'static [&'static str]> {
    Some(match base {
        "void" => &["Cvoid"],
        "int8_t" => &["Int8"],
        "uint8_t" => &["UInt8"],
        "int16_t" => &["Int16"],
        "uint16_t" => &["UInt16"],
        "int32_t" | "int" => &["Int32", "Cint"],
        "uint32_t" | "unsigned int" => &["UInt32", "Cuint"],
        "int64_t" => &["Int64"],
        "uint64_t" => &["UInt64"],
        "size_t" => &["Csize_t"],
        "double" => &["Cdouble", "Float64"],
        "float" => &["Cfloat", "Float32"],
        "char" => &["Cchar"],
        "bool" => &["Bool"],
        _ => return None,
    })
}

/// Every Julia spelling (without spaces) that passes a value of C type `t` at `pos`.
fn julia_types(h: &Header, t: &CType, pos: Position) -> Result<Vec<String>, String> {
    if let Some(alias) = h.aliases.get(&t.base) {
        let mut a = alias.clone();
        a.depth += t.depth;
        a.base_const |= t.base_const;
        return julia_types(h, &a, pos);
    }
    if t.depth == 0 {
        if t.base == "<fnptr>" || h.fn_pointers.contains(&t.base) {
            return Ok(vec!["Ptr{Cvoid}".into()]);
        }
        if h.enums.contains(&t.base) {
            return Ok(vec!["Cint".into(), "Int32".into()]);
        }
        if h.structs.contains_key(&t.base) {
            return Ok(vec![t.base.clone()]);
        }
        if let Some(s) = scalar(&t.base) {
            if t.base == "void" && pos != Position::Return {
                return Err("`void` value".into());
            }
            return Ok(s.iter().map(|s| s.to_string()).collect());
        }
        return Err(format!("no Julia type for C type `{t}`"));
    }
    // A pointer: what it points to, then Ptr{..} (and Ref{..} for arguments).
    let inner_t = CType {
        base: t.base.clone(),
        base_const: t.base_const,
        depth: t.depth - 1,
    };
    let inner: Vec<String> =
        if inner_t.depth == 0 && (h.opaque.contains(&inner_t.base) || inner_t.base == "void") {
            vec!["Cvoid".into()]
        } else if inner_t.depth == 0 && inner_t.base == "char" {
            vec!["UInt8".into(), "Cchar".into()]
        } else {
            julia_types(h, &inner_t, Position::Field)?
        };
    let mut out = Vec::new();
    for i in &inner {
        out.push(format!("Ptr{{{i}}}"));
        if pos == Position::Argument {
            out.push(format!("Ref{{{i}}}"));
        }
    }
    if t.depth == 1 && t.base == "char" && (t.base_const || pos == Position::Field) {
        out.push("Cstring".into());
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Julia sources

/// Replace comments and string literals (with their interpolations) by blanks, keeping
/// byte offsets and line breaks.
fn strip_julia(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = vec![b' '; b.len()];
    let mut i = 0;
    fn blank_until(b: &[u8], out: &mut [u8], from: usize, to: usize) {
        let to = to.min(b.len());
        for (o, &c) in out[from..to].iter_mut().zip(&b[from..to]) {
            if c == b'\n' {
                *o = b'\n';
            }
        }
    }
    // Skip a string starting at `i` (at its opening quote); returns the index after it.
    fn skip_string(b: &[u8], i: usize) -> usize {
        let triple = b[i..].starts_with(b"\"\"\"");
        let mut k = i + if triple { 3 } else { 1 };
        while k < b.len() {
            if b[k] == b'\\' {
                k += 2;
            } else if triple && b[k..].starts_with(b"\"\"\"") {
                return k + 3;
            } else if !triple && b[k] == b'"' {
                return k + 1;
            } else if b[k] == b'$' && k + 1 < b.len() && b[k + 1] == b'(' {
                // Interpolation: balanced parentheses, strings inside skipped.
                let mut depth = 0;
                k += 1;
                while k < b.len() {
                    match b[k] {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                k += 1;
                                break;
                            }
                        }
                        b'"' => {
                            k = skip_string(b, k);
                            continue;
                        }
                        _ => {}
                    }
                    k += 1;
                }
            } else {
                k += 1;
            }
        }
        b.len()
    }
    while i < b.len() {
        if b[i..].starts_with(b"#=") {
            let end = src[i..].find("=#").map_or(b.len(), |e| i + e + 2);
            blank_until(b, &mut out, i, end);
            i = end;
        } else if b[i] == b'#' {
            let end = src[i..].find('\n').map_or(b.len(), |e| i + e);
            i = end;
        } else if b[i] == b'"' {
            let end = skip_string(b, i);
            blank_until(b, &mut out, i, end);
            out[i] = b'"';
            if end - 1 > i {
                out[end - 1] = b'"';
            }
            i = end;
        } else {
            out[i] = b[i];
            i += 1;
        }
    }
    String::from_utf8(out).expect("ASCII blanks keep UTF-8 valid")
}

#[derive(Debug)]
struct JuliaCall {
    line: usize,
    name: String,
    library: Option<String>,
    ret: String,
    args: Vec<String>,
    n_values: usize,
}

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The text inside the parentheses opening at `open`, or None when unbalanced.
fn balanced(s: &str, open: usize) -> Option<&str> {
    let mut depth = 0;
    for (k, c) in s[open..].char_indices() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[open + 1..open + k]);
                }
            }
            _ => {}
        }
    }
    None
}

fn strip_parens(s: &str) -> Option<&str> {
    let s = s.trim();
    (s.starts_with('(') && s.ends_with(')')).then(|| &s[1..s.len() - 1])
}

/// Every `ccall(` of the (stripped) source; errors for the ones that cannot be read but
/// mention an `rcv_` function.
fn julia_ccalls(file: &str, src: &str, errors: &mut Vec<String>) -> Vec<JuliaCall> {
    let text = strip_julia(src);
    let line_of = |pos: usize| text[..pos].matches('\n').count() + 1;
    let mut calls = Vec::new();
    for (pos, _) in text.match_indices("@ccall") {
        let line_end = text[pos..].find('\n').map_or(text.len(), |e| pos + e);
        if text[pos..line_end].contains("rcv_") {
            errors.push(format!(
                "{file}:{}: use ccall((:rcv_..., librecovar), ...) rather than @ccall (it is what this test reads)",
                line_of(pos)
            ));
        }
    }
    for (pos, _) in text.match_indices("ccall(") {
        if pos > 0 && text[..pos].ends_with('@') {
            continue;
        }
        let open = pos + "ccall".len();
        let line = line_of(pos);
        let Some(inner) = balanced(&text, open) else {
            errors.push(format!("{file}:{line}: unbalanced ccall"));
            continue;
        };
        let parts = split_top(inner, ',');
        let first = parts[0].trim();
        let (name, library) = if let Some(tuple) = strip_parens(first) {
            let t = split_top(tuple, ',');
            if t.len() != 2 {
                errors.push(format!("{file}:{line}: cannot read `{first}`"));
                continue;
            }
            (t[0].trim().to_string(), Some(squash(&t[1])))
        } else {
            (first.to_string(), None)
        };
        let Some(name) = name.strip_prefix(':').map(str::to_string) else {
            if first.contains("rcv_") || first.contains("librecovar") {
                errors.push(format!(
                    "{file}:{line}: the function of a librecovar ccall must be a literal `(:rcv_name, librecovar)`, not `{first}`"
                ));
            }
            continue;
        };
        let is_ours =
            name.starts_with("rcv_") || library.as_deref().is_some_and(|l| l == "librecovar");
        if !is_ours {
            continue;
        }
        if parts.len() < 3 {
            errors.push(format!("{file}:{line}: ccall of {name} lacks its types"));
            continue;
        }
        let Some(types) = strip_parens(&parts[2]) else {
            errors.push(format!(
                "{file}:{line}: the argument types of {name} must be a literal tuple, not `{}`",
                parts[2].trim()
            ));
            continue;
        };
        let mut args: Vec<String> = split_top(types, ',').iter().map(|t| squash(t)).collect();
        if args.last().is_some_and(String::is_empty) {
            args.pop();
        }
        calls.push(JuliaCall {
            line,
            name,
            library,
            ret: squash(&parts[1]),
            args,
            n_values: parts.len() - 3,
        });
    }
    calls
}

/// `const RCV_X = value` lines: name → integer value.
fn julia_constants(src: &str) -> BTreeMap<String, (usize, Option<i64>)> {
    let text = strip_julia(src);
    let mut out = BTreeMap::new();
    for (k, line) in text.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix("const ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once('=') else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with("RCV_") {
            continue;
        }
        let mut v = value.trim();
        // Int32(-1), Cint(0), UInt32(4), or a bare literal.
        if let Some(open) = v.find('(') {
            if v.ends_with(')') && v[..open].chars().all(is_ident_char) {
                v = &v[open + 1..v.len() - 1];
            }
        }
        out.insert(name.to_string(), (k + 1, parse_c_int(v)));
    }
    out
}

/// The fields of a Julia struct: (name, type) in order.
type JuliaFields = Vec<(String, String)>;

/// `[mutable] struct NAME ... end` with `field::Type` lines, for the names in `wanted`:
/// name → (line, fields).
fn julia_structs(src: &str, wanted: &BTreeSet<String>) -> BTreeMap<String, (usize, JuliaFields)> {
    let text = strip_julia(src);
    let mut out = BTreeMap::new();
    let mut current: Option<(String, usize, JuliaFields)> = None;
    for (k, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some((name, start, fields)) = current.as_mut() {
            if t == "end" {
                out.insert(name.clone(), (*start, std::mem::take(fields)));
                current = None;
            } else if let Some((f, ty)) = t.split_once("::") {
                if f.trim().chars().all(is_ident_char) {
                    fields.push((f.trim().to_string(), squash(ty)));
                }
            }
            continue;
        }
        let decl = t.strip_prefix("mutable ").unwrap_or(t);
        if let Some(name) = decl.strip_prefix("struct ") {
            let name = name.trim().to_string();
            if wanted.contains(&name) {
                current = Some((name, k + 1, Vec::new()));
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// The check

/// Every disagreement between the header and the Julia sources (file name, text).
fn check_binding(header: &str, sources: &[(String, String)]) -> Vec<String> {
    let h = match parse_header(header) {
        Ok(h) => h,
        Err(e) => return vec![format!("recovar.h: {e}")],
    };
    let mut errors = Vec::new();
    let mut wrapped = BTreeSet::new();
    let mut jl_consts = BTreeMap::new();
    let struct_names: BTreeSet<String> = h.structs.keys().cloned().collect();
    let mut jl_structs = BTreeMap::new();
    for (file, src) in sources {
        for c in julia_ccalls(file, src, &mut errors) {
            let at = format!("{file}:{}: {}", c.line, c.name);
            let Some(f) = h.functions.get(&c.name) else {
                errors.push(format!("{at}: no such function in recovar.h"));
                continue;
            };
            wrapped.insert(c.name.clone());
            match c.library.as_deref() {
                Some("librecovar") => {}
                Some(lib) if lib.starts_with('"') => errors.push(format!(
                    "{at}: library is a string literal, expected the constant `librecovar`"
                )),
                lib => errors.push(format!(
                    "{at}: library is `{}`, expected the constant `librecovar`",
                    lib.unwrap_or("(none)")
                )),
            }
            match julia_types(&h, &f.ret, Position::Return) {
                Ok(ok) if ok.contains(&c.ret) => {}
                Ok(ok) => errors.push(format!(
                    "{at}: returns `{}` in C but `{}` in Julia (expected one of {ok:?})",
                    f.ret, c.ret
                )),
                Err(e) => errors.push(format!("{at}: return type: {e}")),
            }
            if c.args.len() != f.params.len() {
                errors.push(format!(
                    "{at}: {} argument(s) in C but {} in Julia",
                    f.params.len(),
                    c.args.len()
                ));
            } else {
                for (k, ((ct, pname), jt)) in f.params.iter().zip(&c.args).enumerate() {
                    match julia_types(&h, ct, Position::Argument) {
                        Ok(ok) if ok.contains(jt) => {}
                        Ok(ok) => errors.push(format!(
                            "{at}: argument {} (`{pname}`) is `{ct}` in C but `{jt}` in Julia (expected one of {ok:?})",
                            k + 1
                        )),
                        Err(e) => errors.push(format!("{at}: argument {}: {e}", k + 1)),
                    }
                }
            }
            if c.n_values != c.args.len() {
                errors.push(format!(
                    "{at}: {} argument type(s) but {} value(s) passed",
                    c.args.len(),
                    c.n_values
                ));
            }
        }
        jl_consts.extend(
            julia_constants(src)
                .into_iter()
                .map(|(k, v)| (k, (file, v))),
        );
        for (name, (line, fields)) in julia_structs(src, &struct_names) {
            jl_structs.insert(name, (file.clone(), line, fields));
        }
    }
    for name in h.functions.keys() {
        if !wrapped.contains(name) {
            errors.push(format!(
                "recovar.h: {name} is not wrapped by any ccall in the Julia package"
            ));
        }
    }
    for (name, value) in &h.constants {
        if !name.starts_with("RCV_") {
            continue;
        }
        match jl_consts.get(name) {
            None => errors.push(format!(
                "recovar.h: {name} = {value} has no `const {name}` in the Julia package"
            )),
            Some((file, (line, v))) if *v != Some(*value) => errors.push(format!(
                "{file}:{line}: {name} is {v:?} in Julia but {value} in recovar.h"
            )),
            Some(_) => {}
        }
    }
    for (name, (file, (line, _))) in &jl_consts {
        if !h.constants.contains_key(name) {
            errors.push(format!("{file}:{line}: {name} is not in recovar.h"));
        }
    }
    for (name, cfields) in &h.structs {
        let Some((file, line, jfields)) = jl_structs.get(name) else {
            errors.push(format!(
                "recovar.h: struct {name} has no Julia mirror (`mutable struct {name}`)"
            ));
            continue;
        };
        let at = format!("{file}:{line}: struct {name}");
        if cfields.len() != jfields.len() {
            errors.push(format!(
                "{at}: {} field(s) in C but {} in Julia",
                cfields.len(),
                jfields.len()
            ));
        }
        for ((ct, cname), (jname, jt)) in cfields.iter().zip(jfields) {
            if cname != jname {
                errors.push(format!("{at}: field `{jname}` where C has `{cname}`"));
            }
            match julia_types(&h, ct, Position::Field) {
                Ok(ok) if ok.contains(jt) => {}
                Ok(ok) => errors.push(format!(
                    "{at}: field `{cname}` is `{ct}` in C but `{jt}` in Julia (expected one of {ok:?})"
                )),
                Err(e) => errors.push(format!("{at}: field `{cname}`: {e}")),
            }
        }
    }
    errors
}

fn julia_sources() -> Vec<(String, String)> {
    let dir = root().join("bindings/julia/Recovar/src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jl"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            (
                p.strip_prefix(root()).unwrap().display().to_string(),
                std::fs::read_to_string(p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_ccall_matches_recovar_h() {
    let header = std::fs::read_to_string(root().join("include/recovar.h")).unwrap();
    let sources = julia_sources();
    assert!(!sources.is_empty(), "no Julia sources found");
    let errors = check_binding(&header, &sources);
    assert!(
        errors.is_empty(),
        "the Julia package disagrees with include/recovar.h ({} problem(s)):\n  {}",
        errors.len(),
        errors.join("\n  ")
    );
    // And the check saw something: every header function and a ccall for each.
    let h = parse_header(&header).unwrap();
    assert!(h.functions.len() >= 9, "{:?}", h.functions.keys());
}

// ------------------------------------------------------------------------------------------
// The checker itself, on deliberately wrong inputs

const TOY_HEADER: &str = r#"
#include <stdint.h>
#define RCV_ANSWER 42
/* a comment with rcv_fake(int x); inside */
typedef enum rcv_status { RCV_OK = 0, RCV_ERR = -1, } rcv_status;
typedef struct rcv_thing rcv_thing;
typedef int32_t (*rcv_progress_fn)(void *user_data, const char *stage, uint64_t done, uint64_t total);
typedef struct rcv_opts {
  size_t struct_size;
  const char *path; // borrowed
  double scale;
} rcv_opts;
#ifdef __cplusplus
extern "C" {
#endif
const char *rcv_name(void);
enum rcv_status rcv_open(const struct rcv_opts *opts, struct rcv_thing **out);
rcv_status rcv_count(const rcv_thing *t, size_t *out);
rcv_status rcv_run(rcv_thing *t, rcv_progress_fn progress, void *user_data);
rcv_status rcv_inline(int32_t (*cb)(void *, uint64_t), void *user_data);
void rcv_free(rcv_thing *t);
#ifdef __cplusplus
}
#endif
"#;

const TOY_JULIA_GOOD: &str = r#"
const RCV_ANSWER = 42
const RCV_OK = Cint(0)
const RCV_ERR = Int32(-1)
mutable struct rcv_opts
    struct_size::Csize_t
    path::Ptr{UInt8}
    scale::Cdouble
end
"""
Docs mentioning ccall((:rcv_nothing, librecovar), Cint, ()) are not code.
"""
rcv_name() = ccall((:rcv_name, librecovar), Cstring, ())
rcv_open(o, out) = ccall((:rcv_open, librecovar), Cint, (Ref{rcv_opts}, Ref{Ptr{Cvoid}}), o, out)
rcv_count(t, out) = ccall((:rcv_count, librecovar), Cint, (Ptr{Cvoid}, Ref{Csize_t}), t, out)
rcv_run(t, p, u) = ccall((:rcv_run, librecovar), Int32,
                         (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}), t, p, u)
rcv_inline(p, u) = ccall((:rcv_inline, librecovar), Cint, (Ptr{Cvoid}, Ptr{Cvoid},), p, u)
rcv_free(t) = ccall((:rcv_free, librecovar), Cvoid, (Ptr{Cvoid},), t)  # "(:rcv_x" in a comment
state() = ccall(:jl_gc_safe_enter, Int8, ())
msg = "$(f("nested \" quote")) ccall((:rcv_bogus, librecovar), Cint, ())"
"#;

fn toy(julia: &str) -> Vec<String> {
    check_binding(TOY_HEADER, &[("toy.jl".to_string(), julia.to_string())])
}

#[test]
fn header_parser_reads_prototypes_typedefs_and_constants() {
    let h = parse_header(TOY_HEADER).unwrap();
    let names: Vec<_> = h.functions.keys().cloned().collect();
    assert_eq!(
        names,
        [
            "rcv_count",
            "rcv_free",
            "rcv_inline",
            "rcv_name",
            "rcv_open",
            "rcv_run"
        ]
    );
    let open = &h.functions["rcv_open"];
    assert_eq!(open.ret.base, "rcv_status");
    assert_eq!(open.params[0].0.to_string(), "const rcv_opts *");
    assert_eq!(open.params[1].0.to_string(), "rcv_thing **");
    assert_eq!(h.functions["rcv_name"].ret.to_string(), "const char *");
    assert!(h.functions["rcv_name"].params.is_empty());
    assert_eq!(h.functions["rcv_inline"].params[0].0.base, "<fnptr>");
    assert!(h.fn_pointers.contains("rcv_progress_fn"));
    assert!(h.opaque.contains("rcv_thing"));
    assert_eq!(h.structs["rcv_opts"].len(), 3);
    assert_eq!(h.constants["RCV_ANSWER"], 42);
    assert_eq!(h.constants["RCV_ERR"], -1);
    assert!(
        !h.functions.contains_key("rcv_fake"),
        "comments are not code"
    );
}

#[test]
fn a_faithful_binding_passes() {
    let errors = toy(TOY_JULIA_GOOD);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn every_kind_of_drift_is_reported() {
    let bad = TOY_JULIA_GOOD
        // wrong argument type: size_t* passed as Ref{Cint}
        .replace(
            "(Ptr{Cvoid}, Ref{Csize_t}), t, out)",
            "(Ptr{Cvoid}, Ref{Cint}), t, out)",
        )
        // wrong return type
        .replace("Cstring, ())", "Ptr{Cvoid}, ())")
        // wrong arity (one type dropped, values kept)
        .replace(
            "(Ptr{Cvoid}, Ptr{Cvoid}, Ptr{Cvoid}), t, p, u)",
            "(Ptr{Cvoid}, Ptr{Cvoid}), t, p, u)",
        )
        // a function that was never wrapped
        .replace(
            "rcv_free(t) = ccall((:rcv_free, librecovar), Cvoid, (Ptr{Cvoid},), t)",
            "rcv_gone(t) = ccall((:rcv_gone, librecovar), Cvoid, (Ptr{Cvoid},), t)",
        )
        // a constant with another value, a struct field of another type
        .replace("const RCV_ERR = Int32(-1)", "const RCV_ERR = Int32(-2)")
        .replace("scale::Cdouble", "scale::Cfloat")
        // another library
        .replace("(:rcv_inline, librecovar)", "(:rcv_inline, \"libother\")");
    let errors = toy(&bad);
    let expect = [
        "rcv_count: argument 2 (`out`) is `size_t *` in C but `Ref{Cint}` in Julia",
        "rcv_name: returns `const char *` in C but `Ptr{Cvoid}` in Julia",
        "rcv_run: 3 argument(s) in C but 2 in Julia",
        "rcv_run: 2 argument type(s) but 3 value(s) passed",
        "rcv_gone: no such function in recovar.h",
        "recovar.h: rcv_free is not wrapped",
        "RCV_ERR is Some(-2) in Julia but -1 in recovar.h",
        "field `scale` is `double` in C but `Cfloat` in Julia",
        "rcv_inline: library is a string literal",
    ];
    for e in expect {
        assert!(
            errors.iter().any(|m| m.contains(e)),
            "missing `{e}` in:\n{}",
            errors.join("\n")
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn missing_constants_and_struct_mirrors_are_reported() {
    let bad = TOY_JULIA_GOOD
        .replace("const RCV_ANSWER = 42\n", "const RCV_EXTRA = 1\n")
        .replace("mutable struct rcv_opts", "mutable struct other_opts");
    let errors = toy(&bad);
    for e in [
        "RCV_ANSWER = 42 has no `const RCV_ANSWER`",
        "RCV_EXTRA is not in recovar.h",
        "struct rcv_opts has no Julia mirror",
    ] {
        assert!(
            errors.iter().any(|m| m.contains(e)),
            "missing `{e}` in:\n{}",
            errors.join("\n")
        );
    }
}
