//! The values and functions a condition runs with: the measured `result`
//! (JSON decoded as Go decodes it: every number a float64), Argo's helpers
//! (`asInt`, `asFloat`, `isNaN`, `isInf`, `isNil`, `default`) and the
//! functions [`crate::emit`] routes Go's semantics through.

use expr::{Context, Environment, Value};
use indexmap::IndexMap;

/// Converts JSON to expr values: every number a float (Go's JSON
/// decoding), and the strings `NaN`, `+Inf`, `-Inf` (how non-finite values
/// travel in JSON, per the plugin contract) back to floats.
pub fn to_expr(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Value::Float(f64::NAN),
            "+Inf" | "Inf" => Value::Float(f64::INFINITY),
            "-Inf" => Value::Float(f64::NEG_INFINITY),
            _ => Value::String(s.clone()),
        },
        serde_json::Value::Array(items) => Value::Array(items.iter().map(to_expr).collect()),
        serde_json::Value::Object(map) => {
            let mut out = IndexMap::with_capacity(map.len());
            for (k, v) in map {
                out.insert(k.clone(), to_expr(v));
            }
            Value::Map(out)
        }
    }
}

/// Go's name for a value's type, as its error messages say it.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "int",
        Value::Bool(_) => "bool",
        Value::Float(_) => "float64",
        Value::Nil => "<nil>",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Bytes(_) => "[]uint8",
        Value::Map(_) | Value::KeyedMap(_) => "map[string]interface {}",
        _ => "time value",
    }
}

fn fail<T>(message: String) -> expr::Result<T> {
    Err(expr::Error::ExprError(message))
}

fn arg(args: &[Value], i: usize, name: &str) -> expr::Result<Value> {
    match args.get(i) {
        Some(v) => Ok(v.clone()),
        None => fail(format!("{name}() needs {} arguments", i + 1)),
    }
}

/// Go's `runtime.Fetch`: a map's key (nil when missing), an array's or a
/// string's index (negative from the end; out of range is an error), and an
/// error for anything else, nil included.
fn fetch(from: &Value, key: &Value) -> expr::Result<Value> {
    let describe = || format!("cannot fetch {} from {}", show(key), type_name(from));
    match from {
        Value::Map(map) => match key {
            Value::String(k) => Ok(map.get(k).cloned().unwrap_or(Value::Nil)),
            _ => Ok(Value::Nil),
        },
        Value::Array(items) => {
            let index = integer(key).ok_or_else(|| expr::Error::ExprError(describe()))?;
            let len = items.len() as i64;
            let at = if index < 0 { len + index } else { index };
            match usize::try_from(at).ok().and_then(|i| items.get(i)) {
                Some(v) => Ok(v.clone()),
                None => fail(format!(
                    "index out of range: {index} (array length is {len})"
                )),
            }
        }
        Value::String(s) => {
            let index = integer(key).ok_or_else(|| expr::Error::ExprError(describe()))?;
            let chars: Vec<char> = s.chars().collect();
            let len = chars.len() as i64;
            let at = if index < 0 { len + index } else { index };
            match usize::try_from(at).ok().and_then(|i| chars.get(i)) {
                Some(c) => Ok(Value::String(c.to_string())),
                None => fail(format!(
                    "index out of range: {index} (string length is {len})"
                )),
            }
        }
        _ => fail(describe()),
    }
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(*f as i64),
        _ => None,
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        other => type_name(other).to_string(),
    }
}

/// Go's `==` (expr's `runtime.Equal`): numbers compare by value across int
/// and float; a non-finite float equals its JSON spelling (`"NaN"`,
/// `"+Inf"`, `"-Inf"`), which is how a string `"NaN"` in a measurement
/// arrives; anything else compares as Go's `reflect.DeepEqual` does, so
/// `[1.0] == [1]` is false, as in Go.
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Integer(x), Value::Float(y)) | (Value::Float(y), Value::Integer(x)) => {
            (*x as f64) == *y
        }
        (Value::Float(f), Value::String(s)) | (Value::String(s), Value::Float(f))
            if !f.is_finite() =>
        {
            (f.is_nan() && s == "NaN")
                || (*f == f64::INFINITY && (s == "+Inf" || s == "Inf"))
                || (*f == f64::NEG_INFINITY && s == "-Inf")
        }
        _ => a == b,
    }
}

