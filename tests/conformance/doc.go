// Package conformance is Baton's conformance kit: it checks that a worker,
// written in any language, keeps the lease contract of
// proto/baton/v1/lease.proto, from what PostgreSQL and the lease stream
// show, never from what the worker says about itself alone.
//
// A run (Run) starts a throwaway PostgreSQL (tests/pgtest), two real
// brokers and, in front of each, a recording gRPC proxy (proxy.go): the
// worker under test, started by a shell command with the environment
// contract (pod.Env), talks to the proxy as to its broker, and the kit
// sees every lease message with the instant it passed. An observer
// (observe.go) samples pg_stat_activity's walsenders and the slot's
// active_pid and confirmed_flush_lsn every 20 ms; at the instant a
// Released reaches a proxy, before it is forwarded, PostgreSQL is read
// again. The scenario (scenario.go) drives the two pods through a first
// grant, a standby, a frozen broker, a broker's shutdown, a lost lock and
// a SIGKILL, and judges each obligation against those two timelines.
//
// Why the judgements hold:
//
//   - A walsender is a replication connection, whatever it reads; the kit
//     attributes it to a grant only by the epoch in its application_name,
//     so a worker that names it otherwise fails that check and cannot be
//     credited with anyone's grant.
//   - Time limits are measured from when the proxy forwarded a message,
//     which is before the worker received it: the worker's own deadline
//     (TTL from receipt) is later, hence the kit's tolerance (1 s) on
//     top of the TTL. The order checks (gone before the successor's
//     grant; gone when Released arrives) need no tolerance: the proxy
//     holds the Released while it reads PostgreSQL.
//   - What a worker delivered is known to the kit by the durable position
//     it reports (Progress.durable_lsn, Released.durable_lsn): the claim
//     that everything the stream carried up to it is in its storage. The
//     slot's confirmed position must never pass the claim of its consumer
//     (1 s of grace for the report that follows an acknowledgement); a
//     successor starts where the slot was left, so it starts at or below
//     what its predecessor made durable; a worker stores before it
//     acknowledges, so after a SIGKILL its first report is at least what it
//     reported and what the slot confirmed under its last grant. The kit
//     does not see the rows: a worker that claims more than it stored is
//     caught only when the claim does not survive a SIGKILL.
package conformance
