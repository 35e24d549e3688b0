package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/settings"
)

// ErrNotHeld is returned by Print when no session holds the stream's lock
// (the commands exit 3).
var ErrNotHeld = errors.New("stream not held")

// Config is the configuration of a status command.
type Config struct {
	DatabaseURL string
	StreamID    string
	JSON        bool
}

// Parse reads a status command's settings: DATABASE_URL and
// REPLICATION_STREAM_ID (environment or flags) and -json. name names the
// command in errors; -help prints the flags to help. Errors are
// *settings.Error values.
func Parse(name string, args []string, getenv func(string) string, help io.Writer) (Config, error) {
	c := Config{StreamID: stream.DefaultID}
	b := settings.NewBinder(name, getenv)
	b.String(&c.DatabaseURL, "DATABASE_URL", "PostgreSQL connection URL")
	b.String(&c.StreamID, "REPLICATION_STREAM_ID", "stream id")
	b.Bool(&c.JSON, "json", "print JSON instead of text")
	if err := b.Parse(args, help); err != nil {
		return c, err
	}
	if err := settings.DatabaseURL(c.DatabaseURL); err != nil {
		return c, &settings.Error{Setting: "DATABASE_URL", Problem: err.Error()}
	}
	if err := stream.Validate(c.StreamID); err != nil {
		return c, &settings.Error{Setting: "REPLICATION_STREAM_ID", Problem: err.Error()}
	}
	return c, nil
}

// Print connects to the database (within 10 s), reads the stream's status
// and writes it to out, as text or JSON. It returns ErrNotHeld, after
// writing, when nobody holds the stream's lock.
func Print(ctx context.Context, cfg Config, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := Read(ctx, conn, cfg.StreamID)
	if err != nil {
		return err
	}
	if cfg.JSON {
		err = st.WriteJSON(out)
	} else {
		err = st.WriteText(out)
	}
	if err != nil {
		return err
	}
	if !st.Held {
		return ErrNotHeld
	}
	return nil
}
