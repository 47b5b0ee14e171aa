//! The merged configuration before it is typed: the file's values and the environment's
//! overrides as one tree ([`Layer`]), deserialised into [`super::Config`] so that each
//! override is parsed as the type of the field it sets. Never guesses a type from how a
//! value looks, and never logs a value (errors name the key only).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapDeserializer;
use serde::de::{self, Deserializer, IntoDeserializer, Unexpected, Visitor};

/// The merged settings before they are typed: the file's values as TOML read them, and every
/// environment override as its raw text. An override is typed only by the field it lands in:
/// a number or boolean field parses it, a string field (a password, a name) keeps it as
/// written, so `123456` stays a string where a string is expected and `0.5` is a float where
/// a float is.
pub(super) enum Layer {
    File(toml::Value),
    Env(String),
    Section(BTreeMap<String, Layer>),
}

impl Layer {
    pub(super) fn from_file(table: toml::Table) -> Self {
        Layer::Section(
            table
                .into_iter()
                .map(|(key, value)| {
                    let layer = match value {
                        toml::Value::Table(t) => Layer::from_file(t),
                        other => Layer::File(other),
                    };
                    (key, layer)
                })
                .collect(),
        )
    }

    /// Puts an override at `keys`, creating the sections on the way.
    pub(super) fn set(&mut self, keys: &[String], raw: String) -> Result<(), String> {
        let (last, parents) = keys.split_last().ok_or("empty key")?;
        let mut cursor = self;
        for key in parents {
            let Layer::Section(map) = cursor else {
                unreachable!("only sections are descended into");
            };
            cursor = map
                .entry(key.clone())
                .or_insert_with(|| Layer::Section(BTreeMap::new()));
            if !matches!(cursor, Layer::Section(_)) {
                return Err(format!("`{key}` is not a section"));
            }
        }
        let Layer::Section(map) = cursor else {
            unreachable!("only sections are descended into");
        };
        map.insert(last.clone(), Layer::Env(raw));
        Ok(())
    }
}

/// Why the merged settings do not fit the shape of [`Config`]; the path is added by
/// `serde_path_to_error`.
#[derive(Debug)]
pub(super) struct ShapeError(pub(super) String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

impl de::Error for ShapeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

impl From<toml::de::Error> for ShapeError {
    fn from(e: toml::de::Error) -> Self {
        Self(e.message().to_string())
    }
}

impl<'de> IntoDeserializer<'de, ShapeError> for Layer {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

/// Methods where an override is parsed as the scalar the field asks for.
macro_rules! parse_scalar {
    ($($method:ident => $visit:ident($ty:ty)),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
            match self {
                Layer::Env(raw) => match raw.parse::<$ty>() {
                    Ok(v) => visitor.$visit(v),
                    Err(_) => Err(de::Error::invalid_value(Unexpected::Str(&raw), &visitor)),
                },
                Layer::File(value) => value.$method(visitor).map_err(ShapeError::from),
                section => section.deserialize_any(visitor),
            }
        }
    )*};
}

/// Methods where an override is taken as text (the visitor decides whether text fits).
macro_rules! as_text {
    ($($method:ident $(($($arg:ident: $ty:ty),*))?),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(
            self,
            $($($arg: $ty,)*)?
            visitor: V,
        ) -> Result<V::Value, ShapeError> {
            match self {
                Layer::File(value) => value
                    .$method($($($arg,)*)? visitor)
                    .map_err(ShapeError::from),
                other => other.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for Layer {
    type Error = ShapeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self {
            Layer::File(value) => value.deserialize_any(visitor).map_err(ShapeError::from),
            Layer::Env(raw) => visitor.visit_string(raw),
            Layer::Section(map) => {
                let mut access = MapDeserializer::new(map.into_iter());
                let value = visitor.visit_map(&mut access)?;
                access.end()?;
                Ok(value)
            }
        }
    }

    parse_scalar! {
        deserialize_bool => visit_bool(bool),
        deserialize_i8 => visit_i8(i8),
        deserialize_i16 => visit_i16(i16),
        deserialize_i32 => visit_i32(i32),
        deserialize_i64 => visit_i64(i64),
        deserialize_i128 => visit_i128(i128),
        deserialize_u8 => visit_u8(u8),
        deserialize_u16 => visit_u16(u16),
        deserialize_u32 => visit_u32(u32),
        deserialize_u64 => visit_u64(u64),
        deserialize_u128 => visit_u128(u128),
        deserialize_f32 => visit_f32(f32),
        deserialize_f64 => visit_f64(f64),
        deserialize_char => visit_char(char),
    }

    as_text! {
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_unit_struct(name: &'static str),
        deserialize_seq,
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map,
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_identifier,
        deserialize_ignored_any,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ShapeError> {
        match self {
            Layer::File(value) => value.deserialize_option(visitor).map_err(ShapeError::from),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        match self {
            Layer::File(value) => value
                .deserialize_newtype_struct(name, visitor)
                .map_err(ShapeError::from),
            other => visitor.visit_newtype_struct(other),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ShapeError> {
        match self {
            Layer::File(value) => value
                .deserialize_enum(name, variants, visitor)
                .map_err(ShapeError::from),
            Layer::Env(raw) => visitor.visit_enum(raw.into_deserializer()),
            section => section.deserialize_any(visitor),
        }
    }
}
