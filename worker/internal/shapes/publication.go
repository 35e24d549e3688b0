package shapes

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
)

// ErrSuperseded means a newer epoch owns the stream: a change to the
// publication that only the stream's current worker may make was refused,
// and not made.
var ErrSuperseded = errors.New("a newer epoch owns the stream")

// Reconcile makes the stream's publication hold exactly the tables of the
// current shapes: tables no shape uses any more are dropped from it (so
// their changes stop costing decoding and storage), missing ones added. It
// runs under the creation lock, one change at a time, so a shape being
// created never loses its table. A publication FOR ALL TABLES is left alone.
// Every drop is recorded in baton.publication_changes, fenced by the epoch
// (see the package doc, "Publication coverage"): once a newer epoch owns
// the stream, a drop fails with ErrSuperseded.
func (r *Registry) Reconcile(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := r.dial(ctx, "shapes")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return r.ReconcileOn(ctx, conn)
}

// ReconcileOn is Reconcile on conn, a session the caller owns (and does
// not use meanwhile).
func (r *Registry) ReconcileOn(ctx context.Context, conn *pgx.Conn) error {
	r.createMu.Lock()
	defer r.createMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	want := map[string]Definition{}
	shapes, _ := r.list()
	for _, s := range shapes {
		want[s.meta.Definition.TableSQL()] = Definition{Schema: s.meta.Definition.Schema, Table: s.meta.Definition.Table}
	}
	have, all, exists, err := publicationTables(ctx, conn, r.o.Publication)
	if err != nil {
		return err
	}
	if !exists || all {
		return nil // created with the first shape; FOR ALL TABLES left alone
	}
	for k := range have {
		if _, ok := want[k]; ok {
			continue
		}
		// Recorded with its WAL position: a worker whose storage has
		// shapes of this table, and a position before this drop, rebuilds
		// them (CheckCoverage).
		if err := dropFromPublication(ctx, conn, r.o.Publication, r.o.StreamID, r.o.Epoch, k); err != nil {
			return err
		}
		r.o.Log.Info("table dropped from the publication: no shape uses it", "table", k, "publication", r.o.Publication)
	}
	for k, d := range want {
		if have[k] {
			continue
		}
		if err := addToPublication(ctx, conn, r.o.Publication, d); err != nil {
			return err
		}
		r.o.Log.Info("table added back to the publication for its shape", "table", d.String(), "publication", r.o.Publication)
	}
	return nil
}

// addToPublication adds the table to the publication when it is not in it
// yet.
func addToPublication(ctx context.Context, conn *pgx.Conn, pub string, d Definition) error {
	var all, present bool
	err := conn.QueryRow(ctx, `SELECT p.puballtables, EXISTS (SELECT 1 FROM pg_publication_tables t
		WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3)
		FROM pg_publication p WHERE p.pubname = $1`, pub, d.Schema, d.Table).Scan(&all, &present)
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", pub, err)
	}
	if all || present {
		return nil
	}
	if _, err := conn.Exec(ctx, "ALTER PUBLICATION "+quoteIdent(pub)+" ADD TABLE "+d.TableSQL()); err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == pgerrcode.DuplicateObject { // added meanwhile
			return nil
		}
		return fmt.Errorf("add %s to publication %s (the role needs to own the table): %w", d, pub, err)
	}
	return nil
}
