//! Built-in value transforms and named value maps: what a mapping does to a value between reading
//! it and writing it. Each step works both ways where that is defined (`yes_no`, maps,
//! `parse_date`, `zone`); the others (`trim`, `phone`, …) only clean a value on its way forward and
//! pass it back unchanged.
//!
//! A step that cannot handle a value (a code the map does not know, a date in no listed format)
//! is an error for that row: it goes to the dead-letter table with the reason, unless the column
//! says `on_error = "null"` (write NULL) or `on_error = "keep"` (write the value as it came).

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{SourceType, Value};

/// A named value map (`[map.<name>]`): forward entries, explicit reverse entries for values
/// that several codes map to, and optional defaults.
#[derive(Debug, Clone)]
pub struct ValueMap {
    pub name: String,
    pub forward: HashMap<String, Value>,
    pub reverse: HashMap<String, Value>,
    pub default: Option<Value>,
    pub reverse_default: Option<Value>,
    /// Target values several codes map to without an explicit reverse entry: the map cannot be
    /// used backwards (these say why).
    pub ambiguous: Vec<String>,
}

impl ValueMap {
    /// Builds the reverse side: explicit entries first, then every forward entry whose value
    /// only one code maps to. A value several codes map to without an explicit reverse entry
    /// makes the map one-way (which code should the CRM's value become?): see
    /// [`ValueMap::ambiguous`].
    pub fn new(
        name: String,
        forward: HashMap<String, Value>,
        explicit_reverse: HashMap<String, Value>,
        default: Option<Value>,
        reverse_default: Option<Value>,
    ) -> ValueMap {
        let mut by_value: HashMap<String, Vec<&String>> = HashMap::new();
        for (code, v) in &forward {
            by_value.entry(v.to_string()).or_default().push(code);
        }
        let mut reverse = explicit_reverse;
        let mut errors = Vec::new();
        let mut ambiguous: Vec<_> = by_value.iter().filter(|(_, c)| c.len() > 1).collect();
        ambiguous.sort();
        for (value, codes) in ambiguous {
            if !reverse.contains_key(value) {
                let mut codes: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
                codes.sort();
                errors.push(format!(
                    "value {value:?} is the image of {} codes ({}): add `{value} = \"<code>\"` under [map.{name}.reverse] to say which one the other side gets",
                    codes.len(),
                    codes.join(", ")
                ));
            }
        }
        for (value, codes) in by_value {
            if codes.len() == 1 {
                reverse
                    .entry(value)
                    .or_insert_with(|| Value::Text(codes[0].clone()));
            }
        }
        ValueMap {
            name,
            forward,
            reverse,
            default,
            reverse_default,
            ambiguous: errors,
        }
    }

    /// What the map's values are, for type checks.
    fn output(&self) -> SourceType {
        let mut all = self.forward.values().chain(self.default.iter());
        let first = all.next();
        let same = |f: fn(&Value) -> bool| first.is_some_and(f) && all.clone().all(f);
        if same(|v| matches!(v, Value::Bool(_))) {
            SourceType::Int {
                bytes: 1,
                unsigned: false,
            }
        } else if same(|v| matches!(v, Value::Int(_))) {
            SourceType::Int {
                bytes: 8,
                unsigned: false,
            }
        } else {
            text()
        }
    }

    fn apply(&self, v: &Value, reverse: bool) -> Result<Value, String> {
        let (table, default, dir) = if reverse {
            (&self.reverse, &self.reverse_default, "reverse ")
        } else {
            (&self.forward, &self.default, "")
        };
        let key = key_text(v);
        match table.get(&key).or(default.as_ref()) {
            Some(out) => Ok(out.clone()),
            None => Err(format!(
                "{} is not in the {dir}entries of map {} (add it, or give the map a default)",
                quoted(&key),
                self.name
            )),
        }
    }
}

