//! Deterministic sample data, loaded fast with binary COPY in one transaction.
//!
//! The same [`SeedOptions`] (counts and `seed`) always produce byte-identical rows, timestamps
//! included (they are derived from a fixed epoch, not from the clock). Ids are explicit and the
//! identity sequences are moved past them afterwards, so the API keeps working on a seeded DB.
//! Expects a migrated schema ([`crate::migrate::run`]).

use std::pin::pin;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::json;
use thiserror::Error;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOptions {
    pub products: u64,
    pub customers: u64,
    pub orders: u64,
    pub categories: u64,
    /// Seed of the pseudo-random generator: same value, same data.
    pub seed: u64,
    /// Empty the shop's tables first instead of refusing to seed a non-empty database.
    pub force: bool,
    /// Print progress lines to stderr.
    pub progress: bool,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            products: 10_000,
            customers: 2_000,
            orders: 20_000,
            categories: 30,
            seed: 42,
            force: false,
            progress: false,
        }
    }
}

/// Rows written per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub categories: u64,
    pub products: u64,
    pub inventory: u64,
    pub customers: u64,
    pub addresses: u64,
    pub orders: u64,
    pub order_items: u64,
    pub payments: u64,
    pub notifications: u64,
    pub elapsed: Duration,
}

/// Why seeding failed.
#[derive(Debug, Error)]
pub enum SeedError {
    #[error("the database already holds shop data; pass --force to replace it")]
    NotEmpty,
    #[error("invalid seed options: {0}")]
    Invalid(String),
    #[error("database error while seeding: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// The tables seeding fills (and `force` empties).
const TABLES: &str = "categories, customers, addresses, products, inventory, inventory_movements, \
                      orders, order_items, payments, notifications";

const DEPARTMENTS: &[&str] = &[
    "Electronics",
    "Home & Kitchen",
    "Garden",
    "Sports",
    "Toys",
    "Books",
    "Fashion",
    "Beauty",
    "Automotive",
    "Office",
    "Pets",
    "Grocery",
];
const SUBCATEGORIES: &[&str] = &[
    "Accessories",
    "Essentials",
    "Premium",
    "Outdoor",
    "Kids",
    "Classics",
    "Tools",
    "Storage",
    "Lighting",
    "Audio",
    "Care",
    "Gadgets",
];
const ADJECTIVES: &[&str] = &[
    "Compact",
    "Deluxe",
    "Rugged",
    "Classic",
    "Smart",
    "Portable",
    "Ergonomic",
    "Vintage",
    "Wireless",
    "Eco",
    "Heavy-Duty",
    "Ultra",
    "Mini",
    "Pro",
    "Modular",
    "Foldable",
];
const MATERIALS: &[&str] =
    &["Bamboo", "Steel", "Oak", "Ceramic", "Cotton", "Leather", "Glass", "Carbon", "Copper", "Wool"];
const NOUNS: &[&str] = &[
    "Lamp",
    "Kettle",
    "Backpack",
    "Speaker",
    "Chair",
    "Notebook",
    "Blender",
    "Headphones",
    "Jacket",
    "Planter",
    "Drone",
    "Mug",
    "Watch",
    "Tent",
    "Keyboard",
    "Bottle",
    "Grill",
    "Desk",
];
const COLORS: &[&str] = &["black", "white", "red", "blue", "green", "grey", "orange", "teal"];
const TAGS: &[&str] = &["new", "sale", "bestseller", "eco", "gift", "limited", "clearance", "bundle", "premium"];
const FIRST: &[&str] = &[
    "Ada", "Ben", "Chloe", "Dan", "Eva", "Finn", "Grace", "Hugo", "Iris", "Jon", "Kara", "Liam", "Maya", "Nils",
    "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Will", "Yara",
];
const LAST: &[&str] = &[
    "Smith", "Jones", "Garcia", "Müller", "Rossi", "Dubois", "Kowalski", "Nguyen", "Okafor", "Silva", "Tanaka",
    "Larsen", "Novak", "Haddad", "Byrne", "Costa",
];
const CITIES: &[(&str, &str)] = &[
    ("Springfield", "US"),
    ("Portland", "US"),
    ("Toronto", "CA"),
    ("Berlin", "DE"),
    ("Lyon", "FR"),
    ("Leeds", "GB"),
    ("Porto", "PT"),
    ("Utrecht", "NL"),
    ("Austin", "US"),
    ("Denver", "US"),
];
const STREETS: &[&str] = &["Main St", "Oak Ave", "Mill Rd", "High St", "Elm St", "Park Lane", "Harbor Way"];
const METHODS: &[&str] = &["card", "card", "card", "paypal", "bank_transfer", "gift_card"];

fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2022, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

fn pick<'a, R: Rng>(rng: &mut R, xs: &[&'a str]) -> &'a str {
    xs[rng.gen_range(0..xs.len())]
}

