//! Lexer and parser for the XDR language of RFC 4506 section 6.
//!
//! Supported: const, typedef, enum, struct, union (with default), fixed and
//! variable opaque/arrays, string, optional data, void, [unsigned] int/hyper,
//! bool, float, double. Not supported (rejected with a clear message): inline
//! type definitions inside declarations, `program` blocks, `%` passthrough.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(i128),
    Const(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeSpec {
    Int,
    UInt,
    Hyper,
    UHyper,
    Bool,
    Float,
    Double,
    Opaque,
    String,
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeclKind {
    Plain,
    /// `T x[N]`; for opaque: N bytes.
    Fixed(Value),
    /// `T x<N>` or `T x<>`; for opaque/string: bytes.
    Var(Option<Value>),
    /// `T *x`
    Optional,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decl {
    pub name: String,
    pub ty: TypeSpec,
    pub kind: DeclKind,
}

#[derive(Debug, Clone)]
pub struct UnionArm {
    pub labels: Vec<Value>,
    /// None for `void`.
    pub decl: Option<Decl>,
}

#[derive(Debug, Clone)]
pub struct Union {
    pub discriminant: Decl,
    pub arms: Vec<UnionArm>,
    /// Some(None) for `default: void;`.
    pub default: Option<Option<Decl>>,
}

#[derive(Debug, Clone)]
pub enum Def {
    Const(String, Value),
    Typedef(Decl),
    Enum(String, Vec<(String, Value)>),
    Struct(String, Vec<Decl>),
    Union(String, Union),
}

#[derive(Debug)]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(i128),
    Punct(char),
}

struct Lexer;

impl Lexer {
    fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
        let bytes = src.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        let mut line = 1;
        while i < bytes.len() {
            let c = bytes[i] as char;
            if c == '\n' {
                line += 1;
                i += 1;
            } else if c.is_whitespace() {
                i += 1;
            } else if src[i..].starts_with("/*") {
                let end = src[i + 2..].find("*/").ok_or(ParseError { line, msg: "unterminated comment".into() })?;
                line += src[i..i + 2 + end].matches('\n').count();
                i += end + 4;
            } else if src[i..].starts_with("//") || (c == '%' && (i == 0 || bytes[i - 1] == b'\n')) {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                out.push((Tok::Ident(src[start..i].to_string()), line));
            } else if c.is_ascii_digit() || (c == '-' && i + 1 < bytes.len() && bytes[i + 1].is_ascii_digit()) {
                let start = i;
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                let text = &src[start..i];
                let (neg, body) = match text.strip_prefix('-') {
                    Some(b) => (true, b),
                    None => (false, text),
                };
                let v = if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
                    i128::from_str_radix(hex, 16)
                } else if body.len() > 1 && body.starts_with('0') {
                    i128::from_str_radix(&body[1..], 8)
                } else {
                    body.parse::<i128>()
                }
                .map_err(|_| ParseError { line, msg: format!("bad number {text}") })?;
                out.push((Tok::Num(if neg { -v } else { v }), line));
            } else if "{}[]<>()=;:,*".contains(c) {
                out.push((Tok::Punct(c), line));
                i += 1;
            } else {
                return Err(ParseError { line, msg: format!("unexpected character {c:?}") });
            }
        }
        Ok(out)
    }
}