/// A value as text the way maps, filters and pivot codes compare it: `true`/`false` for
/// booleans, digits for integers, raw bytes read as UTF-8.
pub fn key_text(v: &Value) -> String {
    match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => other.to_string(),
    }
}

fn quoted(s: &str) -> String {
    let short: String = s.chars().take(60).collect();
    format!("{short:?}")
}

fn text() -> SourceType {
    SourceType::Text {
        charset: "utf8mb4".into(),
    }
}

/// One step of a transform.
#[derive(Debug, Clone)]
pub enum Step {
    /// Leading and trailing white space removed.
    Trim,
    /// An empty (or all-blank) string becomes NULL.
    EmptyNull,
    /// Listed values become NULL (`null_if = ["noemail@cvety.kz"]`).
    NullIf(Vec<String>),
    /// `Y`/`N` ⇄ boolean (NULL stays NULL; anything else is an error).
    YesNo,
    /// A phone number to `+` and digits: `8 (701) 123-45-67` → `+77011234567`.
    Phone,
    /// Text holding an integer → integer.
    Int,
    /// Text → date, trying each chrono format in turn (`%d.%m.%Y`, `%Y-%m-%d`, …).
    ParseDate(Vec<String>),
    /// A local wall-clock DATETIME in this zone ⇄ an instant (timestamptz).
    Zone(chrono_tz::Tz),
    /// A named value map.
    Map(Arc<ValueMap>),
}

impl Step {
    /// The built-in named in `transform = [...]`.
    pub fn named(name: &str) -> Option<Step> {
        Some(match name {
            "trim" => Step::Trim,
            "empty_null" => Step::EmptyNull,
            "yes_no" => Step::YesNo,
            "phone" => Step::Phone,
            "int" => Step::Int,
            _ => return None,
        })
    }

    pub const NAMES: &'static str = "trim, empty_null, yes_no, phone, int";

    fn name(&self) -> String {
        match self {
            Step::Trim => "trim".into(),
            Step::EmptyNull => "empty_null".into(),
            Step::NullIf(_) => "null_if".into(),
            Step::YesNo => "yes_no".into(),
            Step::Phone => "phone".into(),
            Step::Int => "int".into(),
            Step::ParseDate(_) => "parse_date".into(),
            Step::Zone(z) => format!("zone {z}"),
            Step::Map(m) => format!("map {}", m.name),
        }
    }

    /// The type of what this step makes of `input`, or why it cannot take it.
    fn output(&self, input: &SourceType) -> Result<SourceType, String> {
        let texty = matches!(
            input,
            SourceType::Text { .. } | SourceType::Enum(_) | SourceType::Set(_)
        );
        let need_text = |out: SourceType| {
            if texty {
                Ok(out)
            } else {
                Err(format!(
                    "{} takes text, not {}",
                    self.name(),
                    input.describe()
                ))
            }
        };
        match self {
            Step::Trim | Step::EmptyNull | Step::Phone => need_text(text()),
            Step::NullIf(_) => Ok(input.clone()),
            Step::YesNo => need_text(SourceType::Int {
                bytes: 1,
                unsigned: false,
            }),
            Step::Int => need_text(SourceType::Int {
                bytes: 8,
                unsigned: false,
            }),
            Step::ParseDate(_) => need_text(SourceType::Date),
            Step::Zone(_) => match input {
                SourceType::DateTime | SourceType::Date => Ok(SourceType::Timestamp),
                other => Err(format!(
                    "zone takes a DATETIME or DATE, not {}",
                    other.describe()
                )),
            },
            Step::Map(m) => Ok(m.output()),
        }
    }

