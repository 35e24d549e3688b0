package main

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// The benchmarks decode only the id of each message, on the clock between
// a client's requests: a whole message (harness.Message) takes about twice
// as long to decode.

// message is a message of a shape response, with only what the benchmarks
// look at.
type message struct {
	Value struct {
		ID *string `json:"id"`
		N  *string `json:"n"`
	} `json:"value"`
	Headers struct {
		Operation string `json:"operation"`
		Control   string `json:"control"`
	} `json:"headers"`
}

// insertedIDs returns the ids of the insert messages of a body.
func insertedIDs(body []byte) ([]int64, error) {
	var msgs []message
	if err := json.Unmarshal(body, &msgs); err != nil {
		return nil, fmt.Errorf("body is not a JSON array of messages: %w (%s)", err, truncate(string(body), 200))
	}
	var ids []int64
	for _, m := range msgs {
		if m.Headers.Operation != "insert" {
			continue
		}
		if m.Value.ID == nil {
			return nil, fmt.Errorf("insert message without an id value (%s)", truncate(string(body), 200))
		}
		id, err := strconv.ParseInt(*m.Value.ID, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("insert message with id %q", *m.Value.ID)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// changedRow is a change message's row: its id, and its column n (-1
// when the message does not carry it).
type changedRow struct {
	id, n int64
}

// changedRows returns the rows of a response's change messages.
func changedRows(body []byte) ([]changedRow, error) {
	var msgs []message
	if err := json.Unmarshal(body, &msgs); err != nil {
		return nil, fmt.Errorf("body is not a JSON array of messages: %w (%s)", err, truncate(string(body), 200))
	}
	var rows []changedRow
	for _, m := range msgs {
		if m.Headers.Operation == "" {
			continue
		}
		if m.Value.ID == nil {
			return nil, fmt.Errorf("%s message without an id value (%s)", m.Headers.Operation, truncate(string(body), 200))
		}
		id, err := strconv.ParseInt(*m.Value.ID, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("message with id %q", *m.Value.ID)
		}
		r := changedRow{id: id, n: -1}
		if m.Value.N != nil {
			if r.n, err = strconv.ParseInt(*m.Value.N, 10, 64); err != nil {
				return nil, fmt.Errorf("message with n %q", *m.Value.N)
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
