package shapes

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Column describes one column of a shape's table, for the electric-schema
// header.
type Column struct {
	Name    string `json:"name"`
	Type    string `json:"type"` // element type name for arrays
	Dims    int    `json:"dims,omitempty"`
	NotNull bool   `json:"not_null,omitempty"`
	PKIndex *int   `json:"pk_index,omitempty"`
	// Typmod is pg_attribute.atttypmod (-1: none): varchar length, numeric
	// precision and scale, time precision.
	Typmod int32 `json:"typmod,omitempty"`
	// TypeOID and SQLType (format_type) are the column's exact type.
	TypeOID uint32 `json:"type_oid,omitempty"`
	SQLType string `json:"sql_type,omitempty"`
	// Generated columns are not in logical replication's rows.
	Generated bool `json:"generated,omitempty"`
	// PlainText: the column's ::text is its type's output function, as
	// COPY writes it (no cast to text but by I/O conversion, not a
	// domain), so the snapshot reads it without the cast. A function cast
	// (boolean, bpchar, inet...) or a binary one (xml, whose output
	// function drops the declaration that ::text keeps) keeps the cast.
	// False for shapes made before.
	PlainText bool `json:"plain_text,omitempty"`
}

// modifiers are the type modifiers Electric's electric-schema header
// carries, decoded from the column's typmod.
func (c Column) modifiers() (maxLength, precision, scale *int) {
	if c.Typmod < 0 || (c.Typmod == 0 && c.Type != "numeric") {
		return nil, nil, nil
	}
	v := func(n int) *int { return &n }
	switch c.Type {
	case "varchar", "bpchar", "bit", "varbit":
		if c.Typmod >= 4 && c.Type != "bit" && c.Type != "varbit" {
			return v(int(c.Typmod) - 4), nil, nil
		}
		return v(int(c.Typmod)), nil, nil
	case "numeric":
		if c.Typmod < 4 {
			return nil, nil, nil
		}
		t := int(c.Typmod) - 4
		return nil, v(t >> 16 & 0xffff), v(int(int16(t & 0xffff)))
	case "time", "timetz", "timestamp", "timestamptz":
		return nil, v(int(c.Typmod)), nil
	case "interval":
		if p := int(c.Typmod) & 0xffff; p != 0xffff {
			return nil, v(p), nil
		}
	}
	return nil, nil, nil
}

