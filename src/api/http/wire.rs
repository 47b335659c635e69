//! The inference request's JSON header as serde types that borrow from the body and bound what
//! a client can make the server allocate: `data` and parameter values stay raw slices of the
//! body (parsed later into their typed buffer, see [`super::data`]), the counts of inputs,
//! outputs and parameters are limited, and a shape is read into integers, not `Value`s.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::routing::request::{
    rank_too_large, too_many, MAX_INPUTS, MAX_OUTPUTS, MAX_PARAMETERS, MAX_RANK,
};

#[derive(Deserialize)]
pub struct JsonRequest<'a> {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, borrow)]
    pub parameters: Params<'a>,
    #[serde(borrow)]
    pub inputs: Bounded<JsonInput<'a>>,
    #[serde(default, borrow)]
    pub outputs: Bounded<JsonOutput<'a>>,
}

#[derive(Deserialize)]
pub struct JsonInput<'a> {
    pub name: String,
    /// Read per element so an out-of-range dimension is reported with the tensor's name.
    pub shape: Dims,
    pub datatype: String,
    #[serde(default, borrow)]
    pub parameters: Params<'a>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub struct JsonOutput<'a> {
    pub name: String,
    #[serde(default, borrow)]
    pub parameters: Params<'a>,
}

/// What a bounded list holds, for its limit and its refusal.
pub trait Counted {
    const LIMIT: usize;
    const WHAT: &'static str;
}

impl Counted for JsonInput<'_> {
    const LIMIT: usize = MAX_INPUTS;
    const WHAT: &'static str = "inputs";
}

impl Counted for JsonOutput<'_> {
    const LIMIT: usize = MAX_OUTPUTS;
    const WHAT: &'static str = "outputs";
}

/// A JSON list of at most `T::LIMIT` items; one more stops the parse.
pub struct Bounded<T>(pub Vec<T>);

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Bounded(Vec::new())
    }
}

impl<'de, T: Deserialize<'de> + Counted> Deserialize<'de> for Bounded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Counted> Visitor<'de> for V<T> {
            type Value = Bounded<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of {}", T::WHAT)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bounded<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    if items.len() == T::LIMIT {
                        return Err(de::Error::custom(too_many(T::WHAT, T::LIMIT)));
                    }
                    items.push(item);
                }
                Ok(Bounded(items))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// A `parameters` object: at most [`MAX_PARAMETERS`] entries, values kept as raw JSON (only a
/// few known keys are ever read, each as a scalar).
#[derive(Default)]
pub struct Params<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Params<'a> {
    /// The value of `key` (the last one if repeated, as a JSON object reads), `None` if absent
    /// or null.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
            .filter(|v| v.get() != "null")
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Params<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Params<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a parameters object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params<'a>, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    if entries.len() == MAX_PARAMETERS {
                        return Err(de::Error::custom(too_many("parameters", MAX_PARAMETERS)));
                    }
                    entries.push(entry);
                }
                Ok(Params(entries))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// A shape as integers, or the first dimension that is not one (worded for the message).
pub struct Dims(pub Result<Vec<i64>, String>);

impl<'de> Deserialize<'de> for Dims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dims;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of dimensions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dims, A::Error> {
                let mut dims = Vec::new();
                while let Some(dim) = seq.next_element::<Dim>()? {
                    if dims.len() == MAX_RANK {
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        return Ok(Dims(Err(rank_too_large())));
                    }
                    match dim.0 {
                        Ok(d) => dims.push(d),
                        Err(shown) => {
                            while seq.next_element::<IgnoredAny>()?.is_some() {}
                            return Ok(Dims(Err(format!(
                                "dimension {shown} in shape is not an integer in 0..=2^63-1"
                            ))));
                        }
                    }
                }
                Ok(Dims(Ok(dims)))
            }
        }
        d.deserialize_seq(V)
    }
}

/// One dimension: an i64, or how the value that is not one reads.
struct Dim(Result<i64, String>);

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Dim;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a dimension")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dim, E> {
                Ok(Dim(Ok(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dim, E> {
                Ok(Dim(i64::try_from(v).map_err(|_| v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dim, E> {
                Ok(Dim(Err(serde_json::Value::from(v).to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Dim, E> {
                Ok(Dim(Err(v.to_string())))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dim, E> {
                Ok(Dim(Err(format!("{:?}", shown(v)))))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Dim, E> {
                Ok(Dim(Err("null".into())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dim, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Dim(Err("(an array)".into())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Dim, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Dim(Err("(an object)".into())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A client's string as echoed in a message: its first 64 characters.
fn shown(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}
