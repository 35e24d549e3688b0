package main

import (
	"os"
	"sync"
	"time"
)

// fsyncProbe measures the disk under the worker's storage while a
// benchmark runs: a 4 KiB append and fsync to a file of its own, every
// interval. The worker fsyncs its logs before a change is served, so this
// is the floor (and the source of the tails) of any durable path on that
// disk. PostgreSQL runs with fsync=off in these benchmarks, so its side
// does not pay it.
type fsyncProbe struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	ds   []time.Duration
	err  error
}

func startFsyncProbe(dir string, every time.Duration) (*fsyncProbe, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-*")
	if err != nil {
		return nil, err
	}
	p := &fsyncProbe{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer os.Remove(f.Name())
		defer f.Close()
		buf := make([]byte, 4096)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
			t0 := time.Now()
			_, err := f.Write(buf)
			if err == nil {
				err = f.Sync()
			}
			d := time.Since(t0)
			p.mu.Lock()
			if err != nil && p.err == nil {
				p.err = err
			}
			p.ds = append(p.ds, d)
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return p, nil
}

// finish stops the probe and returns what it measured.
func (p *fsyncProbe) finish() ([]time.Duration, error) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ds, p.err
}
