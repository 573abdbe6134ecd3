//! Upstream JSON parsed with simd-json straight into typed messages whose fields borrow from the
//! message, without a value tree: once simd-json's buffers and tape have grown to the size of
//! the messages, a good message costs no allocation.
//!
//! A message type ([`json_object!`]) names the members it reads; every other member is skipped
//! without being kept ([`IgnoredAny`]). A [`Field`] records what it found (missing, null, a
//! string, an integer, or anything else) instead of failing, so the normalizers can say exactly
//! which field was missing or had the wrong type, in the order they check them. Only input that
//! is not JSON, or not a JSON object, fails the parse ([`Reject::Malformed`]).
//!
//! A key repeated in one object counts once: its first occurrence in objects of up to 32
//! members, its last in larger ones. That is how the normalizers resolved repeated keys when
//! they read simd-json's value tree (a vector map up to 32 members, a hash map beyond), kept so
//! every message gets the same verdict as before.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::normalize::Reject;

/// Objects with more members than this keep the last occurrence of a repeated key.
const FIRST_KEY_WINS_UP_TO: usize = 32;

/// simd-json's scratch buffers and tape, reused from one message to the next.
pub(crate) struct Parser {
    buffers: simd_json::Buffers,
    /// Always empty between messages (its nodes would borrow from the message).
    tape: simd_json::Tape<'static>,
}

impl Parser {
    pub(crate) fn new() -> Self {
        Self { buffers: simd_json::Buffers::new(1024), tape: simd_json::Tape(Vec::with_capacity(64)) }
    }

    /// Parses one message (modified in place: strings are unescaped where they are) into `T`,
    /// whose fields borrow from it.
    pub(crate) fn parse<'a, T: Members<'a>>(&mut self, message: &'a mut [u8]) -> Result<T, Reject> {
        let mut tape = std::mem::replace(&mut self.tape, simd_json::Tape(Vec::new())).reset();
        if simd_json::fill_tape(message, &mut self.buffers, &mut tape).is_err() {
            self.tape = tape.reset();
            return Err(Reject::Malformed);
        }
        let mut deserializer = simd_json::Deserializer::from_tape(tape);
        let parsed = (&mut deserializer).deserialize_map(ObjectVisitor(PhantomData));
        self.tape = deserializer.into_tape().reset();
        parsed.map_err(|_| Reject::Malformed)
    }
}

impl fmt::Debug for Parser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parser").finish_non_exhaustive()
    }
}

/// A JSON object type: the members it reads, by key.
pub(crate) trait Members<'de>: Default {
    /// Reads the value of member `key` if this type has a place for it (see [`set`]), and says
    /// whether it did; the caller skips the others.
    fn read<A: MapAccess<'de>>(&mut self, key: &str, map: &mut A, last_wins: bool) -> Result<bool, A::Error>;
}

/// A place for one member's value: knows whether it has been filled.
pub(crate) trait Slot {
    fn is_missing(&self) -> bool;
}

/// Reads the next value into `slot`, unless an earlier occurrence of the key already filled it
/// and this object keeps the first.
pub(crate) fn set<'de, T, A>(slot: &mut T, map: &mut A, last_wins: bool) -> Result<(), A::Error>
where
    T: Slot + Deserialize<'de>,
    A: MapAccess<'de>,
{
    let value = map.next_value::<T>()?;
    if last_wins || slot.is_missing() {
        *slot = value;
    }
    Ok(())
}

/// Declares a JSON object type: a struct with one field per member it reads (a [`Field`], or
/// a [`Nested`] object), named after the member's key, and its [`Members`] impl.
macro_rules! json_object {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident<$lt:lifetime> { $($field:ident: $ty:ty = $key:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default)]
        $vis struct $name<$lt> { $($vis $field: $ty,)* }

        impl<$lt> $crate::json::Members<$lt> for $name<$lt> {
            fn read<A: serde::de::MapAccess<$lt>>(
                &mut self,
                key: &str,
                map: &mut A,
                last_wins: bool,
            ) -> Result<bool, A::Error> {
                match key {
                    $($key => $crate::json::set(&mut self.$field, map, last_wins).map(|()| true),)*
                    _ => Ok(false),
                }
            }
        }
    };
}
pub(crate) use json_object;

