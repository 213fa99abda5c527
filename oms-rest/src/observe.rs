//! A deserializer adapter that reports every object member a model type ignores, by path: how
//! the client notices the fields OMS sends that the gateway does not know ([`crate::drift`]).
//!
//! It wraps serde_json's streaming deserializer and the visitors serde hands it, forwarding every
//! call, and keeps track of where it is: the field names of the structs it descends through (read
//! off the key as it goes by: borrowed from the body, so no allocation unless the key carries an
//! escape), `[]` for an array element, `*` for the value of a map (its keys are data). serde's
//! derived types skip an unknown member by deserializing it as `IgnoredAny`; that one call is
//! where the path is rendered and reported. So a body with nothing unknown is decoded in the
//! same single pass as before, with a little bookkeeping per value; only an unknown member costs
//! an allocation. Externally tagged enums are forwarded unobserved (the model deserializes none),
//! and so is what serde buffers (untagged enums, `flatten`): the model avoids both where members
//! may be unknown.
//!
//! A key shows in a path only if it is an identifier of at most 64 bytes (see
//! `shown_key`); any other key shows as `*`, so a value used as a key never does.

use crate::model::{
    CashInDto, CashInPageDto, CashLocationListDto, SimulationResultDto, TransactionDto,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// Where the paths of one decoded type begin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Root {
    /// The name of the resource at the top (`cashIn`).
    pub(crate) name: &'static str,
    /// For a list: the name of its elements (`cashIn`), whose paths begin there rather than at
    /// `data[]` (or `[]` for a bare array), so a field reads the same in every answer it arrives in.
    pub(crate) items: Option<&'static str>,
}

/// A model type of a 2xx answer decoded with its unknown members reported, and where their paths
/// begin.
pub(crate) trait Answer: de::DeserializeOwned {
    const ROOT: Root;
}

impl Answer for CashInDto {
    const ROOT: Root = Root {
        name: "cashIn",
        items: None,
    };
}

impl Answer for TransactionDto {
    const ROOT: Root = Root {
        name: "transaction",
        items: None,
    };
}

impl Answer for CashInPageDto {
    const ROOT: Root = Root {
        name: "cashInList",
        items: Some("cashIn"),
    };
}

impl Answer for CashLocationListDto {
    const ROOT: Root = Root {
        name: "cashLocationList",
        items: Some("cashLocation"),
    };
}

impl Answer for SimulationResultDto {
    const ROOT: Root = Root {
        name: "simulationResult",
        items: None,
    };
}

/// Where a value is: a linked list of frames on the stack, from the value up to the root.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(Root),
    Field { parent: &'a Path<'a>, key: &'a str },
    Item { parent: &'a Path<'a> },
    Entry { parent: &'a Path<'a> },
}

/// One step of a rendered path.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step<'a> {
    Field(&'a str),
    Item,
    Entry,
}

impl Path<'_> {
    /// The path of the member `key` of the object at `self`, as the drift metric labels it.
    fn render(&self, key: &str) -> String {
        let mut steps = vec![Step::Field(key)];
        let mut at = self;
        let root = loop {
            let (step, parent) = match at {
                Path::Root(root) => break *root,
                Path::Field { parent, key } => (Step::Field(key), parent),
                Path::Item { parent } => (Step::Item, parent),
                Path::Entry { parent } => (Step::Entry, parent),
            };
            steps.push(step);
            at = parent;
        };
        steps.reverse();
        let mut name = root.name;
        let mut rest = &steps[..];
        if let Some(items) = root.items {
            let skip = match rest {
                [Step::Field("data"), Step::Item, ..] => 2,
                [Step::Item, ..] => 1,
                _ => 0,
            };
            if skip > 0 {
                name = items;
                rest = &rest[skip..];
            }
        }
        let mut text = String::from(name);
        for step in rest {
            match step {
                Step::Field(key) => {
                    text.push('.');
                    text.push_str(shown_key(key));
                }
                Step::Item => text.push_str("[]"),
                Step::Entry => text.push_str(".*"),
            }
        }
        text
    }
}

/// `T` from `de`, calling `report` with the path of every member `T` ignores.
pub(crate) fn deserialize<'de, T, D>(
    de: D,
    root: Root,
    report: &dyn Fn(&str),
) -> Result<T, D::Error>
where
    T: de::Deserialize<'de>,
    D: Deserializer<'de>,
{
    T::deserialize(Observed {
        de,
        path: &Path::Root(root),
        report,
    })
}

/// A deserializer at a known path.
struct Observed<'a, D> {
    de: D,
    path: &'a Path<'a>,
    report: &'a dyn Fn(&str),
}

