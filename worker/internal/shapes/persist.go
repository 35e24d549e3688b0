package shapes

import (
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
)

// Persistence: how far each shape was routed (applied_seq, seen_lsn) and
// when it was last used are written to its metadata (kept in its log,
// fenced: storage.Log.SetMeta), by the persistence loop and once more when
// Run returns, never by the router itself.

// persistEvery bounds how often applied_seq is written to the metadata; a
// late write only means some transactions are routed again, and skipped.
const persistEvery = time.Second

// persistLoop writes the metadata of every shape routed further since its
// last write, once every persistEvery, until ctx ends. The metadata is
// written here, not by the router, so that its fsyncs do not delay
// routing; a failed write ends Run.
func (r *Registry) persistLoop(ctx context.Context) error {
	last := map[*Shape]persisted{}
	return every(ctx, persistEvery, func() error { return r.persistSome(last) })
}

// persistFinal writes, as the router stops, the metadata of the shapes
// that got records since theirs was written, several at once: with
// thousands of shapes, writing every one in turn would outlast a drain.
// The others only lose how far transactions that did not touch them were
// routed (routed again after a restart, and skipped).
func (r *Registry) persistFinal() {
	shapes, _ := r.list()
	var g errgroup.Group
	g.SetLimit(16)
	for _, s := range shapes {
		if s.unpersisted() {
			g.Go(func() error {
				_ = s.persist()
				return nil
			})
		}
	}
	_ = g.Wait()
}

// persisted is what a shape's metadata was last written with, and when.
type persisted struct {
	routedSeq, routedLSN uint64
	records              int
	at                   time.Time
}

// Bounds on metadata writes: a shape that only moved on (transactions
// that did not touch it) is written at most every idlePersistEvery, and
// at most persistPerTick shapes are written per tick, those waiting
// longest first. A late write only means transactions routed again
// after a restart (and skipped) and an older global_last_seen_lsn.
const (
	idlePersistEvery   = time.Minute
	persistPerTick     = 64
	persistConcurrency = 16 // their fsyncs overlap
)

// persistSome writes the metadata of the shapes that need it, updating
// last (and dropping shapes that are gone from it).
func (r *Registry) persistSome(last map[*Shape]persisted) error {
	shapes, _ := r.list()
	now := time.Now()
	type due struct {
		s  *Shape
		st persisted
		at time.Time
	}
	var todo []due
	live := make(map[*Shape]bool, len(shapes))
	for _, s := range shapes {
		live[s] = true
		fl := s.floor()
		s.mu.RLock()
		st := persisted{routedSeq: max(s.meta.RoutedSeq, fl.seq), routedLSN: s.routedLSNLocked(fl), records: len(s.index), at: now}
		s.mu.RUnlock()
		prev, ok := last[s]
		if ok && prev.routedSeq == st.routedSeq && prev.routedLSN == st.routedLSN && prev.records == st.records {
			continue
		}
		if ok && prev.records == st.records && now.Sub(prev.at) < idlePersistEvery {
			continue
		}
		todo = append(todo, due{s, st, prev.at})
	}
	for s := range last {
		if !live[s] {
			delete(last, s)
		}
	}
	slices.SortFunc(todo, func(a, b due) int { return a.at.Compare(b.at) })
	todo = todo[:min(len(todo), persistPerTick)]
	errs := make([]error, len(todo))
	var g errgroup.Group
	g.SetLimit(persistConcurrency)
	for i, d := range todo {
		g.Go(func() error {
			if err := d.s.persist(); err != nil && !d.s.isGone() {
				errs[i] = fmt.Errorf("persist shape %s: %w", d.s.meta.Handle, err)
			}
			return nil
		})
	}
	_ = g.Wait()
	for i, d := range todo {
		if errs[i] != nil {
			return errs[i]
		}
		last[d.s] = d.st
	}
	return nil
}

// persist writes the shape's metadata, with how far it was routed, into
// its log (storage.Log.SetMeta, fenced: it fails with storage.ErrFenced
// once a newer lease opened the shape), and from then on advertises that
// position.
func (s *Shape) persist() error {
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	s.mu.Lock()
	fl := s.floor()
	s.meta.SeenLSN = max(s.meta.SeenLSN, s.routedLSNLocked(fl))
	s.meta.RoutedSeq = max(s.meta.RoutedSeq, fl.seq)
	if last := s.use.lastTime(); last.After(s.meta.LastUsedAt) {
		s.meta.LastUsedAt = last
	}
	m := s.meta
	records := len(s.index)
	s.mu.Unlock()
	// The records routed up to m.RoutedSeq were written before m was
	// read: they are durable before the metadata says so.
	if _, err := s.log.Sync(); err != nil {
		return err
	}
	if s.stopAt != nil {
		s.stopAt(stopPersist)
	}
	b, err := encodeMeta(&m)
	if err != nil {
		return err
	}
	if err := s.log.SetMeta(b); err != nil {
		return err
	}
	s.mu.Lock()
	s.durable = m
	s.persistedRecords = records
	s.mu.Unlock()
	return nil
}

// unpersisted reports whether records were routed into the shape, or a
// request used it, since its metadata was last written.
func (s *Shape) unpersisted() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.index) != s.persistedRecords || s.use.lastTime().After(s.meta.LastUsedAt)
}