fn at(secs: i64) -> DateTime<Utc> {
    epoch() + chrono::Duration::seconds(secs)
}

fn slugify(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

struct Progress {
    on: bool,
    started: Instant,
}

impl Progress {
    fn step(&self, what: &str, n: u64) {
        if self.on {
            eprintln!("seed: {n:>8} {what:<14} ({:.2}s)", self.started.elapsed().as_secs_f64());
        }
    }
}

/// Starts a binary COPY; the caller writes rows with `w.as_mut().write(&[..]).await`.
macro_rules! copy_rows {
    ($tx:expr, $sql:expr, $types:expr, $rows:expr, |$r:ident| $vals:expr) => {{
        let sink = $tx.copy_in($sql).await?;
        let mut w = pin!(BinaryCopyInWriter::new(sink, $types));
        for $r in $rows {
            w.as_mut().write($vals).await?;
        }
        w.finish().await?
    }};
}

struct ProductRow {
    id: i64,
    sku: String,
    price: Decimal,
    active: bool,
}

struct OrderRow {
    id: i64,
    cust_id: i64,
    status: &'static str,
    total: Decimal,
    ship_addr_id: i64,
    placed_at: DateTime<Utc>,
    cancelled_at: Option<DateTime<Utc>>,
    upd_ts: DateTime<Utc>,
}

struct ItemRow {
    id: i64,
    order_id: i64,
    product_id: i64,
    sku: String,
    qty: i32,
    unit_price: Decimal,
    line_total: Decimal,
}

/// Fills the (migrated) database. Refuses a database that already holds shop data unless
/// `opts.force`, in which case the shop's tables are emptied first. All in one transaction.
pub async fn run(client: &mut Client, opts: &SeedOptions) -> Result<SeedReport, SeedError> {
    if opts.products > 0 && opts.categories == 0 {
        return Err(SeedError::Invalid("products need at least one category".into()));
    }
    if opts.orders > 0 && (opts.products == 0 || opts.customers == 0) {
        return Err(SeedError::Invalid("orders need at least one product and one customer".into()));
    }
    let too_big = |n: u64| n > 100_000_000;
    if [opts.products, opts.customers, opts.orders, opts.categories].into_iter().any(too_big) {
        return Err(SeedError::Invalid("counts above 100000000 are not supported".into()));
    }
    let progress = Progress { on: opts.progress, started: Instant::now() };
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut report = SeedReport::default();
    let tx = client.transaction().await?;
    // One seeder at a time; the API may be running, but seeding is an offline operation.
    tx.execute("SELECT pg_advisory_xact_lock(7419236)", &[]).await?;
    let non_empty: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM categories) OR EXISTS (SELECT 1 FROM products)
                 OR EXISTS (SELECT 1 FROM customers) OR EXISTS (SELECT 1 FROM orders)
                 OR EXISTS (SELECT 1 FROM notifications)",
            &[],
        )
        .await?
        .get(0);
    if non_empty {
        if !opts.force {
            return Err(SeedError::NotEmpty);
        }
        tx.batch_execute(&format!("TRUNCATE {TABLES} RESTART IDENTITY")).await?;
        progress.step("(truncated)", 0);
    }

    // --- categories: the first fifth are departments, the rest sub-categories of them.
    let n_cat = opts.categories as i64;
    let n_top = (n_cat / 5).max(1);
    let cats: Vec<(i64, Option<i64>, String, String, i32)> = (1..=n_cat)
        .map(|id| {
            if id <= n_top {
                let base = DEPARTMENTS[(id as usize - 1) % DEPARTMENTS.len()];
                let name = if id as usize > DEPARTMENTS.len() { format!("{base} {id}") } else { base.to_string() };
                (id, None, name.clone(), format!("{}-{id}", slugify(&name)), id as i32)
            } else {
                let parent = (id - 1) % n_top + 1;
                let dept = DEPARTMENTS[(parent as usize - 1) % DEPARTMENTS.len()];
                // The k-th child of a department gets the k-th sub-category name.
                let k = ((id - n_top - 1) / n_top) as usize;
                let sub = SUBCATEGORIES[k % SUBCATEGORIES.len()];
                let name = if k < SUBCATEGORIES.len() {
                    format!("{dept} {sub}")
                } else {
                    format!("{dept} {sub} {}", k / SUBCATEGORIES.len() + 1)
                };
                (id, Some(parent), name.clone(), format!("{}-{id}", slugify(&name)), (id % 100) as i32)
            }
        })
        .collect();
    let t0 = epoch();
    report.categories = copy_rows!(
        tx,
        "COPY categories (id, parent_id, name, slug, sort_order, ins_ts) FROM STDIN BINARY",
        &[Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::INT4, Type::TIMESTAMPTZ],
        &cats,
        |c| &[&c.0, &c.1, &c.2, &c.3, &c.4, &t0]
    );
    progress.step("categories", report.categories);
    let leaf_cats: Vec<i64> = if n_cat > n_top { (n_top + 1..=n_cat).collect() } else { (1..=n_cat).collect() };

    // --- products and their inventory rows (same ids).
    let mut products = Vec::with_capacity(opts.products as usize);
    {
        let sink = tx
            .copy_in(
                "COPY products (id, sku, name, descr, cat_id, price, currency, attributes, tags,
                               active_flg, ins_ts, upd_ts) FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::NUMERIC,
            Type::BPCHAR,
            Type::JSONB,
            Type::TEXT_ARRAY,
            Type::BOOL,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ];
        let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
        for id in 1..=opts.products as i64 {
            let (adj, mat, noun) = (pick(&mut rng, ADJECTIVES), pick(&mut rng, MATERIALS), pick(&mut rng, NOUNS));
            let name = format!("{adj} {mat} {noun}");
            let color = pick(&mut rng, COLORS);
            let descr = format!(
                "{} {} {} {} made of {}. Ships in {} days.",
                if adj.starts_with(['A', 'E', 'I', 'O', 'U']) { "An" } else { "A" },
                adj.to_lowercase(),
                color,
                noun.to_lowercase(),
                mat.to_lowercase(),
                rng.gen_range(1..10)
            );
            let cat = leaf_cats[rng.gen_range(0..leaf_cats.len())];
            let price = Decimal::new(rng.gen_range(199..=99_999), 2);
            let warranty = [0, 6, 12, 24][rng.gen_range(0..4)];
            let attributes = json!({
                "color": color,
                "material": mat.to_lowercase(),
                "weight_g": rng.gen_range(50..20_000),
                "warranty_months": warranty,
            });
            let n_tags = rng.gen_range(0..=3);
            let mut tags: Vec<String> = Vec::with_capacity(n_tags);
            for _ in 0..n_tags {
                let t = pick(&mut rng, TAGS).to_string();
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            let active = rng.gen_range(0..100) >= 3;
            let ins = at(rng.gen_range(0..365 * 86_400));
            let upd = ins + chrono::Duration::seconds(rng.gen_range(0..90 * 86_400));
            let sku = format!("SKU-{id:06}");
            let currency = "USD".to_string();
            w.as_mut()
                .write(&[&id, &sku, &name, &descr, &cat, &price, &currency, &attributes, &tags, &active, &ins, &upd])
                .await?;
            products.push(ProductRow { id, sku, price, active });
        }
        report.products = w.finish().await?;
    }
    progress.step("products", report.products);
    let stock: Vec<(i32, &str, DateTime<Utc>)> = products
        .iter()
        .map(|_| {
            let q = if rng.gen_range(0..10) == 0 { 0 } else { rng.gen_range(1..=500) };
            let wh = if rng.gen_range(0..4) == 0 { "EAST" } else { "MAIN" };
            (q, wh, at(rng.gen_range(365 * 86_400..480 * 86_400)))
        })
        .collect();
    report.inventory = copy_rows!(
        tx,
        "COPY inventory (id, product_id, sku, quantity, warehouse_code, upd_ts) FROM STDIN BINARY",
        &[Type::INT8, Type::INT8, Type::TEXT, Type::INT4, Type::TEXT, Type::TIMESTAMPTZ],
        products.iter().zip(&stock),
        |r| &[&r.0.id, &r.0.id, &r.0.sku, &r.1 .0, &r.1 .1, &r.1 .2]
    );
    progress.step("inventory", report.inventory);

    // --- customers, one default shipping address each, some with a billing address too.
    let mut ship_addr = Vec::with_capacity(opts.customers as usize);
    let mut cust_since = Vec::with_capacity(opts.customers as usize);
    {
        let sink = tx
            .copy_in(
                "COPY customers (id, email, first_name, last_name, phone, loyalty_tier, ins_ts, upd_ts)
                 FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ];
        let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
        for id in 1..=opts.customers as i64 {
            let (first, last) = (pick(&mut rng, FIRST), pick(&mut rng, LAST));
            let email = format!("{}.{}.{id}@example.com", first.to_lowercase(), slugify(last));
            let phone = (rng.gen_range(0..3) > 0).then(|| format!("+1-555-{:04}", rng.gen_range(0..10_000)));
            let tier = match rng.gen_range(0..20) {
                0 => "gold",
                1..=3 => "silver",
                _ => "standard",
            };
            let ins = at(rng.gen_range(0..365 * 86_400));
            let upd = ins + chrono::Duration::seconds(rng.gen_range(0..30 * 86_400));
            w.as_mut().write(&[&id, &email, &first, &last, &phone, &tier, &ins, &upd]).await?;
            cust_since.push(ins);
        }
        report.customers = w.finish().await?;
    }
    progress.step("customers", report.customers);
    {
        let sink = tx
            .copy_in(
                "COPY addresses (id, cust_id, kind, line1, line2, city, postal_code, country, is_default, ins_ts)
                 FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::BPCHAR,
            Type::BOOL,
            Type::TIMESTAMPTZ,
        ];
        let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
        let mut addr_id = 0i64;
        for cust in 1..=opts.customers as i64 {
            let since = cust_since[cust as usize - 1];
            let kinds: &[&str] = if rng.gen_range(0..10) < 3 { &["shipping", "billing"] } else { &["shipping"] };
            for kind in kinds {
                addr_id += 1;
                let (city, country) = CITIES[rng.gen_range(0..CITIES.len())];
                let line1 = format!("{} {}", rng.gen_range(1..2000), pick(&mut rng, STREETS));
                let line2 = (rng.gen_range(0..5) == 0).then(|| format!("Apt {}", rng.gen_range(1..300)));
                let postal = format!("{:05}", rng.gen_range(1000..99_999));
                let (city, country) = (city.to_string(), country.to_string());
                let (kind, default) = (kind.to_string(), true);
                w.as_mut()
                    .write(&[&addr_id, &cust, &kind, &line1, &line2, &city, &postal, &country, &default, &since])
                    .await?;
                if kind == "shipping" {
                    ship_addr.push(addr_id);
                }
            }
        }
        report.addresses = w.finish().await?;
    }
    progress.step("addresses", report.addresses);

    // --- orders with 1..5 distinct products each.
    let active: Vec<&ProductRow> = products.iter().filter(|p| p.active).collect();
    let catalog: Vec<&ProductRow> = if active.is_empty() { products.iter().collect() } else { active };
    let mut orders = Vec::with_capacity(opts.orders as usize);
    let mut items = Vec::with_capacity(opts.orders as usize * 3);
    for id in 1..=opts.orders as i64 {
        let cust_id = rng.gen_range(1..=opts.customers as i64);
        let placed_at = cust_since[cust_id as usize - 1] + chrono::Duration::seconds(rng.gen_range(3600..400 * 86_400));
        let status = match rng.gen_range(0..100) {
            0..=49 => "shipped",
            50..=79 => "paid",
            80..=89 => "pending_payment",
            _ => "cancelled",
        };
        let lines = rng.gen_range(1..=5usize).min(catalog.len());
        let mut chosen: Vec<usize> = Vec::with_capacity(lines);
        while chosen.len() < lines {
            let i = rng.gen_range(0..catalog.len());
            if !chosen.contains(&i) {
                chosen.push(i);
            }
        }
        chosen.sort_unstable();
        let mut total = Decimal::ZERO;
        for i in chosen {
            let p = catalog[i];
            let qty: i32 = rng.gen_range(1..=3);
            let line_total = p.price * Decimal::from(qty);
            total += line_total;
            items.push(ItemRow {
                id: items.len() as i64 + 1,
                order_id: id,
                product_id: p.id,
                sku: p.sku.clone(),
                qty,
                unit_price: p.price,
                line_total,
            });
        }
        let cancelled_at =
            (status == "cancelled").then(|| placed_at + chrono::Duration::seconds(rng.gen_range(60..86_400)));
        let upd_ts = cancelled_at.unwrap_or(placed_at + chrono::Duration::seconds(rng.gen_range(0..7 * 86_400)));
        orders.push(OrderRow {
            id,
            cust_id,
            status,
            total,
            ship_addr_id: ship_addr[cust_id as usize - 1],
            placed_at,
            cancelled_at,
            upd_ts,
        });
    }
    let currency = "USD".to_string();
    report.orders = copy_rows!(
        tx,
        "COPY orders (id, cust_id, status_cd, total_amt, currency, ship_addr_id, placed_at, cancelled_at, upd_ts)
         FROM STDIN BINARY",
        &[
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::NUMERIC,
            Type::BPCHAR,
            Type::INT8,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ],
        &orders,
        |o| &[
            &o.id,
            &o.cust_id,
            &o.status,
            &o.total,
            &currency,
            &o.ship_addr_id,
            &o.placed_at,
            &o.cancelled_at,
            &o.upd_ts
        ]
    );
    progress.step("orders", report.orders);
    report.order_items = copy_rows!(
        tx,
        "COPY order_items (id, order_id, product_id, sku, qty, unit_price, line_total) FROM STDIN BINARY",
        &[Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::INT4, Type::NUMERIC, Type::NUMERIC],
        &items,
        |i| &[&i.id, &i.order_id, &i.product_id, &i.sku, &i.qty, &i.unit_price, &i.line_total]
    );
    progress.step("order_items", report.order_items);

    // --- payments: captured for paid/shipped orders, refunded for half of the cancelled ones.
    let mut payments = Vec::new();
    for o in &orders {
        let status = match o.status {
            "paid" | "shipped" => "captured",
            "cancelled" if rng.gen_range(0..2) == 0 => "refunded",
            _ => continue,
        };
        let method = pick(&mut rng, METHODS);
        let provider_ref = format!("psp_{:016x}", rng.gen::<u64>());
        let ins = o.placed_at + chrono::Duration::seconds(rng.gen_range(1..120));
        let upd = o.cancelled_at.unwrap_or(ins);
        payments.push((payments.len() as i64 + 1, o.id, o.total, method, status, provider_ref, ins, upd));
    }
    report.payments = copy_rows!(
        tx,
        "COPY payments (id, order_id, amount, method, status_cd, provider_ref, ins_ts, upd_ts) FROM STDIN BINARY",
        &[
            Type::INT8,
            Type::INT8,
            Type::NUMERIC,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ],
        &payments,
        |p| &[&p.0, &p.1, &p.2, &p.3, &p.4, &p.5, &p.6, &p.7]
    );
    progress.step("payments", report.payments);

    // --- notifications: a welcome per customer, order_placed per order, order_cancelled.
    {
        let sink = tx
            .copy_in(
                "COPY notifications (id, cust_id, order_id, channel, template, payload, status_cd, ins_ts)
                 FROM STDIN BINARY",
            )
            .await?;
        let types =
            [Type::INT8, Type::INT8, Type::INT8, Type::TEXT, Type::TEXT, Type::JSONB, Type::TEXT, Type::TIMESTAMPTZ];
        let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
        let mut id = 0i64;
        let (email, sent) = ("email".to_string(), "sent".to_string());
        for (i, since) in cust_since.iter().enumerate() {
            id += 1;
            let cust = i as i64 + 1;
            let payload = json!({ "customer_id": cust });
            let none: Option<i64> = None;
            w.as_mut().write(&[&id, &cust, &none, &email, &"welcome", &payload, &sent, since]).await?;
        }
        for o in &orders {
            id += 1;
            let channel = if rng.gen_range(0..5) == 0 { "sms" } else { "email" };
            let payload = json!({ "order_id": o.id, "total": crate::api::format::money_string(&o.total) });
            let order = Some(o.id);
            w.as_mut()
                .write(&[&id, &o.cust_id, &order, &channel, &"order_placed", &payload, &sent, &o.placed_at])
                .await?;
            if let Some(c) = &o.cancelled_at {
                id += 1;
                let payload = json!({ "order_id": o.id });
                w.as_mut().write(&[&id, &o.cust_id, &order, &email, &"order_cancelled", &payload, &sent, c]).await?;
            }
        }
        report.notifications = w.finish().await?;
    }
    progress.step("notifications", report.notifications);

    // Move every identity sequence past the explicit ids.
    for table in [
        "categories",
        "customers",
        "addresses",
        "products",
        "inventory",
        "inventory_movements",
        "orders",
        "order_items",
        "payments",
        "notifications",
    ] {
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                               (SELECT COALESCE(max(id), 0) + 1 FROM {table}), false)"
            ),
            &[],
        )
        .await?;
    }
    tx.commit().await?;
    client.batch_execute(&format!("ANALYZE {TABLES}")).await?;
    report.elapsed = progress.started.elapsed();
    progress.step(
        "rows in total",
        report.categories
            + report.products
            + report.inventory
            + report.customers
            + report.addresses
            + report.orders
            + report.order_items
            + report.payments
            + report.notifications,
    );
    Ok(report)
}
