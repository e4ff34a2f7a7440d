//! Value maps and column transforms: the `[map.<name>]` tables of every file, compiled once per
//! set ([`compile_maps`]), and the transform a column entry asks for ([`Ctx::transform`]: built-in
//! steps, `null_if`, `parse_date`, `zone`, `map`).
//!
//! Uses the file format ([`crate::mapping::spec`]) and the transform steps
//! ([`crate::mapping::transform`]); whether a transform's output fits a column is
//! [`super::convert`]'s question.

use std::collections::HashMap;
use std::sync::Arc;

use super::convert::toml_value;
use super::table::Ctx;
use crate::mapping::spec::{ColumnTable, MappingSet};
use crate::mapping::transform::{Step, Transform, ValueMap};

/// Named value maps of every file, or the errors (with file and line).
pub(super) fn compile_maps(set: &MappingSet) -> (HashMap<String, Arc<ValueMap>>, Vec<String>) {
    let mut maps = HashMap::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for file in &set.files {
        for (name, spec) in &file.spec.map {
            let at = format!(
                "{}: key `map.{}`",
                file.at(name.span().start),
                name.get_ref()
            );
            if let Some(prev) = seen.insert(name.get_ref().clone(), at.clone()) {
                errors.push(format!(
                    "{at}: map {} is already defined at {prev}",
                    name.get_ref()
                ));
                continue;
            }
            let mut bad = Vec::new();
            let mut conv = |entries: &std::collections::BTreeMap<String, toml::Value>,
                            part: &str| {
                let mut out = HashMap::new();
                for (k, v) in entries {
                    match toml_value(v) {
                        Ok(v) => {
                            out.insert(k.clone(), v);
                        }
                        Err(e) => bad.push(format!("{at}.{part}.{k}: {e}")),
                    }
                }
                out
            };
            let forward = conv(&spec.values, "values");
            let reverse = conv(&spec.reverse, "reverse");
            let default = spec.default.as_ref().map(toml_value).transpose();
            let reverse_default = spec.reverse_default.as_ref().map(toml_value).transpose();
            let (default, reverse_default) = match (default, reverse_default) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    bad.push(format!("{at}: default: {e}"));
                    (None, None)
                }
            };
            if !bad.is_empty() {
                errors.append(&mut bad);
                continue;
            }
            let m = ValueMap::new(
                name.get_ref().clone(),
                forward,
                reverse,
                default,
                reverse_default,
            );
            maps.insert(name.get_ref().clone(), Arc::new(m));
        }
    }
    (maps, errors)
}

impl Ctx<'_> {
    /// The transform a column entry asks for, or the error.
    pub(super) fn transform(
        &self,
        e: &ColumnTable,
        at: &str,
    ) -> std::result::Result<Transform, String> {
        let mut steps = Vec::new();
        for name in e.transform.iter().flat_map(|t| t.to_vec()) {
            match Step::named(&name) {
                Some(s) => steps.push(s),
                None => {
                    return Err(format!(
                        "{at}: unknown transform {name:?} (built-ins: {}; also null_if, parse_date, zone, map)",
                        Step::NAMES
                    ))
                }
            }
        }
        if let Some(list) = &e.null_if {
            steps.push(Step::NullIf(list.clone()));
        }
        if let Some(f) = &e.parse_date {
            let formats = f.to_vec();
            if formats.is_empty() {
                return Err(format!("{at}: parse_date needs at least one format"));
            }
            for f in &formats {
                if chrono::format::StrftimeItems::new(f)
                    .any(|i| matches!(i, chrono::format::Item::Error))
                {
                    return Err(format!(
                        "{at}: parse_date format {f:?} is not a valid chrono format"
                    ));
                }
            }
            steps.push(Step::ParseDate(formats));
        }
        if let Some(z) = &e.zone {
            match z.parse::<chrono_tz::Tz>() {
                Ok(tz) => steps.push(Step::Zone(tz)),
                Err(_) => {
                    return Err(format!(
                        "{at}: zone {z:?} is not an IANA time zone name (like Asia/Almaty)"
                    ))
                }
            }
        }
        if let Some(m) = &e.map {
            match self.maps.get(m) {
                Some(m) => steps.push(Step::Map(m.clone())),
                None => {
                    let mut known: Vec<&String> = self.maps.keys().collect();
                    known.sort();
                    let known: Vec<&str> = known.iter().map(|s| s.as_str()).collect();
                    return Err(format!(
                        "{at}: no map named {m:?} (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
        }
        Ok(Transform {
            steps,
            on_error: e.on_error.unwrap_or_default(),
        })
    }
}
