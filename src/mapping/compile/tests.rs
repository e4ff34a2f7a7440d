//! Unit tests of the compiler: whole mapping files compiled against small schemas, checking the
//! plans built and the errors' file, line and key.

use super::*;
use crate::mapping::spec::MappingFile;
use crate::model::{ColumnSchema, SourceType, TargetColumn, TargetKind, Value};
use std::path::{Path, PathBuf};

fn source() -> Arc<TableSchema> {
    let col = |name: &str, ty: SourceType| ColumnSchema {
        name: name.into(),
        ty,
        nullable: true,
        column_type: "x".into(),
    };
    Arc::new(TableSchema {
        name: TableName::new("shop", "b_sale_order"),
        columns: vec![
            col(
                "ID",
                SourceType::Int {
                    bytes: 4,
                    unsigned: false,
                },
            ),
            col(
                "PRICE",
                SourceType::Decimal {
                    precision: 18,
                    scale: 4,
                },
            ),
            col(
                "LID",
                SourceType::Text {
                    charset: "utf8mb3".into(),
                },
            ),
        ],
        primary_key: vec![0],
    })
}

fn target() -> TargetTable {
    let col = |name: &str, kind: TargetKind, ty: &str| TargetColumn {
        name: name.into(),
        type_name: ty.into(),
        kind,
        oid: 0,
        nullable: true,
    };
    TargetTable {
        name: TableName::new("public", "orders"),
        columns: vec![
            col("bitrix_order_id", TargetKind::Int4, "integer"),
            col("total", TargetKind::Numeric, "numeric(18,4)"),
            col("lid", TargetKind::Int4, "integer"),
        ],
        unique_keys: vec![vec!["bitrix_order_id".into()]],
    }
}

fn run(text: &str) -> Result<Plan> {
    let file = MappingFile::parse(Path::new("m/orders.toml"), text.into()).unwrap();
    let set = MappingSet {
        dir: PathBuf::from("m"),
        files: vec![file],
    };
    let mut s = HashMap::new();
    s.insert(TableName::new("shop", "b_sale_order"), source());
    let mut t = HashMap::new();
    t.insert(TableName::new("public", "orders"), target());
    compile(&set, "shop", "public", &s, &t)
}

#[test]
fn good_mapping_compiles() {
    let plan = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = \"total\"\n").unwrap();
    let t = &plan.tables[0];
    assert_eq!(t.columns.len(), 2);
    assert_eq!(t.key, vec![0]);
    let row = vec![
        Value::Int(7),
        Value::Decimal("1.5".into()),
        Value::Text("s1".into()),
    ];
    assert_eq!(
        t.target_row(&row).unwrap(),
        vec![Value::Int(7), Value::Decimal("1.5".into())]
    );
    assert_eq!(
        plan.forward_for(&TableName::new("shop", "b_sale_order"))
            .count(),
        1
    );
}

/// A resync prunes only entries whose target rows all come from their source, keyed by the
/// source's integer key unchanged.
#[test]
fn prune_keys() {
    let base = "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n";
    let cols = "[table.column]\nID = \"bitrix_order_id\"\nPRICE = \"total\"\n";
    let key = |extra: &str| {
        let plan = run(&format!("{base}{extra}{cols}")).unwrap();
        plan.tables[0].prune_key().map(str::to_string)
    };
    assert_eq!(key(""), Some("bitrix_order_id".into()));
    assert_eq!(
        key("direction = \"both\"\nreverse_write = \"update\"\n"),
        Some("bitrix_order_id".into())
    );
    assert_eq!(key("direction = \"both\"\n"), None);
    assert_eq!(key("on_delete = \"ignore\"\n"), None);
}

