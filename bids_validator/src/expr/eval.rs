//! Evaluation of parsed expressions over JSON values, with JavaScript semantics (as the
//! reference validator): operators, property access, and the schema's functions.

use serde_json::{Number, Value};

use super::{BinOp, Expr};

/// A number as the language's value (an integer when it is one).
pub(super) fn num(n: f64) -> Value {
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
pub(super) fn equal(a: &Value, b: &Value) -> bool {
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