/// Reads every member of an object into a `T`.
struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Members<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let last_wins = map.size_hint().is_some_and(|members| members > FIRST_KEY_WINS_UP_TO);
        let mut object = T::default();
        while let Some(key) = map.next_key::<&'de str>()? {
            if !object.read(key, &mut map, last_wins)? {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(object)
    }
}

/// One member's value, as the normalizers check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Field<'a> {
    /// The object has no such member.
    #[default]
    Missing,
    Null,
    Str(&'a str),
    /// An integer simd-json read as signed (it does for negative ones)...
    Int(i64),
    /// ...or as unsigned (the others).
    UInt(u64),
    /// `true`, `false`, a number with a fraction or an exponent, an array or an object.
    Other,
}

impl<'a> Field<'a> {
    pub(crate) fn is_present(self) -> bool {
        self != Field::Missing
    }

    /// A string.
    pub(crate) fn text(self, name: &'static str) -> Result<&'a str, Reject> {
        match self {
            Field::Str(s) => Ok(s),
            Field::Missing => Err(Reject::MissingField(name)),
            _ => Err(Reject::WrongType(name)),
        }
    }

    /// A non-negative integer.
    pub(crate) fn uint(self, name: &'static str) -> Result<u64, Reject> {
        match self {
            Field::Missing => Err(Reject::MissingField(name)),
            other => other.optional_uint(name)?.ok_or(Reject::WrongType(name)),
        }
    }

    /// A non-negative integer, or nothing when missing or null.
    pub(crate) fn optional_uint(self, name: &'static str) -> Result<Option<u64>, Reject> {
        match self {
            Field::Missing | Field::Null => Ok(None),
            Field::UInt(n) => Ok(Some(n)),
            Field::Int(n) => u64::try_from(n).map(Some).map_err(|_| Reject::WrongType(name)),
            Field::Str(_) | Field::Other => Err(Reject::WrongType(name)),
        }
    }
}

impl Slot for Field<'_> {
    fn is_missing(&self) -> bool {
        *self == Field::Missing
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(s))
    }

    // simd-json hands out every string borrowed from the message (it unescapes them in
    // place), so `visit_str`, for strings that do not live as long, is never called: it keeps
    // serde's default, an error.

    fn visit_i64<E>(self, n: i64) -> Result<Field<'de>, E> {
        Ok(Field::Int(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Field<'de>, E> {
        Ok(Field::UInt(n))
    }

    fn visit_unit<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }

    fn visit_none<E>(self) -> Result<Field<'de>, E> {
        Ok(Field::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        skip_seq(seq).map(|()| Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
        skip_map(map).map(|()| Field::Other)
    }
}

/// A member that should hold an object of type `T`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum Nested<T> {
    /// The object has no such member.
    #[default]
    Missing,
    Object(T),
    /// Present, but not an object.
    Other,
}

impl<T> Slot for Nested<T> {
    fn is_missing(&self) -> bool {
        matches!(self, Nested::Missing)
    }
}

impl<'de, T: Members<'de>> Deserialize<'de> for Nested<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NestedVisitor(PhantomData))
    }
}

struct NestedVisitor<T>(PhantomData<T>);

