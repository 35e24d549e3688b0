package storage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/batonhq/baton/worker/internal/storage"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		opts    storage.Options
		ends    []uint64
		batches int // Sync after every len(ends)/batches records
		readMax int
	}{
		{"one record", storage.Options{}, []uint64{100}, 1, 10},
		{"one batch", storage.Options{}, seq(1, 50), 1, 7},
		{"many batches", storage.Options{}, seq(1, 50), 10, 50},
		{"segment rotation", storage.Options{SegmentSize: 64 << 10}, seq(1, 300), 20, 13},
		{"rotation inside one batch", storage.Options{SegmentSize: 64 << 10}, seq(1, 300), 1, 1000},
		{"record larger than a segment", storage.Options{SegmentSize: 4 << 10}, []uint64{1, 4095, 9000}, 3, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, 1, tt.opts)
			per := (len(tt.ends) + tt.batches - 1) / tt.batches
			for i := 0; i < len(tt.ends); i += per {
				batch := tt.ends[i:min(i+per, len(tt.ends))]
				for j, end := range batch {
					s, err := l.Append(record(end))
					if err != nil || s != uint64(i+j+1) {
						t.Fatalf("Append(end %d) = %d, %v; want seq %d", end, s, err, i+j+1)
					}
				}
				if got, _ := l.Read(uint64(i+1), 10); len(got) != 0 {
					t.Fatalf("Read returned %d records before Sync", len(got))
				}
				durable, err := l.Sync()
				if want := batch[len(batch)-1]; err != nil || durable != want {
					t.Fatalf("Sync = %d, %v; want %d", durable, err, want)
				}
			}
			last := uint64(len(tt.ends))
			if s, end := l.Durable(); s != last || end != tt.ends[last-1] {
				t.Fatalf("Durable = %d, %d; want %d, %d", s, end, last, tt.ends[last-1])
			}
			checkRecords(t, readAll(t, l, tt.readMax), tt.ends)
			for _, r := range readAll(t, l, tt.readMax) {
				if r.Epoch != 1 {
					t.Fatalf("record %d: epoch %d, want 1", r.Seq, r.Epoch)
				}
			}
			got, err := l.Read(last/2+1, 3)
			if err != nil || len(got) == 0 || got[0].Seq != last/2+1 {
				t.Fatalf("Read(%d, 3) = %d records from %v, %v", last/2+1, len(got), got, err)
			}
		})
	}
}

func TestSegmentFiles(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 1, storage.Options{SegmentSize: 4 << 10})
	appendSync(t, l, seq(1, 40)...)
	files := segments(t, dir)
	if len(files) < 10 {
		t.Fatalf("%d segment files, want many with 4 KiB segments", len(files))
	}
	for _, f := range files[:len(files)-1] {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		// Past 4 KiB only if the segment holds one record: its header (16
		// bytes), a record header (40) and a payload of at most 4095.
		if fi.Size() > 16+40+4095 {
			t.Errorf("%s is %d bytes", filepath.Base(f), fi.Size())
		}
	}
	if filepath.Base(files[0]) != "00000000000000000001.seg" {
		t.Errorf("first segment is %s", filepath.Base(files[0]))
	}
}

