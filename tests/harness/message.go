package harness

import (
	"encoding/json"
	"fmt"
)

// Message is one message of a shape log as the API sends it: a change
// (headers.operation insert, update or delete, with its row's key and
// values) or a control message (headers.control up-to-date or
// must-refetch). Values are PostgreSQL's text of each column, or nil.
type Message struct {
	Key      string         `json:"key"`
	Value    map[string]any `json:"value"`
	OldValue map[string]any `json:"old_value"`
	Headers  map[string]any `json:"headers"`
}

// Messages decodes a body: a JSON array of messages.
func Messages(body []byte) ([]Message, error) {
	var msgs []Message
	if err := json.Unmarshal(body, &msgs); err != nil {
		return nil, fmt.Errorf("body is not a JSON array of messages (%w): %s", err, truncate(string(body), 500))
	}
	return msgs, nil
}

// Op is a change's operation ("insert", "update", "delete"); "" for a
// control message.
func (m Message) Op() string { s, _ := m.Headers["operation"].(string); return s }

// Control is a control message's kind ("up-to-date", "must-refetch"); ""
// for a change.
func (m Message) Control() string { s, _ := m.Headers["control"].(string); return s }

// IsUpToDate reports whether m is an up-to-date control message.
func (m Message) IsUpToDate() bool { return m.Control() == "up-to-date" }

// String is the message's key, operation and values as one JSON line.
func (m Message) String() string {
	b, _ := json.Marshal(map[string]any{"key": m.Key, "op": m.Headers["operation"], "value": m.Value, "old_value": m.OldValue})
	return string(b)
}

// Rows are a shape's rows by key, as a client holds them after applying
// the shape's messages.
type Rows map[string]map[string]any

// Apply applies a change to the rows: an insert sets its row, an update
// merges its values into the row, a delete removes the row. It reports
// whether m was a change; control messages change nothing.
func (r Rows) Apply(m Message) bool {
	switch m.Op() {
	case "insert":
		r[m.Key] = m.Value
	case "update":
		row := r[m.Key]
		if row == nil {
			row = map[string]any{}
			r[m.Key] = row
		}
		for k, v := range m.Value {
			row[k] = v
		}
	case "delete":
		delete(r, m.Key)
	default:
		return false
	}
	return true
}
