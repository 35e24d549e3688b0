package e2e_test

// Many shapes followed by one tests/ts/follow_shapes.mjs process, and the
// one place where a row is put into the form the TypeScript client gives
// it, so that client rows and rows read from PostgreSQL compare equal.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// shapeSpec is one shape for follow_shapes.mjs; Params is a []string
// (sent as the client's params array) or a map[string]string (its object
// form).
type shapeSpec struct {
	Name    string   `json:"name"`
	Table   string   `json:"table"`
	Where   string   `json:"where,omitempty"`
	Params  any      `json:"params,omitempty"`
	Columns []string `json:"columns,omitempty"`
	Replica string   `json:"replica,omitempty"`
	Key     string   `json:"key,omitempty"`
	// Messages: the follower also keeps the shape's change messages
	// (multiFollower.messages).
	Messages bool `json:"messages,omitempty"`
}

// clientMessage is a change message as the TypeScript client parsed it.
type clientMessage struct {
	Key       string         `json:"key"`
	Operation string         `json:"operation"`
	Value     map[string]any `json:"value"`
	OldValue  map[string]any `json:"old_value,omitempty"`
}

// positional returns the spec's params as $1, $2, ... values.
func (s shapeSpec) positional() []any {
	switch p := s.Params.(type) {
	case []string:
		out := make([]any, len(p))
		for i, v := range p {
			out[i] = v
		}
		return out
	case map[string]string:
		out := make([]any, len(p))
		for k, v := range p {
			i, err := strconv.Atoi(k)
			if err != nil || i < 1 || i > len(p) {
				panic(fmt.Sprintf("shape %s: param key %q", s.Name, k))
			}
			out[i-1] = v
		}
		return out
	}
	return nil
}

// values is the spec's definition as the query of a shape request.
func (s shapeSpec) values() url.Values {
	q := url.Values{"table": {s.Table}}
	if s.Where != "" {
		q.Set("where", s.Where)
	}
	for i, p := range s.positional() {
		q.Set(fmt.Sprintf("params[%d]", i+1), p.(string))
	}
	if len(s.Columns) > 0 {
		q.Set("columns", strings.Join(s.Columns, ","))
	}
	if s.Replica != "" {
		q.Set("replica", s.Replica)
	}
	return q
}

// multiFollower is a running follow_shapes.mjs.
type multiFollower struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	rows   map[string][]map[string]any // last rows printed per shape
	prints map[string]int
	errs   map[string]string // last error per shape
	msgs   map[string][]clientMessage
	stderr strings.Builder
	wake   chan struct{}
}

