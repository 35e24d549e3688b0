package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pglogrepl"
)

// table is the kit's table, which the fixture publishes and delivers.
const table = "public.baton_conformance"

// line is one delivered insert, in the kit's delivery format.
type line struct {
	LSN    string            `json:"lsn"` // the transaction's commit LSN
	Schema string            `json:"schema"`
	Table  string            `json:"table"`
	Op     string            `json:"op"`
	New    map[string]string `json:"new"`
}

// delivery decodes pgoutput and appends the kit table's inserts to the
// delivery file.
type delivery struct {
	w         *worker
	relations map[uint32]*pglogrepl.RelationMessage
	// last is the highest commit LSN in the file when this run started:
	// transactions at or below it were delivered by a predecessor.
	last    uint64
	inTxn   bool
	txn     []line
	commits int
	pending []line
	// ready is the end of the last transaction received; safe the
	// position everything before which is in the file (or carried
	// nothing to deliver).
	ready, safe uint64
}

func (w *worker) newDelivery() (*delivery, error) {
	d := &delivery{w: w, relations: map[uint32]*pglogrepl.RelationMessage{}}
	if w.deliveryFile == "" {
		return d, nil
	}
	f, err := os.Open(w.deliveryFile)
	if errors.Is(err, os.ErrNotExist) {
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("delivery file: %w", err)
		}
		lsn, err := pglogrepl.ParseLSN(l.LSN)
		if err != nil {
			return nil, fmt.Errorf("delivery file: %w", err)
		}
		d.last = max(d.last, uint64(lsn))
	}
	if w.bad == "dupe" {
		d.last = 0
	}
	return d, sc.Err()
}

// keepalive: the server's WAL end may be acknowledged when no transaction
// is open and everything before it is in the file.
func (d *delivery) keepalive(end uint64) {
	if !d.inTxn && len(d.pending) == 0 {
		d.safe = max(d.safe, d.ready, end)
	}
}

func (d *delivery) handle(data []byte) error {
	m, err := pglogrepl.Parse(data)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		d.relations[m.RelationID] = m
	case *pglogrepl.BeginMessage:
		d.inTxn, d.txn = true, nil
	case *pglogrepl.InsertMessage:
		rel := d.relations[m.RelationID]
		if rel == nil || rel.Namespace+"."+rel.RelationName != table || m.Tuple == nil {
			return nil
		}
		row := map[string]string{}
		for i, c := range m.Tuple.Columns {
			if i < len(rel.Columns) && c.DataType == pglogrepl.TupleDataTypeText {
				row[rel.Columns[i].Name] = string(c.Data)
			}
		}
		d.txn = append(d.txn, line{Schema: rel.Namespace, Table: rel.RelationName, Op: "insert", New: row})
	case *pglogrepl.CommitMessage:
		d.inTxn = false
		d.commits++
		skip := uint64(m.CommitLSN) <= d.last || (d.w.bad == "lossy" && d.commits%3 == 0)
		if !skip {
			for _, l := range d.txn {
				l.LSN = m.CommitLSN.String()
				d.pending = append(d.pending, l)
			}
		}
		d.txn = nil
		d.ready = max(d.ready, uint64(m.TransactionEndLSN))
	}
	return nil
}

// flush appends the pending lines with one write and fsyncs the file.
func (d *delivery) flush() error {
	if len(d.pending) > 0 && d.w.deliveryFile != "" {
		var b []byte
		for _, l := range d.pending {
			j, err := json.Marshal(l)
			if err != nil {
				return err
			}
			b = append(append(b, j...), '\n')
		}
		f, err := os.OpenFile(d.w.deliveryFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		_, err = f.Write(b)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	d.pending = nil
	d.safe = max(d.safe, d.ready)
	return nil
}
