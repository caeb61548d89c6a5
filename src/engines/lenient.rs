//! Reading upstream JSON into typed structs that borrow from the body, with `serde_json::Value`'s
//! meaning: the adapters used to build a `Value` tree and walk it with `get`/`as_str`/`as_u64`,
//! which is most of their CPU per answer (issue 10); these types read the same fields in one
//! pass, without a tree.
//!
//! * [`valid`]: whether `serde_json::from_slice::<Value>` would accept a body (the same grammar,
//!   UTF-8 and escape checks, trailing characters and recursion limit), without building
//!   anything. A derived struct skips unknown fields without those checks, so an adapter reads
//!   typed only what this accepted, and anything else the old way (its error messages unchanged).
//! * [`Str`], [`U64`], [`Arr`], [`Obj`]: fields read the way `Value::as_str`, `as_u64`,
//!   `as_array` and `as_object`-then-`get` read them: a value of any other JSON type is simply
//!   absent, never an error. Fields of structs are `#[serde(default)]` and unknown fields are
//!   ignored (never `deny_unknown_fields`: upstreams add fields).
//!
//! Duplicate keys: a `Value` keeps the last one; a derived struct refuses a duplicate field. An
//! adapter that reads typed from the body therefore falls back to the `Value` reading when the
//! typed one fails, so the answer is the same either way.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Any JSON value, checked the way `Value` parses it (every level through `deserialize_any`,
/// so strings are checked and nesting counts against the recursion limit) and dropped.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        Skip::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

/// Whether `serde_json::from_slice::<serde_json::Value>(body)` succeeds.
pub(crate) fn valid(body: &[u8]) -> bool {
    serde_json::from_slice::<Skip>(body).is_ok()
}

/// Drains a sequence or a map that is read as "absent".
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// The visitor methods of a lenient type: every JSON type the type does not take is `default`.
macro_rules! absent_otherwise {
    ($($m:ident)*) => {
        $(absent_otherwise!(@one $m);)*
    };
    (@one bool) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> { Ok(Default::default()) }
    };
    (@one i64) => {
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> { Ok(Default::default()) }
    };
    (@one u64) => {
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> { Ok(Default::default()) }
    };
    (@one f64) => {
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> { Ok(Default::default()) }
    };
    (@one str) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> { Ok(Default::default()) }
    };
    (@one unit) => {
        fn visit_unit<E>(self) -> Result<Self::Value, E> { Ok(Default::default()) }
        fn visit_none<E>(self) -> Result<Self::Value, E> { Ok(Default::default()) }
    };
    (@one seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            drain_seq(seq)?;
            Ok(Default::default())
        }
    };
    (@one map) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            drain_map(map)?;
            Ok(Default::default())
        }
    };
}

/// A string field as `Value::as_str` reads it (borrowed from the body when it has no escapes).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Str<'a>(pub(crate) Option<Cow<'a, str>>);

impl<'a> Str<'a> {
    pub(crate) fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'a>, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_string<E>(self, s: String) -> Result<Str<'a>, E> {
                Ok(Str(Some(Cow::Owned(s))))
            }
            absent_otherwise!(bool i64 u64 f64 unit seq map);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A number field as `Value::as_u64` reads it (a negative or fractional number is absent).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct U64(pub(crate) Option<u64>);

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<U64, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = U64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, n: u64) -> Result<U64, E> {
                Ok(U64(Some(n)))
            }
            absent_otherwise!(bool i64 f64 str unit seq map);
        }
        d.deserialize_any(V)
    }
}

/// An array field as `Value::as_array` reads it: `None` when the value is not an array. Its
/// items must take any JSON value ([`Obj`], [`Str`]…).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Arr<T>(pub(crate) Option<Vec<T>>);

impl<T> Default for Arr<T> {
    fn default() -> Self {
        Arr(None)
    }
}

impl<T> Arr<T> {
    /// The items (none when the value was not an array).
    pub(crate) fn items(&self) -> &[T] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Arr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Arr<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Arr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Arr<T>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(x) = seq.next_element()? {
                    out.push(x);
                }
                Ok(Arr(Some(out)))
            }
            absent_otherwise!(bool i64 u64 f64 str unit map);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An object field read into `T` (a derived struct whose fields are all lenient): `None` when
/// the value is not an object, as `Value::get` finds nothing in a non-object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Obj<T>(pub(crate) Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<T> Obj<T> {
    pub(crate) fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Obj<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            absent_otherwise!(bool i64 u64 f64 str unit seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A string or an object's `message` (how the Responses format's `error` is read: an object
/// `{"message": …}`, or xAI's plain string).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Message<'a>(pub(crate) Option<Cow<'a, str>>);

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct MessageObj<'a> {
    #[serde(borrow)]
    message: Str<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Message<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Message<'a>, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Message<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Message<'a>, E> {
                Ok(Message(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E>(self, s: &str) -> Result<Message<'a>, E> {
                Ok(Message(Some(Cow::Owned(s.to_owned()))))
            }
            fn visit_string<E>(self, s: String) -> Result<Message<'a>, E> {
                Ok(Message(Some(Cow::Owned(s))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Message<'a>, A::Error> {
                let m = MessageObj::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Message(m.message.0))
            }
            absent_otherwise!(bool i64 u64 f64 unit seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn valid_accepts_exactly_what_a_value_parse_accepts() {
        let deep = format!("{{\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        let cases: &[&[u8]] = &[
            b"{}",
            b"[1, 2.5, -3, \"a\\u00e9\", null, true, {\"k\": [{}]}]",
            b"",
            b"nope",
            b"{} x",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\xff\"}",
            b"{\"\xff\":1}",
            b"{\"a\":\"\\ud800\"}",
            b"{\"a\":\"\\q\"}",
            b"{\"a\":1e400}",
            b"{\"a\":01}",
            b"{\"a\":1,}",
            deep.as_bytes(),
        ];
        for body in cases {
            assert_eq!(
                valid(body),
                serde_json::from_slice::<Value>(body).is_ok(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn lenient_fields_read_like_value_accessors() {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct T<'a> {
            #[serde(borrow)]
            s: Str<'a>,
            n: U64,
            a: Arr<U64>,
            o: Obj<Inner>,
            #[serde(borrow)]
            m: Message<'a>,
        }
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Inner {
            n: U64,
        }
        let t: T =
            serde_json::from_str(r#"{"s":"a\nb","n":-1,"a":{"x":1},"o":[1],"m":{"message":"m"}}"#)
                .expect("lenient");
        assert_eq!(t.s.get(), Some("a\nb"));
        assert_eq!((t.n, t.a.0, t.o.0.is_none()), (U64(None), None, true));
        assert_eq!(t.m.0.as_deref(), Some("m"));
        let t: T = serde_json::from_str(r#"{"s":5,"n":7,"a":[1,"x",2.5],"o":{"n":3},"m":"plain"}"#)
            .expect("lenient");
        assert_eq!(t.s.get(), None);
        assert_eq!(t.n, U64(Some(7)));
        assert_eq!(t.a.0, Some(vec![U64(Some(1)), U64(None), U64(None)]));
        assert_eq!(t.o.get().map(|i| i.n), Some(U64(Some(3))));
        assert_eq!(t.m.0.as_deref(), Some("plain"));
    }
}
