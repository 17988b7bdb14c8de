//! Connecting to PostgreSQL: plain sessions (apply, checkpoints, snapshot copies, admin SQL) and
//! the connection string of a replication session. Used by `source` and `apply` alike.

use tokio_postgres::Client;

/// Connect a plain tokio-postgres client, driving the connection on a task.
pub async fn connect(conn: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}

/// Add `replication=database` to a libpq connection string or URL.
pub fn replication_conninfo(conn: &str) -> String {
    let t = conn.trim();
    if t.starts_with("postgres://") || t.starts_with("postgresql://") {
        if t.contains('?') {
            format!("{t}&replication=database")
        } else {
            format!("{t}?replication=database")
        }
    } else {
        format!("{t} replication=database")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_conninfo_forms() {
        assert_eq!(replication_conninfo("host=a"), "host=a replication=database");
        assert_eq!(replication_conninfo("postgres://u@h/db"), "postgres://u@h/db?replication=database");
        assert_eq!(replication_conninfo("postgres://u@h/db?x=1"), "postgres://u@h/db?x=1&replication=database");
    }
}
