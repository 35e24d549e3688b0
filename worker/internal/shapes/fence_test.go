package shapes

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

// These tests stop a worker's registry in the middle of a write (between
// the steps of persist, creation and Delete here; inside a storage write
// with a real process in frozen_test.go), open the storage for a newer
// epoch meanwhile, and then let the old one go on: the newer one's shapes,
// their metadata and their folders must be exactly what it found plus what
// it did, and the old one's calls must fail with storage.ErrFenced.

// regEnv is a stream's storage folder, with what the writers of the test
// put in it.
type regEnv struct {
	dir string
	lsn uint64 // the last commit LSN given to a record
	n   int    // shapes made
}

// openReg opens the stream log and the registry of dir for epoch, as the
// worker does at the start of a lease.
func openReg(dir string, epoch uint64) (*Registry, *storage.Log, error) {
	stream, err := storage.Open(dir, epoch)
	if err != nil {
		return nil, nil, err
	}
	r, err := Open(Options{Dir: dir, Epoch: epoch, Stream: stream, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		stream.Close()
		return nil, nil, err
	}
	return r, stream, nil
}

// shapeModel is what a shape must hold: the fields of its metadata that
// writes change, and its records (commit LSNs, in order).
type shapeModel struct {
	applied, seen uint64
	records       []uint64
}

// regModel is what a registry must hold, by handle.
type regModel map[string]shapeModel

func (m regModel) clone() regModel {
	out := make(regModel, len(m))
	for h, s := range m {
		s.records = slices.Clone(s.records)
		out[h] = s
	}
	return out
}

// snapshotOf models a shape as persisted: its meta, and every record of
// its log (those written but not yet persisted too: a newer Open reads
// what the log holds).
func snapshotOf(s *Shape) shapeModel {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := shapeModel{applied: s.durable.RoutedSeq, seen: s.durable.SeenLSN}
	for _, e := range s.index {
		m.records = append(m.records, e.off.TX)
	}
	return m
}

// checkReg verifies that r holds exactly m: its shapes, their persisted
// metadata, their folders and records.
func checkReg(t *testing.T, what string, r *Registry, m regModel) {
	t.Helper()
	got := regModel{}
	for _, s := range r.byHandle {
		recs, err := s.log.Read(1, 1<<20)
		if err != nil {
			t.Fatalf("%s: shape %s: %v", what, s.meta.Handle, err)
		}
		var lsns []uint64
		for _, rec := range recs {
			lsns = append(lsns, rec.CommitLSN)
		}
		sm := snapshotOf(s)
		if !slices.Equal(lsns, sm.records) {
			t.Fatalf("%s: shape %s: log holds %v, index %v", what, s.meta.Handle, lsns, sm.records)
		}
		if _, err := os.Stat(s.dir); err != nil {
			t.Fatalf("%s: shape %s: %v", what, s.meta.Handle, err)
		}
		got[s.meta.Handle] = sm
	}
	for h, want := range m {
		g, ok := got[h]
		switch {
		case !ok:
			t.Fatalf("%s: shape %s is gone (have %v)", what, h, slices.Sorted(maps.Keys(got)))
		case g.applied != want.applied || g.seen != want.seen:
			t.Fatalf("%s: shape %s: applied_seq %d, seen_lsn %d; want %d, %d", what, h, g.applied, g.seen, want.applied, want.seen)
		case !slices.Equal(g.records, want.records):
			t.Fatalf("%s: shape %s: records %v, want %v", what, h, g.records, want.records)
		}
	}
	for h := range got {
		if _, ok := m[h]; !ok {
			t.Fatalf("%s: shape %s should not be there", what, h)
		}
	}
}

// newShape creates a shape with a snapshot of a few records, as creation
// does once PostgreSQL gave the rows.
func (e *regEnv) newShape(r *Registry, rng *rand.Rand) (*Shape, error) {
	e.n++
	d := Definition{Schema: "public", Table: "t" + strconv.Itoa(e.n)}
	applied, _ := r.o.Stream.Durable()
	m := &Meta{Handle: d.id() + "-" + strconv.Itoa(e.n), Definition: d, PK: []string{"id"},
		Columns: []Column{{Name: "id", Type: "int8"}}, RoutedSeq: applied, SeenLSN: e.lsn, CreatedAt: time.Now().UTC()}
	chunks := 1 + rng.IntN(3)
	return r.store(d, m, func(l *storage.Log) error {
		for j := range chunks {
			p := binary.LittleEndian.AppendUint64(nil, uint64(j))
			p = append(p, fmt.Sprintf(`{"chunk":%d}`, j)...)
			if _, err := l.Append(storage.Record{EndLSN: uint64(j) + 1, Payload: p}); err != nil {
				return err
			}
		}
		return l.Write()
	}, nil)
}

// route appends a transaction to the stream log and routes it to shapes
// as the router does: a record in each shape's log, then publish.
func (e *regEnv) route(r *Registry, shapes []*Shape) error {
	e.lsn += 10
	seq, err := r.o.Stream.Append(storage.Record{CommitLSN: e.lsn, EndLSN: e.lsn + 1, Payload: []byte("tx")})
	if err != nil {
		return err
	}
	if _, err := r.o.Stream.Sync(); err != nil {
		return err
	}
	for _, s := range shapes {
		p := binary.LittleEndian.AppendUint64(nil, 0)
		p = append(p, `{"tx":1}`...)
		rseq, err := s.log.Append(storage.Record{CommitLSN: e.lsn, EndLSN: e.lsn + 1, Payload: p})
		if err != nil {
			return err
		}
		if err := s.log.Write(); err != nil {
			return err
		}
		s.advance([]entry{{seq: rseq, off: Offset{TX: e.lsn}, size: len(p) - 8}}, e.lsn, seq)
	}
	return nil
}

// regOp is a registry write a stopped writer may be in.
type regOp struct {
	name  string
	point stopPoint
	// prepare readies the operation on r and returns it, and the model
	// once it has taken effect.
	prepare func(t *testing.T, e *regEnv, r *Registry, m regModel, rng *rand.Rand) (run func() error, after regModel)
}

func pickShape(r *Registry, rng *rand.Rand) *Shape {
	shapes, _ := r.list()
	if len(shapes) == 0 {
		return nil
	}
	slices.SortFunc(shapes, func(a, b *Shape) int { return cmpString(a.meta.Handle, b.meta.Handle) })
	return shapes[rng.IntN(len(shapes))]
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

var regOps = []regOp{
	{"persist", stopPersist, func(t *testing.T, e *regEnv, r *Registry, m regModel, rng *rand.Rand) (func() error, regModel) {
		s := pickShape(r, rng)
		if s == nil {
			return nil, m
		}
		if err := e.route(r, []*Shape{s}); err != nil {
			t.Fatal(err)
		}
		after := m.clone()
		sm := snapshotOf(s)
		sm.applied, sm.seen = s.ownRoutedSeq(), e.lsn
		after[s.meta.Handle] = sm
		// Written, not persisted: a newer Open reads the records, not the
		// metadata.
		m[s.meta.Handle] = shapeModel{applied: m[s.meta.Handle].applied, seen: m[s.meta.Handle].seen, records: sm.records}
		return s.persist, after
	}},
	{"create", stopCreate, prepareCreate},
	{"create, before the shape is added to the set", stopAdd, prepareCreate},
	{"delete", stopDelete, func(t *testing.T, e *regEnv, r *Registry, m regModel, rng *rand.Rand) (func() error, regModel) {
		s := pickShape(r, rng)
		if s == nil {
			return nil, m
		}
		after := m.clone()
		delete(after, s.meta.Handle)
		return func() error { return r.Delete(s) }, after
	}},
}

func prepareCreate(t *testing.T, e *regEnv, r *Registry, m regModel, rng *rand.Rand) (func() error, regModel) {
	after := m.clone()
	return func() error {
		s, err := e.newShape(r, rng)
		if err == nil {
			after[s.meta.Handle] = snapshotOf(s)
		}
		return err
	}, after
}

// work does a few random writes on r, as the worker does, and returns the
// model after them.
func (e *regEnv) work(t *testing.T, what string, r *Registry, m regModel, rng *rand.Rand) regModel {
	t.Helper()
	for range 1 + rng.IntN(6) {
		op := regOps[rng.IntN(len(regOps))]
		if rng.IntN(2) == 0 {
			op = regOps[0] // persist most often, as the worker does
		}
		run, after := op.prepare(t, e, r, m, rng)
		if run == nil {
			continue
		}
		if err := run(); err != nil {
			t.Fatalf("%s: %s: %v", what, op.name, err)
		}
		m = after
	}
	if _, err := r.truncateStream(); err != nil {
		t.Fatalf("%s: truncate the stream log: %v", what, err)
	}
	return m
}

// TestStaleRegistryRandom runs generations of workers on one stream's
// storage. Each does random work on its shapes (routing and persisting,
// creating, deleting), then is stopped at a random point of a random
// write while the next epoch opens the storage and does its own work; once
// the stopped one goes on, its write and every later one fail with
// storage.ErrFenced, and the newer worker's shapes (their metadata,
// records and folders) are exactly what it found plus what it did, as is
// every later Open's. BATON_SHAPES_SEED=<n> replays a run.
func TestStaleRegistryRandom(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BATON_SHAPES_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (BATON_SHAPES_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	e := &regEnv{dir: t.TempDir()}
	cur, stream, err := openReg(e.dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := regModel{}
	for range 3 {
		s, err := e.newShape(cur, rng)
		if err != nil {
			t.Fatal(err)
		}
		m[s.meta.Handle] = snapshotOf(s)
	}
	generations := 30
	if testing.Short() {
		generations = 10
	}
	for epoch := uint64(1); epoch <= uint64(generations); epoch++ {
		what := fmt.Sprintf("epoch %d", epoch)
		checkReg(t, what+" at Open", cur, m)
		m = e.work(t, what, cur, m, rng)
		checkReg(t, what+" after its work", cur, m)

		op := regOps[rng.IntN(len(regOps))]
		what += " stopped in " + op.name
		next, nextStream, nm := e.stopAndTakeOver(t, what, cur, m, op, rng)
		cur.Close()
		stream.Close()
		cur, stream, m = next, nextStream, nm
	}
	cur.Close()
	stream.Close()
	last, lastStream, err := openReg(e.dir, uint64(generations)+1)
	if err != nil {
		t.Fatal(err)
	}
	defer lastStream.Close()
	defer last.Close()
	checkReg(t, "the last Open", last, m)
	// Nothing is left of the shapes that were never added, or removed.
	members := map[string]bool{}
	for _, d := range last.set.Members() {
		members[d] = true
	}
	owners, err := os.ReadDir(filepath.Join(e.dir, "shapes"))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range owners {
		if !o.IsDir() {
			continue
		}
		inner, err := os.ReadDir(filepath.Join(e.dir, "shapes", o.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range inner {
			if p := filepath.Join(e.dir, "shapes", o.Name(), f.Name()); f.IsDir() && !members[p] {
				t.Errorf("the last Open left %s, not a member", p)
			}
		}
	}
}

// stopAndTakeOver starts op on cur, stops it at its point, opens the
// storage for the next epoch and works on it meanwhile, then lets op go
// on; it checks what op and later calls of cur return, and the newer
// registry's shapes. It returns the newer registry and its model.
func (e *regEnv) stopAndTakeOver(t *testing.T, what string, cur *Registry, m regModel, op regOp, rng *rand.Rand) (*Registry, *storage.Log, regModel) {
	t.Helper()
	run, _ := op.prepare(t, e, cur, m, rng)
	stopped, resume := make(chan struct{}), make(chan struct{})
	cur.stop = func(p stopPoint) {
		if p == op.point {
			cur.stop = nil
			close(stopped)
			<-resume
		}
	}
	result := make(chan error, 1)
	noop := run == nil // nothing to stop: go on without a stopped write
	if noop {
		cur.stop = nil
		result <- nil
	} else {
		go func() { result <- run() }()
		select {
		case <-stopped:
		case err := <-result:
			t.Fatalf("%s: returned %v before reaching its point", what, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: never reached its point", what)
		}
	}

	epoch := cur.o.Epoch + 1
	next, stream, err := openReg(e.dir, epoch)
	if err != nil {
		t.Fatalf("%s: open for epoch %d: %v", what, epoch, err)
	}
	// Every point is before the write that publishes the operation.
	checkReg(t, what+": the newer Open", next, m)
	m = e.work(t, what+": the newer worker", next, m, rng)

	close(resume)
	if err := <-result; !noop && !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("%s: the stopped %s returned %v, want ErrFenced", what, op.name, err)
	}
	// Every later write of the stale registry fails too.
	if err := e.route(cur, nil); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("%s: a later stream write = %v, want ErrFenced", what, err)
	}
	for _, s := range mustList(cur) {
		s.mu.Lock()
		s.meta.RoutedSeq += 1000 // what a confused stale writer would persist
		s.mu.Unlock()
		if err := s.persist(); !errors.Is(err, storage.ErrFenced) {
			t.Fatalf("%s: a later persist = %v, want ErrFenced", what, err)
		}
	}
	if _, err := e.newShape(cur, rng); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("%s: a later creation = %v, want ErrFenced", what, err)
	}
	if s := pickShape(cur, rng); s != nil {
		if err := cur.Delete(s); !errors.Is(err, storage.ErrFenced) {
			t.Fatalf("%s: a later Delete = %v, want ErrFenced", what, err)
		}
	}
	checkReg(t, what+": the newer worker once the stale one went on", next, m)
	return next, stream, m
}

func mustList(r *Registry) []*Shape {
	shapes, _ := r.list()
	return shapes
}

// TestRegistryTruncatesByPersisted: the stream log is truncated only up to
// what every shape durably routed, never by a later value a stale writer
// wrote.
func TestRegistryTruncatesByPersisted(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	e := &regEnv{dir: t.TempDir()}
	r, stream, err := openReg(e.dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	defer r.Close()
	a, err := e.newShape(r, rng)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.newShape(r, rng)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := e.route(r, []*Shape{a, b}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.persist(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := e.route(r, []*Shape{a}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.persist(); err != nil {
		t.Fatal(err)
	}
	// b routed to seq 5 but persisted nothing since its creation (applied 0).
	if _, err := r.truncateStream(); err != nil {
		t.Fatal(err)
	}
	recs, err := stream.Read(1, 100)
	if err != nil || len(recs) == 0 || recs[0].Seq != 1 {
		t.Fatalf("stream log after truncation: %d records from %v (%v); want it whole", len(recs), recs, err)
	}
}

// TestRegistryUpgrade: storage of the layout before fenced metadata (one
// folder per shape directly in shapes/, holding meta.json beside the
// shape log) is opened once and migrated: every shape is kept with its
// handle, metadata and records, its meta.json moves into the shape log
// and is never read again, and a creation that did not finish (a folder
// without meta.json) is removed, as that layout did.
func TestRegistryUpgrade(t *testing.T) {
	dir := t.TempDir()
	shapesDir := filepath.Join(dir, "shapes")
	stream, err := storage.Open(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := stream.Append(storage.Record{CommitLSN: uint64(100 + 10*i), EndLSN: uint64(101 + 10*i), Payload: []byte("tx")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := stream.Sync(); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	m := regModel{}
	for i := range 3 {
		d := Definition{Schema: "public", Table: "old" + strconv.Itoa(i)}
		meta := &Meta{Handle: d.id() + "-1733600000000" + strconv.Itoa(i), Definition: d, PK: []string{"id"},
			Columns: []Column{{Name: "id", Type: "int8"}}, RoutedSeq: uint64(5 + i), SeenLSN: uint64(150 + 10*i), CreatedAt: time.Now().UTC()}
		sdir := filepath.Join(shapesDir, meta.Handle)
		l, err := storage.Open(sdir, 3)
		if err != nil {
			t.Fatal(err)
		}
		var lsns []uint64
		for j := range 2 + i {
			p := binary.LittleEndian.AppendUint64(nil, uint64(j))
			if _, err := l.Append(storage.Record{EndLSN: uint64(j) + 1, Payload: append(p, `{}`...)}); err != nil {
				t.Fatal(err)
			}
			lsns = append(lsns, 0)
		}
		if _, err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		l.Close()
		b, err := json.MarshalIndent(meta, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sdir, "meta.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		m[meta.Handle] = shapeModel{applied: meta.RoutedSeq, seen: meta.SeenLSN, records: lsns}
	}
	unfinished := filepath.Join(shapesDir, "0123456789ab-1733600000999")
	if l, err := storage.Open(unfinished, 3); err != nil {
		t.Fatal(err)
	} else {
		l.Close()
	}

	r, stream, err := openReg(dir, 4)
	if err != nil {
		t.Fatal(err)
	}
	checkReg(t, "migrated", r, m)
	for _, s := range mustList(r) {
		if filepath.Dir(s.dir) != shapesDir {
			t.Fatalf("shape %s moved to %s", s.meta.Handle, s.dir)
		}
		if _, err := os.Stat(filepath.Join(s.dir, "meta.json")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("meta.json of %s is still there (%v)", s.meta.Handle, err)
		}
	}
	if _, err := os.Stat(unfinished); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the unfinished creation is still there (%v)", err)
	}
	// The stream log is truncated by the migrated applied_seq (the lowest, 5).
	if _, err := r.truncateStream(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	stream.Close()

	// A writer of that layout thawed late writes meta.json again: ignored.
	for h := range m {
		if err := os.WriteFile(filepath.Join(shapesDir, h, "meta.json"), []byte(`{"applied_seq": 99}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, stream, err = openReg(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	defer r.Close()
	checkReg(t, "reopened", r, m)
	recs, err := stream.Read(1, 100)
	if err != nil || len(recs) == 0 || recs[0].Seq > 6 {
		t.Fatalf("stream log from seq %v (%v); want every record after the lowest applied_seq, 5", recs, err)
	}
}
