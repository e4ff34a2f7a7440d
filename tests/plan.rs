//! `duplex plan` shows the shipped mapping set as compiled against live schemas, with the SQL
//! and the publication it will use; completions and the man page come from the same CLI
//! definition.

mod support;

use support::shop;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_columns_transforms_directions_and_the_sql_of_each_entry() {
    let (_dbs, work) = shop::shop_dbs("plan", |_, t| t).await;
    let (code, out, err) = work.run_split(&["plan"]);
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "orders.toml:",
        ".b_sale_order → public.orders   direction both, key (bitrix_order_id)",
        "reverse_write Update",
        "STATUS_ID",
        "map order_status",
        "both (conflict",
        "look-up: city_id = public.cities.id where public.cities.bitrix_city_id = bitrix_city_id",
        "upsert: INSERT INTO \"public\".\"orders\"",
        "ON CONFLICT (\"bitrix_order_id\") DO UPDATE SET",
        "SQL, PostgreSQL → MySQL:",
        "update: UPDATE ",
        "pivot: rows (ORDER_ID, CODE, VALUE) per key",
        "nameRecipient → recipient_name (priority 1, trim → empty_null)",
        "CREATE PUBLICATION",
    ] {
        assert!(out.contains(want), "plan lacks {want:?}:\n{out}");
    }
    let (code, one, _) = work.run_split(&["plan", "--table", "order_items"]);
    assert_eq!(code, Some(0));
    assert!(
        one.contains("→ public.order_items") && !one.contains("→ public.orders "),
        "{one}"
    );
    let (code, _, err) = work.run_split(&["plan", "--table", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no mapped table is called nope"), "{err}");
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_definition() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(support::harness::duplex_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("_duplex()") && bash.contains("verify") && bash.contains("--log-format"));
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.contains("#compdef duplex"), "{zsh}");
    let man = run(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH duplex"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(
        man.contains("/etc/duplex/duplex.toml") && man.contains("duplex\\-teardown"),
        "{man}"
    );
}
