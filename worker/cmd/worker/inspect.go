package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/settings"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
)

// runInspect prints the stored transactions of a stream, one JSON object a
// line, without opening the storage for writing (safe beside a running
// worker).
func runInspect(args []string, getenv func(string) string, stdout io.Writer) error {
	dir, id := config.Default().StorageDir, stream.DefaultID
	b := settings.NewBinder("worker inspect", getenv)
	b.String(&dir, "BATON_STORAGE_DIR", "storage folder")
	b.String(&id, "REPLICATION_STREAM_ID", "stream id")
	if err := b.Parse(args, help(stdout, "worker inspect")); err != nil {
		return err
	}
	if err := stream.Validate(id); err != nil {
		return &config.Error{Setting: "REPLICATION_STREAM_ID", Problem: err.Error()}
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	return storage.Inspect(filepath.Join(dir, id), func(r storage.Record) error {
		tx, err := txn.Decode(r.Payload)
		if err != nil {
			return fmt.Errorf("record %d: %w", r.Seq, err)
		}
		return enc.Encode(map[string]any{
			"seq": r.Seq, "commit_lsn": r.CommitLSN, "end_lsn": r.EndLSN, "epoch": r.Epoch, "transaction": tx,
		})
	})
}