impl<'de, T: Members<'de>> Visitor<'de> for NestedVisitor<T> {
    type Value = Nested<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Nested<T>, A::Error> {
        ObjectVisitor(PhantomData).visit_map(map).map(Nested::Object)
    }

    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_unit<E>(self) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_none<E>(self) -> Result<Nested<T>, E> {
        Ok(Nested::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Nested<T>, A::Error> {
        skip_seq(seq).map(|()| Nested::Other)
    }
}

fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    json_object! {
        struct Probe<'a> {
            a: Field<'a> = "a",
            b: Field<'a> = "b",
            inner: Nested<Inner<'a>> = "inner",
        }
    }

    json_object! {
        struct Inner<'a> {
            a: Field<'a> = "a",
        }
    }

    /// Parses `text` with `parser` and hands the result to `check`.
    fn probe<R>(parser: &mut Parser, text: &str, check: impl FnOnce(Result<Probe<'_>, Reject>) -> R) -> R {
        let mut bytes = text.as_bytes().to_vec();
        check(parser.parse(&mut bytes))
    }

    #[test]
    fn every_json_value_is_recorded_not_refused() {
        let mut p = Parser::new();
        let cases = [
            (r#"{"a":"x"}"#, Field::Str("x")),
            (r#"{"a":"\u0041\n"}"#, Field::Str("A\n")),
            (r#"{"\u0061":"escaped key"}"#, Field::Str("escaped key")),
            (r#"{"a":null}"#, Field::Null),
            (r#"{"a":-3}"#, Field::Int(-3)),
            (r#"{"a":3}"#, Field::UInt(3)),
            (r#"{"a":-9223372036854775808}"#, Field::Int(i64::MIN)),
            (r#"{"a":18446744073709551615}"#, Field::UInt(u64::MAX)),
            (r#"{"a":1.5}"#, Field::Other),
            (r#"{"a":1e3}"#, Field::Other),
            (r#"{"a":true}"#, Field::Other),
            (r#"{"a":[1,[2,{"a":3}]],"b":2}"#, Field::Other),
            (r#"{"a":{"b":{"a":1}},"b":2}"#, Field::Other),
            (r#"{"z":{"a":1},"b":2}"#, Field::Missing),
            (r#"{}"#, Field::Missing),
        ];
        for (text, want) in cases {
            assert!(probe(&mut p, text, |r| r.map(|m| m.a) == Ok(want)), "{text}");
        }
        assert!(probe(&mut p, r#"{"a":[1,{"b":3}],"b":2}"#, |r| r.map(|m| m.b) == Ok(Field::UInt(2))));
    }

    #[test]
    fn only_bad_json_and_non_objects_fail() {
        let mut p = Parser::new();
        for text in
            ["", "nope", "[1]", "1", "\"a\"", "null", r#"{"a":1"#, r#"{"a":1}}"#, r#"{"a":1} x"#, "{\"a\":\"\u{1}\"}"]
        {
            assert!(probe(&mut p, text, |r| r.is_err()), "{text:?}");
        }
        let mut invalid_utf8 = br#"{"a":"?"}"#.to_vec();
        invalid_utf8[6] = 0xff;
        assert!(p.parse::<Probe<'_>>(&mut invalid_utf8).is_err());
        assert!(probe(&mut p, r#" {"a":1} "#, |r| r.is_ok()), "white space around the object");
    }

    #[test]
    fn nested_objects() {
        let mut p = Parser::new();
        let inner = |text: &str, want: Option<Field<'static>>| {
            probe(&mut Parser::new(), text, |r| match r.map(|m| m.inner) {
                Ok(Nested::Object(inner)) => Some(inner.a) == want,
                Ok(Nested::Other) => want == Some(Field::Other),
                Ok(Nested::Missing) => want.is_none(),
                Err(_) => false,
            })
        };
        assert!(inner(r#"{"inner":{"a":"x","inner":1}}"#, Some(Field::Str("x"))));
        assert!(inner(r#"{"inner":{}}"#, Some(Field::Missing)));
        assert!(inner(r#"{"inner":[{"a":"x"}]}"#, Some(Field::Other)));
        assert!(inner(r#"{"inner":null}"#, Some(Field::Other)));
        assert!(inner(r#"{"a":1}"#, None));
        assert!(probe(&mut p, r#"{"inner":{"a":1},"a":2}"#, |r| r.map(|m| m.a) == Ok(Field::UInt(2))));
    }

    #[test]
    fn a_repeated_key_counts_once_first_in_small_objects_last_in_large_ones() {
        let mut p = Parser::new();
        let mut a = |text: &str, want: Field<'static>| probe(&mut p, text, |r| r.map(|m| m.a) == Ok(want));
        assert!(a(r#"{"a":1,"b":2,"a":"x"}"#, Field::UInt(1)));
        let filler = |n: usize| -> String { (0..n).map(|i| format!(r#""f{i}":0,"#)).collect() };
        assert!(a(&format!(r#"{{"a":1,{}"a":2}}"#, filler(30)), Field::UInt(1)), "32 members: the first");
        assert!(a(&format!(r#"{{"a":1,{}"a":2}}"#, filler(31)), Field::UInt(2)), "33 members: the last");
        assert!(a(&format!(r#"{{"a":1,{}"a":null}}"#, filler(31)), Field::Null), "33 members: the last");
    }
}
