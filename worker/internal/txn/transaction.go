// Package txn is the replicated transaction as the worker stores it: the
// committed changes the replication stream decodes and appends to the stream
// log, and the shape router reads back from it. It holds the type, its JSON
// codec (Encode is byte for byte json.Marshal, Decode is json.Unmarshal), a
// Cache that hands freshly appended transactions to the router without a
// decode, the session settings that fix how PostgreSQL prints the values,
// and the LSN's text form.
//
// replication writes transactions and shapes reads them; the two meet here
// and at storage, and neither imports the other.
package txn

import (
	"encoding/json"
	"fmt"
	"time"
)

// Change is one row change of a committed transaction, as stored. Values
// are PostgreSQL text-format strings; nil is NULL. Unchanged TOAST values
// (not sent by the server) are listed in Unchanged.
type Change struct {
	Op      string    `json:"op"` // insert, update, delete, truncate, message
	Schema  string    `json:"schema,omitempty"`
	Table   string    `json:"table,omitempty"`
	Columns []string  `json:"columns,omitempty"`
	Key     []string  `json:"key,omitempty"` // replica identity columns
	New     []*string `json:"new,omitempty"`
	Old     []*string `json:"old,omitempty"` // old key or old row, when sent
	// OldFull: Old is the whole old row (REPLICA IDENTITY FULL), not the
	// old key (whose other columns are NULL).
	OldFull   bool     `json:"old_full,omitempty"`
	Unchanged []string `json:"unchanged,omitempty"`
	// Truncate: the tables truncated (schema-qualified) and options.
	Tables  []string `json:"tables,omitempty"`
	Cascade bool     `json:"cascade,omitempty"`
	// Logical decoding message.
	Prefix  string `json:"prefix,omitempty"`
	Content []byte `json:"content,omitempty"`
}

// Transaction is the payload stored for one committed transaction.
type Transaction struct {
	XID        uint32    `json:"xid"`
	CommitLSN  uint64    `json:"commit_lsn"`
	EndLSN     uint64    `json:"end_lsn"`
	CommitTime time.Time `json:"commit_time"`
	Origin     string    `json:"origin,omitempty"`
	Changes    []Change  `json:"changes"`
}

// Decode parses a stored payload.
func Decode(b []byte) (*Transaction, error) {
	var t Transaction
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("decode transaction: %w", err)
	}
	return &t, nil
}
