//! Schemas for the API document that domain types need too (so they need not name `api`).

use utoipa::ToSchema;
use utoipa::openapi::schema::{Schema, SchemaType, Type};

/// Any JSON value (a stored value, a fact of the health report): spelled out as every JSON
/// type rather than an empty schema `{}`.
pub struct AnyJson;

impl utoipa::PartialSchema for AnyJson {
    fn schema() -> utoipa::openapi::RefOr<Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(SchemaType::Array(vec![
                Type::Null,
                Type::Boolean,
                Type::Object,
                Type::Array,
                Type::Number,
                Type::String,
            ]))
            .description(Some("Any JSON value."))
            .into()
    }
}

impl ToSchema for AnyJson {}
