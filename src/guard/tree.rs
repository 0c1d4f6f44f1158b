//! A lean, generic copy of a pg_query parse tree, made through its serde
//! `Serialize` implementation, so the rules can walk every node without a
//! hand-written visitor for each of PostgreSQL's ~270 node types.
//!
//! It has the shape of the serde (JSON-like) form, `{"node": {"FuncCall":
//! {...}}}`, but keys are the `&'static str` field and variant names serde
//! hands out, and fields holding defaults (false, 0, "", empty lists, None)
//! are left out, which is most of them: building it costs a fraction of
//! `serde_json::to_value`.

use serde::ser::{self, Serialize};
use std::fmt;

/// One value of the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    /// None, unit, floats and other values no rule reads.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any integer (enum fields are integers in pg_query's protobuf types).
    Int(i64),
    /// A string.
    Str(Box<str>),
    /// A list.
    Seq(Vec<Tree>),
    /// A struct (fields by name) or an enum variant (one entry: its name).
    Map(Vec<(&'static str, Tree)>),
}

static NULL: Tree = Tree::Null;

impl Tree {
    /// Builds the tree of any serializable value.
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Tree {
        value.serialize(Builder).unwrap_or(Tree::Null)
    }

    /// The field `key` of a map, or None.
    pub fn get(&self, key: &str) -> Option<&Tree> {
        match self {
            Tree::Map(fields) => fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The field `key`, or Null.
    pub fn field(&self, key: &str) -> &Tree {
        self.get(key).unwrap_or(&NULL)
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Tree::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Tree::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Tree::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_slice(&self) -> Option<&[Tree]> {
        match self {
            Tree::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The entries, if this is a map.
    pub fn entries(&self) -> &[(&'static str, Tree)] {
        match self {
            Tree::Map(fields) => fields,
            _ => &[],
        }
    }

    fn is_default(&self) -> bool {
        match self {
            Tree::Null => true,
            Tree::Bool(b) => !b,
            Tree::Int(i) => *i == 0,
            Tree::Str(s) => s.is_empty(),
            Tree::Seq(v) => v.is_empty(),
            Tree::Map(_) => false,
        }
    }
}

/// Never produced: every value can be built.
#[derive(Debug)]
pub struct Never;

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unreachable")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Never
    }
}

struct Builder;

/// Collects a list (seq, tuple, tuple struct, tuple variant).
struct SeqBuilder {
    items: Vec<Tree>,
    variant: Option<&'static str>,
}

/// Collects a struct or struct variant.
struct StructBuilder {
    fields: Vec<(&'static str, Tree)>,
    variant: Option<&'static str>,
}

/// Maps are not in pg_query's types; kept as a list of [key, value] pairs.
struct MapBuilder {
    items: Vec<Tree>,
    key: Option<Tree>,
}

fn wrap(variant: Option<&'static str>, inner: Tree) -> Tree {
    match variant {
        Some(name) => Tree::Map(vec![(name, inner)]),
        None => inner,
    }
}

impl ser::Serializer for Builder {
    type Ok = Tree;
    type Error = Never;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = StructBuilder;
    type SerializeStructVariant = StructBuilder;

    fn serialize_bool(self, v: bool) -> Result<Tree, Never> {
        Ok(Tree::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Tree, Never> {
        Ok(Tree::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Tree, Never> {
        Ok(Tree::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn serialize_f32(self, _: f32) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_f64(self, _: f64) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_char(self, v: char) -> Result<Tree, Never> {
        Ok(Tree::Str(v.to_string().into()))
    }
    fn serialize_str(self, v: &str) -> Result<Tree, Never> {
        Ok(Tree::Str(v.into()))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_none(self) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Tree, Never> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Tree, Never> {
        Ok(Tree::Map(vec![(variant, Tree::Null)]))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Tree, Never> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Tree, Never> {
        Ok(Tree::Map(vec![(variant, value.serialize(Builder)?)]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, Never> {
        Ok(SeqBuilder {
            items: Vec::with_capacity(len.unwrap_or(0)),
            variant: None,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, Never> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqBuilder, Never> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, Never> {
        Ok(SeqBuilder {
            items: Vec::with_capacity(len),
            variant: Some(variant),
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapBuilder, Never> {
        Ok(MapBuilder {
            items: Vec::new(),
            key: None,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<StructBuilder, Never> {
        Ok(StructBuilder {
            fields: Vec::new(),
            variant: None,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<StructBuilder, Never> {
        Ok(StructBuilder {
            fields: Vec::new(),
            variant: Some(variant),
        })
    }
}

impl SeqBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.items.push(value.serialize(Builder)?);
        Ok(())
    }
    fn finish(self) -> Tree {
        wrap(self.variant, Tree::Seq(self.items))
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Tree;
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.push(value)
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Tree;
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.push(value)
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.push(value)
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.push(value)
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(self.finish())
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Tree;
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Never> {
        self.key = Some(key.serialize(Builder)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        let key = self.key.take().unwrap_or(Tree::Null);
        self.items
            .push(Tree::Seq(vec![key, value.serialize(Builder)?]));
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(Tree::Seq(self.items))
    }
}

impl StructBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Never> {
        let v = value.serialize(Builder)?;
        if !v.is_default() {
            self.fields.push((key, v));
        }
        Ok(())
    }
    fn finish(self) -> Tree {
        wrap(self.variant, Tree::Map(self.fields))
    }
}

impl ser::SerializeStruct for StructBuilder {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.push(key, value)
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for StructBuilder {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.push(key, value)
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_the_serde_shape_without_defaults() {
        let parsed = pg_query::parse("select set_config('a', 'b', true)", 0).unwrap();
        let tree = Tree::of(&parsed.protobuf);
        let json = serde_json::to_value(&parsed.protobuf).unwrap();
        let call = &tree.field("stmts").as_slice().unwrap()[0];
        let stmt = call.field("stmt").field("node").field("SelectStmt");
        let target = &stmt.field("target_list").as_slice().unwrap()[0];
        let func = target
            .field("node")
            .field("ResTarget")
            .field("val")
            .field("node")
            .field("FuncCall");
        let name = &func.field("funcname").as_slice().unwrap()[0];
        assert_eq!(
            name.field("node").field("String").field("sval").as_str(),
            Some("set_config")
        );
        // Defaults are left out; the JSON form has them.
        assert_eq!(func.get("agg_star"), None);
        assert!(json.to_string().contains("\"agg_star\":false"));
        assert_eq!(func.field("funcformat").as_i64(), Some(1));
    }
}
