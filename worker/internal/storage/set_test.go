package storage

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// setModel is what a set must hold: its members' names (the last part of
// their folders) and what each folder's file holds.
type setModel map[string]string

// addMember creates a member named name holding content on s.
func addMember(t *testing.T, s *Set, name, content string) string {
	t.Helper()
	dir, err := s.NewFolder(name)
	if err != nil {
		t.Fatalf("NewFolder(%s): %v", name, err)
	}
	if err := WriteFileAtomic(dir, "content", []byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(dir); err != nil {
		t.Fatalf("Add(%s): %v", name, err)
	}
	return dir
}

// checkSet verifies that s holds exactly m, each member's folder with its
// content.
func checkSet(t *testing.T, what string, s *Set, m setModel) {
	t.Helper()
	got := map[string]string{}
	for _, dir := range s.Members() {
		b, err := os.ReadFile(filepath.Join(dir, "content"))
		if err != nil {
			t.Fatalf("%s: member %s: %v", what, dir, err)
		}
		got[filepath.Base(dir)] = string(b)
	}
	if !maps.Equal(got, m) {
		t.Fatalf("%s: members %v, want %v", what, got, m)
	}
}

// memberDir returns the folder of the member named name.
func memberDir(s *Set, name string) string {
	for _, d := range s.Members() {
		if filepath.Base(d) == name {
			return d
		}
	}
	return ""
}

// checkNoGarbage verifies that root holds nothing but members, the
// marker, and the folders of owners (of which older ones hold members
// only).
func checkNoGarbage(t *testing.T, what string, s *Set) {
	t.Helper()
	members := map[string]bool{}
	for _, d := range s.Members() {
		members[d] = true
	}
	entries, err := os.ReadDir(s.root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		p := filepath.Join(s.root, e.Name())
		o, owner := parseOwnerName(e.Name())
		switch {
		case members[p] || o == markerOwner || o == s.me:
		case !owner:
			t.Fatalf("%s: %s is neither a member nor an owner", what, e.Name())
		default:
			inner, _ := os.ReadDir(p)
			for _, f := range inner {
				if !members[filepath.Join(p, f.Name())] {
					t.Fatalf("%s: %s/%s is garbage left by an older owner", what, e.Name(), f.Name())
				}
			}
		}
	}
}

func TestSetMembers(t *testing.T) {
	root := t.TempDir()
	s, err := OpenSet(root, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := setModel{}
	for i := range 5 {
		name := "m" + strconv.Itoa(i)
		addMember(t, s, name, "v"+name)
		m[name] = "v" + name
	}
	checkSet(t, "after Add", s, m)
	dir, err := s.NewFolder("failed")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Discard(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("discarded folder: %v", err)
	}
	if err := s.Discard(memberDir(s, "m0")); err == nil {
		t.Fatal("Discard of a member accepted")
	}
	if _, err := s.NewFolder("../x"); err == nil {
		t.Fatal("NewFolder(../x) accepted")
	}
	pending, err := s.NewFolder("pending") // never added: garbage to the next Open
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.NewFolder("late"); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewFolder after Close = %v, want ErrClosed", err)
	}

	for epoch := uint64(2); epoch < 5; epoch++ {
		if s, err = OpenSet(root, epoch, nil); err != nil {
			t.Fatal(err)
		}
		checkSet(t, "reopened", s, m)
		checkNoGarbage(t, "reopened", s)
		gone := fmt.Sprintf("m%d", epoch-2)
		d := memberDir(s, gone)
		if err := s.Remove(d); err != nil {
			t.Fatal(err)
		}
		delete(m, gone)
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("removed member's folder: %v", err)
		}
		name := fmt.Sprintf("n%d", epoch)
		addMember(t, s, name, "w"+name)
		m[name] = "w" + name
		checkSet(t, "changed", s, m)
		s.Close()
	}
	if _, err := os.Stat(pending); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a folder never added is still there: %v", err)
	}
	if _, err := OpenSet(root, 3, nil); !errors.Is(err, ErrFenced) {
		t.Fatalf("OpenSet of an older epoch = %v, want ErrFenced", err)
	}
}

