//! End-to-end tests of the monolith over real HTTP against a real, ephemeral PostgreSQL.
//! One cluster per test binary, one database per test, so tests run in parallel.

mod common;

mod binary;
mod catalog;
mod concurrency;
mod customers;
mod health;
mod inventory;
mod migrations;
mod orders;
mod payments;
mod seeding;
mod tls;
