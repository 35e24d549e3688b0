package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/batonhq/baton/proto/stream"
	"github.com/batonhq/baton/worker/internal/config"
	"github.com/batonhq/baton/worker/internal/storage"
	"github.com/batonhq/baton/worker/internal/txn"
)

// runInspect prints the stored transactions of a stream, one JSON object a
// line, without opening the storage for writing (safe beside a running
// worker).
func runInspect(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	dir, id := getenv("BATON_STORAGE_DIR"), getenv("REPLICATION_STREAM_ID")
	if dir == "" {
		dir = config.Default().StorageDir
	}
	if id == "" {
		id = stream.DefaultID
	}
	fs := flag.NewFlagSet("worker inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&dir, "baton-storage-dir", dir, "storage folder (env BATON_STORAGE_DIR)")
	fs.StringVar(&id, "replication-stream-id", id, "stream id (env REPLICATION_STREAM_ID)")
	if err := fs.Parse(args); err != nil {
		return &config.Error{Setting: "flags", Problem: err.Error()}
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
