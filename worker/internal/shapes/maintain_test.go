package shapes

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

// runRegistry starts Run on r and returns a func that waits up to limit
// for it to return and gives what it returned; the test's cleanup stops
// Run and waits for it.
func runRegistry(t *testing.T, r *Registry) (wait func(limit time.Duration) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var returned bool
	var result error
	wait = func(limit time.Duration) error {
		if !returned {
			select {
			case result = <-done:
				returned = true
			case <-time.After(limit):
				t.Errorf("Run still running %v later", limit)
			}
		}
		return result
	}
	t.Cleanup(func() {
		cancel()
		wait(10 * time.Second)
	})
	return wait
}

// TestRunEndsWithTheRouter: the router stops without an error when the
// stream log is closed under it; Run then returns, and its other loops
// (which only stop with their context) with it.
func TestRunEndsWithTheRouter(t *testing.T) {
	e := &regEnv{dir: t.TempDir()}
	r, stream, err := openReg(e.dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := e.newShape(r, rand.New(rand.NewPCG(1, 2))); err != nil {
		t.Fatal(err)
	}
	wait := runRegistry(t, r)
	stream.Close()
	if err := wait(10 * time.Second); err != nil {
		t.Fatalf("Run = %v after the stream log closed; want nil", err)
	}
}

// TestRunEndsOnAFencedPersist: once a newer lease opened the storage, the
// persistence loop's next write of a shape's metadata is fenced, and Run
// returns that error (the router is idle meanwhile).
func TestRunEndsOnAFencedPersist(t *testing.T) {
	e := &regEnv{dir: t.TempDir()}
	r, stream, err := openReg(e.dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	defer r.Close()
	if _, err := e.newShape(r, rand.New(rand.NewPCG(3, 4))); err != nil {
		t.Fatal(err)
	}
	newer, newerStream, err := openReg(e.dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer newerStream.Close()
	defer newer.Close()
	wait := runRegistry(t, r)
	if err := wait(10 * time.Second); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("Run = %v; want storage.ErrFenced", err)
	}
}