pub struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    pub fn parse(src: &str) -> Result<Vec<Def>, ParseError> {
        let mut p = Parser { toks: Lexer::tokenize(src)?, pos: 0 };
        let mut defs = Vec::new();
        while p.pos < p.toks.len() {
            defs.push(p.definition()?);
        }
        Ok(defs)
    }

    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map(|t| t.1).unwrap_or(0)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { line: self.line(), msg: msg.into() })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn next(&mut self) -> Result<Tok, ParseError> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t.0.clone())
            }
            None => self.err("unexpected end of input"),
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        match self.next()? {
            Tok::Punct(p) if p == c => Ok(()),
            other => {
                self.pos -= 1;
                self.err(format!("expected '{c}', found {other:?}"))
            }
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            other => {
                self.pos -= 1;
                self.err(format!("expected identifier, found {other:?}"))
            }
        }
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if self.peek() == Some(&Tok::Ident(kw.to_string())) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.next()? {
            Tok::Num(n) => Ok(Value::Num(n)),
            Tok::Ident(s) => Ok(Value::Const(s)),
            other => {
                self.pos -= 1;
                self.err(format!("expected a constant, found {other:?}"))
            }
        }
    }

    fn definition(&mut self) -> Result<Def, ParseError> {
        let kw = self.ident()?;
        let def = match kw.as_str() {
            "const" => {
                let name = self.ident()?;
                self.expect('=')?;
                let v = self.value()?;
                Def::Const(name, v)
            }
            "typedef" => match self.declaration()? {
                Some(d) => Def::Typedef(d),
                None => return self.err("typedef of void"),
            },
            "enum" => {
                let name = self.ident()?;
                Def::Enum(name, self.enum_body()?)
            }
            "struct" => {
                let name = self.ident()?;
                Def::Struct(name, self.struct_body()?)
            }
            "union" => {
                let name = self.ident()?;
                Def::Union(name, self.union_body()?)
            }
            "program" => return self.err("program definitions are not supported; remove them"),
            other => return self.err(format!("expected a definition, found '{other}'")),
        };
        self.expect(';')?;
        Ok(def)
    }

    fn enum_body(&mut self) -> Result<Vec<(String, Value)>, ParseError> {
        self.expect('{')?;
        let mut out = Vec::new();
        loop {
            let n = self.ident()?;
            self.expect('=')?;
            let v = self.value()?;
            out.push((n, v));
            if self.eat('}') {
                return Ok(out);
            }
            self.expect(',')?;
            if self.eat('}') {
                return Ok(out);
            }
        }
    }

    fn struct_body(&mut self) -> Result<Vec<Decl>, ParseError> {
        self.expect('{')?;
        let mut out = Vec::new();
        while !self.eat('}') {
            if let Some(d) = self.declaration()? {
                out.push(d);
            }
            self.expect(';')?;
        }
        Ok(out)
    }

    fn union_body(&mut self) -> Result<Union, ParseError> {
        if !self.keyword("switch") {
            return self.err("expected 'switch'");
        }
        self.expect('(')?;
        let discriminant = match self.declaration()? {
            Some(d) => d,
            None => return self.err("void discriminant"),
        };
        self.expect(')')?;
        self.expect('{')?;
        let mut arms: Vec<UnionArm> = Vec::new();
        let mut default = None;
        loop {
            if self.eat('}') {
                break;
            }
            if self.keyword("default") {
                self.expect(':')?;
                default = Some(self.declaration()?);
                self.expect(';')?;
                continue;
            }
            let mut labels = Vec::new();
            while self.keyword("case") {
                labels.push(self.value()?);
                self.expect(':')?;
            }
            if labels.is_empty() {
                return self.err("expected 'case', 'default' or '}'");
            }
            let decl = self.declaration()?;
            self.expect(';')?;
            arms.push(UnionArm { labels, decl });
        }
        Ok(Union { discriminant, arms, default })
    }

    /// Returns None for `void`.
    fn declaration(&mut self) -> Result<Option<Decl>, ParseError> {
        if self.keyword("void") {
            return Ok(None);
        }
        let ty = self.type_spec()?;
        if self.eat('*') {
            let name = self.ident()?;
            return Ok(Some(Decl { name, ty, kind: DeclKind::Optional }));
        }
        let name = self.ident()?;
        let kind = if self.eat('[') {
            let v = self.value()?;
            self.expect(']')?;
            DeclKind::Fixed(v)
        } else if self.eat('<') {
            if self.eat('>') {
                DeclKind::Var(None)
            } else {
                let v = self.value()?;
                self.expect('>')?;
                DeclKind::Var(Some(v))
            }
        } else {
            DeclKind::Plain
        };
        match (&ty, &kind) {
            (TypeSpec::Opaque, DeclKind::Plain | DeclKind::Optional) => return self.err("opaque needs [N] or <N>"),
            (TypeSpec::String, DeclKind::Fixed(_) | DeclKind::Plain | DeclKind::Optional) => {
                return self.err("string needs <N> or <>")
            }
            _ => {}
        }
        Ok(Some(Decl { name, ty, kind }))
    }

    fn type_spec(&mut self) -> Result<TypeSpec, ParseError> {
        let w = self.ident()?;
        Ok(match w.as_str() {
            "unsigned" => {
                if self.keyword("int") {
                    TypeSpec::UInt
                } else if self.keyword("hyper") {
                    TypeSpec::UHyper
                } else if self.keyword("long") {
                    TypeSpec::UInt
                } else {
                    TypeSpec::UInt
                }
            }
            "int" | "long" => TypeSpec::Int,
            "hyper" => TypeSpec::Hyper,
            "bool" => TypeSpec::Bool,
            "float" => TypeSpec::Float,
            "double" => TypeSpec::Double,
            "opaque" => TypeSpec::Opaque,
            "string" => TypeSpec::String,
            "struct" | "union" | "enum" => {
                // `struct foo x;` referring to a named type is allowed; inline bodies are not.
                if matches!(self.peek(), Some(Tok::Punct('{'))) {
                    return self.err(format!("inline {w} definitions are not supported: give the type a name"));
                }
                TypeSpec::Named(self.ident()?)
            }
            _ => TypeSpec::Named(w),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_forms() {
        let src = r#"
            const MAX = 0x10; /* comment */
            typedef opaque blob<MAX>;
            typedef unsigned int u;
            enum color { RED = 0, GREEN = 1, };
            struct s { int a; opaque f[4]; string n<>; u list<>; s *next; };
            union un switch (color c) { case RED: int x; case GREEN: void; default: void; };
        "#;
        let defs = Parser::parse(src).unwrap();
        assert_eq!(defs.len(), 6);
        match &defs[4] {
            Def::Struct(n, fields) => {
                assert_eq!(n, "s");
                assert_eq!(fields[4].kind, DeclKind::Optional);
            }
            _ => panic!("expected struct"),
        }
    }

    #[test]
    fn rejects_inline_types() {
        let err = Parser::parse("struct a { struct { int x; } y; };").unwrap_err();
        assert!(err.msg.contains("inline"), "{}", err.msg);
    }
}