// Meta is a shape's metadata, kept in its log (storage.Log.SetMeta).
type Meta struct {
	Handle     string     `json:"handle"`
	Definition Definition `json:"definition"`
	Columns    []Column   `json:"columns"`
	PK         []string   `json:"pk"`
	// TableColumns are every column of the table when the shape was made,
	// in table order, and TableSig its identity and column types (see
	// signature): a change to either invalidates the shape.
	TableColumns []Column `json:"table_columns,omitempty"`
	TableSig     string   `json:"table_sig,omitempty"`
	// FullIdentity: the shape needs REPLICA IDENTITY FULL on its table
	// (its changes are told from whole old rows).
	FullIdentity bool `json:"full_identity,omitempty"`
	// The snapshot's visibility (pg_current_snapshot(), 64-bit xids).
	Xmin uint64   `json:"xmin"`
	Xmax uint64   `json:"xmax"`
	Xip  []uint64 `json:"xip"`
	// SnapshotLSN is pg_current_wal_insert_lsn() read right after the
	// snapshot was taken (0 for shapes made before it was recorded).
	SnapshotLSN uint64 `json:"snapshot_lsn,omitempty"`
	// SnapshotPartial: the snapshot was still being written when this
	// metadata was; only its creation, once the snapshot-end message is
	// durable, writes it false. A registry opening a shape that has it
	// drops the shape (see doc.go, "Streaming snapshots").
	SnapshotPartial bool `json:"snapshot_partial,omitempty"`
	// SnapshotEnd: the snapshot's last record ends with Electric's
	// snapshot-end message and ends a chunk (chunker.endSnapshot), even
	// before any change follows it; false for shapes made before.
	SnapshotEnd bool `json:"snapshot_end,omitempty"`
	// RoutedSeq (stored as applied_seq) is the stream log seq up to which
	// every transaction has been routed to this shape (possibly persisted
	// late: routing again is idempotent).
	RoutedSeq uint64 `json:"applied_seq"`
	// SeenLSN: every transaction with a commit LSN at or below it is in the
	// snapshot or routed into the log. It is what responses advertise as
	// global_last_seen_lsn (a client may resume from "<SeenLSN>_0"), so
	// only persisted values are advertised.
	SeenLSN uint64 `json:"seen_lsn"`
	// StartLSN is SeenLSN when the shape was made: every transaction of
	// its log commits after it, so no offset of its log is a transaction's
	// below it (0 for shapes made before it was recorded).
	StartLSN  uint64    `json:"start_lsn,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// ChunkBytes is the chunk threshold of the shape's log, fixed when
	// the shape is made (Options.ChunkBytes then), so that its chunk
	// boundaries do not move with the setting (see "Chunks").
	ChunkBytes int64 `json:"chunk_bytes,omitempty"`
	// LastUsedAt is when a request last used the shape, as last persisted
	// (coarsely: see expire.go); zero when unknown.
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
}

// madeFrom reports whether t is still the table the shape was made from:
// the same table, column names and types, and a replica identity that
// still gives whole old rows when the shape needs them.
func (m *Meta) madeFrom(t *table) bool {
	if m.TableSig == "" {
		return true // made before signatures were kept
	}
	return t.sig == m.TableSig && (!m.FullIdentity || t.replident == "f")
}

// schemaHeader is the electric-schema header value.
func (m *Meta) schemaHeader() string {
	type col struct {
		Type      string `json:"type"`
		Dims      int    `json:"dims,omitempty"`
		MaxLength *int   `json:"max_length,omitempty"`
		Precision *int   `json:"precision,omitempty"`
		Scale     *int   `json:"scale,omitempty"`
		NotNull   bool   `json:"not_null,omitempty"`
		PKIndex   *int   `json:"pk_index,omitempty"`
	}
	out := make(map[string]col, len(m.Columns))
	for _, c := range m.Columns {
		ml, p, sc := c.modifiers()
		out[c.Name] = col{Type: c.Type, Dims: c.Dims, MaxLength: ml, Precision: p, Scale: sc, NotNull: c.NotNull, PKIndex: c.PKIndex}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// visible reports whether transaction xid (32-bit, from pgoutput), which
// committed at commitLSN, is visible in the shape's snapshot: its changes
// are already in it. A commit record written after the snapshot was taken
// (at or past SnapshotLSN) cannot be; only the transactions before that
// are told apart by xid, so that 32-bit xids never wrap around for a
// shape that lives long.
func (m *Meta) visible(xid uint32, commitLSN uint64) bool {
	if m.SnapshotLSN != 0 && commitLSN >= m.SnapshotLSN {
		return false
	}
	x := widen(xid, m.Xmax)
	if x < m.Xmin {
		return true
	}
	if x >= m.Xmax {
		return false
	}
	for _, p := range m.Xip {
		if p == x {
			return false
		}
	}
	return true
}

// widen maps a 32-bit xid to the 64-bit xid nearest to ref (xids in flight
// are within 2^31 of each other).
func widen(xid uint32, ref uint64) uint64 {
	diff := func(a uint64) uint64 {
		if a > ref {
			return a - ref
		}
		return ref - a
	}
	hi := ref >> 32
	best := hi<<32 | uint64(xid)
	for _, h := range []uint64{hi - 1, hi + 1} {
		if h == ^uint64(0) || h >= 1<<32 {
			continue // out of range
		}
		if c := h<<32 | uint64(xid); diff(c) < diff(best) {
			best = c
		}
	}
	return best
}

// encodeMeta is the metadata a shape log keeps (storage.Log.SetMeta).
func encodeMeta(m *Meta) ([]byte, error) { return json.Marshal(m) }

func decodeMeta(b []byte) (*Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("shape metadata: %w", err)
	}
	return &m, nil
}

// legacyMetaFile held a shape's metadata in the layout before it moved
// into the shape log (where it is fenced): <handle>/meta.json, replaced
// atomically by every write.
const legacyMetaFile = "meta.json"

// readLegacyMeta reads the meta.json of a shape of the layout before
// fenced metadata.
func readLegacyMeta(dir string) (*Meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, legacyMetaFile))
	if err != nil {
		return nil, err
	}
	m, err := decodeMeta(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, legacyMetaFile), err)
	}
	return m, nil
}

// hasLegacyMeta reports whether dir, a shape folder of the layout before
// fenced metadata, holds a meta.json: whether its creation finished.
func hasLegacyMeta(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, legacyMetaFile))
	return err == nil
}
