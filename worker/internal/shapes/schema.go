package shapes

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// schemaCheckEvery is how often the tables of the shapes are compared with
// what the shapes were made from. A change that the stream shows first (a
// row with other columns, a TRUNCATE) is acted on at once by the router;
// this catches the rest: a table dropped or renamed, a column's type
// changed, a column added while the table sees no writes.
const schemaCheckEvery = 5 * time.Second

// schemaLoop checks the tables of the shapes every schemaCheckEvery until
// ctx ends; a failed check is logged, and made again at the next round.
func (r *Registry) schemaLoop(ctx context.Context) error {
	w := &schemaWatch{r: r}
	defer w.close()
	return every(ctx, schemaCheckEvery, func() error {
		if err := w.check(ctx); err != nil && ctx.Err() == nil {
			r.o.Log.Warn("tables of the shapes not checked", "err", err)
		}
		return nil
	})
}

// schemaWatch holds the connection of the schema checks.
type schemaWatch struct {
	r    *Registry
	conn *pgx.Conn
}

func (w *schemaWatch) close() {
	if w.conn != nil {
		w.conn.Close(context.Background())
		w.conn = nil
	}
}

// check removes the shapes whose table is gone or no longer has the
// columns and types the shape was made from: their clients get 409 and
// refetch, and the new shape (or a 400) follows the table as it is now.
func (w *schemaWatch) check(ctx context.Context) error {
	shapes, _ := w.r.list()
	if len(shapes) == 0 {
		return nil
	}
	if w.conn == nil || w.conn.IsClosed() {
		c, err := w.r.dial(ctx, "shapes")
		if err != nil {
			return err
		}
		w.conn = c
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tables := map[string]*table{} // the tables as they are now (nil when gone)
	var invalid []*Shape
	for _, s := range shapes {
		m := &s.meta
		if m.TableSig == "" || s.isGone() {
			continue
		}
		name := tableName(m.Definition.Schema, m.Definition.Table)
		t, ok := tables[name]
		if !ok {
			var err error
			t, err = describe(ctx, w.conn, Definition{Schema: m.Definition.Schema, Table: m.Definition.Table})
			var ie *InvalidError
			switch {
			case errors.As(err, &ie):
				t = nil
			case err != nil:
				w.close()
				return err
			}
			tables[name] = t
		}
		if t == nil || !m.madeFrom(t) {
			invalid = append(invalid, s)
		}
	}
	if len(invalid) == 0 {
		return nil
	}
	for _, s := range invalid {
		inc(w.r.o.Counters.Invalidated)
		w.r.o.Log.Info("table dropped, renamed or altered: the shape is removed, its clients refetch",
			"shape", s.meta.Handle, "table", s.meta.Definition.String())
		if err := w.r.Delete(s); err != nil {
			return err
		}
	}
	return w.r.Reconcile(ctx)
}
