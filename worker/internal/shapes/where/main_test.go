package where_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/batonhq/baton/tests/pgtest"
	"github.com/batonhq/baton/worker/internal/shapes/where"
	"github.com/batonhq/baton/worker/internal/txn"
	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// cluster is the PostgreSQL server shared by the tests of this package.
var cluster *pgtest.Cluster

func TestMain(m *testing.M) {
	code := func() int {
		c, err := pgtest.New(context.Background(), pgtest.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "start PostgreSQL:", err)
			return 1
		}
		cluster = c
		code := m.Run()
		if err := c.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "stop PostgreSQL:", err)
			return 1
		}
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// dial connects to the test server with the worker's session settings.
func dial(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(cluster.URL())
	if err != nil {
		return nil, err
	}
	for k, v := range txn.OutputSettings {
		cfg.RuntimeParams[k] = v
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// connect is dial for a test; the connection is closed at cleanup.
func connect(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// exec runs statements on a fresh connection.
func exec(t testing.TB, sql string) {
	t.Helper()
	conn := connect(t)
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
}

// table describes a table as the shapes package would.
func table(t testing.TB, conn *pgx.Conn, schema, name string) where.Table {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT a.attname, a.atttypid, pg_catalog.format_type(a.atttypid, a.atttypmod)
		FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
		pgx.Identifier{schema, name}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	tb := where.Table{Schema: schema, Name: name}
	for rows.Next() {
		var c where.Column
		if err := rows.Scan(&c.Name, &c.TypeOID, &c.Type); err != nil {
			t.Fatal(err)
		}
		tb.Columns = append(tb.Columns, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return tb
}
