//! The BIDS schema expression language: a parser and an evaluator over JSON values.
//!
//! Selectors and checks in the schema (`datatype == "anat"`, `intersects([suffix], ["dseg"])`,
//! `exists(substr(path, 0, length(path) - 3), "dataset") == 0`) are written in this language. The
//! grammar (loosest to tightest binding): `||`, `&&`, `!`, comparisons (`== != < <= > >= in`),
//! `+ -`, `* / %`, `**`, then atoms with trailers (`f(args)`, `x[i]`, `x.name`). Values follow
//! JavaScript semantics, as the reference validator does: `&&`/`||` return an operand, `null`
//! propagates through property access and most functions. The schema's own `meta.expression_tests`
//! are this module's test suite.
//!
//! Written by hand because no crate implements this language.

use serde_json::{Map, Number, Value};

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A literal value.
    Literal(Value),
    /// A bare name, looked up in the context.
    Name(String),
    /// `[a, b, ...]`
    List(Vec<Expr>),
    /// `target.name`
    Property(Box<Expr>, String),
    /// `target[index]`
    Index(Box<Expr>, Box<Expr>),
    /// `name(args)`
    Call(String, Vec<Expr>),
    /// `!x`
    Not(Box<Expr>),
    /// `a op b`
    Binary(Box<Expr>, BinOp, Box<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`
    In,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `**`
    Pow,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Str(String),
    Name(String),
    Op(&'static str),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    const OPS: [&str; 20] = [
        "**", "==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "+", "-", "*", "/", "%", "(", ")",
        "[", "]", ",",
    ];
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' {
            let mut j = i + 1;
            let mut text = String::new();
            while j < b.len() && b[j] as char != c {
                // Only an escaped quote is unescaped; other backslashes stay (regex patterns).
                if b[j] == b'\\' && j + 1 < b.len() && b[j + 1] as char == c {
                    text.push(c);
                    j += 2;
                    continue;
                }
                let ch = s[j..].chars().next().ok_or("bad string")?;
                text.push(ch);
                j += ch.len_utf8();
            }
            if j >= b.len() {
                return Err(format!("unterminated string in '{s}'"));
            }
            out.push(Tok::Str(text));
            i = j + 1;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < b.len()
                && (b[j].is_ascii_digit() || b[j] == b'.' || b[j] == b'e' || b[j] == b'E')
            {
                j += 1;
            }
            let n: f64 = s[i..j]
                .parse()
                .map_err(|_| format!("bad number '{}'", &s[i..j]))?;
            out.push(Tok::Num(n));
            i = j;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            out.push(Tok::Name(s[i..j].to_string()));
            i = j;
        } else if c == '.' {
            out.push(Tok::Op("."));
            i += 1;
        } else if c == '{' && b.get(i + 1) == Some(&b'}') {
            out.push(Tok::Op("{}"));
            i += 2;
        } else if let Some(op) = OPS.iter().find(|op| s[i..].starts_with(**op)) {
            out.push(Tok::Op(op));
            i += op.len();
        } else {
            return Err(format!("unexpected '{c}' in '{s}'"));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }
    fn peek_name(&self, name: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Name(n)) if n == name)
    }
    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.peek_op(op) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{op}' at token {}", self.pos))
        }
    }
    fn test(&mut self) -> Result<Expr, String> {
        let mut left = self.and_test()?;
        while self.peek_op("||") {
            self.pos += 1;
            let right = self.and_test()?;
            left = Expr::Binary(Box::new(left), BinOp::Or, Box::new(right));
        }
        Ok(left)
    }
    fn and_test(&mut self) -> Result<Expr, String> {
        let mut left = self.not_test()?;
        while self.peek_op("&&") {
            self.pos += 1;
            let right = self.not_test()?;
            left = Expr::Binary(Box::new(left), BinOp::And, Box::new(right));
        }
        Ok(left)
    }
    fn not_test(&mut self) -> Result<Expr, String> {
        if self.peek_op("!") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.not_test()?)));
        }
        self.comparison()
    }
    fn comparison(&mut self) -> Result<Expr, String> {
        let mut left = self.arith()?;
        loop {
            let op = match self.toks.get(self.pos) {
                Some(Tok::Op("==")) => BinOp::Eq,
                Some(Tok::Op("!=")) => BinOp::Ne,
                Some(Tok::Op("<")) => BinOp::Lt,
                Some(Tok::Op("<=")) => BinOp::Le,
                Some(Tok::Op(">")) => BinOp::Gt,
                Some(Tok::Op(">=")) => BinOp::Ge,
                Some(Tok::Name(n)) if n == "in" => BinOp::In,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.arith()?;
            left = Expr::Binary(Box::new(left), op, Box::new(right));
        }
    }
    fn arith(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        loop {
            let op = if self.peek_op("+") {
                BinOp::Add
            } else if self.peek_op("-") {
                BinOp::Sub
            } else {
                return Ok(left);
            };
            self.pos += 1;
            let right = self.term()?;
            left = Expr::Binary(Box::new(left), op, Box::new(right));
        }
    }
    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.factor()?;
        loop {
            let op = if self.peek_op("*") {
                BinOp::Mul
            } else if self.peek_op("/") {
                BinOp::Div
            } else if self.peek_op("%") {
                BinOp::Mod
            } else {
                return Ok(left);
            };
            self.pos += 1;
            let right = self.factor()?;
            left = Expr::Binary(Box::new(left), op, Box::new(right));
        }
    }
    fn factor(&mut self) -> Result<Expr, String> {
        let base = self.atom()?;
        if self.peek_op("**") {
            self.pos += 1;
            let exp = self.factor()?;
            return Ok(Expr::Binary(Box::new(base), BinOp::Pow, Box::new(exp)));
        }
        Ok(base)
    }
    fn atom(&mut self) -> Result<Expr, String> {
        // A leading minus on a number literal.
        if self.peek_op("-")
            && let Some(Tok::Num(n)) = self.toks.get(self.pos + 1).cloned()
        {
            self.pos += 2;
            return self.trailers(Expr::Literal(num(-n)));
        }
        let tok = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of expression")?;
        self.pos += 1;
        let item = match tok {
            Tok::Num(n) => Expr::Literal(num(n)),
            Tok::Str(s) => Expr::Literal(Value::String(s)),
            Tok::Name(n) if n == "null" => Expr::Literal(Value::Null),
            Tok::Name(n) if n == "true" => Expr::Literal(Value::Bool(true)),
            Tok::Name(n) if n == "false" => Expr::Literal(Value::Bool(false)),
            Tok::Name(n) => {
                if self.peek_op("(") {
                    self.pos += 1;
                    let args = self.list_until(")")?;
                    Expr::Call(n, args)
                } else {
                    Expr::Name(n)
                }
            }
            Tok::Op("(") => {
                let e = self.test()?;
                self.expect(")")?;
                e
            }
            Tok::Op("[") => Expr::List(self.list_until("]")?),
            Tok::Op("{}") => Expr::Literal(Value::Object(Map::new())),
            Tok::Op(o) => return Err(format!("unexpected '{o}'")),
        };
        self.trailers(item)
    }
    fn trailers(&mut self, mut item: Expr) -> Result<Expr, String> {
        loop {
            if self.peek_op(".") {
                self.pos += 1;
                match self.toks.get(self.pos).cloned() {
                    Some(Tok::Name(n)) => {
                        self.pos += 1;
                        item = Expr::Property(Box::new(item), n);
                    }
                    _ => return Err("expected a name after '.'".into()),
                }
            } else if self.peek_op("[") {
                self.pos += 1;
                let idx = self.test()?;
                self.expect("]")?;
                item = Expr::Index(Box::new(item), Box::new(idx));
            } else {
                return Ok(item);
            }
        }
    }
    fn list_until(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut items = Vec::new();
        if self.peek_op(close) {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(self.test()?);
            if self.peek_op(",") {
                self.pos += 1;
            } else {
                self.expect(close)?;
                return Ok(items);
            }
        }
    }
}

/// True when `e` reads any of `names` as a top-level name or a property (`associations`,
/// `nifti_header.axis_codes`): lets a caller skip rules that need context it does not build.
pub fn mentions(e: &Expr, names: &[&str]) -> bool {
    match e {
        Expr::Name(n) => names.contains(&n.as_str()),
        Expr::Property(t, p) => names.contains(&p.as_str()) || mentions(t, names),
        Expr::Index(t, i) => mentions(t, names) || mentions(i, names),
        Expr::List(items) | Expr::Call(_, items) => items.iter().any(|x| mentions(x, names)),
        Expr::Not(x) => mentions(x, names),
        Expr::Binary(a, _, b) => mentions(a, names) || mentions(b, names),
        Expr::Literal(_) => false,
    }
}

/// Parses an expression.
pub fn parse(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
    };
    let e = p.test()?;
    if p.pos != p.toks.len() {
        return Err(format!("trailing input in '{s}'"));
    }
    let _ = p.peek_name("");
    Ok(e)
}

fn num(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::Number(Number::from(n as i64))
    } else {
        Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// JavaScript truthiness: `null`, `false`, `0`, `""` are false; arrays and objects are true.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0 && !x.is_nan()),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

/// Strict equality (`===`), with numbers compared by value (1 == 1.0).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q))
        }
        _ => a == b,
    }
}

/// Resolves names (`suffix`, `sidecar`, `dataset`, ...) and the `exists()` function.
pub trait Context {
    /// The value of a top-level name (`None` when unknown), borrowed: property chains such as
    /// `dataset.dataset_description.DatasetType` are walked without copying what they pass through.
    fn lookup(&self, name: &str) -> Option<&Value>;
    /// How many of `paths` exist under the given rule (`dataset`, `subject`, `stimuli`, `file`,
    /// `bids-uri`).
    fn exists(&self, paths: &[String], rule: &str) -> usize;
}

/// Walks a name/property/literal-index chain by reference (`None` when it is not such a chain).
fn resolve<'c>(e: &Expr, ctx: &'c dyn Context) -> Option<Option<&'c Value>> {
    match e {
        Expr::Name(n) => Some(ctx.lookup(n)),
        Expr::Property(t, name) => {
            let base = resolve(t, ctx)?;
            Some(base.and_then(|b| b.as_object()).and_then(|m| m.get(name)))
        }
        // Only arrays are indexed by reference; strings (`"j-"[0]`) fall through to `eval`.
        Expr::Index(t, i) => match (i.as_ref(), resolve(t, ctx)?) {
            (Expr::Literal(Value::Number(n)), Some(Value::Array(a))) => {
                Some(n.as_u64().and_then(|k| a.get(k as usize)))
            }
            (Expr::Literal(Value::Number(_)), None) => Some(None),
            _ => None,
        },
        _ => None,
    }
}

/// Evaluates an expression.
pub fn eval(e: &Expr, ctx: &dyn Context) -> Value {
    if let Some(found) = resolve(e, ctx) {
        return found.cloned().unwrap_or(Value::Null);
    }
    match e {
        Expr::Literal(v) => v.clone(),
        Expr::Name(_) => Value::Null,
        Expr::List(items) => Value::Array(items.iter().map(|i| eval(i, ctx)).collect()),
        Expr::Property(t, name) => match eval(t, ctx) {
            Value::Object(m) => m.get(name).cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        },
        Expr::Index(t, i) => {
            let target = eval(t, ctx);
            let idx = eval(i, ctx);
            match (&target, &idx) {
                (Value::Array(a), Value::Number(n)) => n
                    .as_u64()
                    .and_then(|k| a.get(k as usize).cloned())
                    .unwrap_or(Value::Null),
                (Value::String(s), Value::Number(n)) => n
                    .as_u64()
                    .and_then(|k| s.chars().nth(k as usize))
                    .map(|c| Value::String(c.to_string()))
                    .unwrap_or(Value::Null),
                (Value::Object(m), Value::String(k)) => m.get(k).cloned().unwrap_or(Value::Null),
                _ => Value::Null,
            }
        }
        Expr::Not(x) => Value::Bool(!truthy(&eval(x, ctx))),
        Expr::Binary(a, op, b) => binary(a, *op, b, ctx),
        Expr::Call(name, args) => call(name, args, ctx),
    }
}

fn binary(a: &Expr, op: BinOp, b: &Expr, ctx: &dyn Context) -> Value {
    let left = eval(a, ctx);
    match op {
        BinOp::Or => return if truthy(&left) { left } else { eval(b, ctx) },
        BinOp::And => return if truthy(&left) { eval(b, ctx) } else { left },
        _ => {}
    }
    let right = eval(b, ctx);
    let nums = (left.as_f64(), right.as_f64());
    match op {
        BinOp::Eq => Value::Bool(equal(&left, &right)),
        BinOp::Ne => Value::Bool(!equal(&left, &right)),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = match (&left, &right) {
                (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                _ => match nums {
                    (Some(x), Some(y)) => x.partial_cmp(&y),
                    _ => None,
                },
            };
            let Some(ord) = ord else {
                return Value::Bool(false);
            };
            Value::Bool(match op {
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            })
        }
        // JavaScript's `in` (what the reference evaluates): keys of objects, indices of arrays.
        BinOp::In => match &right {
            Value::Array(items) => {
                let idx = left
                    .as_f64()
                    .or_else(|| left.as_str().and_then(|s| s.parse::<f64>().ok()));
                Value::Bool(
                    idx.is_some_and(|i| i >= 0.0 && i.fract() == 0.0 && (i as usize) < items.len()),
                )
            }
            Value::Object(m) => Value::Bool(left.as_str().is_some_and(|k| m.contains_key(k))),
            _ => Value::Null,
        },
        BinOp::Add => match (&left, &right) {
            (Value::String(x), Value::String(y)) => Value::String(format!("{x}{y}")),
            _ => arith(nums, |x, y| x + y),
        },
        BinOp::Sub => arith(nums, |x, y| x - y),
        BinOp::Mul => arith(nums, |x, y| x * y),
        BinOp::Div => arith(nums, |x, y| x / y),
        BinOp::Mod => arith(nums, |x, y| x % y),
        BinOp::Pow => arith(nums, f64::powf),
        BinOp::Or | BinOp::And => Value::Null,
    }
}

fn arith(nums: (Option<f64>, Option<f64>), f: impl Fn(f64, f64) -> f64) -> Value {
    match nums {
        (Some(x), Some(y)) => num(f(x, y)),
        _ => Value::Null,
    }
}

fn call(name: &str, args: &[Expr], ctx: &dyn Context) -> Value {
    let v: Vec<Value> = args.iter().map(|a| eval(a, ctx)).collect();
    let arg = |i: usize| v.get(i).cloned().unwrap_or(Value::Null);
    match name {
        "intersects" => match (arg(0), arg(1)) {
            (Value::Array(a), Value::Array(b)) => {
                let common: Vec<Value> = a
                    .into_iter()
                    .filter(|x| b.iter().any(|y| equal(x, y)))
                    .collect();
                if common.is_empty() {
                    Value::Bool(false)
                } else {
                    Value::Array(common)
                }
            }
            _ => Value::Bool(false),
        },
        "allequal" => match (arg(0), arg(1)) {
            (Value::Array(a), Value::Array(b)) => {
                Value::Bool(a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| equal(x, y)))
            }
            _ => Value::Bool(false),
        },
        "match" => match (arg(0), arg(1)) {
            (Value::Null, _) => Value::Null,
            (Value::String(s), Value::String(p)) => Value::Bool(regex_match(&p, &s)),
            _ => Value::Bool(false),
        },
        "substr" => match (arg(0), arg(1).as_f64(), arg(2).as_f64()) {
            (Value::String(s), Some(start), Some(end)) => {
                let chars: Vec<char> = s.chars().collect();
                let a = (start.max(0.0) as usize).min(chars.len());
                let b = (end.max(0.0) as usize).min(chars.len()).max(a);
                Value::String(chars[a..b].iter().collect())
            }
            _ => Value::Null,
        },
        "length" => match arg(0) {
            Value::Array(a) => num(a.len() as f64),
            Value::String(s) => num(s.chars().count() as f64),
            Value::Object(m) => num(m.len() as f64),
            _ => Value::Null,
        },
        "type" => Value::String(
            match arg(0) {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            }
            .into(),
        ),
        "count" => match arg(0) {
            Value::Array(a) => num(a.iter().filter(|x| equal(x, &arg(1))).count() as f64),
            _ => Value::Null,
        },
        "index" => match arg(0) {
            Value::Array(a) => a
                .iter()
                .position(|x| equal(x, &arg(1)))
                .map(|i| num(i as f64))
                .unwrap_or(Value::Null),
            _ => Value::Null,
        },
        "min" | "max" => match arg(0) {
            Value::Array(a) => {
                let nums = a.iter().filter_map(|x| {
                    x.as_f64()
                        .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
                });
                let r = if name == "min" {
                    nums.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))))
                } else {
                    nums.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
                };
                r.map(num).unwrap_or(Value::Null)
            }
            Value::Number(n) => Value::Number(n),
            _ => Value::Null,
        },
        "unique" => match arg(0) {
            Value::Array(a) => {
                let mut out: Vec<Value> = Vec::new();
                for x in a {
                    if !out.iter().any(|y| equal(y, &x)) {
                        out.push(x);
                    }
                }
                Value::Array(out)
            }
            _ => Value::Null,
        },
        "sorted" => match arg(0) {
            Value::Array(a) => Value::Array(sorted(a, arg(1).as_str().unwrap_or("auto"))),
            _ => Value::Null,
        },
        "exists" => {
            let rule = arg(1);
            let Some(rule) = rule.as_str() else {
                return num(0.0);
            };
            let paths: Vec<String> = match arg(0) {
                Value::String(s) => vec![s],
                Value::Array(a) => a
                    .into_iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => return num(0.0),
            };
            num(ctx.exists(&paths, rule) as f64)
        }
        _ => Value::Null,
    }
}

/// `match()`: patterns come from the schema and repeat for every file, so compiled regexes are
/// cached per thread. An invalid pattern matches nothing.
pub(crate) fn regex_match(pattern: &str, text: &str) -> bool {
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, Option<regex::Regex>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let re = c
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(pattern).ok());
        re.as_ref().is_some_and(|r| r.is_match(text))
    })
}

fn sorted(mut a: Vec<Value>, method: &str) -> Vec<Value> {
    let as_num = |v: &Value| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse::<f64>().ok()))
            .filter(|x| x.is_finite())
    };
    let lexical = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let method = match method {
        "auto" if a.iter().all(|v| v.is_number()) => "numeric",
        "auto" => "lexical",
        m => m,
    };
    if method == "numeric" {
        // Non-numeric entries ("n/a") keep their places; numeric ones are sorted among themselves.
        let slots: Vec<usize> = (0..a.len()).filter(|&i| as_num(&a[i]).is_some()).collect();
        let mut vals: Vec<Value> = slots.iter().map(|&i| a[i].clone()).collect();
        vals.sort_by(|x, y| {
            as_num(x)
                .unwrap_or(0.0)
                .total_cmp(&as_num(y).unwrap_or(0.0))
        });
        for (slot, v) in slots.into_iter().zip(vals) {
            a[slot] = v;
        }
        a
    } else {
        a.sort_by_key(|v| lexical(v));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Empty;
    impl Context for Empty {
        fn lookup(&self, _: &str) -> Option<&Value> {
            None
        }
        fn exists(&self, _: &[String], _: &str) -> usize {
            0
        }
    }

    #[test]
    fn the_schema_expression_tests_pass() {
        let schema = crate::schema::Schema::embedded();
        let tests = schema.value()["meta"]["expression_tests"]
            .as_array()
            .unwrap();
        assert!(tests.len() > 50);
        for t in tests {
            let src = t["expression"].as_str().unwrap();
            let e = parse(src).unwrap_or_else(|err| panic!("{src}: {err}"));
            let got = eval(&e, &Empty);
            assert!(
                equal(&got, &t["result"]) || got == t["result"],
                "{src}: got {got}, want {}",
                t["result"]
            );
        }
    }

    struct Sidecar(Value);
    impl Context for Sidecar {
        fn lookup(&self, name: &str) -> Option<&Value> {
            (name == "sidecar").then_some(&self.0)
        }
        fn exists(&self, _: &[String], _: &str) -> usize {
            0
        }
    }

    #[test]
    fn context_values_index_and_sort_like_javascript() {
        let ctx = Sidecar(serde_json::json!({"PhaseEncodingDirection": "j-", "Runs": [3, 1, 2]}));
        let v = |src: &str| eval(&parse(src).unwrap(), &ctx);
        assert_eq!(
            v("sidecar.PhaseEncodingDirection[0]"),
            Value::String("j".into())
        );
        assert_eq!(v("sidecar.Runs[1]"), serde_json::json!(1));
        assert_eq!(v("sidecar.Missing[0]"), Value::Null);
        assert_eq!(v("1 in sidecar.Runs"), Value::Bool(true));
        assert_eq!(v("'micr' in ['mri', 'micr']"), Value::Bool(false));
        let many: Vec<String> = (0..40)
            .map(|i| {
                if i % 3 == 0 {
                    "NaN".into()
                } else {
                    (40 - i).to_string()
                }
            })
            .collect();
        let expr = format!("sorted({many:?}, 'numeric')");
        assert_eq!(v(&expr).as_array().map(Vec::len), Some(40));
    }

    #[test]
    fn every_schema_expression_parses() {
        let schema = crate::schema::Schema::embedded();
        let mut n = 0;
        let mut stack = vec![&schema.value()["rules"]];
        while let Some(v) = stack.pop() {
            match v {
                Value::Object(m) => {
                    for (k, x) in m {
                        if k == "selectors" || k == "checks" {
                            for s in x.as_array().into_iter().flatten().filter_map(Value::as_str) {
                                parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
                                n += 1;
                            }
                        } else {
                            stack.push(x);
                        }
                    }
                }
                Value::Array(a) => stack.extend(a.iter()),
                _ => {}
            }
        }
        assert!(n > 500, "{n}");
    }
}