func startMultiFollower(t *testing.T, base string, specs []shapeSpec) *multiFollower {
	t.Helper()
	needClient(t)
	js, err := json.Marshal(specs)
	if err != nil {
		t.Fatal(err)
	}
	f := &multiFollower{rows: map[string][]map[string]any{}, prints: map[string]int{}, errs: map[string]string{}, msgs: map[string][]clientMessage{}, wake: make(chan struct{})}
	var out io.Reader
	f.cmd, out = startNode(t, &f.mu, &f.stderr, strings.NewReader(string(js)), "follow_shapes.mjs", base)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		for sc.Scan() {
			var line struct {
				Name  string           `json:"name"`
				Rows  []map[string]any `json:"rows"`
				Error *string          `json:"error"`
				Msg   *clientMessage   `json:"msg"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				continue
			}
			f.mu.Lock()
			if line.Msg != nil {
				f.msgs[line.Name] = append(f.msgs[line.Name], *line.Msg)
			} else if line.Error != nil {
				f.errs[line.Name] = *line.Error
			} else {
				f.rows[line.Name] = line.Rows
				f.prints[line.Name]++
			}
			close(f.wake)
			f.wake = make(chan struct{})
			f.mu.Unlock()
		}
	}()
	return f
}

// awaitRows waits until every shape named in want has printed rows equal
// to want's (as multisets of canonical rows). On timeout it fails naming
// each shape that differs, its definition, its last error and the rows
// missing and extra.
func (f *multiFollower) awaitRows(t *testing.T, specs []shapeSpec, want map[string][]map[string]any, timeout time.Duration, phase string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		f.mu.Lock()
		wake := f.wake
		var bad []string
		for _, s := range specs {
			w, ok := want[s.Name]
			if !ok {
				continue
			}
			if f.prints[s.Name] == 0 || !sameRows(f.rows[s.Name], w) {
				bad = append(bad, s.Name)
			}
		}
		f.mu.Unlock()
		if len(bad) == 0 {
			return
		}
		select {
		case <-wake:
			continue
		case <-deadline:
		}
		f.mu.Lock()
		var b strings.Builder
		shown := 0
		for _, s := range specs {
			if !slices.Contains(bad, s.Name) {
				continue
			}
			if shown++; shown > 12 {
				fmt.Fprintf(&b, "\n... and %d more shapes: %v\n", len(bad)-12, bad[12:])
				break
			}
			fmt.Fprintf(&b, "\n=== shape %s: table=%s where=%q params=%v columns=%v replica=%q (%d prints)\n",
				s.Name, s.Table, s.Where, s.Params, s.Columns, s.Replica, f.prints[s.Name])
			if e := f.errs[s.Name]; e != "" {
				fmt.Fprintf(&b, "last client error: %s\n", e)
			}
			if f.prints[s.Name] > 0 {
				missing, extra := rowDiff(f.rows[s.Name], want[s.Name])
				fmt.Fprintf(&b, "missing from the client (%d):\n%sextra in the client (%d):\n%s", len(missing), lines(missing), len(extra), lines(extra))
			}
		}
		f.mu.Unlock()
		t.Fatalf("%s: %d of %d shapes differ from PostgreSQL after %s:%s", phase, len(bad), len(want), timeout, b.String())
	}
}

func lines(ss []string) string {
	const max = 15
	var b strings.Builder
	for i, s := range ss {
		if i == max {
			fmt.Fprintf(&b, "  ... %d more\n", len(ss)-max)
			break
		}
		b.WriteString("  " + s + "\n")
	}
	return b.String()
}

// canonical returns rows as sorted JSON texts (json.Marshal sorts keys).
func canonical(rows []map[string]any) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		b, err := json.Marshal(r)
		if err != nil {
			panic(err)
		}
		out[i] = string(b)
	}
	sort.Strings(out)
	return out
}

func sameRows(got, want []map[string]any) bool {
	return slices.Equal(canonical(got), canonical(want))
}

// rowDiff returns the rows of want missing from got and the rows of got
// not in want.
func rowDiff(got, want []map[string]any) (missing, extra []string) {
	g, w := canonical(got), canonical(want)
	count := map[string]int{}
	for _, s := range g {
		count[s]++
	}
	for _, s := range w {
		if count[s] > 0 {
			count[s]--
		} else {
			missing = append(missing, s)
		}
	}
	for _, s := range g {
		if count[s] > 0 {
			count[s]--
			extra = append(extra, s)
		}
	}
	return missing, extra
}

// column is a column of a test table and its PostgreSQL type name as the
// shape schema gives it ("int4", "text", "int4[]", ...).
type column struct{ name, typ string }

// clientValue is how the TypeScript client presents a value of PostgreSQL
// type typ, once follow_shapes.mjs printed it and encoding/json decoded it.
// s is PostgreSQL's text output of the value (with the worker's display
// settings: UTC, ISO) or, for arrays, its to_json output; nil is NULL.
// This is the one place that knows the client's parsers
// (@electric-sql/client parser.ts): int2/int4 and float4/float8 become
// numbers, int8 a BigInt (printed as a string), bool a boolean, json and
// arrays are parsed; everything else stays PostgreSQL's text. Floats JSON
// cannot hold (NaN, ±Infinity) are printed as strings by follow_shapes.mjs.
func clientValue(typ string, s *string) (any, error) {
	if s == nil {
		return nil, nil
	}
	v := *s
	switch {
	case strings.HasSuffix(typ, "[]"):
		switch typ {
		case "int2[]", "int4[]", "float8[]", "text[]", "varchar[]":
		default:
			return nil, fmt.Errorf("clientValue: no rule for %s", typ)
		}
		var a any
		if err := json.Unmarshal([]byte(v), &a); err != nil {
			return nil, fmt.Errorf("%s %q: %w", typ, v, err)
		}
		return a, nil
	case typ == "int2" || typ == "int4":
		n, err := strconv.ParseInt(v, 10, 32)
		return float64(n), err
	case typ == "float4" || typ == "float8":
		switch v {
		case "NaN", "Infinity", "-Infinity":
			return v, nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if f == 0 {
			f = 0 // JSON.stringify(-0) is "0"
		}
		return f, err
	case typ == "bool":
		return v == "t" || v == "true", nil
	case typ == "json" || typ == "jsonb":
		var a any
		err := json.Unmarshal([]byte(v), &a)
		return a, err
	}
	// int8 (BigInt printed as a string), numeric, text, varchar, uuid,
	// date, timestamptz ...: PostgreSQL's text.
	return v, nil
}

// selectExpr is the SQL that reads column c as clientValue expects it.
func selectExpr(c column) string {
	q := pgx.Identifier{c.name}.Sanitize()
	if strings.HasSuffix(c.typ, "[]") {
		return "to_json(" + q + ")::text"
	}
	return q + "::text"
}

// pgRows evaluates a shape in PostgreSQL itself: SELECT its columns FROM
// its table WHERE its where clause, with its params bound as untyped
// literals (a literal of type unknown takes its type from where it is
// used, as a shape's params do). conn must use the worker's display
// settings (see displayConn).
func pgRows(ctx context.Context, conn *pgx.Conn, s shapeSpec, cols []column) ([]map[string]any, error) {
	sel := cols
	if len(s.Columns) > 0 {
		sel = nil
		for _, name := range s.Columns {
			i := slices.IndexFunc(cols, func(c column) bool { return c.name == name })
			if i < 0 {
				return nil, fmt.Errorf("shape %s: no column %q", s.Name, name)
			}
			sel = append(sel, cols[i])
		}
	}
	exprs := make([]string, len(sel))
	for i, c := range sel {
		exprs[i] = selectExpr(c)
	}
	q := "SELECT " + strings.Join(exprs, ", ") + " FROM " + pgx.Identifier{s.Table}.Sanitize()
	if s.Where != "" {
		q += " WHERE " + s.Where
	}
	args := append([]any{pgx.QueryExecModeSimpleProtocol}, s.positional()...)
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("shape %s: %s: %w", s.Name, q, err)
	}
	defer rows.Close()
	var out []map[string]any
	for rows.Next() {
		vals := make([]*string, len(sel))
		ptrs := make([]any, len(sel))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		r := map[string]any{}
		for i, c := range sel {
			v, err := clientValue(c.typ, vals[i])
			if err != nil {
				return nil, fmt.Errorf("shape %s column %s: %w", s.Name, c.name, err)
			}
			r[c.name] = v
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// displayConn connects with the display settings the worker uses for
// every value it sends (worker/internal/txn/settings.go, OutputSettings).
func displayConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"TimeZone": "UTC", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "extra_float_digits": "1", "bytea_output": "hex"} {
		cfg.RuntimeParams[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgShapes evaluates every spec in PostgreSQL, in one REPEATABLE READ
// transaction so all see the same state.
func pgShapes(t *testing.T, conn *pgx.Conn, specs []shapeSpec, cols map[string][]column) map[string][]map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	out := map[string][]map[string]any{}
	for _, s := range specs {
		rows, err := pgRows(ctx, tx.Conn(), s, cols[s.Table])
		if err != nil {
			t.Fatal(err)
		}
		out[s.Name] = rows
	}
	return out
}
