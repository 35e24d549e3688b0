package shapes

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestRunTruncatesAtOnce: Run drops the stream log's segments that every
// shape durably passed when it starts, not only after truncateEvery: a
// worker restarted more often than that would otherwise read and verify
// the whole history at each start.
func TestRunTruncatesAtOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	e := &regEnv{dir: t.TempDir()}
	r, stream, err := openReg(e.dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.newShape(r, rng)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := e.route(r, []*Shape{a}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.persist(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	stream.Close()

	// The next Open writes a segment of its own after the first one.
	r, stream, err = openReg(e.dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	defer r.Close()
	shapes, _ := r.list()
	if len(shapes) != 1 {
		t.Fatalf("%d shapes after reopening, want 1", len(shapes))
	}
	for range 2 {
		if err := e.route(r, shapes); err != nil {
			t.Fatal(err)
		}
	}
	if err := shapes[0].persist(); err != nil {
		t.Fatal(err)
	}
	recs, err := stream.Read(1, 1)
	if err != nil || len(recs) != 1 || recs[0].Seq != 1 {
		t.Fatalf("stream log before Run: %v (%v); want it from seq 1", recs, err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, err := stream.Read(1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 1 && recs[0].Seq == 4 {
			return // the first Open's segment (seqs 1-3) is gone
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream log still starts at %v 10 s after Run started; want seq 4", recs)
		}
		<-time.After(20 * time.Millisecond) // polled: truncation notifies nobody
	}
}