    fn forward(&self, v: Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(v);
        }
        Ok(match self {
            Step::Trim => match v {
                Value::Text(s) => Value::Text(s.trim().to_string()),
                other => other,
            },
            Step::EmptyNull => match &v {
                Value::Text(s) if s.trim().is_empty() => Value::Null,
                _ => v,
            },
            Step::NullIf(list) => {
                if list.iter().any(|x| *x == key_text(&v)) {
                    Value::Null
                } else {
                    v
                }
            }
            Step::YesNo => match key_text(&v).as_str() {
                "Y" | "y" => Value::Bool(true),
                "N" | "n" => Value::Bool(false),
                other => return Err(format!("yes_no: {} is neither Y nor N", quoted(other))),
            },
            Step::Phone => {
                let s = key_text(&v);
                match normalise_phone(&s) {
                    Some(p) => Value::Text(p),
                    None => return Err(format!("phone: {} is not a phone number", quoted(&s))),
                }
            }
            Step::Int => {
                let s = key_text(&v);
                match s.trim().parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => return Err(format!("int: {} is not an integer", quoted(&s))),
                }
            }
            Step::ParseDate(formats) => {
                let s = key_text(&v);
                let t = s.trim();
                match formats
                    .iter()
                    .find_map(|f| chrono::NaiveDate::parse_from_str(t, f).ok())
                {
                    Some(d) => Value::Date(crate::model::Date {
                        year: chrono::Datelike::year(&d) as u16,
                        month: chrono::Datelike::month(&d) as u8,
                        day: chrono::Datelike::day(&d) as u8,
                    }),
                    None => {
                        return Err(format!(
                            "parse_date: {} matches none of the formats {}",
                            quoted(&s),
                            formats.join(", ")
                        ))
                    }
                }
            }
            Step::Zone(tz) => match v {
                Value::DateTime(dt) if dt.date.is_zero_or_partial() => Value::Null,
                Value::DateTime(dt) => match dt.to_chrono().map(|n| n.and_local_timezone(*tz)) {
                    Some(chrono::LocalResult::Single(t))
                    | Some(chrono::LocalResult::Ambiguous(t, _)) => {
                        Value::Timestamp(t.timestamp_micros())
                    }
                    _ => return Err(format!("zone: {dt} does not exist in {tz}")),
                },
                Value::Date(d) if d.is_zero_or_partial() => Value::Null,
                other => other,
            },
            Step::Map(m) => m.apply(&v, false)?,
        })
    }

    fn backward(&self, v: Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(v);
        }
        Ok(match self {
            Step::YesNo => match v {
                Value::Bool(b) => Value::Text(if b { "Y" } else { "N" }.into()),
                other => other,
            },
            Step::Int => match v {
                Value::Int(i) => Value::Text(i.to_string()),
                other => other,
            },
            Step::ParseDate(formats) => match v {
                Value::Date(d) => match d.to_chrono() {
                    Some(n) => Value::Text(n.format(&formats[0]).to_string()),
                    None => Value::Date(d),
                },
                other => other,
            },
            Step::Zone(tz) => match v {
                Value::Timestamp(us) => match chrono::DateTime::from_timestamp_micros(us) {
                    Some(t) => {
                        let local = t.with_timezone(tz).naive_local();
                        Value::DateTime(crate::model::DateTime {
                            date: crate::model::Date {
                                year: chrono::Datelike::year(&local) as u16,
                                month: chrono::Datelike::month(&local) as u8,
                                day: chrono::Datelike::day(&local) as u8,
                            },
                            hour: chrono::Timelike::hour(&local) as u8,
                            minute: chrono::Timelike::minute(&local) as u8,
                            second: chrono::Timelike::second(&local) as u8,
                            micro: chrono::Timelike::nanosecond(&local) / 1000,
                        })
                    }
                    None => Value::Timestamp(us),
                },
                other => other,
            },
            Step::Map(m) => m.apply(&v, true)?,
            Step::Trim | Step::EmptyNull | Step::NullIf(_) | Step::Phone => v,
        })
    }
}

/// `+` and the digits of a phone number; Kazakh numbers (`8 7xx…`, `7xx…` with 10 digits) get
/// the country code 7. `None` when fewer than 10 digits remain.
pub fn normalise_phone(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    let digits = match digits.len() {
        10 => format!("7{digits}"),
        11 if digits.starts_with('8') => format!("7{}", &digits[1..]),
        n if (11..=15).contains(&n) => digits,
        _ => return None,
    };
    Some(format!("+{digits}"))
}

