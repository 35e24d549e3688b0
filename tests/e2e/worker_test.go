package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/batonhq/baton/tests/harness"
	"github.com/batonhq/baton/tests/pgtest"
)

// storedRecord is one line of `worker inspect`.
type storedRecord struct {
	Seq         uint64 `json:"seq"`
	EndLSN      uint64 `json:"end_lsn"`
	Epoch       uint64 `json:"epoch"`
	Transaction struct {
		Changes []struct {
			Op      string    `json:"op"`
			Table   string    `json:"table"`
			Columns []string  `json:"columns"`
			New     []*string `json:"new"`
		} `json:"changes"`
	} `json:"transaction"`
}

// inspect returns the records of the worker storage at dir.
func inspect(t *testing.T, dir string) []storedRecord {
	t.Helper()
	cmd := exec.Command(bins["worker"], "inspect", "--baton-storage-dir", dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("worker inspect %s: %v", dir, err)
	}
	var recs []storedRecord
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var r storedRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("inspect line %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

// storedIDs returns every inserted items.id in the worker storage at dir,
// in log order.
func storedIDs(t *testing.T, dir string) []int {
	t.Helper()
	var ids []int
	for _, r := range inspect(t, dir) {
		for _, c := range r.Transaction.Changes {
			if c.Op != "insert" || c.Table != "items" {
				continue
			}
			for i, col := range c.Columns {
				if col == "id" && c.New[i] != nil {
					id, _ := strconv.Atoi(*c.New[i])
					ids = append(ids, id)
				}
			}
		}
	}
	return ids
}

// writer inserts numbered rows until stopped and returns the last id.
type writer struct {
	stop chan struct{}
	done chan int
}

func startWriter(t *testing.T, pg *pgtest.Cluster) *writer {
	t.Helper()
	conn := connect(t, pg)
	w := &writer{stop: make(chan struct{}), done: make(chan int, 1)}
	go func() {
		id := 0
		for {
			select {
			case <-w.stop:
				w.done <- id
				return
			default:
			}
			if _, err := conn.Exec(context.Background(), "INSERT INTO items (id, note) VALUES ($1, 'row')", id+1); err != nil {
				t.Errorf("insert %d: %v", id+1, err)
				w.done <- id
				return
			}
			id++
			time.Sleep(2 * time.Millisecond) // pace the writer; not a wait for a condition
		}
	}()
	return w
}

func (w *writer) finish() int {
	close(w.stop)
	return <-w.done
}

// slotSampler records, every few milliseconds, which worker epoch holds the
// slot, and fails if an older epoch ever holds it after a newer one (I1).
type slotSampler struct {
	mu     sync.Mutex
	epochs []uint64
	err    error
	stop   chan struct{}
	done   chan struct{}
}

func startSlotSampler(t *testing.T, pg *pgtest.Cluster) *slotSampler {
	t.Helper()
	conn := connect(t, pg)
	s := &slotSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			var app *string
			err := conn.QueryRow(context.Background(), `SELECT a.application_name FROM pg_replication_slots s
				JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = 'baton_slot_default'`).Scan(&app)
			if err != nil && err != pgx.ErrNoRows {
				s.fail(err)
				return
			}
			if app != nil {
				e, err := strconv.ParseUint((*app)[strings.LastIndex(*app, ":")+1:], 10, 64)
				if err != nil {
					s.fail(fmt.Errorf("slot held by %q", *app))
					return
				}
				s.mu.Lock()
				if n := len(s.epochs); n > 0 && e < s.epochs[n-1] {
					s.err = fmt.Errorf("slot held by epoch %d after epoch %d", e, s.epochs[n-1])
				}
				if n := len(s.epochs); n == 0 || s.epochs[n-1] != e {
					s.epochs = append(s.epochs, e)
				}
				s.mu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return s
}

func (s *slotSampler) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

func (s *slotSampler) finish() ([]uint64, error) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epochs, s.err
}

func setupItems(t *testing.T, pg *pgtest.Cluster) {
	t.Helper()
	conn := connect(t, pg)
	if _, err := conn.Exec(context.Background(), "CREATE TABLE items (id int PRIMARY KEY, note text)"); err != nil {
		t.Fatal(err)
	}
}

// shapeItems creates the shape of table items on the active worker w, which
// adds the table to the stream's publication (the publication holds exactly
// the tables of the shapes in use).
func shapeItems(t *testing.T, w *harness.Worker) {
	t.Helper()
	if code, _, body := get(t, "http://"+w.HTTPAddr, url.Values{"table": {"items"}, "offset": {"-1"}}); code != 200 {
		t.Fatalf("create shape items: %d %s", code, body)
	}
}

// Rolling handoff under load: a writer commits numbered rows throughout;
// the first pod gets SIGTERM (broker and worker at once, as Kubernetes does);
// the second takes over. Every row ends up stored exactly once, the slot is
// never held by an older epoch after a newer one, and the old pod exits 0.
func TestWorkerRollingHandoff(t *testing.T) {
	for _, shared := range []bool{false, true} {
		name := "separate storage"
		if shared {
			name = "shared storage"
		}
		t.Run(name, func(t *testing.T) {
			pg := pgtest.Start(t, pgtest.Options{})
			setupItems(t, pg)
			dirA, dirB := t.TempDir(), t.TempDir()
			if shared {
				dirB = dirA
			}
			a := newPod(t, pg, harness.PodOptions{Name: "a", StorageDir: dirA})
			if err := a.Worker().AwaitStatus("active", 15*time.Second); err != nil {
				t.Fatal(err)
			}
			shapeItems(t, a.Worker())
			b := newPod(t, pg, harness.PodOptions{Name: "b", StorageDir: dirB})
			if err := b.Broker().AwaitHealth("readiness", serving, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if s, code, err := b.Worker().Health(); err != nil || s != "waiting" || code != 202 {
				t.Fatalf("standby worker health = %q %d %v; want waiting 202", s, code, err)
			}
			sampler := startSlotSampler(t, pg)
			w := startWriter(t, pg)
			if err := harness.Await(10*time.Second, "rows stored by the first worker", func() (bool, error) {
				return len(storedIDs(t, dirA)) > 50, nil
			}); err != nil {
				t.Fatal(err)
			}
			_ = a.Worker().Signal(syscall.SIGTERM)
			_ = a.Broker().Signal(syscall.SIGTERM)
			if err := b.Worker().AwaitStatus("active", 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if !shared {
				// B's own storage holds no shape: it reconciled the
				// publication to none; a client's request creates the
				// shape again (snapshot, then changes).
				shapeItems(t, b.Worker())
			}
			for _, p := range []*harness.Process{a.Worker().Process, a.Broker().Process} {
				if code, err := p.Wait(20 * time.Second); err != nil || code != 0 {
					t.Fatalf("%s exit %d %v; want 0", p.Name, code, err)
				}
			}
			if err := harness.Await(10*time.Second, "rows stored by the second worker", func() (bool, error) {
				return len(storedIDs(t, dirB)) > 0 && (shared || len(storedIDs(t, dirB)) > 20), nil
			}); err != nil {
				t.Fatal(err)
			}
			last := w.finish()
			if err := harness.Await(15*time.Second, fmt.Sprintf("row %d stored", last), func() (bool, error) {
				ids := storedIDs(t, dirB)
				return len(ids) > 0 && ids[len(ids)-1] == last, nil
			}); err != nil {
				t.Fatal(err)
			}
			epochs, err := sampler.finish()
			if err != nil {
				t.Fatalf("I1: %v (epochs seen %v)", err, epochs)
			}
			if len(epochs) < 2 {
				t.Fatalf("slot holders seen: %v; want the old and the new epoch", epochs)
			}
			if shared {
				checkExactlyOnce(t, storedIDs(t, dirA), last)
			} else {
				// Each log holds each row at most once, A's a gapless
				// prefix; B's shape (snapshot + log) holds every row.
				idsA := storedIDs(t, dirA)
				checkExactlyOnce(t, idsA, len(idsA))
				checkAtMostOnce(t, storedIDs(t, dirB))
				if rows := clientOnce(t, b.URL(), "items"); len(rows) != last {
					t.Fatalf("the second worker's shape has %d rows, want %d", len(rows), last)
				}
			}
			t.Logf("%d rows, slot epochs %v", last, epochs)
		})
	}
}

// checkAtMostOnce fails if an id appears twice.
func checkAtMostOnce(t *testing.T, ids []int) {
	t.Helper()
	seen := map[int]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("row %d stored twice", id)
		}
		seen[id] = true
	}
}

// checkExactlyOnce fails unless ids holds 1..last each exactly once.
func checkExactlyOnce(t *testing.T, ids []int, last int) {
	t.Helper()
	seen := make(map[int]int, len(ids))
	for _, id := range ids {
		seen[id]++
	}
	var missing, doubled []int
	for id := 1; id <= last; id++ {
		switch seen[id] {
		case 0:
			missing = append(missing, id)
		case 1:
		default:
			doubled = append(doubled, id)
		}
	}
	if len(missing) > 0 || len(doubled) > 0 || len(seen) != last {
		t.Fatalf("rows 1..%d: missing %v, doubled %v, %d distinct stored", last, head(missing), head(doubled), len(seen))
	}
}

func head(s []int) []int {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}
