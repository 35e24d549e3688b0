package shapes

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reconcile makes the stream's publication hold exactly the tables of the
// current shapes: tables no shape uses any more are dropped from it (so
// their changes stop costing decoding and storage), missing ones added. It
// runs under the creation lock, one change at a time, so a shape being
// created never loses its table. A publication FOR ALL TABLES is left alone.
func (r *Registry) Reconcile(ctx context.Context) error {
	r.createMu.Lock()
	defer r.createMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := connect(ctx, r.o.DatabaseURL, "baton-worker-shapes:"+r.o.StreamID+":"+strconv.FormatUint(r.o.Epoch, 10))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	want := map[string]Definition{}
	shapes, _ := r.list()
	for _, s := range shapes {
		want[s.meta.Definition.TableSQL()] = Definition{Schema: s.meta.Definition.Schema, Table: s.meta.Definition.Table}
	}
	var all bool
	err = conn.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", r.o.Publication).Scan(&all)
	if err == pgx.ErrNoRows {
		return nil // created with the first shape
	}
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", r.o.Publication, err)
	}
	if all {
		return nil
	}
	rows, err := conn.Query(ctx, "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = $1", r.o.Publication)
	if err != nil {
		return fmt.Errorf("list publication %s: %w", r.o.Publication, err)
	}
	have := map[string]Definition{}
	for rows.Next() {
		var d Definition
		if err := rows.Scan(&d.Schema, &d.Table); err != nil {
			rows.Close()
			return fmt.Errorf("list publication %s: %w", r.o.Publication, err)
		}
		have[d.TableSQL()] = d
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list publication %s: %w", r.o.Publication, err)
	}
	for k, d := range have {
		if _, ok := want[k]; ok {
			continue
		}
		if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+quoteIdent(r.o.Publication)+" DROP TABLE "+k); err != nil {
			return fmt.Errorf("drop %s from publication %s: %w", d, r.o.Publication, err)
		}
		r.o.Log.Info("table dropped from the publication: no shape uses it", "table", d.String(), "publication", r.o.Publication)
	}
	for k, d := range want {
		if _, ok := have[k]; ok {
			continue
		}
		if err := publish(ctx, conn, r.o.Publication, d); err != nil {
			return err
		}
		r.o.Log.Info("table added back to the publication for its shape", "table", d.String(), "publication", r.o.Publication)
	}
	return nil
}