#[test]
fn errors_name_file_line_key() {
    let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nID = \"bitrix_order_id\"\nPRCE = \"total\"\nLID = \"lid\"\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("m/orders.toml:6: key `table[0].column.PRCE`: column PRCE does not exist in source table shop.b_sale_order"), "{msg}");
    assert!(
        msg.contains(
            "m/orders.toml:7: key `table[0].column.LID`: cannot convert text (utf8mb3) column LID"
        ),
        "{msg}"
    );

    let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\n[table.column]\nPRICE = \"total\"\n").unwrap_err();
    assert!(
        e.to_string().contains(
            "m/orders.toml:2: key `table[0].key`: key column ID of shop.b_sale_order is not mapped"
        ),
        "{e}"
    );

    let e = run("[[table]]\nsource = \"b_sale_ordr\"\ntarget = \"orders\"\n").unwrap_err();
    assert!(
        e.to_string().contains(
            "m/orders.toml:2: key `table[0].source`: source table shop.b_sale_ordr does not exist"
        ),
        "{e}"
    );

    let e = run("[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\nkey = [\"PRICE\"]\n[table.column]\nID = \"bitrix_order_id\"\nPRICE = \"total\"\n").unwrap_err();
    assert!(e.to_string().contains("m/orders.toml:4: key `table[0].key`: target public.orders has no primary key or unique index on (total)"), "{e}");
}

#[test]
fn conversions() {
    assert!(convertible(
        &SourceType::Int {
            bytes: 8,
            unsigned: true
        },
        &TargetKind::Numeric
    ));
    assert!(!convertible(
        &SourceType::Text {
            charset: "cp1251".into()
        },
        &TargetKind::Int4
    ));
    assert!(convertible(&SourceType::Enum(vec![]), &TargetKind::Text));
    assert!(!convertible(&SourceType::Binary, &TargetKind::Text));
    assert!(convertible(&SourceType::DateTime, &TargetKind::Timestamptz));
}

/// A small shop for the v2 constructs: orders, properties and basket rows.
fn run_v2(files: &[(&str, &str)]) -> Result<Plan> {
    let int = || SourceType::Int {
        bytes: 4,
        unsigned: false,
    };
    let text = || SourceType::Text {
        charset: "utf8mb3".into(),
    };
    let table = |name: &str, cols: Vec<(&str, SourceType)>| {
        Arc::new(TableSchema {
            name: TableName::new("shop", name),
            columns: cols
                .into_iter()
                .map(|(n, ty)| ColumnSchema {
                    name: n.into(),
                    ty,
                    nullable: true,
                    column_type: "x".into(),
                })
                .collect(),
            primary_key: vec![0],
        })
    };
    let mut s = HashMap::new();
    for t in [
        table(
            "b_sale_order",
            vec![
                ("ID", int()),
                ("STATUS_ID", text()),
                ("CANCELED", text()),
                ("LID", text()),
            ],
        ),
        table(
            "props",
            vec![
                ("ID", int()),
                ("ORDER_ID", int()),
                ("CODE", text()),
                ("VALUE", text()),
            ],
        ),
        table("basket", vec![("ID", int()), ("ORDER_ID", int())]),
    ] {
        s.insert(t.name.clone(), t);
    }
    let col = |name: &str, kind: TargetKind, nullable: bool| TargetColumn {
        name: name.into(),
        type_name: format!("{kind:?}").to_lowercase(),
        kind,
        oid: 0,
        nullable,
    };
    let mut t = HashMap::new();
    t.insert(
        TableName::new("public", "orders"),
        TargetTable {
            name: TableName::new("public", "orders"),
            columns: vec![
                col("id", TargetKind::Uuid, false),
                col("bitrix_order_id", TargetKind::Int4, true),
                col("status", TargetKind::Text, true),
                col("canceled", TargetKind::Bool, true),
                col("name", TargetKind::Text, true),
                col("meta", TargetKind::Text, true),
            ],
            unique_keys: vec![vec!["id".into()], vec!["bitrix_order_id".into()]],
        },
    );
    t.insert(
        TableName::new("public", "items"),
        TargetTable {
            name: TableName::new("public", "items"),
            columns: vec![
                col("bitrix_basket_id", TargetKind::Int4, false),
                col("bitrix_order_id", TargetKind::Int4, true),
                col("order_id", TargetKind::Uuid, false),
            ],
            unique_keys: vec![vec!["bitrix_basket_id".into()]],
        },
    );
    let set = MappingSet {
        dir: PathBuf::from("m"),
        files: files
            .iter()
            .map(|(n, text)| {
                MappingFile::parse(Path::new(&format!("m/{n}")), text.to_string()).unwrap()
            })
            .collect(),
    };
    compile(&set, "shop", "public", &s, &t)
}

const MAPS: &str = "[map.st.values]\nN = \"new\"\nP = \"paid\"\nPD = \"paid\"\n";

