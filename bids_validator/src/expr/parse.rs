//! Tokens and the recursive-descent parser of the expression language.

use serde_json::{Map, Value};

use super::eval::num;
use super::{BinOp, Expr};

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
