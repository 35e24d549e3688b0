package replication

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// TestQueueHandsOverInOrder runs a reader and a handler at random speeds
// through a queue: every item arrives once, in order, with no wake-up
// lost (the handler only takes after a ready signal, as run does), and the
// reader never holds more than queueMax waiting items.
func TestQueueHandsOverInOrder(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	const n = 50000
	q := newQueue()
	pauses := make([]bool, n)
	for i := range pauses {
		pauses[i] = rng.IntN(2000) == 0
	}
	go func() {
		for i := range n {
			if pauses[i] {
				time.Sleep(time.Millisecond)
			}
			if !q.put(context.Background(), item{start: uint64(i)}) {
				panic("put failed")
			}
		}
	}()
	next := uint64(0)
	var batch []item
	timeout := time.After(60 * time.Second)
	for next < n {
		select {
		case <-q.ready:
		case <-timeout:
			t.Fatalf("no wake-up after item %d of %d", next, n)
		}
		batch = q.take(batch)
		if len(batch) > queueMax {
			t.Fatalf("a batch of %d items; at most %d may wait", len(batch), queueMax)
		}
		for _, it := range batch {
			if it.start != next {
				t.Fatalf("item %d where %d was next", it.start, next)
			}
			next++
		}
		if rng.IntN(50) == 0 {
			time.Sleep(time.Millisecond) // a slow handler: the queue fills
		}
	}
	if !q.empty() {
		t.Fatal("items left after the last one")
	}
}

// TestQueuePutStopsWithItsContext: a reader waiting for room gives up when
// its context ends.
func TestQueuePutStopsWithItsContext(t *testing.T) {
	q := newQueue()
	for range queueMax {
		if !q.put(context.Background(), item{}) {
			t.Fatal("put into a queue with room failed")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- q.put(ctx, item{}) }()
	select {
	case <-done:
		t.Fatal("put into a full queue returned before room was made")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("put reported success after its context ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("put did not return after its context ended")
	}
}
