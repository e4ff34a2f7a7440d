//! Reads PostgreSQL target table definitions from `pg_catalog`: columns with their base type
//! (domains resolved) and the primary key and unique indexes that upserts can target.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::model::{TableName, TargetColumn, TargetKind, TargetTable};

/// Reads a table; `Ok(None)` when it does not exist.
pub async fn read_table(client: &Client, name: &TableName) -> Result<Option<TargetTable>> {
    let rel = client
        .query_opt(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&name.schema, &name.name],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, &format!("looking up table {name}")))?;
    let Some(rel) = rel else { return Ok(None) };
    let oid: u32 = rel.get(0);
    let rows = client
        .query(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid, NOT a.attnotnull, \
                    COALESCE(bt.typname, t.typname), COALESCE(bt.typtype, t.typtype)::text \
             FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, &format!("reading the columns of {name}")))?;
    let columns = rows
        .iter()
        .map(|r| {
            let typtype: String = r.get(5);
            let typname: String = r.get(4);
            TargetColumn {
                name: r.get(0),
                type_name: r.get(1),
                oid: r.get(2),
                nullable: r.get(3),
                kind: TargetKind::from_pg_typname(&typname, typtype.chars().next().unwrap_or('b')),
            }
        })
        .collect();
    let keys = client
        .query(
            "SELECT array_agg(a.attname ORDER BY k.ord) \
             FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL \
             GROUP BY i.indexrelid",
            &[&oid],
        )
        .await
        .map_err(|e| Error::from_pg(e, true, &format!("reading the keys of {name}")))?;
    let unique_keys = keys.iter().map(|r| r.get::<_, Vec<String>>(0)).collect();
    Ok(Some(TargetTable {
        name: name.clone(),
        columns,
        unique_keys,
    }))
}
