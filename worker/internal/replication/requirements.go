package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// MinServerVersion is the oldest PostgreSQL major version Baton supports.
const MinServerVersion = 15

// RequirementError names one requirement of PostgreSQL that is not met and
// the change that meets it, in one line. Setting is what to change
// (wal_level, REPLICATION, max_replication_slots, max_wal_senders,
// CREATE, server_version).
type RequirementError struct {
	Setting string
	Problem string
}

func (e *RequirementError) Error() string { return e.Problem }

// IsRequirement reports whether err is (or wraps) a *RequirementError.
func IsRequirement(err error) bool {
	var re *RequirementError
	return errors.As(err, &re)
}

// Requirements is what CheckRequirements found, for a summary line.
type Requirements struct {
	ServerVersion string
	Role          string
	Superuser     bool
	Slots         int // max_replication_slots
	SlotsUsed     int
	SlotExists    bool // the stream's slot exists (it needs no free one)
	Senders       int  // max_wal_senders
	SendersUsed   int
}

// Summary is one line saying what was checked.
func (r Requirements) Summary() string {
	role := "REPLICATION"
	if r.Superuser {
		role = "superuser"
	}
	return fmt.Sprintf("PostgreSQL %s: wal_level logical, role %s (%s), replication slots %d of %d in use, WAL senders %d of %d in use",
		r.ServerVersion, r.Role, role, r.SlotsUsed, r.Slots, r.SendersUsed, r.Senders)
}

// CheckRequirements checks, on conn, what the worker needs of PostgreSQL
// to replicate the stream with slot and publication pub: version 15 or
// newer, wal_level = logical, a role with REPLICATION (or superuser), the
// right to create the publication when it is missing, a free replication
// slot unless slot exists, and a free WAL sender. An unmet requirement is
// a *RequirementError; a failed query is another error.
func CheckRequirements(ctx context.Context, conn *pgx.Conn, slot, pub string) (Requirements, error) {
	var r Requirements
	var versionNum int
	var walLevel, db string
	var replication, rdsReplication, canCreate, pubExists bool
	err := conn.QueryRow(ctx, `
SELECT current_setting('server_version'), current_setting('server_version_num')::int,
       current_setting('wal_level'), current_user, current_database(),
       r.rolsuper, r.rolreplication,
       EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication' AND pg_has_role(r.oid, g.oid, 'MEMBER')),
       has_database_privilege(current_database(), 'CREATE'),
       EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2),
       current_setting('max_replication_slots')::int,
       (SELECT count(*) FROM pg_replication_slots)::int,
       EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
       current_setting('max_wal_senders')::int,
       (SELECT count(*) FROM pg_stat_get_wal_senders())::int
FROM pg_roles r WHERE r.rolname = current_user`, slot, pub).Scan(
		&r.ServerVersion, &versionNum, &walLevel, &r.Role, &db,
		&r.Superuser, &replication, &rdsReplication, &canCreate, &pubExists,
		&r.Slots, &r.SlotsUsed, &r.SlotExists, &r.Senders, &r.SendersUsed)
	if err != nil {
		return r, fmt.Errorf("check PostgreSQL's settings: %w", err)
	}
	role := quoteIdent(r.Role)
	switch {
	case versionNum/10000 < MinServerVersion:
		return r, &RequirementError{Setting: "server_version",
			Problem: fmt.Sprintf("PostgreSQL %s is too old: Baton needs %d or newer", r.ServerVersion, MinServerVersion)}
	case walLevel != "logical":
		return r, &RequirementError{Setting: "wal_level",
			Problem: fmt.Sprintf("wal_level is %s: set wal_level = logical in postgresql.conf and restart PostgreSQL", walLevel)}
	case !r.Superuser && !replication && !rdsReplication:
		return r, &RequirementError{Setting: "REPLICATION",
			Problem: fmt.Sprintf("role %s may not replicate: ALTER ROLE %s REPLICATION (as a superuser)", r.Role, role)}
	case !pubExists && !r.Superuser && !canCreate:
		return r, &RequirementError{Setting: "CREATE",
			Problem: fmt.Sprintf("role %s may not create the publication %s: GRANT CREATE ON DATABASE %s TO %s", r.Role, pub, quoteIdent(db), role)}
	}
	if err := checkBatonSchema(ctx, conn, r.Role); err != nil {
		return r, err
	}
	switch {
	case !r.SlotExists && r.SlotsUsed >= r.Slots:
		return r, &RequirementError{Setting: "max_replication_slots",
			Problem: fmt.Sprintf("no free replication slot for %s: max_replication_slots = %d and %d are in use; raise max_replication_slots in postgresql.conf and restart PostgreSQL, or drop an unused slot", slot, r.Slots, r.SlotsUsed)}
	case r.SendersUsed >= r.Senders:
		return r, &RequirementError{Setting: "max_wal_senders",
			Problem: fmt.Sprintf("no free WAL sender: max_wal_senders = %d and %d are in use; raise max_wal_senders in postgresql.conf and restart PostgreSQL", r.Senders, r.SendersUsed)}
	}
	return r, nil
}

// checkBatonSchema checks, when the broker has created the schema baton,
// that the role may use it as the worker does: record publication changes
// in baton.publication_changes (creating it when missing) and lock its
// stream's row of baton.streams (FOR SHARE needs UPDATE).
func checkBatonSchema(ctx context.Context, conn *pgx.Conn, role string) error {
	var exists, usage bool
	if err := conn.QueryRow(ctx, `SELECT to_regnamespace('baton') IS NOT NULL,
       CASE WHEN to_regnamespace('baton') IS NULL THEN false ELSE has_schema_privilege('baton', 'USAGE') END`).Scan(&exists, &usage); err != nil {
		return fmt.Errorf("check the schema baton: %w", err)
	}
	if !exists {
		return nil
	}
	ok := usage
	if usage {
		var changes, streams bool
		if err := conn.QueryRow(ctx, `SELECT
       CASE WHEN to_regclass('baton.publication_changes') IS NULL THEN has_schema_privilege('baton', 'CREATE')
            ELSE has_table_privilege('baton.publication_changes', 'SELECT, INSERT') END,
       CASE WHEN to_regclass('baton.streams') IS NULL THEN true
            ELSE has_table_privilege('baton.streams', 'SELECT') AND has_table_privilege('baton.streams', 'UPDATE') END`).Scan(&changes, &streams); err != nil {
			return fmt.Errorf("check the schema baton: %w", err)
		}
		ok = changes && streams
	}
	if ok {
		return nil
	}
	r := quoteIdent(role)
	return &RequirementError{Setting: "baton schema",
		Problem: fmt.Sprintf("role %s may not use the schema baton as the worker does: give the worker the broker's role, or GRANT USAGE, CREATE ON SCHEMA baton TO %s; GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA baton TO %s", role, r, r)}
}

// CheckDatabase connects to url and runs CheckRequirements, bounded by
// timeout.
func CheckDatabase(ctx context.Context, url, slot, pub string, timeout time.Duration) (Requirements, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := ConnectAdmin(ctx, url, "baton-worker-check")
	if err != nil {
		return Requirements{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return CheckRequirements(ctx, conn, slot, pub)
}