func TestAppendSkipsOldEndLSN(t *testing.T) {
	tests := []struct {
		name     string
		ends     []uint64
		wantSeqs []uint64 // 0: skipped
	}{
		{"increasing", []uint64{10, 20, 30}, []uint64{1, 2, 3}},
		{"replayed transaction", []uint64{10, 20, 20, 30}, []uint64{1, 2, 0, 3}},
		{"replay from earlier", []uint64{10, 20, 30, 10, 20, 30, 40}, []uint64{1, 2, 3, 0, 0, 0, 4}},
		{"zero end LSN", []uint64{0, 5}, []uint64{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := openLog(t, t.TempDir(), 1, storage.Options{})
			var kept []uint64
			for i, end := range tt.ends {
				s, err := l.Append(storage.Record{CommitLSN: end - 1, EndLSN: end, Payload: payloadFor(end)})
				if err != nil || s != tt.wantSeqs[i] {
					t.Fatalf("Append #%d (end %d) = %d, %v; want %d", i, end, s, err, tt.wantSeqs[i])
				}
				if s != 0 {
					kept = append(kept, end)
				}
				if i == 1 { // sync in the middle: dedupe spans durable and pending records
					if _, err := l.Sync(); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			checkRecords(t, readAll(t, l, 100), kept)
		})
	}
}

func TestReopenContinues(t *testing.T) {
	dir := t.TempDir()
	opts := storage.Options{SegmentSize: 4 << 10}
	l := openLog(t, dir, 1, opts)
	appendSync(t, l, seq(1, 40)...)
	if _, err := l.Append(record(41)); err != nil { // never synced: lost on Close
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openLog(t, dir, 2, opts)
	if s, end := l.Durable(); s != 40 || end != 40 {
		t.Fatalf("Durable after reopen = %d, %d; want 40, 40", s, end)
	}
	if s, err := l.Append(record(40)); s != 0 || err != nil {
		t.Fatalf("Append(end 40) after reopen = %d, %v; want skipped", s, err)
	}
	if s, err := l.Append(record(45)); s != 41 || err != nil {
		t.Fatalf("Append(end 45) after reopen = %d, %v; want seq 41", s, err)
	}
	if _, err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, l, 9)
	checkRecords(t, recs, append(seq(1, 40), 45))
	if recs[39].Epoch != 1 || recs[40].Epoch != 2 {
		t.Errorf("epochs %d, %d; want 1, 2", recs[39].Epoch, recs[40].Epoch)
	}
}

// TestPreviousEpoch: each Open tells the epoch of the Open it took over
// from, whether that one closed, crashed or was fenced, and 0 for a new log.
func TestPreviousEpoch(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 3, storage.Options{})
	if got := l.PreviousEpoch(); got != 0 {
		t.Fatalf("new log: PreviousEpoch = %d, want 0", got)
	}
	appendSync(t, l, seq(1, 5)...)
	// Not closed: the next Open fences it, as after a crash.
	l2 := openLog(t, dir, 7, storage.Options{})
	if got := l2.PreviousEpoch(); got != 3 {
		t.Fatalf("after epoch 3: PreviousEpoch = %d, want 3", got)
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	l3 := openLog(t, dir, 7, storage.Options{})
	if got := l3.PreviousEpoch(); got != 7 {
		t.Fatalf("after epoch 7 again: PreviousEpoch = %d, want 7", got)
	}
	l4 := openLog(t, dir, 9, storage.Options{})
	if got := l4.PreviousEpoch(); got != 7 {
		t.Fatalf("after epoch 7 (twice): PreviousEpoch = %d, want 7", got)
	}
}

func TestEmptyLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	l := openLog(t, dir, 3, storage.Options{})
	if s, end := l.Durable(); s != 0 || end != 0 {
		t.Fatalf("Durable = %d, %d", s, end)
	}
	if recs, err := l.Read(1, 10); err != nil || len(recs) != 0 {
		t.Fatalf("Read = %v, %v", recs, err)
	}
	if end, err := l.Sync(); err != nil || end != 0 {
		t.Fatalf("Sync of nothing = %d, %v", end, err)
	}
	if len(segments(t, dir)) != 0 {
		t.Fatal("segment created with no record")
	}
}

func TestOpenRejects(t *testing.T) {
	tests := []struct {
		name  string
		epoch uint64
		opts  storage.Options
	}{
		{"epoch zero", 0, storage.Options{}},
		{"segment too small", 1, storage.Options{SegmentSize: 100}},
		{"segment too large", 1, storage.Options{SegmentSize: 2 << 30}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if l, err := storage.OpenWith(t.TempDir(), tt.epoch, tt.opts); err == nil {
				l.Close()
				t.Fatal("OpenWith succeeded")
			}
		})
	}
}

func TestClose(t *testing.T) {
	l, err := storage.Open(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	appendSync(t, l, 1)
	waitErr := make(chan error, 1)
	go func() { waitErr <- l.Wait(context.Background(), 1) }()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Wait during Close = %v, want ErrClosed", err)
	}
	if _, err := l.Append(record(2)); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Append after Close = %v", err)
	}
	if _, err := l.Sync(); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Sync after Close = %v", err)
	}
	if _, err := l.Read(1, 1); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestWait(t *testing.T) {
	l := openLog(t, t.TempDir(), 1, storage.Options{})
	appendSync(t, l, 1, 2)

	if err := l.Wait(context.Background(), 1); err != nil {
		t.Fatalf("Wait(1) with seq 2 durable = %v", err)
	}

	woke := make(chan error, 1)
	go func() { woke <- l.Wait(context.Background(), 2) }()
	if _, err := l.Append(record(3)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		t.Fatalf("Wait returned %v before the record was durable", err)
	default:
	}
	appendSync(t, l)
	select {
	case err := <-woke:
		if err != nil {
			t.Fatalf("Wait = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not wake on Sync")
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() { woke <- l.Wait(ctx, 3) }()
	cancel()
	if err := <-woke; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel = %v", err)
	}
}

// TestConcurrentReaders runs readers that long-poll with Wait and Read
// while the writer appends and syncs; run it with -race.
func TestConcurrentReaders(t *testing.T) {
	const total, readers = 1000, 8
	l := openLog(t, t.TempDir(), 1, storage.Options{SegmentSize: 128 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errs := make(chan error, readers+1)
	wg.Go(func() {
		for end := uint64(1); end <= total; end++ {
			if _, err := l.Append(record(end)); err != nil {
				errs <- err
				return
			}
			if end%uint64(3+end%11) == 0 { // batches of varying sizes
				if _, err := l.Sync(); err != nil {
					errs <- err
					return
				}
			}
		}
		if _, err := l.Sync(); err != nil {
			errs <- err
		}
	})
	for i := range readers {
		wg.Go(func() {
			next := uint64(1)
			for next <= total {
				if err := l.Wait(ctx, next-1); err != nil {
					errs <- err
					return
				}
				recs, err := l.Read(next, 1+i*7)
				if err != nil {
					errs <- err
					return
				}
				if ds, _ := l.Durable(); len(recs) == 0 || recs[len(recs)-1].Seq > ds {
					errs <- errors.New("read returned nothing, or records past Durable, after Wait")
					return
				}
				for _, r := range recs {
					if r.Seq != next || r.EndLSN != next || string(r.Payload) != string(payloadFor(next)) {
						errs <- errors.New("reader saw a wrong record")
						return
					}
					next++
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