/// A visitor at a known path; `is_struct` when serde asked for a struct (its map's keys are
/// field names, else data).
struct Wrap<'a, V> {
    visitor: V,
    path: &'a Path<'a>,
    report: &'a dyn Fn(&str),
    is_struct: bool,
}

macro_rules! forward_wrapped {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let wrap = Wrap { visitor, path: self.path, report: self.report, is_struct: false };
            self.de.$method($($arg,)* wrap)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Observed<'_, D> {
    type Error = D::Error;

    forward_wrapped! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf(); deserialize_option();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str); deserialize_seq();
        deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_identifier();
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let wrap = Wrap {
            visitor,
            path: self.path,
            report: self.report,
            is_struct: true,
        };
        self.de.deserialize_struct(name, fields, wrap)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // serde skips an unknown member this way: the path ends in its key.
        match self.path {
            Path::Field { parent, key } => (self.report)(&parent.render(key)),
            Path::Entry { .. } | Path::Item { .. } | Path::Root(_) => {}
        }
        self.de.deserialize_ignored_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

macro_rules! forward_visits {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.visitor.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(formatter)
    }

    forward_visits! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char); visit_str(&str);
        visit_borrowed_str(&'de str); visit_string(String); visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.visitor.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let (path, report) = (self.path, self.report);
        self.visitor.visit_some(Observed { de, path, report })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let (path, report) = (self.path, self.report);
        self.visitor
            .visit_newtype_struct(Observed { de, path, report })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let (path, report) = (self.path, self.report);
        self.visitor.visit_seq(Items { seq, path, report })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(Members {
            map,
            path: self.path,
            report: self.report,
            is_struct: self.is_struct,
            key: None,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_enum(data)
    }
}

/// A seed deserialized at a known path.
struct Seed<'a, S> {
    seed: S,
    path: &'a Path<'a>,
    report: &'a dyn Fn(&str),
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        let (path, report) = (self.path, self.report);
        self.seed.deserialize(Observed { de, path, report })
    }
}

/// The elements of an array, each at `[]` below it.
struct Items<'a, A> {
    seq: A,
    path: &'a Path<'a>,
    report: &'a dyn Fn(&str),
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Items<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let path = Path::Item { parent: self.path };
        let (path, report) = (&path, self.report);
        self.seq.next_element_seed(Seed { seed, path, report })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

