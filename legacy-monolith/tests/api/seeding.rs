//! The seeder.

use legacy_monolith::migrate;
use legacy_monolith::seed::{self, SeedError, SeedOptions};

use crate::common::{cluster, fresh_database};

fn opts(seed: u64) -> SeedOptions {
    SeedOptions { products: 200, customers: 50, orders: 300, categories: 10, seed, force: false, progress: false }
}

async fn migrated() -> (String, tokio_postgres::Client) {
    let (db, conn) = fresh_database();
    let mut client = legacy_monolith::db::connect(&conn).await.unwrap();
    migrate::run(&mut client).await.unwrap();
    (db, client)
}

/// A digest of every seeded table's content in id order.
fn digest(db: &str) -> String {
    let tables = [
        "categories",
        "products",
        "inventory",
        "customers",
        "addresses",
        "orders",
        "order_items",
        "payments",
        "notifications",
    ];
    tables
        .iter()
        .map(|t| {
            cluster()
                .psql(db, &format!("SELECT md5(COALESCE(string_agg(t::text, '|' ORDER BY id), '')) FROM {t} t"))
                .unwrap()
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn small_seed_has_the_requested_counts_and_holds_together() {
    let (db, mut client) = migrated().await;
    let report = seed::run(&mut client, &opts(1)).await.unwrap();
    assert_eq!(
        (report.products, report.inventory, report.customers, report.orders, report.categories),
        (200, 200, 50, 300, 10)
    );
    let pg = cluster();
    let count = |t: &str| pg.psql(&db, &format!("SELECT count(*) FROM {t}")).unwrap().parse::<u64>().unwrap();
    assert_eq!(count("products"), 200);
    assert_eq!(count("inventory"), 200);
    assert_eq!(count("customers"), 50);
    assert_eq!(count("orders"), 300);
    assert_eq!(count("categories"), 10);
    assert_eq!(count("order_items"), report.order_items);
    assert_eq!(count("payments"), report.payments);
    assert_eq!(count("notifications"), report.notifications);
    assert!(report.order_items >= 300 && report.payments > 0 && report.addresses >= 50);
    // Integrity beyond what the foreign keys already enforce.
    let checks = [
        // order totals equal the sum of their lines
        "SELECT count(*) FROM orders o WHERE total_amt <> (SELECT sum(line_total) FROM order_items WHERE order_id = o.id)",
        // line totals are price x quantity, and the sku matches the product
        "SELECT count(*) FROM order_items oi JOIN products p ON p.id = oi.product_id WHERE oi.line_total <> oi.unit_price * oi.qty OR oi.sku <> p.sku",
        // every order has at least one line
        "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items WHERE order_id = o.id)",
        // payments only for orders that were paid, with the order's total
        "SELECT count(*) FROM payments pm JOIN orders o ON o.id = pm.order_id WHERE pm.amount <> o.total_amt OR o.status_cd = 'pending_payment'",
        "SELECT count(*) FROM orders o WHERE o.status_cd IN ('paid', 'shipped') AND NOT EXISTS (SELECT 1 FROM payments WHERE order_id = o.id AND status_cd = 'captured')",
        // the shipping address belongs to the customer
        "SELECT count(*) FROM orders o JOIN addresses a ON a.id = o.ship_addr_id WHERE a.cust_id <> o.cust_id",
        // inventory belongs to its product, never negative
        "SELECT count(*) FROM inventory i JOIN products p ON p.id = i.product_id WHERE i.sku <> p.sku OR i.quantity < 0",
        // cancelled orders, and only they, have cancelled_at
        "SELECT count(*) FROM orders WHERE (status_cd = 'cancelled') <> (cancelled_at IS NOT NULL)",
    ];
    for sql in checks {
        assert_eq!(pg.psql(&db, sql).unwrap(), "0", "{sql}");
    }
    // Sequences were moved past the explicit ids.
    let next = pg.psql(&db, "INSERT INTO categories (name, slug) VALUES ('n', 'n') RETURNING id").unwrap();
    assert_eq!(next, "11");
}

#[tokio::test]
async fn the_same_seed_value_gives_the_same_data() {
    let (db1, mut c1) = migrated().await;
    let (db2, mut c2) = migrated().await;
    let (db3, mut c3) = migrated().await;
    seed::run(&mut c1, &opts(99)).await.unwrap();
    seed::run(&mut c2, &opts(99)).await.unwrap();
    seed::run(&mut c3, &opts(100)).await.unwrap();
    let (d1, d2, d3) = (digest(&db1), digest(&db2), digest(&db3));
    assert_eq!(d1, d2);
    assert_ne!(d1, d3);
}

#[tokio::test]
async fn a_non_empty_database_needs_force() {
    let (db, mut client) = migrated().await;
    seed::run(&mut client, &opts(5)).await.unwrap();
    let before = digest(&db);
    assert!(matches!(seed::run(&mut client, &opts(6)).await, Err(SeedError::NotEmpty)));
    assert_eq!(digest(&db), before, "a refused seed changes nothing");
    let forced = SeedOptions { force: true, ..opts(5) };
    seed::run(&mut client, &forced).await.unwrap();
    assert_eq!(digest(&db), before, "force replaces, it does not append");
    assert!(matches!(
        seed::run(&mut client, &SeedOptions { products: 0, force: true, ..opts(5) }).await,
        Err(SeedError::Invalid(_))
    ));
}
