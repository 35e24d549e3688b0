// Package status reads what PostgreSQL says about a Baton stream, for
// `broker status` and `worker status`: who holds the stream's advisory
// lock and since when, with which epoch, when it last heartbeat and what
// its worker reported durable (the state table, baton.streams); the
// stream's slot (pg_replication_slots: active, wal_status, the WAL it
// retains, how far behind the server's WAL its confirmed position is) and
// the walsender consuming it (pg_stat_replication); the sessions waiting
// for the lock (pg_locks), and why they wait; and every session of the
// stream (pg_stat_activity, by application_name). It needs nothing but a
// connection to the database, from any machine: no broker or worker has
// to run.
//
// Read writes nothing and takes no lock. It lives in a module of its own
// so that both binaries print the same report.
package status