/// The members of an object: a struct's, each at its key (read as it goes by), or a map's, each
/// at `*`.
struct Members<'a, 'de, A> {
    map: A,
    path: &'a Path<'a>,
    report: &'a dyn Fn(&str),
    is_struct: bool,
    key: Option<Cow<'de, str>>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Members<'_, 'de, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.key = None;
        if !self.is_struct {
            return self.map.next_key_seed(seed);
        }
        self.map.next_key_seed(KeySeed {
            seed,
            key: &mut self.key,
        })
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let report = self.report;
        match self.key.take() {
            Some(key) => {
                let path = Path::Field {
                    parent: self.path,
                    key: &key,
                };
                self.map.next_value_seed(Seed {
                    seed,
                    path: &path,
                    report,
                })
            }
            None => {
                let path = Path::Entry { parent: self.path };
                self.map.next_value_seed(Seed {
                    seed,
                    path: &path,
                    report,
                })
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// A struct's key, noted as it is deserialized.
struct KeySeed<'k, 'de, K> {
    seed: K,
    key: &'k mut Option<Cow<'de, str>>,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, 'de, K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<K::Value, D::Error> {
        self.seed.deserialize(KeyDeserializer { de, key: self.key })
    }
}

/// The deserializer of a struct's key: its string visits are noted on the way to serde's
/// field visitor.
struct KeyDeserializer<'k, 'de, D> {
    de: D,
    key: &'k mut Option<Cow<'de, str>>,
}

macro_rules! forward_noting {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.de.$method($($arg,)* KeyVisitor { visitor, key: self.key })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for KeyDeserializer<'_, 'de, D> {
    type Error = D::Error;

    forward_noting! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf(); deserialize_option();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str); deserialize_seq();
        deserialize_tuple(len: usize); deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map(); deserialize_identifier(); deserialize_ignored_any();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// serde's field visitor, with the key's text noted on the way.
struct KeyVisitor<'k, 'de, V> {
    visitor: V,
    key: &'k mut Option<Cow<'de, str>>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for KeyVisitor<'_, 'de, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(formatter)
    }

    forward_visits! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char);
        visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<V::Value, E> {
        *self.key = Some(Cow::Borrowed(v));
        self.visitor.visit_borrowed_str(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        *self.key = Some(Cow::Owned(v.to_owned()));
        self.visitor.visit_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<V::Value, E> {
        *self.key = Some(Cow::Owned(v.clone()));
        self.visitor.visit_string(v)
    }
}

/// The longest object key a path shows; longer keys, and keys that are not identifiers (a key
/// can be data too: metadata keys, or a code used as a key), show as `*`.
const MAX_SHOWN_KEY: usize = 64;

/// A key as a path shows it: an identifier (`depositInstructions`, `order_id`), else `*`.
pub(crate) fn shown_key(key: &str) -> &str {
    let identifier = key.len() <= MAX_SHOWN_KEY
        && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if identifier { key } else { "*" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const CASH_IN: Root = CashInDto::ROOT;
    const PAGE: Root = CashInPageDto::ROOT;

    /// `T` from `body`, and the paths reported.
    fn observe<T: de::DeserializeOwned>(body: &str, root: Root) -> (T, Vec<String>) {
        let seen = RefCell::new(Vec::new());
        let report = |path: &str| seen.borrow_mut().push(path.to_owned());
        let mut de = serde_json::Deserializer::from_str(body);
        let value = deserialize(&mut de, root, &report).expect("decodes");
        de.end().expect("nothing after");
        (value, seen.into_inner())
    }

    #[test]
    fn every_ignored_member_is_reported_by_its_path_and_nothing_else() {
        let body = r#"{"id":"ci_1","status":"pending","newTop":{"deep":[1,2]},
            "source":{"asset":"usd","foo":1,"feesDeducted":{"total":"1.00","carbon":"0.01"}},
            "developerFees":[{"percentage":"0.01","tier":"gold"},{"flatFee":"1.00","tier":"x"}],
            "destination":{"wallet":{"wallet":"wlt_1","chain":"polygon"}},
            "cash":{"cashLocationId":"loc_1","kiosk":7},
            "metadata":{"483 291":"v","order":null}}"#;
        let (dto, mut seen): (CashInDto, _) = observe(body, CASH_IN);
        seen.sort();
        assert_eq!(
            seen,
            [
                "cashIn.cash.kiosk",
                "cashIn.destination.wallet.chain",
                "cashIn.developerFees[].tier",
                "cashIn.developerFees[].tier",
                "cashIn.newTop",
                "cashIn.source.feesDeducted.carbon",
                "cashIn.source.foo",
            ]
        );
        // Decoded as without observation.
        assert_eq!(dto, serde_json::from_str::<CashInDto>(body).unwrap());
        let (_, none): (CashInDto, _) = observe(r#"{"id":"ci_1","status":"p"}"#, CASH_IN);
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn a_list_reports_its_elements_members_as_the_elements_own() {
        let body =
            r#"{"data":[{"id":"ci_1","status":"pending","foo":1}],"hasMore":false,"total":1}"#;
        let (_, seen): (CashInPageDto, _) = observe(body, PAGE);
        assert_eq!(seen, ["cashIn.foo", "cashInList.total"]);
        let locations = CashLocationListDto::ROOT;
        let (list, seen): (CashLocationListDto, _) =
            observe(r#"[{"id":"loc_1","hours":"24/7"}]"#, locations);
        assert_eq!(list.into_vec()[0].id, "loc_1");
        assert_eq!(seen, ["cashLocation.hours"]);
        let (_, seen): (CashLocationListDto, _) = observe(
            r#"{"data":[{"id":"loc_1","hours":"24/7"}],"page":2}"#,
            locations,
        );
        assert_eq!(seen, ["cashLocation.hours", "cashLocationList.page"]);
    }

    #[test]
    fn a_key_that_is_no_identifier_shows_as_a_star_never_as_itself() {
        let body = r#"{"id":"ci_1","status":"pending","483 291":"x","source":{"a\"b":1,"x\u0041":2},"AB12CD34":1}"#;
        let (_, mut seen): (CashInDto, _) = observe(body, CASH_IN);
        seen.sort();
        // An escaped key is read through an owned copy; one that spells an identifier shows.
        assert_eq!(
            seen,
            [
                "cashIn.*",
                "cashIn.AB12CD34",
                "cashIn.source.*",
                "cashIn.source.xA"
            ]
        );
        let long = format!(r#"{{"id":"ci_1","status":"p","{}":1}}"#, "k".repeat(65));
        let (_, seen): (CashInDto, _) = observe(&long, CASH_IN);
        assert_eq!(seen, ["cashIn.*"]);
    }
}
