//! The JSON body extractor: size-limited, tolerant of empty bodies, strict about types, errors
//! as §2.1 bodies.

use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

use crate::{ApiError, ApiState};

/// A JSON request body; an empty body reads as `T::default()` (clients differ in sending
/// `{}`, nothing, or `null`).
#[derive(Debug)]
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<ApiState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::too_large(limit))?;
        decode_body(&bytes, limit).map(Body)
    }
}

/// Decodes a request body the way every handler gets it: larger than `limit` → 413; no bytes
/// at all or `null` → `T::default()`; otherwise one JSON value of `T`'s shape → `T`, anything
/// else → 400. Whitespace alone is not a JSON text (RFC 8259 §2) and gets 400 like any other
/// malformed body: a client that meant "no body" sends none. Public so that the fuzz target
/// drives exactly this code.
pub fn decode_body<T: DeserializeOwned + Default>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, ApiError> {
    if bytes.len() > limit {
        return Err(ApiError::too_large(limit));
    }
    let trimmed = bytes.trim_ascii();
    if bytes.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(
            "invalid request body: whitespace is not JSON; send a JSON value or no body",
        ));
    }
    strict(trimmed).map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// `serde_json::from_slice`, except that a JSON array never fills a struct: serde reads
/// `[a, b]` as the struct's fields in order, Go's `encoding/json` (what clients are written
/// against) refuses it, and so do we.
fn strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = T::deserialize(Strict(&mut de))?;
    de.end()?;
    Ok(value)
}

/// A deserializer that hands every struct a visitor refusing sequences, all the way down.
struct Strict<D>(D);

/// A visitor whose nested values go through [`Strict`]; `seq_ok: false` for structs.
struct Wrap<V> {
    inner: V,
    seq_ok: bool,
}

fn wrap<V>(inner: V) -> Wrap<V> {
    Wrap {
        inner,
        seq_ok: true,
    }
}

/// Seq/map/enum access whose elements go through [`Strict`].
struct Access<A>(A);

/// A seed whose deserializer is wrapped in [`Strict`].
struct Seed<S>(S);

macro_rules! forward_deserialize {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(wrap(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_str deserialize_string deserialize_bytes deserialize_byte_buf
        deserialize_option deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, wrap(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, wrap(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, wrap(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, wrap(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_struct(
            name,
            fields,
            Wrap {
                inner: visitor,
                seq_ok: false,
            },
        )
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, wrap(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty))*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        if self.seq_ok {
            self.inner.visit_seq(Access(seq))
        } else {
            Err(de::Error::invalid_type(Unexpected::Seq, &self))
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Access(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Access(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<A> {
    type Error = A::Error;
    type Variant = Access<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(Seed(seed))?;
        Ok((value, Access(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, wrap(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(
            fields,
            Wrap {
                inner: visitor,
                seq_ok: false,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use hangar_api_types::{CreateMachineRequest, StopRequest};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Inner {
        a: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Outer {
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        pair: Option<(u8, String)>,
    }

    #[test]
    fn objects_decode_as_serde_json_does() {
        let v: Outer =
            strict(br#"{"inner":{"a":"x"},"list":[{"a":null}],"pair":[1,"y"]}"#).expect("decodes");
        assert_eq!(
            v.inner,
            Some(Inner {
                a: Some("x".into())
            })
        );
        assert_eq!(v.list, vec![Inner { a: None }]);
        assert_eq!(v.pair, Some((1, "y".into())));
        let m: CreateMachineRequest = strict(
            br#"{"config":{"image":"i","env":{"A":"1"},"stop_config":{"timeout":"5s"},"guest":null}}"#,
        )
        .expect("decodes");
        assert_eq!(m.config.image, "i");
    }

    #[test]
    fn arrays_never_fill_structs() {
        assert!(strict::<Outer>(b"[null, [], null]").is_err());
        assert!(strict::<Outer>(br#"{"inner":["x"]}"#).is_err());
        assert!(strict::<Outer>(br#"{"list":[["x"]]}"#).is_err());
        assert!(strict::<StopRequest>(b"[null, null]").is_err());
        assert!(strict::<CreateMachineRequest>(br#"{"config":["img"]}"#).is_err());
        assert!(
            strict::<CreateMachineRequest>(
                br#"{"config":{"image":"i","stop_config":["SIGTERM"]}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn the_body_rules() {
        assert_eq!(
            decode_body::<Outer>(b"", 10).expect("empty"),
            Outer::default()
        );
        // Schemathesis found `\r` accepted as "no body": whitespace alone is malformed JSON.
        for blank in [&b" "[..], b"\r", b"\n\t "] {
            let err = decode_body::<Outer>(blank, 10).expect_err("blank");
            let status = axum::response::IntoResponse::into_response(err).status();
            assert_eq!(status, axum::http::StatusCode::BAD_REQUEST);
        }
        assert_eq!(
            decode_body::<Outer>(b" null\n", 10).expect("null"),
            Outer::default()
        );
        assert!(decode_body::<Outer>(b"{} {}", 10).is_err(), "trailing data");
        assert!(decode_body::<Outer>(b"{}", 1).is_err(), "over the limit");
        assert!(decode_body::<Outer>(b"\"s\"", 10).is_err());
    }
}
