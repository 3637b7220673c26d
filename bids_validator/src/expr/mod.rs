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
//!
//! The pieces: `parse.rs` (tokens and the recursive-descent parser), `eval.rs` (values,
//! operators and functions).

mod eval;
mod parse;

pub(crate) use eval::regex_match;
pub use eval::{Context, eval, truthy};
pub use parse::parse;

use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use super::eval::equal;
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