/// What happens to a value a step cannot handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The row goes to the dead-letter table with the reason.
    #[default]
    DeadLetter,
    /// NULL is written instead.
    Null,
    /// The value is written as it came.
    Keep,
}

/// The steps a column's value goes through, in order.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    pub steps: Vec<Step>,
    pub on_error: OnError,
}

impl Transform {
    pub fn is_identity(&self) -> bool {
        self.steps.is_empty()
    }

    /// The steps in order (`trim → empty_null → map order_status`), and what an error does when
    /// not the default (`duplex plan`); empty for none.
    pub fn describe(&self) -> String {
        let steps: Vec<String> = self.steps.iter().map(Step::name).collect();
        let mut out = steps.join(" → ");
        if !steps.is_empty() {
            match self.on_error {
                OnError::DeadLetter => {}
                OnError::Null => out.push_str(" (on error: NULL)"),
                OnError::Keep => out.push_str(" (on error: keep the value)"),
            }
        }
        out
    }

    /// The source values that map to `target` when the transform is one map and several codes
    /// do (`P` and `PD` for `paid`): writing back, any of them already means `target`.
    pub fn preimages(&self, target: &Value) -> Option<Vec<Value>> {
        let [Step::Map(m)] = self.steps.as_slice() else {
            return None;
        };
        let mut codes: Vec<&String> = m
            .forward
            .iter()
            .filter(|(_, v)| *v == target)
            .map(|(k, _)| k)
            .collect();
        if codes.len() < 2 {
            return None;
        }
        codes.sort();
        Some(codes.into_iter().map(|c| Value::Text(c.clone())).collect())
    }

    /// Why the transform cannot run backwards, if it cannot.
    pub fn one_way(&self) -> Option<String> {
        self.steps.iter().find_map(|s| match s {
            Step::Map(m) if !m.ambiguous.is_empty() => Some(format!(
                "map {} cannot be read backwards: {}",
                m.name,
                m.ambiguous.join("; ")
            )),
            _ => None,
        })
    }

    /// The type the steps make of `input`.
    pub fn output(&self, input: &SourceType) -> Result<SourceType, String> {
        let mut t = input.clone();
        for s in &self.steps {
            t = s.output(&t)?;
        }
        Ok(t)
    }

    /// Source value → target value.
    pub fn forward(&self, v: &Value) -> Result<Value, String> {
        if let Value::Unreadable(why) = v {
            return Err(why.clone());
        }
        let mut out = v.clone();
        for s in &self.steps {
            out = match s.forward(out) {
                Ok(x) => x,
                Err(e) => return self.failed(v, e),
            };
        }
        Ok(out)
    }

    /// Target value → source value (the reverse direction), steps in reverse order.
    pub fn backward(&self, v: &Value) -> Result<Value, String> {
        if let Value::Unreadable(why) = v {
            return Err(why.clone());
        }
        let mut out = v.clone();
        for s in self.steps.iter().rev() {
            out = match s.backward(out) {
                Ok(x) => x,
                Err(e) => return self.failed(v, e),
            };
        }
        Ok(out)
    }

