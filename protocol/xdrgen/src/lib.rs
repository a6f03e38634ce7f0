//! xdrgen: turns XDR definitions (RFC 4506) into Rust types with encoders and
//! decoders that use the runtime in `pnfs_protocol::xdr`.
//!
//! Mapping (names are kept exactly as in the RFCs, so code reads against them):
//! - struct -> struct; enum -> `#[repr(i32)]` enum; typedef -> type alias
//!   (bounds of aliased opaques/arrays are applied where the alias is used);
//! - union -> enum with one variant per case label (named after the label,
//!   `TRUE`/`FALSE` for bool, `V<n>` for bare numbers) and `default(disc, ..)`;
//! - `opaque<N>`/`string<N>` -> `Opaque<'a>`, which borrows from the receive
//!   buffer when decoded; `opaque[N]` -> `[u8; N]`; `T<N>`/`T[N]` -> `Vec<T>`;
//!   `T *x` -> `Option<Box<T>>`.
//! Types that (transitively) hold an `Opaque` carry a lifetime `'a`.

mod parse;

pub use parse::ParseError;
use parse::{Decl, DeclKind, Def, Parser, TypeSpec, Union, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

/// Parses `source` and returns Rust code. `runtime` is the path of the XDR
/// runtime module as seen from where the code is included (e.g. `crate::xdr`).
pub fn generate(source: &str, runtime: &str) -> Result<String, String> {
    let defs = Parser::parse(source).map_err(|e| e.to_string())?;
    Gen::new(defs, runtime)?.emit()
}

const RUST_KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if", "impl", "in",
    "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "Self", "static", "struct", "super",
    "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn", "abstract", "become", "box",
    "do", "final", "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

fn ident(name: &str) -> String {
    if RUST_KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_string()
    }
}

struct Gen {
    defs: Vec<Def>,
    rt: String,
    consts: HashMap<String, i128>,
    /// enum member name -> (enum name, value)
    enum_members: HashMap<String, (String, i128)>,
    typedefs: HashMap<String, Decl>,
    kinds: HashMap<String, &'static str>,
    lifetimes: HashSet<String>,
}

enum DiscKind {
    Enum(String),
    Int { wide: bool },
    Bool,
}

impl Gen {
    fn new(defs: Vec<Def>, rt: &str) -> Result<Self, String> {
        let mut g = Gen {
            defs,
            rt: rt.to_string(),
            consts: HashMap::new(),
            enum_members: HashMap::new(),
            typedefs: HashMap::new(),
            kinds: HashMap::new(),
            lifetimes: HashSet::new(),
        };
        // Constants first (enum values may reference them).
        for d in &g.defs {
            if let Def::Const(n, Value::Num(v)) = d {
                if g.consts.insert(n.clone(), *v).is_some() {
                    return Err(format!("constant {n} defined twice"));
                }
            }
        }
        for d in &g.defs {
            if let Def::Const(n, Value::Const(other)) = d {
                let v = *g.consts.get(other).ok_or(format!("constant {n} refers to unknown {other}"))?;
                g.consts.insert(n.clone(), v);
            }
        }
        let defs = std::mem::take(&mut g.defs);
        for d in &defs {
            let (name, kind) = match d {
                Def::Const(..) => continue,
                Def::Typedef(decl) => {
                    g.typedefs.insert(decl.name.clone(), decl.clone());
                    (decl.name.clone(), "typedef")
                }
                Def::Enum(n, members) => {
                    for (m, v) in members {
                        let v = g.value(v)?;
                        if g.enum_members.insert(m.clone(), (n.clone(), v)).is_some() {
                            return Err(format!("enum member {m} defined twice"));
                        }
                    }
                    (n.clone(), "enum")
                }
                Def::Struct(n, _) => (n.clone(), "struct"),
                Def::Union(n, _) => (n.clone(), "union"),
            };
            if g.kinds.insert(name.clone(), kind).is_some() {
                return Err(format!("type {name} defined twice"));
            }
        }
        g.defs = defs;
        g.check_references()?;
        g.compute_lifetimes();
        Ok(g)
    }

    fn value(&self, v: &Value) -> Result<i128, String> {
        match v {
            Value::Num(n) => Ok(*n),
            Value::Const(c) => self
                .consts
                .get(c)
                .copied()
                .or_else(|| self.enum_members.get(c).map(|m| m.1))
                .ok_or(format!("unknown constant {c}")),
        }
    }

