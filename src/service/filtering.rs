//! Applying parsed filter terms ([`crate::domain::filter`]) to queries.

use sea_orm::{ColumnTrait, sea_query::SimpleExpr};

use crate::domain::filter::Op;

/// `column OP value` as a query condition.
pub fn compare<C: ColumnTrait, V: Into<sea_orm::Value>>(column: C, op: Op, value: V) -> SimpleExpr {
    match op {
        Op::Eq => column.eq(value),
        Op::Ne => column.ne(value),
        Op::Lt => column.lt(value),
        Op::Le => column.lte(value),
        Op::Gt => column.gt(value),
        Op::Ge => column.gte(value),
    }
}