/// The environment: Argo's helpers and Weir's semantics functions.
/// As in Argo, `isNil(x)` and `default(x, d)` look at `result`, not `x`.
pub fn environment(result: &Value) -> Environment<'static> {
    let mut env = Environment::new();
    env.add_function("__weir_fetch", |c| {
        fetch(&arg(&c.args, 0, "fetch")?, &arg(&c.args, 1, "fetch")?)
    });
    env.add_function("__weir_index", |c| {
        fetch(&arg(&c.args, 0, "index")?, &arg(&c.args, 1, "index")?)
    });
    env.add_function("__weir_fetch_opt", |c| match arg(&c.args, 0, "fetch")? {
        Value::Nil => Ok(Value::Nil),
        from => fetch(&from, &arg(&c.args, 1, "fetch")?),
    });
    env.add_function("__weir_index_opt", |c| match arg(&c.args, 0, "index")? {
        Value::Nil => Ok(Value::Nil),
        from => fetch(&from, &arg(&c.args, 1, "index")?),
    });
    env.add_function("__weir_eq", |c| {
        Ok(Value::Bool(equal(
            &arg(&c.args, 0, "==")?,
            &arg(&c.args, 1, "==")?,
        )))
    });
    env.add_function("__weir_map", |c| {
        let mut map = IndexMap::new();
        for pair in c.args.chunks(2) {
            if let [Value::String(k), v] = pair {
                map.insert(k.clone(), v.clone());
            }
        }
        Ok(Value::Map(map))
    });
    env.add_function("asInt", |c| match arg(&c.args, 0, "asInt")? {
        Value::Float(f) if f.is_finite() => Ok(Value::Integer(f.trunc() as i64)),
        Value::Integer(i) => Ok(Value::Integer(i)),
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(i) => Ok(Value::Integer(i)),
            Err(e) => fail(format!("asInt({s:?}): {e}")),
        },
        other => fail(format!("asInt() not supported on {}", type_name(&other))),
    });
    env.add_function("asFloat", |c| match arg(&c.args, 0, "asFloat")? {
        Value::Float(f) => Ok(Value::Float(f)),
        Value::Integer(i) => Ok(Value::Float(i as f64)),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(f) => Ok(Value::Float(f)),
            Err(e) => fail(format!("asFloat({s:?}): {e}")),
        },
        other => fail(format!("asFloat() not supported on {}", type_name(&other))),
    });
    env.add_function("isNaN", |c| match arg(&c.args, 0, "isNaN")? {
        Value::Float(f) => Ok(Value::Bool(f.is_nan())),
        Value::Integer(_) => Ok(Value::Bool(false)),
        other => fail(format!(
            "isNaN() expects a number, got {}",
            type_name(&other)
        )),
    });
    env.add_function("isInf", |c| match arg(&c.args, 0, "isInf")? {
        Value::Float(f) => Ok(Value::Bool(f.is_infinite())),
        Value::Integer(_) => Ok(Value::Bool(false)),
        other => fail(format!(
            "isInf() expects a number, got {}",
            type_name(&other)
        )),
    });
    let is_nil = matches!(result, Value::Nil);
    env.add_function("isNil", move |_| Ok(Value::Bool(is_nil)));
    let current = result.clone();
    env.add_function("default", move |c| {
        if matches!(current, Value::Nil) {
            arg(&c.args, 1, "default")
        } else {
            Ok(current.clone())
        }
    });
    env
}

/// A context binding `result`.
pub fn context(result: Value) -> Context {
    let mut ctx = Context::default();
    ctx.insert("result", result);
    ctx
}