#[test]
fn v2_constructs_compile() {
    let orders = "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ndirection = \"both\"\n\
        [table.filter]\nLID = { in = [\"s1\", \"s2\"] }\n\
        [table.column]\nID = \"bitrix_order_id\"\nSTATUS_ID = { to = \"status\", map = \"st\", direction = \"forward\" }\n\
        CANCELED = { to = \"canceled\", transform = \"yes_no\" }\n\
        [[table]]\nsource = \"props\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\n\
        [table.column]\nORDER_ID = \"bitrix_order_id\"\n\
        [table.pivot]\nname = \"CODE\"\nvalue = \"VALUE\"\n\
        [table.pivot.code]\nnameRecipient = { to = \"name\", priority = 1 }\nFIO = { to = \"name\", priority = 2, transform = \"trim\" }\n";
    let plan = run_v2(&[("maps.toml", MAPS), ("orders.toml", orders)]).unwrap();
    assert_eq!(plan.tables.len(), 2);
    assert_eq!(plan.tables[1].on_delete, OnDelete::Clear);
    let p = plan.tables[1].pivot.as_ref().unwrap();
    assert_eq!(p.codes["FIO"][0].priority, 2);
    // Back to MySQL: the key and CANCELED (yes_no backwards), not the forward-only status.
    let r = &plan.reverse[0];
    let names: Vec<&str> = r.columns.iter().map(|c| c.my.name.as_str()).collect();
    assert_eq!(names, vec!["CANCELED", "ID"]);
    let row = vec![
        Value::Int(1),
        Value::Text("PD".into()),
        Value::Text("Y".into()),
        Value::Text("s1".into()),
    ];
    assert_eq!(
        plan.tables[0].target_row(&row).unwrap(),
        vec![Value::Bool(true), Value::Int(1), Value::Text("paid".into())]
    );
    let idx = plan.tables[0].bind(&plan.tables[0].source_schema).unwrap();
    assert!(plan.tables[0].passes(&row, &idx));
    let mut other = row.clone();
    other[3] = Value::Text("s3".into());
    assert!(!plan.tables[0].passes(&other, &idx));
}

#[test]
fn v2_errors_name_file_line_key() {
    let bad = "[[table]]\nsource = \"b_sale_order\"\ntarget = \"orders\"\ndirection = \"both\"\n\
        [table.filter]\nNOPE = 1\n\
        [table.column]\nID = \"bitrix_order_id\"\nSTATUS_ID = { to = \"status\", map = \"st\" }\n\
        CANCELED = { to = \"canceled\", transform = \"yes_or_no\" }\nLID = { to = \"name\", map = \"nope\" }\n\
        [[table]]\nsource = \"basket\"\ntarget = \"items\"\n\
        [table.column]\nID = \"bitrix_basket_id\"\nORDER_ID = \"bitrix_order_id\"\n\
        [table.lookup.order_id]\nfrom = \"bitrix_order_id\"\ntable = \"orders\"\nmatch = \"bitrix_order_id\"\ntake = \"id\"\n\
        [[table]]\nsource = \"props\"\ntarget = \"orders\"\nkey = [\"ORDER_ID\"]\non_delete = \"delete\"\n\
        [table.column]\nORDER_ID = \"bitrix_order_id\"\n\
        [table.pivot]\nname = \"CODE\"\nvalue = \"VALUE\"\n\
        [table.pivot.code]\na = { to = \"meta\" }\nb = { to = \"meta\" }\n";
    let e = run_v2(&[("maps.toml", MAPS), ("bad.toml", bad)])
        .unwrap_err()
        .to_string();
    for want in [
        "m/bad.toml:6: key `table[0].filter.NOPE`: column NOPE does not exist in source table shop.b_sale_order",
        "m/bad.toml:9: key `table[0].column.STATUS_ID`: this column goes back to MySQL, but map st cannot be read backwards: value \"paid\" is the image of 2 codes (P, PD)",
        "m/bad.toml:10: key `table[0].column.CANCELED`: unknown transform \"yes_or_no\"",
        "m/bad.toml:11: key `table[0].column.LID`: no map named \"nope\" (defined: st)",
        "m/bad.toml:18: key `table[1].lookup.order_id`: public.items.order_id is NOT NULL",
        "key `table[2].pivot.code.b`: codes a and b both feed meta with priority 0",
        "key `table[2].on_delete`: a pivot clears the columns its codes feed on a source DELETE",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}
