package shapes

import (
	"encoding/json"
	"testing"
)

// A subset snapshot's row is the initial snapshot's insert message with
// snapshot_mark in its headers.
func TestSubsetEncoder(t *testing.T) {
	d := Definition{Schema: "public", Table: "items"}
	cols := []Column{{Name: "id"}, {Name: "note"}}
	enc := subsetEncoder(d, cols, []string{"id"}, 1234)
	b := enc.appendRow(nil, [][]byte{[]byte("7"), nil})
	var m struct {
		Key     string
		Value   map[string]*string
		Headers map[string]any
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if m.Key != `"public"."items"/"7"` || *m.Value["id"] != "7" || m.Value["note"] != nil ||
		m.Headers["operation"] != "insert" || m.Headers["snapshot_mark"] != float64(1234) {
		t.Fatalf("subset row %s", b)
	}
}