    fn failed(&self, v: &Value, e: String) -> Result<Value, String> {
        match self.on_error {
            OnError::DeadLetter => Err(e),
            OnError::Null => Ok(Value::Null),
            OnError::Keep => Ok(v.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Arc<ValueMap> {
        let f: HashMap<String, Value> = [("N", "new"), ("UN", "cancelled"), ("CA", "cancelled")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::Text(v.into())))
            .collect();
        let r: HashMap<String, Value> = [("cancelled".to_string(), Value::Text("UN".into()))]
            .into_iter()
            .collect();
        Arc::new(ValueMap::new("status".into(), f, r, None, None))
    }

    #[test]
    fn maps_both_ways_and_refuse_ambiguity() {
        let m = map();
        let t = Transform {
            steps: vec![Step::Map(m)],
            on_error: OnError::DeadLetter,
        };
        assert_eq!(
            t.forward(&Value::Text("CA".into())).unwrap(),
            Value::Text("cancelled".into())
        );
        assert_eq!(
            t.backward(&Value::Text("cancelled".into())).unwrap(),
            Value::Text("UN".into())
        );
        assert_eq!(
            t.backward(&Value::Text("new".into())).unwrap(),
            Value::Text("N".into())
        );
        let e = t.forward(&Value::Text("ZZ".into())).unwrap_err();
        assert_eq!(
            e,
            "\"ZZ\" is not in the entries of map status (add it, or give the map a default)"
        );

        let f: HashMap<String, Value> = [("UN", "cancelled"), ("CA", "cancelled")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::Text(v.into())))
            .collect();
        let e = ValueMap::new("s".into(), f, HashMap::new(), None, None).ambiguous;
        assert!(
            e[0].contains("\"cancelled\" is the image of 2 codes (CA, UN)"),
            "{e:?}"
        );
    }

    #[test]
    fn steps() {
        let t = |steps: Vec<Step>, on_error| Transform { steps, on_error };
        let yn = t(vec![Step::YesNo], OnError::DeadLetter);
        assert_eq!(
            yn.forward(&Value::Text("Y".into())).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            yn.backward(&Value::Bool(false)).unwrap(),
            Value::Text("N".into())
        );
        assert!(yn.forward(&Value::Text("X".into())).is_err());
        assert_eq!(yn.forward(&Value::Null).unwrap(), Value::Null);

        let clean = t(vec![Step::Trim, Step::EmptyNull], OnError::DeadLetter);
        assert_eq!(
            clean.forward(&Value::Text("  ".into())).unwrap(),
            Value::Null
        );
        assert_eq!(
            clean.forward(&Value::Text(" Анна ".into())).unwrap(),
            Value::Text("Анна".into())
        );

        assert_eq!(
            normalise_phone("8 (701) 123-45-67").as_deref(),
            Some("+77011234567")
        );
        assert_eq!(
            normalise_phone("+7 701 1234567").as_deref(),
            Some("+77011234567")
        );
        assert_eq!(
            normalise_phone("7011234567").as_deref(),
            Some("+77011234567")
        );
        assert_eq!(normalise_phone("12-34"), None);

        let date = t(
            vec![Step::ParseDate(vec!["%d.%m.%Y".into(), "%Y-%m-%d".into()])],
            OnError::DeadLetter,
        );
        let d = date.forward(&Value::Text("05.03.2026".into())).unwrap();
        assert_eq!(d.to_string(), "2026-03-05");
        assert_eq!(date.backward(&d).unwrap(), Value::Text("05.03.2026".into()));
        assert!(date
            .forward(&Value::Text("завтра".into()))
            .unwrap_err()
            .contains("matches none"));
        let lenient = t(
            vec![Step::ParseDate(vec!["%d.%m.%Y".into()])],
            OnError::Null,
        );
        assert_eq!(
            lenient.forward(&Value::Text("завтра".into())).unwrap(),
            Value::Null
        );

        let zone = t(
            vec![Step::Zone(chrono_tz::Asia::Almaty)],
            OnError::DeadLetter,
        );
        let local = crate::model::DateTime {
            date: crate::model::Date {
                year: 2026,
                month: 3,
                day: 5,
            },
            hour: 10,
            minute: 0,
            second: 0,
            micro: 0,
        };
        let ts = zone.forward(&Value::DateTime(local)).unwrap();
        assert_eq!(ts.to_string(), "2026-03-05 05:00:00.000000 UTC");
        assert_eq!(zone.backward(&ts).unwrap(), Value::DateTime(local));
        assert_eq!(
            zone.forward(&Value::DateTime(crate::model::DateTime::ZERO))
                .unwrap(),
            Value::Null
        );
    }
}