    fn all_decls(&self) -> Vec<(&str, &Decl)> {
        let mut out = Vec::new();
        for d in &self.defs {
            match d {
                Def::Typedef(decl) => out.push((decl.name.as_str(), decl)),
                Def::Struct(n, fields) => out.extend(fields.iter().map(|f| (n.as_str(), f))),
                Def::Union(n, u) => {
                    out.push((n.as_str(), &u.discriminant));
                    out.extend(u.arms.iter().filter_map(|a| a.decl.as_ref()).map(|f| (n.as_str(), f)));
                    if let Some(Some(f)) = &u.default {
                        out.push((n.as_str(), f));
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn check_references(&self) -> Result<(), String> {
        for (owner, decl) in self.all_decls() {
            if let TypeSpec::Named(t) = &decl.ty {
                if !self.kinds.contains_key(t) {
                    return Err(format!("{owner}.{}: unknown type {t}", decl.name));
                }
            }
            match &decl.kind {
                DeclKind::Fixed(v) | DeclKind::Var(Some(v)) => {
                    self.value(v).map_err(|e| format!("{owner}.{}: {e}", decl.name))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn decl_needs_lt(&self, d: &Decl) -> bool {
        match (&d.ty, &d.kind) {
            (TypeSpec::Opaque, DeclKind::Var(_)) | (TypeSpec::String, _) => true,
            (TypeSpec::Named(n), _) => self.lifetimes.contains(n),
            _ => false,
        }
    }

    fn compute_lifetimes(&mut self) {
        loop {
            let mut changed = false;
            for d in &self.defs {
                let (name, needs) = match d {
                    Def::Typedef(decl) => (&decl.name, self.decl_needs_lt(decl)),
                    Def::Struct(n, fields) => (n, fields.iter().any(|f| self.decl_needs_lt(f))),
                    Def::Union(n, u) => (
                        n,
                        u.arms.iter().filter_map(|a| a.decl.as_ref()).any(|f| self.decl_needs_lt(f))
                            || matches!(&u.default, Some(Some(f)) if self.decl_needs_lt(f)),
                    ),
                    _ => continue,
                };
                if needs && !self.lifetimes.contains(name) {
                    changed = true;
                    let name = name.clone();
                    self.lifetimes.insert(name);
                    break;
                }
            }
            if !changed {
                return;
            }
        }
    }

    fn lt(&self, name: &str) -> &'static str {
        if self.lifetimes.contains(name) {
            "<'a>"
        } else {
            ""
        }
    }

    fn bound(&self, v: &Option<Value>) -> String {
        match v {
            Some(v) => format!("{}", self.value(v).unwrap()),
            None => "u32::MAX".to_string(),
        }
    }

    fn base_rust_ty(&self, ty: &TypeSpec) -> String {
        match ty {
            TypeSpec::Int => "i32".into(),
            TypeSpec::UInt => "u32".into(),
            TypeSpec::Hyper => "i64".into(),
            TypeSpec::UHyper => "u64".into(),
            TypeSpec::Bool => "bool".into(),
            TypeSpec::Float => "f32".into(),
            TypeSpec::Double => "f64".into(),
            TypeSpec::Opaque | TypeSpec::String => format!("{}::Opaque<'a>", self.rt),
            TypeSpec::Named(n) => format!("{n}{}", self.lt(n)),
        }
    }

    fn rust_ty(&self, d: &Decl) -> String {
        match (&d.ty, &d.kind) {
            (TypeSpec::Opaque, DeclKind::Fixed(v)) => format!("[u8; {}]", self.value(v).unwrap()),
            (TypeSpec::Opaque | TypeSpec::String, _) => format!("{}::Opaque<'a>", self.rt),
            (t, DeclKind::Plain) => self.base_rust_ty(t),
            (t, DeclKind::Fixed(_) | DeclKind::Var(_)) => format!("Vec<{}>", self.base_rust_ty(t)),
            (t, DeclKind::Optional) => format!("Option<Box<{}>>", self.base_rust_ty(t)),
        }
    }

    /// Decode expression for a plain (non-array) use of `ty`; typedefs are
    /// expanded so that their bounds apply.
    fn dec_plain(&self, ty: &TypeSpec) -> String {
        match ty {
            TypeSpec::Int => "d.get_i32()?".into(),
            TypeSpec::UInt => "d.get_u32()?".into(),
            TypeSpec::Hyper => "d.get_i64()?".into(),
            TypeSpec::UHyper => "d.get_u64()?".into(),
            TypeSpec::Bool => "d.get_bool()?".into(),
            TypeSpec::Float => "f32::from_bits(d.get_u32()?)".into(),
            TypeSpec::Double => "f64::from_bits(d.get_u64()?)".into(),
            TypeSpec::Opaque | TypeSpec::String => unreachable!("opaque without size"),
            TypeSpec::Named(n) => match self.typedefs.get(n) {
                Some(td) => self.dec_decl(td),
                None => format!("<{n} as {}::XdrDecode>::decode(d)?", self.rt),
            },
        }
    }

    fn dec_decl(&self, d: &Decl) -> String {
        let rt = &self.rt;
        match (&d.ty, &d.kind) {
            (TypeSpec::Opaque, DeclKind::Fixed(_)) => "d.get_fixed_opaque()?".into(),
            (TypeSpec::Opaque | TypeSpec::String, DeclKind::Var(b)) => format!("d.get_opaque({})?", self.bound(b)),
            (t, DeclKind::Plain) => self.dec_plain(t),
            (t, DeclKind::Fixed(v)) => {
                format!("{rt}::decode_fixed_array(d, {}, |d| Ok({}))?", self.value(v).unwrap(), self.dec_plain(t))
            }
            (t, DeclKind::Var(b)) => {
                format!("{rt}::decode_var_array(d, {}, |d| Ok({}))?", self.bound(b), self.dec_plain(t))
            }
            (t, DeclKind::Optional) => {
                format!("{rt}::decode_optional(d, |d| Ok({}))?", self.dec_plain(t))
            }
        }
    }

    /// Statement encoding `v` (an expression of reference type) for a plain use of `ty`.
    fn enc_plain(&self, ty: &TypeSpec, v: &str) -> String {
        match ty {
            TypeSpec::Int => format!("e.put_i32(*{v});"),
            TypeSpec::UInt => format!("e.put_u32(*{v});"),
            TypeSpec::Hyper => format!("e.put_i64(*{v});"),
            TypeSpec::UHyper => format!("e.put_u64(*{v});"),
            TypeSpec::Bool => format!("e.put_bool(*{v});"),
            TypeSpec::Float => format!("e.put_u32({v}.to_bits());"),
            TypeSpec::Double => format!("e.put_u64({v}.to_bits());"),
            TypeSpec::Opaque | TypeSpec::String => unreachable!("opaque without size"),
            TypeSpec::Named(n) => match self.typedefs.get(n) {
                Some(td) => self.enc_decl(td, v),
                None => format!("{}::XdrEncode::encode({v}, e)?;", self.rt),
            },
        }
    }

    fn enc_decl(&self, d: &Decl, v: &str) -> String {
        let rt = &self.rt;
        match (&d.ty, &d.kind) {
            (TypeSpec::Opaque, DeclKind::Fixed(_)) => format!("e.put_fixed_opaque(&{v}[..]);"),
            (TypeSpec::Opaque | TypeSpec::String, DeclKind::Var(b)) => {
                format!("e.put_opaque(&{v}[..], {})?;", self.bound(b))
            }
            (t, DeclKind::Plain) => self.enc_plain(t, v),
            (t, DeclKind::Fixed(n)) => format!(
                "{rt}::encode_fixed_array(e, &{v}[..], {}, |e, x| {{ {} Ok(()) }})?;",
                self.value(n).unwrap(),
                self.enc_plain(t, "x")
            ),
            (t, DeclKind::Var(b)) => format!(
                "{rt}::encode_var_array(e, &{v}[..], {}, |e, x| {{ {} Ok(()) }})?;",
                self.bound(b),
                self.enc_plain(t, "x")
            ),
            (t, DeclKind::Optional) => format!(
                "match {v} {{ Some(x) => {{ e.put_bool(true); let x = &**x; {} }} None => e.put_bool(false), }}",
                self.enc_plain(t, "x")
            ),
        }
    }

    fn resolve_disc(&self, d: &Decl) -> Result<DiscKind, String> {
        if d.kind != DeclKind::Plain {
            return Err(format!("union discriminant {} must be a plain type", d.name));
        }
        let mut ty = d.ty.clone();
        loop {
            return Ok(match &ty {
                TypeSpec::Int | TypeSpec::UInt => DiscKind::Int { wide: false },
                TypeSpec::Hyper | TypeSpec::UHyper => DiscKind::Int { wide: true },
                TypeSpec::Bool => DiscKind::Bool,
                TypeSpec::Named(n) => match self.kinds.get(n) {
                    Some(&"enum") => DiscKind::Enum(n.clone()),
                    Some(&"typedef") => {
                        ty = self.typedefs[n].ty.clone();
                        continue;
                    }
                    _ => return Err(format!("union discriminant type {n} is not enum/int/bool")),
                },
                _ => return Err(format!("union discriminant {} has unsupported type", d.name)),
            });
        }
    }

    fn emit(&self) -> Result<String, String> {
        let mut o = String::new();
        let rt = &self.rt;
        writeln!(o, "// @generated by xdrgen from XDR definitions; do not edit.").unwrap();
        for def in &self.defs {
            match def {
                Def::Const(n, _) => {
                    let v = self.consts[n];
                    let ty = if (0..=u32::MAX as i128).contains(&v) {
                        "u32"
                    } else if (i32::MIN as i128..0).contains(&v) {
                        "i32"
                    } else if (0..=u64::MAX as i128).contains(&v) {
                        "u64"
                    } else {
                        "i64"
                    };
                    writeln!(o, "pub const {n}: {ty} = {v};").unwrap();
                }
                Def::Typedef(d) => {
                    let lt = self.lt(&d.name);
                    writeln!(o, "pub type {}{lt} = {};", d.name, self.rust_ty(d)).unwrap();
                }
                Def::Enum(n, members) => self.emit_enum(&mut o, n, members)?,
                Def::Struct(n, fields) => {
                    let lt = self.lt(n);
                    writeln!(o, "#[derive(Clone, Debug, PartialEq)]").unwrap();
                    writeln!(o, "#[cfg_attr(any(test, feature = \"arbitrary\"), derive(arbitrary::Arbitrary))]").unwrap();
                    writeln!(o, "pub struct {n}{lt} {{").unwrap();
                    for f in fields {
                        writeln!(o, "    pub {}: {},", ident(&f.name), self.rust_ty(f)).unwrap();
                    }
                    writeln!(o, "}}").unwrap();
                    writeln!(o, "impl<'a> {rt}::XdrDecode<'a> for {n}{lt} {{").unwrap();
                    writeln!(o, "    fn decode(d: &mut {rt}::Decoder<'a>) -> Result<Self, {rt}::XdrError> {{").unwrap();
                    writeln!(o, "        Ok(Self {{").unwrap();
                    for f in fields {
                        writeln!(o, "            {}: {},", ident(&f.name), self.dec_decl(f)).unwrap();
                    }
                    writeln!(o, "        }})\n    }}\n}}").unwrap();
                    let elt = if lt.is_empty() { "" } else { "<'_>" };
                    writeln!(o, "impl {rt}::XdrEncode for {n}{elt} {{").unwrap();
                    writeln!(o, "    fn encode(&self, e: &mut {rt}::Encoder) -> Result<(), {rt}::XdrError> {{").unwrap();
                    for f in fields {
                        writeln!(o, "        {}", self.enc_decl(f, &format!("(&self.{})", ident(&f.name)))).unwrap();
                    }
                    writeln!(o, "        Ok(())\n    }}\n}}").unwrap();
                }
                Def::Union(n, u) => self.emit_union(&mut o, n, u)?,
            }
        }
        Ok(o)
    }

    fn emit_enum(&self, o: &mut String, n: &str, members: &[(String, Value)]) -> Result<(), String> {
        let rt = &self.rt;
        writeln!(o, "#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]").unwrap();
        writeln!(o, "#[cfg_attr(any(test, feature = \"arbitrary\"), derive(arbitrary::Arbitrary))]").unwrap();
        writeln!(o, "#[repr(i32)]\npub enum {n} {{").unwrap();
        let mut seen = BTreeMap::new();
        for (m, v) in members {
            let v = self.value(v)?;
            if let Some(prev) = seen.insert(v, m.clone()) {
                return Err(format!("enum {n}: {m} and {prev} share value {v}"));
            }
            writeln!(o, "    {m} = {v},").unwrap();
        }
        writeln!(o, "}}").unwrap();
        writeln!(o, "impl {n} {{").unwrap();
        writeln!(o, "    pub fn from_i32(v: i32) -> Option<Self> {{\n        match v {{").unwrap();
        for (v, m) in &seen {
            writeln!(o, "            {v} => Some(Self::{m}),").unwrap();
        }
        writeln!(o, "            _ => None,\n        }}\n    }}\n}}").unwrap();
        writeln!(o, "impl<'a> {rt}::XdrDecode<'a> for {n} {{").unwrap();
        writeln!(o, "    fn decode(d: &mut {rt}::Decoder<'a>) -> Result<Self, {rt}::XdrError> {{").unwrap();
        writeln!(o, "        let v = d.get_i32()?;").unwrap();
        writeln!(o, "        Self::from_i32(v).ok_or({rt}::XdrError::BadDiscriminant(v as i64))").unwrap();
        writeln!(o, "    }}\n}}").unwrap();
        writeln!(o, "impl {rt}::XdrEncode for {n} {{").unwrap();
        writeln!(o, "    fn encode(&self, e: &mut {rt}::Encoder) -> Result<(), {rt}::XdrError> {{").unwrap();
        writeln!(o, "        e.put_i32(*self as i32);\n        Ok(())\n    }}\n}}").unwrap();
        Ok(())
    }

    fn emit_union(&self, o: &mut String, n: &str, u: &Union) -> Result<(), String> {
        let rt = &self.rt;
        let lt = self.lt(n);
        let disc = self.resolve_disc(&u.discriminant)?;
        let disc_ty = self.rust_ty(&u.discriminant);
        // (variant name, match pattern on the decoded discriminant, encode-discriminant statement, arm decl)
        let mut variants: Vec<(String, String, String, Option<&Decl>)> = Vec::new();
        let mut seen_values = HashSet::new();
        for arm in &u.arms {
            for label in &arm.labels {
                let (vname, pat, enc) = match (&disc, label) {
                    (DiscKind::Enum(en), Value::Const(c)) => {
                        match self.enum_members.get(c) {
                            Some((owner, _)) if owner == en => {}
                            _ => return Err(format!("union {n}: case {c} is not a member of enum {en}")),
                        }
                        (c.clone(), format!("{en}::{c}"), format!("e.put_i32({en}::{c} as i32);"))
                    }
                    (DiscKind::Enum(en), Value::Num(_)) => {
                        return Err(format!("union {n}: numeric case label on enum {en} discriminant"))
                    }
                    (DiscKind::Bool, Value::Const(c)) if c == "TRUE" || c == "FALSE" => {
                        let b = c == "TRUE";
                        (c.clone(), format!("{b}"), format!("e.put_bool({b});"))
                    }
                    (DiscKind::Bool, Value::Num(v)) if *v == 0 || *v == 1 => {
                        let b = *v == 1;
                        (if b { "TRUE" } else { "FALSE" }.into(), format!("{b}"), format!("e.put_bool({b});"))
                    }
                    (DiscKind::Bool, _) => return Err(format!("union {n}: bad bool case label")),
                    (DiscKind::Int { wide }, v) => {
                        let val = self.value(v)?;
                        let name = match v {
                            Value::Const(c) => c.clone(),
                            Value::Num(x) if *x < 0 => format!("N{}", -x),
                            Value::Num(x) => format!("V{x}"),
                        };
                        let put = if *wide { "put_u64" } else { "put_u32" };
                        let cast = if put == "put_u32" { "u32" } else { "u64" };
                        (name, format!("{val}"), format!("e.{put}({val}i128 as {cast});"))
                    }
                };
                if !seen_values.insert(pat.clone()) {
                    return Err(format!("union {n}: case {vname} appears twice"));
                }
                variants.push((vname, pat, enc, arm.decl.as_ref()));
            }
        }
        writeln!(o, "#[derive(Clone, Debug, PartialEq)]").unwrap();
        writeln!(o, "#[cfg_attr(any(test, feature = \"arbitrary\"), derive(arbitrary::Arbitrary))]").unwrap();
        writeln!(o, "#[allow(clippy::large_enum_variant)]\npub enum {n}{lt} {{").unwrap();
        for (vn, _, _, decl) in &variants {
            match decl {
                Some(d) => writeln!(o, "    {vn}({}),", self.rust_ty(d)).unwrap(),
                None => writeln!(o, "    {vn},").unwrap(),
            }
        }
        match &u.default {
            Some(Some(d)) => writeln!(o, "    default({disc_ty}, {}),", self.rust_ty(d)).unwrap(),
            Some(None) => writeln!(o, "    default({disc_ty}),").unwrap(),
            None => {}
        }
        writeln!(o, "}}").unwrap();

        // Decoder.
        writeln!(o, "impl<'a> {rt}::XdrDecode<'a> for {n}{lt} {{").unwrap();
        writeln!(o, "    #[allow(unreachable_patterns)]").unwrap();
        writeln!(o, "    fn decode(d: &mut {rt}::Decoder<'a>) -> Result<Self, {rt}::XdrError> {{").unwrap();
        writeln!(o, "        let disc: {disc_ty} = {};", self.dec_decl(&u.discriminant)).unwrap();
        writeln!(o, "        Ok(match disc {{").unwrap();
        for (vn, pat, _, decl) in &variants {
            match decl {
                Some(dd) => writeln!(o, "            {pat} => Self::{vn}({}),", self.dec_decl(dd)).unwrap(),
                None => writeln!(o, "            {pat} => Self::{vn},").unwrap(),
            }
        }
        let disc_as_i64 = match disc {
            DiscKind::Enum(_) => "disc as i32 as i64",
            DiscKind::Bool => "disc as i64",
            DiscKind::Int { .. } => "disc as i64",
        };
        match &u.default {
            Some(Some(dd)) => writeln!(o, "            _ => Self::default(disc, {}),", self.dec_decl(dd)).unwrap(),
            Some(None) => writeln!(o, "            _ => Self::default(disc),").unwrap(),
            None => writeln!(o, "            _ => return Err({rt}::XdrError::BadDiscriminant({disc_as_i64})),").unwrap(),
        }
        writeln!(o, "        }})\n    }}\n}}").unwrap();

        // Encoder. The default arm refuses a discriminant owned by a named case,
        // because the bytes would decode as that case.
        let elt = if lt.is_empty() { "" } else { "<'_>" };
        writeln!(o, "impl {rt}::XdrEncode for {n}{elt} {{").unwrap();
        writeln!(o, "    fn encode(&self, e: &mut {rt}::Encoder) -> Result<(), {rt}::XdrError> {{").unwrap();
        writeln!(o, "        match self {{").unwrap();
        for (vn, _, enc, decl) in &variants {
            match decl {
                Some(dd) => writeln!(o, "            Self::{vn}(v) => {{ {enc} {} }}", self.enc_decl(dd, "v")).unwrap(),
                None => writeln!(o, "            Self::{vn} => {{ {enc} }}").unwrap(),
            }
        }
        let named_pats: Vec<&str> = variants.iter().map(|v| v.1.as_str()).collect();
        let check = if named_pats.is_empty() {
            String::new()
        } else {
            format!(
                "#[allow(unreachable_patterns)] if matches!(*disc, {}) {{ return Err({rt}::XdrError::BadDiscriminant({})); }}",
                named_pats.join(" | "),
                disc_as_i64.replace("disc", "*disc")
            )
        };
        match &u.default {
            Some(Some(dd)) => writeln!(
                o,
                "            Self::default(disc, v) => {{ {check} {} {} }}",
                self.enc_decl(&u.discriminant, "disc"),
                self.enc_decl(dd, "v")
            )
            .unwrap(),
            Some(None) => writeln!(
                o,
                "            Self::default(disc) => {{ {check} {} }}",
                self.enc_decl(&u.discriminant, "disc")
            )
            .unwrap(),
            None => {}
        }
        writeln!(o, "        }}\n        Ok(())\n    }}\n}}").unwrap();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_propagate_through_typedefs_and_structs() {
        let code = generate(
            "typedef opaque blob<>; struct a { blob b; }; struct c { a x<>; }; struct d { int i; };",
            "crate::xdr",
        )
        .unwrap();
        assert!(code.contains("pub struct c<'a>"), "{code}");
        assert!(code.contains("pub struct d {"), "{code}");
    }

    #[test]
    fn unknown_type_is_an_error() {
        let err = generate("struct a { nosuch x; };", "crate::xdr").unwrap_err();
        assert!(err.contains("unknown type nosuch"), "{err}");
    }

    #[test]
    fn union_labels_must_belong_to_the_enum() {
        let err = generate(
            "enum e { A = 1 }; enum f { B = 2 }; union u switch (e d) { case B: void; };",
            "crate::xdr",
        )
        .unwrap_err();
        assert!(err.contains("not a member"), "{err}");
    }
}