// TestSetMigrate: the first Open of a folder of the layout before sets
// takes as members the folders legacy accepts, in place, and removes the
// others; later Opens do not ask legacy again, and remove folders that
// binaries of that layout create directly in root.
func TestSetMigrate(t *testing.T) {
	root := t.TempDir()
	for _, name := range []string{"keep1", "keep2", "unfinished"} {
		if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(name, "keep") {
			if err := os.WriteFile(filepath.Join(root, name, "content"), []byte("old "+name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	asked := 0
	legacy := func(dir string) bool {
		asked++
		_, err := os.Stat(filepath.Join(dir, "content"))
		return err == nil
	}
	s, err := OpenSet(root, 7, legacy)
	if err != nil {
		t.Fatal(err)
	}
	m := setModel{"keep1": "old keep1", "keep2": "old keep2"}
	checkSet(t, "migrated", s, m)
	if asked != 3 {
		t.Fatalf("legacy asked %d times, want 3", asked)
	}
	if _, err := os.Stat(filepath.Join(root, "unfinished")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unfinished legacy folder: %v", err)
	}
	addMember(t, s, "new", "new")
	m["new"] = "new"
	if err := s.Remove(memberDir(s, "keep1")); err != nil {
		t.Fatal(err)
	}
	delete(m, "keep1")
	s.Close()
	// A binary of the old layout, thawed, creates a folder in root.
	if err := os.MkdirAll(filepath.Join(root, "late"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "late", "content"), []byte("late"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenSet(root, 8, legacy); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkSet(t, "reopened", s, m)
	checkNoGarbage(t, "reopened", s)
	if asked != 3 {
		t.Fatalf("legacy asked again (%d times)", asked)
	}
}

// setOp is a write on a set that a stopped writer may be in.
type setOp struct {
	name   string
	points []hookPoint
	// prepare readies the operation and returns it, and the model once it
	// has taken effect.
	prepare func(t *testing.T, s *Set, m setModel, rng *rand.Rand, n *int) (run func() error, after setModel)
}

var setOps = []setOp{
	{"Add", []hookPoint{hookChecked, hookWritten}, func(t *testing.T, s *Set, m setModel, rng *rand.Rand, n *int) (func() error, setModel) {
		*n++
		name := "a" + strconv.Itoa(*n)
		dir, err := s.NewFolder(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteFileAtomic(dir, "content", []byte(name)); err != nil {
			t.Fatal(err)
		}
		after := maps.Clone(m)
		after[name] = name
		return func() error { return s.Add(dir) }, after
	}},
	{"Remove", []hookPoint{hookChecked, hookWritten, hookRemoving}, func(t *testing.T, s *Set, m setModel, rng *rand.Rand, n *int) (func() error, setModel) {
		names := slices.Sorted(maps.Keys(m))
		if len(names) == 0 {
			return func() error { return nil }, m
		}
		after := maps.Clone(m)
		var dirs []string
		for range 1 + rng.IntN(min(3, len(names))) {
			name := names[rng.IntN(len(names))]
			if _, ok := after[name]; ok {
				delete(after, name)
				dirs = append(dirs, memberDir(s, name))
			}
		}
		return func() error { return s.Remove(dirs...) }, after
	}},
	{"compaction", []hookPoint{hookChecked, hookWritten, hookRemoving}, func(t *testing.T, s *Set, m setModel, rng *rand.Rand, n *int) (func() error, setModel) {
		return func() error {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.compactLocked()
		}, m
	}},
}

// TestSetStaleRandom runs generations of writers on one set, each stopped
// inside a random Add or Remove while the next epoch opens the set; once
// it goes on, the newer Open's members (and their folders' contents) must
// be exactly those it found, plus its own changes: the stopped write
// counts only if it was written before the newer Open, its call fails
// with ErrFenced (unless it had passed its last check), and it removes no
// folder the newer Open holds. BATON_STORAGE_SEED=<n> replays a run.
func TestSetStaleRandom(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BATON_STORAGE_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (BATON_STORAGE_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	root := t.TempDir()
	cur, err := OpenSet(root, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	cur.journalLimit = 2
	m := setModel{}
	n := 0
	for epoch := uint64(1); epoch <= 40; epoch++ {
		what := fmt.Sprintf("epoch %d", epoch)
		checkSet(t, what+" at Open", cur, m)
		for range rng.IntN(5) {
			op := setOps[rng.IntN(len(setOps))]
			run, after := op.prepare(t, cur, m, rng, &n)
			if err := run(); err != nil {
				t.Fatalf("%s: %s: %v", what, op.name, err)
			}
			m = after
		}
		// A creation in progress, never added: garbage to the next Open.
		n++
		if _, err := cur.NewFolder("p" + strconv.Itoa(n)); err != nil {
			t.Fatal(err)
		}
		op := setOps[rng.IntN(len(setOps))]
		point := op.points[rng.IntN(len(op.points))]
		what += fmt.Sprintf(" stopped in %s at %s", op.name, point)
		cur.journalLimit = 1 << 30 // the stopped write is the op alone
		run, after := op.prepare(t, cur, m, rng, &n)
		stopped, resume := make(chan struct{}), make(chan struct{})
		cur.hook = func(p hookPoint) {
			if p == point {
				close(stopped)
				<-resume
			}
		}
		result := make(chan error, 1)
		go func() { result <- run() }()
		select {
		case <-stopped:
		case err := <-result:
			if err != nil || !maps.Equal(after, m) {
				t.Fatalf("%s: returned %v before reaching the point", what, err)
			}
			stopped = nil
			close(resume)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: never reached the point", what)
		}
		next, err := OpenSet(root, epoch+1, nil)
		if err != nil {
			t.Fatalf("%s: OpenSet: %v", what, err)
		}
		next.journalLimit = 1 + rng.IntN(4) // journals often written into STATE
		if point != hookChecked {
			m = after // written before the newer Open
		}
		checkSet(t, what+": the newer Open", next, m)
		// The newer Open changes the set while the stopped one is stopped.
		for range 1 + rng.IntN(3) {
			op := setOps[rng.IntN(len(setOps))]
			run, after := op.prepare(t, next, m, rng, &n)
			if err := run(); err != nil {
				t.Fatalf("%s: the newer Open's %s: %v", what, op.name, err)
			}
			m = after
		}
		if stopped != nil {
			close(resume)
			err := <-result
			switch {
			case point == hookRemoving && err != nil:
				t.Fatalf("%s: %v after its last check", what, err)
			case point != hookRemoving && !errors.Is(err, ErrFenced):
				t.Fatalf("%s: returned %v, want ErrFenced", what, err)
			}
		}
		if _, err := cur.NewFolder("late"); !errors.Is(err, ErrFenced) {
			t.Fatalf("%s: a later NewFolder = %v, want ErrFenced", what, err)
		}
		if err := cur.Remove(cur.Members()...); len(cur.Members()) > 0 && !errors.Is(err, ErrFenced) {
			t.Fatalf("%s: a later Remove = %v, want ErrFenced", what, err)
		}
		cur.Close()
		checkSet(t, what+": the newer Open after the stopped one went on", next, m)
		cur = next
	}
	cur.Close()
	// Every writer has finished: what the stopped ones wrote late is
	// garbage, and the next Open removes it.
	last, err := OpenSet(root, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer last.Close()
	checkSet(t, "last", last, m)
	checkNoGarbage(t, "last", last)
}

// TestSetJournal: the changes since STATE are read back from the journal,
// up to a last line cut short (a crash in the middle of a write); a bad
// line before the last one is corruption; a full journal is written into
// STATE and replaced.
func TestSetJournal(t *testing.T) {
	root := t.TempDir()
	s, err := OpenSet(root, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.journalLimit = 1 << 30
	m := setModel{}
	for i := range 6 {
		name := "m" + strconv.Itoa(i)
		addMember(t, s, name, name)
		m[name] = name
	}
	if err := s.Remove(memberDir(s, "m1"), memberDir(s, "m4")); err != nil {
		t.Fatal(err)
	}
	delete(m, "m1")
	delete(m, "m4")
	journal := s.journal.Name()
	s.Close()
	b, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(b), "\n"); got != 8 {
		t.Fatalf("journal has %d lines, want 8:\n%s", got, b)
	}
	// A write cut short by a crash: the last line is incomplete.
	torn := journalLine('+', filepath.Base(filepath.Dir(journal))+"/torn")
	if err := os.WriteFile(journal, append(b, torn[:len(torn)-3]...), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err = OpenSet(root, 2, nil); err != nil {
		t.Fatal(err)
	}
	checkSet(t, "after a torn journal", s, m)
	s.journalLimit = 3
	for i := range 10 {
		name := "n" + strconv.Itoa(i)
		addMember(t, s, name, name)
		if i%3 == 0 {
			m[name] = name
			continue
		}
		if err := s.Remove(memberDir(s, name)); err != nil {
			t.Fatal(err)
		}
		if s.entries > max(3, len(s.members))+1 {
			t.Fatalf("journal of %d lines for %d members: not written into STATE", s.entries, len(s.members))
		}
	}
	if s.gen == 1 {
		t.Fatal("the journal was never written into STATE")
	}
	if js, _ := filepath.Glob(filepath.Join(s.dir, journalPrefix+"*")); len(js) != 1 {
		t.Fatalf("journals %v, want the current one only", js)
	}
	s.Close()
	if s, err = OpenSet(root, 3, nil); err != nil {
		t.Fatal(err)
	}
	checkSet(t, "reopened", s, m)
	s.Close()
	// Damage before the last line is corruption, not a tail to drop.
	older, err := filepath.Glob(filepath.Join(root, "o.3.*", journalPrefix+"1"))
	if err != nil || len(older) != 1 {
		t.Fatalf("journal of the third Open: %v %v", older, err)
	}
	bad := journalLine('+', filepath.Base(filepath.Dir(older[0]))+"/x")
	wrong := byte('0') // a wrong CRC: its last hex digit changed
	if bad[len(bad)-2] == wrong {
		wrong = '1'
	}
	bad = bad[:len(bad)-2] + string(wrong) + "\n"
	if err := os.WriteFile(older[0], []byte(bad+journalLine('+', filepath.Base(filepath.Dir(older[0]))+"/y")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSet(root, 4, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("OpenSet over a corrupt journal = %v, want ErrCorrupt", err)
	}
}

// TestSetAddGroupCommit: Adds that arrive while another is being written
// are committed together, in one journal write, and every one of them is
// a member of the next Open; a group that fails fails for each of its
// Adds.
func TestSetAddGroupCommit(t *testing.T) {
	root := t.TempDir()
	s, err := OpenSet(root, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var writes int
	s.hook = func(p hookPoint) {
		if p != hookChecked {
			return
		}
		writes++ // under s.mu
		if writes == 1 {
			<-release
		}
	}
	folder := func(name string) string {
		dir, err := s.NewFolder(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := WriteFileAtomic(dir, "content", []byte("v"+name)); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	const n = 20
	errs := make(chan error, n+1)
	first := folder("first")
	m := setModel{"first": "vfirst"}
	var dirs []string
	for i := range n {
		name := "m" + strconv.Itoa(i)
		m[name] = "v" + name
		dirs = append(dirs, folder(name))
	}
	go func() { errs <- s.Add(first) }()
	waitFor(t, "the first Add to be writing", func() bool {
		s.addMu.Lock()
		defer s.addMu.Unlock()
		return s.committing && s.adding == nil
	})
	for _, dir := range dirs {
		go func() { errs <- s.Add(dir) }()
	}
	waitFor(t, "the other Adds to gather", func() bool {
		s.addMu.Lock()
		defer s.addMu.Unlock()
		return s.adding != nil && len(s.adding.rels) == n
	})
	close(release)
	for range n + 1 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	got := writes
	s.mu.Unlock()
	if got != 2 {
		t.Fatalf("%d Adds took %d journal writes, want 2 (the first, then the rest together)", n+1, got)
	}
	checkSet(t, "after the Adds", s, m)
	s.Close()
	s2, err := OpenSet(root, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkSet(t, "reopened", s2, m)

	// A group whose writer was fenced fails for every Add in it.
	dirs = nil
	for i := range 3 {
		dir, err := s2.NewFolder("late" + strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, dir)
	}
	s3, err := OpenSet(root, 3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s3.Close()
	for _, dir := range dirs {
		go func() { errs <- s2.Add(dir) }()
	}
	for range dirs {
		if err := <-errs; !errors.Is(err, ErrFenced) {
			t.Fatalf("Add on a fenced set = %v, want ErrFenced", err)
		}
	}
	checkSet(t, "after the fenced Adds", s3, m)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
